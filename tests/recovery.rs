//! Recovery: jobs abandoned by a SIGKILLed runq-worker are found by another worker's
//! maintenance once the dead worker's leases run out, and failed, retried or requeued
//! (`abandoned_jobs` policy) within the promised time; the dead worker's records are
//! dropped; a worker rides out Redis pausing (SIGSTOP) under a running job and Redis
//! restarting empty.
//!
//! The detection time is asserted against runq's promise with slack and printed with
//! `eprintln!` (run with `--nocapture` to see it).

use runq_tests::*;
use serde_json::json;
use std::time::Duration;

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
    let killed_at = redis.now_f64();
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
    let detected = wait_within("the abandoned job to fail", Duration::from_secs(12), || {
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
    assert_eq!(redis.result_types(&doomed), vec!["2"]);
    assert_eq!(redis.zmembers("rq:failed:ab"), vec![doomed.clone()]);

    // The job with a retry left is retried instead, and B runs it.
    redis.wait_status(&retried, "finished");
    assert_eq!(redis.job_field(&retried, "retries_left"), "0");
    assert_eq!(redis.job_field(&retried, "worker_name"), "ab-b");
    assert_eq!(redis.result_types(&retried), vec!["1"]);
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
    assert_eq!(redis.job_field(&id, "worker_name"), "ar-a");
    let mut b = WorkerCmd::new(&redis)
        .args(&["--queues", "ar", "--concurrency", "1", "--name", "ar-b"])
        .config(
            "[worker]\nheartbeat_secs = 1\nmaintenance_secs = 1\nabandoned_jobs = \"requeue\"\n",
        )
        .spawn();
    let detected = wait_within(
        "B to take the abandoned job",
        Duration::from_secs(12),
        || redis.job_field(&id, "worker_name") == "ar-b",
    );
    eprintln!(
        "abandoned job (requeue): picked up by B {:.2} s after kill -9",
        detected.as_secs_f64()
    );
    redis.wait_status(&id, "finished");
    assert_eq!(redis.result_types(&id), vec!["1"], "one successful run");
    assert_eq!(job_json(&redis, &id)["return_value"], json!(3));
    assert!(redis.zrange("rq:failed:ar").is_empty());
    assert!(redis.zrange("rq:wip:ar").is_empty());
    // The dead process's worker records are dropped too.
    wait_until("ar-a to leave rq:workers", || {
        !redis
            .smembers("rq:workers")
            .contains(&"rq:worker:ar-a".to_string())
    });
    b.sigterm();
    assert_eq!(b.wait_exit(), Some(0), "{}", b.logs());
}

#[test]
fn worker_survives_redis_pause_and_restart() {
    let mut redis = RedisServer::start();
    let config = "[worker]\nheartbeat_secs = 1\n";
    let mut w = WorkerCmd::new(&redis)
        .args(&["--queues", "rs", "--concurrency", "1", "--name", "rsw"])
        .config(config)
        .spawn();
    redis.wait_worker("rsw");

    // Paused while a job runs: the outcome is recorded once Redis answers again.
    let id = enqueue(&redis, &["runq.tasks.sleep", "1", "--queue", "rs"]);
    redis.wait_status(&id, "started");
    redis.pause();
    std::thread::sleep(Duration::from_secs(2));
    redis.resume();
    redis.wait_status(&id, "finished");

    // Restarted empty: the worker registers again and takes new jobs.
    redis.restart();
    redis.wait_worker("rsw");
    let id = enqueue(&redis, &["runq.tasks.echo", "back", "--queue", "rs"]);
    redis.wait_status(&id, "finished");
    assert_eq!(
        job_json(&redis, &id)["return_value"],
        json!({"args": ["back"], "kwargs": {}})
    );
    assert!(
        w.running(),
        "the worker exited while Redis was away:\n{}",
        w.logs()
    );
    w.sigterm();
    assert_eq!(w.wait_exit(), Some(0), "{}", w.logs());
}
