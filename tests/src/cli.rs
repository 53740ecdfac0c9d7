//! The `runq` command line: running it against a test Redis ([`runq`], [`runq_at`],
//! [`runq_env`], [`runq_prefixed`]), its [`Output`], and the job commands tests lean on:
//! [`enqueue`], [`job_json`], and a job's failure text as `runq job --json` reports it
//! ([`failure_text`] for a job that must have failed, [`failure_hint`] for an assertion
//! message about one that should not have).

use crate::{bin, RedisServer};
use std::process::{Command, ExitStatus, Stdio};

/// A finished command.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub(crate) fn from(o: std::process::Output) -> Output {
        Output {
            status: o.status,
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// Asserts success and returns self.
    pub fn ok(self, what: &str) -> Output {
        assert!(
            self.status.success(),
            "{what} failed with {}\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }

    pub fn last_line(&self) -> &str {
        self.stdout.lines().last().unwrap_or("").trim()
    }
}

/// Removes the Redis and runq variables of the caller's environment from `cmd`.
pub(crate) fn clean_env(cmd: &mut Command) -> &mut Command {
    for k in [
        "REDIS_URL",
        "RQ_REDIS_URL",
        "REDIS_HOST",
        "REDIS_PORT",
        "REDIS_PASSWORD",
        "REDIS_USERNAME",
        "RQ_KEY_PREFIX",
        "RUNQ_CONFIG",
        "REDIS_CA_FILE",
    ] {
        cmd.env_remove(k);
    }
    cmd
}

/// Runs `runq ARGS` against `redis_url` (a base URL, for REDIS_URL).
pub fn runq_at(redis_url: &str, args: &[&str]) -> Output {
    runq_env(redis_url, args, &[])
}

/// Runs `runq ARGS` against `redis_url` with extra environment variables.
pub fn runq_env(redis_url: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let out = clean_env(&mut Command::new(bin("runq")))
        .args(args)
        .env("REDIS_URL", redis_url)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run runq");
    Output::from(out)
}

/// Runs `prefix... runq ARGS` (e.g. inside a network namespace: `ip netns exec <ns>`)
/// against `redis_url` with extra environment variables.
pub fn runq_prefixed(
    prefix: &[String],
    redis_url: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> Output {
    let mut cmd = match prefix.split_first() {
        None => Command::new(bin("runq")),
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(bin("runq"));
            c
        }
    };
    let out = clean_env(&mut cmd)
        .args(args)
        .env("REDIS_URL", redis_url)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run runq");
    Output::from(out)
}

/// Runs `runq ARGS` against the test Redis.
pub fn runq(redis: &RedisServer, args: &[&str]) -> Output {
    runq_at(&redis.url(), args)
}

/// `runq enqueue ARGS`; returns the job id (the last line).
pub fn enqueue(redis: &RedisServer, args: &[&str]) -> String {
    let mut full = vec!["enqueue"];
    full.extend_from_slice(args);
    let out = runq(redis, &full).ok(&format!("runq {}", full.join(" ")));
    let id = out.last_line().to_string();
    assert!(
        !id.is_empty() && !id.contains(char::is_whitespace),
        "runq enqueue printed no job id on its last line:\n{}",
        out.stdout
    );
    id
}

/// `runq job ID --json`, parsed.
pub fn job_json(redis: &RedisServer, id: &str) -> serde_json::Value {
    let out = runq(redis, &["job", id, "--json"]).ok("runq job --json");
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("runq job --json is not JSON ({e}):\n{}", out.stdout))
}

/// The failure text of a job that failed: asserts that `runq job --json` reports status
/// `failed` and a FAILED newest result, and returns that result's `exc_string`.
pub fn failure_text(redis: &RedisServer, id: &str) -> String {
    let v = job_json(redis, id);
    assert_eq!(v["status"], "failed", "job {id}: {v}");
    assert_eq!(v["result_type"], "FAILED", "job {id}: {v}");
    v["exc_string"]
        .as_str()
        .unwrap_or_else(|| panic!("job {id} has no exc_string: {v}"))
        .to_string()
}

/// For the message of an assertion that a job succeeded: the `exc_string` `runq job
/// --json` reports for it ('' when none). Asserts nothing; when `runq job` itself fails
/// the text says why.
pub fn failure_hint(redis: &RedisServer, id: &str) -> String {
    let out = runq(redis, &["job", id, "--json"]);
    if !out.status.success() {
        return format!("(runq job {id} failed: {})", out.stderr.trim());
    }
    serde_json::from_str::<serde_json::Value>(&out.stdout)
        .ok()
        .and_then(|v| v["exc_string"].as_str().map(str::to_string))
        .unwrap_or_default()
}
