//! RQ 3.0's job hooks under runq-worker, end to end, on jobs enqueued by the real rq 3.0.0
//! against a private redis-server: webhooks (`Webhook(url, status, method=, headers=)`)
//! received by a local HTTP listener and compared byte for byte with what rq's own Worker
//! sends, unreachable endpoints logged and counted in `/metrics`; job callbacks
//! (`on_success` / `on_failure` / `on_stopped` = `rq.Callback(func, timeout=)`) recording
//! their arguments into Redis, compared with rq's own Worker for raising and slow
//! callbacks; Python callbacks without a `[python]` section; and periodic jobs
//! (`[[cron]]`) shared by two worker processes, across a kill -9 of the leader.
//!
//! RQ's semantics are read from rq 3.0.0 (`rq/webhook.py`, `rq/callbacks.py`,
//! `rq/worker/base.py` `_finalize_success` / `_finalize_failure` / `handle_job_failure`,
//! `rq/worker/worker_classes.py` `_handle_stopped_job`) and, where a Python worker can run
//! the same jobs, observed: the same jobs go to rq's Worker on one queue and runq-worker on
//! another, and the results must match.

use runq_tests::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

// ---------------------------------------------------------------------------------------
// A local webhook listener

/// One HTTP request the listener received.
#[derive(Debug, Clone)]
struct Request {
    method: String,
    /// `/hook/<job id>/<tag>`.
    path: String,
    /// Header names lowercased, in arrival order.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// The job's `status` in Redis when the request arrived.
    job_status: Option<String>,
    /// Entries in the job's results stream when the request arrived.
    results: usize,
    /// The status of the job `<job id>-dep` (its dependent) when the request arrived.
    dep_status: Option<String>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == &name.to_ascii_lowercase())
            .map(|(_, v)| v.as_str())
    }

    fn job_id(&self) -> &str {
        self.path.split('/').nth(2).unwrap_or("")
    }

    fn tag(&self) -> &str {
        self.path.split('/').nth(3).unwrap_or("")
    }

    fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A tiny HTTP/1.1 server on 127.0.0.1 that answers every request `200 OK` and records it,
/// together with the state of the job its path names at that moment.
struct HookServer {
    port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HookServer {
    fn start(redis: &RedisServer) -> HookServer {
        HookServer::start_slow(redis, Duration::ZERO)
    }

    /// A listener that takes `delay` to answer each request (one at a time).
    fn start_slow(redis: &RedisServer, delay: Duration) -> HookServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the webhook listener");
        let port = listener.local_addr().expect("local_addr").port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let client = redis::Client::open(redis.url_db(9)).expect("redis client");
        let (reqs, halt) = (requests.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut conn = client
                .get_connection()
                .expect("listener's redis connection");
            for stream in listener.incoming() {
                if halt.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut stream) = stream else { continue };
                if let Some(mut req) = read_request(&mut stream) {
                    let id = req.job_id().to_string();
                    req.job_status = redis::cmd("HGET")
                        .arg(format!("rq:job:{id}"))
                        .arg("status")
                        .query(&mut conn)
                        .unwrap_or(None);
                    req.results = redis::cmd("XLEN")
                        .arg(format!("rq:results:{id}"))
                        .query(&mut conn)
                        .unwrap_or(0);
                    req.dep_status = redis::cmd("HGET")
                        .arg(format!("rq:job:{id}-dep"))
                        .arg("status")
                        .query(&mut conn)
                        .unwrap_or(None);
                    reqs.lock().expect("requests lock").push(req);
                }
                std::thread::sleep(delay);
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nok",
                );
                let _ = stream.flush();
            }
        });
        HookServer {
            port,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self, job_id: &str, tag: &str) -> String {
        format!("http://127.0.0.1:{}/hook/{job_id}/{tag}", self.port)
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().expect("requests lock").clone()
    }

    /// The requests for jobs whose id starts with `prefix`.
    fn requests_for(&self, prefix: &str) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.job_id().starts_with(prefix))
            .collect()
    }

    /// Waits until at least `n` requests for `prefix` jobs arrived; returns them.
    fn wait_requests(&self, prefix: &str, n: usize) -> Vec<Request> {
        wait_for(&format!("{n} webhook requests for {prefix}*"), || {
            let got = self.requests_for(prefix);
            (got.len() >= n).then_some(got)
        })
    }
}

impl Drop for HookServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one request (head and a `Content-Length` body); `None` for a wake-up connection
/// or garbage.
fn read_request(stream: &mut TcpStream) -> Option<Request> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(pos) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos;
        }
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split_whitespace();
    let method = first.next()?.to_string();
    let path = first.next()?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = data[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&buf[..n]);
    }
    Some(Request {
        method,
        path,
        headers,
        body,
        job_status: None,
        results: 0,
        dep_status: None,
    })
}

// ---------------------------------------------------------------------------------------
// Python, workers

/// tests/py: where hooktasks.py lives.
fn py_dir() -> PathBuf {
    repo_root().join("tests/py")
}

fn py_dir_str() -> String {
    py_dir().to_str().expect("utf-8 path").to_string()
}

fn py(redis: &RedisServer, code: &str) -> String {
    python(Py::Rq3, redis, code)
}

fn py_json(redis: &RedisServer, code: &str) -> Value {
    python_json(Py::Rq3, redis, code)
}

/// Runs the jobs of `queue` with Python rq's own forking Worker (burst), tests/py on the
/// path.
fn rq_worker_burst(redis: &RedisServer, queue: &str) {
    py(
        redis,
        &format!(
            "import sys\nsys.path.insert(0, {:?})\nfrom rq import Worker\n\
             Worker([{queue:?}], connection=conn).work(burst=True)",
            py_dir_str()
        ),
    );
}

/// A worker config with `[python]` running tests/py/hooktasks.py functions in the rq 3.0
/// venv's interpreter.
fn python_config() -> String {
    let python = Py::Rq3.python();
    format!(
        "[worker]\nheartbeat_secs = 1\nmaintenance_secs = 1\n\n\
         [python]\ncommand = [{}]\npath = [{}]\npreload = [\"hooktasks\"]\n\
         functions = [\"hooktasks.*\"]\n",
        serde_json::to_string(python.to_str().expect("utf-8 path")).expect("toml string"),
        serde_json::to_string(&py_dir_str()).expect("toml string"),
    )
}

fn worker<'a>(redis: &'a RedisServer, config: &str, queues: &str) -> WorkerCmd<'a> {
    WorkerCmd::new(redis)
        .config(config)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .args(&["--queues", queues])
}

/// Sends rq's `stop-job` command for `id` (Python's `send_stop_job_command`).
fn stop_job(redis: &RedisServer, id: &str) {
    py(
        redis,
        &format!(
            "from rq.command import send_stop_job_command\nsend_stop_job_command(conn, {id:?})"
        ),
    );
}

/// Waits until the job is `started` and names its worker (so stop-job can reach it).
fn wait_running(redis: &RedisServer, id: &str) {
    redis.wait_status(id, "started");
    wait_until(&format!("{id} to name its worker"), || {
        redis
            .hget(&format!("rq:job:{id}"), "worker_name")
            .is_some_and(|w| !w.is_empty())
    });
}

