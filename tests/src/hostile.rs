//! Helpers for `tests/hostile_input.rs`: raw job hashes written straight into Redis
//! (any bytes as id or field), hand-built pickles, one-line failure checks, the worker's
//! memory and CPU from `/proc`, and a `redis-server` started late on a chosen port.

use crate::*;
use std::collections::HashMap;
use std::fs::File;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------
// Raw job hashes

/// Every field of `rq:job:<id>` as raw bytes.
pub fn job_fields(redis: &RedisServer, id: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    redis::cmd("HGETALL")
        .arg(format!("rq:job:{id}"))
        .query(&mut redis.conn())
        .expect("HGETALL")
}

/// The key `rq:job:<id>` for an id of any bytes.
pub fn job_key(id: &[u8]) -> Vec<u8> {
    [b"rq:job:".as_slice(), id].concat()
}

/// Writes a job hash under `rq:job:<id>` (id: any bytes) holding a copy of `template`'s
/// fields with `overrides` on top. Nothing is pushed onto a queue.
pub fn clone_job(redis: &RedisServer, template: &str, id: &[u8], overrides: &[(&str, &[u8])]) {
    let mut fields: HashMap<Vec<u8>, Vec<u8>> = job_fields(redis, template).into_iter().collect();
    assert!(!fields.is_empty(), "template job {template} has no hash");
    for (k, v) in overrides {
        fields.insert(k.as_bytes().to_vec(), v.to_vec());
    }
    let mut cmd = redis::cmd("HSET");
    cmd.arg(job_key(id));
    for (k, v) in &fields {
        cmd.arg(k.as_slice()).arg(v.as_slice());
    }
    let _: i64 = cmd.query(&mut redis.conn()).expect("HSET job");
}

/// `HSET rq:job:<id> field value` for raw bytes.
pub fn hset_raw(redis: &RedisServer, id: &[u8], field: &str, value: &[u8]) {
    let _: i64 = redis::cmd("HSET")
        .arg(job_key(id))
        .arg(field)
        .arg(value)
        .query(&mut redis.conn())
        .expect("HSET");
}

/// `RPUSH rq:queue:<queue> ids...` in one command (ids: any bytes).
pub fn push_ids(redis: &RedisServer, queue: &str, ids: &[&[u8]]) {
    let mut cmd = redis::cmd("RPUSH");
    cmd.arg(format!("rq:queue:{queue}"));
    for id in ids {
        cmd.arg(*id);
    }
    let _: i64 = cmd.query(&mut redis.conn()).expect("RPUSH");
}

/// A field of `rq:job:<id>` (raw id).
pub fn hget_raw(redis: &RedisServer, id: &[u8], field: &str) -> Option<Vec<u8>> {
    redis::cmd("HGET")
        .arg(job_key(id))
        .arg(field)
        .query(&mut redis.conn())
        .expect("HGET")
}

/// Every entry of `rq:results:<id>` (raw id), oldest first.
pub fn results_raw(redis: &RedisServer, id: &[u8]) -> Vec<HashMap<String, Vec<u8>>> {
    let key = [b"rq:results:".as_slice(), id].concat();
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(key)
        .arg("-")
        .arg("+")
        .query(&mut redis.conn())
        .expect("XRANGE");
    reply
        .ids
        .into_iter()
        .map(|e| {
            e.map
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        redis::from_redis_value_ref::<Vec<u8>>(v).expect("bytes"),
                    )
                })
                .collect()
        })
        .collect()
}

/// Raw members of a sorted set.
pub fn zmembers_raw(redis: &RedisServer, key: &str) -> Vec<Vec<u8>> {
    redis::cmd("ZRANGE")
        .arg(key)
        .arg(0)
        .arg(-1)
        .query(&mut redis.conn())
        .expect("ZRANGE")
}

// ---------------------------------------------------------------------------------------
// Payloads

/// zlib, as RQ compresses `data`.
pub fn zlib(bytes: &[u8]) -> Vec<u8> {
    runq_common::payload::deflate(bytes)
}

/// A pickle (protocol 2) of `(func_name, None, [], {})`: RQ's call tuple.
pub fn pickle_call(func: &str) -> Vec<u8> {
    let mut p = b"\x80\x02(".to_vec();
    p.push(b'X');
    p.extend_from_slice(&(func.len() as u32).to_le_bytes());
    p.extend_from_slice(func.as_bytes());
    p.extend_from_slice(b"N]}t.");
    p
}

/// Deterministic pseudo-random bytes (xorshift64*).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

// ---------------------------------------------------------------------------------------
// Outcomes

/// Waits until the job (raw id) has a terminal status; returns it.
pub fn wait_terminal(redis: &RedisServer, id: &[u8]) -> String {
    wait_for(
        &format!("job {} to end", String::from_utf8_lossy(id)),
        || terminal_status(redis, id),
    )
}

fn terminal_status(redis: &RedisServer, id: &[u8]) -> Option<String> {
    hget_raw(redis, id, "status")
        .map(|s| String::from_utf8_lossy(&s).into_owned())
        .filter(|s| matches!(s.as_str(), "finished" | "failed" | "stopped" | "canceled"))
}

