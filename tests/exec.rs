//! Exec tasks end to end: Python RQ enqueues, runq-worker runs the job in a child
//! process (`python -m runq.runner`, or a plain script), and the result comes back —
//! pickled arguments and return values untouched in raw mode, JSON in JSON mode;
//! failures with their exit status and traceback line; timeouts, stop-job and cold
//! shutdown killing the child's whole process group, SIGTERM-proof children included.

use runq_tests::*;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

/// `[tasks."<name>"]` for an exec handler.
fn exec_task(name: &str, command: &[&str], mode: &str, extra: &str) -> String {
    format!(
        "[tasks.\"{name}\"]\nhandler = \"exec\"\ncommand = {}\nmode = \"{mode}\"\n{extra}\n",
        serde_json::to_string(command).expect("argv as a TOML array")
    )
}

/// An exec task run by the Python runner of the rq 3.0 venv.
fn runner_task(name: &str, mode: &str, extra: &str) -> String {
    let python = Py::Rq3.python();
    exec_task(
        name,
        &[python.to_str().expect("utf-8 path"), "-m", "runq.runner"],
        mode,
        extra,
    )
}

/// A worker whose children import from contrib/python.
fn worker<'a>(redis: &'a RedisServer, config: &str, queues: &str) -> WorkerCmd<'a> {
    let pythonpath = python_dir();
    WorkerCmd::new(redis)
        .config(config)
        .env("PYTHONPATH", pythonpath.to_str().expect("utf-8 path"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .args(&["--queues", queues])
}

/// Enqueues `func(pidfile)` on `queue`: the child writes its (and its child's) pids there.
fn enqueue_pidfile_task(redis: &RedisServer, func: &str, pidfile: &Path, queue: &str) -> String {
    let pidfile = json!(pidfile.to_str().expect("utf-8 path")).to_string();
    enqueue(redis, &[func, &pidfile, "--queue", queue])
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

/// The pids a child wrote (`<child> <grandchild>`), once it has.
fn wait_pids(pidfile: &Path) -> Vec<i32> {
    let pids: Vec<i32> = wait_for("the child to write its pids", || {
        let text = std::fs::read_to_string(pidfile).ok()?;
        let pids: Vec<i32> = text
            .split_whitespace()
            .map(|p| p.parse().expect("a pid"))
            .collect();
        (pids.len() == 2).then_some(pids)
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

fn exc_string(redis: &RedisServer, id: &str) -> String {
    let v = job_json(redis, id);
    v["exc_string"]
        .as_str()
        .unwrap_or_else(|| panic!("{id} has no exc_string: {v}"))
        .to_string()
}

#[test]
fn pickled_arguments_and_return_values_pass_through_the_runner() {
    let redis = RedisServer::start();
    python(
        Py::Rq3,
        &redis,
        r#"
        import datetime, decimal
        from rq import Queue
        from rq.serializers import JSONSerializer
        from exectasks import Money
        q = Queue('ex', connection=conn)
        q.enqueue('exectasks.next_payment', datetime.date(2024, 2, 28), decimal.Decimal('1.10'),
                  money=Money('3.25', 'EUR'), job_id='raw-pickle')
        q.enqueue('exectasks.nothing', job_id='raw-none')
        Queue('exj', connection=conn, serializer=JSONSerializer).enqueue(
            'exectasks.add', [1], [2, 3], job_id='raw-json')
        "#,
    );
    let config = [
        runner_task("exectasks.next_payment", "raw", ""),
        runner_task("exectasks.nothing", "raw", ""),
        runner_task("exectasks.add", "raw", ""),
    ]
    .join("\n");
    worker(&redis, &config, "ex,exj").run_burst();

    let v = python_json(
        Py::Rq3,
        &redis,
        r#"
        import base64, datetime, decimal
        from rq.job import Job
        from rq.serializers import JSONSerializer
        from exectasks import Money
        expected = (datetime.date(2024, 2, 29), decimal.Decimal('2.20'), Money('6.50', 'EUR'),
                    ['date', 'Decimal', 'Money'])
        j = Job.fetch('raw-pickle', connection=conn)
        rv = j.return_value()
        stored = conn.xrange('rq:results:raw-pickle')[-1][1][b'return_value']
        n = Job.fetch('raw-none', connection=conn)
        js = Job.fetch('raw-json', connection=conn, serializer=JSONSerializer)
        out({
            'status': j.get_status().value,
            'type': j.latest_result().type.name,
            'equal': rv == expected,
            'repr': repr(rv),
            'pickle_protocol': base64.b64decode(stored)[1],
            'none': [n.get_status().value, n.latest_result().type.name, n.return_value(),
                     b'return_value' in conn.xrange('rq:results:raw-none')[-1][1]],
            'json': [js.get_status().value, js.return_value()],
        })
        "#,
    );
    assert_eq!(v["status"], "finished", "{v}");
    assert_eq!(v["type"], "SUCCESSFUL", "{v}");
    assert_eq!(v["equal"], true, "{v}");
    // The child's own pickle (protocol 5), not one runq re-encoded (runq writes 3).
    assert_eq!(v["pickle_protocol"], 5, "{v}");
    assert_eq!(v["none"], json!(["finished", "SUCCESSFUL", null, false]));
    assert_eq!(v["json"], json!(["finished", [1, 2, 3]]));
}

#[test]
fn json_mode_child_gets_arguments_and_its_result_is_stored() {
    let redis = RedisServer::start();
    let python = Py::Rq3.python();
    let script = dedent(
        r#"
        import json, os, sys
        job = json.load(sys.stdin)
        result = {'sum': sum(job['args']), 'kwargs': job['kwargs'], 'job_id': job['job_id'],
                  'func': job['func'], 'mode': os.environ['RUNQ_EXEC_MODE'],
                  'serializer': os.environ.get('RUNQ_SERIALIZER')}
        with open(os.environ['RUNQ_RESULT_FILE'], 'w') as f:
            json.dump(result, f)
        "#,
    );
    let config = exec_task(
        "calc.total",
        &[python.to_str().unwrap(), "-c", &script],
        "json",
        "",
    );
    let id = enqueue(
        &redis,
        &[
            "calc.total",
            "1",
            "2",
            "39",
            "--kwarg",
            "label=\"ü\"",
            "--queue",
            "ej",
        ],
    );
    worker(&redis, &config, "ej").run_burst();
    let v = job_json(&redis, &id);
    assert_eq!(v["status"], "finished", "{v}");
    assert_eq!(
        v["return_value"],
        json!({"sum": 42, "kwargs": {"label": "ü"}, "job_id": id, "func": "calc.total",
               "mode": "json", "serializer": null}),
        "{v}"
    );
    // A Python client reads it too.
    let py = python_json(
        Py::Rq3,
        &redis,
        &format!(
            "from rq.job import Job\nout(Job.fetch('{id}', connection=conn).return_value()['sum'])"
        ),
    );
    assert_eq!(py, json!(42));
}

#[test]
fn failing_child_fails_the_job_with_status_and_traceback_line() {
    let redis = RedisServer::start();
    python(
        Py::Rq3,
        &redis,
        r#"
        from rq import Queue
        q = Queue('ef', connection=conn)
        q.enqueue('exectasks.boom', 'bad input 7', job_id='boom-raw')
        q.enqueue('nosuchmodule.f', job_id='no-module')
        q.enqueue('missing.binary', job_id='no-binary')
        q.enqueue('shell.exit', job_id='exit-3')
        "#,
    );
    let python = Py::Rq3.python();
    let config = [
        runner_task("exectasks.boom", "raw", ""),
        runner_task("nosuchmodule.f", "raw", ""),
        exec_task("missing.binary", &["/nonexistent/runq-child"], "raw", ""),
        exec_task(
            "shell.exit",
            &["sh", "-c", "echo 'disk full' >&2; exit 3"],
            "json",
            "",
        ),
    ]
    .join("\n");
    worker(&redis, &config, "ef").run_burst();
    let python = python.to_str().unwrap();

    for id in ["boom-raw", "no-module", "no-binary", "exit-3"] {
        redis.wait_status(id, "failed");
    }
    let exc = exc_string(&redis, "boom-raw");
    let first = exc.lines().next().unwrap();
    assert_eq!(
        first,
        format!("ExecFailed: {python} exited with status 1: ValueError: bad input 7"),
        "{exc}"
    );
    assert!(
        exc.contains("Traceback (most recent call last):") && exc.contains("in boom"),
        "{exc}"
    );
    assert!(
        exc.trim_end().ends_with("--- stdout ---\nabout to fail"),
        "{exc}"
    );

    let exc = exc_string(&redis, "no-module");
    assert_eq!(
        exc.lines().next().unwrap(),
        format!("ExecFailed: {python} exited with status 2: runq.runner: RunnerError: cannot import 'nosuchmodule.f': no module of that name"),
        "{exc}"
    );

    let exc = exc_string(&redis, "no-binary");
    assert!(
        exc.starts_with("ExecSpawnFailed: cannot run `/nonexistent/runq-child`: ")
            && !exc.contains('\n'),
        "{exc}"
    );

    let exc = exc_string(&redis, "exit-3");
    assert_eq!(
        exc,
        "ExecFailed: sh exited with status 3: disk full\ndisk full"
    );

    // Python sees the same failures.
    let v = python_json(
        Py::Rq3,
        &redis,
        r#"
        from rq.job import Job
        from rq.registry import FailedJobRegistry
        j = Job.fetch('boom-raw', connection=conn)
        out([j.get_status().value, j.latest_result().exc_string.splitlines()[0].split(': ', 2)[2],
             sorted(FailedJobRegistry('ef', connection=conn).get_job_ids())])
        "#,
    );
    assert_eq!(
        v,
        json!([
            "failed",
            "ValueError: bad input 7",
            ["boom-raw", "exit-3", "no-binary", "no-module"]
        ])
    );
}

#[test]
fn timeout_kills_a_sigterm_ignoring_child_and_its_grandchild() {
    let redis = RedisServer::start();
    let dir = TempDir::new("exec-timeout");
    let pidfile = dir.path().join("pids");
    let id = enqueue_pidfile_task(&redis, "exectasks.stubborn", &pidfile, "et");
    let config = runner_task("exectasks.stubborn", "json", "timeout = 2");
    let mut w = worker(&redis, &config, "et").spawn();
    let pids = wait_pids(&pidfile);
    redis.wait_status(&id, "failed");
    let exc = exc_string(&redis, &id);
    assert!(
        exc.starts_with("JobTimeoutException: Task exceeded maximum timeout value (2 seconds)"),
        "{exc}"
    );
    // Both ignore SIGTERM: only the SIGKILL after the grace ends them.
    wait_gone(&pids);
    assert!(w.running(), "the worker carries on\n{}", w.logs());
}

#[test]
fn stop_job_terminates_the_whole_process_group() {
    let redis = RedisServer::start();
    let dir = TempDir::new("exec-stop");
    let pidfile = dir.path().join("pids");
    let id = enqueue_pidfile_task(&redis, "exectasks.polite", &pidfile, "es");
    let config = runner_task("exectasks.polite", "json", "");
    let mut w = worker(&redis, &config, "es")
        .args(&["--name", "esw", "--concurrency", "1"])
        .spawn();
    redis.wait_subscribed("esw");
    let pids = wait_pids(&pidfile);
    runq(&redis, &["stop-job", &id]).ok("runq stop-job");
    redis.wait_status(&id, "stopped");
    wait_gone(&pids);
    // SIGTERM came first: the child's handler ran.
    assert_eq!(
        std::fs::read_to_string(dir.path().join("pids.term")).unwrap_or_default(),
        "SIGTERM"
    );
    assert!(w.running(), "the worker carries on\n{}", w.logs());
}

#[test]
fn cold_shutdown_kills_the_child_before_the_worker_exits() {
    let redis = RedisServer::start();
    let dir = TempDir::new("exec-cold");
    let pidfile = dir.path().join("pids");
    let id = enqueue_pidfile_task(&redis, "exectasks.stubborn", &pidfile, "ec");
    let config = runner_task("exectasks.stubborn", "json", "");
    let mut w = worker(&redis, &config, "ec").spawn();
    let pids = wait_pids(&pidfile);
    w.sigterm();
    // A second signal at least 1 s after the first means cold (as RQ).
    std::thread::sleep(Duration::from_millis(1500));
    w.sigterm();
    assert_eq!(w.wait_exit(), Some(0), "{}", w.logs());
    // The worker waited out the grace and sent SIGKILL before exiting.
    wait_gone(&pids);
    // Interrupted jobs are requeued by default.
    assert_eq!(redis.lrange("rq:queue:ec"), vec![id]);
}

#[test]
fn child_sees_its_job_in_the_environment() {
    let redis = RedisServer::start();
    let id = enqueue(
        &redis,
        &["exectasks.whoami", "a", "--kwarg", "n=1", "--queue", "ev"],
    );
    let config = runner_task("exectasks.whoami", "json", "");
    worker(&redis, &config, "ev").run_burst();
    let v = job_json(&redis, &id);
    assert_eq!(v["status"], "finished", "{v}");
    let rv = &v["return_value"];
    let env = &rv["env"];
    assert_eq!(env["RUNQ_JOB_ID"], json!(id), "{rv}");
    assert_eq!(env["RUNQ_FUNC"], "exectasks.whoami", "{rv}");
    assert_eq!(env["RUNQ_EXEC_MODE"], "json", "{rv}");
    assert_eq!(rv["args"], json!(["a"]));
    assert_eq!(rv["kwargs"], json!({"n": 1}));
    // The result file lived in a private directory the worker removed afterwards.
    let file = env["RUNQ_RESULT_FILE"].as_str().expect("RUNQ_RESULT_FILE");
    let parent = Path::new(file).parent().expect("a directory");
    assert!(
        parent
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("runq-exec-")),
        "{file}"
    );
    assert!(!parent.exists(), "{} was not removed", parent.display());
    assert!(env.get("RUNQ_RUNID").is_none(), "{rv}");
}

#[test]
fn raw_mode_child_gets_the_serializer_name() {
    let redis = RedisServer::start();
    let id = enqueue(
        &redis,
        &[
            "exectasks.whoami",
            "x",
            "--queue",
            "em",
            "--serializer",
            "msgpack",
        ],
    );
    let config = runner_task("exectasks.whoami", "raw", "");
    worker(&redis, &config, "em").run_burst();
    let v = job_json(&redis, &id);
    assert_eq!(v["status"], "finished", "{v}");
    let env: &Value = &v["return_value"]["env"];
    assert_eq!(env["RUNQ_SERIALIZER"], "msgpack", "{v}");
    assert_eq!(env["RUNQ_EXEC_MODE"], "raw", "{v}");
    assert_eq!(v["return_value"]["args"], json!(["x"]), "{v}");
}

#[test]
fn exec_task_without_a_command_is_a_config_error() {
    let redis = RedisServer::start();
    let dir = TempDir::new("exec-config");
    let config = dir.path().join("queues.toml");
    std::fs::write(
        &config,
        "[tasks.\"my.broken\"]\nhandler = \"exec\"\ncommand = []\n",
    )
    .unwrap();
    let out = worker_output(
        &redis.url(),
        &["--config", config.to_str().unwrap(), "--burst"],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let line = out.stderr.trim();
    assert!(
        line.contains("task `my.broken`") && line.contains("non-empty `command`"),
        "{line}"
    );
    assert_eq!(line.lines().count(), 1, "{line}");
}

#[test]
fn exec_task_with_run_state_holds_and_renews_its_lock_while_the_child_runs() {
    let redis = RedisServer::start();
    let config = runner_task(
        "exectasks.whoami_after",
        "json",
        "runid_arg = \"0\"\nlocks = [\"climate.nodb\"]\nprep_task = \"build_climate\"\n\
         status_channel = \"climate\"\nlock_ttl = 1\n",
    );
    // The CLI reads the same task config: it records rq:<func> in the run hash.
    let dir = TempDir::new("exec-run-config");
    let config_file = dir.path().join("queues.toml");
    std::fs::write(&config_file, &config).unwrap();
    let out = runq_env(
        &redis.url(),
        &[
            "enqueue",
            "exectasks.whoami_after",
            "exec-run",
            "2.5",
            "--queue",
            "er",
        ],
        &[("RUNQ_CONFIG", config_file.to_str().unwrap())],
    )
    .ok("runq enqueue with the task config");
    let id = out.last_line().to_string();
    let _worker = worker(&redis, &config, "er").spawn();
    let mut db0 = redis.conn_db(0);
    let key = "nodb-lock:exec-run:climate.nodb";
    let get = |db0: &mut redis::Connection| -> Option<String> {
        redis::cmd("GET").arg(key).query(db0).expect("GET")
    };
    let first = wait_for("the child's lock", || get(&mut db0));
    let token = runq_common::nodb::lock::LockPayload::parse(&first).token;
    // Past its 1 s TTL the worker still holds it for the child.
    std::thread::sleep(Duration::from_millis(1500));
    let later = get(&mut db0).expect("still locked after 1.5 TTLs");
    assert_eq!(
        runq_common::nodb::lock::LockPayload::parse(&later).token,
        token
    );
    wait_until("the job to finish", || {
        redis.status(&id).as_deref() == Some("finished")
    });
    let v = job_json(&redis, &id);
    let env = &v["return_value"]["env"];
    assert_eq!(env["RUNQ_RUNID"], "exec-run", "{v}");
    let tokens: Value =
        serde_json::from_str(env["RUNQ_LOCK_TOKENS"].as_str().expect("tokens")).unwrap();
    assert_eq!(tokens["climate.nodb"]["token"], json!(token), "{tokens}");
    assert_eq!(tokens["climate.nodb"]["key"], json!(key), "{tokens}");
    assert_eq!(get(&mut db0), None, "released after the child exited");
    let stamped: Option<String> = redis::cmd("HGET")
        .arg("exec-run")
        .arg("timestamps:build_climate")
        .query(&mut db0)
        .unwrap();
    assert!(stamped.is_some(), "RedisPrep stamped on success");
    let job_key: Option<String> = redis::cmd("HGET")
        .arg("exec-run")
        .arg("rq:whoami_after")
        .query(&mut db0)
        .unwrap();
    assert_eq!(
        job_key.as_deref(),
        Some(id.as_str()),
        "rq:<func> set at enqueue"
    );
}

#[test]
fn a_cut_off_childs_lock_is_held_until_its_process_group_is_gone() {
    let redis = RedisServer::start();
    let dir = TempDir::new("exec-held");
    let pidfile = dir.path().join("pids");
    let id = enqueue(
        &redis,
        &[
            "exectasks.stubborn_run",
            "held-run",
            &json!(pidfile.to_str().unwrap()).to_string(),
            "--queue",
            "eh",
        ],
    );
    // A 1 s lock TTL: only renewal keeps it through the 2 s SIGTERM grace.
    let config = runner_task(
        "exectasks.stubborn_run",
        "json",
        "timeout = 2\nrunid_arg = \"0\"\nlocks = [\"climate.nodb\"]\nlock_ttl = 1\n",
    );
    let _w = worker(&redis, &config, "eh").spawn();
    let pids = wait_pids(&pidfile);
    let mut db0 = redis.conn_db(0);
    let key = "nodb-lock:held-run:climate.nodb";
    wait_until("the lock to be released", || {
        let v: Option<String> = redis::cmd("GET").arg(key).query(&mut db0).expect("GET");
        v.is_none()
    });
    // The moment the lock is free, no process of the child's group may still run.
    for pid in &pids {
        assert!(
            !alive(*pid),
            "pid {pid} still runs after its lock was released"
        );
    }
    redis.wait_status(&id, "failed");
}
