//! Job lifecycle across runq and Python RQ, in depth: retries (with and without
//! intervals, from both clients), dependency chains and fan-in with the exact keys RQ
//! uses, scheduling (runq's scheduler and Python's, lateness, one lock per queue across
//! processes), the operator commands (requeue, cancel, empty, stop-job, suspend/resume,
//! shutdown) and recovery of abandoned jobs by maintenance.
//!
//! Timing bounds are only asserted where runq promises one, with generous slack; the
//! measured numbers are printed with `eprintln!` (run with `--nocapture` to see them).

use runq_tests::*;
use serde_json::json;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------
// Helpers

/// A field of `rq:job:<id>` ('' when missing).
fn field(redis: &RedisServer, id: &str, name: &str) -> String {
    redis
        .hget(&format!("rq:job:{id}"), name)
        .unwrap_or_default()
}

/// Redis server time as float seconds.
fn redis_time(redis: &RedisServer) -> f64 {
    let (secs, micros): (i64, i64) = redis::cmd("TIME").query(&mut redis.conn()).expect("TIME");
    secs as f64 + micros as f64 / 1e6
}

/// RQ datetime text (`2026-11-23T18:39:54.346171Z`) as float epoch seconds.
fn epoch(text: &str) -> f64 {
    let at = runq_common::timefmt::parse_datetime(text)
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("empty datetime"));
    at.timestamp_micros() as f64 / 1e6
}

/// A job's datetime field as float epoch seconds.
fn epoch_field(redis: &RedisServer, id: &str, name: &str) -> f64 {
    let text = field(redis, id, name);
    assert!(!text.is_empty(), "job {id} has no {name}");
    epoch(&text)
}

fn zscore(redis: &RedisServer, key: &str, member: &str) -> Option<f64> {
    redis.conn().zscore(key, member).expect("ZSCORE")
}

