//! Python task functions under runq-worker's Python task host (`[python]`), end to end:
//! real redis-server, jobs enqueued by Python rq 3.0.0 with pickled arguments, run by
//! `runq-worker` in children forked from one preloaded host (tests/py/pytasks.py), read
//! back with rq. rq's API inside the job, the key prefix, preloading once, timeouts /
//! stop-job / kill-horse / cold shutdown killing SIGTERM-proof process groups, warm
//! shutdown, the stopped callback, the host or the worker dying under a job, bad preload
//! modules, crashing children, output forwarding, two workers on one queue, dependencies,
//! retries, callbacks and a returned rq.Retry (compared with rq's own Worker), run state
//! (NoDb lock, RedisPrep, status lines), unknown or unimportable functions, JSON and
//! msgpack serializers.

use runq_tests::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

// ---------------------------------------------------------------------------------------
// Helpers

/// tests/py: where pytasks.py lives (the host's `path`).
fn py_dir() -> PathBuf {
    repo_root().join("tests/py")
}

fn toml_str(s: &str) -> String {
    serde_json::to_string(s).expect("a TOML basic string")
}

fn toml_list(items: &[&str]) -> String {
    serde_json::to_string(items).expect("a TOML array of strings")
}

/// A worker config: `[worker]` with a 1 s heartbeat and `worker_extra`, then `[python]`
/// running the rq 3.0 venv's interpreter on tests/py with `preload` and `functions`, then
/// `rest` (more tables).
fn config_with(worker_extra: &str, preload: &[&str], functions: &[&str], rest: &str) -> String {
    let python = Py::Rq3.python();
    format!(
        "[worker]\nheartbeat_secs = 1\nmaintenance_secs = 1\n{worker_extra}\n\n\
         [python]\ncommand = [{}]\npath = [{}]\npreload = {}\nfunctions = {}\n\n{rest}\n",
        toml_str(python.to_str().expect("utf-8 path")),
        toml_str(py_dir().to_str().expect("utf-8 path")),
        toml_list(preload),
        toml_list(functions),
    )
}

/// The usual config: pytasks preloaded, every `pytasks.*` function runs in Python.
fn config(worker_extra: &str) -> String {
    config_with(worker_extra, &["pytasks"], &["pytasks.*"], "")
}

/// A worker on `queues` with `config`.
fn worker<'a>(redis: &'a RedisServer, config: &str, queues: &str) -> WorkerCmd<'a> {
    WorkerCmd::new(redis)
        .config(config)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .args(&["--queues", queues])
}

/// Runs a Python snippet that enqueues (with `from rq import Queue` etc. at hand).
fn py(redis: &RedisServer, code: &str) -> String {
    python(Py::Rq3, redis, code)
}

fn py_json(redis: &RedisServer, code: &str) -> Value {
    python_json(Py::Rq3, redis, code)
}

/// Status and failure text of a job as Python rq reads them.
fn py_job(redis: &RedisServer, id: &str) -> Value {
    py_json(
        redis,
        &format!(
            r#"
            from rq.job import Job
            j = Job.fetch({id:?}, connection=conn)
            r = j.latest_result()
            out({{'status': j.get_status().value, 'exc_string': r.exc_string if r else None,
                  'type': r.type.name if r else None}})
            "#
        ),
    )
}

/// The failure text of a job (rq's latest result), asserting there is one.
fn exc_string(redis: &RedisServer, id: &str) -> String {
    let v = py_job(redis, id);
    v["exc_string"]
        .as_str()
        .unwrap_or_else(|| panic!("{id} has no exc_string: {v}"))
        .to_string()
}

/// Running and not a zombie (a zombie has been killed; only its parent has not reaped it).
fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 sends nothing; it only checks that the process exists.
    if unsafe { libc::kill(pid, 0) } != 0 {
        return std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH);
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
        Err(_) => false,
    }
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The pids `pytasks.stubborn(pidfile)` wrote: [child, grandchild], both running.
fn wait_pids(pidfile: &Path) -> Vec<i32> {
    let grandchild = PathBuf::from(format!("{}.grandchild", pidfile.display()));
    let pids = wait_for("the job's child and grandchild to write their pids", || {
        Some(vec![read_pid(pidfile)?, read_pid(&grandchild)?])
    });
    for pid in &pids {
        assert!(*pid > 1 && alive(*pid), "pid {pid} is not running");
    }
    pids
}

fn wait_gone(pids: &[i32]) {
    for pid in pids {
        wait_until(&format!("process {pid} to be killed"), || !alive(*pid));
    }
}

