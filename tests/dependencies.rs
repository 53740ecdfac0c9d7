//! Dependencies across runq and Python RQ, with the exact keys RQ uses
//! (`rq:job:<id>:dependents`, `rq:job::<id>:dependencies`, `rq:deferred:<queue>`): a
//! seven-stage chain alternating between the two clients runs in order; fan-in waits for
//! every parent; a failed parent holds its dependents (including one whose other parent
//! finished) unless they allow failures; runq's `--depends-on` on a finished parent
//! enqueues at once, on a deferred one defers, as Python's registries see it.

use runq_tests::*;
use serde_json::json;

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
        let prev_end = redis.job_field(&ids[i - 1], "ended_at");
        let start = redis.job_field(&ids[i], "started_at");
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
fn fan_in_failed_parents_and_depends_on() {
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
    // allow failures; F (Python) also depends on A, which finishes first.
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
        q.enqueue('runq.tasks.echo', 'f', depends_on=['fan-a', 'dep-p'], job_id='dep-f')
        "#,
    );
    let cd = vec!["fan-c".to_string(), "fan-d".to_string()];
    for (parent, dependents) in [
        ("fan-a", vec!["dep-f", "fan-c", "fan-d"]),
        ("fan-b", vec!["fan-c", "fan-d"]),
    ] {
        assert_eq!(
            redis.smembers(&format!("rq:job:{parent}:dependents")),
            dependents,
            "{parent}"
        );
    }
    assert_eq!(redis.status("dep-f").as_deref(), Some("deferred"));
    for child in &cd {
        assert_eq!(redis.status(child).as_deref(), Some("deferred"));
        assert_eq!(
            redis.smembers(&format!("rq:job::{child}:dependencies")),
            vec!["fan-a".to_string(), "fan-b".to_string()]
        );
    }
    assert_eq!(redis.job_field("dep-z", "allow_dependency_failures"), "1");
    assert_eq!(redis.job_field("dep-w", "allow_dependency_failures"), "1");

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
    assert_eq!(
        redis.status("dep-f").as_deref(),
        Some("deferred"),
        "dep-f's other parent has not run"
    );
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
    // dep-f: one parent finished, one failed.
    for held in ["dep-f", "dep-x", "dep-y"] {
        assert_eq!(redis.status(held).as_deref(), Some("deferred"), "{held}");
        assert!(redis.results(held).is_empty(), "{held} ran");
    }
    assert_eq!(
        redis.zmembers("rq:deferred:fq"),
        vec!["dep-f", "dep-x", "dep-y"]
    );
    assert_eq!(
        redis.smembers("rq:job:dep-p:dependents"),
        vec!["dep-f", "dep-x", "dep-y"]
    );
    for ran in ["dep-z", "dep-w"] {
        assert_eq!(redis.status(ran).as_deref(), Some("finished"), "{ran}");
        assert!(
            redis.job_time(ran, "started_at") >= redis.job_time("dep-p", "ended_at"),
            "{ran} started before its parent failed"
        );
    }

    // runq's --depends-on: a finished parent lets the child straight through, a deferred
    // one holds it.
    let now = enqueue(
        &redis,
        &["runq.tasks.noop", "--queue", "fq", "--depends-on", "fan-a"],
    );
    let held = enqueue(
        &redis,
        &["runq.tasks.noop", "--queue", "fq", "--depends-on", "dep-x"],
    );
    assert_eq!(redis.status(&now).as_deref(), Some("queued"));
    assert_eq!(redis.status(&held).as_deref(), Some("deferred"));
    let v = python_json(
        Py::Rq3,
        &redis,
        &format!(
            r#"
            from rq.job import Job
            from rq.registry import DeferredJobRegistry
            out({{'deferred': sorted(DeferredJobRegistry('fq', connection=conn).get_job_ids()),
                  'c': Job.fetch('fan-c', connection=conn).return_value(),
                  'held_deps': Job.fetch('{held}', connection=conn).dependency_ids}})
            "#
        ),
    );
    assert_eq!(
        v,
        json!({"deferred": sorted(vec!["dep-f".to_string(), "dep-x".to_string(), "dep-y".to_string(), held]),
               "c": {"args": ["c"], "kwargs": {}}, "held_deps": ["dep-x"]})
    );
}