/// Python: a summary of each job `<queue>-<name>`: status, latest result, the exception
/// lines of its failure text, and what its callbacks recorded (`job_id` replaced by
/// whether it was the job's own id).
fn job_summaries(redis: &RedisServer, queue: &str, names: &[&str]) -> Value {
    py_json(
        redis,
        &format!(
            r#"
            from rq.job import Job
            def lines(text):
                return [l for l in (text or '').splitlines()
                        if l.strip() and not l.startswith((' ', '\t'))
                        and l != 'Traceback (most recent call last):']
            def get(key):
                v = conn.get(key)
                return v.decode() if v is not None else None
            def rec(kind, i):
                v = get('hook:%s:%s' % (kind, i))
                if v is None:
                    return None
                d = json.loads(v)
                d['own_job_id'] = d.pop('job_id') == i
                return d
            res = {{}}
            for n in {names}:
                i = {queue:?} + '-' + n
                j = Job.fetch(i, connection=conn)
                r = j.latest_result()
                res[n] = {{
                    'status': j.get_status().value,
                    'result': r.type.name if r else None,
                    'return_value': r.return_value if r and r.type.name == 'SUCCESSFUL' else None,
                    'exc': lines(r.exc_string) if r else None,
                    'success': rec('success', i), 'failure': rec('failure', i),
                    'stopped': rec('stopped', i),
                    'slow_start': get('hook:slow-start:' + i), 'slow_end': get('hook:slow-end:' + i),
                }}
            out(res)
            "#,
            names = serde_json::to_string(names).expect("names"),
        ),
    )
}

// ---------------------------------------------------------------------------------------
// Metrics

fn scrape(port: u16) -> BTreeMap<String, f64> {
    let (code, body) = http_get(port, "/metrics").expect("the metrics endpoint answers");
    assert_eq!(code, 200, "GET /metrics: {body}");
    parse_metrics(&body).into_iter().collect()
}

fn webhooks_total(samples: &BTreeMap<String, f64>, outcome: &str) -> f64 {
    samples
        .get(&format!("runq_webhooks_total{{outcome=\"{outcome}\"}}"))
        .copied()
        .unwrap_or(0.0)
}

// ---------------------------------------------------------------------------------------
// Webhooks

/// Enqueues, on `queue`, the webhook jobs of the comparison test: `<q>-ok` (echo, with a
/// finished POST, a failed POST and a finished GET webhook, and a dependent `<q>-ok-dep`)
/// and `<q>-fail` (fails twice under `Retry(max=1)`, with a finished and a failed POST
/// webhook, the latter overriding Content-Type).
fn enqueue_webhook_jobs(redis: &RedisServer, hooks: &HookServer, queue: &str) {
    let ok = format!("{queue}-ok");
    let fail = format!("{queue}-fail");
    py(
        redis,
        &format!(
            r#"
            from rq import Queue, Retry, Webhook
            q = Queue({queue:?}, connection=conn)
            ok = q.enqueue('runq.tasks.echo', 1, 'two', job_id={ok:?}, webhooks=[
                Webhook({ok_fin:?}, 'finished', method='POST', headers={{'X-Token': 'secret-1'}}),
                Webhook({ok_failed:?}, 'failed', method='POST'),
                Webhook({ok_get:?}, 'finished', headers={{'X-Get': 'yes'}}),
            ])
            q.enqueue('runq.tasks.noop', job_id={ok_dep:?}, depends_on=ok)
            q.enqueue('runq.tasks.fail', 'kaput', job_id={fail:?}, retry=Retry(max=1), webhooks=[
                Webhook({fail_fin:?}, 'finished', method='POST'),
                Webhook({fail_failed:?}, 'failed', method='POST',
                        headers={{'X-Token': 'secret-2', 'Content-Type': 'application/vnd.test+json'}}),
            ])
            "#,
            ok_fin = hooks.url(&ok, "finished"),
            ok_failed = hooks.url(&ok, "failed"),
            ok_get = hooks.url(&ok, "get"),
            ok_dep = format!("{ok}-dep"),
            fail_fin = hooks.url(&fail, "finished"),
            fail_failed = hooks.url(&fail, "failed"),
        ),
    );
}

/// Python: the body rq's `Webhook.get_payload` builds for each job from its saved state
/// (`json.dumps` of job_id, func_name, status, enqueued_at, ended_at, exc_info).
fn expected_bodies(redis: &RedisServer, queue: &str) -> Value {
    py_json(
        redis,
        &format!(
            r#"
            from rq.job import Job
            def body(i, status):
                j = Job.fetch(i, connection=conn)
                p = {{'job_id': j.id, 'func_name': j.func_name, 'status': status,
                      'enqueued_at': j.enqueued_at.isoformat() if j.enqueued_at else None,
                      'ended_at': j.ended_at.isoformat() if j.ended_at else None}}
                if status == 'failed':
                    p['exc_info'] = j.latest_result().exc_string
                return json.dumps(p)
            out({{'ok': body({queue:?} + '-ok', 'finished'),
                  'fail': body({queue:?} + '-fail', 'failed'),
                  'fail_status': Job.fetch({queue:?} + '-fail', connection=conn).get_status().value,
                  'fail_results': len(Job.fetch({queue:?} + '-fail', connection=conn).results()),
                  'fail_retries_left': Job.fetch({queue:?} + '-fail', connection=conn).retries_left}})
            "#
        ),
    )
}

/// A webhook body with its `ended_at` value taken out (`"ended_at": "<ended_at>"`), and
/// that value as epoch microseconds.
fn without_ended_at(body: &str) -> (String, Option<i64>) {
    let key = "\"ended_at\": \"";
    let Some(start) = body.find(key).map(|i| i + key.len()) else {
        return (body.to_string(), None);
    };
    let Some(len) = body[start..].find('"') else {
        return (body.to_string(), None);
    };
    let value = &body[start..start + len];
    let micros = value
        .strip_suffix("+00:00")
        .and_then(|v| {
            runq_common::timefmt::parse_datetime(&format!("{v}Z"))
                .ok()
                .flatten()
        })
        .map(|t| t.timestamp_micros());
    (
        format!("{}<ended_at>{}", &body[..start], &body[start + len..]),
        micros,
    )
}

/// Asserts that webhook `body` is rq's `expected` payload, `ended_at` aside; returns the
/// body's and the job's `ended_at` (epoch microseconds).
fn assert_payload(body: &str, expected: &str, what: &str) -> (i64, i64) {
    let (got, got_end) = without_ended_at(body);
    let (want, want_end) = without_ended_at(expected);
    assert_eq!(got, want, "{what}");
    (
        got_end.unwrap_or_else(|| panic!("{what}: no isoformat ended_at in {body}")),
        want_end.unwrap_or_else(|| panic!("{what}: the job has no ended_at: {expected}")),
    )
}