fn ppid_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(") ")?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// The worker's child whose command line names runq_host.py: the Python task host.
fn host_pid(worker: u32) -> Option<i32> {
    let worker = worker as i32;
    std::fs::read_dir("/proc").ok()?.find_map(|entry| {
        let pid: i32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
        if ppid_of(pid)? != worker || !alive(pid) {
            return None;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        String::from_utf8_lossy(&cmdline)
            .contains("runq_host.py")
            .then_some(pid)
    })
}

/// Enqueues `pytasks.stubborn(pidfile, ignore_alarm)` on `queue` as `id`, with an
/// optional timeout.
fn enqueue_stubborn(
    redis: &RedisServer,
    queue: &str,
    id: &str,
    pidfile: &Path,
    ignore_alarm: bool,
    timeout: Option<u32>,
) {
    let timeout = timeout.map_or("None".to_string(), |t| t.to_string());
    let alarm = if ignore_alarm { "True" } else { "False" };
    py(
        redis,
        &format!(
            r#"
            from rq import Queue
            Queue({queue:?}, connection=conn).enqueue('pytasks.stubborn', {pidfile:?}, {alarm},
                                                      job_id={id:?}, job_timeout={timeout})
            "#,
            pidfile = pidfile.to_str().expect("utf-8 path"),
        ),
    );
}

/// Collects the lines published on `channel` (DB 2) in a thread until one reports
/// COMPLETED or EXCEPTION (or nothing arrives for [`WAIT`]). Returns once subscribed.
fn collect_lines(redis: &RedisServer, channel: &str) -> std::thread::JoinHandle<Vec<String>> {
    let mut conn = redis.conn_db(2);
    let name = channel.to_string();
    let handle = std::thread::spawn(move || {
        let mut ps = conn.as_pubsub();
        ps.subscribe(&name).expect("SUBSCRIBE");
        ps.set_read_timeout(Some(WAIT)).expect("read timeout");
        let mut lines = Vec::new();
        while let Ok(msg) = ps.get_message() {
            let line: String = msg.get_payload().expect("text line");
            let last = line.contains(" COMPLETED ") || line.contains(" EXCEPTION ");
            lines.push(line);
            if last {
                break;
            }
        }
        lines
    });
    redis.wait_channel(channel);
    handle
}

// ---------------------------------------------------------------------------------------
// rq's API inside the job; real Python return values

#[test]
fn rq_api_works_inside_the_job_and_the_return_value_is_the_python_object() {
    let redis = RedisServer::start();
    py(
        &redis,
        r#"
        import datetime, decimal
        from rq import Queue
        Queue('pa', connection=conn).enqueue(
            'pytasks.inspect_job', datetime.date(2024, 2, 28), decimal.Decimal('1.10'),
            ['a', 'b'], 'pa', job_id='api-1', description='as enqueued')
        "#,
    );
    let logs = worker(&redis, &config(""), "pa").run_burst();

    let v = py_json(
        &redis,
        r#"
        import datetime, decimal
        from rq.job import Job
        from rq.registry import FinishedJobRegistry
        j = Job.fetch('api-1', connection=conn)
        rv = j.return_value()
        child = Job.fetch('api-1-child', connection=conn)
        out({
            'status': j.get_status().value,
            'meta': j.meta,
            'description': j.description,
            'rv_keys': sorted(rv),
            'id': rv['id'], 'func_name': rv['func_name'], 'status_inside': rv['status'],
            'origin': rv['origin'], 'worker_name': rv['worker_name'],
            'worker_name_after': j.worker_name,
            'env': [rv['env_job_id'], rv['rq_job_id']],
            'args_equal': rv['args'] == (datetime.date(2024, 2, 28), decimal.Decimal('1.10'), ['a', 'b'], 'pa'),
            'tags': [type(rv['tags']).__name__, sorted(rv['tags'])],
            'when': [type(rv['when']).__name__, rv['when'] == datetime.datetime(2024, 2, 28, 12, 30, tzinfo=datetime.timezone.utc)],
            'amount': [type(rv['amount']).__name__, str(rv['amount'])],
            'child': [rv['child'], child.get_status().value, child.return_value(), child.origin],
            'finished': sorted(FinishedJobRegistry('pa', connection=conn).get_job_ids()),
        })
        "#,
    );
    assert_eq!(v["status"], "finished", "{v}\n{logs}");
    // save_meta() and job.save() from inside the job both survive completion.
    assert_eq!(
        v["meta"],
        json!({"progress": 42, "seen_id": "api-1", "saved_by_save": true}),
        "{v}"
    );
    assert_eq!(v["description"], "described inside the job", "{v}");
    assert_eq!(v["id"], "api-1", "get_current_job().id: {v}");
    assert_eq!(v["func_name"], "pytasks.inspect_job", "{v}");
    assert_eq!(v["status_inside"], "started", "{v}");
    assert_eq!(v["origin"], "pa", "{v}");
    assert!(
        v["worker_name"].as_str().is_some_and(|n| !n.is_empty())
            && v["worker_name"] == v["worker_name_after"],
        "{v}"
    );
    assert_eq!(v["env"], json!(["api-1", "api-1"]), "{v}");
    assert_eq!(
        v["args_equal"], true,
        "job.args keep their Python types: {v}"
    );
    assert_eq!(v["tags"], json!(["set", ["a", "b", "seen"]]), "{v}");
    assert_eq!(v["when"], json!(["datetime", true]), "{v}");
    assert_eq!(v["amount"], json!(["Decimal", "2.20"]), "{v}");
    // The job enqueued from inside the job ran too.
    assert_eq!(
        v["child"],
        json!(["api-1-child", "finished", 42, "pa"]),
        "{v}"
    );
    assert_eq!(v["finished"], json!(["api-1", "api-1-child"]), "{v}");
}

#[test]
fn custom_key_prefix_reaches_rq_inside_the_job() {
    let redis = RedisServer::start();
    python_env(
        Py::Rq3,
        &redis,
        r#"
        import datetime, decimal
        from rq import Queue
        Queue('px', connection=conn).enqueue(
            'pytasks.inspect_job', datetime.date(2024, 2, 28), decimal.Decimal('1'), [], 'px',
            job_id='pfx-1')
        "#,
        &[("RQ_KEY_PREFIX", "wepp")],
    );
    let cfg = format!("[redis]\nprefix = \"wepp\"\n{}", config(""));
    let logs = worker(&redis, &cfg, "px").run_burst();
    // save_meta() and the enqueue inside the job used the worker's prefix.
    let v = python_env(
        Py::Rq3,
        &redis,
        r#"
        from rq.job import Job
        j = Job.fetch('pfx-1', connection=conn)
        c = Job.fetch('pfx-1-child', connection=conn)
        out([j.get_status().value, j.meta.get('progress'), c.get_status().value, c.return_value(),
             sorted(k.decode() for k in conn.keys('rq:*'))])
        "#,
        &[("RQ_KEY_PREFIX", "wepp")],
    );
    let v: Value = serde_json::from_str(v.lines().last().unwrap_or("")).expect("JSON");
    assert_eq!(v, json!(["finished", 42, "finished", 42, []]), "{logs}");
}

// ---------------------------------------------------------------------------------------
// Preloading

#[test]
fn preload_module_is_imported_once_for_many_jobs() {
    let redis = RedisServer::start();
    let dir = TempDir::new("py-preload");
    let log = dir.path().join("imports.log");
    py(
        &redis,
        r#"
        from rq import Queue
        q = Queue('pp', connection=conn)
        for i in range(20):
            q.enqueue('pytasks.add', i, 1000, job_id='pre-%d' % i)
        "#,
    );
    let logs = worker(&redis, &config(""), "pp")
        .env("PYTASKS_IMPORT_LOG", log.to_str().expect("utf-8 path"))
        .args(&["--concurrency", "2"])
        .run_burst();
    let v = py_json(
        &redis,
        r#"
        from rq.job import Job
        out([[Job.fetch('pre-%d' % i, connection=conn).get_status().value,
              Job.fetch('pre-%d' % i, connection=conn).return_value()] for i in range(20)])
        "#,
    );
    let expected: Vec<Value> = (0..20).map(|i| json!(["finished", i + 1000])).collect();
    assert_eq!(v, json!(expected), "{logs}");
    let lines: Vec<String> = std::fs::read_to_string(&log)
        .expect("the preload module wrote its import log")
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(lines.len(), 1, "imported more than once: {lines:?}\n{logs}");
    // ... and by the host itself, before any fork.
    let host = logs
        .lines()
        .find(|l| l.contains("Python task host ready"))
        .and_then(|l| l.split("pid=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no `Python task host ready pid=` line:\n{logs}"));
    assert_eq!(lines[0], host, "{logs}");
}

// ---------------------------------------------------------------------------------------
// Killing process groups: timeout, stop-job, cold shutdown

#[test]
fn timeout_fails_the_job_and_kills_the_sigterm_proof_group() {
    let redis = RedisServer::start();
    let dir = TempDir::new("py-timeout");
    let pidfile = dir.path().join("pids");
    enqueue_stubborn(&redis, "pt", "to-1", &pidfile, false, Some(2));
    let mut w = worker(&redis, &config(""), "pt").spawn();
    let pids = wait_pids(&pidfile);
    redis.wait_status("to-1", "failed");
    let exc = exc_string(&redis, "to-1");
    // Python's own JobTimeoutException (SIGALRM in the child), as under rq.
    assert!(
        exc.starts_with("Traceback (most recent call last):")
            && exc.contains("JobTimeoutException: Task exceeded maximum timeout value (2 seconds)"),
        "{exc}\n{}",
        w.logs()
    );
    wait_gone(&pids);
    assert!(w.running(), "the worker carries on\n{}", w.logs());
}

#[test]
fn timeout_of_a_child_that_ignores_sigalrm_kills_the_group_from_the_worker() {
    let redis = RedisServer::start();
    let dir = TempDir::new("py-timeout-alarm");
    let pidfile = dir.path().join("pids");
    enqueue_stubborn(&redis, "pu", "to-2", &pidfile, true, Some(2));
    let mut w = worker(&redis, &config(""), "pu").spawn();
    let pids = wait_pids(&pidfile);
    redis.wait_status("to-2", "failed");
    let exc = exc_string(&redis, "to-2");
    assert!(
        exc.starts_with("JobTimeoutException: Task exceeded maximum timeout value (2 seconds)"),
        "{exc}\n{}",
        w.logs()
    );
    wait_gone(&pids);
    assert!(w.running(), "the worker carries on\n{}", w.logs());
}

#[test]
fn stop_job_from_python_stops_the_job_and_kills_the_sigterm_proof_group() {
    let redis = RedisServer::start();
    let dir = TempDir::new("py-stop");
    let pidfile = dir.path().join("pids");
    enqueue_stubborn(&redis, "ps", "stop-1", &pidfile, false, None);
    let mut w = worker(&redis, &config(""), "ps")
        .args(&["--name", "pystop", "--concurrency", "1"])
        .spawn();
    redis.wait_subscribed("pystop");
    let pids = wait_pids(&pidfile);
    py(
        &redis,
        "from rq.command import send_stop_job_command\nsend_stop_job_command(conn, 'stop-1')",
    );
    redis.wait_status("stop-1", "stopped");
    wait_gone(&pids);
    let v = py_job(&redis, "stop-1");
    assert_eq!(v["status"], "stopped", "{v}");
    assert_eq!(
        v["exc_string"], "Job stopped by user, work-horse terminated.",
        "{v}"
    );
    assert!(w.running(), "the worker carries on\n{}", w.logs());
    // rq's kill-horse command kills the next one's group too, failing it.
    let pidfile2 = dir.path().join("pids2");
    enqueue_stubborn(&redis, "ps", "kill-1", &pidfile2, false, None);
    let pids = wait_pids(&pidfile2);
    py(
        &redis,
        "from rq.command import send_kill_horse_command\nsend_kill_horse_command(conn, 'pystop')",
    );
    redis.wait_status("kill-1", "failed");
    wait_gone(&pids);
    let exc = exc_string(&redis, "kill-1");
    assert!(
        exc.starts_with("Work-horse terminated unexpectedly"),
        "{exc}"
    );
    // ... and the worker runs the next job.
    py(
        &redis,
        "from rq import Queue\nQueue('ps', connection=conn).enqueue('pytasks.add', 1, 2, job_id='stop-next')",
    );
    redis.wait_status("stop-next", "finished");
    assert!(w.running(), "the worker carries on\n{}", w.logs());
}

#[test]
fn cold_shutdown_by_two_sigterms_kills_the_group_and_requeues_the_job() {
    let redis = RedisServer::start();
    let dir = TempDir::new("py-cold");
    let pidfile = dir.path().join("pids");
    enqueue_stubborn(&redis, "pc", "cold-1", &pidfile, false, None);
    let mut w = worker(&redis, &config("shutdown_grace_secs = 30"), "pc").spawn();
    let pids = wait_pids(&pidfile);
    let host = wait_for("the Python task host", || host_pid(w.pid()));
    w.sigterm();
    // A second signal at least 1 s after the first means cold (as RQ).
    std::thread::sleep(Duration::from_millis(1500));
    w.sigterm();
    assert_eq!(w.wait_exit(), Some(0), "{}", w.logs());
    // The worker exits only once the job's processes are gone.
    for pid in &pids {
        assert!(!alive(*pid), "pid {pid} outlived the worker\n{}", w.logs());
    }
    // interrupted_jobs = "requeue" (the default): back at the front of its queue.
    assert_eq!(redis.lrange("rq:queue:pc"), vec!["cold-1".to_string()]);
    assert_eq!(redis.status("cold-1").as_deref(), Some("queued"));
    // Nothing of the host is left either.
    assert!(!alive(host), "the host (pid {host}) outlived the worker");
}

#[test]
fn cold_shutdown_when_the_grace_runs_out_kills_the_group_and_fails_the_job() {
    let redis = RedisServer::start();
    let dir = TempDir::new("py-cold-fail");
    let pidfile = dir.path().join("pids");
    enqueue_stubborn(&redis, "pf", "cold-2", &pidfile, false, None);
    let mut w = worker(
        &redis,
        &config("shutdown_grace_secs = 1\ninterrupted_jobs = \"fail\""),
        "pf",
    )
    .spawn();
    let pids = wait_pids(&pidfile);
    w.sigterm();
    assert_eq!(w.wait_exit(), Some(0), "{}", w.logs());
    for pid in &pids {
        assert!(!alive(*pid), "pid {pid} outlived the worker\n{}", w.logs());
    }
    let v = py_job(&redis, "cold-2");
    assert_eq!(v["status"], "failed", "{v}\n{}", w.logs());
    assert!(
        v["exc_string"]
            .as_str()
            .is_some_and(|e| e.contains("shut down")),
        "{v}"
    );
    assert!(redis.lrange("rq:queue:pf").is_empty());
}

#[test]
fn warm_shutdown_lets_a_running_python_job_finish() {
    let redis = RedisServer::start();
    py(
        &redis,
        "from rq import Queue\nQueue('pw', connection=conn).enqueue('pytasks.sleep', 1.5, job_id='warm-1')",
    );
    let mut w = worker(&redis, &config("shutdown_grace_secs = 20"), "pw").spawn();
    redis.wait_status("warm-1", "started");
    w.sigterm();
    assert_eq!(w.wait_exit(), Some(0), "{}", w.logs());
    let v = py_json(
        &redis,
        "from rq.job import Job\nj = Job.fetch('warm-1', connection=conn)\nout([j.get_status().value, j.return_value()])",
    );
    assert_eq!(v, json!(["finished", 1.5]), "{}", w.logs());
}

#[test]
fn stop_job_runs_the_jobs_stopped_callback() {
    let redis = RedisServer::start();
    let dir = TempDir::new("py-stop-cb");
    let pidfile = dir.path().join("pids");
    py(
        &redis,
        &format!(
            r#"
            from rq import Queue, Callback
            Queue('pv', connection=conn).enqueue('pytasks.stubborn', {:?}, job_id='stopcb-1',
                                                 on_stopped=Callback('pytasks.mark_stopped'))
            "#,
            pidfile.to_str().expect("utf-8 path")
        ),
    );
    let w = worker(&redis, &config(""), "pv")
        .args(&["--name", "pystopcb", "--concurrency", "1"])
        .spawn();
    redis.wait_subscribed("pystopcb");
    let pids = wait_pids(&pidfile);
    py(
        &redis,
        "from rq.command import send_stop_job_command\nsend_stop_job_command(conn, 'stopcb-1')",
    );
    redis.wait_status("stopcb-1", "stopped");
    wait_gone(&pids);
    // rq's forking Worker runs it in the parent (worker_classes.py, _handle_stopped_job).
    wait_until("the stopped callback's marker", || {
        redis.exists("marker:stopped:stopcb-1")
    });
    drop(w);
}

// ---------------------------------------------------------------------------------------
// The host dying

#[test]
fn host_killed_mid_job_fails_the_job_and_is_restarted() {
    let redis = RedisServer::start();
    let dir = TempDir::new("py-host-kill");
    let pidfile = dir.path().join("pids");
    enqueue_stubborn(&redis, "ph", "hk-1", &pidfile, false, None);
    let mut w = worker(&redis, &config(""), "ph")
        .args(&["--concurrency", "1"])
        .spawn();
    let pids = wait_pids(&pidfile);
    let host = wait_for("the Python task host", || host_pid(w.pid()));
    // The job's child is the host's.
    assert_eq!(ppid_of(pids[0]), Some(host));
    // SAFETY: kill(2) on the host process found above (a child of our worker).
    unsafe {
        libc::kill(host, libc::SIGKILL);
    }
    redis.wait_status("hk-1", "failed");
    let exc = exc_string(&redis, "hk-1");
    assert!(
        exc.contains(&format!("the Python task host (pid {host})"))
            && exc.contains("signal 9")
            && exc.contains("while the job ran"),
        "{exc}\n{}",
        w.logs()
    );
    // The job's process group died with the host.
    wait_gone(&pids);
    // A new host, and the worker stays up and runs the next job in it.
    let again = wait_for("a restarted Python task host", || {
        host_pid(w.pid()).filter(|p| *p != host)
    });
    assert!(!alive(host));
    py(
        &redis,
        "from rq import Queue\nQueue('ph', connection=conn).enqueue('pytasks.add', 2, 3, job_id='hk-2')",
    );
    redis.wait_status("hk-2", "finished");
    let v = py_json(
        &redis,
        "from rq.job import Job\nout(Job.fetch('hk-2', connection=conn).return_value())",
    );
    assert_eq!(v, json!(5));
    assert_eq!(host_pid(w.pid()), Some(again));
    assert!(w.running(), "the worker carries on\n{}", w.logs());
}

#[test]
fn worker_killed_by_sigkill_takes_the_host_and_the_jobs_group_down() {
    let redis = RedisServer::start();
    let dir = TempDir::new("py-worker-kill");
    let pidfile = dir.path().join("pids");
    enqueue_stubborn(&redis, "pq", "wk-1", &pidfile, false, None);
    let mut w = worker(&redis, &config(""), "pq").spawn();
    let mut pids = wait_pids(&pidfile);
    pids.push(wait_for("the Python task host", || host_pid(w.pid())));
    w.kill9();
    // The host sees its input close and kills every job's group before it exits.
    wait_gone(&pids);
}

// ---------------------------------------------------------------------------------------
// Start-up errors

fn start_with_preload(redis: &RedisServer, module: &str) -> Output {
    let dir = TempDir::new("py-bad-preload");
    let file = dir.path().join("queues.toml");
    std::fs::write(
        &file,
        config_with("", &["pytasks", module], &["pytasks.*"], ""),
    )
    .expect("write config");
    worker_output(
        &redis.url(),
        &["--config", file.to_str().expect("utf-8 path"), "--burst"],
    )
}

#[test]
fn preload_module_that_raises_stops_the_worker_with_one_line() {
    let redis = RedisServer::start();
    let out = start_with_preload(&redis, "pytasks_bad");
    assert!(!out.status.success(), "{out:?}");
    let stderr = out.stderr.trim();
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("pytasks_bad")
            && stderr.contains("RuntimeError: pytasks_bad refuses to be imported"),
        "{stderr}"
    );
    // It never registered.
    assert!(redis.smembers("rq:workers").is_empty());
}

