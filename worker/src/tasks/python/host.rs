//! [`PythonHost`]: the one Python fork server of a worker process (`runq_host.py`,
//! embedded in the binary and written to a private directory at start-up). It is started
//! before the worker registers — a preload module that fails to import stops the worker
//! with the module and the Python error on one line — and supervised afterwards: when the
//! host dies, every job it was running fails with a message saying so, the process groups
//! of those jobs are killed, and the host is started again with backoff while the worker
//! carries on. Jobs talk to it through [`PythonHost::run`], which also forwards the job's
//! cancellation as a `kill` and waits for the child's group to be gone.

use super::frames::{self, Done, FromHost, RunCallback, RunJob, ToHost, PROTOCOL};
use crate::error::TaskError;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::tasks::process_group::{describe_exit, signal_group};
use runq_common::config::{Config, PythonConfig};
use runq_common::echo::clip;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::{mpsc, watch};

/// The host program, embedded.
const HOST_SCRIPT: &str = include_str!("runq_host.py");
/// Time between SIGTERM and SIGKILL for a job's process group.
pub const KILL_GRACE: Duration = Duration::from_secs(2);
/// How long start-up waits for the host's `ready` (preloading heavy modules takes time).
const READY_WAIT: Duration = Duration::from_secs(300);
/// How long a job waits for a restarting host before it fails.
const HOST_WAIT: Duration = Duration::from_secs(60);
/// Forwarded output per job, in bytes.
const MAX_OUTPUT_BYTES: u64 = 1024 * 1024;
/// A host that lived this long restarts after the shortest backoff again.
const HEALTHY_RUN: Duration = Duration::from_secs(60);
/// Between health pings (RSS and children for /metrics).
const PING_EVERY: Duration = Duration::from_secs(10);

