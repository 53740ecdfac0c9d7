//! Retries from both clients: runq's `--retry` / `--retry-intervals` and Python RQ's
//! `Retry(max=, interval=)`, run by runq-worker. A retried attempt writes no result and
//! counts as a failure of the worker; a retry with an interval goes through
//! `rq:scheduled` and runs no earlier than its time; the last attempt writes one FAILED
//! entry, as Python RQ sees it.
//!
//! The measured numbers are printed with `eprintln!` (run with `--nocapture` to see them).

use runq_tests::*;
use serde_json::json;

#[test]
fn retry_without_intervals_runs_again_and_fails_once() {
    let redis = RedisServer::start();
    let id = enqueue(
        &redis,
        &["runq.tasks.fail", "boom", "--queue", "r1", "--retry", "2"],
    );
    python(
        Py::Rq3,
        &redis,
        r#"
        from rq import Queue, Retry
        Queue('r1p', connection=conn).enqueue('runq.tasks.fail', 'py', retry=Retry(max=1), job_id='py-retry')
        "#,
    );
    assert_eq!(redis.job_field(&id, "retries_left"), "2");
    assert_eq!(redis.job_field("py-retry", "retries_left"), "1");
    WorkerCmd::new(&redis)
        .args(&["--queues", "r1,r1p", "--concurrency", "1", "--name", "rw1"])
        .run_burst();

    for (job, text) in [
        (id.as_str(), "RuntimeError: boom"),
        ("py-retry", "RuntimeError: py"),
    ] {
        assert_eq!(redis.status(job).as_deref(), Some("failed"), "{job}");
        assert_eq!(redis.job_field(job, "retries_left"), "0", "{job}");
        assert_eq!(
            redis.result_types(job),
            vec!["2"],
            "{job}: one FAILED entry, none for the retried runs"
        );
        assert_eq!(RedisServer::exc_text(&redis.results(job)[0]), text);
        let v = job_json(&redis, job);
        assert_eq!(v["result_type"], "FAILED", "{v}");
    }
    // Five runs (three of the runq job, two of the Python one): every attempt counts as a
    // failure of the worker.
    assert_eq!(
        redis.hget("rq:worker:rw1", "failed_job_count").as_deref(),
        Some("5")
    );
    assert_eq!(redis.zmembers("rq:failed:r1"), vec![id.clone()]);
    assert_eq!(
        redis.zmembers("rq:failed:r1p"),
        vec!["py-retry".to_string()]
    );
    for q in ["r1", "r1p"] {
        assert!(redis.lrange(&format!("rq:queue:{q}")).is_empty(), "{q}");
        assert!(redis.zrange(&format!("rq:scheduled:{q}")).is_empty(), "{q}");
    }
    let v = python_json(
        Py::Rq3,
        &redis,
        r#"
        from rq.job import Job
        from rq.registry import FailedJobRegistry
        from rq.results import Result
        j = Job.fetch('py-retry', connection=conn)
        out({'py-retry': [j.get_status().value, j.retries_left,
                          j.latest_result().type == Result.Type.FAILED, len(Result.all(j))],
             'registry': FailedJobRegistry('r1p', connection=conn).get_job_ids()})
        "#,
    );
    assert_eq!(
        v,
        json!({"py-retry": ["failed", 0, true, 1], "registry": ["py-retry"]})
    );
}

#[test]
fn retry_with_interval_is_scheduled_then_fails_for_good() {
    let redis = RedisServer::start();
    python(
        Py::Rq3,
        &redis,
        r#"
        from rq import Queue, Retry
        Queue('r2p', connection=conn).enqueue('runq.tasks.fail', 'pyi', retry=Retry(max=1, interval=1), job_id='py-retry-int')
        "#,
    );
    assert_eq!(redis.job_field("py-retry-int", "retries_left"), "1");
    assert_eq!(redis.job_field("py-retry-int", "retry_intervals"), "[1]");
    let t0 = redis.now_f64();
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
        .args(&["--queues", "r2,r2p", "--concurrency", "1", "--name", "rw2"])
        .spawn();
    redis.wait_status(&id, "scheduled");
    let t1 = redis.now_f64();
    let score = redis
        .zscore("rq:scheduled:r2", &id)
        .expect("job is in rq:scheduled:r2");
    eprintln!(
        "retry interval 2 s: scheduled score - observation time = {:.3} s",
        score - t1
    );
    assert!(
        score >= t0.floor() + 2.0 && score <= t1 + 2.0,
        "score {score} is not failure time + 2 (failure between {t0} and {t1})"
    );
    assert_eq!(redis.job_field(&id, "retries_left"), "0");
    assert!(
        redis.results(&id).is_empty(),
        "the retried attempt wrote a result"
    );
    assert!(redis.zrange("rq:failed:r2").is_empty());

    redis.wait_status(&id, "failed");
    assert!(
        redis.job_time(&id, "started_at") >= score,
        "the retry started before its scheduled time"
    );
    assert_eq!(redis.result_types(&id), vec!["2"]);
    assert_eq!(
        RedisServer::exc_text(&redis.results(&id)[0]),
        "RuntimeError: later"
    );
    assert!(redis.zrange("rq:scheduled:r2").is_empty());
    assert_eq!(redis.zmembers("rq:failed:r2"), vec![id]);

    // Python's Retry with an interval, on the same worker.
    redis.wait_status("py-retry-int", "failed");
    assert_eq!(redis.job_field("py-retry-int", "retries_left"), "0");
    assert_eq!(redis.result_types("py-retry-int"), vec!["2"]);
    assert_eq!(
        RedisServer::exc_text(&redis.results("py-retry-int")[0]),
        "RuntimeError: pyi"
    );
    assert!(redis.zrange("rq:scheduled:r2p").is_empty());
    // Worker counters are written by the heartbeat: two jobs, two runs each.
    wait_until("failed_job_count 4 (two jobs, two runs each)", || {
        redis.hget("rq:worker:rw2", "failed_job_count").as_deref() == Some("4")
    });
    let v = python_json(
        Py::Rq3,
        &redis,
        r#"
        from rq.job import Job
        from rq.registry import FailedJobRegistry
        from rq.results import Result
        j = Job.fetch('py-retry-int', connection=conn)
        out({'py-retry-int': [j.get_status().value, j.retries_left,
                              j.latest_result().type == Result.Type.FAILED, len(Result.all(j))],
             'registry': FailedJobRegistry('r2p', connection=conn).get_job_ids()})
        "#,
    );
    assert_eq!(
        v,
        json!({"py-retry-int": ["failed", 0, true, 1], "registry": ["py-retry-int"]})
    );
    w.sigterm();
    assert_eq!(w.wait_exit(), Some(0), "{}", w.logs());
}