#[test]
fn preload_module_that_does_not_exist_stops_the_worker_with_one_line() {
    let redis = RedisServer::start();
    let out = start_with_preload(&redis, "pytasks_no_such_module");
    assert!(!out.status.success(), "{out:?}");
    let stderr = out.stderr.trim();
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains(
            "pytasks_no_such_module': ModuleNotFoundError: No module named 'pytasks_no_such_module'"
        ),
        "{stderr}"
    );
    assert!(redis.smembers("rq:workers").is_empty());
}

// ---------------------------------------------------------------------------------------
// Crashing children, output

#[test]
fn segfault_and_abort_fail_with_rqs_dead_horse_text_and_the_next_job_runs() {
    let redis = RedisServer::start();
    py(
        &redis,
        r#"
        from rq import Queue
        q = Queue('pk', connection=conn)
        q.enqueue('pytasks.segfault', job_id='crash-segv')
        q.enqueue('pytasks.abort', job_id='crash-abort')
        q.enqueue('pytasks.add', 40, 2, job_id='crash-next')
        "#,
    );
    let logs = worker(&redis, &config(""), "pk")
        .args(&["--concurrency", "1"])
        .run_burst();
    for (id, sig) in [
        ("crash-segv", libc::SIGSEGV),
        ("crash-abort", libc::SIGABRT),
    ] {
        let v = py_job(&redis, id);
        assert_eq!(v["status"], "failed", "{v}\n{logs}");
        let exc = v["exc_string"].as_str().unwrap_or_default();
        assert!(
            exc.starts_with("Work-horse terminated unexpectedly; waitpid returned ")
                && exc.contains(&format!("(signal {sig})")),
            "{id}: {exc}"
        );
    }
    let v = py_json(
        &redis,
        "from rq.job import Job\nj = Job.fetch('crash-next', connection=conn)\nout([j.get_status().value, j.return_value()])",
    );
    assert_eq!(v, json!(["finished", 42]), "{logs}");
}

