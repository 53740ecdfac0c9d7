//! One exec child process: spawned from an argv (never a shell) as the leader of its own
//! process group, its input written to stdin and the last [`TAIL_BYTES`] of stdout and
//! stderr kept while both are read concurrently (so the pipes never fill).
//!
//! [`GroupGuard`] owns the child until it has exited. When the future running the child
//! is dropped first (timeout, stop-job, lost lock, cold shutdown) or cancelled, the guard
//! sends SIGTERM to the whole group at once and SIGKILL to it [`KILL_GRACE`] later, from
//! a detached thread, so a child that ignores SIGTERM dies all the same and so do its
//! grandchildren. The leader is reaped only after the SIGKILL: until then its pid, and so
//! the group id, cannot be reused by an unrelated process. [`kill_lingering`] cuts every
//! grace period still running short at process exit.

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin};
use tokio_util::sync::CancellationToken;

/// Bytes kept from the end of each of stdout and stderr.
pub const TAIL_BYTES: usize = 4096;
/// Time between SIGTERM and SIGKILL for a child killed before it exited.
pub const KILL_GRACE: Duration = Duration::from_secs(2);
/// Time the output readers get after the child exited (a grandchild may hold the pipes).
const DRAIN: Duration = Duration::from_secs(1);

/// Why a child could not be run to its exit.
#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    #[error("cannot run `{program}`: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("lost track of `{program}`: {source}")]
    Wait {
        program: String,
        source: std::io::Error,
    },
    #[error("`{program}` was cancelled")]
    Cancelled { program: String },
}

/// A child that exited.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    /// `exited with status 3` or `was killed by signal 9 (SIGKILL)`.
    pub fn how(&self) -> String {
        match (self.status.code(), self.status.signal()) {
            (Some(code), _) => format!("exited with status {code}"),
            (None, Some(sig)) => match signal_name(sig) {
                Some(name) => format!("was killed by signal {sig} ({name})"),
                None => format!("was killed by signal {sig}"),
            },
            (None, None) => format!("ended with {}", self.status),
        }
    }
}

/// Runs `argv` with `env` added to the worker's environment and `input` on stdin, until
/// it exits or `cancel` fires. Dropping the returned future kills the process group.
pub async fn run(
    job_id: &str,
    argv: &[String],
    env: Vec<(String, String)>,
    input: Arc<[u8]>,
    cancel: &CancellationToken,
) -> Result<Finished, ChildError> {
    let program = argv.first().cloned().unwrap_or_default();
    let mut cmd = tokio::process::Command::new(&program);
    cmd.args(argv.iter().skip(1))
        .envs(env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd.spawn().map_err(|source| ChildError::Spawn {
        program: program.clone(),
        source,
    })?;
    let stdin = child.stdin.take();
    let stdout_tail = Arc::new(Mutex::new(Tail::default()));
    let stderr_tail = Arc::new(Mutex::new(Tail::default()));
    let readers = [
        child
            .stdout
            .take()
            .map(|r| AbortOnDrop(tokio::spawn(read_tail(r, stdout_tail.clone())))),
        child
            .stderr
            .take()
            .map(|r| AbortOnDrop(tokio::spawn(read_tail(r, stderr_tail.clone())))),
    ];
    let mut guard = GroupGuard::new(child, job_id);
    let _writer = stdin.map(|w| AbortOnDrop(tokio::spawn(write_input(w, input))));

    let status = tokio::select! {
        s = guard.wait() => s.map_err(|source| ChildError::Wait { program: program.clone(), source })?,
        _ = cancel.cancelled() => return Err(ChildError::Cancelled { program }),
    };
    let deadline = tokio::time::Instant::now() + DRAIN;
    for reader in readers.into_iter().flatten() {
        let _ = tokio::time::timeout_at(deadline, reader).await;
    }
    let text = |t: &Arc<Mutex<Tail>>| t.lock().map(|t| t.text()).unwrap_or_default();
    Ok(Finished {
        status,
        stdout: text(&stdout_tail),
        stderr: text(&stderr_tail),
    })
}

/// Writes the input and closes stdin. A child that exits without reading it is not an
/// error here: its exit status tells.
async fn write_input(mut stdin: ChildStdin, input: Arc<[u8]>) {
    if let Err(e) = stdin.write_all(&input).await {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            tracing::debug!(error = %e, "could not write an exec child's stdin");
        }
    }
    drop(stdin);
}

async fn read_tail(mut from: impl AsyncRead + Unpin, tail: Arc<Mutex<Tail>>) {
    let mut buf = vec![0u8; 8192];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if let Ok(mut t) = tail.lock() {
                    t.push(&buf[..n]);
                }
            }
        }
    }
}

