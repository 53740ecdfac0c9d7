//! Job lifecycle beyond run-once: dependencies, retries, TTLs, scheduling, stop/kill/
//! cancel/delete, suspension, queue priority and limits, recovery of abandoned jobs by
//! runq's own maintenance, and Redis going away under a running worker.

use runq_tests::*;
use serde_json::json;
use std::time::Duration;

fn text_field(redis: &RedisServer, id: &str, field: &str) -> String {
    redis
        .hget(&format!("rq:job:{id}"), field)
        .unwrap_or_default()
}

#[test]
fn dependencies_from_python_are_released_by_runq() {
    let redis = RedisServer::start();
    python(
        Py::Rq3,
        &redis,
        r#"
        from rq import Queue
        from rq.job import Dependency
        q = Queue('dq', connection=conn)
        a = q.enqueue('runq.tasks.echo', 'a', job_id='dep-a')
        q.enqueue('runq.tasks.echo', 'b', depends_on=a, job_id='dep-b')
        c = q.enqueue('runq.tasks.fail', 'c', job_id='dep-c')
        q.enqueue('runq.tasks.echo', 'd', depends_on=c, job_id='dep-d')
        q.enqueue('runq.tasks.echo', 'e', depends_on=Dependency(jobs=[c], allow_failure=True), job_id='dep-e')
        q.enqueue('runq.tasks.echo', 'f', depends_on=[a, c], job_id='dep-f')
        "#,
    );
    assert_eq!(redis.status("dep-b").as_deref(), Some("deferred"));
    WorkerCmd::new(&redis)
        .args(&["--queues", "dq", "--concurrency", "1"])
        .run_burst();
    assert_eq!(redis.status("dep-a").as_deref(), Some("finished"));
    assert_eq!(redis.status("dep-b").as_deref(), Some("finished"));
    assert_eq!(redis.status("dep-c").as_deref(), Some("failed"));
    assert_eq!(redis.status("dep-d").as_deref(), Some("deferred"));
    assert_eq!(
        redis.status("dep-e").as_deref(),
        Some("finished"),
        "allow_failure dependent"
    );
    assert_eq!(
        redis.status("dep-f").as_deref(),
        Some("deferred"),
        "one parent failed"
    );

    // runq's own --depends-on: a finished parent lets the child straight through, a
    // deferred one holds it.
    let now = enqueue(
        &redis,
        &["runq.tasks.noop", "--queue", "dq", "--depends-on", "dep-a"],
    );
    let held = enqueue(
        &redis,
        &["runq.tasks.noop", "--queue", "dq", "--depends-on", "dep-d"],
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
            out({{'deferred': sorted(DeferredJobRegistry('dq', connection=conn).get_job_ids()),
                  'b': Job.fetch('dep-b', connection=conn).return_value(),
                  'held_deps': Job.fetch('{held}', connection=conn).dependency_ids}})
            "#
        ),
    );
    let mut deferred = vec!["dep-d".to_string(), "dep-f".to_string(), held.clone()];
    deferred.sort();
    assert_eq!(
        v,
        json!({"deferred": deferred, "b": {"args": ["b"], "kwargs": {}}, "held_deps": ["dep-d"]})
    );
}

#[test]
fn retries_write_one_final_failure() {
    let redis = RedisServer::start();
    let id = enqueue(
        &redis,
        &["runq.tasks.fail", "again", "--queue", "rt", "--retry", "2"],
    );
    python(
        Py::Rq3,
        &redis,
        r#"
        from rq import Queue, Retry
        Queue('rt', connection=conn).enqueue('runq.tasks.fail', 'py', retry=Retry(max=1), job_id='py-retry')
        "#,
    );
    WorkerCmd::new(&redis)
        .args(&["--queues", "rt", "--concurrency", "1", "--name", "rw"])
        .run_burst();
    for (job, text, runs) in [
        (id.as_str(), "RuntimeError: again", 3),
        ("py-retry", "RuntimeError: py", 2),
    ] {
        assert_eq!(redis.status(job).as_deref(), Some("failed"), "{job}");
        assert_eq!(text_field(&redis, job, "retries_left"), "0", "{job}");
        let entries = redis.results(job);
        assert_eq!(
            entries.len(),
            1,
            "{job}: retried attempts write no result ({runs} runs)"
        );
        assert_eq!(RedisServer::exc_text(&entries[0]), text);
    }
    assert_eq!(
        redis.hget("rq:worker:rw", "failed_job_count").as_deref(),
        Some("5")
    );
    let mut failed = vec![id, "py-retry".to_string()];
    failed.sort();
    assert_eq!(redis.zmembers("rq:failed:rt"), failed);
}

