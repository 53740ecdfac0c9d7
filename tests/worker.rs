//! runq-worker behaviour against a real Redis: timeouts and failures, malformed jobs,
//! warm and cold shutdown, SIGKILL, burst mode, heartbeats, configuration and CLI errors.

use runq_tests::*;
use serde_json::json;
use std::time::Duration;

fn is_exec_id(s: &str) -> bool {
    s.len() == 32 && s.chars().all(|c| c.is_ascii_hexdigit())
}

#[test]
fn timeout_fails_the_job_into_the_failed_registry() {
    let redis = RedisServer::start();
    let id = enqueue(
        &redis,
        &["runq.tasks.sleep", "5", "--timeout", "1", "--queue", "slow"],
    );
    assert_eq!(
        redis.hget(&format!("rq:job:{id}"), "timeout").as_deref(),
        Some("1")
    );
    WorkerCmd::new(&redis)
        .args(&["--queues", "slow", "--concurrency", "1"])
        .run_burst();
    assert_eq!(
        failure_text(&redis, &id),
        "JobTimeoutException: Task exceeded maximum timeout value (1 seconds)"
    );
    assert_eq!(redis.zmembers("rq:failed:slow"), vec![id.clone()]);
    assert!(redis.zmembers("rq:wip:slow").is_empty());
    assert!(redis.zmembers("rq:finished:slow").is_empty());
}

#[test]
fn failing_task_records_its_error() {
    let redis = RedisServer::start();
    let id = enqueue(&redis, &["runq.tasks.fail", "disk on fire"]);
    WorkerCmd::new(&redis)
        .args(&["--concurrency", "1", "--name", "fw"])
        .run_burst();
    assert_eq!(failure_text(&redis, &id), "RuntimeError: disk on fire");
    assert_eq!(redis.zmembers("rq:failed:default"), vec![id.clone()]);
    let entries = redis.results(&id);
    assert_eq!(entries.len(), 1);
    assert_eq!(String::from_utf8_lossy(&entries[0]["type"]), "2");
    assert_eq!(
        redis.hget("rq:worker:fw", "failed_job_count").as_deref(),
        Some("1")
    );
    assert_eq!(
        redis
            .hget("rq:worker:fw", "successful_job_count")
            .as_deref(),
        Some("0")
    );
}

#[test]
fn malformed_jobs_fail_clearly_and_the_worker_keeps_going() {
    let redis = RedisServer::start();
    let q = ["--queue", "bad"];
    let unknown = enqueue(&redis, &[&["nosuch.func", "1"][..], &q].concat());
    let corrupt = enqueue(&redis, &[&["runq.tasks.noop"][..], &q].concat());
    let bad_pickle = enqueue(&redis, &[&["runq.tasks.noop"][..], &q].concat());
    let no_data = enqueue(&redis, &[&["runq.tasks.noop"][..], &q].concat());
    let bad_timeout = enqueue(&redis, &[&["runq.tasks.noop"][..], &q].concat());
    let good = enqueue(&redis, &[&["runq.tasks.echo", "after"][..], &q].concat());
    let mut c = redis.conn();
    let _: () = c
        .hset(
            format!("rq:job:{corrupt}"),
            "data",
            b"\x07\xff\x00garbage".as_slice(),
        )
        .unwrap();
    let _: () = c
        .hset(
            format!("rq:job:{bad_pickle}"),
            "data",
            b"\x80\x05garbage".as_slice(),
        )
        .unwrap();
    let _: () = c.hdel(format!("rq:job:{no_data}"), "data").unwrap();
    let _: () = c
        .hset(format!("rq:job:{bad_timeout}"), "timeout", "soon")
        .unwrap();

    // One slot, so the good job runs after every bad one.
    WorkerCmd::new(&redis)
        .args(&["--queues", "bad", "--concurrency", "1", "--name", "bw"])
        .run_burst();

    let text = failure_text(&redis, &unknown);
    assert!(
        text.starts_with("UnknownFunction: no handler is registered for ")
            && text.contains("`nosuch.func`"),
        "{text}"
    );
    for id in [&corrupt, &bad_pickle] {
        let text = failure_text(&redis, id);
        assert!(text.starts_with("DeserializationError:"), "{id}: {text}");
    }
    assert!(failure_text(&redis, &corrupt).contains("not pickle, JSON or MessagePack"));
    assert!(failure_text(&redis, &bad_pickle).contains("cannot decode pickle"));
    let text = failure_text(&redis, &no_data);
    assert!(
        text.starts_with(&format!("InvalidJob: job {no_data}: field `data`: ")),
        "{text}"
    );
    assert_eq!(
        failure_text(&redis, &bad_timeout),
        format!("InvalidJob: job {bad_timeout}: field `timeout`: `soon` is not an integer")
    );

    let v = job_json(&redis, &good);
    assert_eq!(v["status"], "finished", "{v}");
    assert_eq!(v["return_value"], json!({"args": ["after"], "kwargs": {}}));
    let mut failed = vec![unknown, corrupt, bad_pickle, no_data, bad_timeout];
    failed.sort();
    assert_eq!(redis.zmembers("rq:failed:bad"), failed);
    assert_eq!(redis.zmembers("rq:finished:bad"), vec![good]);
    assert!(redis.zmembers("rq:wip:bad").is_empty());
    assert_eq!(
        redis.hget("rq:worker:bw", "failed_job_count").as_deref(),
        Some("5")
    );
    assert_eq!(
        redis
            .hget("rq:worker:bw", "successful_job_count")
            .as_deref(),
        Some("1")
    );
}

