//! The operator commands, from runq's CLI and from Python RQ, as both sides see them:
//! `runq requeue` (one id, `--all`), `runq cancel` (queued and deferred jobs), `runq
//! empty`; stop-job (`runq stop-job`, `send_stop_job_command`), kill-horse and
//! stop-execution on a running worker; Python's `Job.cancel()` and `Job.delete()`;
//! suspend/resume (`runq suspend [--duration]`, Python's `rq suspend`, `runq resume`),
//! `runq shutdown` of one worker or all; `runq info` counts against Python's registries
//! and `runq job` on a missing id.
//!
//! The measured numbers are printed with `eprintln!` (run with `--nocapture` to see them).

use runq_tests::*;
use serde_json::json;
use std::time::{Duration, Instant};

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

    // Requeue one id.
    let out = runq(&redis, &["requeue", &failed[0]]).ok("runq requeue ID");
    assert!(
        out.stdout
            .contains(&format!("requeued {} on queue ops", failed[0])),
        "{}",
        out.stdout
    );
    assert_eq!(redis.status(&failed[0]).as_deref(), Some("queued"));
    assert_eq!(redis.job_field(&failed[0], "started_at"), "");
    assert_eq!(redis.job_field(&failed[0], "ended_at"), "");
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
    let out = runq(&redis, &["cancel", &failed[1]]);
    assert!(
        !out.status.success(),
        "canceling a failed job must be refused: {out:?}"
    );

    // Requeue --all.
    runq(&redis, &["requeue", "--all", "--queue", "ops"]).ok("runq requeue --all");
    assert!(redis.zrange("rq:failed:ops").is_empty());
    assert_eq!(sorted(redis.lrange("rq:queue:ops")), sorted(failed.clone()));
    let out = runq(&redis, &["requeue", "--all", "--queue", "ops"]).ok("requeue --all, none");
    assert!(out.stdout.contains("no failed jobs"), "{}", out.stdout);

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
    let score = redis
        .zscore("rq:canceled:cq", &canceled)
        .expect("canceled score");
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

    // All of it as Python RQ sees it.
    let list = |ids: &[String]| serde_json::to_string(ids).expect("JSON list");
    let v = python_json(
        Py::Rq3,
        &redis,
        &format!(
            r#"
            from rq.job import Job
            from rq.queue import Queue
            from rq.registry import CanceledJobRegistry, FailedJobRegistry
            from rq.exceptions import NoSuchJobError
            def status(j):
                try:
                    return Job.fetch(j, connection=conn).get_status().value
                except NoSuchJobError:
                    return 'gone'
            out({{'requeued': [status(j) for j in {requeued}],
                  'failed': FailedJobRegistry('ops', connection=conn).get_job_ids(),
                  'queue': sorted(Queue('ops', connection=conn).job_ids),
                  'canceled': [status(j) for j in {canceled}],
                  'canceled_registry': sorted(CanceledJobRegistry('cq', connection=conn).get_job_ids()),
                  'emptied_queue': Queue('eq', connection=conn).job_ids,
                  'doomed': [status(j) for j in {doomed}]}})
            "#,
            requeued = list(&failed),
            canceled = list(&[canceled.clone(), child.clone()]),
            doomed = list(&doomed),
        ),
    );
    assert_eq!(
        v,
        json!({"requeued": ["queued", "queued", "queued"], "failed": [],
               "queue": sorted(failed.clone()),
               "canceled": ["canceled", "canceled"],
               "canceled_registry": sorted(vec![canceled.clone(), child.clone()]),
               "emptied_queue": [], "doomed": ["gone", "gone", "gone"]})
    );

    // The requeued jobs run again; the canceled ones never run.
    WorkerCmd::new(&redis)
        .args(&["--queues", "ops", "--concurrency", "1"])
        .run_burst();
    for id in &failed {
        assert_eq!(redis.status(id).as_deref(), Some("failed"));
        assert_eq!(redis.result_types(id), vec!["2", "2"], "{id} ran twice");
    }
    WorkerCmd::new(&redis)
        .args(&["--queues", "cq", "--concurrency", "1"])
        .run_burst();
    assert_eq!(redis.status(&parent).as_deref(), Some("finished"));
    for id in [&canceled, &child] {
        assert_eq!(redis.status(id).as_deref(), Some("canceled"), "{id}");
        assert!(redis.results(id).is_empty(), "canceled job {id} ran");
    }
}

