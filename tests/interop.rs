//! runq and Python RQ sharing one Redis, in both directions: Python enqueues and runq
//! runs; runq enqueues and Python runs; Python's registries, `requeue`,
//! `send_shutdown_command`, `Worker.all()` and `rq info` on runq's data; an RQ 1.16
//! client reading what runq wrote. Python RQ 3.0 unless stated.

use runq_tests::*;
use serde_json::json;

/// The queue line of `rq info` output for `queue`: the text after `|`, trimmed.
fn rq_info_queue_line(out: &str, queue: &str) -> String {
    out.lines()
        .find_map(|l| {
            let (name, rest) = l.split_once('|')?;
            (name.trim() == queue).then(|| rest.trim_start_matches('█').trim().to_string())
        })
        .unwrap_or_else(|| panic!("rq info shows no line for queue {queue}:\n{out}"))
}

fn rq_info(py: Py, redis: &RedisServer) -> String {
    py_cli(py, redis, "rq", &["info", "--url", &redis.rq_url()])
        .ok("rq info")
        .stdout
}

#[test]
fn python_enqueued_jobs_run_on_runq_worker() {
    let redis = RedisServer::start();
    python(
        Py::Rq3,
        &redis,
        r#"
        from rq import Queue
        from rq.serializers import JSONSerializer
        args = (1, 'x', 2.5, None, True, [1, 2], {'a': 'b'})
        kwargs = {'k': [1, 2], 'big': 2 ** 40, 'uni': 'ü€'}
        Queue('ip', connection=conn).enqueue('runq.tasks.echo', *args, job_id='py-pickle', **kwargs)
        Queue('ip', connection=conn).enqueue('runq.tasks.fail', 'nope', job_id='py-fail')
        Queue('ij', connection=conn, serializer=JSONSerializer).enqueue(
            'runq.tasks.echo', *args, job_id='py-json', **kwargs)
        "#,
    );
    WorkerCmd::new(&redis)
        .args(&["--queues", "ip,ij", "--concurrency", "2"])
        .run_burst();

    let v = python_json(
        Py::Rq3,
        &redis,
        r#"
        from rq.job import Job
        from rq.serializers import JSONSerializer
        from rq.registry import FinishedJobRegistry, FailedJobRegistry, StartedJobRegistry
        expected = {'args': [1, 'x', 2.5, None, True, [1, 2], {'a': 'b'}],
                    'kwargs': {'k': [1, 2], 'big': 2 ** 40, 'uni': 'ü€'}}
        def info(i, serializer=None):
            j = Job.fetch(i, connection=conn, serializer=serializer)
            r = j.latest_result()
            return {'status': j.get_status().value, 'return_value': j.return_value(),
                    'matches': j.return_value() == expected, 'type': r.type.name,
                    'exc_string': r.exc_string}
        reg = lambda cls, q, s=None: sorted(cls(q, connection=conn, serializer=s).get_job_ids())
        out({
            'py-pickle': info('py-pickle'),
            'py-json': info('py-json', JSONSerializer),
            'py-fail': info('py-fail'),
            'finished_ip': reg(FinishedJobRegistry, 'ip'),
            'failed_ip': reg(FailedJobRegistry, 'ip'),
            'finished_ij': reg(FinishedJobRegistry, 'ij', JSONSerializer),
            'failed_ij': reg(FailedJobRegistry, 'ij', JSONSerializer),
            'started': reg(StartedJobRegistry, 'ip') + reg(StartedJobRegistry, 'ij'),
        })
        "#,
    );
    let echoed = json!({"args": [1, "x", 2.5, null, true, [1, 2], {"a": "b"}],
                        "kwargs": {"k": [1, 2], "big": 1099511627776_i64, "uni": "ü€"}});
    for id in ["py-pickle", "py-json"] {
        assert_eq!(
            v[id],
            json!({"status": "finished", "return_value": echoed, "matches": true, "type": "SUCCESSFUL", "exc_string": null}),
            "{id}"
        );
    }
    assert_eq!(
        v["py-fail"],
        json!({"status": "failed", "return_value": null, "type": "FAILED", "matches": false,
               "exc_string": "RuntimeError: nope"})
    );
    assert_eq!(v["finished_ip"], json!(["py-pickle"]));
    assert_eq!(v["failed_ip"], json!(["py-fail"]));
    assert_eq!(v["finished_ij"], json!(["py-json"]));
    assert_eq!(v["failed_ij"], json!([]));
    assert_eq!(v["started"], json!([]));

    let info = rq_info(Py::Rq3, &redis);
    assert_eq!(
        rq_info_queue_line(&info, "ip"),
        "0, 0 executing, 1 finished, 1 failed",
        "{info}"
    );
    assert_eq!(
        rq_info_queue_line(&info, "ij"),
        "0, 0 executing, 1 finished, 0 failed",
        "{info}"
    );
    assert!(info.contains("0 workers, 2 queues"), "{info}");
}