#[test]
fn warm_shutdown_finishes_the_running_job_and_deregisters() {
    let redis = RedisServer::start();
    let running = enqueue(&redis, &["runq.tasks.sleep", "3", "--queue", "ws"]);
    let waiting = enqueue(&redis, &["runq.tasks.noop", "--queue", "ws"]);
    let mut w = WorkerCmd::new(&redis)
        .args(&["--queues", "ws", "--concurrency", "1", "--name", "warm"])
        .spawn();
    redis.wait_worker("warm");
    redis.wait_status(&running, "started");
    w.sigterm();
    wait_until("shutdown_requested_date on the busy worker", || {
        redis
            .hget("rq:worker:warm", "shutdown_requested_date")
            .is_some()
    });
    assert_eq!(w.wait_exit(), Some(0), "{}", w.logs());
    assert_eq!(redis.status(&running).as_deref(), Some("finished"));
    assert_eq!(job_json(&redis, &running)["return_value"], json!(3));
    // No new job was taken after the signal.
    assert_eq!(redis.status(&waiting).as_deref(), Some("queued"));
    assert_eq!(redis.lrange("rq:queue:ws"), vec![waiting]);
    assert!(!redis
        .smembers("rq:workers")
        .contains(&"rq:worker:warm".to_string()));
    assert!(redis.smembers("rq:workers:ws").is_empty());
    assert!(
        redis.hget("rq:worker:warm", "death").is_some(),
        "death stamp missing"
    );
}

#[test]
fn cold_shutdown_requeues_the_running_job_at_the_front() {
    let redis = RedisServer::start();
    let running = enqueue(&redis, &["runq.tasks.sleep", "30", "--queue", "cs"]);
    let waiting = enqueue(&redis, &["runq.tasks.noop", "--queue", "cs"]);
    let mut w = WorkerCmd::new(&redis)
        .args(&["--queues", "cs", "--concurrency", "1", "--name", "cold"])
        .spawn();
    redis.wait_status(&running, "started");
    w.sigterm();
    std::thread::sleep(Duration::from_millis(1500));
    w.sigterm();
    assert_eq!(w.wait_exit(), Some(0), "{}", w.logs());
    assert_eq!(redis.status(&running).as_deref(), Some("queued"));
    assert_eq!(redis.lrange("rq:queue:cs"), vec![running.clone(), waiting]);
    assert!(
        redis.zrange("rq:wip:cs").is_empty(),
        "rq:wip:cs still holds {:?}",
        redis.zrange("rq:wip:cs")
    );
    assert!(
        redis.results(&running).is_empty(),
        "a requeued job gets no result entry"
    );
    assert!(redis.zmembers("rq:failed:cs").is_empty());
    assert!(!redis
        .smembers("rq:workers")
        .contains(&"rq:worker:cold".to_string()));
}

#[test]
fn grace_period_running_out_goes_cold() {
    let redis = RedisServer::start();
    let id = enqueue(&redis, &["runq.tasks.sleep", "30", "--queue", "gq"]);
    let mut w = WorkerCmd::new(&redis)
        .args(&["--queues", "gq", "--concurrency", "1"])
        .config("[worker]\nshutdown_grace_secs = 1\n")
        .spawn();
    redis.wait_status(&id, "started");
    w.sigterm();
    assert_eq!(w.wait_exit(), Some(0), "{}", w.logs());
    assert_eq!(redis.status(&id).as_deref(), Some("queued"));
    assert_eq!(redis.lrange("rq:queue:gq"), vec![id]);
    assert!(redis.zrange("rq:wip:gq").is_empty());
}

