//! A private `redis-server` per test ([`RedisServer`], started as [`RedisOpts`] says,
//! optionally TLS-only): its URLs and connections, pausing, restarting and killing it, and
//! helpers that read RQ's keys (job fields, registries, the results stream, worker and
//! command-channel registration) and wait on them.

use crate::process::send_signal;
use crate::{free_port, wait_until, TempDir, TlsFiles, WAIT};
use redis::Commands;
use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A private `redis-server` on a free port, killed on drop. [`start_tls`](Self::start_tls)
/// makes one that speaks TLS only.
pub struct RedisServer {
    child: Child,
    pub port: u16,
    tls: Option<TlsFiles>,
    opts: RedisOpts,
    _dir: TempDir,
}

/// How [`RedisServer::start_opts`] starts a server beyond the defaults: another address
/// (inside a network namespace), a command prefix (`ip netns exec <ns>`), a config file
/// given first (sentinels) and extra arguments (`--replicaof ...`, `--sentinel`).
#[derive(Debug, Clone)]
pub struct RedisOpts {
    /// The address it binds and clients use (default 127.0.0.1).
    pub host: String,
    /// A fixed port (default: a free one on 127.0.0.1).
    pub port: Option<u16>,
    /// Argv run in front of `redis-server`, e.g. `["ip", "netns", "exec", "ns1"]`.
    pub prefix: Vec<String>,
    /// A config file written into the server's directory and given as the first
    /// argument (its text; `redis-server` may rewrite it, as sentinels do).
    pub conf: Option<String>,
    /// Extra arguments after the defaults.
    pub args: Vec<String>,
}

impl Default for RedisOpts {
    fn default() -> Self {
        RedisOpts {
            host: "127.0.0.1".into(),
            port: None,
            prefix: Vec::new(),
            conf: None,
            args: Vec::new(),
        }
    }
}

impl RedisServer {
    /// Starts a server and waits until it answers PING.
    pub fn start() -> RedisServer {
        let mut last_error = String::new();
        for _ in 0..5 {
            let dir = TempDir::new("redis");
            let port = free_port();
            let opts = RedisOpts::default();
            match launch(port, dir.path(), None, &opts) {
                Ok(child) => {
                    return RedisServer {
                        child,
                        port,
                        tls: None,
                        opts,
                        _dir: dir,
                    }
                }
                Err(e) => last_error = e,
            }
        }
        panic!("could not start redis-server: {last_error}");
    }

    /// Starts a server that accepts TLS connections only (no plain port), with a fresh
    /// test CA; [`url`](Self::url) is then `rediss://` and [`ca_file`](Self::ca_file)
    /// is the CA to trust.
    pub fn start_tls() -> RedisServer {
        let mut last_error = String::new();
        for _ in 0..5 {
            let dir = TempDir::new("redis-tls");
            let tls = TlsFiles::generate(dir.path());
            let port = free_port();
            let opts = RedisOpts::default();
            match launch(port, dir.path(), Some(&tls), &opts) {
                Ok(child) => {
                    return RedisServer {
                        child,
                        port,
                        tls: Some(tls),
                        opts,
                        _dir: dir,
                    }
                }
                Err(e) => last_error = e,
            }
        }
        panic!("could not start redis-server with TLS: {last_error}");
    }

    /// Starts a server as `opts` says (plain TCP) and waits until it answers PING;
    /// `Err` with the reason when it cannot be started.
    pub fn start_opts(opts: RedisOpts) -> Result<RedisServer, String> {
        let mut last_error = String::new();
        for _ in 0..5 {
            let dir = TempDir::new("redis");
            let port = opts.port.unwrap_or_else(free_port);
            match launch(port, dir.path(), None, &opts) {
                Ok(child) => {
                    return Ok(RedisServer {
                        child,
                        port,
                        tls: None,
                        opts,
                        _dir: dir,
                    })
                }
                Err(e) => last_error = e,
            }
            if opts.port.is_some() {
                std::thread::sleep(Duration::from_millis(250));
            }
        }
        Err(format!("could not start redis-server: {last_error}"))
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The address clients use (127.0.0.1 unless [`RedisOpts::host`] said otherwise).
    pub fn host(&self) -> &str {
        &self.opts.host
    }

    /// The server's working directory (its log is `redis.log` there).
    pub fn dir(&self) -> &Path {
        self._dir.path()
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("redis.log")).unwrap_or_default()
    }

