//! `runq-worker` processes: [`WorkerCmd`] (arguments, config file, environment, a command
//! prefix such as `ip netns exec`) starts a [`Worker`] (signals, bounded exit, logs;
//! SIGKILLed on drop) or runs a burst to completion; [`worker_output`] runs one that is
//! expected to exit by itself (start-up errors).

use crate::cli::clean_env;
use crate::process::{send_signal, wait_child};
use crate::{bin, dedent, Output, RedisServer, TempDir, WAIT};
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};

/// How to start a `runq-worker`.
pub struct WorkerCmd<'a> {
    redis: &'a RedisServer,
    args: Vec<String>,
    config: String,
    env: Vec<(String, String)>,
    prefix: Vec<String>,
}

impl<'a> WorkerCmd<'a> {
    pub fn new(redis: &'a RedisServer) -> Self {
        WorkerCmd {
            redis,
            args: Vec::new(),
            config: String::new(),
            env: Vec::new(),
            prefix: Vec::new(),
        }
    }

    /// Runs the worker behind a command prefix, e.g. `["ip", "netns", "exec", "ns1"]`
    /// (the prefix must exec the worker, so its pid is the worker's).
    pub fn prefix(mut self, prefix: &[String]) -> Self {
        self.prefix = prefix.to_vec();
        self
    }

    /// An extra environment variable for the worker.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|s| s.to_string()));
        self
    }

    /// TOML for the worker's config file (REDIS_URL still picks the server).
    pub fn config(mut self, toml: &str) -> Self {
        self.config = dedent(toml);
        self
    }

    pub fn spawn(self) -> Worker {
        let dir = TempDir::new("worker");
        let config = dir.path().join("queues.toml");
        std::fs::write(&config, &self.config).expect("write worker config");
        let stdout = dir.path().join("stdout.log");
        let stderr = dir.path().join("stderr.log");
        let mut cmd = match self.prefix.split_first() {
            None => Command::new(bin("runq-worker")),
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin("runq-worker"));
                c
            }
        };
        let child = clean_env(&mut cmd)
            .arg("--config")
            .arg(&config)
            .args(&self.args)
            .env("REDIS_URL", self.redis.url())
            .env("NO_COLOR", "1")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).expect("worker stdout"))
            .stderr(File::create(&stderr).expect("worker stderr"))
            .spawn()
            .expect("run runq-worker");
        Worker {
            child,
            status: None,
            stdout,
            stderr,
            _dir: dir,
        }
    }

    /// Spawns, waits for the exit, asserts exit code 0, returns the logs.
    pub fn run_burst(self) -> String {
        let mut w = self.args(&["--burst"]).spawn();
        let code = w.wait_exit();
        assert_eq!(
            code,
            Some(0),
            "runq-worker --burst exited with {code:?}\n{}",
            w.logs()
        );
        w.logs()
    }
}

/// Runs `runq-worker ARGS` to completion with no config file added (for start-up
/// errors); bounded by [`WAIT`].
pub fn worker_output(redis_url: &str, args: &[&str]) -> Output {
    let mut child = clean_env(&mut Command::new(bin("runq-worker")))
        .args(args)
        .env("REDIS_URL", redis_url)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run runq-worker");
    if wait_child(&mut child, WAIT).is_none() {
        let _ = child.kill();
        panic!("runq-worker {args:?} did not exit within {WAIT:?}");
    }
    Output::from(
        child
            .wait_with_output()
            .expect("collect runq-worker output"),
    )
}

/// A running (or exited) `runq-worker`; SIGKILLed on drop if still running.
pub struct Worker {
    child: Child,
    status: Option<ExitStatus>,
    stdout: PathBuf,
    stderr: PathBuf,
    _dir: TempDir,
}

impl Worker {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn sigterm(&self) {
        self.signal(libc::SIGTERM);
    }

    /// Sends `sig` to the (still running) worker.
    pub fn signal(&self, sig: libc::c_int) {
        assert!(self.status.is_none(), "worker already exited");
        send_signal(self.pid(), sig);
    }

    pub fn kill9(&mut self) {
        send_signal(self.pid(), libc::SIGKILL);
        self.status = wait_child(&mut self.child, WAIT);
        assert!(self.status.is_some(), "worker survived SIGKILL");
    }

    /// Waits (bounded) for the process to exit; returns its exit code (`None` if killed
    /// by a signal). Panics with the logs if it does not exit.
    pub fn wait_exit(&mut self) -> Option<i32> {
        if self.status.is_none() {
            self.status = wait_child(&mut self.child, WAIT);
        }
        match self.status {
            Some(s) => s.code(),
            None => panic!("runq-worker did not exit within {WAIT:?}\n{}", self.logs()),
        }
    }

    /// True while the process runs.
    pub fn running(&mut self) -> bool {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status.is_none()
    }

    /// stdout then stderr.
    pub fn logs(&self) -> String {
        format!(
            "--- runq-worker stdout ---\n{}\n--- runq-worker stderr ---\n{}",
            std::fs::read_to_string(&self.stdout).unwrap_or_default(),
            std::fs::read_to_string(&self.stderr).unwrap_or_default()
        )
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if self.status.is_none() && self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