#[test]
fn cold_shutdown_with_interrupted_jobs_fail() {
    let redis = RedisServer::start();
    let id = enqueue(&redis, &["runq.tasks.sleep", "30", "--queue", "fq"]);
    let mut w = WorkerCmd::new(&redis)
        .args(&["--queues", "fq", "--concurrency", "1"])
        .config("[worker]\ninterrupted_jobs = \"fail\"\n")
        .spawn();
    redis.wait_status(&id, "started");
    w.sigterm();
    std::thread::sleep(Duration::from_millis(1500));
    w.sigterm();
    assert_eq!(w.wait_exit(), Some(0), "{}", w.logs());
    let text = failure_text(&redis, &id);
    assert!(text.starts_with("ShutDownImminentException"), "{text}");
    assert_eq!(redis.zmembers("rq:failed:fq"), vec![id]);
    assert!(redis.lrange("rq:queue:fq").is_empty());
    assert!(redis.zrange("rq:wip:fq").is_empty());
}

#[test]
fn sigkill_leaves_running_jobs_recoverable() {
    let redis = RedisServer::start();
    let a = enqueue(&redis, &["runq.tasks.sleep", "30", "--queue", "kq"]);
    let b = enqueue(&redis, &["runq.tasks.sleep", "30", "--queue", "kq"]);
    let mut w = WorkerCmd::new(&redis)
        .args(&["--queues", "kq", "--concurrency", "2", "--name", "k9"])
        .config("[worker]\nheartbeat_secs = 1\n")
        .spawn();
    redis.wait_status(&a, "started");
    redis.wait_status(&b, "started");
    w.kill9();

    let wip = redis.zrange("rq:wip:kq");
    let mut ids: Vec<&str> = wip
        .iter()
        .map(|(member, _)| {
            let (id, exec) = member.split_once(':').expect("member is <id>:<exec>");
            assert!(is_exec_id(exec), "execution id in {member}");
            id
        })
        .collect();
    ids.sort();
    let mut expected = vec![a.as_str(), b.as_str()];
    expected.sort();
    assert_eq!(ids, expected, "rq:wip:kq = {wip:?}");
    for id in [&a, &b] {
        assert_eq!(redis.status(id).as_deref(), Some("started"));
        let worker = redis
            .hget(&format!("rq:job:{id}"), "worker_name")
            .unwrap_or_default();
        assert!(worker == "k9-1" || worker == "k9-2", "worker_name {worker}");
    }

    // Recoverable: once the deadline (3 x heartbeat) passes, RQ's own cleanup fails them
    // as abandoned.
    let deadline = wip.iter().map(|(_, s)| *s as i64).max().unwrap();
    wait_until("the started-registry deadline to pass", || {
        redis.now_secs() > deadline
    });
    let v = python_json(
        Py::Rq3,
        &redis,
        r#"
        from rq.job import Job
        from rq.registry import StartedJobRegistry, FailedJobRegistry
        StartedJobRegistry('kq', connection=conn).cleanup()
        failed = sorted(FailedJobRegistry('kq', connection=conn).get_job_ids())
        out({'failed': failed,
             'status': [Job.fetch(i, connection=conn).get_status().value for i in failed],
             'exc': [Job.fetch(i, connection=conn).latest_result().exc_string for i in failed],
             'started': StartedJobRegistry('kq', connection=conn).get_job_ids()})
        "#,
    );
    assert_eq!(v["failed"], json!(expected));
    assert_eq!(v["status"], json!(["failed", "failed"]));
    assert_eq!(v["started"], json!([]));
    for exc in v["exc"].as_array().unwrap() {
        assert!(
            exc.as_str()
                .unwrap()
                .starts_with("Moved to FailedJobRegistry, due to AbandonedJobError"),
            "{exc}"
        );
    }
}

