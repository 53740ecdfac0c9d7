//! Queues and job options as the worker honours them: queue priority (`--queues
//! high,low`), a per-queue concurrency limit (`[[queues]] concurrency`), a worker name
//! already taken by a live worker, result and failure TTLs (`--result-ttl 0` / `-1`,
//! `--failure-ttl`) as Python RQ reads them, and a job with no timeout (`--timeout -1`).

use runq_tests::*;
use serde_json::json;

#[test]
fn queue_priority_and_per_queue_limit() {
    let redis = RedisServer::start();
    let low: Vec<String> = (0..3)
        .map(|i| {
            enqueue(
                &redis,
                &["runq.tasks.echo", &i.to_string(), "--queue", "low"],
            )
        })
        .collect();
    let high: Vec<String> = (0..3)
        .map(|i| {
            enqueue(
                &redis,
                &["runq.tasks.echo", &i.to_string(), "--queue", "high"],
            )
        })
        .collect();
    WorkerCmd::new(&redis)
        .args(&["--queues", "high,low", "--concurrency", "1"])
        .run_burst();
    let last_high = high
        .iter()
        .map(|id| redis.job_field(id, "started_at"))
        .max()
        .unwrap();
    let first_low = low
        .iter()
        .map(|id| redis.job_field(id, "started_at"))
        .min()
        .unwrap();
    assert!(
        last_high < first_low,
        "a low job started ({first_low}) before the last high one ({last_high})"
    );

    // [[queues]] concurrency = 1: three slots, but never two `lim` jobs at once.
    let lim: Vec<String> = (0..3)
        .map(|_| enqueue(&redis, &["runq.tasks.sleep", "0.5", "--queue", "lim"]))
        .collect();
    WorkerCmd::new(&redis)
        .args(&["--concurrency", "3"])
        .config(
            r#"
            [[queues]]
            name = "lim"
            concurrency = 1
            "#,
        )
        .run_burst();
    let mut spans: Vec<(String, String)> = lim
        .iter()
        .map(|id| {
            assert_eq!(redis.status(id).as_deref(), Some("finished"));
            (
                redis.job_field(id, "started_at"),
                redis.job_field(id, "ended_at"),
            )
        })
        .collect();
    spans.sort();
    for pair in spans.windows(2) {
        assert!(
            pair[0].1 <= pair[1].0,
            "two `lim` jobs overlapped: {pair:?}"
        );
    }
}

#[test]
fn second_worker_with_a_taken_name_refuses_to_start() {
    let redis = RedisServer::start();
    let mut first = WorkerCmd::new(&redis)
        .args(&["--concurrency", "1", "--name", "dup"])
        .spawn();
    redis.wait_worker("dup");
    let out = worker_output(
        &redis.url(),
        &["--burst", "--concurrency", "1", "--name", "dup"],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        out.stderr
            .contains("there exists an active worker named dup"),
        "{}",
        out.stderr
    );
    first.sigterm();
    assert_eq!(first.wait_exit(), Some(0), "{}", first.logs());
    // After a clean exit the name is free again.
    WorkerCmd::new(&redis)
        .args(&["--concurrency", "1", "--name", "dup"])
        .run_burst();
}

#[test]
fn result_and_failure_ttls() {
    let redis = RedisServer::start();
    let gone = enqueue(
        &redis,
        &["runq.tasks.echo", "1", "--queue", "tt", "--result-ttl", "0"],
    );
    let forever = enqueue(
        &redis,
        &[
            "runq.tasks.echo",
            "2",
            "--queue",
            "tt",
            "--result-ttl",
            "-1",
        ],
    );
    let short = enqueue(
        &redis,
        &[
            "runq.tasks.fail",
            "x",
            "--queue",
            "tt",
            "--failure-ttl",
            "100",
        ],
    );
    WorkerCmd::new(&redis)
        .args(&["--queues", "tt", "--concurrency", "1"])
        .run_burst();

    assert!(
        !redis.exists(&format!("rq:job:{gone}")),
        "result_ttl 0 deletes the job"
    );
    assert!(
        !redis.exists(&format!("rq:results:{gone}")),
        "result_ttl 0 writes no result"
    );
    assert_eq!(redis.status(&forever).as_deref(), Some("finished"));
    assert_eq!(redis.ttl(&format!("rq:job:{forever}")), -1);
    assert_eq!(redis.ttl(&format!("rq:results:{forever}")), -1);
    assert_eq!(
        redis.zrange("rq:finished:tt"),
        vec![(forever.clone(), f64::INFINITY)]
    );

    let now = redis.now_secs() as f64;
    let failed = redis.zrange("rq:failed:tt");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].0, short);
    assert!(
        (90.0..=101.0).contains(&(failed[0].1 - now)),
        "failed score {}",
        failed[0].1
    );
    for key in [format!("rq:job:{short}"), format!("rq:results:{short}")] {
        let ttl = redis.ttl(&key);
        assert!(
            (90..=100).contains(&ttl),
            "{key} TTL {ttl}, expected the failure_ttl 100"
        );
    }
    let v = python_json(
        Py::Rq3,
        &redis,
        &format!(
            "from rq.job import Job\nj = Job.fetch('{forever}', connection=conn)\nout([j.get_status().value, j.return_value()])"
        ),
    );
    assert_eq!(v, json!(["finished", {"args": [2], "kwargs": {}}]));
}

#[test]
fn no_timeout_job_runs() {
    let redis = RedisServer::start();
    let id = enqueue(&redis, &["runq.tasks.sleep", "1", "--timeout", "-1"]);
    assert_eq!(redis.job_field(&id, "timeout"), "-1");
    WorkerCmd::new(&redis)
        .args(&["--concurrency", "1"])
        .run_burst();
    assert_eq!(job_json(&redis, &id)["return_value"], json!(1));
}