    /// SIGKILLs the server and reaps it (data not saved; no restart).
    pub fn kill9(&mut self) {
        self.resume();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The CA certificate of a [`start_tls`](Self::start_tls) server.
    pub fn ca_file(&self) -> &Path {
        &self.tls.as_ref().expect("a TLS redis-server").ca
    }

    /// Kills the server (SIGKILL, data lost) and starts a fresh one on the same port.
    pub fn restart(&mut self) {
        self.resume();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut last_error = String::new();
        for _ in 0..20 {
            match launch(self.port, self._dir.path(), self.tls.as_ref(), &self.opts) {
                Ok(child) => {
                    self.child = child;
                    return;
                }
                Err(e) => last_error = e,
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!("could not restart redis-server: {last_error}");
    }

    /// The base URL (no DB): what `REDIS_URL` gets.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://{}:{}", self.opts.host, self.port)
    }

    /// The URL of RQ's database (9), for `rq info --url`.
    pub fn rq_url(&self) -> String {
        format!("{}/9", self.url())
    }

    /// A connection to DB 9.
    pub fn conn(&self) -> redis::Connection {
        self.conn_db(9)
    }

    /// The URL of logical database `db`.
    pub fn url_db(&self, db: u16) -> String {
        format!("{}/{db}", self.url())
    }

    /// A connection to logical database `db` (0: locks and run hashes, 2: status, ...).
    pub fn conn_db(&self, db: u16) -> redis::Connection {
        client(&self.url_db(db), self.tls.as_ref())
            .get_connection()
            .expect("connect to the test redis")
    }

    /// Stops the server process (SIGSTOP): clients block until [`resume`](Self::resume).
    pub fn pause(&self) {
        send_signal(self.child.id(), libc::SIGSTOP);
    }

    pub fn resume(&self) {
        send_signal(self.child.id(), libc::SIGCONT);
    }

    // --- reading RQ state -----------------------------------------------------------

    pub fn hget(&self, key: &str, field: &str) -> Option<String> {
        self.conn().hget(key, field).expect("HGET")
    }

    pub fn hgetall(&self, key: &str) -> HashMap<String, Vec<u8>> {
        self.conn().hgetall(key).expect("HGETALL")
    }

    /// A job's `status` field.
    pub fn status(&self, id: &str) -> Option<String> {
        self.hget(&format!("rq:job:{id}"), "status")
    }

    /// A field of `rq:job:<id>` as text ('' when missing).
    pub fn job_field(&self, id: &str, field: &str) -> String {
        self.hget(&format!("rq:job:{id}"), field)
            .unwrap_or_default()
    }

    /// A datetime field of `rq:job:<id>` (`started_at`, ...) as float epoch seconds;
    /// panics when it is missing or not an RQ datetime.
    pub fn job_time(&self, id: &str, field: &str) -> f64 {
        let text = self.job_field(id, field);
        assert!(!text.is_empty(), "job {id} has no {field}");
        let at = runq_common::timefmt::parse_datetime(&text)
            .unwrap_or_else(|e| panic!("job {id}: {field}: {e}"))
            .unwrap_or_else(|| panic!("job {id}: {field} is an empty datetime"));
        at.timestamp_micros() as f64 / 1e6
    }

    /// Waits until the job has `status`.
    pub fn wait_status(&self, id: &str, status: &str) {
        self.wait_field(&format!("rq:job:{id}"), "status", status);
    }

    /// Waits until hash `key` has `field` = `value`.
    pub fn wait_field(&self, key: &str, field: &str, value: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let now = self.hget(key, field);
            if now.as_deref() == Some(value) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{key}: {field} is {now:?} after {WAIT:?}, expected `{value}`"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn lrange(&self, key: &str) -> Vec<String> {
        self.conn().lrange(key, 0, -1).expect("LRANGE")
    }

    pub fn smembers(&self, key: &str) -> Vec<String> {
        let mut v: Vec<String> = self.conn().smembers(key).expect("SMEMBERS");
        v.sort();
        v
    }

    /// A sorted set's members with scores (as text, so `inf` survives).
    pub fn zrange(&self, key: &str) -> Vec<(String, f64)> {
        self.conn().zrange_withscores(key, 0, -1).expect("ZRANGE")
    }

    pub fn zmembers(&self, key: &str) -> Vec<String> {
        let mut v: Vec<String> = self.zrange(key).into_iter().map(|(m, _)| m).collect();
        v.sort();
        v
    }

    /// A sorted-set member's score.
    pub fn zscore(&self, key: &str, member: &str) -> Option<f64> {
        self.conn().zscore(key, member).expect("ZSCORE")
    }

    pub fn exists(&self, key: &str) -> bool {
        self.conn().exists(key).expect("EXISTS")
    }

    pub fn ttl(&self, key: &str) -> i64 {
        self.conn().ttl(key).expect("TTL")
    }

    /// Redis server time in whole seconds.
    pub fn now_secs(&self) -> i64 {
        let (secs, _): (i64, i64) = redis::cmd("TIME").query(&mut self.conn()).expect("TIME");
        secs
    }

    /// Redis server time as float seconds.
    pub fn now_f64(&self) -> f64 {
        let (secs, micros): (i64, i64) = redis::cmd("TIME").query(&mut self.conn()).expect("TIME");
        secs as f64 + micros as f64 / 1e6
    }

    /// Every entry of `rq:results:<id>`, oldest first, as field maps.
    pub fn results(&self, id: &str) -> Vec<HashMap<String, Vec<u8>>> {
        let reply: redis::streams::StreamRangeReply = self
            .conn()
            .xrange_all(format!("rq:results:{id}"))
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

    /// The `type` of each entry of `rq:results:<id>`, oldest first (1 = successful,
    /// 2 = failed).
    pub fn result_types(&self, id: &str) -> Vec<String> {
        self.results(id)
            .iter()
            .map(|e| String::from_utf8_lossy(e.get("type").expect("entry has type")).into_owned())
            .collect()
    }

    /// The failure text of a results-stream entry (`exc_string` decoded).
    pub fn exc_text(entry: &HashMap<String, Vec<u8>>) -> String {
        runq_common::results::decode_exc_string(
            entry.get("exc_string").expect("entry has exc_string"),
        )
        .expect("exc_string decodes")
    }

    /// Waits until something listens on the worker's command channel `rq:pubsub:<name>`.
    pub fn wait_subscribed(&self, name: &str) {
        self.wait_channel(&format!("rq:pubsub:{name}"));
    }

    /// Waits until `channel` has a subscriber.
    pub fn wait_channel(&self, channel: &str) {
        wait_until(&format!("a subscriber on {channel}"), || {
            let (_, n): (String, i64) = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg(channel)
                .query(&mut self.conn())
                .expect("PUBSUB NUMSUB");
            n > 0
        });
    }

    /// Waits until `rq:worker:<name>` is registered in `rq:workers`.
    pub fn wait_worker(&self, name: &str) {
        let key = format!("rq:worker:{name}");
        wait_until(&format!("worker {name} to register"), || {
            self.smembers("rq:workers").contains(&key)
        });
    }
}

/// A client for `url`, trusting the test CA when the server speaks TLS.
fn client(url: &str, tls: Option<&TlsFiles>) -> redis::Client {
    match tls {
        None => redis::Client::open(url).expect("redis client"),
        Some(tls) => {
            runq_common::tls::install_crypto_provider();
            redis::Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(std::fs::read(&tls.ca).expect("read the test CA")),
                },
            )
            .expect("redis TLS client")
        }
    }
}

/// Runs `redis-server` on `port` (TLS only when `tls` is given) and waits for PING.
fn launch(
    port: u16,
    dir: &Path,
    tls: Option<&TlsFiles>,
    opts: &RedisOpts,
) -> Result<Child, String> {
    let log_path = dir.join("redis.log");
    let log = File::create(&log_path).expect("redis log file");
    let mut cmd = match opts.prefix.split_first() {
        None => Command::new("redis-server"),
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg("redis-server");
            c
        }
    };
    if let Some(text) = &opts.conf {
        let conf = dir.join("redis.conf");
        std::fs::write(&conf, text).expect("write the redis config file");
        cmd.arg(&conf);
    }
    match tls {
        None => cmd.args(["--port", &port.to_string()]),
        Some(tls) => cmd
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .arg("--tls-cert-file")
            .arg(&tls.cert)
            .arg("--tls-key-file")
            .arg(&tls.key)
            .arg("--tls-ca-cert-file")
            .arg(&tls.ca)
            .args(["--tls-auth-clients", "no"]),
    };
    let mut child = cmd
        .args(["--bind", opts.host.as_str()])
        .args(["--save", ""])
        .args(["--appendonly", "no"])
        .args(["--daemonize", "no"])
        .args(["--loglevel", "warning"])
        .arg("--dir")
        .arg(dir)
        .args(&opts.args)
        .stdout(Stdio::from(log.try_clone().expect("dup log")))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("cannot run redis-server: is it installed and on PATH?");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Err(format!(
                "redis-server on port {port} exited with {status}: {}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            ));
        }
        if ping(&opts.host, port, tls) {
            return Ok(child);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("redis-server on port {port} did not answer PING"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ping(host: &str, port: u16, tls: Option<&TlsFiles>) -> bool {
    let scheme = if tls.is_some() { "rediss" } else { "redis" };
    client(&format!("{scheme}://{host}:{port}/"), tls)
        .get_connection_with_timeout(Duration::from_millis(500))
        .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
        .is_ok()
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // Not after kill9: its pid may belong to someone else by now.
        if matches!(self.child.try_wait(), Ok(None)) {
            self.resume();
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