/// What the comparison test asserts of one worker's requests for `queue`; returns a
/// description with the job ids taken out, to compare rq's with runq's.
fn check_webhook_requests(
    redis: &RedisServer,
    hooks: &HookServer,
    queue: &str,
    logs: &str,
) -> Value {
    let reqs = hooks.requests_for(&format!("{queue}-"));
    let expected = expected_bodies(redis, queue);
    let ok = format!("{queue}-ok");
    let fail = format!("{queue}-fail");
    let paths: BTreeSet<String> = reqs.iter().map(|r| r.path.clone()).collect();
    // Exactly the matching webhooks, each once: the finished POST and GET of the job that
    // returned, the failed POST of the job that failed for good (not for its retried run).
    assert_eq!(reqs.len(), 3, "{queue}: {reqs:#?}\n{logs}");
    assert_eq!(
        paths,
        BTreeSet::from([
            format!("/hook/{ok}/finished"),
            format!("/hook/{ok}/get"),
            format!("/hook/{fail}/failed"),
        ]),
        "{queue}: {reqs:#?}\n{logs}"
    );
    assert_eq!(expected["fail_status"], "failed", "{expected}");
    // Retry(max=1) used up; a retried run leaves no result in rq 3.0 (handle_job_failure).
    assert_eq!(expected["fail_retries_left"], 0, "{expected}");
    assert_eq!(expected["fail_results"], 1, "{expected}");
    let by_tag = |id: &str, tag: &str| -> Request {
        reqs.iter()
            .find(|r| r.job_id() == id && r.tag() == tag)
            .cloned()
            .unwrap_or_else(|| panic!("no {tag} request for {id}: {reqs:#?}"))
    };

    let fin = by_tag(&ok, "finished");
    assert_eq!(fin.method, "POST", "{fin:#?}");
    assert_eq!(
        fin.header("content-type"),
        Some("application/json"),
        "{fin:#?}"
    );
    assert_eq!(fin.header("x-token"), Some("secret-1"), "{fin:#?}");
    let fin_end = assert_payload(
        &fin.body_text(),
        expected["ok"].as_str().expect("ok body"),
        &format!("{queue}: the finished payload is rq's, from the job's saved state\n{logs}"),
    );
    // Sent after the final state was saved: status and result are in Redis, and the
    // dependent has been released from `deferred`.
    assert_eq!(fin.job_status.as_deref(), Some("finished"), "{fin:#?}");
    assert_eq!(fin.results, 1, "{fin:#?}");
    assert!(
        fin.dep_status.as_deref().is_some_and(|s| s != "deferred"),
        "the dependent is released before the finished webhook: {fin:#?}"
    );

    let get = by_tag(&ok, "get");
    assert_eq!(get.method, "GET", "{get:#?}");
    assert!(get.body.is_empty(), "a GET webhook has no body: {get:#?}");
    assert_eq!(get.header("x-get"), Some("yes"), "{get:#?}");
    assert_eq!(get.job_status.as_deref(), Some("finished"), "{get:#?}");

    let failed = by_tag(&fail, "failed");
    assert_eq!(failed.method, "POST", "{failed:#?}");
    // The webhook's own Content-Type wins over application/json, as in rq.
    assert_eq!(
        failed.header("content-type"),
        Some("application/vnd.test+json"),
        "{failed:#?}"
    );
    assert_eq!(failed.header("x-token"), Some("secret-2"), "{failed:#?}");
    let failed_end = assert_payload(
        &failed.body_text(),
        expected["fail"].as_str().expect("fail body"),
        &format!("{queue}: the failed payload is rq's (exc_info = the failure text)\n{logs}"),
    );
    // ended_at: not before the job ended (rq sends the job's own ended_at; see
    // webhook_ended_at_is_the_jobs_saved_ended_at).
    for (sent, saved) in [fin_end, failed_end] {
        assert!(
            sent >= saved,
            "{queue}: webhook ended_at {sent} before the job's {saved}"
        );
    }
    assert_eq!(failed.job_status.as_deref(), Some("failed"), "{failed:#?}");
    assert_eq!(failed.results, 1, "the failure is saved first: {failed:#?}");

    let body: Value = serde_json::from_slice(&failed.body).expect("JSON body");
    json!({
        "ended_at_is_the_jobs": fin_end.0 == fin_end.1 && failed_end.0 == failed_end.1,
        "requests": reqs.iter()
            .map(|r| format!("{} {} {:?}", r.method, r.tag(), r.job_status))
            .collect::<BTreeSet<_>>(),
        "ok_keys": serde_json::from_slice::<serde_json::Map<String, Value>>(&fin.body)
            .expect("JSON body").keys().cloned().collect::<Vec<_>>(),
        "fail_keys": body.as_object().expect("object").keys().cloned().collect::<Vec<_>>(),
    })
}

#[test]
fn webhooks_carry_rqs_payload_method_and_headers_after_the_final_state_is_saved() {
    let redis = RedisServer::start();
    let hooks = HookServer::start(&redis);
    enqueue_webhook_jobs(&redis, &hooks, "wh-rq");
    enqueue_webhook_jobs(&redis, &hooks, "wh-runq");

    // Python rq's own Worker first: what it sends is the reference.
    rq_worker_burst(&redis, "wh-rq");
    let rq = check_webhook_requests(&redis, &hooks, "wh-rq", "(rq's Worker)");

    let mut w = worker(&redis, "[worker]\nheartbeat_secs = 1\n", "wh-runq").spawn();
    redis.wait_status("wh-runq-ok", "finished");
    redis.wait_status("wh-runq-fail", "failed");
    hooks.wait_requests("wh-runq-", 3);
    // Anything sent twice, or for the retried run, would arrive by now.
    std::thread::sleep(Duration::from_secs(1));
    let mut runq = check_webhook_requests(&redis, &hooks, "wh-runq", &w.logs());
    assert_eq!(
        rq["ended_at_is_the_jobs"], true,
        "rq sends the job's own ended_at"
    );
    // Asserted on its own in webhook_ended_at_is_the_jobs_saved_ended_at.
    runq["ended_at_is_the_jobs"] = json!(true);
    assert_eq!(runq, rq, "{}", w.logs());
    w.sigterm();
    assert_eq!(w.wait_exit(), Some(0), "{}", w.logs());
}

#[test]
fn webhook_ended_at_is_the_jobs_saved_ended_at() {
    let redis = RedisServer::start();
    let hooks = HookServer::start(&redis);
    py(
        &redis,
        &format!(
            r#"
            from rq import Queue, Webhook
            q = Queue('whe', connection=conn)
            q.enqueue('runq.tasks.noop', job_id='whe-ok', webhooks=[Webhook({ok:?}, 'finished', method='POST')])
            q.enqueue('runq.tasks.fail', job_id='whe-fail', webhooks=[Webhook({fail:?}, 'failed', method='POST')])
            "#,
            ok = hooks.url("whe-ok", "finished"),
            fail = hooks.url("whe-fail", "failed"),
        ),
    );
    let mut w = worker(&redis, "", "whe").spawn();
    let got = hooks.wait_requests("whe-", 2);
    let saved = py_json(
        &redis,
        r#"
        from rq.job import Job
        out({i: Job.fetch(i, connection=conn).ended_at.isoformat() for i in ('whe-ok', 'whe-fail')})
        "#,
    );
    for r in &got {
        let body: Value = serde_json::from_slice(&r.body).expect("JSON body");
        assert_eq!(
            body["ended_at"],
            saved[r.job_id()],
            "{}: the payload's ended_at is the job's ended_at",
            r.job_id()
        );
    }
    w.sigterm();
    assert_eq!(w.wait_exit(), Some(0), "{}", w.logs());
}