#[test]
fn retry_interval_goes_through_the_scheduler() {
    let redis = RedisServer::start();
    let id = enqueue(
        &redis,
        &[
            "runq.tasks.fail",
            "later",
            "--queue",
            "ri",
            "--retry",
            "1",
            "--retry-intervals",
            "1",
        ],
    );
    let mut w = WorkerCmd::new(&redis)
        .args(&["--queues", "ri", "--concurrency", "1"])
        .spawn();
    redis.wait_status(&id, "failed");
    assert_eq!(text_field(&redis, &id, "retries_left"), "0");
    assert_eq!(redis.results(&id).len(), 1);
    assert!(redis.zrange("rq:scheduled:ri").is_empty());
    w.sigterm();
    assert_eq!(w.wait_exit(), Some(0), "{}", w.logs());
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
fn scheduled_jobs_from_runq_and_python_run_when_due() {
    let redis = RedisServer::start();
    let ours = enqueue(
        &redis,
        &["runq.tasks.echo", "ours", "--queue", "sch", "--in", "1s"],
    );
    assert_eq!(redis.status(&ours).as_deref(), Some("scheduled"));
    python(
        Py::Rq3,
        &redis,
        r#"
        from datetime import timedelta
        from rq import Queue
        Queue('sch', connection=conn).enqueue_in(timedelta(seconds=1), 'runq.tasks.echo', 'theirs', job_id='py-sched')
        "#,
    );
    let v = python_json(
        Py::Rq3,
        &redis,
        "from rq.registry import ScheduledJobRegistry\nout(sorted(ScheduledJobRegistry('sch', connection=conn).get_job_ids()))",
    );
    let mut scheduled = vec![ours.clone(), "py-sched".to_string()];
    scheduled.sort();
    assert_eq!(v, json!(scheduled));
    assert!(redis.lrange("rq:queue:sch").is_empty());

    let mut w = WorkerCmd::new(&redis)
        .args(&["--queues", "sch", "--concurrency", "2"])
        .spawn();
    redis.wait_status(&ours, "finished");
    redis.wait_status("py-sched", "finished");
    assert_eq!(
        job_json(&redis, &ours)["return_value"],
        json!({"args": ["ours"], "kwargs": {}})
    );
    assert_eq!(
        job_json(&redis, "py-sched")["return_value"],
        json!({"args": ["theirs"], "kwargs": {}})
    );
    assert!(redis.zrange("rq:scheduled:sch").is_empty());
    w.sigterm();
    assert_eq!(w.wait_exit(), Some(0), "{}", w.logs());
    assert!(
        !redis.exists("rq:scheduler-lock:sch"),
        "the scheduler lock is released on exit"
    );
}

#[test]
fn stop_job_and_kill_horse_commands() {
    let redis = RedisServer::start();
    let stopped = enqueue(&redis, &["runq.tasks.sleep", "30", "--queue", "st"]);
    let killed = enqueue(&redis, &["runq.tasks.sleep", "30", "--queue", "st"]);
    let cli_stopped = enqueue(&redis, &["runq.tasks.sleep", "30", "--queue", "st"]);
    let exec_stopped = enqueue(&redis, &["runq.tasks.sleep", "30", "--queue", "st"]);
    let after = enqueue(&redis, &["runq.tasks.noop", "--queue", "st"]);
    let mut w = WorkerCmd::new(&redis)
        .args(&["--queues", "st", "--concurrency", "1", "--name", "stw"])
        .spawn();
    redis.wait_subscribed("stw");

    redis.wait_status(&stopped, "started");
    python(
        Py::Rq3,
        &redis,
        &format!("from rq.command import send_stop_job_command\nsend_stop_job_command(conn, '{stopped}')"),
    );
    redis.wait_status(&stopped, "stopped");
    let v = job_json(&redis, &stopped);
    assert_eq!(
        v["exc_string"], "Job stopped by user, work-horse terminated.",
        "{v}"
    );
    assert_eq!(v["result_type"], "FAILED", "{v}");

    redis.wait_status(&killed, "started");
    python(
        Py::Rq3,
        &redis,
        "from rq.command import send_kill_horse_command\nsend_kill_horse_command(conn, 'stw')",
    );
    redis.wait_status(&killed, "failed");
    let exc = job_json(&redis, &killed)["exc_string"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        exc.starts_with("Work-horse terminated unexpectedly"),
        "{exc}"
    );

    redis.wait_status(&cli_stopped, "started");
    runq(&redis, &["stop-job", &cli_stopped]).ok("runq stop-job");
    redis.wait_status(&cli_stopped, "stopped");

    redis.wait_status(&exec_stopped, "started");
    let member = redis.zmembers("rq:wip:st").pop().expect("a started entry");
    let (_, exec) = member.split_once(':').unwrap();
    python(
        Py::Rq3,
        &redis,
        &format!(
            "from rq.command import send_stop_execution_command\nsend_stop_execution_command(conn, '{exec_stopped}', '{exec}')"
        ),
    );
    redis.wait_status(&exec_stopped, "stopped");

    // The worker carries on.
    redis.wait_status(&after, "finished");
    let mut failed = vec![stopped, killed, cli_stopped, exec_stopped];
    failed.sort();
    assert_eq!(redis.zmembers("rq:failed:st"), failed);
    let v = python_json(
        Py::Rq3,
        &redis,
        "from rq.registry import FailedJobRegistry\nout(sorted(FailedJobRegistry('st', connection=conn).get_job_ids()))",
    );
    assert_eq!(v, json!(failed));
    w.sigterm();
    assert_eq!(w.wait_exit(), Some(0), "{}", w.logs());
}

#[test]
fn python_cancel_and_delete_are_respected() {
    let redis = RedisServer::start();
    let running = enqueue(&redis, &["runq.tasks.sleep", "2", "--queue", "cd"]);
    let canceled = enqueue(&redis, &["runq.tasks.echo", "no", "--queue", "cd"]);
    let after = enqueue(&redis, &["runq.tasks.echo", "yes", "--queue", "cd"]);
    python(
        Py::Rq3,
        &redis,
        &format!("from rq.job import Job\nJob.fetch('{canceled}', connection=conn).cancel()"),
    );
    let mut w = WorkerCmd::new(&redis)
        .args(&["--queues", "cd", "--concurrency", "1"])
        .spawn();
    redis.wait_status(&running, "started");
    // Deleting a running job: the worker must notice it is no longer its own and go on.
    python(
        Py::Rq3,
        &redis,
        &format!("from rq.job import Job\nJob.fetch('{running}', connection=conn).delete()"),
    );
    redis.wait_status(&after, "finished");
    assert_eq!(redis.status(&canceled).as_deref(), Some("canceled"));
    assert!(
        redis.results(&canceled).is_empty(),
        "a canceled job never ran"
    );
    assert_eq!(redis.zmembers("rq:canceled:cd"), vec![canceled]);
    wait_until("the deleted job's execution to end", || {
        redis.zrange("rq:wip:cd").is_empty()
    });
    assert!(
        !redis.exists(&format!("rq:job:{running}")),
        "a deleted job was written back"
    );
    assert!(redis.zmembers("rq:finished:cd") == vec![after.clone()]);
    assert!(redis.zmembers("rq:failed:cd").is_empty());
    w.sigterm();
    assert_eq!(w.wait_exit(), Some(0), "{}", w.logs());
}

#[test]
fn suspend_and_resume() {
    let redis = RedisServer::start();
    let mut w = WorkerCmd::new(&redis)
        .args(&["--queues", "sus", "--concurrency", "1", "--name", "sw"])
        .spawn();
    redis.wait_worker("sw");
    // Python's `rq suspend` and runq's `resume` share rq:suspended.
    py_cli(
        Py::Rq3,
        &redis,
        "rq",
        &["suspend", "--url", &redis.rq_url()],
    )
    .ok("rq suspend");
    let id = enqueue(&redis, &["runq.tasks.noop", "--queue", "sus"]);
    wait_until("the worker to report `suspended`", || {
        redis.hget("rq:worker:sw", "state").as_deref() == Some("suspended")
    });
    assert_eq!(redis.status(&id).as_deref(), Some("queued"));
    runq(&redis, &["resume"]).ok("runq resume");
    redis.wait_status(&id, "finished");
    runq(&redis, &["suspend"]).ok("runq suspend");
    assert!(redis.exists("rq:suspended"));
    w.sigterm();
    assert_eq!(w.wait_exit(), Some(0), "{}", w.logs());
    // A burst worker on suspended queues exits 0 without taking anything (as RQ does).
    let held = enqueue(&redis, &["runq.tasks.noop", "--queue", "sus"]);
    WorkerCmd::new(&redis)
        .args(&["--queues", "sus", "--concurrency", "1"])
        .run_burst();
    assert_eq!(redis.status(&held).as_deref(), Some("queued"));
}

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
        .map(|id| text_field(&redis, id, "started_at"))
        .max()
        .unwrap();
    let first_low = low
        .iter()
        .map(|id| text_field(&redis, id, "started_at"))
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
                text_field(&redis, id, "started_at"),
                text_field(&redis, id, "ended_at"),
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
fn runq_job_on_a_missing_id_fails() {
    let redis = RedisServer::start();
    let out = runq(&redis, &["job", "nope", "--json"]);
    assert!(!out.status.success(), "{out:?}");
    assert!(out.stderr.contains("no such job: nope"), "{}", out.stderr);
}

#[test]
fn no_timeout_job_runs() {
    let redis = RedisServer::start();
    let id = enqueue(&redis, &["runq.tasks.sleep", "1", "--timeout", "-1"]);
    assert_eq!(text_field(&redis, &id, "timeout"), "-1");
    WorkerCmd::new(&redis)
        .args(&["--concurrency", "1"])
        .run_burst();
    assert_eq!(job_json(&redis, &id)["return_value"], json!(1));
}

#[test]
fn abandoned_jobs_are_recovered_by_runq_maintenance() {
    let redis = RedisServer::start();
    let id = enqueue(&redis, &["runq.tasks.sleep", "1", "--queue", "ab"]);
    let config =
        "[worker]\nheartbeat_secs = 1\nmaintenance_secs = 1\nabandoned_jobs = \"requeue\"\n";
    let mut first = WorkerCmd::new(&redis)
        .args(&["--queues", "ab", "--concurrency", "1", "--name", "a1"])
        .config(config)
        .spawn();
    redis.wait_status(&id, "started");
    first.kill9();
    assert_eq!(redis.status(&id).as_deref(), Some("started"));
    let mut second = WorkerCmd::new(&redis)
        .args(&["--queues", "ab", "--concurrency", "1", "--name", "a2"])
        .config(config)
        .spawn();
    redis.wait_status(&id, "finished");
    assert_eq!(text_field(&redis, &id, "worker_name"), "a2");
    assert_eq!(redis.results(&id).len(), 1);
    assert!(redis.zrange("rq:wip:ab").is_empty());
    // The dead process's worker records are dropped too.
    wait_until("a1 to leave rq:workers", || {
        !redis
            .smembers("rq:workers")
            .contains(&"rq:worker:a1".to_string())
    });
    second.sigterm();
    assert_eq!(second.wait_exit(), Some(0), "{}", second.logs());
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

#[test]
fn runq_requeue_cancel_and_empty_as_python_sees_them() {
    let redis = RedisServer::start();
    let failing = enqueue(&redis, &["runq.tasks.fail", "x", "--queue", "ops"]);
    WorkerCmd::new(&redis)
        .args(&["--queues", "ops", "--concurrency", "1"])
        .run_burst();
    let waiting = enqueue(&redis, &["runq.tasks.noop", "--queue", "ops"]);
    let doomed = enqueue(&redis, &["runq.tasks.noop", "--queue", "gone"]);

    runq(&redis, &["cancel", &waiting]).ok("runq cancel");
    let out = runq(&redis, &["cancel", &failing]);
    assert!(
        !out.status.success(),
        "canceling a failed job must be refused: {out:?}"
    );
    runq(&redis, &["requeue", "--all", "--queue", "ops"]).ok("runq requeue --all");
    let out = runq(&redis, &["requeue", &failing]);
    assert!(
        !out.status.success(),
        "a queued job is not in the failed registry: {out:?}"
    );
    runq(&redis, &["empty", "gone"]).ok("runq empty");

    let v = python_json(
        Py::Rq3,
        &redis,
        &format!(
            r#"
            from rq.job import Job
            from rq.queue import Queue
            from rq.registry import CanceledJobRegistry, FailedJobRegistry
            from rq.exceptions import NoSuchJobError
            try:
                Job.fetch('{doomed}', connection=conn)
                doomed = 'exists'
            except NoSuchJobError:
                doomed = 'gone'
            out({{'waiting': Job.fetch('{waiting}', connection=conn).get_status().value,
                  'canceled': CanceledJobRegistry('ops', connection=conn).get_job_ids(),
                  'failing': Job.fetch('{failing}', connection=conn).get_status().value,
                  'failed': FailedJobRegistry('ops', connection=conn).get_job_ids(),
                  'queue': Queue('ops', connection=conn).job_ids,
                  'gone_queue': Queue('gone', connection=conn).job_ids, 'doomed': doomed}})
            "#
        ),
    );
    assert_eq!(
        v,
        json!({"waiting": "canceled", "canceled": [waiting], "failing": "queued", "failed": [],
               "queue": [failing.clone()], "gone_queue": [], "doomed": "gone"})
    );
    WorkerCmd::new(&redis)
        .args(&["--queues", "ops", "--concurrency", "1"])
        .run_burst();
    assert_eq!(
        redis.results(&failing).len(),
        2,
        "the requeued job ran again"
    );
    assert_eq!(redis.status(&waiting).as_deref(), Some("canceled"));
}

#[test]
fn runq_info_counts_match_python() {
    let redis = RedisServer::start();
    for args in [
        &["runq.tasks.noop"][..],
        &["runq.tasks.noop"],
        &["runq.tasks.fail", "x"],
    ] {
        enqueue(&redis, &[args, &["--queue", "cnt"]].concat());
    }
    WorkerCmd::new(&redis)
        .args(&["--queues", "cnt", "--concurrency", "1"])
        .run_burst();
    let failed = redis.zmembers("rq:failed:cnt").pop().unwrap();
    enqueue(
        &redis,
        &["runq.tasks.noop", "--queue", "cnt", "--depends-on", &failed],
    );
    enqueue(&redis, &["runq.tasks.noop", "--queue", "cnt", "--in", "1h"]);
    let canceled = enqueue(&redis, &["runq.tasks.noop", "--queue", "cnt"]);
    runq(&redis, &["cancel", &canceled]).ok("runq cancel");
    enqueue(&redis, &["runq.tasks.noop", "--queue", "cnt"]);
    enqueue(&redis, &["runq.tasks.noop", "--queue", "cnt"]);

    let out = runq(&redis, &["info", "--json"]).ok("runq info --json");
    let ours: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let python = python_json(
        Py::Rq3,
        &redis,
        r#"
        from rq.queue import Queue
        from rq import registry as r
        q = Queue('cnt', connection=conn)
        c = lambda cls: cls('cnt', connection=conn).count
        out({'queued': q.count, 'started': c(r.StartedJobRegistry), 'finished': c(r.FinishedJobRegistry),
             'failed': c(r.FailedJobRegistry), 'deferred': c(r.DeferredJobRegistry),
             'scheduled': c(r.ScheduledJobRegistry), 'canceled': c(r.CanceledJobRegistry)})
        "#,
    );
    assert_eq!(
        python,
        json!({"queued": 2, "started": 0, "finished": 2, "failed": 1, "deferred": 1, "scheduled": 1, "canceled": 1})
    );
    assert_eq!(
        ours["queues"],
        json!([{"name": "cnt", "counts": python}]),
        "{}",
        out.stdout
    );
    let text = runq(&redis, &["info"]).ok("runq info").stdout;
    let line = text
        .lines()
        .find(|l| l.starts_with("cnt "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.ends_with("2, 0 executing, 2 finished, 1 failed, 1 deferred, 1 scheduled"),
        "{line}"
    );
}
