//! Operating runq: the systemd notify protocol against a fake NOTIFY_SOCKET, batch
//! enqueue of 100,000 jobs with a malformed line (queued in the file's order), and a
//! Redis that requires a password.

use runq_tests::{bin, free_port, wait_until, RedisServer, TempDir};
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs `runq enqueue --file <path>`: its output, stdout and stderr.
fn enqueue_file(redis: &RedisServer, path: &std::path::Path) -> (Output, String, String) {
    let out = Command::new(bin("runq"))
        .args(["enqueue", "--file"])
        .arg(path)
        .env("REDIS_URL", redis.url())
        .output()
        .expect("run runq enqueue --file");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stdout, stderr)
}

#[test]
fn notify_protocol_ready_watchdog_stopping_in_order() {
    let redis = RedisServer::start();
    let dir = TempDir::new("notify");
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind fake NOTIFY_SOCKET");
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut child = Command::new(bin("runq-worker"))
        .args(["--name", "notified", "--concurrency", "1"])
        .env("REDIS_URL", redis.url())
        .env("NOTIFY_SOCKET", &sock_path)
        // 2 s watchdog: the worker pings every second while Redis answers.
        .env("WATCHDOG_USEC", "2000000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn runq-worker");
    let mut seen: Vec<String> = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut sent_term = false;
    while Instant::now() < deadline {
        let n = match sock.recv(&mut buf) {
            Ok(n) => n,
            Err(_) => break,
        };
        let msg = String::from_utf8_lossy(&buf[..n]).to_string();
        for line in msg.lines() {
            if ["READY=1", "WATCHDOG=1", "STOPPING=1"].contains(&line) {
                seen.push(line.to_string());
            }
        }
        if !sent_term && seen.iter().filter(|m| *m == "WATCHDOG=1").count() >= 2 {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            sent_term = true;
        }
        if seen.last().map(String::as_str) == Some("STOPPING=1") {
            break;
        }
    }
    let status = child.wait().expect("worker exit");
    assert!(status.success(), "worker exited with {status:?}");
    assert_eq!(
        seen.first().map(String::as_str),
        Some("READY=1"),
        "{seen:?}"
    );
    let stopping = seen
        .iter()
        .position(|m| m == "STOPPING=1")
        .expect("STOPPING=1 sent");
    let watchdogs = seen[1..stopping]
        .iter()
        .filter(|m| *m == "WATCHDOG=1")
        .count();
    assert!(
        watchdogs >= 2,
        "expected WATCHDOG=1 pings between READY and STOPPING: {seen:?}"
    );
}

#[test]
fn batch_enqueue_100k_with_a_malformed_line() {
    let redis = RedisServer::start();
    let dir = TempDir::new("batch");
    let path = dir.path().join("jobs.jsonl");
    let mut text = String::with_capacity(100_001 * 64);
    for i in 0..100_000 {
        if i == 4242 {
            text.push_str("{\"func\": \"runq.tasks.noop\", \"args\": [1\n");
        }
        text.push_str(&format!(
            "{{\"func\": \"runq.tasks.noop\", \"args\": [{i}], \"queue\": \"bulk\", \"job_id\": \"bulk-{i}\"}}\n"
        ));
    }
    // In the last chunk, depending on a job of the first: deferred only if the chunks
    // reach Redis in the file's order.
    text.push_str(
        "{\"func\": \"runq.tasks.noop\", \"queue\": \"bulk\", \"job_id\": \"late\", \"depends_on\": [\"bulk-0\"]}\n",
    );
    std::fs::write(&path, text).unwrap();
    let (out, stdout, stderr) = enqueue_file(&redis, &path);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a bad line makes the exit non-zero\n{stdout}\n{stderr}"
    );
    assert!(
        stderr.contains("jobs.jsonl:4243:"),
        "bad line reported with its number: {stderr}"
    );
    assert!(stdout.contains("enqueued 100001 jobs"), "{stdout}");
    let mut conn = redis.conn();
    let queued: Vec<String> = redis::cmd("LRANGE")
        .arg("rq:queue:bulk")
        .arg(0)
        .arg(-1)
        .query(&mut conn)
        .unwrap();
    assert_eq!(queued.len(), 100_000);
    let misplaced = queued
        .iter()
        .enumerate()
        .find(|(i, id)| **id != format!("bulk-{i}"));
    assert_eq!(misplaced, None, "the queue holds the file's order");
    let late: String = redis::cmd("HGET")
        .arg("rq:job:late")
        .arg("status")
        .query(&mut conn)
        .unwrap();
    assert_eq!(late, "deferred", "bulk-0 was queued when `late` came");
    eprintln!("batch enqueue: {}", stdout.trim());

    // --strict refuses the whole file and enqueues nothing.
    let out = Command::new(bin("runq"))
        .args(["enqueue", "--strict", "--file"])
        .arg(&path)
        .env("REDIS_URL", redis.url())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let len: i64 = redis::cmd("LLEN")
        .arg("rq:queue:bulk")
        .query(&mut conn)
        .unwrap();
    assert_eq!(len, 100_000, "--strict enqueued nothing more");
}

