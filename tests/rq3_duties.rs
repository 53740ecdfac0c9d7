//! RQ 3.0's worker duties (docs/rq3-duties.md), performed by runq-worker on jobs that the
//! real rq 3.0.0 package enqueued, against a private redis-server per test:
//!
//! * `Repeat`: N extra runs, immediate or through `rq:scheduled:<q>` after the intervals
//!   (the list shifting until its last entry), compared with Python's `rq worker`; a
//!   rate-limited job keeps its slot across an immediate repeat, not a scheduled one;
//! * `RateLimit`: one job of a key at a time on a worker with free slots, FIFO promotion,
//!   the slot given back on finish, failure and stop, nothing given back for a cancelled
//!   waiter, the `rq:rl:*` keys swept away by maintenance as RQ's cleanup does;
//! * a slot held by a job that died (runq-worker SIGKILLed; a Python worker crashed between
//!   its success commit and `release_slot`) freed by recovery, so nothing waits forever;
//! * a returned `rq.Retry(max=2, interval=[1, 2])` (Python task host): RETRIED, RETRIED
//!   through the scheduled registry, then MAX_RETRIES_EXCEEDED, as under Python's worker;
//! * the ready registry a Python worker that crashed between its two dependent-release
//!   steps leaves behind, enqueued by runq-worker's maintenance (through the limiter for
//!   a rate-limited dependent);
//! * dependents of a stopped parent, which rq 3.0 never releases.
//!
//! State is asserted on the Redis keys and, where useful, through rq 3.0's Python API.
//! Nothing asserts on speed: waits are bounded polls, time comparisons are ordering
//! ("not before its scheduled second").

use runq_tests::*;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

// ---------------------------------------------------------------------------------------
// Helpers

/// Task functions for the Python task host (and for Python's own `rq worker`), written
/// into a temporary directory by [`module_dir`].
const MODULE: &str = r#"
"""Task functions of tests/rq3_duties.rs."""
import time

import rq
from rq import get_current_job


def span(seconds):
    """Pushes s:<id> onto the list `events`, sleeps, pushes e:<id>; returns the id."""
    job = get_current_job()
    job.connection.rpush('events', 's:' + job.id)
    time.sleep(seconds)
    job.connection.rpush('events', 'e:' + job.id)
    return job.id


def retry_later():
    """Appends its id to `runs:<queue>` and asks to be retried (RQ 3.0's returned Retry)."""
    job = get_current_job()
    job.connection.rpush('runs:' + job.origin, job.id)
    return rq.Retry(max=2, interval=[1, 2])


def retry_now():
    """Asks to be retried at once, once (then MAX_RETRIES_EXCEEDED)."""
    return rq.Retry(max=1)
"#;

/// A directory holding `rq3duty.py` ([`MODULE`]).
fn module_dir() -> TempDir {
    let dir = TempDir::new("rq3duty");
    std::fs::write(dir.path().join("rq3duty.py"), MODULE).expect("write rq3duty.py");
    dir
}

fn toml_str(s: &str) -> String {
    serde_json::to_string(s).expect("a TOML basic string")
}

/// Short heartbeat (lease 3 s) and maintenance period, for every worker here.
const FAST: &str = "[worker]\nheartbeat_secs = 1\nmaintenance_secs = 1\n";

/// [`FAST`] plus the Python task host on the rq 3.0 venv, running `rq3duty.*` from `dir`.
fn host_config(dir: &Path) -> String {
    format!(
        "{FAST}\n[python]\ncommand = [{}]\npath = [{}]\npreload = [\"rq3duty\"]\n\
         functions = [\"rq3duty.*\"]\n",
        toml_str(Py::Rq3.python().to_str().expect("utf-8 path")),
        toml_str(dir.to_str().expect("utf-8 path")),
    )
}

/// A runq-worker on `queues` with `slots` slots, named `name`, with `config`.
fn worker<'a>(
    redis: &'a RedisServer,
    config: &str,
    queues: &str,
    slots: &str,
    name: &str,
) -> WorkerCmd<'a> {
    WorkerCmd::new(redis)
        .config(config)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .args(&["--queues", queues, "--concurrency", slots, "--name", name])
}

/// Owned strings, for comparing with what Redis returns.
fn s(items: &[&str]) -> Vec<String> {
    items.iter().map(|i| i.to_string()).collect()
}

/// A field of `rq:job:<id>` ('' when missing).
fn field(redis: &RedisServer, id: &str, name: &str) -> String {
    redis
        .hget(&format!("rq:job:{id}"), name)
        .unwrap_or_default()
}

/// One entry of `rq:results:<id>`: the Redis time it was written (from its stream id, in
/// seconds) and its fields as text.
struct Entry {
    at: f64,
    fields: HashMap<String, String>,
}

impl Entry {
    fn get(&self, name: &str) -> &str {
        self.fields.get(name).map(String::as_str).unwrap_or("")
    }

    /// `execution_started_at` (epoch seconds, the worker's clock).
    fn started(&self) -> f64 {
        self.get("execution_started_at")
            .parse()
            .unwrap_or_else(|_| panic!("bad execution_started_at in {:?}", self.fields))
    }
}

/// `rq:results:<id>`, oldest first.
fn entries(redis: &RedisServer, id: &str) -> Vec<Entry> {
    let reply: redis::streams::StreamRangeReply = redis
        .conn()
        .xrange_all(format!("rq:results:{id}"))
        .expect("XRANGE");
    reply
        .ids
        .into_iter()
        .map(|e| {
            let ms: f64 =
                e.id.split('-')
                    .next()
                    .and_then(|ms| ms.parse().ok())
                    .expect("a stream id <ms>-<seq>");
            let fields = e
                .map
                .iter()
                .map(|(k, v)| {
                    let bytes = redis::from_redis_value_ref::<Vec<u8>>(v).expect("bytes");
                    (k.clone(), String::from_utf8_lossy(&bytes).into_owned())
                })
                .collect();
            Entry {
                at: ms / 1000.0,
                fields,
            }
        })
        .collect()
}