#[test]
fn python_sees_runq_worker_slots() {
    let redis = RedisServer::start();
    let mut w = WorkerCmd::new(&redis)
        .args(&["--queues", "iq", "--concurrency", "2", "--name", "slotw"])
        .spawn();
    redis.wait_worker("slotw-1");
    redis.wait_worker("slotw-2");
    let workers = format!(
        r#"
        from rq.worker import Worker
        from rq.queue import Queue
        ws = sorted(Worker.all(connection=conn), key=lambda w: w.name)
        out({{
            'names': [w.name for w in ws],
            'states': [w.get_state() for w in ws],
            'queues': [w.queue_names() for w in ws],
            'pids': [w.pid for w in ws],
            'current': [w.get_current_job_id() for w in ws],
            'on_iq': sorted(w.name for w in Worker.all(queue=Queue('iq', connection=conn))),
            'count': Worker.count(connection=conn),
            'pid': {pid},
        }})
        "#,
        pid = w.pid()
    );
    let v = python_json(Py::Rq3, &redis, &workers);
    let pid = w.pid();
    assert_eq!(
        v,
        json!({"names": ["slotw-1", "slotw-2"], "states": ["idle", "idle"], "queues": [["iq"], ["iq"]],
               "pids": [pid, pid], "current": [null, null], "on_iq": ["slotw-1", "slotw-2"], "count": 2, "pid": pid})
    );
    let info = rq_info(Py::Rq3, &redis);
    for name in ["slotw-1", "slotw-2"] {
        let line = info
            .lines()
            .find(|l| l.starts_with(&format!("{name} (")))
            .unwrap_or_else(|| panic!("rq info does not list {name}:\n{info}"));
        assert!(line.contains(&format!(" {pid}): idle iq.")), "{line}");
    }
    // No job was enqueued yet, so `rq:queues` is empty and rq info lists every worker.
    assert!(info.contains("2 workers, 0 queues"), "{info}");

    // While a job runs, its slot is busy with that job as current job.
    let id = enqueue(&redis, &["runq.tasks.sleep", "3", "--queue", "iq"]);
    redis.wait_status(&id, "started");
    let busy_slot = redis.hget(&format!("rq:job:{id}"), "worker_name").unwrap();
    let v = python_json(Py::Rq3, &redis, &workers);
    let slot = if busy_slot == "slotw-1" { 0 } else { 1 };
    assert_eq!(v["states"][slot], "busy", "{v}");
    assert_eq!(v["states"][1 - slot], "idle", "{v}");
    assert_eq!(v["current"][slot], json!(id), "{v}");
    assert_eq!(v["current"][1 - slot], json!(null), "{v}");
    let info = rq_info(Py::Rq3, &redis);
    assert_eq!(
        rq_info_queue_line(&info, "iq"),
        "0, 1 executing, 0 finished, 0 failed",
        "{info}"
    );
    // RQ 3.0's execution records of the running job.
    let v = python_json(
        Py::Rq3,
        &redis,
        &format!(
            r#"
            from rq.job import Job
            from rq.registry import StartedJobRegistry
            ex = Job.fetch('{id}', connection=conn).get_executions()
            reg = StartedJobRegistry('iq', connection=conn)
            out({{'executions': [[e.job_id, e.worker_name, e.created_at <= e.last_heartbeat] for e in ex],
                  'registry': reg.get_job_ids(),
                  'pairs': [list(p) for p in reg.get_job_and_execution_ids()],
                  'ex_ids': [e.id for e in ex]}})
            "#
        ),
    );
    assert_eq!(v["executions"], json!([[id, busy_slot, true]]), "{v}");
    assert_eq!(v["registry"], json!([id]), "{v}");
    assert_eq!(v["pairs"], json!([[id, v["ex_ids"][0]]]), "{v}");
    redis.wait_status(&id, "finished");

    w.sigterm();
    assert_eq!(w.wait_exit(), Some(0), "{}", w.logs());
    let v = python_json(Py::Rq3, &redis, &workers);
    assert_eq!(v["names"], json!([]));
    assert_eq!(v["count"], 0);
}