#[test]
fn heartbeats_keep_the_started_deadline_ahead() {
    let redis = RedisServer::start();
    let id = enqueue(&redis, &["runq.tasks.sleep", "4", "--queue", "hb"]);
    let mut w = WorkerCmd::new(&redis)
        .args(&["--queues", "hb", "--concurrency", "1"])
        .config("[worker]\nheartbeat_secs = 1\nmaintenance_secs = 1\n")
        .spawn();
    redis.wait_status(&id, "started");
    let first = redis.zrange("rq:wip:hb");
    assert_eq!(first.len(), 1, "{first:?}");
    let (member, score) = first[0].clone();
    assert!(member.starts_with(&format!("{id}:")));
    // The claim writes deadline = start + 3 x heartbeat_secs.
    let started_at = redis.hget(&format!("rq:job:{id}"), "started_at").unwrap();
    let started = python_json(
        Py::Rq3,
        &redis,
        &format!(
            "import datetime\nout(datetime.datetime.strptime('{started_at}', '%Y-%m-%dT%H:%M:%S.%fZ').replace(tzinfo=datetime.timezone.utc).timestamp())"
        ),
    );
    // started_at is the worker's clock and the deadline Redis's (TIME in the claim), read
    // a moment apart: equal within a second, not necessarily in the same whole second.
    let expected = started.as_f64().unwrap() + 3.0;
    assert!(
        (score - expected).abs() < 1.0,
        "deadline of {member}: {score} vs started_at + 3 s = {expected}"
    );
    wait_until("a heartbeat to push the deadline forward", || {
        redis
            .zrange("rq:wip:hb")
            .first()
            .is_some_and(|(_, s)| *s > score)
    });
    // It outlives its first deadline without being taken as abandoned by maintenance.
    redis.wait_status(&id, "finished");
    assert!(redis.zmembers("rq:failed:hb").is_empty());
    w.sigterm();
    assert_eq!(w.wait_exit(), Some(0), "{}", w.logs());
}

#[test]
fn burst_exits_zero_on_empty_queues() {
    let redis = RedisServer::start();
    WorkerCmd::new(&redis)
        .args(&["--queues", "a,b", "--concurrency", "2", "--name", "empty"])
        .run_burst();
    assert!(redis.smembers("rq:workers").is_empty());
    assert!(redis.smembers("rq:workers:a").is_empty());
    assert!(redis.smembers("rq:workers:b").is_empty());
    assert!(redis.hget("rq:worker:empty-1", "death").is_some());
    assert!(redis.hget("rq:worker:empty-2", "death").is_some());
}

#[test]
fn bad_config_file_names_file_and_line() {
    let redis = RedisServer::start();
    let dir = TempDir::new("config");
    let cases = [
        (
            "type.toml",
            "[worker]\nconcurrency = \"four\"\n",
            2,
            "concurrency",
        ),
        (
            "unknown.toml",
            "# comment\n[worker]\nheartbeat_secs = 5\nbogus = 1\n",
            4,
            "bogus",
        ),
        (
            "invalid.toml",
            "[worker]\nheartbeat_secs = 0\n",
            2,
            "heartbeat_secs",
        ),
    ];
    for (name, text, line, needle) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let out = worker_output(
            &redis.url(),
            &["--burst", "--config", path.to_str().unwrap()],
        );
        assert_eq!(out.status.code(), Some(1), "{name}: {out:?}");
        let expected = format!("{}:{line}:", path.display());
        assert!(
            out.stderr.contains(&expected),
            "{name}: stderr lacks `{expected}`:\n{}",
            out.stderr
        );
        assert!(
            out.stderr.contains(needle),
            "{name}: stderr lacks `{needle}`:\n{}",
            out.stderr
        );
    }
    assert!(
        redis.smembers("rq:workers").is_empty(),
        "no worker may register"
    );
}