/// [`wait_terminal`], failing at once (with the logs) if the worker exits meanwhile.
pub fn wait_terminal_on(redis: &RedisServer, worker: &mut Worker, id: &[u8]) -> String {
    let shown = String::from_utf8_lossy(id).into_owned();
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(s) = terminal_status(redis, id) {
            return s;
        }
        if !worker.running() {
            panic!(
                "runq-worker exited ({:?}) while job {shown} was {:?}\n{}",
                worker.wait_exit(),
                hget_raw(redis, id, "status").map(|s| String::from_utf8_lossy(&s).into_owned()),
                tail(&worker.logs(), 40)
            );
        }
        if Instant::now() > deadline {
            panic!(
                "timed out after {WAIT:?} waiting for job {shown} to end\n{}",
                tail(&worker.logs(), 40)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The last `n` lines of `text`, each clipped to 400 bytes.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| match l.char_indices().nth(400) {
            Some((i, _)) => format!("{}…", &l[..i]),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Waits for the job to end `failed` with exactly one FAILED result entry, and returns
/// its failure text after checking it is one line.
pub fn one_line_failure(redis: &RedisServer, worker: &mut Worker, id: &[u8]) -> String {
    let status = wait_terminal_on(redis, worker, id);
    let shown = String::from_utf8_lossy(id).into_owned();
    let entries = results_raw(redis, id);
    assert_eq!(status, "failed", "job {shown}: results {entries:?}");
    assert_eq!(
        entries.len(),
        1,
        "job {shown} has {} result entries",
        entries.len()
    );
    assert_eq!(
        String::from_utf8_lossy(&entries[0]["type"]),
        "2",
        "job {shown}: the result entry is FAILED"
    );
    let text = RedisServer::exc_text(&entries[0]);
    assert!(
        !text.trim_end().contains('\n'),
        "job {shown}: the failure text is more than one line:\n{text}"
    );
    text
}

/// Asserts the worker is up, runs `runq.tasks.echo 1` on `queue` through it, and asserts
/// it is still up afterwards.
pub fn assert_still_serving(redis: &RedisServer, worker: &mut Worker, queue: &str) -> String {
    assert!(worker.running(), "runq-worker died\n{}", worker.logs());
    let id = enqueue(redis, &["runq.tasks.echo", "1", "--queue", queue]);
    let status = wait_terminal_on(redis, worker, id.as_bytes());
    assert_eq!(
        status,
        "finished",
        "the good job after the bad one: {:?}\n{}",
        redis.results(&id),
        worker.logs()
    );
    assert!(worker.running(), "runq-worker died\n{}", worker.logs());
    id
}

/// The lines of the worker's logs containing every one of `needles`.
pub fn log_lines(worker: &Worker, needles: &[&str]) -> Vec<String> {
    worker
        .logs()
        .lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .map(str::to_string)
        .collect()
}

// ---------------------------------------------------------------------------------------
// /proc

/// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`), in bytes.
pub fn proc_status_bytes(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .unwrap_or_else(|| panic!("/proc/{pid}/status has no {field}"));
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot parse `{line}`"));
    kb * 1024
}

/// Resident memory now.
pub fn rss_bytes(pid: u32) -> u64 {
    proc_status_bytes(pid, "VmRSS")
}

/// Peak resident memory since the process started.
pub fn peak_rss_bytes(pid: u32) -> u64 {
    proc_status_bytes(pid, "VmHWM")
}

/// CPU time (user + system) the process used so far.
pub fn cpu_time(pid: u32) -> Duration {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc stat");
    // The command name may hold spaces: fields start after the last ')'.
    let rest = &text[text.rfind(')').expect("stat has a comm") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After `)`: state is field 3 of stat(5), utime 14, stime 15.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

// ---------------------------------------------------------------------------------------
// A redis-server started late on a chosen port

/// A `redis-server` on a port chosen beforehand (a worker may already be waiting for
/// it); killed on drop.
pub struct LateRedis {
    child: Child,
    pub port: u16,
    _dir: TempDir,
}

impl LateRedis {
    /// Starts the server on `port` and waits until it answers PING.
    pub fn start(port: u16) -> LateRedis {
        let dir = TempDir::new("late-redis");
        let log = File::create(dir.path().join("redis.log")).expect("redis log file");
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--daemonize", "no"])
            .args(["--loglevel", "warning"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::from(log.try_clone().expect("dup log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("cannot run redis-server");
        let deadline = Instant::now() + Duration::from_secs(10);
        let late = loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                panic!("redis-server on port {port} exited with {status}");
            }
            let up = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
                .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(500)))
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                .is_ok();
            if up {
                break LateRedis {
                    child,
                    port,
                    _dir: dir,
                };
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {port} did not answer PING"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        late
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A connection to DB 9.
    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(format!("{}/9", self.url()))
            .and_then(|c| c.get_connection())
            .expect("connect to the late redis")
    }
}

impl Drop for LateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
