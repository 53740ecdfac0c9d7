//! Scheduling across runq and Python RQ: `runq enqueue --in` and Python's `enqueue_in`
//! wait in `rq:scheduled:<queue>` (as Python's ScheduledJobRegistry lists them) and are
//! run on time by runq's scheduler, including jobs that fell due before any worker ran;
//! a runq job is run by Python's scheduler (`rq worker --with-scheduler`); two runq
//! schedulers on one queue share one `rq:scheduler-lock`, enqueue each job once, and the
//! lock passes on when its holder leaves.
//!
//! Lateness is only asserted where runq promises a bound, with generous slack; the
//! measured numbers are printed with `eprintln!` (run with `--nocapture` to see them).

use runq_tests::*;
use serde_json::json;
use std::time::{Duration, Instant};

fn is_hex32(s: &str) -> bool {
    s.len() == 32 && s.chars().all(|c| c.is_ascii_hexdigit())
}

#[test]
fn runq_scheduler_runs_runq_and_python_scheduled_jobs_on_time() {
    let redis = RedisServer::start();
    // Due in 1 s with no worker running: they wait in rq:scheduled, as Python sees it,
    // and run once a scheduler starts.
    let early = enqueue(
        &redis,
        &["runq.tasks.echo", "ours", "--queue", "sq", "--in", "1s"],
    );
    assert_eq!(redis.status(&early).as_deref(), Some("scheduled"));
    python(
        Py::Rq3,
        &redis,
        r#"
        from datetime import timedelta
        from rq import Queue
        Queue('sq', connection=conn).enqueue_in(timedelta(seconds=1), 'runq.tasks.echo', 'theirs', job_id='py-sched')
        "#,
    );
    let v = python_json(
        Py::Rq3,
        &redis,
        "from rq.registry import ScheduledJobRegistry\nout(sorted(ScheduledJobRegistry('sq', connection=conn).get_job_ids()))",
    );
    assert_eq!(
        v,
        json!(sorted(vec![early.clone(), "py-sched".to_string()]))
    );
    assert!(redis.lrange("rq:queue:sq").is_empty());

    // With the scheduler running: each job is moved no earlier than its time, and soon
    // after it.
    let mut w = WorkerCmd::new(&redis)
        .args(&["--queues", "sq", "--concurrency", "2", "--name", "sched"])
        .spawn();
    redis.wait_worker("sched-1");
    let t0 = redis.now_f64();
    let mut ids = Vec::new();
    let mut scores = Vec::new();
    // Each score is read right after its enqueue, before a 1 s job can fall due.
    let score_of = |id: &str| {
        redis.zscore("rq:scheduled:sq", id).unwrap_or_else(|| {
            panic!(
                "{id} not in rq:scheduled:sq (status {:?})",
                redis.status(id)
            )
        })
    };
    for (i, delay) in ["3s", "1s", "2s", "2s", "3s"].iter().enumerate() {
        let n = i.to_string();
        let id = enqueue(
            &redis,
            &["runq.tasks.echo", &n, "--queue", "sq", "--in", delay],
        );
        scores.push(score_of(&id));
        ids.push(id);
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
    scores.push(score_of("py-in"));
    ids.push("py-in".to_string());
    let t1 = redis.now_f64();
    for (i, (id, score)) in ids.iter().zip(&scores).enumerate() {
        let delay = [3.0, 1.0, 2.0, 2.0, 3.0, 3.0][i];
        assert!(
            *score >= t0.floor() + delay && *score <= t1 + delay,
            "{id}: score {score}, expected now + {delay} (now in {t0}..{t1})"
        );
    }
    assert_eq!(redis.status(&ids[0]).as_deref(), Some("scheduled"));
    assert_eq!(redis.status("py-in").as_deref(), Some("scheduled"));

    for id in &ids {
        redis.wait_status(id, "finished");
    }
    redis.wait_status(&early, "finished");
    redis.wait_status("py-sched", "finished");
    let mut lateness = Vec::new();
    for (id, score) in ids.iter().zip(&scores) {
        let enq = redis.job_time(id, "enqueued_at");
        let started = redis.job_time(id, "started_at");
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
    assert_eq!(
        job_json(&redis, &early)["return_value"],
        json!({"args": ["ours"], "kwargs": {}})
    );
    assert_eq!(
        job_json(&redis, "py-sched")["return_value"],
        json!({"args": ["theirs"], "kwargs": {}})
    );
    let all: Vec<&str> = ids
        .iter()
        .map(String::as_str)
        .chain([early.as_str(), "py-sched"])
        .collect();
    for id in all {
        assert_eq!(redis.result_types(id), vec!["1"], "{id} ran once");
    }
    assert!(redis.zrange("rq:scheduled:sq").is_empty());
    w.sigterm();
    assert_eq!(w.wait_exit(), Some(0), "{}", w.logs());
    assert!(
        !redis.exists("rq:scheduler-lock:sq"),
        "the scheduler lock is released on exit"
    );
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
    let score = redis.zscore("rq:scheduled:pys", &id).expect("scheduled");
    let mut py = PyWorker::spawn(
        Py::Rq3,
        &redis,
        &["--with-scheduler", "--name", "pyw", "pys"],
    );
    wait_until_with(
        &format!("{id} to finish under rq worker"),
        || redis.status(&id).as_deref() == Some("finished"),
        || {
            format!(
                "status {:?}; rq worker log:\n{}",
                redis.status(&id),
                py.log()
            )
        },
    );
    let enq = redis.job_time(&id, "enqueued_at");
    eprintln!(
        "Python scheduler lateness for a runq --in job: {:.3} s",
        enq - score
    );
    assert!(redis.job_time(&id, "started_at") >= score);
    assert_eq!(redis.job_field(&id, "worker_name"), "pyw");
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
            redis.result_types(id),
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
    assert_eq!(redis.result_types(&late), vec!["1"]);
    other.sigterm();
    assert_eq!(other.wait_exit(), Some(0), "{}", other.logs());
    assert!(!redis.exists("rq:scheduler-lock:tq"));
}