fn types(entries: &[Entry]) -> Vec<&str> {
    entries.iter().map(|e| e.get("type")).collect()
}

fn zscore(redis: &RedisServer, key: &str, member: &str) -> Option<f64> {
    redis.conn().zscore(key, member).expect("ZSCORE")
}

fn zcard(redis: &RedisServer, key: &str) -> u64 {
    redis.conn().zcard(key).expect("ZCARD")
}

/// The limiter of rate-limit key `k`: (allowed, rate_limited), each sorted.
fn limiter(redis: &RedisServer, k: &str) -> (Vec<String>, Vec<String>) {
    (
        redis.zmembers(&format!("rq:rl:{k}:allowed")),
        redis.zmembers(&format!("rq:rl:{k}:rate_limited")),
    )
}

/// Waits until maintenance forgot rate-limit key `k` (RQ's CLEANUP_REGISTRY: out of
/// `rq:rl-keys`, its three keys deleted), which it may only do once nobody holds a slot.
fn wait_key_swept(redis: &RedisServer, k: &str) {
    wait_until(&format!("maintenance to drop rate-limit key {k}"), || {
        !redis.smembers("rq:rl-keys").contains(&k.to_string())
    });
    for key in [
        format!("rq:rl:{k}"),
        format!("rq:rl:{k}:allowed"),
        format!("rq:rl:{k}:rate_limited"),
    ] {
        assert!(!redis.exists(&key), "{key} left after the sweep");
    }
}

/// What rq 3.0 reads of jobs: status, repeat and retry fields, result types oldest first.
fn py_summary(redis: &RedisServer, ids: &[&str]) -> Value {
    python_json(
        Py::Rq3,
        redis,
        &format!(
            r#"
            from rq.job import Job
            res = {{}}
            for jid in {ids:?}:
                j = Job.fetch(jid, connection=conn)
                latest = j.latest_result()
                res[jid] = {{'status': j.get_status().value, 'repeats_left': j.repeats_left,
                            'repeat_intervals': j.repeat_intervals,
                            'number_of_retries': j.number_of_retries,
                            'results': [r.type.name for r in reversed(j.results())],
                            'latest_exc': latest.exc_string if latest else None,
                            'return_value': j.return_value()}}
            out(res)
            "#
        ),
    )
}

/// The environment every Python process here gets: the test Redis's port, contrib/python
/// (for `runq.tasks`) and `extra` on PYTHONPATH, no Redis variables of the caller.
fn python_cmd(redis: &RedisServer, program: &Path, extra: Option<&Path>) -> Command {
    let mut path = python_dir().into_os_string();
    if let Some(extra) = extra {
        let mut p = extra.as_os_str().to_os_string();
        p.push(":");
        p.push(path);
        path = p;
    }
    let mut cmd = Command::new(program);
    for k in ["REDIS_URL", "RQ_REDIS_URL", "RUNQ_CONFIG", "RQ_KEY_PREFIX"] {
        cmd.env_remove(k);
    }
    cmd.current_dir(python_dir())
        .env("PYTHONPATH", path)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("RUNQ_TEST_REDIS_PORT", redis.port.to_string())
        .stdin(Stdio::null());
    cmd
}