#[test]
fn child_output_reaches_the_worker_log_tagged_with_the_job_id() {
    let redis = RedisServer::start();
    py(
        &redis,
        r#"
        from rq import Queue
        Queue('po', connection=conn).enqueue('pytasks.chatty', 'mark-7f3a', job_id='chat-1')
        "#,
    );
    let logs = worker(&redis, &config(""), "po").run_burst();
    assert_eq!(redis.status("chat-1").as_deref(), Some("finished"));
    for (text, stream) in [
        ("out line mark-7f3a", "stdout"),
        ("err line mark-7f3a", "stderr"),
        ("last line without newline mark-7f3a", "stdout"),
    ] {
        assert!(
            logs.lines().any(|l| l.contains(text)
                && l.contains("job=chat-1")
                && l.contains(&format!("stream={stream}"))),
            "no `{text}` line tagged job=chat-1 stream={stream}:\n{logs}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Two workers, dependencies

#[test]
fn two_workers_run_each_of_100_python_jobs_exactly_once() {
    let redis = RedisServer::start();
    py(
        &redis,
        r#"
        from rq import Queue
        q = Queue('p2', connection=conn)
        with conn.pipeline() as pipe:
            q.enqueue_many([Queue.prepare_data('pytasks.count', job_id='n-%03d' % i) for i in range(100)],
                           pipeline=pipe)
            pipe.execute()
        "#,
    );
    let cfg = config("");
    let mut a = worker(&redis, &cfg, "p2")
        .args(&["--burst", "--concurrency", "2"])
        .spawn();
    let mut b = worker(&redis, &cfg, "p2")
        .args(&["--burst", "--concurrency", "2"])
        .spawn();
    assert_eq!(a.wait_exit(), Some(0), "{}", a.logs());
    assert_eq!(b.wait_exit(), Some(0), "{}", b.logs());
    let ran = redis.lrange("ran");
    let mut distinct = ran.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(ran.len(), 100, "{ran:?}");
    assert_eq!(distinct.len(), 100, "a job ran twice: {ran:?}");
    let runs: std::collections::HashMap<String, i64> =
        redis.conn().hgetall("runs").expect("HGETALL runs");
    assert_eq!(runs.len(), 100);
    assert!(runs.values().all(|n| *n == 1), "{runs:?}");
    let finished = redis.zmembers("rq:finished:p2");
    let expected: Vec<String> = (0..100).map(|i| format!("n-{i:03}")).collect();
    assert_eq!(finished, expected);
    assert_eq!(distinct, expected);
}

#[test]
fn python_dependency_chain_with_allow_failure_runs_in_order() {
    let redis = RedisServer::start();
    py(
        &redis,
        r#"
        from rq import Queue
        from rq.job import Dependency
        q = Queue('pd', connection=conn)
        a = q.enqueue('pytasks.record', 'a', job_id='dep-a')
        b = q.enqueue('pytasks.record', 'b', depends_on=a, job_id='dep-b')
        c = q.enqueue('pytasks.record', 'c', depends_on=b, job_id='dep-c')
        f = q.enqueue('pytasks.record_and_fail', 'f', job_id='dep-f')
        q.enqueue('pytasks.record', 'd', depends_on=Dependency(jobs=[f, c], allow_failure=True), job_id='dep-d')
        q.enqueue('pytasks.record', 'e', depends_on=f, job_id='dep-e')
        q.enqueue('pytasks.enqueue_follow_up', 'follow', job_id='dep-self')
        "#,
    );
    assert_eq!(redis.status("dep-b").as_deref(), Some("deferred"));
    assert_eq!(redis.status("dep-c").as_deref(), Some("deferred"));
    let logs = worker(&redis, &config(""), "pd")
        .args(&["--concurrency", "3"])
        .run_burst();
    let order = redis.lrange("order");
    let pos = |name: &str| {
        order
            .iter()
            .position(|n| n == name)
            .unwrap_or_else(|| panic!("{name} did not run: {order:?}\n{logs}"))
    };
    assert!(pos("a") < pos("b") && pos("b") < pos("c"), "{order:?}");
    assert!(pos("f") < pos("d") && pos("c") < pos("d"), "{order:?}");
    assert!(!order.contains(&"e".to_string()), "{order:?}");
    // A dependent the job enqueued on itself from inside waits for it to finish.
    assert!(pos("parent") < pos("follow"), "{order:?}");
    assert_eq!(order.len(), 7, "each ran once: {order:?}");
    let v = py_json(
        &redis,
        r#"
        from rq.job import Job
        jobs = {n: Job.fetch('dep-' + n, connection=conn) for n in ['a', 'b', 'c', 'd', 'e', 'f', 'self', 'self-follow']}
        out({n: [j.get_status().value, j.return_value()] for n, j in jobs.items()})
        "#,
    );
    assert_eq!(
        v,
        json!({"a": ["finished", "a"], "b": ["finished", "b"], "c": ["finished", "c"],
               "d": ["finished", "d"], "e": ["deferred", null], "f": ["failed", null],
               "self": ["finished", "deferred"], "self-follow": ["finished", "follow"]}),
        "{logs}"
    );
}

#[test]
fn retries_and_success_and_failure_callbacks_of_python_jobs() {
    let redis = RedisServer::start();
    py(
        &redis,
        r#"
        from rq import Queue, Callback, Retry
        q = Queue('pz', connection=conn)
        q.enqueue('pytasks.record_and_fail', 'r', retry=Retry(max=2), job_id='cb-retry',
                  on_failure=Callback('pytasks.mark_failure'))
        q.enqueue('pytasks.add', 2, 2, job_id='cb-ok', on_success=Callback('pytasks.mark_success'),
                  on_failure=Callback('pytasks.mark_failure'))
        "#,
    );
    let logs = worker(&redis, &config(""), "pz").run_burst();
    // Retried twice, then failed for good: three runs.
    assert_eq!(redis.lrange("order"), vec!["r", "r", "r"], "{logs}");
    let v = py_json(
        &redis,
        r#"
        from rq.job import Job
        j = Job.fetch('cb-retry', connection=conn)
        ok = Job.fetch('cb-ok', connection=conn)
        get = lambda k: conn.get(k).decode() if conn.get(k) is not None else None
        out({'retry': [j.get_status().value, j.retries_left,
                       j.latest_result().exc_string.strip().splitlines()[-1]],
             'ok': [ok.get_status().value, ok.return_value()],
             'markers': [get('marker:failure:cb-retry'), get('marker:success:cb-ok'),
                         get('marker:failure:cb-ok')]})
        "#,
    );
    assert_eq!(
        v["retry"],
        json!(["failed", 0, "ValueError: r failed on purpose"]),
        "{v}\n{logs}"
    );
    assert_eq!(v["ok"], json!(["finished", 4]), "{v}");
    // Callbacks run in the job's child, as in rq's work horse.
    assert_eq!(
        v["markers"],
        json!(["ValueError: r failed on purpose", "4", null]),
        "{v}"
    );
}

#[test]
fn returned_retry_ends_as_under_python_rq() {
    let redis = RedisServer::start();
    let enqueue = |queue: &str| {
        format!(
            "q = Queue('{queue}', connection=conn)\n\
             q.enqueue('pytasks.returns_retry', 1, job_id='{queue}-ok')\n\
             q.enqueue('pytasks.returns_retry', None, job_id='{queue}-max')\n"
        )
    };
    py(
        &redis,
        &format!(
            "from rq import Queue\n{}{}",
            enqueue("rr-rq"),
            enqueue("rr-runq")
        ),
    );
    // The same jobs under Python rq's own (forking) Worker, and under runq-worker.
    py(
        &redis,
        &format!(
            "import sys\nsys.path.insert(0, {:?})\nfrom rq import Worker\n\
             Worker(['rr-rq'], connection=conn).work(burst=True)",
            py_dir().to_str().expect("utf-8 path")
        ),
    );
    let logs = worker(&redis, &config(""), "rr-runq").run_burst();
    let v = py_json(
        &redis,
        r#"
        from rq.job import Job
        def summary(queue):
            res = {}
            for kind in ('ok', 'max'):
                j = Job.fetch('%s-%s' % (queue, kind), connection=conn)
                res[kind] = {'status': j.get_status().value, 'retries': j.number_of_retries,
                             'results': [r.type.name for r in reversed(j.results())],
                             'return_value': j.return_value(),
                             'runs': conn.lrange('runs:' + queue, 0, -1).count(j.id.encode())}
            return res
        out({'rq': summary('rr-rq'), 'runq': summary('rr-runq')})
        "#,
    );
    assert_eq!(
        v["rq"],
        json!({
            "ok": {"status": "finished", "retries": 1, "results": ["RETRIED", "SUCCESSFUL"],
                   "return_value": "done after 1", "runs": 2},
            "max": {"status": "failed", "retries": 2,
                    "results": ["RETRIED", "RETRIED", "MAX_RETRIES_EXCEEDED"],
                    "return_value": null, "runs": 3},
        }),
        "Python rq's own behaviour changed: {v}"
    );
    assert_eq!(v["runq"], v["rq"], "{v}\n{logs}");
}

// ---------------------------------------------------------------------------------------
// Run state

#[test]
fn python_task_with_run_state_holds_the_lock_stamps_redisprep_and_releases() {
    let redis = RedisServer::start();
    let runs = TempDir::new("py-runs");
    std::fs::create_dir_all(runs.path().join("py-run")).expect("run directory");
    let cfg = config_with(
        &format!(
            "runs_dir = {}",
            toml_str(runs.path().to_str().expect("utf-8 path"))
        ),
        &["pytasks"],
        &["pytasks.*"],
        "[tasks.\"pytasks.with_lock\"]\nrunid_arg = \"0\"\nlocks = [\"climate.nodb\"]\n\
         prep_task = \"build_climate\"\nstatus_channel = \"climate\"\n",
    );
    py(
        &redis,
        "from rq import Queue\nQueue('pr', connection=conn).enqueue('pytasks.with_lock', 'py-run', job_id='run-1')",
    );
    let lines = collect_lines(&redis, "py-run:climate");
    let logs = worker(&redis, &cfg, "pr").run_burst();
    let v = py_json(
        &redis,
        r#"
        from rq.job import Job
        j = Job.fetch('run-1', connection=conn)
        r = j.latest_result()
        out([j.get_status().value, j.return_value(), r.exc_string])
        "#,
    );
    assert_eq!(v[0], "finished", "{v}\n{logs}");
    let rv = &v[1];
    let key = "nodb-lock:py-run:climate.nodb";
    assert_eq!(rv["runid_env"], "py-run", "{rv}");
    let token = rv["tokens"]["climate.nodb"]["token"]
        .as_str()
        .unwrap_or_else(|| panic!("RUNQ_LOCK_TOKENS has no climate.nodb token: {rv}"));
    assert!(!token.is_empty());
    assert_eq!(rv["tokens"]["climate.nodb"]["key"], key, "{rv}");
    // While the child ran, the lock key held that very token.
    assert_eq!(rv["held"]["token"], token, "{rv}");
    let mut db0 = redis.conn_db(0);
    let held: Option<String> = redis::cmd("GET").arg(key).query(&mut db0).expect("GET");
    assert_eq!(held, None, "the lock is released afterwards");
    let stamped: Option<String> = redis::cmd("HGET")
        .arg("py-run")
        .arg("timestamps:build_climate")
        .query(&mut db0)
        .expect("HGET");
    assert!(
        stamped.as_deref().is_some_and(|s| s.parse::<f64>().is_ok()),
        "RedisPrep timestamps:build_climate: {stamped:?}"
    );
    let lines = lines.join().expect("collector thread");
    assert_eq!(
        lines.first().map(String::as_str),
        Some("rq:run-1 STARTED with_lock(py-run)"),
        "{lines:?}"
    );
    assert_eq!(
        lines.last().map(String::as_str),
        Some("rq:run-1 COMPLETED with_lock(py-run)"),
        "{lines:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Functions that cannot run

#[test]
fn unknown_and_unimportable_functions_fail_naming_the_function() {
    let redis = RedisServer::start();
    py(
        &redis,
        r#"
        from rq import Queue
        q = Queue('pn', connection=conn)
        q.enqueue('othermod.task', job_id='fn-unknown')
        q.enqueue('pymissing.task', job_id='fn-no-module')
        q.enqueue('pytasks.no_such_function', job_id='fn-no-attr')
        q.enqueue('pytasks_bad.task', job_id='fn-import-raises')
        q.enqueue('pytasks.add', 1, 1, job_id='fn-ok')
        "#,
    );
    let cfg = config_with(
        "",
        &["pytasks"],
        &["pytasks.*", "pymissing.*", "pytasks_bad.*"],
        "",
    );
    let logs = worker(&redis, &cfg, "pn").run_burst();
    let unknown = py_job(&redis, "fn-unknown");
    assert_eq!(unknown["status"], "failed", "{unknown}\n{logs}");
    assert_eq!(
        unknown["exc_string"],
        "UnknownFunction: no handler is registered for `othermod.task` in this runq-worker",
        "{unknown}"
    );
    // rq's import_attribute turns a missing module into `Invalid attribute name: <func>`
    // (as under `rq worker`); an import that raises shows the module's own error.
    let exc = exc_string(&redis, "fn-no-module");
    assert!(
        exc.trim_end()
            .ends_with("ValueError: Invalid attribute name: pymissing.task"),
        "{exc}\n{logs}"
    );
    let exc = exc_string(&redis, "fn-no-attr");
    assert!(
        exc.trim_end()
            .ends_with("ValueError: Invalid attribute name: no_such_function"),
        "{exc}\n{logs}"
    );
    let exc = exc_string(&redis, "fn-import-raises");
    assert!(
        exc.contains("pytasks_bad.py")
            && exc
                .trim_end()
                .ends_with("RuntimeError: pytasks_bad refuses to be imported"),
        "{exc}\n{logs}"
    );
    for id in ["fn-no-module", "fn-no-attr", "fn-import-raises"] {
        assert_eq!(py_job(&redis, id)["status"], "failed");
    }
    assert_eq!(redis.status("fn-ok").as_deref(), Some("finished"));
}

// ---------------------------------------------------------------------------------------
// Serializers

#[test]
fn json_and_msgpack_jobs_run_and_python_reads_their_results() {
    let redis = RedisServer::start();
    let serializers = r#"
        import msgpack
        from rq.serializers import JSONSerializer
        class MsgpackSerializer:
            dumps = staticmethod(msgpack.packb)
            @staticmethod
            def loads(data):
                return msgpack.unpackb(data, raw=False)
    "#;
    py(
        &redis,
        &format!(
            "{}\n{}",
            dedent(serializers),
            dedent(
                r#"
                from rq import Queue
                Queue('pj', connection=conn, serializer=JSONSerializer).enqueue(
                    'pytasks.structured', 1, 2, job_id='ser-json', meta={'k': 'v'})
                Queue('pm', connection=conn, serializer=MsgpackSerializer).enqueue(
                    'pytasks.structured', 3, 4, job_id='ser-msgpack', meta={'k': 'w'})
                Queue('pj', connection=conn, serializer=JSONSerializer).enqueue(
                    'pytasks.inspect_job', '2024-01-01', 1, [], 'pj', job_id='ser-json-bad')
                "#
            )
        ),
    );
    let logs = worker(&redis, &config(""), "pj,pm").run_burst();
    let v = py_json(
        &redis,
        &format!(
            "{}\n{}",
            dedent(serializers),
            dedent(
                r#"
                from rq.job import Job
                def info(i, s):
                    j = Job.fetch(i, connection=conn, serializer=s)
                    return [j.get_status().value, j.return_value(), j.meta]
                out({'json': info('ser-json', JSONSerializer),
                     'msgpack': info('ser-msgpack', MsgpackSerializer),
                     'json_bad': Job.fetch('ser-json-bad', connection=conn, serializer=JSONSerializer).get_status().value})
                "#
            )
        ),
    );
    assert_eq!(
        v["json"],
        json!(["finished", {"sum": 3, "list": [1, 2], "text": "ü€"}, {"k": "v"}]),
        "{v}\n{logs}"
    );
    assert_eq!(
        v["msgpack"],
        json!(["finished", {"sum": 7, "list": [3, 4], "text": "ü€"}, {"k": "w"}]),
        "{v}\n{logs}"
    );
    // A job whose assertion on its argument types fails under JSON fails as in rq.
    assert_eq!(v["json_bad"], "failed", "{v}");
}