/// The `type` of each results-stream entry of a job (1 = finished, 2 = failed).
fn result_types(redis: &RedisServer, id: &str) -> Vec<String> {
    redis
        .results(id)
        .iter()
        .map(|e| String::from_utf8_lossy(e.get("type").expect("entry has type")).into_owned())
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Polls `check` every 20 ms until true, at most `limit`; returns the elapsed time.
fn timed_wait(what: &str, limit: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if check() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn is_hex32(s: &str) -> bool {
    s.len() == 32 && s.chars().all(|c| c.is_ascii_hexdigit())
}

/// A Python `rq worker` running in the background (SIGKILLed on drop if still running).
struct PyWorker {
    child: Child,
    log: std::path::PathBuf,
    _dir: TempDir,
}

impl PyWorker {
    fn spawn(redis: &RedisServer, args: &[&str]) -> PyWorker {
        let dir = TempDir::new("pyworker");
        let log = dir.path().join("rq-worker.log");
        let file = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(Py::Rq3.script("rq"));
        for k in ["REDIS_URL", "RQ_REDIS_URL", "RUNQ_CONFIG"] {
            cmd.env_remove(k);
        }
        let child = cmd
            .arg("worker")
            .args(["--url", &redis.rq_url()])
            .args(args)
            .current_dir(python_dir())
            .env("PYTHONPATH", python_dir())
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null())
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

    /// SIGTERM (warm shutdown), then waits for the exit; returns the exit code.
    fn stop(&mut self) -> Option<i32> {
        // SAFETY: kill(2) on the child this struct spawned and has not reaped.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return s.code();
            }
            assert!(
                Instant::now() < deadline,
                "rq worker did not exit after SIGTERM\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
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

// ---------------------------------------------------------------------------------------
// 1. Retries

#[test]
fn retry_without_intervals_runs_three_times_and_fails_once() {
    let redis = RedisServer::start();
    let id = enqueue(
        &redis,
        &["runq.tasks.fail", "boom", "--queue", "r1", "--retry", "2"],
    );
    assert_eq!(field(&redis, &id, "retries_left"), "2");
    WorkerCmd::new(&redis)
        .args(&["--queues", "r1", "--concurrency", "1", "--name", "rw1"])
        .run_burst();

    assert_eq!(redis.status(&id).as_deref(), Some("failed"));
    assert_eq!(field(&redis, &id, "retries_left"), "0");
    assert_eq!(
        result_types(&redis, &id),
        vec!["2"],
        "one FAILED entry, none for the retried runs"
    );
    assert_eq!(
        RedisServer::exc_text(&redis.results(&id)[0]),
        "RuntimeError: boom"
    );
    // Three runs: every attempt counts as a failure of the worker.
    assert_eq!(
        redis.hget("rq:worker:rw1", "failed_job_count").as_deref(),
        Some("3")
    );
    assert_eq!(redis.zmembers("rq:failed:r1"), vec![id.clone()]);
    assert!(redis.lrange("rq:queue:r1").is_empty());
    assert!(redis.zrange("rq:scheduled:r1").is_empty());
    let v = job_json(&redis, &id);
    assert_eq!(v["result_type"], "FAILED", "{v}");
}

#[test]
fn retry_with_interval_is_scheduled_then_fails_for_good() {
    let redis = RedisServer::start();
    let t0 = redis_time(&redis);
    let id = enqueue(
        &redis,
        &[
            "runq.tasks.fail",
            "later",
            "--queue",
            "r2",
            "--retry",
            "1",
            "--retry-intervals",
            "2",
        ],
    );
    let mut w = WorkerCmd::new(&redis)
        .args(&["--queues", "r2", "--concurrency", "1", "--name", "rw2"])
        .spawn();
    redis.wait_status(&id, "scheduled");
    let t1 = redis_time(&redis);
    let score = zscore(&redis, "rq:scheduled:r2", &id).expect("job is in rq:scheduled:r2");
    eprintln!(
        "retry interval 2 s: scheduled score - observation time = {:.3} s",
        score - t1
    );
    assert!(
        score >= t0.floor() + 2.0 && score <= t1 + 2.0,
        "score {score} is not failure time + 2 (failure between {t0} and {t1})"
    );
    assert_eq!(field(&redis, &id, "retries_left"), "0");
    assert!(
        redis.results(&id).is_empty(),
        "the retried attempt wrote a result"
    );
    assert!(redis.zrange("rq:failed:r2").is_empty());

    redis.wait_status(&id, "failed");
    assert!(
        epoch_field(&redis, &id, "started_at") >= score,
        "the retry started before its scheduled time"
    );
    assert_eq!(result_types(&redis, &id), vec!["2"]);
    assert_eq!(
        RedisServer::exc_text(&redis.results(&id)[0]),
        "RuntimeError: later"
    );
    assert!(redis.zrange("rq:scheduled:r2").is_empty());
    assert_eq!(redis.zmembers("rq:failed:r2"), vec![id]);
    // Worker counters are written by the heartbeat: both attempts count.
    wait_until("failed_job_count 2", || {
        redis.hget("rq:worker:rw2", "failed_job_count").as_deref() == Some("2")
    });
    w.sigterm();
    assert_eq!(w.wait_exit(), Some(0), "{}", w.logs());
}

// ---------------------------------------------------------------------------------------
// 2. Python RQ's Retry under runq-worker

#[test]
fn python_retry_objects_are_honoured() {
    let redis = RedisServer::start();
    python(
        Py::Rq3,
        &redis,
        r#"
        from rq import Queue, Retry
        q = Queue('pr', connection=conn)
        q.enqueue('runq.tasks.fail', 'py', retry=Retry(max=1), job_id='py-retry')
        q.enqueue('runq.tasks.fail', 'pyi', retry=Retry(max=1, interval=1), job_id='py-retry-int')
        "#,
    );
    assert_eq!(field(&redis, "py-retry", "retries_left"), "1");
    assert_eq!(field(&redis, "py-retry-int", "retry_intervals"), "[1]");
    let mut w = WorkerCmd::new(&redis)
        .args(&["--queues", "pr", "--concurrency", "1", "--name", "pw"])
        .spawn();
    redis.wait_status("py-retry", "failed");
    redis.wait_status("py-retry-int", "failed");
    for (job, text) in [
        ("py-retry", "RuntimeError: py"),
        ("py-retry-int", "RuntimeError: pyi"),
    ] {
        assert_eq!(field(&redis, job, "retries_left"), "0", "{job}");
        assert_eq!(result_types(&redis, job), vec!["2"], "{job}");
        assert_eq!(RedisServer::exc_text(&redis.results(job)[0]), text);
    }
    wait_until("failed_job_count 4 (two jobs, two runs each)", || {
        redis.hget("rq:worker:pw", "failed_job_count").as_deref() == Some("4")
    });
    let v = python_json(
        Py::Rq3,
        &redis,
        r#"
        from rq.job import Job
        from rq.registry import FailedJobRegistry
        from rq.results import Result
        out({j: [Job.fetch(j, connection=conn).get_status().value,
                 Job.fetch(j, connection=conn).retries_left,
                 Job.fetch(j, connection=conn).latest_result().type == Result.Type.FAILED,
                 len(Result.all(Job.fetch(j, connection=conn)))]
             for j in ['py-retry', 'py-retry-int']} |
            {'registry': sorted(FailedJobRegistry('pr', connection=conn).get_job_ids())})
        "#,
    );
    assert_eq!(
        v,
        json!({
            "py-retry": ["failed", 0, true, 1],
            "py-retry-int": ["failed", 0, true, 1],
            "registry": ["py-retry", "py-retry-int"],
        })
    );
    w.sigterm();
    assert_eq!(w.wait_exit(), Some(0), "{}", w.logs());
}

// ---------------------------------------------------------------------------------------
// 3. Dependencies

#[test]
fn seven_stage_chain_from_both_clients_runs_in_order() {
    let redis = RedisServer::start();
    let ids: Vec<String> = (0..7).map(|i| format!("chain-{i}")).collect();
    for i in 0..7 {
        let n = i.to_string();
        if i % 2 == 1 {
            python(
                Py::Rq3,
                &redis,
                &format!(
                    "from rq import Queue\nQueue('dq', connection=conn).enqueue('runq.tasks.echo', {i}, depends_on='{}', job_id='{}')",
                    ids[i - 1],
                    ids[i]
                ),
            );
        } else {
            let mut args = vec!["runq.tasks.echo", &n, "--queue", "dq", "--job-id", &ids[i]];
            if i > 0 {
                args.extend(["--depends-on", &ids[i - 1]]);
            }
            assert_eq!(enqueue(&redis, &args), ids[i]);
        }
    }
    assert_eq!(redis.status(&ids[0]).as_deref(), Some("queued"));
    for i in 1..7 {
        assert_eq!(redis.status(&ids[i]).as_deref(), Some("deferred"), "{i}");
        assert_eq!(
            redis.smembers(&format!("rq:job:{}:dependents", ids[i - 1])),
            vec![ids[i].clone()],
            "dependents of stage {}",
            i - 1
        );
        assert_eq!(
            redis.smembers(&format!("rq:job::{}:dependencies", ids[i])),
            vec![ids[i - 1].clone()],
            "dependencies of stage {i}"
        );
    }
    assert_eq!(redis.zmembers("rq:deferred:dq"), sorted(ids[1..].to_vec()));
    assert_eq!(redis.lrange("rq:queue:dq"), vec![ids[0].clone()]);

    WorkerCmd::new(&redis)
        .args(&["--queues", "dq", "--concurrency", "2"])
        .run_burst();
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(redis.status(id).as_deref(), Some("finished"), "stage {i}");
        assert_eq!(
            job_json(&redis, id)["return_value"],
            json!({"args": [i], "kwargs": {}}),
            "stage {i}"
        );
    }
    for i in 1..7 {
        let prev_end = field(&redis, &ids[i - 1], "ended_at");
        let start = field(&redis, &ids[i], "started_at");
        assert!(
            start >= prev_end,
            "stage {i} started at {start}, before stage {} ended at {prev_end}",
            i - 1
        );
    }
    assert!(redis.zrange("rq:deferred:dq").is_empty());
    assert!(redis.lrange("rq:queue:dq").is_empty());
}

#[test]
fn fan_in_and_failed_parents() {
    let redis = RedisServer::start();
    // Fan-in: C (runq) and D (Python) each depend on A (Python) and B (runq).
    python(
        Py::Rq3,
        &redis,
        "from rq import Queue\nQueue('fa', connection=conn).enqueue('runq.tasks.echo', 'a', job_id='fan-a')",
    );
    enqueue(
        &redis,
        &["runq.tasks.echo", "b", "--queue", "fb", "--job-id", "fan-b"],
    );
    enqueue(
        &redis,
        &[
            "runq.tasks.echo",
            "c",
            "--queue",
            "fc",
            "--job-id",
            "fan-c",
            "--depends-on",
            "fan-a",
            "--depends-on",
            "fan-b",
        ],
    );
    // Failed parent P: X (runq) and Y (Python) wait for good; Z (runq) and W (Python)
    // allow failures.
    enqueue(
        &redis,
        &["runq.tasks.fail", "p", "--queue", "fq", "--job-id", "dep-p"],
    );
    enqueue(
        &redis,
        &[
            "runq.tasks.echo",
            "x",
            "--queue",
            "fq",
            "--job-id",
            "dep-x",
            "--depends-on",
            "dep-p",
        ],
    );
    enqueue(
        &redis,
        &[
            "runq.tasks.echo",
            "z",
            "--queue",
            "fq",
            "--job-id",
            "dep-z",
            "--depends-on",
            "dep-p",
            "--allow-dependency-failures",
        ],
    );
    python(
        Py::Rq3,
        &redis,
        r#"
        from rq import Queue
        from rq.job import Dependency
        Queue('fc', connection=conn).enqueue('runq.tasks.echo', 'd', depends_on=['fan-a', 'fan-b'], job_id='fan-d')
        q = Queue('fq', connection=conn)
        q.enqueue('runq.tasks.echo', 'y', depends_on='dep-p', job_id='dep-y')
        q.enqueue('runq.tasks.echo', 'w', depends_on=Dependency(jobs=['dep-p'], allow_failure=True), job_id='dep-w')
        "#,
    );
    let cd = vec!["fan-c".to_string(), "fan-d".to_string()];
    for parent in ["fan-a", "fan-b"] {
        assert_eq!(
            redis.smembers(&format!("rq:job:{parent}:dependents")),
            cd,
            "{parent}"
        );
    }
    for child in &cd {
        assert_eq!(redis.status(child).as_deref(), Some("deferred"));
        assert_eq!(
            redis.smembers(&format!("rq:job::{child}:dependencies")),
            vec!["fan-a".to_string(), "fan-b".to_string()]
        );
    }
    assert_eq!(field(&redis, "dep-z", "allow_dependency_failures"), "1");
    assert_eq!(field(&redis, "dep-w", "allow_dependency_failures"), "1");

    // Only A runs: C and D stay deferred.
    WorkerCmd::new(&redis)
        .args(&["--queues", "fa", "--concurrency", "1"])
        .run_burst();
    assert_eq!(redis.status("fan-a").as_deref(), Some("finished"));
    for child in &cd {
        assert_eq!(redis.status(child).as_deref(), Some("deferred"), "{child}");
    }
    assert_eq!(redis.zmembers("rq:deferred:fc"), cd);
    assert!(redis.lrange("rq:queue:fc").is_empty());
    // B finishes: both are released onto their queue.
    WorkerCmd::new(&redis)
        .args(&["--queues", "fb", "--concurrency", "1"])
        .run_burst();
    for child in &cd {
        assert_eq!(redis.status(child).as_deref(), Some("queued"), "{child}");
    }
    assert_eq!(sorted(redis.lrange("rq:queue:fc")), cd);
    assert!(redis.zrange("rq:deferred:fc").is_empty());
    WorkerCmd::new(&redis)
        .args(&["--queues", "fc", "--concurrency", "2"])
        .run_burst();
    for (child, arg) in [("fan-c", "c"), ("fan-d", "d")] {
        assert_eq!(redis.status(child).as_deref(), Some("finished"));
        assert_eq!(
            job_json(&redis, child)["return_value"],
            json!({"args": [arg], "kwargs": {}})
        );
    }

    // The failed parent.
    WorkerCmd::new(&redis)
        .args(&["--queues", "fq", "--concurrency", "1"])
        .run_burst();
    assert_eq!(redis.status("dep-p").as_deref(), Some("failed"));
    for held in ["dep-x", "dep-y"] {
        assert_eq!(redis.status(held).as_deref(), Some("deferred"), "{held}");
        assert!(redis.results(held).is_empty(), "{held} ran");
    }
    assert_eq!(
        redis.zmembers("rq:deferred:fq"),
        vec!["dep-x".to_string(), "dep-y".to_string()]
    );
    assert_eq!(
        redis.smembers("rq:job:dep-p:dependents"),
        vec!["dep-x".to_string(), "dep-y".to_string()]
    );
    for ran in ["dep-z", "dep-w"] {
        assert_eq!(redis.status(ran).as_deref(), Some("finished"), "{ran}");
        assert!(
            epoch_field(&redis, ran, "started_at") >= epoch_field(&redis, "dep-p", "ended_at"),
            "{ran} started before its parent failed"
        );
    }
}

// ---------------------------------------------------------------------------------------
// 4. Scheduling

#[test]
fn runq_scheduler_runs_runq_and_python_scheduled_jobs_on_time() {
    let redis = RedisServer::start();
    let mut w = WorkerCmd::new(&redis)
        .args(&["--queues", "sq", "--concurrency", "2", "--name", "sched"])
        .spawn();
    redis.wait_worker("sched-1");
    let t0 = redis_time(&redis);
    let mut ids = Vec::new();
    for (i, delay) in ["3s", "1s", "2s", "2s", "3s"].iter().enumerate() {
        let n = i.to_string();
        ids.push(enqueue(
            &redis,
            &["runq.tasks.echo", &n, "--queue", "sq", "--in", delay],
        ));
    }
    python(
        Py::Rq3,
        &redis,
        r#"
        from datetime import timedelta
        from rq import Queue
        Queue('sq', connection=conn).enqueue_in(timedelta(seconds=3), 'runq.tasks.echo', 1, job_id='py-in')
        "#,
    );
    let t1 = redis_time(&redis);
    ids.push("py-in".to_string());
    let mut scores = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let delay = [3.0, 1.0, 2.0, 2.0, 3.0, 3.0][i];
        let score = zscore(&redis, "rq:scheduled:sq", id).unwrap_or_else(|| {
            panic!(
                "{id} not in rq:scheduled:sq (status {:?})",
                redis.status(id)
            )
        });
        // One tick may have passed for a 1 s job, but none can have run yet.
        assert!(
            score >= t0.floor() + delay && score <= t1 + delay,
            "{id}: score {score}, expected now + {delay} (now in {t0}..{t1})"
        );
        scores.push(score);
    }
    assert_eq!(redis.status(&ids[0]).as_deref(), Some("scheduled"));
    assert_eq!(redis.status("py-in").as_deref(), Some("scheduled"));

    for id in &ids {
        redis.wait_status(id, "finished");
    }
    let mut lateness = Vec::new();
    for (id, score) in ids.iter().zip(&scores) {
        let enq = epoch_field(&redis, id, "enqueued_at");
        let started = epoch_field(&redis, id, "started_at");
        assert!(
            started >= *score,
            "{id} started at {started}, before its time {score}"
        );
        lateness.push(enq - score);
    }
    eprintln!(
        "runq scheduler lateness (enqueued_at - scheduled score), s: {}",
        lateness
            .iter()
            .map(|l| format!("{l:.3}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for (id, l) in ids.iter().zip(&lateness) {
        assert!(
            (-0.01..1.5).contains(l),
            "{id}: moved {l:.3} s after its time"
        );
    }
    assert_eq!(
        job_json(&redis, &ids[0])["return_value"],
        json!({"args": [0], "kwargs": {}})
    );
    assert_eq!(
        job_json(&redis, "py-in")["return_value"],
        json!({"args": [1], "kwargs": {}})
    );
    for id in &ids {
        assert_eq!(result_types(&redis, id), vec!["1"], "{id} ran once");
    }
    assert!(redis.zrange("rq:scheduled:sq").is_empty());
    w.sigterm();
    assert_eq!(w.wait_exit(), Some(0), "{}", w.logs());
    assert!(!redis.exists("rq:scheduler-lock:sq"));
}

#[test]
fn runq_scheduled_job_runs_under_python_scheduler() {
    let redis = RedisServer::start();
    let id = enqueue(
        &redis,
        &[
            "runq.tasks.echo",
            "from-runq",
            "--queue",
            "pys",
            "--in",
            "3s",
        ],
    );
    let score = zscore(&redis, "rq:scheduled:pys", &id).expect("scheduled");
    let mut py = PyWorker::spawn(&redis, &["--with-scheduler", "--name", "pyw", "pys"]);
    let deadline = Instant::now() + WAIT;
    while redis.status(&id).as_deref() != Some("finished") {
        assert!(
            Instant::now() < deadline,
            "status {:?}; rq worker log:\n{}",
            redis.status(&id),
            py.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let enq = epoch_field(&redis, &id, "enqueued_at");
    eprintln!(
        "Python scheduler lateness for a runq --in job: {:.3} s",
        enq - score
    );
    assert!(epoch_field(&redis, &id, "started_at") >= score);
    assert_eq!(field(&redis, &id, "worker_name"), "pyw");
    assert_eq!(
        job_json(&redis, &id)["return_value"],
        json!({"args": ["from-runq"], "kwargs": {}})
    );
    assert!(redis.zrange("rq:scheduled:pys").is_empty());
    assert_eq!(py.stop(), Some(0), "{}", py.log());
}

#[test]
fn two_runq_schedulers_share_one_lock_and_enqueue_once() {
    let redis = RedisServer::start();
    let mut a = WorkerCmd::new(&redis)
        .args(&["--queues", "tq", "--concurrency", "1", "--name", "sa"])
        .spawn();
    let mut b = WorkerCmd::new(&redis)
        .args(&["--queues", "tq", "--concurrency", "1", "--name", "sb"])
        .spawn();
    redis.wait_worker("sa");
    redis.wait_worker("sb");
    let lock: String = wait_for("rq:scheduler-lock:tq", || {
        redis.conn().get("rq:scheduler-lock:tq").expect("GET")
    });
    assert!(
        is_hex32(&lock),
        "lock value {lock:?} is not a 32-hex scheduler name"
    );
    let pid = redis.hget(&format!("rq:scheduler:{lock}"), "pid");
    let (holder, other) = if pid == Some(a.pid().to_string()) {
        (&mut a, &mut b)
    } else {
        assert_eq!(
            pid,
            Some(b.pid().to_string()),
            "the lock holder's pid is neither worker's"
        );
        (&mut b, &mut a)
    };
    assert_eq!(
        redis
            .hget(&format!("rq:scheduler:{lock}"), "queues")
            .as_deref(),
        Some("tq")
    );
    let schedulers: Vec<String> = redis.conn().keys("rq:scheduler:*").expect("KEYS");
    assert_eq!(
        schedulers,
        vec![format!("rq:scheduler:{lock}")],
        "only the lock holder registers a scheduler"
    );

    let ids: Vec<String> = (0..4)
        .map(|i| {
            enqueue(
                &redis,
                &[
                    "runq.tasks.echo",
                    &i.to_string(),
                    "--queue",
                    "tq",
                    "--in",
                    "1s",
                ],
            )
        })
        .collect();
    for id in &ids {
        redis.wait_status(id, "finished");
    }
    // Let any duplicate push surface before counting.
    std::thread::sleep(Duration::from_millis(700));
    for id in &ids {
        assert_eq!(
            result_types(&redis, id),
            vec!["1"],
            "{id} was enqueued more than once"
        );
    }
    let count = |w: &str| -> i64 {
        redis
            .hget(&format!("rq:worker:{w}"), "successful_job_count")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    };
    // Worker counters are written by the heartbeat.
    wait_until("successful_job_count 4 over both workers", || {
        count("sa") + count("sb") == 4
    });
    assert!(redis.lrange("rq:queue:tq").is_empty());
    assert_eq!(
        redis
            .conn()
            .get::<_, Option<String>>("rq:scheduler-lock:tq")
            .expect("GET"),
        Some(lock.clone()),
        "the lock changed hands while both ran"
    );

    // The holder leaves: it releases the lock and the other worker takes over.
    holder.sigterm();
    assert_eq!(holder.wait_exit(), Some(0), "{}", holder.logs());
    let t = Instant::now();
    let late = enqueue(
        &redis,
        &["runq.tasks.echo", "late", "--queue", "tq", "--in", "1s"],
    );
    redis.wait_status(&late, "finished");
    eprintln!(
        "scheduler failover: job due in 1 s after the lock holder left finished after {:.2} s",
        t.elapsed().as_secs_f64()
    );
    let new_lock: String = redis.conn().get("rq:scheduler-lock:tq").expect("GET");
    assert!(is_hex32(&new_lock) && new_lock != lock, "{new_lock}");
    assert_eq!(
        redis.hget(&format!("rq:scheduler:{new_lock}"), "pid"),
        Some(other.pid().to_string())
    );
    assert_eq!(result_types(&redis, &late), vec!["1"]);
    other.sigterm();
    assert_eq!(other.wait_exit(), Some(0), "{}", other.logs());
    assert!(!redis.exists("rq:scheduler-lock:tq"));
}

// ---------------------------------------------------------------------------------------
// 5. Operator commands

#[test]
fn requeue_cancel_and_empty() {
    let redis = RedisServer::start();
    let failed: Vec<String> = (0..3)
        .map(|i| {
            enqueue(
                &redis,
                &["runq.tasks.fail", &format!("f{i}"), "--queue", "ops"],
            )
        })
        .collect();
    WorkerCmd::new(&redis)
        .args(&["--queues", "ops", "--concurrency", "1"])
        .run_burst();
    assert_eq!(redis.zmembers("rq:failed:ops"), sorted(failed.clone()));

    // One id.
    let out = runq(&redis, &["requeue", &failed[0]]).ok("runq requeue ID");
    assert!(
        out.stdout
            .contains(&format!("requeued {} on queue ops", failed[0])),
        "{}",
        out.stdout
    );
    assert_eq!(redis.status(&failed[0]).as_deref(), Some("queued"));
    assert_eq!(field(&redis, &failed[0], "started_at"), "");
    assert_eq!(field(&redis, &failed[0], "ended_at"), "");
    assert_eq!(redis.lrange("rq:queue:ops"), vec![failed[0].clone()]);
    assert_eq!(
        redis.zmembers("rq:failed:ops"),
        sorted(failed[1..].to_vec())
    );

    // Wrong ids.
    let out = runq(&redis, &["requeue", "no-such-job"]);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        out.stderr.contains("no-such-job") && out.stderr.contains("no such job"),
        "{}",
        out.stderr
    );
    let out = runq(&redis, &["requeue", &failed[0]]);
    assert!(!out.status.success(), "requeue of a queued job: {out:?}");
    assert!(
        out.stderr.contains(&failed[0]) && out.stderr.contains("not in the failed registry"),
        "{}",
        out.stderr
    );
    assert_eq!(redis.lrange("rq:queue:ops"), vec![failed[0].clone()]);

    // --all.
    runq(&redis, &["requeue", "--all", "--queue", "ops"]).ok("runq requeue --all");
    assert!(redis.zrange("rq:failed:ops").is_empty());
    assert_eq!(sorted(redis.lrange("rq:queue:ops")), sorted(failed.clone()));
    let out = runq(&redis, &["requeue", "--all", "--queue", "ops"]).ok("requeue --all, none");
    assert!(out.stdout.contains("no failed jobs"), "{}", out.stdout);
    WorkerCmd::new(&redis)
        .args(&["--queues", "ops", "--concurrency", "1"])
        .run_burst();
    for id in &failed {
        assert_eq!(redis.status(id).as_deref(), Some("failed"));
        assert_eq!(result_types(&redis, id), vec!["2", "2"], "{id} ran twice");
    }

    // Cancel: a queued job and a deferred one.
    let canceled = enqueue(&redis, &["runq.tasks.noop", "--queue", "cq"]);
    let parent = enqueue(&redis, &["runq.tasks.noop", "--queue", "cq"]);
    let child = enqueue(
        &redis,
        &["runq.tasks.noop", "--queue", "cq", "--depends-on", &parent],
    );
    let before = redis.now_secs() as f64;
    let out = runq(&redis, &["cancel", &canceled]).ok("runq cancel");
    assert!(
        out.stdout
            .contains(&format!("canceled {canceled} (was queued)")),
        "{}",
        out.stdout
    );
    runq(&redis, &["cancel", &child]).ok("runq cancel (deferred)");
    assert_eq!(redis.status(&canceled).as_deref(), Some("canceled"));
    assert_eq!(redis.status(&child).as_deref(), Some("canceled"));
    assert_eq!(redis.lrange("rq:queue:cq"), vec![parent.clone()]);
    assert!(redis.zrange("rq:deferred:cq").is_empty());
    assert_eq!(
        redis.zmembers("rq:canceled:cq"),
        sorted(vec![canceled.clone(), child.clone()])
    );
    let score = zscore(&redis, "rq:canceled:cq", &canceled).expect("canceled score");
    assert!(
        (before..before + 5.0).contains(&score),
        "canceled score {score}"
    );
    let out = runq(&redis, &["cancel", &canceled]);
    assert!(!out.status.success(), "{out:?}");
    assert!(out.stderr.contains("already canceled"), "{}", out.stderr);
    let out = runq(&redis, &["cancel", "ghost"]);
    assert!(!out.status.success(), "{out:?}");
    assert!(out.stderr.contains("no such job: ghost"), "{}", out.stderr);
    WorkerCmd::new(&redis)
        .args(&["--queues", "cq", "--concurrency", "1"])
        .run_burst();
    assert_eq!(redis.status(&parent).as_deref(), Some("finished"));
    for id in [&canceled, &child] {
        assert_eq!(redis.status(id).as_deref(), Some("canceled"), "{id}");
        assert!(redis.results(id).is_empty(), "canceled job {id} ran");
    }

    // Empty.
    let doomed: Vec<String> = (0..3)
        .map(|_| enqueue(&redis, &["runq.tasks.noop", "--queue", "eq"]))
        .collect();
    let out = runq(&redis, &["empty", "eq"]).ok("runq empty");
    assert!(out.stdout.contains("3 jobs removed"), "{}", out.stdout);
    assert!(!redis.exists("rq:queue:eq"));
    for id in &doomed {
        assert!(!redis.exists(&format!("rq:job:{id}")), "{id} survived");
    }
    let out = runq(&redis, &["empty", "nosuchq"]);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        out.stderr.contains("no such queue: nosuchq"),
        "{}",
        out.stderr
    );
}

#[test]
fn stop_job_from_runq_and_python() {
    let redis = RedisServer::start();
    let by_runq = enqueue(&redis, &["runq.tasks.sleep", "30", "--queue", "sj"]);
    let by_python = enqueue(&redis, &["runq.tasks.sleep", "30", "--queue", "sj"]);
    let mut w = WorkerCmd::new(&redis)
        .args(&["--queues", "sj", "--concurrency", "2", "--name", "stop"])
        .spawn();
    redis.wait_status(&by_runq, "started");
    redis.wait_status(&by_python, "started");
    redis.wait_subscribed("stop-1");

    let out = runq(&redis, &["stop-job", "ghost"]);
    assert!(!out.status.success(), "{out:?}");
    assert!(out.stderr.contains("no such job: ghost"), "{}", out.stderr);

    let t = Instant::now();
    runq(&redis, &["stop-job", &by_runq]).ok("runq stop-job");
    redis.wait_status(&by_runq, "stopped");
    eprintln!(
        "runq stop-job: stopped after {:.3} s",
        t.elapsed().as_secs_f64()
    );
    python(
        Py::Rq3,
        &redis,
        &format!(
            "from rq.command import send_stop_job_command\nsend_stop_job_command(conn, '{by_python}')"
        ),
    );
    redis.wait_status(&by_python, "stopped");
    for id in [&by_runq, &by_python] {
        let v = job_json(&redis, id);
        assert_eq!(v["status"], "stopped", "{v}");
        assert_eq!(
            v["exc_string"], "Job stopped by user, work-horse terminated.",
            "{v}"
        );
        assert_eq!(v["result_type"], "FAILED", "{v}");
        assert_eq!(result_types(&redis, id), vec!["2"]);
    }
    assert_eq!(
        redis.zmembers("rq:failed:sj"),
        sorted(vec![by_runq.clone(), by_python.clone()])
    );
    assert!(redis.zrange("rq:wip:sj").is_empty());
    // A stopped job is no longer running: stop-job refuses it.
    let out = runq(&redis, &["stop-job", &by_runq]);
    assert!(!out.status.success(), "{out:?}");
    assert!(out.stderr.contains("is not running"), "{}", out.stderr);
    // The worker carries on.
    let next = enqueue(&redis, &["runq.tasks.noop", "--queue", "sj"]);
    redis.wait_status(&next, "finished");
    assert!(w.running());
    w.sigterm();
    assert_eq!(w.wait_exit(), Some(0), "{}", w.logs());
}

#[test]
fn suspend_holds_jobs_until_resume() {
    let redis = RedisServer::start();
    let mut w = WorkerCmd::new(&redis)
        .args(&["--queues", "sus", "--concurrency", "1", "--name", "susw"])
        .spawn();
    redis.wait_worker("susw");
    runq(&redis, &["suspend"]).ok("runq suspend");
    assert!(redis.exists("rq:suspended"));
    assert_eq!(redis.ttl("rq:suspended"), -1);
    let id = enqueue(&redis, &["runq.tasks.noop", "--queue", "sus"]);
    let held_from = Instant::now();
    while held_from.elapsed() < Duration::from_secs(3) {
        assert_eq!(
            redis.status(&id).as_deref(),
            Some("queued"),
            "a suspended worker took the job"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(redis.lrange("rq:queue:sus"), vec![id.clone()]);
    assert_eq!(
        redis.hget("rq:worker:susw", "state").as_deref(),
        Some("suspended")
    );
    let out = runq(&redis, &["resume"]).ok("runq resume");
    assert!(out.stdout.contains("resumed"), "{}", out.stdout);
    let t = Instant::now();
    redis.wait_status(&id, "finished");
    let resumed_in = t.elapsed();
    eprintln!(
        "suspend: job finished {:.3} s after runq resume",
        resumed_in.as_secs_f64()
    );
    assert!(
        resumed_in < Duration::from_secs(5),
        "resume took {resumed_in:?} (promised ~1 s)"
    );
    assert!(!redis.exists("rq:suspended"));
    let out = runq(&redis, &["resume"]).ok("runq resume again");
    assert!(out.stdout.contains("not suspended"), "{}", out.stdout);

    runq(&redis, &["suspend", "--duration", "100"]).ok("runq suspend --duration");
    let ttl = redis.ttl("rq:suspended");
    assert!((95..=100).contains(&ttl), "rq:suspended TTL {ttl}");
    runq(&redis, &["resume"]).ok("runq resume");
    w.sigterm();
    assert_eq!(w.wait_exit(), Some(0), "{}", w.logs());
}

#[test]
fn shutdown_one_worker_then_all() {
    let redis = RedisServer::start();
    let mut one = WorkerCmd::new(&redis)
        .args(&["--queues", "sd", "--concurrency", "1", "--name", "sd1"])
        .spawn();
    let mut two = WorkerCmd::new(&redis)
        .args(&["--queues", "sd", "--concurrency", "2", "--name", "sd2"])
        .spawn();
    for name in ["sd1", "sd2-1", "sd2-2"] {
        redis.wait_subscribed(name);
    }
    let out = runq(&redis, &["shutdown", "nobody"]);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        out.stderr.contains("no live worker named nobody"),
        "{}",
        out.stderr
    );
    runq(&redis, &["shutdown", "sd1"]).ok("runq shutdown sd1");
    assert_eq!(one.wait_exit(), Some(0), "{}", one.logs());
    assert!(two.running(), "shutdown sd1 stopped sd2 too");
    let out = runq(&redis, &["shutdown", "--all"]).ok("runq shutdown --all");
    assert!(
        out.stdout.contains("sent shutdown to sd2-1"),
        "{}",
        out.stdout
    );
    assert_eq!(two.wait_exit(), Some(0), "{}", two.logs());
    assert!(redis.smembers("rq:workers").is_empty());
    let out = runq(&redis, &["shutdown", "--all"]).ok("runq shutdown --all, none");
    assert!(out.stdout.contains("no live workers"), "{}", out.stdout);
}

// ---------------------------------------------------------------------------------------
// 6. Abandoned jobs

const FAST_HEARTBEAT: &str = "[worker]\nheartbeat_secs = 1\n";

#[test]
fn abandoned_job_fails_or_retries_after_kill9() {
    let redis = RedisServer::start();
    let doomed = enqueue(&redis, &["runq.tasks.sleep", "60", "--queue", "ab"]);
    let retried = enqueue(
        &redis,
        &["runq.tasks.sleep", "3", "--queue", "ab", "--retry", "1"],
    );
    let mut a = WorkerCmd::new(&redis)
        .args(&["--queues", "ab", "--concurrency", "2", "--name", "ab-a"])
        .config(FAST_HEARTBEAT)
        .spawn();
    redis.wait_status(&doomed, "started");
    redis.wait_status(&retried, "started");
    let wip_deadline = redis
        .zrange("rq:wip:ab")
        .iter()
        .map(|(_, s)| *s)
        .fold(0.0, f64::max);
    let killed_at = redis_time(&redis);
    a.kill9();
    for id in [&doomed, &retried] {
        assert_eq!(
            redis.status(id).as_deref(),
            Some("started"),
            "{id} ended before the kill"
        );
    }
    let mut b = WorkerCmd::new(&redis)
        .args(&["--queues", "ab", "--concurrency", "1", "--name", "ab-b"])
        .config("[worker]\nheartbeat_secs = 1\nmaintenance_secs = 1\nabandoned_jobs = \"fail\"\n")
        .spawn();
    // Promised: 2 x (3 x heartbeat_secs) + maintenance_secs = 7 s; slack for a loaded host.
    let detected = timed_wait("the abandoned job to fail", Duration::from_secs(12), || {
        redis.status(&doomed).as_deref() == Some("failed")
    });
    eprintln!(
        "abandoned job (fail): detected {:.2} s after kill -9 (wip deadline was {:.2} s after the kill)",
        detected.as_secs_f64(),
        wip_deadline - killed_at
    );
    let v = job_json(&redis, &doomed);
    let exc = v["exc_string"].as_str().unwrap_or_default();
    assert!(
        exc.starts_with("Moved to FailedJobRegistry, due to AbandonedJobError"),
        "{v}"
    );
    assert_eq!(v["result_type"], "FAILED", "{v}");
    assert_eq!(result_types(&redis, &doomed), vec!["2"]);
    assert_eq!(redis.zmembers("rq:failed:ab"), vec![doomed.clone()]);

    // The job with a retry left is retried instead, and B runs it.
    redis.wait_status(&retried, "finished");
    assert_eq!(field(&redis, &retried, "retries_left"), "0");
    assert_eq!(field(&redis, &retried, "worker_name"), "ab-b");
    assert_eq!(result_types(&redis, &retried), vec!["1"]);
    assert!(redis.zrange("rq:wip:ab").is_empty());
    assert!(!redis.zmembers("rq:failed:ab").contains(&retried));
    b.sigterm();
    assert_eq!(b.wait_exit(), Some(0), "{}", b.logs());
}

#[test]
fn abandoned_job_is_requeued_with_requeue_policy() {
    let redis = RedisServer::start();
    let id = enqueue(&redis, &["runq.tasks.sleep", "3", "--queue", "ar"]);
    let mut a = WorkerCmd::new(&redis)
        .args(&["--queues", "ar", "--concurrency", "1", "--name", "ar-a"])
        .config(FAST_HEARTBEAT)
        .spawn();
    redis.wait_status(&id, "started");
    a.kill9();
    assert_eq!(
        redis.status(&id).as_deref(),
        Some("started"),
        "ended before the kill"
    );
    assert_eq!(field(&redis, &id, "worker_name"), "ar-a");
    let mut b = WorkerCmd::new(&redis)
        .args(&["--queues", "ar", "--concurrency", "1", "--name", "ar-b"])
        .config(
            "[worker]\nheartbeat_secs = 1\nmaintenance_secs = 1\nabandoned_jobs = \"requeue\"\n",
        )
        .spawn();
    let detected = timed_wait(
        "B to take the abandoned job",
        Duration::from_secs(12),
        || field(&redis, &id, "worker_name") == "ar-b",
    );
    eprintln!(
        "abandoned job (requeue): picked up by B {:.2} s after kill -9",
        detected.as_secs_f64()
    );
    redis.wait_status(&id, "finished");
    assert_eq!(result_types(&redis, &id), vec!["1"], "one successful run");
    assert_eq!(job_json(&redis, &id)["return_value"], json!(3));
    assert!(redis.zrange("rq:failed:ar").is_empty());
    assert!(redis.zrange("rq:wip:ar").is_empty());
    b.sigterm();
    assert_eq!(b.wait_exit(), Some(0), "{}", b.logs());
}