#[test]
fn python_worker_runs_runq_enqueued_jobs() {
    let redis = RedisServer::start();
    let echo = enqueue(
        &redis,
        &[
            "runq.tasks.echo",
            "1",
            "x",
            "--kwarg",
            "k=[1,2]",
            "--queue",
            "pyq",
        ],
    );
    let fail = enqueue(&redis, &["runq.tasks.fail", "boom", "--queue", "pyq"]);
    let add = enqueue(
        &redis,
        &[
            "mymod.add",
            "2",
            "3",
            "--queue",
            "pyj",
            "--serializer",
            "json",
        ],
    );
    let url = redis.rq_url();
    py_cli(
        Py::Rq3,
        &redis,
        "rq",
        &[
            "worker",
            "--burst",
            "-w",
            "rq.worker.SimpleWorker",
            "--url",
            &url,
            "pyq",
        ],
    )
    .ok("rq worker pyq");
    py_cli(
        Py::Rq3,
        &redis,
        "rq",
        &[
            "worker",
            "--burst",
            "-w",
            "rq.worker.SimpleWorker",
            "--serializer",
            "rq.serializers.JSONSerializer",
            "--url",
            &url,
            "pyj",
        ],
    )
    .ok("rq worker pyj");

    let v = job_json(&redis, &echo);
    assert_eq!(v["status"], "finished", "{v}");
    assert_eq!(v["result_type"], "SUCCESSFUL", "{v}");
    assert_eq!(
        v["return_value"],
        json!({"args": [1, "x"], "kwargs": {"k": [1, 2]}})
    );
    let worker = v["worker_name"].as_str().unwrap();
    assert!(
        worker.len() == 32 && worker.chars().all(|c| c.is_ascii_hexdigit()),
        "worker_name {worker}"
    );

    let v = job_json(&redis, &fail);
    assert_eq!(v["status"], "failed", "{v}");
    assert_eq!(v["result_type"], "FAILED", "{v}");
    let exc = v["exc_string"].as_str().unwrap();
    assert!(
        exc.starts_with("Traceback") && exc.trim_end().ends_with("RuntimeError: boom"),
        "{exc}"
    );

    let v = job_json(&redis, &add);
    assert_eq!(v["status"], "finished", "{v}");
    assert_eq!(v["return_value"], json!(5));
}