#[test]
fn unreachable_webhooks_never_fail_the_job_are_logged_and_counted() {
    let redis = RedisServer::start();
    let hooks = HookServer::start(&redis);
    // A port nobody listens on.
    let dead = free_port();
    let dead_url = |id: &str| format!("http://127.0.0.1:{dead}/dead/{id}");
    py(
        &redis,
        &format!(
            r#"
            from rq import Queue, Webhook
            q = Queue('whd', connection=conn)
            q.enqueue('runq.tasks.echo', 'fine', job_id='whd-ok', webhooks=[
                Webhook({ok_dead:?}, 'finished', method='POST'),
                Webhook({ok_live:?}, 'finished', method='POST')])
            q.enqueue('runq.tasks.fail', 'its own failure', job_id='whd-fail', webhooks=[
                Webhook({fail_dead:?}, 'failed', method='POST')])
            "#,
            ok_dead = dead_url("whd-ok"),
            ok_live = hooks.url("whd-ok", "live"),
            fail_dead = dead_url("whd-fail"),
        ),
    );
    let metrics_port = free_port();
    let mut w = worker(&redis, "[worker]\nheartbeat_secs = 1\n", "whd")
        .args(&["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
        .spawn();
    redis.wait_status("whd-ok", "finished");
    redis.wait_status("whd-fail", "failed");
    hooks.wait_requests("whd-ok", 1);
    let samples = wait_for("runq_webhooks_total to count 1 sent and 2 failed", || {
        let s = scrape(metrics_port);
        (webhooks_total(&s, "sent") >= 1.0 && webhooks_total(&s, "failed") >= 2.0).then_some(s)
    });
    assert_eq!(webhooks_total(&samples, "sent"), 1.0, "{samples:?}");
    assert_eq!(webhooks_total(&samples, "failed"), 2.0, "{samples:?}");
    assert_eq!(webhooks_total(&samples, "dropped"), 0.0, "{samples:?}");

    // The jobs' outcomes are their own.
    let v = py_json(
        &redis,
        r#"
        from rq.job import Job
        ok = Job.fetch('whd-ok', connection=conn)
        bad = Job.fetch('whd-fail', connection=conn)
        out({'ok': [ok.get_status().value, ok.return_value(), len(ok.results())],
             'fail': [bad.get_status().value, bad.latest_result().exc_string.strip().splitlines()[-1],
                      len(bad.results())]})
        "#,
    );
    assert_eq!(
        v,
        json!({"ok": ["finished", {"args": ["fine"], "kwargs": {}}, 1],
               "fail": ["failed", "RuntimeError: its own failure", 1]}),
        "{}",
        w.logs()
    );
    // Each failed send is logged with its job and URL.
    let logs = w.logs();
    for id in ["whd-ok", "whd-fail"] {
        assert!(
            logs.lines().any(|l| l.contains("failed to send webhook")
                && l.contains(id)
                && l.contains(&dead_url(id))),
            "no log line for {id}'s unreachable webhook:\n{logs}"
        );
    }
    assert!(w.running(), "the worker stays up:\n{logs}");
    w.sigterm();
    assert_eq!(w.wait_exit(), Some(0), "{}", w.logs());
}

#[test]
fn a_burst_worker_sends_the_webhooks_of_its_last_jobs_before_it_exits() {
    let redis = RedisServer::start();
    let hooks = HookServer::start(&redis);
    py(
        &redis,
        &format!(
            r#"
            from rq import Queue, Webhook
            q = Queue('whb', connection=conn)
            q.enqueue('runq.tasks.noop', job_id='whb-ok', webhooks=[Webhook({ok:?}, 'finished', method='POST')])
            q.enqueue('runq.tasks.fail', job_id='whb-fail', webhooks=[Webhook({fail:?}, 'failed', method='POST')])
            "#,
            ok = hooks.url("whb-ok", "finished"),
            fail = hooks.url("whb-fail", "failed"),
        ),
    );
    let logs = worker(&redis, "", "whb").run_burst();
    // rq's burst worker sends each webhook before it takes the next job or exits.
    let got = hooks.wait_requests("whb-", 2);
    let tags: BTreeSet<(String, String)> = got
        .iter()
        .map(|r| (r.job_id().to_string(), r.tag().to_string()))
        .collect();
    assert_eq!(
        tags,
        BTreeSet::from([
            ("whb-fail".to_string(), "failed".to_string()),
            ("whb-ok".to_string(), "finished".to_string())
        ]),
        "{got:#?}\n{logs}"
    );
}

#[test]
fn a_burst_worker_delivers_every_webhook_to_a_slow_endpoint_before_it_exits() {
    let redis = RedisServer::start();
    // 100 ms per request, one at a time: 40 webhooks take about 4 s to deliver.
    let hooks = HookServer::start_slow(&redis, Duration::from_millis(100));
    let n = 40;
    py(
        &redis,
        &format!(
            r#"
            from rq import Queue, Webhook
            q = Queue('whs', connection=conn)
            for i in range({n}):
                jid = 'whs-%02d' % i
                q.enqueue('runq.tasks.noop', job_id=jid,
                          webhooks=[Webhook({base:?} + jid + '/finished', 'finished', method='POST')])
            "#,
            base = format!("http://127.0.0.1:{}/hook/", hooks.port),
        ),
    );
    let logs = worker(&redis, "", "whs").run_burst();
    // Whatever was accepted before the exit is recorded within a few seconds.
    std::thread::sleep(Duration::from_secs(2));
    let got = wait_for("the listener to go quiet", || {
        let before = hooks.requests_for("whs-").len();
        std::thread::sleep(Duration::from_millis(500));
        let after = hooks.requests_for("whs-");
        (after.len() == before).then_some(after)
    });
    let ids: BTreeSet<String> = got.iter().map(|r| r.job_id().to_string()).collect();
    assert_eq!(
        ids.len(),
        n,
        "{} of {n} webhooks delivered by the burst worker\n{logs}",
        ids.len()
    );
}

// ---------------------------------------------------------------------------------------
// Callbacks

/// The success/failure callback jobs, enqueued on `queue` as `<queue>-<name>`.
const CALLBACK_JOBS: &[&str] = &["ok", "fail", "sraise", "fraise", "sslow", "fslow"];

fn enqueue_callback_jobs(redis: &RedisServer, queue: &str) {
    py(
        redis,
        &format!(
            r#"
            from rq import Queue, Callback
            q = Queue({queue:?}, connection=conn)
            p = {queue:?} + '-'
            ok, fail = Callback('hooktasks.success', timeout=5), Callback('hooktasks.failure', timeout=5)
            q.enqueue('hooktasks.add', 2, 3, job_id=p + 'ok', on_success=ok, on_failure=fail)
            q.enqueue('hooktasks.boom', 'bad input', job_id=p + 'fail', on_success=ok, on_failure=fail)
            q.enqueue('hooktasks.add', 1, 1, job_id=p + 'sraise',
                      on_success=Callback('hooktasks.raising_success'), on_failure=fail)
            q.enqueue('hooktasks.boom', 'x', job_id=p + 'fraise',
                      on_failure=Callback('hooktasks.raising_failure'))
            q.enqueue('hooktasks.add', 1, 2, job_id=p + 'sslow',
                      on_success=Callback('hooktasks.slow', timeout=1), on_failure=fail)
            q.enqueue('hooktasks.boom', 'y', job_id=p + 'fslow',
                      on_failure=Callback('hooktasks.slow', timeout=1))
            "#
        ),
    );
}

/// A callback record as hooktasks._record writes it (own_job_id, status while it ran).
fn record(kind: &str, extra: Value) -> Value {
    let mut base = json!({
        "kind": kind, "own_job_id": true, "job_class": "rq.job.Job",
        "connection": "redis.client.Redis", "db": 9, "ping": true,
        "status_in_redis": "started",
    });
    for (k, v) in extra.as_object().expect("object") {
        base[k] = v.clone();
    }
    base
}

#[test]
fn success_and_failure_callbacks_get_rqs_arguments_and_failing_or_slow_ones_end_the_job_as_in_rq() {
    let redis = RedisServer::start();
    enqueue_callback_jobs(&redis, "cb-rq");
    enqueue_callback_jobs(&redis, "cb-runq");
    rq_worker_burst(&redis, "cb-rq");
    let logs = worker(&redis, &python_config(), "cb-runq")
        .args(&["--concurrency", "3"])
        .run_burst();
    let rq = job_summaries(&redis, "cb-rq", CALLBACK_JOBS);
    let runq = job_summaries(&redis, "cb-runq", CALLBACK_JOBS);

    // What rq 3.0 does (rq/worker/base.py _finalize_success / _finalize_failure,
    // rq/callbacks.py), observed with its own Worker.
    let timeout_line =
        "rq.timeouts.JobTimeoutException: Task exceeded maximum timeout value (1 seconds)";
    let during = "During handling of the above exception, another exception occurred:";
    let failure_rec = |exc_type: &str, exc_value: &str| {
        record(
            "failure",
            json!({"func_name": null, "exc_type": exc_type, "exc_value": exc_value,
                   "exc_matches": true, "traceback": "traceback"}),
        )
    };
    let mut expected = json!({
        // (job, connection, result) while the job is still `started` in Redis.
        "ok": {"status": "finished", "result": "SUCCESSFUL", "return_value": 5, "exc": [],
               "success": record("success", json!({"func_name": "hooktasks.add", "result": "5"})),
               "failure": null, "stopped": null, "slow_start": null, "slow_end": null},
        // (job, connection, exc_type, exc_value, traceback).
        "fail": {"status": "failed", "result": "FAILED", "return_value": null,
                 "exc": ["ValueError: bad input"], "success": null,
                 "failure": failure_rec("ValueError", "bad input"),
                 "stopped": null, "slow_start": null, "slow_end": null},
        // A raising success callback fails the job with its exception; the failure
        // callback then runs with that exception.
        "sraise": {"status": "failed", "result": "FAILED", "return_value": null,
                   "exc": ["RuntimeError: success callback broke"],
                   "success": record("success", json!({"func_name": "hooktasks.add", "result": "2"})),
                   "failure": failure_rec("RuntimeError", "success callback broke"),
                   "stopped": null, "slow_start": null, "slow_end": null},
        // A raising failure callback replaces the job's exception (chained onto it).
        "fraise": {"status": "failed", "result": "FAILED", "return_value": null,
                   "exc": ["ValueError: x", during, "RuntimeError: failure callback broke"],
                   "success": null,
                   "failure": record("failure", json!({"func_name": "hooktasks.boom",
                                                       "exc_type": "ValueError", "exc_value": "x"})),
                   "stopped": null, "slow_start": null, "slow_end": null},
        // A success callback past its timeout: JobTimeoutException, the job fails, the
        // failure callback sees the timeout.
        "sslow": {"status": "failed", "result": "FAILED", "return_value": null,
                  "exc": [timeout_line], "success": null,
                  "failure": failure_rec("JobTimeoutException",
                                         "Task exceeded maximum timeout value (1 seconds)"),
                  "stopped": null, "slow_start": "1", "slow_end": null},
        // A failure callback past its timeout: the timeout replaces the job's exception.
        "fslow": {"status": "failed", "result": "FAILED", "return_value": null,
                  "exc": ["ValueError: y", during, timeout_line], "success": null,
                  "failure": null, "stopped": null, "slow_start": "3", "slow_end": null},
    });
    expected["fail"]["failure"]["func_name"] = json!("hooktasks.boom");
    expected["sraise"]["failure"]["func_name"] = json!("hooktasks.add");
    expected["sslow"]["failure"]["func_name"] = json!("hooktasks.add");
    assert_eq!(
        rq, expected,
        "Python rq's own behaviour differs from the expectation"
    );
    for name in CALLBACK_JOBS {
        assert_eq!(runq[name], rq[name], "job {name}\n{logs}");
    }
}

#[test]
fn stopped_callbacks_run_after_a_stop_and_their_failures_leave_the_job_stopped() {
    let redis = RedisServer::start();
    let names = ["stop", "sslow", "sraise"];
    for queue in ["st-rq", "st-runq"] {
        py(
            &redis,
            &format!(
                r#"
                from rq import Queue, Callback
                q = Queue({queue:?}, connection=conn)
                p = {queue:?} + '-'
                fail = Callback('hooktasks.failure')
                q.enqueue('hooktasks.sleep', 25, job_id=p + 'stop', on_failure=fail,
                          on_stopped=Callback('hooktasks.stopped', timeout=5))
                q.enqueue('hooktasks.sleep', 25, job_id=p + 'sslow', on_failure=fail,
                          on_stopped=Callback('hooktasks.slow', timeout=1))
                q.enqueue('hooktasks.sleep', 25, job_id=p + 'sraise', on_failure=fail,
                          on_stopped=Callback('hooktasks.raising_stopped'))
                "#
            ),
        );
    }
    // rq's forking Worker, one job at a time: stop each as it starts.
    let dir = TempDir::new("rq3-hooks-rq-worker");
    let log = dir.path().join("rq.log");
    let mut rq = py_cli_spawn(
        Py::Rq3,
        &redis,
        "rq",
        &[
            "worker",
            "--burst",
            "--url",
            &redis.rq_url(),
            "--path",
            &py_dir_str(),
            "st-rq",
        ],
        &log,
    );
    for name in names {
        let id = format!("st-rq-{name}");
        wait_running(&redis, &id);
        stop_job(&redis, &id);
        redis.wait_status(&id, "stopped");
    }
    let status = wait_exit_logged(&mut rq, &log);
    let rq_log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "rq worker: {status}\n{rq_log}");

    let mut w = worker(&redis, &python_config(), "st-runq")
        .args(&["--concurrency", "3"])
        .spawn();
    for name in names {
        wait_running(&redis, &format!("st-runq-{name}"));
    }
    for name in names {
        stop_job(&redis, &format!("st-runq-{name}"));
    }
    for name in names {
        redis.wait_status(&format!("st-runq-{name}"), "stopped");
    }
    let rq_v = job_summaries(&redis, "st-rq", &names);
    let runq_v = job_summaries(&redis, "st-runq", &names);

    // rq 3.0 (worker_classes.py _handle_stopped_job): the stopped callback gets (job,
    // connection) while the job is still `started`; a raising or timed-out one is logged
    // and swallowed; the job ends `stopped`; no failure callback.
    let stopped_rec = record("stopped", json!({"func_name": "hooktasks.sleep"}));
    for name in names {
        let v = &rq_v[name];
        assert_eq!(v["status"], "stopped", "rq {name}: {v}\n{rq_log}");
        assert_eq!(v["failure"], Value::Null, "rq {name}: {v}");
        assert_eq!(v["success"], Value::Null, "rq {name}: {v}");
    }
    assert_eq!(rq_v["stop"]["stopped"], stopped_rec, "{rq_v}");
    assert_eq!(rq_v["sraise"]["stopped"], stopped_rec, "{rq_v}");
    assert_eq!(rq_v["sslow"]["slow_start"], "0", "{rq_v}");
    assert_eq!(rq_v["sslow"]["slow_end"], Value::Null, "{rq_v}");

    let logs = w.logs();
    for name in names {
        for key in [
            "status",
            "success",
            "failure",
            "stopped",
            "slow_start",
            "slow_end",
        ] {
            assert_eq!(
                runq_v[name][key], rq_v[name][key],
                "job {name}, {key}: runq {} vs rq {}\n{logs}",
                runq_v[name], rq_v[name]
            );
        }
    }
    // The stopped callbacks that failed are logged, naming the job.
    for name in ["sslow", "sraise"] {
        let id = format!("st-runq-{name}");
        assert!(
            logs.lines()
                .any(|l| l.contains("stopped callback") && l.contains(&id)),
            "no log line for {id}'s failed stopped callback:\n{logs}"
        );
    }
    w.sigterm();
    assert_eq!(w.wait_exit(), Some(0), "{}", w.logs());
}

#[test]
fn python_callbacks_without_a_python_section_fail_the_job_naming_the_callback() {
    let redis = RedisServer::start();
    py(
        &redis,
        r#"
        from rq import Queue, Callback
        q = Queue('np', connection=conn)
        q.enqueue('runq.tasks.noop', job_id='np-ok', on_success=Callback('hooktasks.success'))
        q.enqueue('runq.tasks.fail', 'native failure', job_id='np-fail',
                  on_failure=Callback('hooktasks.failure'))
        q.enqueue('runq.tasks.sleep', 25, job_id='np-stop', on_stopped=Callback('hooktasks.stopped'))
        "#,
    );
    let mut w = worker(&redis, "[worker]\nheartbeat_secs = 1\n", "np")
        .args(&["--concurrency", "3"])
        .spawn();
    redis.wait_status("np-ok", "failed");
    redis.wait_status("np-fail", "failed");
    wait_running(&redis, "np-stop");
    stop_job(&redis, "np-stop");
    redis.wait_status("np-stop", "stopped");
    let v = py_json(
        &redis,
        r#"
        from rq.job import Job
        res = {}
        for i in ('np-ok', 'np-fail', 'np-stop'):
            j = Job.fetch(i, connection=conn)
            r = j.latest_result()
            res[i] = [j.get_status().value, r.type.name if r else None, r.exc_string if r else None]
        out(res)
        "#,
    );
    let logs = w.logs();
    // The success callback cannot run: the job fails (no SUCCESSFUL result), saying which
    // callback and why.
    assert_eq!(v["np-ok"][0], "failed", "{v}\n{logs}");
    assert_eq!(v["np-ok"][1], "FAILED", "{v}");
    let ok_exc = v["np-ok"][2].as_str().unwrap_or("");
    assert!(
        ok_exc.contains("hooktasks.success") && ok_exc.contains("success callback"),
        "{ok_exc}"
    );
    assert!(ok_exc.contains("[python]"), "the reason is given: {ok_exc}");
    // The failure callback cannot run: the job's own failure and the callback's both show.
    let fail_exc = v["np-fail"][2].as_str().unwrap_or("");
    assert_eq!(v["np-fail"][0], "failed", "{v}");
    assert!(
        fail_exc.contains("native failure")
            && fail_exc.contains("hooktasks.failure")
            && fail_exc.contains("failure callback"),
        "{fail_exc}"
    );
    // A stop stays a stop; the stopped callback that could not run is logged by name.
    assert_eq!(v["np-stop"][0], "stopped", "{v}");
    assert!(
        logs.lines()
            .any(|l| l.contains("np-stop") && l.contains("hooktasks.stopped")),
        "the unrunnable stopped callback is not logged by name:\n{logs}"
    );
    // None of them ran anywhere.
    let keys: Vec<String> = redis.conn().keys("hook:*").expect("KEYS");
    assert!(keys.is_empty(), "{keys:?}");
    w.sigterm();
    assert_eq!(w.wait_exit(), Some(0), "{}", w.logs());
}

/// One difference from rq is kept on purpose and asserted: runq's maintenance decides
/// and records the failure atomically first, then runs the callback (status `failed` in
/// Redis while it runs), so a callback never runs for a job whose worker comes back and
/// renews it in between; rq's cleanup runs it while the job is still `started`.
#[test]
fn abandoned_jobs_get_rqs_failure_callback_and_failed_webhook() {
    let redis = RedisServer::start();
    let hooks = HookServer::start(&redis);
    for queue in ["ab-rq", "ab-runq"] {
        let id = format!("{queue}-job");
        py(
            &redis,
            &format!(
                r#"
                from rq import Queue, Callback, Webhook
                Queue({queue:?}, connection=conn).enqueue(
                    'hooktasks.sleep', 25, job_id={id:?}, on_failure=Callback('hooktasks.failure'),
                    webhooks=[Webhook({url:?}, 'failed', method='POST')])
                "#,
                url = hooks.url(&id, "failed"),
            ),
        );
    }
    // One runq worker runs both jobs and dies under them.
    let mut dead = worker(&redis, &python_config(), "ab-rq,ab-runq")
        .args(&["--concurrency", "2"])
        .spawn();
    wait_running(&redis, "ab-rq-job");
    wait_running(&redis, "ab-runq-job");
    dead.kill9();

    // rq's own cleanup (StartedJobRegistry.cleanup, as `rq worker` maintenance runs it)
    // takes ab-rq's job once its started-registry entry expires ...
    py(
        &redis,
        &format!(
            r#"
            import sys, time
            sys.path.insert(0, {:?})
            from rq.job import Job
            from rq.registry import StartedJobRegistry
            reg = StartedJobRegistry('ab-rq', connection=conn)
            deadline = time.time() + 25
            while time.time() < deadline:
                reg.cleanup()
                if Job.fetch('ab-rq-job', connection=conn).get_status().value != 'started':
                    break
                time.sleep(0.2)
            "#,
            py_dir_str()
        ),
    );
    // ... and a second runq worker's maintenance takes ab-runq's.
    let mut w = worker(&redis, &python_config(), "ab-runq").spawn();
    redis.wait_status("ab-rq-job", "failed");
    redis.wait_status("ab-runq-job", "failed");
    wait_until("the abandoned job's failure callback", || {
        redis.exists("hook:failure:ab-runq-job")
    });
    let reqs = hooks.wait_requests("ab-", 2);
    let v = job_summaries(&redis, "ab-rq", &["job"]);
    let rq = &v["job"];
    let v = job_summaries(&redis, "ab-runq", &["job"]);
    let runq = &v["job"];
    let logs = w.logs();

    // rq 3.0 (registry.py cleanup): the failure callback gets (AbandonedJobError,
    // AbandonedJobError(), None) while the job is still `started`; then the failure is
    // recorded, then the failed webhook goes out with the job's (unset) ended_at.
    assert_eq!(
        rq["failure"],
        record(
            "failure",
            json!({"func_name": "hooktasks.sleep", "exc_type": "AbandonedJobError",
                   "exc_value": "", "exc_matches": true, "traceback": "NoneType"})
        ),
        "rq: {rq}"
    );
    assert!(
        rq["exc"][0].as_str().is_some_and(
            |e| e.starts_with("Moved to FailedJobRegistry, due to AbandonedJobError, at ")
        ),
        "rq: {rq}"
    );
    let body_of = |id: &str| -> String {
        let r = reqs
            .iter()
            .find(|r| r.job_id() == id)
            .unwrap_or_else(|| panic!("no webhook for {id}: {reqs:#?}"));
        assert_eq!(r.job_status.as_deref(), Some("failed"), "{r:#?}");
        // The failure time in exc_info and the job id aside.
        let body = r.body_text().replace(id, "<id>");
        match body.find(", due to AbandonedJobError, at ") {
            Some(i) => body[..i].to_string(),
            None => body,
        }
    };
    let (rq_body, runq_body) = (body_of("ab-rq-job"), body_of("ab-runq-job"));
    assert!(rq_body.contains("\"ended_at\": null"), "{rq_body}");

    let mut diffs = Vec::new();
    if runq["status"] != rq["status"] || runq["result"] != rq["result"] {
        diffs.push(format!("outcome: runq {runq} vs rq {rq}"));
    }
    let mut rq_failure = rq["failure"].clone();
    rq_failure["status_in_redis"] = json!("failed");
    if runq["failure"] != rq_failure {
        diffs.push(format!(
            "failure callback record (status in Redis: rq started, runq failed): runq {} vs rq {}",
            runq["failure"], rq["failure"]
        ));
    }
    if runq["exc"].as_array().map(|a| a.len()) != Some(1)
        || !runq["exc"][0].as_str().is_some_and(|e| {
            e.starts_with("Moved to FailedJobRegistry, due to AbandonedJobError, at ")
        })
    {
        diffs.push(format!("failure text: runq {}", runq["exc"]));
    }
    // enqueued_at differs per job: compare the payload with it blanked.
    let blank = |b: &str| -> String {
        let key = "\"enqueued_at\": \"";
        match b.find(key) {
            Some(i) => {
                let start = i + key.len();
                let end = b[start..].find('"').map_or(b.len(), |n| start + n);
                format!("{}<enqueued_at>{}", &b[..start], &b[end..])
            }
            None => b.to_string(),
        }
    };
    if blank(&runq_body) != blank(&rq_body) {
        diffs.push(format!(
            "failed webhook payload: runq {runq_body} vs rq {rq_body}"
        ));
    }
    assert!(diffs.is_empty(), "{}\n{logs}", diffs.join("\n"));
    w.sigterm();
    assert_eq!(w.wait_exit(), Some(0), "{}", w.logs());
}

// ---------------------------------------------------------------------------------------
// Periodic jobs

/// One change of a cron entry's stored state, as the poller saw it.
#[derive(Debug, Clone)]
struct CronObs {
    /// Redis time (ms) when it was seen.
    seen_ms: i64,
    next: i64,
    last: Option<i64>,
    last_job: Option<String>,
}

/// Polls `rq:runq:cron` field `name` every 20 ms in a thread, recording each change.
struct CronPoller {
    seen: Arc<Mutex<Vec<CronObs>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl CronPoller {
    fn start(redis: &RedisServer, name: &str) -> CronPoller {
        let client = redis::Client::open(redis.url_db(9)).expect("redis client");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (out, halt, name) = (seen.clone(), stop.clone(), name.to_string());
        let thread = std::thread::spawn(move || {
            let mut conn = client.get_connection().expect("poller's redis connection");
            let mut prev: Option<String> = None;
            while !halt.load(Ordering::SeqCst) {
                let raw: Option<String> = redis::cmd("HGET")
                    .arg("rq:runq:cron")
                    .arg(&name)
                    .query(&mut conn)
                    .expect("HGET rq:runq:cron");
                if raw.is_some() && raw != prev {
                    let (secs, micros): (i64, i64) =
                        redis::cmd("TIME").query(&mut conn).expect("TIME");
                    let v: Value = serde_json::from_str(raw.as_deref().unwrap_or(""))
                        .expect("cron state is JSON");
                    out.lock().expect("lock").push(CronObs {
                        seen_ms: secs * 1000 + micros / 1000,
                        next: v["next"].as_i64().expect("next"),
                        last: v["last"].as_i64(),
                        last_job: v["last_job"].as_str().map(str::to_string),
                    });
                    prev = raw;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        CronPoller {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn observations(&self) -> Vec<CronObs> {
        self.seen.lock().expect("lock").clone()
    }

    /// Each firing seen: an observation whose last tick or job changed.
    fn fires(&self) -> Vec<CronObs> {
        let mut fires: Vec<CronObs> = Vec::new();
        let mut prev: Option<(Option<i64>, Option<String>)> = None;
        for o in self.observations() {
            let key = (o.last, o.last_job.clone());
            if o.last_job.is_some() && prev.as_ref() != Some(&key) {
                fires.push(o.clone());
            }
            prev = Some(key);
        }
        fires
    }

    fn wait_fires(&self, n: usize) -> Vec<CronObs> {
        wait_for(&format!("{n} periodic jobs"), || {
            let f = self.fires();
            (f.len() >= n).then_some(f)
        })
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for CronPoller {
    fn drop(&mut self) {
        self.stop();
    }
}

fn redis_ms(redis: &RedisServer) -> i64 {
    let (secs, micros): (i64, i64) = redis::cmd("TIME").query(&mut redis.conn()).expect("TIME");
    secs * 1000 + micros / 1000
}

/// `YYYY-mm-dd HH:MM:SS UTC` of epoch seconds (days to civil date, proleptic Gregorian).
fn utc_text(epoch: i64) -> String {
    let (days, secs) = (epoch.div_euclid(86_400), epoch.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

const CRON_CONFIG: &str = r#"
[worker]
heartbeat_secs = 1

[[cron]]
name = "every-second"
func = "runq.tasks.echo"
args = [1, "x"]
kwargs = { k = "v" }
queue = "cronq"
interval = "1s"
"#;

/// The cron leader lock's lifetime (worker/src/cron.rs LOCK_TTL).
const LOCK_TTL_MS: i64 = 5_000;
const INTERVAL_MS: i64 = 1_000;

#[test]
fn cron_entries_fire_once_per_tick_across_two_workers_and_fail_over_after_kill9() {
    let redis = RedisServer::start();
    let mut poller = CronPoller::start(&redis, "every-second");
    // Neither worker listens on cronq: the periodic jobs stay queued to be counted.
    let mut a = worker(&redis, CRON_CONFIG, "other")
        .args(&["--name", "cron-a"])
        .spawn();
    let mut b = worker(&redis, CRON_CONFIG, "other")
        .args(&["--name", "cron-b"])
        .spawn();
    let leads = |w: &Worker| w.logs().contains("leading periodic jobs");

    poller.wait_fires(10);
    let (leader, follower) = if leads(&a) {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    assert!(leads(leader), "{}\n{}", leader.logs(), follower.logs());
    assert!(
        !leads(follower),
        "two leaders at once:\n{}\n{}",
        leader.logs(),
        follower.logs()
    );

    // `runq info` shows the entry with its next run (retried if a tick moves it meanwhile).
    let shown = wait_for("a runq info between two ticks", || {
        let state = |r: &RedisServer| -> Value {
            let raw: String = r.conn().hget("rq:runq:cron", "every-second").expect("HGET");
            serde_json::from_str(&raw).expect("JSON")
        };
        let s1 = state(&redis);
        let out = runq(&redis, &["info"]).ok("runq info");
        let s2 = state(&redis);
        (s1 == s2).then_some((s1, out.stdout))
    });
    let (state, info) = shown;
    let next = state["next"].as_i64().expect("next");
    let prefix = format!(
        "cron every-second: runq.tasks.echo on cronq (every 1s), next run {} (in ",
        utc_text(next)
    );
    let line = info
        .lines()
        .find(|l| l.starts_with("cron every-second:"))
        .unwrap_or_else(|| panic!("runq info lists no cron entry:\n{info}"));
    assert!(line.starts_with(&prefix), "{line}\nexpected {prefix}...");
    assert!(
        line.ends_with(&format!(
            "), last job {}",
            state["last_job"].as_str().expect("last_job")
        )),
        "{line}"
    );
    assert!(info.contains("1 periodic jobs"), "{info}");

    // Kill the leader; its lock lives on until its TTL runs out.
    leader.kill9();
    let killed_ms = redis_ms(&redis);
    let pttl: i64 = redis::cmd("PTTL")
        .arg("rq:runq:cron-lock")
        .query(&mut redis.conn())
        .expect("PTTL");
    assert!(pttl > 0, "the dead leader's lock is still held: {pttl}");
    let lock_expiry_ms = killed_ms + pttl;
    let missed: i64 = {
        let raw: String = redis
            .conn()
            .hget("rq:runq:cron", "every-second")
            .expect("HGET");
        serde_json::from_str::<Value>(&raw).expect("JSON")["next"]
            .as_i64()
            .expect("next")
    };
    std::thread::sleep(Duration::from_millis(100));
    let fired_before_kill = poller.fires().len();
    poller.wait_fires(fired_before_kill + 10); // 20 ticks or more in all
    let follower_logs = follower.logs();
    assert!(
        follower.running() && leads(follower),
        "the surviving worker took over:\n{follower_logs}"
    );
    poller.stop();
    follower.sigterm();
    assert_eq!(follower.wait_exit(), Some(0), "{}", follower.logs());

    let fires = poller.fires();
    let ticks: Vec<i64> = fires.iter().map(|f| f.last.expect("tick")).collect();
    let jobs: Vec<String> = fires
        .iter()
        .map(|f| f.last_job.clone().expect("job"))
        .collect();
    // Ticks strictly increase: no tick fired twice.
    assert!(
        ticks.windows(2).all(|w| w[0] < w[1]),
        "ticks: {ticks:?}\n{fires:#?}"
    );
    // Each fire enqueued one job, at or after its tick, and moved next past it.
    for f in &fires {
        let tick = f.last.expect("tick");
        assert!(f.next > tick, "{f:?}");
        assert!(f.seen_ms >= tick * 1000, "fired before its tick: {f:?}");
    }
    // Exactly the jobs the fires name are in the queue: no double enqueue.
    let mut queued = redis.lrange("rq:queue:cronq");
    queued.sort();
    let mut named = jobs.clone();
    named.sort();
    named.dedup();
    assert_eq!(named.len(), jobs.len(), "a job id named twice: {jobs:?}");
    assert_eq!(queued, named, "the queue vs the fires seen:\n{fires:#?}");

    // The failover: the next tick the dead leader had not fired is fired by the survivor
    // once it can take the lock: no earlier than the dead leader's lock expired, within
    // about one interval of that.
    let catch_up = fires
        .iter()
        .position(|f| f.last == Some(missed))
        .unwrap_or_else(|| panic!("the missed tick {missed} is never fired: {fires:#?}"));
    assert!(catch_up >= 10, "{fires:#?}");
    let cu = &fires[catch_up];
    // Nothing fired between the dead leader's last job and the catch-up.
    assert!(
        fires[catch_up - 1].seen_ms <= killed_ms + 100,
        "a job between the kill and the catch-up: {fires:#?}"
    );
    eprintln!(
        "cron: {} jobs, ticks {ticks:?}; leader killed at {killed_ms} ms (lock {pttl} ms left, \
         missed tick {missed}); the survivor fired it {} ms after the kill",
        fires.len(),
        cu.seen_ms - killed_ms
    );
    assert!(
        cu.seen_ms + 100 >= lock_expiry_ms,
        "fired {} ms before the dead leader's lock expired",
        lock_expiry_ms - cu.seen_ms
    );
    assert!(
        cu.seen_ms <= killed_ms + pttl.max(LOCK_TTL_MS) + INTERVAL_MS + 2_500,
        "took over {} ms after the kill (lock TTL {LOCK_TTL_MS} ms, interval {INTERVAL_MS} ms)",
        cu.seen_ms - killed_ms
    );
    // Caught up once: the seconds missed while nobody led got that one job; the schedule
    // goes on from the catch-up.
    assert!(
        cu.seen_ms / 1000 - missed >= 2,
        "ticks were missed while nobody led: {cu:?}"
    );
    let following = &fires[catch_up + 1];
    assert!(
        following.last.expect("tick") * 1000 > cu.seen_ms - 1000,
        "a missed tick fired again after the catch-up: {fires:#?}"
    );
    // The survivor went on with one job per tick.
    assert!(fires.len() - catch_up >= 9, "{fires:#?}");

    // The jobs are ordinary RQ jobs to Python rq.
    let v = py_json(
        &redis,
        r#"
        from rq import Queue
        jobs = Queue('cronq', connection=conn).jobs
        out(sorted({(j.func_name, json.dumps(j.args), json.dumps(j.kwargs), j.origin,
                     j.get_status().value) for j in jobs}) + [len(jobs)])
        "#,
    );
    assert_eq!(
        v,
        json!([
            [
                "runq.tasks.echo",
                "[1, \"x\"]",
                "{\"k\": \"v\"}",
                "cronq",
                "queued"
            ],
            queued.len()
        ]),
        "{v}"
    );
}