/// Why the host could not start.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("python: cannot write the task host program to {path}: {source}")]
    Script {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("python: cannot run `{program}`: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("python: {0}")]
    Fatal(String),
    #[error("python: the task host {0}")]
    Died(String),
    #[error("python: {0}")]
    Protocol(String),
}

/// Is a host running to take jobs?
#[derive(Debug, Clone)]
enum Availability {
    Up(mpsc::UnboundedSender<ToHost>),
    Down(String),
    Stopped,
}

/// What a job waiting on the host hears.
#[derive(Debug)]
enum JobEvent {
    Started(i32),
    Done(Done),
    /// The host died while the job ran.
    HostDied(String),
    /// The host refused the request.
    Refused(String),
}

/// The jobs the host is running: where to send their events, and their children's pids.
#[derive(Default)]
struct Jobs {
    waiters: HashMap<String, mpsc::UnboundedSender<JobEvent>>,
    pids: HashMap<String, i32>,
}

pub struct PythonHost {
    command: Vec<String>,
    script: PathBuf,
    init: InitSettings,
    availability: watch::Sender<Availability>,
    jobs: Mutex<Jobs>,
    metrics: OnceLock<Arc<Metrics>>,
    shutdown: Shutdown,
    supervisor: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// For the master's URL after a Sentinel switch.
    config: Config,
    /// The master generation the jobs' URL is for, and that URL when it is no longer
    /// the `init` frame's.
    master: tokio::sync::Mutex<(u64, Option<String>)>,
}

/// What the `init` frame carries.
struct InitSettings {
    sys_path: Vec<String>,
    preload: Vec<String>,
    before_job: Option<String>,
    redis_url: String,
    redis_ca_file: Option<String>,
    key_prefix: String,
}

/// The host's stdout, buffered: one read syscall takes in whole frames.
type HostOut = BufReader<ChildStdout>;

/// A host process that answered `ready`.
struct Running {
    child: Child,
    pid: u32,
    stdout: HostOut,
    /// The writer's channel: the host's stdin closes when the last sender is gone.
    tx: mpsc::UnboundedSender<ToHost>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl PythonHost {
    /// Writes the host program, starts the host and waits for its `ready`; then keeps it
    /// running until [`stop`](Self::stop).
    pub async fn start(
        config: &Config,
        python: &PythonConfig,
        shutdown: Shutdown,
    ) -> Result<Arc<PythonHost>, HostError> {
        let script = write_script()?;
        let generation = runq_common::connect::master_generation();
        let redis_url = runq_common::connect::current_url(config, config.redis.db.rq)
            .await
            .map_err(|e| HostError::Protocol(e.to_string()))?;
        let (availability, _) = watch::channel(Availability::Down("starting".into()));
        let host = Arc::new(PythonHost {
            command: python.command.clone(),
            script,
            init: InitSettings {
                sys_path: python
                    .path
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect(),
                preload: python.preload.clone(),
                before_job: python.before_job.clone(),
                redis_url,
                redis_ca_file: config
                    .redis
                    .ca_file
                    .as_ref()
                    .map(|p| p.display().to_string()),
                key_prefix: config.redis.prefix.clone(),
            },
            availability,
            jobs: Mutex::default(),
            metrics: OnceLock::new(),
            shutdown,
            config: config.clone(),
            master: tokio::sync::Mutex::new((generation, None)),
            supervisor: Mutex::new(None),
        });
        let first = host.launch().await?;
        let supervisor = tokio::spawn(host.clone().supervise(first));
        *lock(&host.supervisor) = Some(supervisor);
        Ok(host)
    }

    /// Reports the host's RSS, children and restarts to `metrics`.
    pub fn report_to(&self, metrics: Arc<Metrics>) {
        let _ = self.metrics.set(metrics);
    }

    /// Starts one host process and waits for `ready` (or its `fatal`).
    async fn launch(&self) -> Result<Running, HostError> {
        let program = self.command[0].clone();
        let mut cmd = Command::new(&program);
        cmd.args(&self.command[1..])
            .arg(&self.script)
            .env("RQ_KEY_PREFIX", &self.init.key_prefix)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|source| HostError::Spawn {
            program: program.clone(),
            source,
        })?;
        let pid = child.id().unwrap_or(0);
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(HostError::Protocol("the host's pipes are missing".into()));
        };
        let mut stdout = BufReader::with_capacity(64 * 1024, stdout);
        tokio::spawn(log_stderr(stderr, pid));
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_frames(stdin, rx));
        let _ = tx.send(ToHost::Init {
            protocol: PROTOCOL,
            sys_path: self.init.sys_path.clone(),
            preload: self.init.preload.clone(),
            before_job: self.init.before_job.clone(),
            redis_url: self.init.redis_url.clone(),
            redis_ca_file: self.init.redis_ca_file.clone(),
            kill_grace: KILL_GRACE.as_secs_f64(),
            max_output_bytes: MAX_OUTPUT_BYTES,
        });
        let first = tokio::time::timeout(READY_WAIT, frames::read(&mut stdout)).await;
        let died = |child: &mut Child| {
            let how = child
                .try_wait()
                .ok()
                .flatten()
                .map(|s| describe_exit(&s))
                .unwrap_or_else(|| "closed its output".into());
            HostError::Died(format!(
                "(`{program}`, pid {pid}) {how} before it was ready"
            ))
        };
        let body = match first {
            Err(_) => {
                return Err(HostError::Fatal(format!(
                    "the task host did not get ready within {READY_WAIT:?} (preloading?)"
                )))
            }
            Ok(Err(e)) => return Err(HostError::Protocol(e.to_string())),
            Ok(Ok(None)) => {
                let _ = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
                return Err(died(&mut child));
            }
            Ok(Ok(Some(body))) => body,
        };
        match frames::parse(&body).map_err(|e| HostError::Protocol(e.to_string()))? {
            FromHost::Ready {
                protocol,
                python,
                rq,
                huge_page_bytes,
                ..
            } => {
                if protocol != PROTOCOL {
                    return Err(HostError::Protocol(format!(
                        "the task host speaks protocol {protocol}, runq-worker {PROTOCOL}"
                    )));
                }
                let huge_pages_mb = huge_page_bytes >> 20;
                tracing::info!(pid, python = %python, rq = %rq, preload = ?self.init.preload, huge_pages_mb, "Python task host ready");
                Ok(Running {
                    child,
                    pid,
                    stdout,
                    tx,
                })
            }
            FromHost::Fatal { error } => Err(HostError::Fatal(error)),
            other => Err(HostError::Protocol(format!(
                "expected `ready`, got {other:?}"
            ))),
        }
    }

    /// Runs the host, restarting it with backoff whenever it dies, until the worker
    /// stops it.
    async fn supervise(self: Arc<Self>, first: Running) {
        let mut next = Some(first);
        let mut backoff = Duration::from_secs(1);
        loop {
            let running = match next.take() {
                Some(r) => r,
                None => match self.launch().await {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::error!(error = %e, "the Python task host did not start; retrying in {backoff:?}");
                        self.set(Availability::Down(e.to_string()));
                        if !self.pause(&mut backoff).await {
                            return;
                        }
                        continue;
                    }
                },
            };
            let started = Instant::now();
            let pid = running.pid;
            self.set(Availability::Up(running.tx.clone()));
            let death = self.serve(running).await;
            if matches!(*self.availability.borrow(), Availability::Stopped) {
                return;
            }
            let message = format!("the Python task host (pid {pid}) {death}");
            tracing::error!("{message}; failing its running jobs and starting it again");
            self.set(Availability::Down(message.clone()));
            self.fail_all(&message);
            if let Some(m) = self.metrics.get() {
                m.python_host_restarted();
            }
            if started.elapsed() > HEALTHY_RUN {
                backoff = Duration::from_secs(1);
            }
            if !self.pause(&mut backoff).await {
                return;
            }
        }
    }

    async fn pause(&self, backoff: &mut Duration) -> bool {
        let slept = tokio::select! {
            _ = tokio::time::sleep(*backoff) => true,
            _ = self.shutdown.exiting() => false,
        };
        *backoff = (*backoff * 2).min(Duration::from_secs(30));
        slept && !matches!(*self.availability.borrow(), Availability::Stopped)
    }

    fn set(&self, a: Availability) {
        self.availability.send_if_modified(|current| {
            if matches!(current, Availability::Stopped) {
                return false;
            }
            *current = a;
            true
        });
    }

    /// Reads the host's frames until it is gone; returns how it ended. Once the worker
    /// stops the host, its input is closed (the host then kills what runs and exits) and
    /// the frames still coming are read to the end.
    async fn serve(&self, mut running: Running) -> String {
        let mut ping = tokio::time::interval(PING_EVERY);
        let mut seq = 0u64;
        let mut availability = self.availability.subscribe();
        let mut tx = Some(running.tx);
        // Frames are read by a task of their own: a read cut short by another branch of
        // the select below would lose the part of a frame it had taken in.
        let (frames_tx, mut incoming) = mpsc::channel(256);
        tokio::spawn(read_frames(running.stdout, frames_tx));
        let ended = loop {
            tokio::select! {
                frame = incoming.recv() => match frame {
                    Some(Ok(body)) => match frames::parse(&body) {
                        Ok(msg) => self.dispatch(msg),
                        Err(e) => tracing::warn!(error = %e, "ignoring a frame from the Python task host"),
                    },
                    None => break None,
                    Some(Err(e)) => break Some(e.to_string()),
                },
                _ = ping.tick(), if tx.is_some() => {
                    seq += 1;
                    if let Some(tx) = &tx {
                        let _ = tx.send(ToHost::Ping { seq });
                    }
                }
                changed = availability.changed(), if tx.is_some() => {
                    if changed.is_err() || matches!(*availability.borrow(), Availability::Stopped) {
                        tx = None;
                    }
                }
            }
        };
        drop(tx);
        let status = tokio::time::timeout(Duration::from_secs(5), running.child.wait()).await;
        let how = match status {
            Ok(Ok(s)) => describe_exit(&s),
            _ => {
                let _ = running.child.start_kill();
                "stopped answering and was killed".into()
            }
        };
        match ended {
            Some(e) => format!("{how} (broken stream: {e})"),
            None => how,
        }
    }

    fn dispatch(&self, msg: FromHost) {
        match msg {
            FromHost::Started { job_id, pid } => {
                let mut jobs = lock(&self.jobs);
                jobs.pids.insert(job_id.clone(), pid);
                if let Some(w) = jobs.waiters.get(&job_id) {
                    let _ = w.send(JobEvent::Started(pid));
                }
            }
            FromHost::Output {
                job_id,
                stream,
                text,
            } => {
                let text = clip(&text, 8192);
                if stream == "stderr" {
                    tracing::warn!(target: "runq::job_output", job = %job_id, stream = %stream, "{text}");
                } else {
                    tracing::info!(target: "runq::job_output", job = %job_id, stream = %stream, "{text}");
                }
            }
            FromHost::Done(done) => {
                let mut jobs = lock(&self.jobs);
                jobs.pids.remove(&done.job_id);
                if let Some(w) = jobs.waiters.remove(&done.job_id) {
                    let _ = w.send(JobEvent::Done(done));
                }
            }
            FromHost::Error { job_id, error } => {
                let error = clip(&error, 500).into_owned();
                match job_id.and_then(|id| lock(&self.jobs).waiters.remove(&id)) {
                    Some(w) => {
                        let _ = w.send(JobEvent::Refused(error));
                    }
                    None => {
                        tracing::warn!(error = %error, "the Python task host reported an error")
                    }
                }
            }
            FromHost::Pong {
                rss_bytes,
                children,
                ..
            } => {
                if let Some(m) = self.metrics.get() {
                    m.set_python_host(rss_bytes, children);
                }
            }
            FromHost::Ready { .. } | FromHost::Fatal { .. } => {
                tracing::warn!("unexpected start-up frame from the running Python task host")
            }
        }
    }

    /// The host died: every job it ran fails, and their process groups are killed (the
    /// children die with their parent; grandchildren are killed here).
    fn fail_all(&self, why: &str) {
        let jobs = std::mem::take(&mut *lock(&self.jobs));
        for (_, pid) in jobs.pids {
            signal_group(pid, libc::SIGKILL);
        }
        for (_, w) in jobs.waiters {
            let _ = w.send(JobEvent::HostDied(why.to_string()));
        }
    }

    /// The host's command channel, waiting up to [`HOST_WAIT`] for a restarting host.
    async fn sender(&self) -> Result<mpsc::UnboundedSender<ToHost>, TaskError> {
        let mut rx = self.availability.subscribe();
        let waited = tokio::time::timeout(HOST_WAIT, async {
            loop {
                match &*rx.borrow_and_update() {
                    Availability::Up(tx) => return Ok(tx.clone()),
                    Availability::Stopped => {
                        return Err("the worker is stopping".to_string());
                    }
                    Availability::Down(_) => {}
                }
                if rx.changed().await.is_err() {
                    return Err("the worker is stopping".to_string());
                }
            }
        })
        .await;
        match waited {
            Ok(Ok(tx)) => Ok(tx),
            Ok(Err(why)) => Err(TaskError::new("PythonHostUnavailable", why)),
            Err(_) => {
                let last = match &*self.availability.borrow() {
                    Availability::Down(e) => e.clone(),
                    _ => "unknown".into(),
                };
                Err(TaskError::new(
                    "PythonHostUnavailable",
                    format!(
                        "the Python task host is not running (waited {HOST_WAIT:?}; last: {last})"
                    ),
                ))
            }
        }
    }

    /// Runs a job in a forked child until it is done; `cancel` asks the host to kill the
    /// child's group, and the call returns once the host has reaped it.
    pub async fn run(
        &self,
        mut job: RunJob,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> Result<Done, TaskError> {
        let id = job.job_id.clone();
        job.redis_url = self.moved_url().await;
        self.send_and_wait(id, ToHost::Run(job), cancel).await
    }

    /// Runs one of a job's callbacks in a child of its own.
    pub async fn callback(
        &self,
        mut callback: RunCallback,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> Result<Done, TaskError> {
        let id = callback.job_id.clone();
        callback.redis_url = self.moved_url().await;
        self.send_and_wait(id, ToHost::Callback(callback), cancel)
            .await
    }

    /// The master's URL for a job's process when Sentinel named another master since the
    /// host started (looked up once per switch); `None` while the `init` frame's holds.
    async fn moved_url(&self) -> Option<String> {
        let generation = runq_common::connect::master_generation();
        let mut master = self.master.lock().await;
        if master.0 != generation {
            match runq_common::connect::current_url(&self.config, self.config.redis.db.rq).await {
                Ok(url) => {
                    *master = (generation, (url != self.init.redis_url).then_some(url));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot look up the Redis master for Python jobs; they keep the last one");
                }
            }
        }
        master.1.clone()
    }

    async fn send_and_wait(
        &self,
        id: String,
        msg: ToHost,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> Result<Done, TaskError> {
        let tx = self.sender().await?;
        let (events_tx, mut events) = mpsc::unbounded_channel();
        {
            let mut jobs = lock(&self.jobs);
            if jobs.waiters.contains_key(&id) {
                return Err(TaskError::new(
                    "PythonHostError",
                    format!("job {id} is already running in this worker's Python host"),
                ));
            }
            jobs.waiters.insert(id.clone(), events_tx);
        }
        let mut guard = Waiting {
            host: self,
            id: id.clone(),
            tx: tx.clone(),
            done: false,
        };
        if tx.send(msg).is_err() {
            return Err(TaskError::new(
                "PythonHostDied",
                "the Python task host went away before the job was sent",
            ));
        }
        let mut kill_sent = false;
        loop {
            let event = tokio::select! {
                e = events.recv() => e,
                _ = cancel.cancelled(), if !kill_sent => {
                    kill_sent = true;
                    let _ = tx.send(ToHost::Kill { job_id: id.clone() });
                    continue;
                }
            };
            match event {
                Some(JobEvent::Started(pid)) => {
                    tracing::debug!(job = %id, pid, "Python job child started");
                }
                Some(JobEvent::Done(done)) => {
                    guard.done = true;
                    return Ok(done);
                }
                Some(JobEvent::HostDied(why)) => {
                    guard.done = true;
                    return Err(TaskError::new(
                        "PythonHostDied",
                        format!("{why} while the job ran"),
                    ));
                }
                Some(JobEvent::Refused(why)) => {
                    guard.done = true;
                    return Err(TaskError::new("PythonHostError", why));
                }
                None => {
                    guard.done = true;
                    return Err(TaskError::new(
                        "PythonHostDied",
                        "the Python task host went away while the job ran",
                    ));
                }
            }
        }
    }

    /// Stops the host: closing its input makes it kill what still runs and exit.
    pub async fn stop(&self) {
        self.availability.send_replace(Availability::Stopped);
        let supervisor = lock(&self.supervisor).take();
        if let Some(s) = supervisor {
            if tokio::time::timeout(Duration::from_secs(10), s)
                .await
                .is_err()
            {
                tracing::warn!("the Python task host did not stop within 10 s");
            }
        }
        if let Some(dir) = self.script.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A job's registration with the host; dropped before the job's `done`, it asks the host
/// to kill the child and forgets the job.
struct Waiting<'a> {
    host: &'a PythonHost,
    id: String,
    tx: mpsc::UnboundedSender<ToHost>,
    done: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.tx.send(ToHost::Kill {
                job_id: self.id.clone(),
            });
            lock(&self.host.jobs).waiters.remove(&self.id);
        }
    }
}

/// Writes the embedded host program to a fresh private (0700) directory.
fn write_script() -> Result<PathBuf, HostError> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = std::env::temp_dir().join(format!(
        "runq-python-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    let path = dir.join("runq_host.py");
    let io = |source| HostError::Script {
        path: path.clone(),
        source,
    };
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(io)?;
    std::fs::write(&path, HOST_SCRIPT).map_err(io)?;
    Ok(path)
}

/// Reads the host's frames into `tx` until its stdout ends (the channel then closes) or
/// breaks (the error is the last item).
async fn read_frames(mut stdout: HostOut, tx: mpsc::Sender<Result<Vec<u8>, frames::FrameError>>) {
    loop {
        let item = match frames::read(&mut stdout).await {
            Ok(Some(body)) => Ok(body),
            Ok(None) => return,
            Err(e) => Err(e),
        };
        let last = item.is_err();
        if tx.send(item).await.is_err() || last {
            return;
        }
    }
}

async fn write_frames(mut stdin: ChildStdin, mut rx: mpsc::UnboundedReceiver<ToHost>) {
    while let Some(msg) = rx.recv().await {
        if let Err(e) = frames::write(&mut stdin, &msg).await {
            tracing::debug!(error = %e, "writing to the Python task host failed");
            return;
        }
    }
}

async fn log_stderr(stderr: tokio::process::ChildStderr, pid: u32) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::warn!(target: "runq::python_host", pid, "python host: {}", clip(&line, 2000));
    }
}