#[test]
fn stop_job_kill_horse_and_stop_execution() {
    let redis = RedisServer::start();
    let by_runq = enqueue(&redis, &["runq.tasks.sleep", "30", "--queue", "sj"]);
    let by_python = enqueue(&redis, &["runq.tasks.sleep", "30", "--queue", "sj"]);
    let mut w = WorkerCmd::new(&redis)
        .args(&["--queues", "sj", "--concurrency", "2", "--name", "stop"])
        .spawn();
    redis.wait_status(&by_runq, "started");
    redis.wait_status(&by_python, "started");
    redis.wait_subscribed("stop-1");
    redis.wait_subscribed("stop-2");

    let out = runq(&redis, &["stop-job", "ghost"]);
    assert!(!out.status.success(), "{out:?}");
    assert!(out.stderr.contains("no such job: ghost"), "{}", out.stderr);

    // Stop-job, from runq and from Python, while both slots are busy.
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
        assert_eq!(redis.result_types(id), vec!["2"]);
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

    // Python's kill-horse (to the slot running the job) and stop-execution.
    let killed = enqueue(&redis, &["runq.tasks.sleep", "30", "--queue", "sj"]);
    let exec_stopped = enqueue(&redis, &["runq.tasks.sleep", "30", "--queue", "sj"]);
    redis.wait_status(&killed, "started");
    redis.wait_status(&exec_stopped, "started");
    let slot = redis.job_field(&killed, "worker_name");
    python(
        Py::Rq3,
        &redis,
        &format!(
            "from rq.command import send_kill_horse_command\nsend_kill_horse_command(conn, '{slot}')"
        ),
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
    assert_eq!(
        redis.status(&exec_stopped).as_deref(),
        Some("started"),
        "kill-horse to {slot} reached the other slot"
    );
    let member = redis
        .zmembers("rq:wip:sj")
        .into_iter()
        .find(|m| m.starts_with(&format!("{exec_stopped}:")))
        .expect("a started entry");
    let (_, exec) = member.split_once(':').unwrap();
    python(
        Py::Rq3,
        &redis,
        &format!(
            "from rq.command import send_stop_execution_command\nsend_stop_execution_command(conn, '{exec_stopped}', '{exec}')"
        ),
    );
    redis.wait_status(&exec_stopped, "stopped");

    let failed = sorted(vec![by_runq, by_python, killed, exec_stopped]);
    assert_eq!(redis.zmembers("rq:failed:sj"), failed);
    let v = python_json(
        Py::Rq3,
        &redis,
        "from rq.registry import FailedJobRegistry\nout(sorted(FailedJobRegistry('sj', connection=conn).get_job_ids()))",
    );
    assert_eq!(v, json!(failed));
    assert!(redis.zrange("rq:wip:sj").is_empty());
    // The worker carries on.
    let next = enqueue(&redis, &["runq.tasks.noop", "--queue", "sj"]);
    redis.wait_status(&next, "finished");
    assert!(w.running());
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

    // Python's `rq suspend` and runq's `resume` share rq:suspended.
    py_cli(
        Py::Rq3,
        &redis,
        "rq",
        &["suspend", "--url", &redis.rq_url()],
    )
    .ok("rq suspend");
    assert!(redis.exists("rq:suspended"));
    let id = enqueue(&redis, &["runq.tasks.noop", "--queue", "sus"]);
    wait_until("the worker to report `suspended`", || {
        redis.hget("rq:worker:susw", "state").as_deref() == Some("suspended")
    });
    assert_eq!(redis.status(&id).as_deref(), Some("queued"));
    runq(&redis, &["resume"]).ok("runq resume");
    redis.wait_status(&id, "finished");

    runq(&redis, &["suspend", "--duration", "100"]).ok("runq suspend --duration");
    let ttl = redis.ttl("rq:suspended");
    assert!((95..=100).contains(&ttl), "rq:suspended TTL {ttl}");
    w.sigterm();
    assert_eq!(w.wait_exit(), Some(0), "{}", w.logs());
    // A burst worker on suspended queues exits 0 without taking anything (as RQ does).
    let held = enqueue(&redis, &["runq.tasks.noop", "--queue", "sus"]);
    WorkerCmd::new(&redis)
        .args(&["--queues", "sus", "--concurrency", "1"])
        .run_burst();
    assert_eq!(redis.status(&held).as_deref(), Some("queued"));
    runq(&redis, &["resume"]).ok("runq resume");
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

#[test]
fn runq_job_on_a_missing_id_fails() {
    let redis = RedisServer::start();
    let out = runq(&redis, &["job", "nope", "--json"]);
    assert!(!out.status.success(), "{out:?}");
    assert!(out.stderr.contains("no such job: nope"), "{}", out.stderr);
}
