//! Python RQ (rq 3.0.0 and 1.16.2 from the virtualenvs `scripts/setup-python.sh` makes):
//! [`Py`] picks the venv; [`python`], [`python_env`] and [`python_json`] run snippets with
//! `conn` on the test Redis; [`py_cli`] and [`py_cli_spawn`] run its console scripts
//! (`rq info`, `rq worker`); [`PyWorker`] is an `rq worker` in the background; [`dedent`]
//! lets snippets (and TOML) be indented in Rust code.

use crate::cli::clean_env;
use crate::process::{send_signal, wait_child};
use crate::{python_dir, repo_root, Output, RedisServer, TempDir, WAIT};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Removes Python-style common indentation, so snippets can be indented in Rust code.
pub fn dedent(text: &str) -> String {
    let indent = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    text.lines()
        .map(|l| {
            if l.len() >= indent {
                &l[indent..]
            } else {
                l.trim_start()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Which Python RQ to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Py {
    /// rq 3.0.0 (`.venv/rq3`, or `RUNQ_PY_RQ3`).
    Rq3,
    /// rq 1.16.2 (`.venv/rq116`, or `RUNQ_PY_RQ116`).
    Rq116,
}

impl Py {
    /// The interpreter of the venv.
    pub fn python(self) -> PathBuf {
        let (var, dir) = match self {
            Py::Rq3 => ("RUNQ_PY_RQ3", "rq3"),
            Py::Rq116 => ("RUNQ_PY_RQ116", "rq116"),
        };
        let path = std::env::var_os(var)
            .map(PathBuf::from)
            .unwrap_or_else(|| repo_root().join(".venv").join(dir).join("bin/python"));
        assert!(
            path.exists(),
            "{} not found: run scripts/setup-python.sh (or set {var})",
            path.display()
        );
        path
    }

    /// A console script (`rq`) of the same venv.
    pub fn script(self, name: &str) -> PathBuf {
        let path = self.python().with_file_name(name);
        assert!(
            path.exists(),
            "{} not found: run scripts/setup-python.sh",
            path.display()
        );
        path
    }
}

/// Lines every snippet starts with: `conn` (DB 9 of the test Redis) and `out(value)`,
/// which prints JSON on one line.
const PRELUDE: &str = "\
import json, os, sys
import redis
conn = redis.Redis(host='127.0.0.1', port=int(os.environ['RUNQ_TEST_REDIS_PORT']), db=9)
def out(value):
    print(json.dumps(value, default=str, sort_keys=True))
    sys.stdout.flush()
";

fn python_command(redis: &RedisServer, program: &Path) -> Command {
    let mut cmd = Command::new(program);
    clean_env(&mut cmd)
        .current_dir(python_dir())
        .env("PYTHONPATH", python_dir())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("RUNQ_TEST_REDIS_PORT", redis.port.to_string())
        .stdin(Stdio::null());
    cmd
}

/// Runs a Python snippet (dedented, after [`PRELUDE`]); asserts it succeeds; returns stdout.
pub fn python(py: Py, redis: &RedisServer, code: &str) -> String {
    python_env(py, redis, code, &[])
}

/// [`python`] with extra environment variables (e.g. `RQ_KEY_PREFIX`).
pub fn python_env(py: Py, redis: &RedisServer, code: &str, env: &[(&str, &str)]) -> String {
    let script = format!("{PRELUDE}{}\n", dedent(code));
    let out = python_command(redis, &py.python())
        .envs(env.iter().copied())
        .arg("-c")
        .arg(&script)
        .output()
        .expect("run python");
    let out = Output::from(out);
    assert!(
        out.status.success(),
        "{py:?} python snippet failed with {}\n--- script ---\n{script}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
    out.stdout
}

/// Runs a snippet and parses the last stdout line as JSON (what `out(...)` printed).
pub fn python_json(py: Py, redis: &RedisServer, code: &str) -> serde_json::Value {
    let stdout = python(py, redis, code);
    let last = stdout.lines().last().unwrap_or("");
    serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("python printed no JSON last line ({e}):\n{stdout}"))
}

/// Runs a console script of the venv (`rq info ...`, `rq worker ...`) with cwd and
/// PYTHONPATH at contrib/python. Does not assert success.
pub fn py_cli(py: Py, redis: &RedisServer, script: &str, args: &[&str]) -> Output {
    let out = python_command(redis, &py.script(script))
        .args(args)
        .output()
        .expect("run python console script");
    Output::from(out)
}

/// Starts a console script of the venv in the background, stdout and stderr to `log`.
pub fn py_cli_spawn(py: Py, redis: &RedisServer, script: &str, args: &[&str], log: &Path) -> Child {
    let file = File::create(log).expect("python log file");
    python_command(redis, &py.script(script))
        .args(args)
        .stdout(Stdio::from(file.try_clone().expect("dup log")))
        .stderr(Stdio::from(file))
        .spawn()
        .expect("run python console script")
}

/// Python's `rq worker` in the background on the test Redis's DB 9 (`--url`), stdout and
/// stderr in a log file; SIGKILLed on drop if still running.
pub struct PyWorker {
    child: Child,
    log: PathBuf,
    _dir: TempDir,
}

impl PyWorker {
    /// Starts `rq worker --url <DB 9> ARGS` of `py`'s venv.
    pub fn spawn(py: Py, redis: &RedisServer, args: &[&str]) -> PyWorker {
        let dir = TempDir::new("pyworker");
        let log = dir.path().join("rq-worker.log");
        let url = redis.rq_url();
        let mut full = vec!["worker", "--url", url.as_str()];
        full.extend_from_slice(args);
        let child = py_cli_spawn(py, redis, "rq", &full, &log);
        PyWorker {
            child,
            log,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM (warm shutdown), then waits (bounded) for the exit; returns the exit code
    /// (`None` if killed by a signal). Panics with the log if it does not exit.
    pub fn stop(&mut self) -> Option<i32> {
        if let Ok(Some(s)) = self.child.try_wait() {
            return s.code();
        }
        send_signal(self.pid(), libc::SIGTERM);
        match wait_child(&mut self.child, WAIT) {
            Some(s) => s.code(),
            None => panic!(
                "rq worker did not exit within {WAIT:?} after SIGTERM\n{}",
                self.log()
            ),
        }
    }
}

impl Drop for PyWorker {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