/// The last [`TAIL_BYTES`] of a stream.
#[derive(Debug, Default)]
pub struct Tail {
    buf: Vec<u8>,
    dropped: u64,
}

impl Tail {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() > TAIL_BYTES {
            let cut = self.buf.len() - TAIL_BYTES;
            self.buf.drain(..cut);
            self.dropped += cut as u64;
        }
    }

    /// The kept text; when bytes were dropped, a note says how many and the text starts
    /// at a character boundary.
    pub fn text(&self) -> String {
        if self.dropped == 0 {
            return String::from_utf8_lossy(&self.buf).into_owned();
        }
        let start = self
            .buf
            .iter()
            .position(|b| b & 0xC0 != 0x80)
            .unwrap_or(self.buf.len());
        format!(
            "[... {} earlier bytes not kept]\n{}",
            self.dropped + start as u64,
            String::from_utf8_lossy(&self.buf[start..])
        )
    }
}

/// A spawned task aborted when dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> std::future::Future for AbortOnDrop<T> {
    type Output = Result<T, tokio::task::JoinError>;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx)
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Owns a child (the leader of its own process group) until it has been reaped; kills
/// the group when dropped before that.
pub struct GroupGuard {
    child: Option<Child>,
    pgid: Option<libc::pid_t>,
    /// Counted in [`LIVE`] until the leader is reaped.
    job: String,
}

impl GroupGuard {
    fn new(child: Child, job: &str) -> GroupGuard {
        live_add(job, 1);
        // A group id of 0 or 1 would make kill(2) signal far more than this child.
        let pgid = child
            .id()
            .and_then(|p| libc::pid_t::try_from(p).ok())
            .filter(|p| *p > 1);
        GroupGuard {
            child: Some(child),
            pgid,
            job: job.to_string(),
        }
    }

    /// Waits for the leader to exit (cancel-safe); the guard is disarmed once it has.
    async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        let Some(child) = self.child.as_mut() else {
            return Err(std::io::Error::other("the child was already reaped"));
        };
        let status = child.wait().await?;
        self.child = None;
        live_add(&self.job, -1);
        Ok(status)
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        let Some(child) = self.child.take() else {
            return;
        };
        let job = std::mem::take(&mut self.job);
        let Some(pgid) = self.pgid else {
            live_add(&job, -1);
            return;
        };
        signal_group(pgid, libc::SIGTERM);
        let id = pending_insert(pgid, Instant::now() + KILL_GRACE);
        let killer = std::thread::Builder::new()
            .name("runq-exec-kill".into())
            .spawn(move || {
                std::thread::sleep(KILL_GRACE);
                if pending_take(id).is_some() {
                    signal_group(pgid, libc::SIGKILL);
                }
                reap(child);
                live_add(&job, -1);
            });
        if let Err(e) = killer {
            tracing::warn!(error = %e, pgid, "no thread for the grace period; killing the exec child's group now");
            if pending_take(id).is_some() {
                signal_group(pgid, libc::SIGKILL);
            }
        }
    }
}

/// Reaps a killed leader (bounded), so it does not stay a zombie.
fn reap(mut child: Child) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            _ => return,
        }
    }
}

fn signal_group(pgid: libc::pid_t, sig: libc::c_int) {
    if pgid <= 1 {
        return;
    }
    // SAFETY: kill(2) on the process group this worker created for its own child; the
    // unreaped leader keeps the group id from being reused.
    unsafe {
        libc::kill(-pgid, sig);
    }
}

/// Exec children not yet reaped, per job id.
static LIVE: Mutex<Option<HashMap<String, i64>>> = Mutex::new(None);

fn live_add(job: &str, delta: i64) {
    if let Ok(mut live) = LIVE.lock() {
        let map = live.get_or_insert_with(HashMap::new);
        let n = map.entry(job.to_string()).or_insert(0);
        *n += delta;
        if *n <= 0 {
            map.remove(job);
        }
    }
}

fn live_count(job: &str) -> i64 {
    LIVE.lock()
        .ok()
        .and_then(|l| l.as_ref().and_then(|m| m.get(job).copied()))
        .unwrap_or(0)
}