/// Runs a Python snippet (with `conn` on DB 9) that is expected to end the process with
/// `os._exit(code)`: a Python RQ worker "crashing" at a chosen point.
fn python_crash(redis: &RedisServer, code: &str, expect: i32) {
    let script = format!(
        "import os\nimport redis\n\
         conn = redis.Redis(host='127.0.0.1', port=int(os.environ['RUNQ_TEST_REDIS_PORT']), db=9)\n{}\n",
        dedent(code)
    );
    let out = python_cmd(redis, &Py::Rq3.python(), None)
        .arg("-c")
        .arg(&script)
        .output()
        .expect("run python");
    assert_eq!(
        out.status.code(),
        Some(expect),
        "the simulated crash did not happen\n--- script ---\n{script}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Python's `rq worker` (forking Worker) in the background; SIGKILLed on drop.
struct PyWorker {
    child: Child,
    log: PathBuf,
    _dir: TempDir,
}

impl PyWorker {
    fn spawn(redis: &RedisServer, extra: Option<&Path>, args: &[&str]) -> PyWorker {
        let dir = TempDir::new("rq3-pyworker");
        let log = dir.path().join("rq-worker.log");
        let file = std::fs::File::create(&log).expect("log file");
        let child = python_cmd(redis, &Py::Rq3.script("rq"), extra)
            .arg("worker")
            .args(["--url", &redis.rq_url()])
            .args(args)
            .stdout(Stdio::from(file.try_clone().expect("dup log")))
            .stderr(Stdio::from(file))
            .spawn()
            .expect("run rq worker");
        PyWorker {
            child,
            log,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
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

/// Clock slack between the worker's clock and Redis's (same host), in seconds.
const CLOCKS: f64 = 0.05;

// ---------------------------------------------------------------------------------------
// 1. Repeat

#[test]
fn repeat_times_two_runs_three_times_as_under_rq_worker() {
    let redis = RedisServer::start();
    python(
        Py::Rq3,
        &redis,
        r#"
        from rq import Queue, Repeat
        for q in ('rep-runq', 'rep-rq'):
            Queue(q, connection=conn).enqueue('runq.tasks.echo', 7, repeat=Repeat(times=2),
                                              job_id=q + '-job')
        "#,
    );
    assert_eq!(field(&redis, "rep-runq-job", "repeats_left"), "2");
    assert_eq!(field(&redis, "rep-runq-job", "repeat_intervals"), "[0]");

    // Python's own worker on one queue, runq-worker on the other.
    let out = py_cli(
        Py::Rq3,
        &redis,
        "rq",
        &["worker", "--burst", "--url", &redis.rq_url(), "rep-rq"],
    );
    assert!(out.status.success(), "rq worker failed: {out:?}");
    let logs = worker(&redis, FAST, "rep-runq", "1", "rep").run_burst();

    let id = "rep-runq-job";
    assert_eq!(redis.status(id).as_deref(), Some("finished"), "{logs}");
    assert_eq!(field(&redis, id, "repeats_left"), "0");
    let runs = entries(&redis, id);
    assert_eq!(
        types(&runs),
        vec!["1", "1", "1"],
        "three SUCCESSFUL results\n{logs}"
    );
    let mut executions: Vec<&str> = runs.iter().map(|e| e.get("execution_id")).collect();
    executions.sort();
    executions.dedup();
    assert_eq!(executions.len(), 3, "three distinct executions");
    assert_eq!(redis.zmembers("rq:finished:rep-runq"), vec![id.to_string()]);
    assert!(redis.lrange("rq:queue:rep-runq").is_empty());
    assert!(redis.zrange("rq:scheduled:rep-runq").is_empty());
    assert!(redis.zrange("rq:wip:rep-runq").is_empty());

    let v = py_summary(&redis, &["rep-runq-job", "rep-rq-job"]);
    assert_eq!(
        v["rep-rq-job"],
        json!({"status": "finished", "repeats_left": 0, "repeat_intervals": [0],
               "number_of_retries": null, "results": ["SUCCESSFUL", "SUCCESSFUL", "SUCCESSFUL"],
               "latest_exc": null, "return_value": {"args": [7], "kwargs": {}}}),
        "Python rq's own behaviour changed: {v}"
    );
    assert_eq!(v["rep-runq-job"], v["rep-rq-job"], "{v}\n{logs}");
}

/// XLEN of the results, status, scheduled score, repeat_intervals, repeats_left, finished
/// score, position on the queue.
type RepeatSnapshot = (
    u64,
    Option<String>,
    Option<f64>,
    Option<String>,
    Option<String>,
    Option<f64>,
    Option<i64>,
);

#[test]
fn repeat_with_intervals_goes_through_the_scheduled_registry() {
    let redis = RedisServer::start();
    python(
        Py::Rq3,
        &redis,
        r#"
        from rq import Queue, Repeat
        for q in ('rpi-runq', 'rpi-rq'):
            Queue(q, connection=conn).enqueue('runq.tasks.echo', 'iv',
                                              repeat=Repeat(times=2, interval=[1, 2]),
                                              job_id=q + '-job')
        "#,
    );
    let id = "rpi-runq-job";
    assert_eq!(field(&redis, id, "repeats_left"), "2");
    assert_eq!(field(&redis, id, "repeat_intervals"), "[1, 2]");
    let mut py = PyWorker::spawn(
        &redis,
        None,
        &["--with-scheduler", "--name", "pyrpi", "rpi-rq"],
    );
    let mut w = worker(&redis, FAST, "rpi-runq", "1", "rpi").spawn();

    // Between run 2 and run 3 the job waits 2 s in the scheduled registry (one atomic
    // read, so the fields belong together): the last interval is kept, no repeats left,
    // and the finished registry already has it (RQ: finished while waiting to repeat).
    let (score, intervals, left, in_finished, queued): (f64, String, String, bool, bool) =
        wait_for("the second repeat to wait in rq:scheduled:rpi-runq", || {
            let (n, status, score, intervals, left, fin, pos): RepeatSnapshot = redis::pipe()
                .atomic()
                .cmd("XLEN")
                .arg(format!("rq:results:{id}"))
                .hget(format!("rq:job:{id}"), "status")
                .zscore("rq:scheduled:rpi-runq", id)
                .hget(format!("rq:job:{id}"), "repeat_intervals")
                .hget(format!("rq:job:{id}"), "repeats_left")
                .zscore("rq:finished:rpi-runq", id)
                .cmd("LPOS")
                .arg("rq:queue:rpi-runq")
                .arg(id)
                .query(&mut redis.conn())
                .expect("MULTI");
            (n == 2 && status.as_deref() == Some("scheduled")).then(|| {
                (
                    score.unwrap_or(-1.0),
                    intervals.unwrap_or_default(),
                    left.unwrap_or_default(),
                    fin.is_some(),
                    pos.is_some(),
                )
            })
        });
    assert_eq!(intervals, "[2]", "the list shifted to its last interval");
    assert_eq!(left, "0");
    assert!(
        in_finished,
        "a job waiting to repeat is in rq:finished (as in RQ)"
    );
    assert!(!queued, "a scheduled repeat is not on its queue");
    let second = &entries(&redis, id)[1];
    // floor(now + 2) of the step that wrote the second result (same script, same clock).
    assert!(
        score > second.at + 2.0 - 1.0 - CLOCKS && score <= second.at + 2.0 + CLOCKS,
        "scheduled for {score}, the second run ended at {} (interval 2)",
        second.at
    );

    redis.wait_status(id, "finished");
    let runs = entries(&redis, id);
    assert_eq!(types(&runs), vec!["1", "1", "1"], "{}", w.logs());
    // Each repeat started no earlier than the whole second it was scheduled for.
    for (i, interval) in [(1, 1.0), (2, 2.0)] {
        let due = runs[i - 1].at.floor() + interval;
        assert!(
            runs[i].started() >= due - CLOCKS,
            "run {} started at {}, before {due} (run {i} ended at {}, interval {interval})",
            i + 1,
            runs[i].started(),
            runs[i - 1].at
        );
    }
    assert!(redis.zrange("rq:scheduled:rpi-runq").is_empty());
    assert!(redis.lrange("rq:queue:rpi-runq").is_empty());

    // Python's worker (with its scheduler) on the same job: the same end state.
    redis.wait_status("rpi-rq-job", "finished");
    wait_until("Python's third run", || {
        entries(&redis, "rpi-rq-job").len() == 3
    });
    let v = py_summary(&redis, &["rpi-runq-job", "rpi-rq-job"]);
    assert_eq!(
        v["rpi-rq-job"],
        json!({"status": "finished", "repeats_left": 0, "repeat_intervals": [2],
               "number_of_retries": null, "results": ["SUCCESSFUL", "SUCCESSFUL", "SUCCESSFUL"],
               "latest_exc": null, "return_value": {"args": ["iv"], "kwargs": {}}}),
        "Python rq's own behaviour changed: {v}\n{}",
        py.log()
    );
    assert_eq!(v["rpi-runq-job"], v["rpi-rq-job"], "{v}");
    w.sigterm();
    assert_eq!(w.wait_exit(), Some(0), "{}", w.logs());
    let _ = py.child.kill();
}

#[test]
fn repeat_of_a_rate_limited_job_keeps_its_slot_only_when_immediate() {
    let redis = RedisServer::start();
    python(
        Py::Rq3,
        &redis,
        r#"
        from rq import Queue, RateLimit, Repeat
        q = Queue('rrl', connection=conn)
        q.enqueue('runq.tasks.sleep', 1, repeat=Repeat(times=1), rate_limit=RateLimit('rk1', 1),
                  job_id='imm')
        q.enqueue('runq.tasks.echo', 'w1', rate_limit=RateLimit('rk1', 1), job_id='w1')
        q.enqueue('runq.tasks.sleep', 1, repeat=Repeat(times=1, interval=3),
                  rate_limit=RateLimit('rk2', 1), job_id='sch')
        q.enqueue('runq.tasks.echo', 'w2', rate_limit=RateLimit('rk2', 1), job_id='w2')
        "#,
    );
    assert_eq!(limiter(&redis, "rk1"), (s(&["imm"]), s(&["w1"])));
    assert_eq!(limiter(&redis, "rk2"), (s(&["sch"]), s(&["w2"])));
    let mut w = worker(&redis, FAST, "rrl", "3", "rrl").spawn();

    // A scheduled repeat gives its slot back while it waits (RQ: released on `scheduled`).
    let held: bool = wait_for("sch to wait for its repeat", || {
        let (status, held): (Option<String>, Option<f64>) = redis::pipe()
            .atomic()
            .hget("rq:job:sch", "status")
            .zscore("rq:rl:rk2:allowed", "sch")
            .query(&mut redis.conn())
            .expect("MULTI");
        (status.as_deref() == Some("scheduled")).then_some(held.is_some())
    });
    assert!(!held, "sch holds its slot while scheduled");
    for id in ["imm", "w1", "sch", "w2"] {
        redis.wait_status(id, "finished");
    }
    wait_until("sch's second run", || entries(&redis, "sch").len() == 2);
    let imm = entries(&redis, "imm");
    assert_eq!(types(&imm), vec!["1", "1"]);
    // An immediate repeat keeps the slot: w1 starts only after imm's last run.
    let w1 = entries(&redis, "w1");
    assert!(
        w1[0].started() >= imm[1].at - CLOCKS,
        "w1 started at {} while imm still repeated (its last run ended at {})",
        w1[0].started(),
        imm[1].at
    );
    assert_eq!(types(&w1), vec!["1"]);
    assert_eq!(types(&entries(&redis, "w2")), vec!["1"]);
    assert_eq!(limiter(&redis, "rk1"), (vec![], vec![]));
    assert_eq!(limiter(&redis, "rk2"), (vec![], vec![]));
    wait_key_swept(&redis, "rk1");
    wait_key_swept(&redis, "rk2");
    w.sigterm();
    assert_eq!(w.wait_exit(), Some(0), "{}", w.logs());
}

// ---------------------------------------------------------------------------------------
// 2. RateLimit

#[test]
fn rate_limited_jobs_run_one_at_a_time_and_maintenance_drops_the_key() {
    let redis = RedisServer::start();
    let dir = module_dir();
    python(
        Py::Rq3,
        &redis,
        r#"
        from rq import Queue, RateLimit
        q = Queue('rl', connection=conn)
        q.enqueue('rq3duty.span', 3.0, job_id='rl-free')
        for n in 'abc':
            q.enqueue('rq3duty.span', 0.5, rate_limit=RateLimit('k', 1), job_id='rl-' + n)
        "#,
    );
    // rq's admission: the first holds the one slot and is queued, the others wait on no
    // queue with status rate_limited.
    assert_eq!(limiter(&redis, "k"), (s(&["rl-a"]), s(&["rl-b", "rl-c"])));
    assert_eq!(redis.lrange("rq:queue:rl"), s(&["rl-free", "rl-a"]));
    assert_eq!(redis.status("rl-b").as_deref(), Some("rate_limited"));
    assert_eq!(redis.hget("rq:rl:k", "concurrency").as_deref(), Some("1"));
    assert_eq!(redis.smembers("rq:rl-keys"), s(&["k"]));

    let mut w = worker(&redis, &host_config(dir.path()), "rl", "3", "rlw").spawn();
    let limited = ["rl-a", "rl-b", "rl-c"];
    wait_until("every job to finish", || {
        // Sampled while they run: never more than one slot held, one limited job started.
        let (allowed, statuses): (u64, Vec<Option<String>>) = redis::pipe()
            .atomic()
            .zcard("rq:rl:k:allowed")
            .cmd("EVAL")
            .arg(
                "local r = {} for i, id in ipairs(ARGV) do \
                 r[i] = redis.call('HGET', 'rq:job:' .. id, 'status') or '' end return r",
            )
            .arg(0)
            .arg(&limited[..])
            .query(&mut redis.conn())
            .expect("MULTI");
        let started = statuses
            .iter()
            .filter(|s| s.as_deref() == Some("started"))
            .count();
        assert!(allowed <= 1, "{allowed} slots held of 1");
        assert!(
            started <= 1,
            "two limited jobs started at once: {statuses:?}"
        );
        statuses.iter().all(|s| s.as_deref() == Some("finished"))
            && redis.status("rl-free").as_deref() == Some("finished")
    });
    let events = redis.lrange("events");
    let of_limited: Vec<&String> = events.iter().filter(|e| !e.ends_with("rl-free")).collect();
    assert_eq!(
        of_limited,
        vec!["s:rl-a", "e:rl-a", "s:rl-b", "e:rl-b", "s:rl-c", "e:rl-c"],
        "one limited job at a time, in admission order: {events:?}\n{}",
        w.logs()
    );
    // The worker had slots to spare: the unlimited job ran alongside the limited ones.
    let at = |e: &str| events.iter().position(|x| x == e).expect("event");
    assert!(
        events[at("s:rl-free")..at("e:rl-free")]
            .iter()
            .any(|e| !e.ends_with("rl-free")),
        "the unlimited job did not overlap any limited one: {events:?}"
    );
    assert_eq!(
        redis.smembers("rq:workers").len(),
        3,
        "three slots registered"
    );
    for id in limited {
        assert_eq!(types(&entries(&redis, id)), vec!["1"], "{id}");
    }
    assert_eq!(limiter(&redis, "k"), (vec![], vec![]));
    wait_key_swept(&redis, "k");
    let v = python_json(
        Py::Rq3,
        &redis,
        r#"
        from rq.job import Job
        from rq.rate_limit import RateLimitRegistry
        out({'registries': [r.key for r in RateLimitRegistry.all(conn)],
             'results': [Job.fetch(j, connection=conn).latest_result().type.name
                         for j in ('rl-a', 'rl-b', 'rl-c')],
             'returns': [Job.fetch(j, connection=conn).return_value() for j in ('rl-a', 'rl-b', 'rl-c')]})
        "#,
    );
    assert_eq!(
        v,
        json!({"registries": [], "results": ["SUCCESSFUL", "SUCCESSFUL", "SUCCESSFUL"],
               "returns": ["rl-a", "rl-b", "rl-c"]})
    );
    w.sigterm();
    assert_eq!(w.wait_exit(), Some(0), "{}", w.logs());
}

#[test]
fn rate_limit_slot_freed_by_failure_and_stop_not_by_cancelling_a_waiter() {
    let redis = RedisServer::start();
    python(
        Py::Rq3,
        &redis,
        r#"
        from rq import Queue, RateLimit
        q = Queue('rl2', connection=conn)
        q.enqueue('runq.tasks.fail', 'limited boom', rate_limit=RateLimit('rlf', 1), job_id='f1')
        q.enqueue('runq.tasks.echo', 'f2', rate_limit=RateLimit('rlf', 1), job_id='f2')
        q.enqueue('runq.tasks.sleep', 30, rate_limit=RateLimit('rls', 1), job_id='s1')
        q.enqueue('runq.tasks.echo', 's2', rate_limit=RateLimit('rls', 1), job_id='s2')
        q.enqueue('runq.tasks.sleep', 30, rate_limit=RateLimit('rlc', 1), job_id='c1')
        for n in ('c2', 'c3', 'c4'):
            q.enqueue('runq.tasks.echo', n, rate_limit=RateLimit('rlc', 1), job_id=n)
        "#,
    );
    assert_eq!(limiter(&redis, "rlc"), (s(&["c1"]), s(&["c2", "c3", "c4"])));
    let mut w = worker(&redis, FAST, "rl2", "4", "rl2w").spawn();

    // A limited job that fails for good (no retries) gives its slot to the next.
    redis.wait_status("f2", "finished");
    assert_eq!(redis.status("f1").as_deref(), Some("failed"));
    let f1 = entries(&redis, "f1");
    assert_eq!(types(&f1), vec!["2"]);
    assert_eq!(
        RedisServer::exc_text(&redis.results("f1")[0]),
        "RuntimeError: limited boom"
    );
    assert_eq!(redis.zmembers("rq:failed:rl2"), s(&["f1"]));
    assert_eq!(limiter(&redis, "rlf"), (vec![], vec![]));

    // A stopped job gives its slot back (RQ: stopped is released).
    redis.wait_status("s1", "started");
    redis.wait_status("c1", "started");
    assert_eq!(redis.status("s2").as_deref(), Some("rate_limited"));
    assert_eq!(limiter(&redis, "rls"), (s(&["s1"]), s(&["s2"])));
    let s1_worker = field(&redis, "s1", "worker_name");
    redis.wait_subscribed(&s1_worker);
    python(
        Py::Rq3,
        &redis,
        "from rq.command import send_stop_job_command\nsend_stop_job_command(conn, 's1')",
    );
    redis.wait_status("s1", "stopped");
    redis.wait_status("s2", "finished");
    assert_eq!(limiter(&redis, "rls"), (vec![], vec![]));

    // Cancelling waiters (runq's cancel and rq's job.cancel()) frees nothing: they held
    // no slot. c1 still runs and holds it; c4 keeps waiting.
    let out = runq(&redis, &["cancel", "c2"]).ok("runq cancel c2");
    assert!(out.stdout.contains("was rate_limited"), "{}", out.stdout);
    python(
        Py::Rq3,
        &redis,
        "from rq.job import Job\nJob.fetch('c3', connection=conn).cancel()",
    );
    assert_eq!(redis.status("c2").as_deref(), Some("canceled"));
    assert_eq!(redis.status("c3").as_deref(), Some("canceled"));
    assert_eq!(limiter(&redis, "rlc"), (s(&["c1"]), s(&["c4"])));
    assert_eq!(redis.status("c4").as_deref(), Some("rate_limited"));
    assert_eq!(redis.status("c1").as_deref(), Some("started"));
    assert!(redis.lrange("rq:queue:rl2").is_empty());
    // The next maintenance sweeps must not free c1's slot either (it is running).
    let sweeps_from = redis.now_secs();
    wait_until("two maintenance passes", || {
        redis.now_secs() >= sweeps_from + 3
    });
    assert_eq!(limiter(&redis, "rlc"), (s(&["c1"]), s(&["c4"])));
    assert_eq!(redis.status("c4").as_deref(), Some("rate_limited"));

    // The holder ends: the remaining waiter runs; the cancelled ones never do.
    runq(&redis, &["stop-job", "c1"]).ok("runq stop-job c1");
    redis.wait_status("c1", "stopped");
    redis.wait_status("c4", "finished");
    for id in ["c2", "c3"] {
        assert!(entries(&redis, id).is_empty(), "{id} ran");
        assert_eq!(redis.status(id).as_deref(), Some("canceled"));
    }
    assert_eq!(redis.zmembers("rq:canceled:rl2"), s(&["c2", "c3"]));
    assert_eq!(limiter(&redis, "rlc"), (vec![], vec![]));
    for k in ["rlf", "rls", "rlc"] {
        wait_key_swept(&redis, k);
    }
    let v = py_summary(&redis, &["f2", "s1", "s2", "c4"]);
    for id in ["f2", "s2", "c4"] {
        assert_eq!(v[id]["status"], "finished", "{v}");
        assert_eq!(v[id]["results"], json!(["SUCCESSFUL"]), "{v}");
    }
    assert_eq!(v["s1"]["status"], "stopped", "{v}");
    w.sigterm();
    assert_eq!(w.wait_exit(), Some(0), "{}", w.logs());
}

#[test]
fn rate_limit_slots_of_crashed_workers_are_freed_and_the_waiters_run() {
    let redis = RedisServer::start();
    python(
        Py::Rq3,
        &redis,
        r#"
        from rq import Queue, RateLimit
        q = Queue('rlx', connection=conn)
        q.enqueue('runq.tasks.sleep', 60, rate_limit=RateLimit('kx', 1), job_id='x1')
        q.enqueue('runq.tasks.echo', 'x2', rate_limit=RateLimit('kx', 1), job_id='x2')
        q.enqueue('runq.tasks.echo', 'x3', rate_limit=RateLimit('kx', 1), job_id='x3')
        q = Queue('rly', connection=conn)
        q.enqueue('runq.tasks.echo', 'y1', rate_limit=RateLimit('ky', 1), job_id='y1')
        q.enqueue('runq.tasks.echo', 'y2', rate_limit=RateLimit('ky', 1), job_id='y2')
        "#,
    );
    // A runq-worker dies (SIGKILL) while the slot holder runs.
    let mut a = worker(&redis, FAST, "rlx", "2", "rlx-a").spawn();
    redis.wait_status("x1", "started");
    a.kill9();
    assert_eq!(redis.status("x1").as_deref(), Some("started"));
    assert_eq!(limiter(&redis, "kx"), (s(&["x1"]), s(&["x2", "x3"])));

    // A Python rq 3.0 worker commits y1's success and dies before release_slot().
    python_crash(
        &redis,
        r#"
        import rq.worker.base
        from rq import Queue, SimpleWorker
        def crash(job):
            os._exit(17)
        rq.worker.base.release_slot = crash
        SimpleWorker([Queue('rly', connection=conn)], connection=conn).work(burst=True)
        "#,
        17,
    );
    assert_eq!(redis.status("y1").as_deref(), Some("finished"));
    assert_eq!(limiter(&redis, "ky"), (s(&["y1"]), s(&["y2"])));
    assert_eq!(redis.status("y2").as_deref(), Some("rate_limited"));

    // A fresh runq-worker: abandoned-job recovery (after the 3 s lease) fails x1 and
    // gives its slot back; the sweep frees y1's leaked slot. Every waiter runs.
    let mut b = worker(&redis, FAST, "rlx,rly", "2", "rlx-b").spawn();
    redis.wait_status("x1", "failed");
    for id in ["x2", "x3", "y2"] {
        redis.wait_status(id, "finished");
    }
    let exc = RedisServer::exc_text(&redis.results("x1")[0]);
    assert!(
        exc.starts_with("Moved to FailedJobRegistry, due to AbandonedJobError"),
        "{exc}"
    );
    assert_eq!(types(&entries(&redis, "x1")), vec!["2"]);
    for id in ["x2", "x3"] {
        assert!(
            field(&redis, id, "worker_name").starts_with("rlx-b"),
            "{id}"
        );
        assert_eq!(types(&entries(&redis, id)), vec!["1"], "{id}");
    }
    assert_eq!(types(&entries(&redis, "y1")), vec!["1"], "y1 ran once");
    assert_eq!(limiter(&redis, "kx"), (vec![], vec![]));
    assert_eq!(limiter(&redis, "ky"), (vec![], vec![]));
    wait_key_swept(&redis, "kx");
    wait_key_swept(&redis, "ky");
    let v = python_json(
        Py::Rq3,
        &redis,
        r#"
        from rq.job import Job
        from rq.rate_limit import RateLimitRegistry
        out({'registries': [r.key for r in RateLimitRegistry.all(conn)],
             'statuses': [Job.fetch(j, connection=conn).get_status().value
                          for j in ('x1', 'x2', 'x3', 'y1', 'y2')]})
        "#,
    );
    assert_eq!(
        v,
        json!({"registries": [],
               "statuses": ["failed", "finished", "finished", "finished", "finished"]})
    );
    b.sigterm();
    assert_eq!(b.wait_exit(), Some(0), "{}", b.logs());
}

// ---------------------------------------------------------------------------------------
// 3. A returned rq.Retry with intervals

#[test]
fn returned_retry_with_intervals_is_rescheduled_then_max_retries_exceeded() {
    let redis = RedisServer::start();
    let dir = module_dir();
    python(
        Py::Rq3,
        &redis,
        r#"
        from rq import Queue
        for q in ('rv-runq', 'rv-rq'):
            Queue(q, connection=conn).enqueue('rq3duty.retry_later', job_id=q + '-job')
        "#,
    );
    let py = PyWorker::spawn(
        &redis,
        Some(dir.path()),
        &["--with-scheduler", "--name", "pyrv", "rv-rq"],
    );
    let mut w = worker(&redis, &host_config(dir.path()), "rv-runq", "1", "rv").spawn();
    let id = "rv-runq-job";

    // After the second RETRIED result the job waits 2 s (the second interval) in the
    // scheduled registry.
    let score: f64 = wait_for("the second retry to wait in rq:scheduled:rv-runq", || {
        let (n, status, score): (u64, Option<String>, Option<f64>) = redis::pipe()
            .atomic()
            .cmd("XLEN")
            .arg(format!("rq:results:{id}"))
            .hget(format!("rq:job:{id}"), "status")
            .zscore("rq:scheduled:rv-runq", id)
            .query(&mut redis.conn())
            .expect("MULTI");
        (n == 2 && status.as_deref() == Some("scheduled")).then(|| score.unwrap_or(-1.0))
    });
    let second = &entries(&redis, id)[1];
    assert!(
        score > second.at + 1.0 - CLOCKS && score <= second.at + 2.0 + CLOCKS,
        "scheduled for {score}, the second run ended at {} (interval 2)",
        second.at
    );
    assert_eq!(field(&redis, id, "number_of_retries"), "2");

    redis.wait_status(id, "failed");
    let runs = entries(&redis, id);
    assert_eq!(types(&runs), vec!["4", "4", "5"], "{}", w.logs());
    for (i, interval) in [(1, 1.0), (2, 2.0)] {
        let due = runs[i - 1].at.floor() + interval;
        assert!(
            runs[i].started() >= due - CLOCKS,
            "run {} started at {}, before {due} (interval {interval})",
            i + 1,
            runs[i].started()
        );
    }
    assert_eq!(redis.lrange("runs:rv-runq").len(), 3);
    assert_eq!(redis.zmembers("rq:failed:rv-runq"), s(&[id]));
    assert!(redis.zrange("rq:scheduled:rv-runq").is_empty());
    assert!(redis.lrange("rq:queue:rv-runq").is_empty());

    redis.wait_status("rv-rq-job", "failed");
    let mut v = py_summary(&redis, &["rv-runq-job", "rv-rq-job"]);
    assert_eq!(
        v["rv-rq-job"],
        json!({"status": "failed", "repeats_left": null, "repeat_intervals": null,
               "number_of_retries": 2,
               "results": ["RETRIED", "RETRIED", "MAX_RETRIES_EXCEEDED"],
               "latest_exc": null, "return_value": null}),
        "Python rq's own behaviour changed: {v}\n{}",
        py.log()
    );
    // The failure text of the last result differs (see the ignored test below); the
    // rest must match.
    for job in ["rv-runq-job", "rv-rq-job"] {
        v[job]
            .as_object_mut()
            .expect("an object")
            .remove("latest_exc");
    }
    assert_eq!(v["rv-runq-job"], v["rv-rq-job"], "{v}\n{}", w.logs());
    assert_eq!(redis.lrange("runs:rv-rq").len(), 3);
    w.sigterm();
    assert_eq!(w.wait_exit(), Some(0), "{}", w.logs());
}

#[test]
fn max_retries_exceeded_result_has_no_failure_text_as_in_rq() {
    let redis = RedisServer::start();
    let dir = module_dir();
    python(
        Py::Rq3,
        &redis,
        r#"
        from rq import Queue
        for q in ('mx-runq', 'mx-rq'):
            Queue(q, connection=conn).enqueue('rq3duty.retry_now', job_id=q + '-job')
        "#,
    );
    // rq's own worker (in-process, the immediate retry keeps the burst going).
    python(
        Py::Rq3,
        &redis,
        &format!(
            "import sys\nsys.path.insert(0, {:?})\nfrom rq import Queue, SimpleWorker\n\
             SimpleWorker([Queue('mx-rq', connection=conn)], connection=conn).work(burst=True)",
            dir.path().to_str().expect("utf-8 path")
        ),
    );
    let logs = worker(&redis, &host_config(dir.path()), "mx-runq", "1", "mx").run_burst();
    for id in ["mx-rq-job", "mx-runq-job"] {
        let runs = entries(&redis, id);
        assert_eq!(types(&runs), vec!["4", "5"], "{id}\n{logs}");
        assert!(
            !runs[1].fields.contains_key("exc_string"),
            "{id}: the MAX_RETRIES_EXCEEDED entry has exc_string {:?}",
            runs[1].get("exc_string")
        );
    }
    let v = py_summary(&redis, &["mx-runq-job", "mx-rq-job"]);
    assert_eq!(v["mx-rq-job"]["latest_exc"], Value::Null, "{v}");
    assert_eq!(v["mx-runq-job"], v["mx-rq-job"], "{v}");
}

// ---------------------------------------------------------------------------------------
// 4. The ready registry

#[test]
fn ready_registry_left_by_a_crashed_rq_worker_is_enqueued_by_maintenance() {
    let redis = RedisServer::start();
    // A Python rq 3.0 worker finishes the parent, whose success transaction moves both
    // dependents to `ready_to_enqueue` in rq:ready:rdy, and dies before pushing them.
    python_crash(
        &redis,
        r#"
        from rq import Queue, RateLimit, SimpleWorker
        q = Queue('rdy', connection=conn)
        Queue('rdy-other', connection=conn).enqueue(
            'runq.tasks.echo', 'holder', rate_limit=RateLimit('rdyk', 1), job_id='rdy-holder')
        p = q.enqueue('runq.tasks.echo', 'parent', job_id='rdy-parent')
        q.enqueue('runq.tasks.echo', 'child', depends_on=p, job_id='rdy-child')
        q.enqueue('runq.tasks.echo', 'limited', depends_on=p, rate_limit=RateLimit('rdyk', 1),
                  job_id='rdy-limited')
        def crash(self, ids):
            os._exit(17)
        Queue.enqueue_ready_jobs_by_queue = crash
        SimpleWorker([q], connection=conn).work(burst=True)
        "#,
        17,
    );
    assert_eq!(redis.status("rdy-parent").as_deref(), Some("finished"));
    for id in ["rdy-child", "rdy-limited"] {
        assert_eq!(
            redis.status(id).as_deref(),
            Some("ready_to_enqueue"),
            "{id}"
        );
    }
    assert_eq!(
        redis.zmembers("rq:ready:rdy"),
        s(&["rdy-child", "rdy-limited"])
    );
    assert!(!redis.exists("rq:job:rdy-parent:dependents"));
    assert!(redis.lrange("rq:queue:rdy").is_empty());
    assert!(redis.zrange("rq:deferred:rdy").is_empty());
    assert!(!redis.exists("rq:clean_registries:rdy"));
    assert_eq!(limiter(&redis, "rdyk"), (s(&["rdy-holder"]), vec![]));
    // Two entries RQ's cleanup only removes: a job that is no longer ready (the finished
    // parent) and one whose hash is gone.
    let now = redis.now_secs();
    let _: () = redis
        .conn()
        .zadd_multiple("rq:ready:rdy", &[(now, "rdy-parent"), (now, "rdy-ghost")])
        .expect("ZADD");

    // runq-worker's maintenance pushes the plain dependent, which runs; the rate-limited
    // one goes through its limiter, whose slot rdy-holder (on a queue this worker does
    // not serve) holds, so it waits there and not on the queue.
    let mut w = worker(&redis, FAST, "rdy", "2", "rdyw").spawn();
    redis.wait_status("rdy-child", "finished");
    redis.wait_status("rdy-limited", "rate_limited");
    assert!(redis.zrange("rq:ready:rdy").is_empty());
    assert_eq!(redis.status("rdy-parent").as_deref(), Some("finished"));
    assert_eq!(
        types(&entries(&redis, "rdy-parent")),
        vec!["1"],
        "the parent ran again"
    );
    assert!(!redis.exists("rq:job:rdy-ghost"));
    assert_eq!(
        limiter(&redis, "rdyk"),
        (s(&["rdy-holder"]), s(&["rdy-limited"]))
    );
    assert!(!redis
        .lrange("rq:queue:rdy")
        .contains(&"rdy-limited".to_string()));
    assert!(zscore(&redis, "rq:ready:rdy", "rdy-limited").is_none());

    // The holder is cancelled: its slot goes to the waiting dependent, which runs.
    runq(&redis, &["cancel", "rdy-holder"]).ok("runq cancel rdy-holder");
    redis.wait_status("rdy-limited", "finished");
    assert_eq!(limiter(&redis, "rdyk"), (vec![], vec![]));
    assert_eq!(zcard(&redis, "rq:ready:rdy"), 0);
    wait_key_swept(&redis, "rdyk");
    let v = py_summary(&redis, &["rdy-child", "rdy-limited"]);
    assert_eq!(v["rdy-child"]["status"], "finished", "{v}");
    assert_eq!(
        v["rdy-child"]["return_value"],
        json!({"args": ["child"], "kwargs": {}})
    );
    assert_eq!(v["rdy-limited"]["results"], json!(["SUCCESSFUL"]), "{v}");
    w.sigterm();
    assert_eq!(w.wait_exit(), Some(0), "{}", w.logs());
}

// ---------------------------------------------------------------------------------------
// 5. Dependents of a stopped parent

#[test]
fn dependents_of_a_stopped_parent_stay_deferred_as_in_rq() {
    let redis = RedisServer::start();
    python(
        Py::Rq3,
        &redis,
        r#"
        from rq import Queue
        from rq.job import Dependency
        for q in ('stp-runq', 'stp-rq'):
            queue = Queue(q, connection=conn)
            p = queue.enqueue('runq.tasks.sleep', 30, job_id=q + '-p')
            queue.enqueue('runq.tasks.echo', 'c', job_id=q + '-c',
                          depends_on=Dependency(jobs=[p], allow_failure=True))
        "#,
    );
    let _py = PyWorker::spawn(&redis, None, &["--name", "pystp", "stp-rq"]);
    let mut w = worker(&redis, FAST, "stp-runq", "1", "stp").spawn();
    for q in ["stp-runq", "stp-rq"] {
        let parent = format!("{q}-p");
        redis.wait_status(&parent, "started");
        redis.wait_subscribed(&field(&redis, &parent, "worker_name"));
    }
    python(
        Py::Rq3,
        &redis,
        "from rq.command import send_stop_job_command\n\
         for q in ('stp-runq', 'stp-rq'):\n    send_stop_job_command(conn, q + '-p')",
    );
    // Each worker runs one job at a time: once a job enqueued after the stop has
    // finished, the stop (dependents included) has been handled.
    for q in ["stp-runq", "stp-rq"] {
        redis.wait_status(&format!("{q}-p"), "stopped");
        let marker = format!("{q}-after");
        python(
            Py::Rq3,
            &redis,
            &format!(
                "from rq import Queue\nQueue({q:?}, connection=conn).enqueue('runq.tasks.noop', job_id={marker:?})"
            ),
        );
        redis.wait_status(&marker, "finished");
    }
    let v = py_summary(&redis, &["stp-runq-c", "stp-rq-c"]);
    assert_eq!(
        v["stp-rq-c"]["status"], "deferred",
        "Python rq's own behaviour changed: {v}"
    );
    assert_eq!(v["stp-runq-c"], v["stp-rq-c"], "{v}");
    assert_eq!(redis.zmembers("rq:deferred:stp-runq"), s(&["stp-runq-c"]));
    assert!(
        entries(&redis, "stp-runq-c").is_empty(),
        "the dependent ran"
    );
    w.sigterm();
    assert_eq!(w.wait_exit(), Some(0), "{}", w.logs());
}