#[test]
fn python_requeue_of_a_runq_failed_job_runs_it_again() {
    let redis = RedisServer::start();
    let id = enqueue(
        &redis,
        &[
            "runq.tasks.fail",
            "boom",
            "--queue",
            "rqq",
            "--job-id",
            "rf1",
        ],
    );
    WorkerCmd::new(&redis)
        .args(&["--queues", "rqq", "--concurrency", "1"])
        .run_burst();
    let v = python_json(
        Py::Rq3,
        &redis,
        r#"
        from rq.job import Job
        from rq.queue import Queue
        from rq.registry import FailedJobRegistry
        reg = FailedJobRegistry('rqq', connection=conn)
        before = reg.get_job_ids()
        reg.requeue('rf1')
        out({'before': before, 'after': reg.get_job_ids(),
             'status': Job.fetch('rf1', connection=conn).get_status().value,
             'queue': Queue('rqq', connection=conn).job_ids})
        "#,
    );
    assert_eq!(
        v,
        json!({"before": ["rf1"], "after": [], "status": "queued", "queue": ["rf1"]})
    );

    WorkerCmd::new(&redis)
        .args(&["--queues", "rqq", "--concurrency", "1"])
        .run_burst();
    let entries = redis.results(&id);
    assert_eq!(entries.len(), 2, "two executions, two result entries");
    for e in &entries {
        assert_eq!(String::from_utf8_lossy(&e["type"]), "2");
        assert_eq!(RedisServer::exc_text(e), "RuntimeError: boom");
    }
    assert_ne!(entries[0]["execution_id"], entries[1]["execution_id"]);
    assert_eq!(redis.status(&id).as_deref(), Some("failed"));
    assert_eq!(redis.zmembers("rq:failed:rqq"), vec![id]);
    assert!(redis.lrange("rq:queue:rqq").is_empty());
    assert!(
        redis.ttl("rq:job:rf1") > 31_535_000,
        "failed again: failure TTL applies"
    );
    let v = python_json(
        Py::Rq3,
        &redis,
        r#"
        from rq.job import Job
        from rq.registry import FailedJobRegistry
        j = Job.fetch('rf1', connection=conn)
        out({'results': [r.type.name for r in j.results()], 'exc': j.latest_result().exc_string,
             'failed': FailedJobRegistry('rqq', connection=conn).get_job_ids()})
        "#,
    );
    assert_eq!(
        v,
        json!({"results": ["FAILED", "FAILED"], "exc": "RuntimeError: boom", "failed": ["rf1"]})
    );
}

#[test]
fn shutdown_command_to_one_slot_stops_the_whole_process() {
    let redis = RedisServer::start();
    let id = enqueue(&redis, &["runq.tasks.sleep", "2", "--queue", "sq"]);
    let mut w = WorkerCmd::new(&redis)
        .args(&["--queues", "sq", "--concurrency", "3", "--name", "sd"])
        .spawn();
    redis.wait_status(&id, "started");
    let busy = redis.hget(&format!("rq:job:{id}"), "worker_name").unwrap();
    let idle = ["sd-1", "sd-2", "sd-3"]
        .into_iter()
        .find(|n| *n != busy)
        .unwrap();
    redis.wait_subscribed(idle);
    python(
        Py::Rq3,
        &redis,
        &format!(
            "from rq.command import send_shutdown_command\nsend_shutdown_command(conn, '{idle}')"
        ),
    );
    assert_eq!(w.wait_exit(), Some(0), "{}", w.logs());
    // Warm: the running job finished on its own slot.
    assert_eq!(redis.status(&id).as_deref(), Some("finished"));
    assert!(redis.smembers("rq:workers").is_empty());
}

#[test]
fn shutdown_command_to_every_slot_exits_zero() {
    let redis = RedisServer::start();
    let mut w = WorkerCmd::new(&redis)
        .args(&["--queues", "sq", "--concurrency", "2", "--name", "sa"])
        .spawn();
    for n in ["sa-1", "sa-2"] {
        redis.wait_worker(n);
        redis.wait_subscribed(n);
    }
    let v = python_json(
        Py::Rq3,
        &redis,
        r#"
        from rq.command import send_shutdown_command
        from rq.worker import Worker
        names = sorted(w.name for w in Worker.all(connection=conn))
        for n in names:
            send_shutdown_command(conn, n)
        out(names)
        "#,
    );
    assert_eq!(v, json!(["sa-1", "sa-2"]));
    assert_eq!(w.wait_exit(), Some(0), "{}", w.logs());
    let v = python_json(
        Py::Rq3,
        &redis,
        "from rq.worker import Worker\nout([w.name for w in Worker.all(connection=conn)])",
    );
    assert_eq!(v, json!([]));
}