#[test]
fn unreachable_redis_is_a_one_line_error() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let out = runq_at(&url, &["info"]);
    assert!(
        !out.status.success(),
        "runq info succeeded without Redis: {out:?}"
    );
    let lines: Vec<&str> = out.stderr.trim().lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "expected one line on stderr: {:?}",
        out.stderr
    );
    assert!(lines[0].starts_with("runq: "), "{}", lines[0]);
    assert!(
        lines[0].contains(&format!("127.0.0.1:{port}")),
        "{}",
        lines[0]
    );

    // The worker waits for Redis instead (systemd-friendly); a stop signal ends the
    // wait cleanly. (tests/hostile_input.rs item 9 checks its backoff and CPU.)
    let dir = TempDir::new("unreachable");
    let log = dir.path().join("stderr.log");
    let mut child = std::process::Command::new(bin("runq-worker"))
        .args(["--burst"])
        .env("REDIS_URL", &url)
        .env("NO_COLOR", "1")
        .env_remove("RUNQ_CONFIG")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_until("the worker to log that Redis is unreachable", || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains(&format!("127.0.0.1:{port}"))
    });
    // SAFETY: kill(2) on the child this test spawned and still owns.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let status = wait_exit(&mut child);
    assert_eq!(
        status.code(),
        Some(0),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

#[test]
fn enqueue_refuses_bad_job_id_and_zero_timeout() {
    let redis = RedisServer::start();
    let out = runq(&redis, &["enqueue", "runq.tasks.noop", "--job-id", "a:b"]);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        out.stderr.contains("a:b") && out.stderr.contains("[A-Za-z0-9_-]+"),
        "{}",
        out.stderr
    );
    let out = runq(&redis, &["enqueue", "runq.tasks.noop", "--timeout", "0"]);
    assert!(!out.status.success(), "{out:?}");
    assert!(out.stderr.contains("--timeout 0"), "{}", out.stderr);
    let keys: i64 = redis::cmd("DBSIZE").query(&mut redis.conn()).unwrap();
    assert_eq!(keys, 0, "a refused enqueue wrote to Redis");
}

#[test]
fn ghost_ids_are_skipped_and_registries_follow_origin() {
    let redis = RedisServer::start();
    let mut c = redis.conn();
    // An id whose job hash expired or was deleted, then a job whose origin is another queue.
    let _: () = c.rpush("rq:queue:gh", "ghost").unwrap();
    let id = enqueue(&redis, &["runq.tasks.echo", "1", "--queue", "elsewhere"]);
    let _: () = c.del("rq:queue:elsewhere").unwrap();
    let _: () = c.rpush("rq:queue:gh", &id).unwrap();
    WorkerCmd::new(&redis)
        .args(&["--queues", "gh", "--concurrency", "1"])
        .run_burst();
    assert!(!redis.exists("rq:job:ghost"), "a ghost id got a job hash");
    assert!(!redis.exists("rq:results:ghost"));
    assert_eq!(redis.status(&id).as_deref(), Some("finished"));
    assert_eq!(redis.zmembers("rq:finished:elsewhere"), vec![id]);
    assert!(redis.zmembers("rq:finished:gh").is_empty());
    assert!(redis.lrange("rq:queue:gh").is_empty());
}

#[test]
fn duplicate_sigterm_within_a_second_stays_warm() {
    let redis = RedisServer::start();
    let id = enqueue(&redis, &["runq.tasks.sleep", "2", "--queue", "dup"]);
    let mut w = WorkerCmd::new(&redis)
        .args(&["--queues", "dup", "--concurrency", "1"])
        .spawn();
    redis.wait_status(&id, "started");
    w.sigterm();
    std::thread::sleep(Duration::from_millis(100));
    w.sigterm();
    assert_eq!(w.wait_exit(), Some(0), "{}", w.logs());
    assert_eq!(redis.status(&id).as_deref(), Some("finished"));
}

#[test]
fn sigint_is_a_warm_shutdown() {
    let redis = RedisServer::start();
    let id = enqueue(&redis, &["runq.tasks.sleep", "2", "--queue", "int"]);
    let mut w = WorkerCmd::new(&redis)
        .args(&["--queues", "int", "--concurrency", "1", "--name", "iw"])
        .spawn();
    redis.wait_status(&id, "started");
    w.signal(libc::SIGINT);
    assert_eq!(w.wait_exit(), Some(0), "{}", w.logs());
    assert_eq!(redis.status(&id).as_deref(), Some("finished"));
    assert!(redis.smembers("rq:workers").is_empty());
}

