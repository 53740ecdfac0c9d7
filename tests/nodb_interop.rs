//! WEPPcloud/NoDb interop of the demo tasks (`runq.demo.*`) against the wire formats of
//! the wepppy reference: NoDb locks shared with a Python re-implementation of wepppy's
//! `lock()`/`unlock()` (`tests/py/wepppy_lock.py`), the RedisPrep run hash and its
//! `redisprep.dump`, the DB 13 NoDb cache and its signature gate, status lines on DB 2
//! (`runq tail`), per-run log levels in DB 15, the `runq locks` operator view, and the
//! failure paths (bad runid, missing inputs).

use runq_tests::*;
use serde_json::{json, Map, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

// ---------------------------------------------------------------------------------------
// Helpers

fn lock_key(runid: &str, relpath: &str) -> String {
    format!("nodb-lock:{runid}:{relpath}")
}

/// GET in DB 0 (locks and run hashes).
fn get0(redis: &RedisServer, key: &str) -> Option<String> {
    redis::cmd("GET")
        .arg(key)
        .query(&mut redis.conn_db(0))
        .expect("GET")
}

/// The run hash (DB 0, key = runid).
fn run_hash(redis: &RedisServer, runid: &str) -> Map<String, Value> {
    let fields: Vec<(String, String)> = redis::cmd("HGETALL")
        .arg(runid)
        .query(&mut redis.conn_db(0))
        .expect("HGETALL");
    fields
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect()
}

fn flag(redis: &RedisServer, runid: &str, relpath: &str) -> Option<String> {
    redis::cmd("HGET")
        .arg(runid)
        .arg(format!("locked:{relpath}"))
        .query(&mut redis.conn_db(0))
        .expect("HGET")
}

/// Worker TOML: `runs_dir`, concurrency 4, and `extra` (task sections).
fn config(runs: &Path, extra: &str) -> String {
    format!(
        "[worker]\nruns_dir = '{}'\nconcurrency = 4\n{extra}",
        runs.display()
    )
}

/// A `[tasks."runq.demo.<task>"]` section keeping the built-in run state, with `settings`.
fn demo_task(task: &str, settings: &str) -> String {
    format!("[tasks.\"runq.demo.{task}\"]\nhandler = \"native:runq.demo.{task}\"\n{settings}\n")
}

/// Waits until the job is finished or failed; returns which.
fn wait_ended(redis: &RedisServer, id: &str) -> String {
    wait_for(&format!("job {id} to end"), || {
        redis
            .status(id)
            .filter(|s| s == "finished" || s == "failed")
    })
}

fn assert_finished(redis: &RedisServer, id: &str, what: &str) {
    let status = wait_ended(redis, id);
    assert_eq!(
        status,
        "finished",
        "{what} (job {id}) failed: {}",
        failure_hint(redis, id)
    );
}

fn assert_failed(redis: &RedisServer, id: &str, what: &str) -> String {
    let status = wait_ended(redis, id);
    assert_eq!(status, "failed", "{what} (job {id}) was expected to fail");
    failure_text(redis, id)
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON ({e}):\n{text}", path.display()))
}

/// The hostname Python's `socket.gethostname()` reports (wepppy's owner prefix).
fn py_hostname(redis: &RedisServer) -> String {
    python_json(Py::Rq3, redis, "import socket\nout(socket.gethostname())")
        .as_str()
        .expect("hostname string")
        .to_string()
}

fn hex32(s: &str) -> bool {
    s.len() == 32 && s.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'))
}

// --- the Python wepppy lock ------------------------------------------------------------

fn wepppy_lock_cmd(redis: &RedisServer, args: &[&str]) -> Command {
    let mut cmd = Command::new(Py::Rq3.python());
    cmd.arg(repo_root().join("tests/py/wepppy_lock.py"))
        .args(args)
        .env("RUNQ_TEST_REDIS_PORT", redis.port.to_string())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("REDIS_URL")
        .env_remove("WEPPPY_LOCK_TTL_SECONDS");
    cmd
}

/// One wepppy `lock()` attempt from Python (unlocked again at once if it succeeded).
fn py_try_lock(redis: &RedisServer, runid: &str, relpath: &str) -> Value {
    let out = wepppy_lock_cmd(redis, &["try-lock", runid, relpath])
        .stdin(Stdio::null())
        .output()
        .expect("run wepppy_lock.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "wepppy_lock.py try-lock failed with {}:\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("wepppy_lock.py printed no JSON ({e}):\n{stdout}"))
}

/// A Python process holding a wepppy lock until [`release`](Self::release).
struct PyHolder {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl PyHolder {
    /// Locks with `ttl` and returns the holder and its report (`owner`, `token`, `seen`).
    fn start(redis: &RedisServer, runid: &str, relpath: &str, ttl: u64) -> (PyHolder, Value) {
        let mut child = wepppy_lock_cmd(redis, &["hold", runid, relpath, &ttl.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run wepppy_lock.py hold");
        let mut holder = PyHolder {
            stdin: child.stdin.take(),
            stdout: BufReader::new(child.stdout.take().expect("piped stdout")),
            child,
        };
        let report = holder.report("lock()");
        (holder, report)
    }

    fn report(&mut self, what: &str) -> Value {
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .expect("read wepppy_lock.py");
        serde_json::from_str(&line).unwrap_or_else(|e| {
            panic!("wepppy_lock.py {what} gave no JSON report ({e}): {line:?} (see its stderr)")
        })
    }

    /// Lets the holder `unlock()`; returns its report (`unlocked`, `error`, `flag`).
    fn release(mut self) -> Value {
        let mut stdin = self.stdin.take().expect("stdin");
        stdin
            .write_all(b"release\n")
            .expect("tell python to unlock");
        drop(stdin);
        let report = self.report("unlock()");
        let status = wait_exit(&mut self.child);
        assert!(status.success(), "wepppy_lock.py hold exited with {status}");
        report
    }
}

impl Drop for PyHolder {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// --- status lines ------------------------------------------------------------------------

/// Starts `runq tail ARGS` with its stdout piped.
fn spawn_tail(redis: &RedisServer, args: &[&str]) -> Child {
    let mut cmd = Command::new(bin("runq"));
    for k in ["RQ_REDIS_URL", "REDIS_HOST", "REDIS_PORT", "RUNQ_CONFIG"] {
        cmd.env_remove(k);
    }
    cmd.arg("tail")
        .args(args)
        .env("REDIS_URL", redis.url())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run runq tail")
}

/// Waits (bounded) for a `runq tail --count N` to exit; returns its stdout lines.
fn tail_lines(mut child: Child) -> Vec<String> {
    let status = wait_exit(&mut child);
    let mut stdout = String::new();
    let mut stderr = String::new();
    child
        .stdout
        .take()
        .expect("piped")
        .read_to_string(&mut stdout)
        .expect("read runq tail stdout");
    child
        .stderr
        .take()
        .expect("piped")
        .read_to_string(&mut stderr)
        .expect("read runq tail stderr");
    assert!(
        status.success(),
        "runq tail exited with {status}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    stdout.lines().map(str::to_string).collect()
}

/// Waits until some client has a pattern subscription (`runq tail RUNID` uses one).
fn wait_pattern_subscriber(redis: &RedisServer) {
    wait_until("a pattern subscriber", || {
        let n: i64 = redis::cmd("PUBSUB")
            .arg("NUMPAT")
            .query(&mut redis.conn_db(2))
            .expect("PUBSUB NUMPAT");
        n > 0
    });
}

/// Collects the lines of `channel` in a thread until one reports COMPLETED or EXCEPTION
/// (or nothing arrives for [`WAIT`]). Returns once the subscription is in place.
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

/// The four lines of a successful `build_climate` at INFO, with `debug` steps in between.
fn climate_lines(job: &str, runid: &str, debug_steps: u32) -> Vec<String> {
    let mut lines = vec![
        format!("rq:{job} STARTED build_climate({runid})"),
        "building climate".to_string(),
    ];
    lines.extend((1..=debug_steps).map(|n| format!("climate: step {n} done")));
    lines.push(format!(
        "rq:{job} TRIGGER   climate CLIMATE_BUILD_TASK_COMPLETED"
    ));
    lines.push(format!("rq:{job} COMPLETED build_climate({runid})"));
    lines
}

// ---------------------------------------------------------------------------------------
// Tests

#[test]
fn wepppy_lock_code_and_runq_exclude_each_other() {
    let redis = RedisServer::start();
    let tmp = TempDir::new("nodb-lockx");
    let runs = tmp.path().join("runs");
    let cfg = config(
        &runs,
        &demo_task("build_climate", "lock_ttl = 30\nlock_wait = 2"),
    );

    // (a) runq holds the lock: Python's lock() fails fast and names runq-worker.
    let held_by_runq = enqueue(&redis, &["runq.demo.build_climate", "pyrun", "4"]);
    let mut worker = WorkerCmd::new(&redis).config(&cfg).spawn();
    let key = lock_key("pyrun", "climate.nodb");
    wait_until("runq-worker to take the climate lock", || {
        get0(&redis, &key).is_some()
    });
    let attempt = py_try_lock(&redis, "pyrun", "climate.nodb");
    let host = attempt["owner"]
        .as_str()
        .and_then(|o| o.rsplit_once(':'))
        .map(|(h, _)| h.to_string())
        .expect("python reports host:pid");
    let runq_owner = format!("{host}:{}", worker.pid());
    assert_eq!(attempt["acquired"], json!(false), "{attempt}");
    assert_eq!(
        attempt["error"],
        json!(format!(
            "NoDbAlreadyLockedError: lock() called on an already locked nodb (owner={runq_owner})"
        )),
        "python's lock() must fail naming runq-worker's owner"
    );
    let seen = &attempt["seen"];
    assert_eq!(
        seen["keys"],
        json!(["token", "owner", "acquired_at", "expires_at", "ttl"]),
        "payload fields in wepppy's order: {}",
        seen["raw"]
    );
    let payload = &seen["payload"];
    assert!(
        seen["raw"]
            .as_str()
            .is_some_and(|r| !r.contains(' ') && r.starts_with("{\"token\":\"")),
        "compact JSON: {}",
        seen["raw"]
    );
    assert!(
        payload["token"].as_str().is_some_and(hex32),
        "uuid4 hex token: {payload}"
    );
    assert_eq!(payload["owner"], json!(runq_owner));
    assert_eq!(payload["ttl"], json!(30), "the task's lock_ttl: {payload}");
    let acquired_at = payload["acquired_at"]
        .as_i64()
        .expect("integer acquired_at");
    let expires_at = payload["expires_at"].as_i64().expect("integer expires_at");
    assert!(
        expires_at >= acquired_at + 30,
        "expires_at = acquired_at + ttl (or later after a renewal): {payload}"
    );
    let left = (expires_at - seen["now"].as_i64().expect("now")) as f64;
    let pttl = seen["pttl"].as_f64().expect("pttl") / 1000.0;
    assert!(
        pttl > 0.0 && (left - pttl).abs() <= 2.0,
        "expires_at ({left} s ahead) agrees with the key's TTL ({pttl} s): {payload}"
    );
    assert_eq!(
        seen["flag"],
        json!("true"),
        "locked:climate.nodb while held"
    );

    assert_finished(&redis, &held_by_runq, "runq's build_climate");
    assert_eq!(get0(&redis, &key), None, "runq released its lock");
    assert_eq!(
        flag(&redis, "pyrun", "climate.nodb").as_deref(),
        Some("false")
    );
    let after = py_try_lock(&redis, "pyrun", "climate.nodb");
    assert_eq!(
        after["acquired"],
        json!(true),
        "python locks once runq is done: {after}"
    );
    assert_eq!(after["flag_after_unlock"], json!("false"));

    // (b) Python holds the lock: runq waits lock_wait = 2 s, then fails naming Python.
    let (holder, info) = PyHolder::start(&redis, "pyrun2", "climate.nodb", 60);
    let py_owner = info["owner"].as_str().expect("owner").to_string();
    let py_token = info["token"].as_str().expect("token").to_string();
    assert_eq!(info["seen"]["flag"], json!("true"));
    let refused = enqueue(&redis, &["runq.demo.build_climate", "pyrun2"]);
    let text = assert_failed(&redis, &refused, "build_climate under python's lock");
    assert!(
        text.contains("already locked") && text.contains(&format!("owner={py_owner}")),
        "the failure names python's lock holder {py_owner}: {text}"
    );
    let stored = get0(&redis, &lock_key("pyrun2", "climate.nodb")).expect("python's lock");
    let stored: Value = serde_json::from_str(&stored).expect("payload");
    assert_eq!(
        stored["token"],
        json!(py_token),
        "runq's failed attempt left python's lock alone"
    );
    assert_eq!(
        flag(&redis, "pyrun2", "climate.nodb").as_deref(),
        Some("true"),
        "runq's failed attempt must not lower the flag of python's live lock"
    );
    let mut released = holder.release();
    released["unlock_started_at"].take();
    assert_eq!(
        released,
        json!({"unlocked": true, "error": null, "key_exists": false, "flag": "false",
               "unlock_started_at": null}),
        "python's unlock() (GET-compare-DEL) finds its own token"
    );

    let ok = enqueue(&redis, &["runq.demo.build_climate", "pyrun2"]);
    assert_finished(&redis, &ok, "build_climate after python unlocked");
    assert_eq!(
        flag(&redis, "pyrun2", "climate.nodb").as_deref(),
        Some("false")
    );
    let doc = read_json(&runs.join("pyrun2/climate.nodb"));
    assert_eq!(
        doc["py/state"]["history"],
        json!([ok]),
        "only the job that got the lock wrote the document"
    );
    worker.sigterm();
    assert_eq!(worker.wait_exit(), Some(0), "{}", worker.logs());
}

#[test]
fn lock_taken_after_a_wait_is_stamped_when_taken() {
    let redis = RedisServer::start();
    let tmp = TempDir::new("nodb-lockwait");
    let runs = tmp.path().join("runs");
    let cfg = config(
        &runs,
        &demo_task("build_climate", "lock_ttl = 30\nlock_wait = 20"),
    );
    let (holder, _) = PyHolder::start(&redis, "waitrun", "climate.nodb", 60);
    let id = enqueue(&redis, &["runq.demo.build_climate", "waitrun", "2"]);
    let mut worker = WorkerCmd::new(&redis).config(&cfg).spawn();
    redis.wait_status(&id, "started");
    // Keep runq waiting on Redis for a few whole seconds before letting go.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let released = holder.release();
    assert_eq!(released["unlocked"], json!(true), "{released}");
    let unlock_started_at = released["unlock_started_at"].as_i64().expect("time");
    let key = lock_key("waitrun", "climate.nodb");
    let payload: Value = wait_for("runq-worker to take the climate lock", || {
        get0(&redis, &key).and_then(|raw| serde_json::from_str(&raw).ok())
    });
    let acquired_at = payload["acquired_at"].as_i64().expect("acquired_at");
    let expires_at = payload["expires_at"].as_i64().expect("expires_at");
    assert!(
        acquired_at >= unlock_started_at,
        "acquired_at ({acquired_at}) is when runq began waiting, not when SET NX \
         succeeded (python let go at {unlock_started_at} or later): {payload}"
    );
    assert_eq!(
        expires_at - acquired_at,
        30,
        "a freshly taken lock has expires_at = acquired_at + ttl (wepppy §2.5): {payload}"
    );
    assert_finished(&redis, &id, "build_climate after waiting");
    worker.sigterm();
    assert_eq!(worker.wait_exit(), Some(0), "{}", worker.logs());
}

#[test]
fn pipeline_with_dependencies_fills_run_state() {
    let redis = RedisServer::start();
    let tmp = TempDir::new("nodb-pipeline");
    let runs = tmp.path().join("runs");
    struct Run {
        runid: &'static str,
        jobs: [(&'static str, String); 4],
    }
    let all: Vec<Run> = ["alpha", "bravo", "charlie"]
        .into_iter()
        .map(|runid| {
            let climate = enqueue(&redis, &["runq.demo.build_climate", runid]);
            let soils = enqueue(&redis, &["runq.demo.build_soils", runid]);
            let landuse = enqueue(&redis, &["runq.demo.build_landuse", runid]);
            // run_wepp works 1 s so its whole-second stamp is strictly later than its
            // inputs' (preflight's `wepp` compares with `>`).
            let wepp = enqueue(
                &redis,
                &[
                    "runq.demo.run_wepp",
                    runid,
                    "1",
                    "--depends-on",
                    &climate,
                    "--depends-on",
                    &soils,
                    "--depends-on",
                    &landuse,
                ],
            );
            assert_eq!(redis.status(&wepp).as_deref(), Some("deferred"));
            Run {
                runid,
                jobs: [
                    ("build_climate", climate),
                    ("build_soils", soils),
                    ("build_landuse", landuse),
                    ("run_wepp", wepp),
                ],
            }
        })
        .collect();
    let mut worker = WorkerCmd::new(&redis).config(&config(&runs, "")).spawn();
    for run in &all {
        for (task, id) in &run.jobs {
            assert_finished(&redis, id, &format!("{task} of {}", run.runid));
        }
    }
    worker.sigterm();
    assert_eq!(worker.wait_exit(), Some(0), "{}", worker.logs());

    for run in &all {
        let runid = run.runid;
        let wd = runs.join(runid);
        let prep: Value = serde_json::from_str(
            &runq(&redis, &["prep", runid, "--json"])
                .ok("runq prep --json")
                .stdout,
        )
        .expect("runq prep --json prints JSON");
        let fields = &prep["fields"];
        for (task, id) in &run.jobs {
            assert_eq!(fields[format!("rq:{task}")], json!(id), "{runid}: {prep}");
        }
        for task in [
            "build_climate",
            "build_soils",
            "build_landuse",
            "run_wepp_watershed",
        ] {
            assert!(
                fields[format!("timestamps:{task}")]
                    .as_str()
                    .is_some_and(|t| t.parse::<i64>().is_ok()),
                "{runid}: timestamps:{task} is integer seconds: {prep}"
            );
        }
        for doc in ["climate", "soils", "landuse", "wepp"] {
            assert_eq!(fields[format!("locked:{doc}.nodb")], json!("false"));
            assert_eq!(get0(&redis, &lock_key(runid, &format!("{doc}.nodb"))), None);
        }
        assert_eq!(prep["checklist"]["wepp"], json!(true), "{runid}: {prep}");

        // redisprep.dump = the run hash minus locked:*.
        let mut expected = run_hash(&redis, runid);
        expected.retain(|k, _| !k.starts_with("locked:"));
        assert!(expected.contains_key("last_modified"), "{expected:?}");
        assert_eq!(
            read_json(&wd.join("redisprep.dump")),
            Value::Object(expected),
            "{runid}: redisprep.dump"
        );

        let wepp = read_json(&wd.join("wepp.nodb"));
        assert_eq!(wepp["py/object"], json!("runq.demo.Wepp"));
        assert_eq!(
            wepp["py/state"]["inputs"],
            json!({"climate.nodb": 1, "landuse.nodb": 1, "soils.nodb": 1}),
            "{runid}: {wepp}"
        );
        assert_eq!(wepp["py/state"]["history"], json!([run.jobs[3].1]));
        let climate = read_json(&wd.join("climate.nodb"));
        assert_eq!(climate["py/object"], json!("runq.demo.Climate"));
        assert_eq!(climate["py/state"]["history"], json!([run.jobs[0].1]));
        assert_eq!(
            std::fs::read_to_string(wd.join("nodb.version")).expect("nodb.version"),
            "1000\n"
        );

        // DB 13: key = absolute path, TTL 72 h, signature = os.stat of the file.
        for doc in ["climate", "soils", "landuse", "wepp"] {
            let path = wd.join(format!("{doc}.nodb"));
            let key = path.to_str().expect("utf-8 path");
            let ttl: i64 = redis::cmd("TTL")
                .arg(key)
                .query(&mut redis.conn_db(13))
                .expect("TTL");
            assert!(
                (259_000..=259_200).contains(&ttl),
                "DB 13 `{key}` TTL is {ttl}, expected about 259200"
            );
            let gate = python_json(
                Py::Rq3,
                &redis,
                &format!(
                    r#"
                    path = {key:?}
                    cached = json.loads(redis.Redis(host='127.0.0.1', port=int(os.environ['RUNQ_TEST_REDIS_PORT']), db=13).get(path))
                    st = os.stat(path)
                    state = dict(cached['py/state'])
                    on_disk = json.load(open(path))
                    mtime, size = state.pop('_nodb_mtime', None), state.pop('_nodb_size', None)
                    disk_state = {{k: v for k, v in on_disk['py/state'].items() if k not in ('_nodb_mtime', '_nodb_size')}}
                    out({{'size_ok': size == st.st_size,
                          'mtime_ok': mtime is not None and abs(mtime - st.st_mtime) <= 1e-6,
                          'mtime': mtime, 'st_mtime': st.st_mtime, 'size': size, 'st_size': st.st_size,
                          'same_object': cached['py/object'] == on_disk['py/object'] and state == disk_state}})
                    "#
                ),
            );
            assert_eq!(gate["size_ok"], json!(true), "{key}: {gate}");
            assert_eq!(
                gate["mtime_ok"],
                json!(true),
                "{key}: wepppy's gate |Δmtime| <= 1e-6: {gate}"
            );
            assert_eq!(
                gate["same_object"],
                json!(true),
                "{key}: cache holds the file's document"
            );
        }
    }
}

#[test]
fn tail_follows_status_lines_in_order() {
    let redis = RedisServer::start();
    let tmp = TempDir::new("nodb-tail");
    let runs = tmp.path().join("runs");
    let tail = spawn_tail(&redis, &["tailrun", "climate", "--count", "4"]);
    redis.wait_channel("tailrun:climate");
    let id = enqueue(&redis, &["runq.demo.build_climate", "tailrun"]);
    WorkerCmd::new(&redis)
        .config(&config(&runs, ""))
        .run_burst();
    assert_finished(&redis, &id, "build_climate");
    assert_eq!(tail_lines(tail), climate_lines(&id, "tailrun", 0));
}

#[test]
fn run_log_level_governs_debug_lines() {
    let redis = RedisServer::start();
    let tmp = TempDir::new("nodb-loglevel");
    let runs = tmp.path().join("runs");
    let mut levels = redis.conn_db(15);
    let _: () = redis::cmd("SET")
        .arg("loglevel:dbgrun")
        .arg("debug")
        .query(&mut levels)
        .expect("SET");
    let _: () = redis::cmd("SET")
        .arg("loglevel:numrun")
        .arg("10")
        .query(&mut levels)
        .expect("SET");
    // All of dbgrun's channels (each line prefixed with its channel), one channel of the
    // others. inforun has no level: INFO, so its first four lines hold no DEBUG line.
    let dbg_tail = spawn_tail(&redis, &["dbgrun", "--count", "6"]);
    wait_pattern_subscriber(&redis);
    let num_tail = spawn_tail(&redis, &["numrun", "climate", "--count", "6"]);
    redis.wait_channel("numrun:climate");
    let info_tail = spawn_tail(&redis, &["inforun", "climate", "--count", "4"]);
    redis.wait_channel("inforun:climate");

    let dbg = enqueue(&redis, &["runq.demo.build_climate", "dbgrun", "2"]);
    let num = enqueue(&redis, &["runq.demo.build_climate", "numrun", "2"]);
    let info = enqueue(&redis, &["runq.demo.build_climate", "inforun", "2"]);
    WorkerCmd::new(&redis)
        .config(&config(&runs, ""))
        .run_burst();
    for id in [&dbg, &num, &info] {
        assert_finished(&redis, id, "build_climate");
    }
    let prefixed: Vec<String> = climate_lines(&dbg, "dbgrun", 2)
        .into_iter()
        .map(|l| format!("dbgrun:climate {l}"))
        .collect();
    assert_eq!(tail_lines(dbg_tail), prefixed, "loglevel `debug`");
    assert_eq!(
        tail_lines(num_tail),
        climate_lines(&num, "numrun", 2),
        "loglevel `10`"
    );
    assert_eq!(
        tail_lines(info_tail),
        climate_lines(&info, "inforun", 0),
        "no loglevel: INFO, no DEBUG lines"
    );
}

#[test]
fn locks_cli_shows_owner_and_operator_actions() {
    let redis = RedisServer::start();
    let tmp = TempDir::new("nodb-lockscli");
    let runs = tmp.path().join("runs");
    let host = py_hostname(&redis);
    let id = enqueue(&redis, &["runq.demo.build_climate", "lockrun", "6"]);
    let mut worker = WorkerCmd::new(&redis).config(&config(&runs, "")).spawn();
    let key = lock_key("lockrun", "climate.nodb");
    wait_until("runq-worker to take the climate lock", || {
        get0(&redis, &key).is_some()
    });
    let owner = format!("{host}:{}", worker.pid());

    let listed: Value = serde_json::from_str(
        &runq(&redis, &["locks", "lockrun", "--json"])
            .ok("runq locks --json")
            .stdout,
    )
    .expect("runq locks --json prints JSON");
    let rows = listed.as_array().expect("an array of locks");
    assert_eq!(rows.len(), 1, "{listed}");
    let row = &rows[0];
    assert_eq!(row["relpath"], json!("climate.nodb"), "{row}");
    assert_eq!(row["locked"], json!(true), "{row}");
    assert_eq!(row["owner"], json!(owner), "{row}");
    assert_eq!(row["flag"], json!("true"), "{row}");
    assert!(
        row["ttl_left_ms"].as_i64().is_some_and(|ms| ms > 0),
        "{row}"
    );
    let token = row["token"].as_str().expect("token").to_string();
    assert!(hex32(&token), "{row}");
    let human = runq(&redis, &["locks", "lockrun"]).ok("runq locks");
    assert!(
        human.stdout.contains("climate.nodb") && human.stdout.contains(&owner),
        "{}",
        human.stdout
    );

    let refused = runq(
        &redis,
        &[
            "locks",
            "lockrun",
            "--unlock",
            "climate.nodb",
            "--token",
            "deadbeefdeadbeefdeadbeefdeadbeef",
        ],
    );
    assert!(
        !refused.status.success(),
        "unlock with a wrong token must fail: {refused:?}"
    );
    assert!(
        refused.stderr.contains("refused") || refused.stdout.contains("refused"),
        "{refused:?}"
    );
    let stored: Value =
        serde_json::from_str(&get0(&redis, &key).expect("the lock stays")).expect("payload");
    assert_eq!(
        stored["token"],
        json!(token),
        "the holder's lock is untouched"
    );
    assert_eq!(
        flag(&redis, "lockrun", "climate.nodb").as_deref(),
        Some("true")
    );

    let other = runq(&redis, &["locks", "otherrun"]).ok("runq locks otherrun");
    assert!(other.stdout.contains("no locks"), "{}", other.stdout);
    let other = runq(&redis, &["locks", "otherrun", "--json"]).ok("runq locks --json");
    assert_eq!(other.stdout.trim(), "[]");

    assert_finished(&redis, &id, "build_climate holding the lock");
    let after: Value = serde_json::from_str(
        &runq(&redis, &["locks", "lockrun", "--json"])
            .ok("runq locks --json")
            .stdout,
    )
    .expect("JSON");
    assert_eq!(
        after,
        json!([{"relpath": "climate.nodb", "locked": false, "owner": null, "token": null,
                "acquired_at": null, "expires_at": null, "ttl_left_ms": null, "flag": "false"}]),
        "released: no key, flag lowered"
    );
    worker.sigterm();
    assert_eq!(worker.wait_exit(), Some(0), "{}", worker.logs());
}

#[test]
fn invalid_runid_and_missing_inputs_fail_cleanly() {
    let redis = RedisServer::start();
    let tmp = TempDir::new("nodb-fail");
    let runs = tmp.path().join("runs");
    std::fs::create_dir_all(&runs).expect("runs dir");

    let bad = enqueue(&redis, &["runq.demo.build_climate", "../x"]);
    assert!(
        run_hash(&redis, "../x").is_empty(),
        "enqueue wrote no run hash for an invalid runid"
    );
    let lines = collect_lines(&redis, "barerun:wepp");
    let bare = enqueue(&redis, &["runq.demo.run_wepp", "barerun"]);
    WorkerCmd::new(&redis)
        .config(&config(&runs, ""))
        .run_burst();

    let text = assert_failed(&redis, &bad, "build_climate of `../x`");
    assert!(
        text.contains("ValueError") && text.contains("../x"),
        "a ValueError naming the runid: {text}"
    );
    let outside: PathBuf = tmp.path().join("x");
    assert!(!outside.exists(), "nothing written outside runs_dir");
    assert!(run_hash(&redis, "../x").is_empty());

    let text = assert_failed(&redis, &bare, "run_wepp without inputs");
    assert!(
        text.starts_with("FileNotFoundError") && text.contains("climate.nodb"),
        "FileNotFoundError naming the missing document: {text}"
    );
    let lines = lines.join().expect("subscriber thread");
    assert_eq!(
        lines.first().map(String::as_str),
        Some(format!("rq:{bare} STARTED run_wepp(barerun)").as_str()),
        "{lines:?}"
    );
    let last = lines.last().expect("lines");
    assert!(
        last.starts_with(&format!(
            "rq:{bare} EXCEPTION run_wepp(barerun): FileNotFoundError"
        )),
        "{lines:?}"
    );
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("TRIGGER") || l.contains("COMPLETED")),
        "{lines:?}"
    );
    let hash = run_hash(&redis, "barerun");
    assert_eq!(hash.get("rq:run_wepp"), Some(&json!(bare)));
    assert!(
        !hash.contains_key("timestamps:run_wepp_watershed"),
        "no stamp on failure: {hash:?}"
    );
    assert_eq!(get0(&redis, &lock_key("barerun", "wepp.nodb")), None);
    assert_eq!(
        flag(&redis, "barerun", "wepp.nodb").as_deref(),
        Some("false")
    );
    assert!(!runs.join("barerun/wepp.nodb").exists());
}