#[test]
fn rq116_reads_runq_jobs_results_and_workers() {
    let redis = RedisServer::start();
    let ok = enqueue(
        &redis,
        &[
            "runq.tasks.echo",
            "1",
            "x",
            "--kwarg",
            "k=[1,2]",
            "--queue",
            "old",
        ],
    );
    let bad = enqueue(&redis, &["runq.tasks.fail", "boom", "--queue", "old"]);
    WorkerCmd::new(&redis)
        .args(&["--queues", "old", "--concurrency", "1"])
        .run_burst();
    let mut w = WorkerCmd::new(&redis)
        .args(&["--queues", "old", "--concurrency", "1", "--name", "old116"])
        .spawn();
    redis.wait_worker("old116");

    let v = python_json(
        Py::Rq116,
        &redis,
        &format!(
            r#"
            import rq
            from rq.job import Job
            from rq.worker import Worker
            from rq.registry import FinishedJobRegistry, FailedJobRegistry
            j = Job.fetch('{ok}', connection=conn)
            f = Job.fetch('{bad}', connection=conn)
            ws = Worker.all(connection=conn)
            out({{
                'version': rq.__version__,
                'status': j.get_status(), 'result': j.result, 'return_value': j.return_value(),
                'type': j.latest_result().type.name, 'latest_value': j.latest_result().return_value,
                'func_name': j.func_name, 'origin': j.origin,
                'failed_status': f.get_status(), 'failed_type': f.latest_result().type.name,
                'failed_exc': f.latest_result().exc_string,
                'finished': FinishedJobRegistry('old', connection=conn).get_job_ids(),
                'failed': FailedJobRegistry('old', connection=conn).get_job_ids(),
                'workers': [w.name for w in ws], 'worker_queues': [w.queue_names() for w in ws],
                'worker_states': [w.get_state() for w in ws],
            }})
            "#
        ),
    );
    let echoed = json!({"args": [1, "x"], "kwargs": {"k": [1, 2]}});
    assert_eq!(
        v,
        json!({
            "version": "1.16.2",
            "status": "finished", "result": echoed, "return_value": echoed,
            "type": "SUCCESSFUL", "latest_value": echoed,
            "func_name": "runq.tasks.echo", "origin": "old",
            "failed_status": "failed", "failed_type": "FAILED", "failed_exc": "RuntimeError: boom",
            "finished": [ok], "failed": [bad],
            "workers": ["old116"], "worker_queues": [["old"]], "worker_states": ["idle"],
        })
    );
    let info = rq_info(Py::Rq116, &redis);
    assert_eq!(
        rq_info_queue_line(&info, "old"),
        "0, 0 executing, 1 finished, 1 failed",
        "{info}"
    );
    assert!(
        info.lines()
            .any(|l| l.starts_with("old116 (") && l.contains("idle old")),
        "{info}"
    );
    w.sigterm();
    assert_eq!(w.wait_exit(), Some(0), "{}", w.logs());
}