/// A batch writes its queues' pushes once per queue at its end: the queue order must be
/// what one push per job gives (back pushes in order, front pushes last one first), a
/// refused job must push nothing, and a queue whose key is not a list must refuse its
/// jobs before any of their keys are written while the batch's other jobs go ahead.
#[test]
fn batch_enqueue_keeps_queue_order_and_refuses_a_queue_key_that_is_not_a_list() {
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    let _: () = redis::cmd("RPUSH")
        .arg("rq:queue:mixed")
        .arg("old")
        .query(&mut conn)
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("rq:queue:broken")
        .arg("not a list")
        .query(&mut conn)
        .unwrap();
    let dir = TempDir::new("batch-order");
    let path = dir.path().join("jobs.jsonl");
    let line = |id: &str, queue: &str, extra: &str| {
        format!("{{\"func\": \"runq.tasks.noop\", \"job_id\": \"{id}\", \"queue\": \"{queue}\"{extra}}}\n")
    };
    let text = [
        line("a1", "mixed", ""),
        line("f1", "mixed", ", \"at_front\": true"),
        line("b1", "broken", ""),
        line("a2", "mixed", ""),
        line("a1", "mixed", ""), // already queued: refused
        line("d1", "mixed", ", \"depends_on\": [\"a1\"]"),
        line("f2", "mixed", ", \"at_front\": true"),
        line("o1", "other", ""),
    ]
    .concat();
    std::fs::write(&path, text).unwrap();
    let (out, stdout, stderr) = enqueue_file(&redis, &path);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("enqueued 6 jobs"), "{stdout}");
    assert!(
        stderr.contains(
            "jobs.jsonl:3: WRONGTYPE job b1: the key of queue broken holds a string, not a list"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("jobs.jsonl:5:") && stderr.contains("already exists with status queued"),
        "{stderr}"
    );
    let lrange = |conn: &mut redis::Connection, key: &str| -> Vec<String> {
        redis::cmd("LRANGE")
            .arg(key)
            .arg(0)
            .arg(-1)
            .query(conn)
            .unwrap()
    };
    assert_eq!(
        lrange(&mut conn, "rq:queue:mixed"),
        ["f2", "f1", "old", "a1", "a2"],
        "one RPUSH or LPUSH per job would give this order"
    );
    assert_eq!(lrange(&mut conn, "rq:queue:other"), ["o1"]);
    let broken: String = redis::cmd("GET")
        .arg("rq:queue:broken")
        .query(&mut conn)
        .unwrap();
    assert_eq!(broken, "not a list");
    let b1: i64 = redis::cmd("EXISTS")
        .arg("rq:job:b1")
        .query(&mut conn)
        .unwrap();
    assert_eq!(b1, 0, "the refused job left no hash behind");
    let status: String = redis::cmd("HGET")
        .arg("rq:job:d1")
        .arg("status")
        .query(&mut conn)
        .unwrap();
    assert_eq!(
        status, "deferred",
        "d1 waits for a1, queued earlier in the batch"
    );
    let queues: Vec<String> = redis::cmd("SMEMBERS")
        .arg("rq:queues")
        .query(&mut conn)
        .unwrap();
    let mut queues = queues;
    queues.sort();
    assert_eq!(queues, ["rq:queue:mixed", "rq:queue:other"]);
}

#[test]
fn worker_and_cli_authenticate_with_a_password() {
    let port = free_port();
    let dir = TempDir::new("auth");
    let mut server = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
            "--requirepass",
            "s3cr3t",
        ])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .spawn()
        .expect("start redis-server");
    let url = format!("redis://127.0.0.1:{port}");
    wait_until("password redis up", || {
        Command::new("redis-cli")
            .args([
                "-p",
                &port.to_string(),
                "-a",
                "s3cr3t",
                "--no-auth-warning",
                "ping",
            ])
            .output()
            .map(|o| o.stdout.starts_with(b"PONG"))
            .unwrap_or(false)
    });
    let denied = Command::new(bin("runq"))
        .args(["info"])
        .env("REDIS_URL", &url)
        .env_remove("REDIS_PASSWORD")
        .output()
        .unwrap();
    assert!(!denied.status.success(), "no password: refused");
    let run = |args: &[&str]| {
        Command::new(bin("runq"))
            .args(args)
            .env("REDIS_URL", &url)
            .env("REDIS_PASSWORD", "s3cr3t")
            .output()
            .unwrap()
    };
    let out = run(&["enqueue", "runq.tasks.echo", "7", "--job-id", "authjob"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let w = Command::new(bin("runq-worker"))
        .args(["--burst"])
        .env("REDIS_URL", &url)
        .env("REDIS_PASSWORD", "s3cr3t")
        .output()
        .unwrap();
    assert!(w.status.success(), "{}", String::from_utf8_lossy(&w.stderr));
    let out = run(&["job", "authjob", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], "finished");
    assert_eq!(
        v["return_value"],
        serde_json::json!({"args": [7], "kwargs": {}})
    );
    let _ = server.kill();
    let _ = server.wait();
}