/// Waits until every exec child of `job` has been reaped (a cut-off child: SIGTERM, the
/// grace, SIGKILL, reaping), at most the grace plus the reaping bound.
pub async fn children_gone(job: &str) {
    let limit = tokio::time::Instant::now() + KILL_GRACE + Duration::from_secs(6);
    while live_count(job) > 0 && tokio::time::Instant::now() < limit {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Groups in their grace period: id → (group, SIGKILL deadline).
static PENDING: Mutex<Option<HashMap<u64, (libc::pid_t, Instant)>>> = Mutex::new(None);
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

fn pending_insert(pgid: libc::pid_t, deadline: Instant) -> u64 {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    if let Ok(mut p) = PENDING.lock() {
        p.get_or_insert_with(HashMap::new)
            .insert(id, (pgid, deadline));
    }
    id
}

fn pending_take(id: u64) -> Option<(libc::pid_t, Instant)> {
    PENDING.lock().ok()?.as_mut()?.remove(&id)
}

/// Sends SIGKILL to every exec child's group still in its grace period, waiting out
/// what is left of each grace first. The worker calls it as it exits, after its runtime
/// has dropped every running handler, since the detached killer threads die with the
/// process.
pub fn kill_lingering() {
    let groups: Vec<(libc::pid_t, Instant)> = match PENDING.lock() {
        Ok(mut p) => p
            .take()
            .map(|m| m.into_values().collect())
            .unwrap_or_default(),
        Err(_) => return,
    };
    if let Some(last) = groups.iter().map(|(_, d)| *d).max() {
        std::thread::sleep(last.saturating_duration_since(Instant::now()));
    }
    for (pgid, _) in groups {
        signal_group(pgid, libc::SIGKILL);
    }
}

fn signal_name(sig: i32) -> Option<&'static str> {
    Some(match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGUSR2 => "SIGUSR2",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_end_at_a_char_boundary() {
        let mut t = Tail::default();
        t.push(b"x");
        t.push("é".repeat(TAIL_BYTES).as_bytes());
        let text = t.text();
        let (note, rest) = text.split_once('\n').unwrap();
        assert!(note.starts_with("[... ") && note.ends_with(" earlier bytes not kept]"));
        assert!(rest.chars().all(|c| c == 'é'), "{rest:?}");
        assert_eq!(rest.len(), TAIL_BYTES);
    }

    #[test]
    fn short_output_is_kept_whole() {
        let mut t = Tail::default();
        t.push(b"line 1\n");
        t.push(b"line 2\n");
        assert_eq!(t.text(), "line 1\nline 2\n");
    }

    fn argv(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn runs_with_input_env_and_status() {
        let finished = run(
            "unit-test-job",
            &argv(&["sh", "-c", "cat; echo \"$RUNQ_X\" >&2; exit 3"]),
            vec![("RUNQ_X".into(), "from env".into())],
            Arc::from(&b"from stdin"[..]),
            &CancellationToken::new(),
        )
        .await
        .unwrap();
        assert_eq!(finished.status.code(), Some(3));
        assert_eq!(finished.stdout, "from stdin");
        assert_eq!(finished.stderr, "from env\n");
        assert_eq!(finished.how(), "exited with status 3");
    }

    #[tokio::test]
    async fn missing_program_is_a_spawn_error() {
        let err = run(
            "unit-test-job",
            &argv(&["/nonexistent/runq-child"]),
            vec![],
            Arc::from(&b""[..]),
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot run `/nonexistent/runq-child`: "),
            "{err}"
        );
    }

    #[tokio::test]
    async fn cancel_kills_the_group() {
        let cancel = CancellationToken::new();
        let dir = std::env::temp_dir().join(format!("runq-child-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pidfile = dir.join("pid");
        let script = format!("sleep 1000 & echo $$ $! > {}; wait", pidfile.display());
        let c = cancel.clone();
        let p = pidfile.clone();
        tokio::spawn(async move {
            while !p.exists() || std::fs::read_to_string(&p).unwrap_or_default().is_empty() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            c.cancel();
        });
        let err = run(
            "unit-test-job",
            &argv(&["sh", "-c", &script]),
            vec![],
            Arc::from(&b""[..]),
            &cancel,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, ChildError::Cancelled { .. }), "{err}");
        let pids: Vec<libc::pid_t> = std::fs::read_to_string(&pidfile)
            .unwrap()
            .split_whitespace()
            .map(|p| p.parse().unwrap())
            .collect();
        let (leader, grandchild) = (pids[0], pids[1]);
        let deadline = Instant::now() + Duration::from_secs(20);
        while alive(grandchild) {
            assert!(
                Instant::now() < deadline,
                "grandchild {grandchild} survived"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // The leader is this process's child: gone only once the killer thread reaped it.
        // SAFETY: signal 0 only checks that the process exists.
        while unsafe { libc::kill(leader, 0) } == 0 {
            assert!(Instant::now() < deadline, "leader {leader} was not reaped");
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Running and not a zombie.
    fn alive(pid: libc::pid_t) -> bool {
        // SAFETY: signal 0 only checks that the process exists.
        let exists = unsafe { libc::kill(pid, 0) } == 0;
        exists
            && std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| {
                    s.rsplit_once(") ")
                        .map(|(_, r)| !r.starts_with('Z'))
                        .unwrap_or(true)
                })
                .unwrap_or(false)
    }
}