#[test]
fn python_and_runq_workers_share_a_queue_without_running_a_job_twice() {
    let redis = RedisServer::start();
    const N: usize = 80;
    python(
        Py::Rq3,
        &redis,
        r#"
        from rq import Queue
        q = Queue('shared', connection=conn)
        q.enqueue_many([Queue.prepare_data('runq.tasks.sleep', (0.05,), job_id='s%03d' % i) for i in range(80)])
        "#,
    );
    // Python first (alone it needs 4 s for the queue), then runq joins while it works.
    let dir = TempDir::new("shared");
    let log = dir.path().join("rq-worker.log");
    let url = redis.rq_url();
    let mut py_worker = py_cli_spawn(
        Py::Rq3,
        &redis,
        "rq",
        &[
            "worker",
            "--burst",
            "-w",
            "rq.worker.SimpleWorker",
            "--name",
            "pyw",
            "--url",
            &url,
            "shared",
        ],
        &log,
    );
    redis.wait_worker("pyw");
    let mut runq_worker = WorkerCmd::new(&redis)
        .args(&[
            "--queues",
            "shared",
            "--concurrency",
            "3",
            "--name",
            "share",
            "--burst",
        ])
        .spawn();
    assert_eq!(runq_worker.wait_exit(), Some(0), "{}", runq_worker.logs());
    let status = wait_exit_logged(&mut py_worker, &log);
    assert!(
        status.success(),
        "rq worker: {status}\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    let (mut by_runq, mut by_python) = (0, 0);
    for i in 0..N {
        let id = format!("s{i:03}");
        assert_eq!(redis.status(&id).as_deref(), Some("finished"), "{id}");
        assert_eq!(redis.results(&id).len(), 1, "{id} ran more than once");
        match redis
            .hget(&format!("rq:job:{id}"), "worker_name")
            .unwrap_or_default()
            .as_str()
        {
            "pyw" => by_python += 1,
            w if w.starts_with("share-") => by_runq += 1,
            other => panic!("{id} ran on unknown worker {other}"),
        }
    }
    assert!(
        by_runq > 0 && by_python > 0,
        "runq ran {by_runq}, Python {by_python}"
    );
    assert_eq!(redis.zrange("rq:finished:shared").len(), N);
    assert!(redis.zrange("rq:wip:shared").is_empty());
    assert!(redis.lrange("rq:queue:shared").is_empty());
    assert!(redis.lrange("rq:queue:shared:intermediate").is_empty());
}

#[test]
fn rq116_sees_the_current_job_of_a_busy_runq_worker() {
    let redis = RedisServer::start();
    let id = enqueue(&redis, &["runq.tasks.sleep", "3", "--queue", "busy"]);
    let mut w = WorkerCmd::new(&redis)
        .args(&["--queues", "busy", "--concurrency", "1", "--name", "b116"])
        .spawn();
    redis.wait_status(&id, "started");
    let v = python_json(
        Py::Rq116,
        &redis,
        r#"
        from rq.worker import Worker
        w = Worker.find_by_key('rq:worker:b116', connection=conn)
        out({'state': w.get_state(), 'current': w.get_current_job_id(),
             'job_status': w.get_current_job().get_status()})
        "#,
    );
    assert_eq!(
        v,
        json!({"state": "busy", "current": id, "job_status": "started"})
    );
    redis.wait_status(&id, "finished");
    w.sigterm();
    assert_eq!(w.wait_exit(), Some(0), "{}", w.logs());
}

#[test]
fn custom_key_prefix_is_shared_with_python() {
    let redis = RedisServer::start();
    let env = [("RQ_KEY_PREFIX", "myrq")];
    let out = runq_env(
        &redis.url(),
        &["enqueue", "runq.tasks.echo", "ours", "--queue", "pq"],
        &env,
    )
    .ok("runq enqueue");
    let ours = out.last_line().to_string();
    python_env(
        Py::Rq3,
        &redis,
        "from rq import Queue\nQueue('pq', connection=conn).enqueue('runq.tasks.echo', 'theirs', job_id='py-pre')",
        &env,
    );
    let mut w = WorkerCmd::new(&redis)
        .args(&["--queues", "pq", "--concurrency", "1", "--name", "pre"])
        .env("RQ_KEY_PREFIX", "myrq")
        .spawn();
    redis.wait_field(&format!("myrq:job:{ours}"), "status", "finished");
    redis.wait_field("myrq:job:py-pre", "status", "finished");
    let code = format!(
        r#"
        from rq.job import Job
        from rq.queue import Queue
        from rq.worker import Worker
        from rq.registry import FinishedJobRegistry
        out({{'values': [Job.fetch(i, connection=conn).return_value() for i in ['{ours}', 'py-pre']],
              'finished': sorted(FinishedJobRegistry('pq', connection=conn).get_job_ids()),
              'queues': [q.name for q in Queue.all(connection=conn)],
              'workers': [w.name for w in Worker.all(connection=conn)]}})
        "#
    );
    let v: serde_json::Value = serde_json::from_str(
        python_env(Py::Rq3, &redis, &code, &env)
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    let mut finished = vec![ours.clone(), "py-pre".to_string()];
    finished.sort();
    assert_eq!(
        v,
        json!({"values": [{"args": ["ours"], "kwargs": {}}, {"args": ["theirs"], "kwargs": {}}],
               "finished": finished, "queues": ["pq"], "workers": ["pre"]})
    );
    redis.wait_channel("myrq:pubsub:pre");
    python_env(
        Py::Rq3,
        &redis,
        "from rq.command import send_shutdown_command\nsend_shutdown_command(conn, 'pre')",
        &env,
    );
    assert_eq!(w.wait_exit(), Some(0), "{}", w.logs());
    let stray: Vec<String> = redis.conn().keys("rq:*").unwrap();
    assert!(stray.is_empty(), "keys outside the prefix: {stray:?}");
}