#[test]
fn two_processes_run_every_job_exactly_once() {
    let redis = RedisServer::start();
    const N: usize = 1500;
    let dir = TempDir::new("jobs");
    let file = dir.path().join("jobs.jsonl");
    let lines: Vec<String> = (0..N)
        .map(|i| format!(r#"{{"func": "runq.tasks.echo", "args": [{i}], "queue": "many", "job_id": "m{i:04}"}}"#))
        .collect();
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    runq(&redis, &["enqueue", "--file", file.to_str().unwrap()]).ok("runq enqueue --file");
    assert_eq!(redis.lrange("rq:queue:many").len(), N);

    let mut a = WorkerCmd::new(&redis)
        .args(&[
            "--queues",
            "many",
            "--concurrency",
            "8",
            "--name",
            "pa",
            "--burst",
        ])
        .spawn();
    let mut b = WorkerCmd::new(&redis)
        .args(&[
            "--queues",
            "many",
            "--concurrency",
            "8",
            "--name",
            "pb",
            "--burst",
        ])
        .spawn();
    assert_eq!(a.wait_exit(), Some(0), "{}", a.logs());
    assert_eq!(b.wait_exit(), Some(0), "{}", b.logs());

    assert_eq!(redis.zrange("rq:finished:many").len(), N);
    assert!(redis.zrange("rq:wip:many").is_empty());
    assert!(redis.zrange("rq:failed:many").is_empty());
    let mut c = redis.conn();
    let mut total = 0;
    for p in ["pa", "pb"] {
        for slot in 1..=8 {
            let n: Option<usize> = c
                .hget(format!("rq:worker:{p}-{slot}"), "successful_job_count")
                .unwrap();
            total += n.unwrap_or(0);
        }
    }
    assert_eq!(total, N, "successful_job_count over all slots");
    for i in 0..N {
        let len: usize = c.xlen(format!("rq:results:m{i:04}")).unwrap();
        assert_eq!(len, 1, "m{i:04} has {len} results");
    }
    let v = job_json(&redis, "m0777");
    assert_eq!(v["return_value"], json!({"args": [777], "kwargs": {}}));
}

#[test]
fn job_taken_over_by_rq_cleanup_is_dropped_by_its_old_worker() {
    let redis = RedisServer::start();
    let long = enqueue(&redis, &["runq.tasks.sleep", "120", "--queue", "lost"]);
    let next = enqueue(&redis, &["runq.tasks.noop", "--queue", "lost"]);
    let mut w = WorkerCmd::new(&redis)
        .args(&["--queues", "lost", "--concurrency", "1", "--name", "lw"])
        .config("[worker]\nheartbeat_secs = 1\n")
        .spawn();
    redis.wait_status(&long, "started");
    // Freeze the worker, let its deadline lapse and have RQ's cleanup fail the job.
    w.signal(libc::SIGSTOP);
    python(
        Py::Rq3,
        &redis,
        r#"
        from rq.registry import StartedJobRegistry
        for m in conn.zrange('rq:wip:lost', 0, -1):
            conn.zadd('rq:wip:lost', {m: 1}, xx=True)
        StartedJobRegistry('lost', connection=conn).cleanup()
        "#,
    );
    assert_eq!(redis.status(&long).as_deref(), Some("failed"));
    w.signal(libc::SIGCONT);
    // The worker notices on its next heartbeat, drops the job and moves on (the job would
    // otherwise sleep 120 s, beyond any wait here).
    redis.wait_status(&next, "finished");
    assert_eq!(redis.status(&long).as_deref(), Some("failed"));
    let entries = redis.results(&long);
    assert_eq!(entries.len(), 1, "only RQ's abandoned-job entry");
    assert!(RedisServer::exc_text(&entries[0])
        .starts_with("Moved to FailedJobRegistry, due to AbandonedJobError"));
    assert_eq!(redis.zmembers("rq:failed:lost"), vec![long]);
    w.sigterm();
    assert_eq!(w.wait_exit(), Some(0), "{}", w.logs());
}

#[test]
fn worker_frozen_past_its_key_ttl_registers_again() {
    let redis = RedisServer::start();
    let mut w = WorkerCmd::new(&redis)
        .args(&["--queues", "fz", "--concurrency", "2", "--name", "fz"])
        .config("[worker]\nheartbeat_secs = 1\n")
        .spawn();
    redis.wait_worker("fz-1");
    w.signal(libc::SIGSTOP);
    wait_until("the worker keys to expire", || {
        !redis.exists("rq:worker:fz-1") && !redis.exists("rq:worker:fz-2")
    });
    w.signal(libc::SIGCONT);
    wait_until("both slots to register again", || {
        redis.exists("rq:worker:fz-1") && redis.exists("rq:worker:fz-2")
    });
    let v = python_json(
        Py::Rq3,
        &redis,
        "from rq.worker import Worker\nout(sorted(w.name for w in Worker.all(connection=conn)))",
    );
    assert_eq!(v, json!(["fz-1", "fz-2"]));
    let id = enqueue(&redis, &["runq.tasks.noop", "--queue", "fz"]);
    redis.wait_status(&id, "finished");
    w.sigterm();
    assert_eq!(w.wait_exit(), Some(0), "{}", w.logs());
}
