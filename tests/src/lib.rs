//! Test harness for runq's integration tests: a private `redis-server` per test, the
//! `runq-worker` and `runq` binaries from the cargo target directory, and Python RQ
//! (3.0.0 and 1.16.2) from the virtualenvs `scripts/setup-python.sh` creates.
//!
//! Every wait is bounded ([`WAIT`]) and polls; nothing asserts on speed.

use std::collections::HashMap;
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub use redis::Commands;

pub mod hostile;
pub mod netns;

/// The longest any test waits for something to happen.
pub const WAIT: Duration = Duration::from_secs(30);

/// Root of the repository (the workspace).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// `contrib/python`: the Python modules (`runq.tasks`, `mymod`) Python workers import.
pub fn python_dir() -> PathBuf {
    repo_root().join("contrib/python")
}

/// A binary of the workspace, next to the test executable's `deps` directory.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // <target>/debug/deps/<test>-<hash>  ->  <target>/debug/<name>
    let dir = exe
        .parent()
        .and_then(|deps| {
            if deps.ends_with("deps") {
                deps.parent()
            } else {
                Some(deps)
            }
        })
        .expect("test executable has a directory");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} not found: run `cargo build --workspace` first",
        path.display()
    );
    path
}

/// Polls `check` every 50 ms until it returns `Some`, for at most [`WAIT`].
pub fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = check() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {WAIT:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls until `check` is true, for at most [`WAIT`].
pub fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    wait_for(what, || check().then_some(()))
}

/// Removes Python-style common indentation, so snippets can be indented in Rust code.
pub fn dedent(text: &str) -> String {
    let indent = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    text.lines()
        .map(|l| {
            if l.len() >= indent {
                &l[indent..]
            } else {
                l.trim_start()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

// ---------------------------------------------------------------------------------------
// Temporary directories

/// A directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "runq-tests-{tag}-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------------
// Processes

fn send_signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) with a pid this harness spawned and still owns (not yet reaped).
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

fn wait_child(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return Some(s);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A free TCP port on 127.0.0.1 (never 6379).
pub fn free_port() -> u16 {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
        let port = l.local_addr().expect("local_addr").port();
        if port != 6379 {
            return port;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Redis

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

/// A test CA and a server certificate it signed (for 127.0.0.1 and localhost), made with
/// the `openssl` command-line tool.
pub struct TlsFiles {
    /// The CA certificate (PEM): what `redis.ca_file` points at.
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// Generates a fresh CA and server certificate into `dir`.
    pub fn generate(dir: &Path) -> TlsFiles {
        let files = TlsFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        };
        let ext = dir.join("server.ext");
        std::fs::write(
            &ext,
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .expect("write the certificate extensions");
        let ca_key = dir.join("ca.key");
        let csr = dir.join("server.csr");
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        openssl(&[
            &["req", "-x509", "-days", "2", "-subj", "/CN=runq test CA"],
            &ec[..],
            &[
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
                "-keyout",
                path_str(&ca_key),
                "-out",
                path_str(&files.ca),
            ],
        ]);
        openssl(&[
            &["req", "-subj", "/CN=localhost"],
            &ec[..],
            &["-keyout", path_str(&files.key), "-out", path_str(&csr)],
        ]);
        openssl(&[&[
            "x509",
            "-req",
            "-days",
            "2",
            "-set_serial",
            "1",
            "-in",
            path_str(&csr),
            "-CA",
            path_str(&files.ca),
            "-CAkey",
            path_str(&ca_key),
            "-extfile",
            path_str(&ext),
            "-out",
            path_str(&files.cert),
        ]]);
        files
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

/// Runs `openssl` with the concatenated argument groups; panics with its output on failure.
fn openssl(groups: &[&[&str]]) {
    let args: Vec<&str> = groups.iter().flat_map(|g| g.iter().copied()).collect();
    let out = Command::new("openssl")
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .expect("cannot run openssl: is it installed and on PATH?");
    assert!(
        out.status.success(),
        "openssl {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
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

// ---------------------------------------------------------------------------------------
// runq CLI

/// A finished command.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    fn from(o: std::process::Output) -> Output {
        Output {
            status: o.status,
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// Asserts success and returns self.
    pub fn ok(self, what: &str) -> Output {
        assert!(
            self.status.success(),
            "{what} failed with {}\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }

    pub fn last_line(&self) -> &str {
        self.stdout.lines().last().unwrap_or("").trim()
    }
}

fn clean_env(cmd: &mut Command) -> &mut Command {
    for k in [
        "REDIS_URL",
        "RQ_REDIS_URL",
        "REDIS_HOST",
        "REDIS_PORT",
        "REDIS_PASSWORD",
        "REDIS_USERNAME",
        "RQ_KEY_PREFIX",
        "RUNQ_CONFIG",
        "REDIS_CA_FILE",
    ] {
        cmd.env_remove(k);
    }
    cmd
}

/// Runs `runq ARGS` against `redis_url` (a base URL, for REDIS_URL).
pub fn runq_at(redis_url: &str, args: &[&str]) -> Output {
    runq_env(redis_url, args, &[])
}

/// Runs `runq ARGS` against `redis_url` with extra environment variables.
pub fn runq_env(redis_url: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let out = clean_env(&mut Command::new(bin("runq")))
        .args(args)
        .env("REDIS_URL", redis_url)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run runq");
    Output::from(out)
}

/// Runs `prefix... runq ARGS` (e.g. inside a network namespace: `ip netns exec <ns>`)
/// against `redis_url` with extra environment variables.
pub fn runq_prefixed(
    prefix: &[String],
    redis_url: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> Output {
    let mut cmd = match prefix.split_first() {
        None => Command::new(bin("runq")),
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(bin("runq"));
            c
        }
    };
    let out = clean_env(&mut cmd)
        .args(args)
        .env("REDIS_URL", redis_url)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run runq");
    Output::from(out)
}

/// Runs `runq ARGS` against the test Redis.
pub fn runq(redis: &RedisServer, args: &[&str]) -> Output {
    runq_at(&redis.url(), args)
}

/// `runq enqueue ARGS`; returns the job id (the last line).
pub fn enqueue(redis: &RedisServer, args: &[&str]) -> String {
    let mut full = vec!["enqueue"];
    full.extend_from_slice(args);
    let out = runq(redis, &full).ok(&format!("runq {}", full.join(" ")));
    let id = out.last_line().to_string();
    assert!(
        !id.is_empty() && !id.contains(char::is_whitespace),
        "runq enqueue printed no job id on its last line:\n{}",
        out.stdout
    );
    id
}

/// `runq job ID --json`, parsed.
pub fn job_json(redis: &RedisServer, id: &str) -> serde_json::Value {
    let out = runq(redis, &["job", id, "--json"]).ok("runq job --json");
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("runq job --json is not JSON ({e}):\n{}", out.stdout))
}

// ---------------------------------------------------------------------------------------
// runq-worker

/// How to start a `runq-worker`.
pub struct WorkerCmd<'a> {
    redis: &'a RedisServer,
    args: Vec<String>,
    config: String,
    env: Vec<(String, String)>,
    prefix: Vec<String>,
}

impl<'a> WorkerCmd<'a> {
    pub fn new(redis: &'a RedisServer) -> Self {
        WorkerCmd {
            redis,
            args: Vec::new(),
            config: String::new(),
            env: Vec::new(),
            prefix: Vec::new(),
        }
    }

    /// Runs the worker behind a command prefix, e.g. `["ip", "netns", "exec", "ns1"]`
    /// (the prefix must exec the worker, so its pid is the worker's).
    pub fn prefix(mut self, prefix: &[String]) -> Self {
        self.prefix = prefix.to_vec();
        self
    }

    /// An extra environment variable for the worker.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|s| s.to_string()));
        self
    }

    /// TOML for the worker's config file (REDIS_URL still picks the server).
    pub fn config(mut self, toml: &str) -> Self {
        self.config = dedent(toml);
        self
    }

    pub fn spawn(self) -> Worker {
        let dir = TempDir::new("worker");
        let config = dir.path().join("queues.toml");
        std::fs::write(&config, &self.config).expect("write worker config");
        let stdout = dir.path().join("stdout.log");
        let stderr = dir.path().join("stderr.log");
        let mut cmd = match self.prefix.split_first() {
            None => Command::new(bin("runq-worker")),
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin("runq-worker"));
                c
            }
        };
        let child = clean_env(&mut cmd)
            .arg("--config")
            .arg(&config)
            .args(&self.args)
            .env("REDIS_URL", self.redis.url())
            .env("NO_COLOR", "1")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).expect("worker stdout"))
            .stderr(File::create(&stderr).expect("worker stderr"))
            .spawn()
            .expect("run runq-worker");
        Worker {
            child,
            status: None,
            stdout,
            stderr,
            _dir: dir,
        }
    }

    /// Spawns, waits for the exit, asserts exit code 0, returns the logs.
    pub fn run_burst(self) -> String {
        let mut w = self.args(&["--burst"]).spawn();
        let code = w.wait_exit();
        assert_eq!(
            code,
            Some(0),
            "runq-worker --burst exited with {code:?}\n{}",
            w.logs()
        );
        w.logs()
    }
}

/// Runs `runq-worker ARGS` to completion with no config file added (for start-up
/// errors); bounded by [`WAIT`].
pub fn worker_output(redis_url: &str, args: &[&str]) -> Output {
    let mut child = clean_env(&mut Command::new(bin("runq-worker")))
        .args(args)
        .env("REDIS_URL", redis_url)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run runq-worker");
    if wait_child(&mut child, WAIT).is_none() {
        let _ = child.kill();
        panic!("runq-worker {args:?} did not exit within {WAIT:?}");
    }
    Output::from(
        child
            .wait_with_output()
            .expect("collect runq-worker output"),
    )
}

/// A running (or exited) `runq-worker`; SIGKILLed on drop if still running.
pub struct Worker {
    child: Child,
    status: Option<ExitStatus>,
    stdout: PathBuf,
    stderr: PathBuf,
    _dir: TempDir,
}

impl Worker {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn sigterm(&self) {
        self.signal(libc::SIGTERM);
    }

    /// Sends `sig` to the (still running) worker.
    pub fn signal(&self, sig: libc::c_int) {
        assert!(self.status.is_none(), "worker already exited");
        send_signal(self.pid(), sig);
    }

    pub fn kill9(&mut self) {
        send_signal(self.pid(), libc::SIGKILL);
        self.status = wait_child(&mut self.child, WAIT);
        assert!(self.status.is_some(), "worker survived SIGKILL");
    }

    /// Waits (bounded) for the process to exit; returns its exit code (`None` if killed
    /// by a signal). Panics with the logs if it does not exit.
    pub fn wait_exit(&mut self) -> Option<i32> {
        if self.status.is_none() {
            self.status = wait_child(&mut self.child, WAIT);
        }
        match self.status {
            Some(s) => s.code(),
            None => panic!("runq-worker did not exit within {WAIT:?}\n{}", self.logs()),
        }
    }

    /// True while the process runs.
    pub fn running(&mut self) -> bool {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status.is_none()
    }

    /// stdout then stderr.
    pub fn logs(&self) -> String {
        format!(
            "--- runq-worker stdout ---\n{}\n--- runq-worker stderr ---\n{}",
            std::fs::read_to_string(&self.stdout).unwrap_or_default(),
            std::fs::read_to_string(&self.stderr).unwrap_or_default()
        )
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if self.status.is_none() && self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------
// Python RQ

/// Which Python RQ to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Py {
    /// rq 3.0.0 (`.venv/rq3`, or `RUNQ_PY_RQ3`).
    Rq3,
    /// rq 1.16.2 (`.venv/rq116`, or `RUNQ_PY_RQ116`).
    Rq116,
}

impl Py {
    /// The interpreter of the venv.
    pub fn python(self) -> PathBuf {
        let (var, dir) = match self {
            Py::Rq3 => ("RUNQ_PY_RQ3", "rq3"),
            Py::Rq116 => ("RUNQ_PY_RQ116", "rq116"),
        };
        let path = std::env::var_os(var)
            .map(PathBuf::from)
            .unwrap_or_else(|| repo_root().join(".venv").join(dir).join("bin/python"));
        assert!(
            path.exists(),
            "{} not found: run scripts/setup-python.sh (or set {var})",
            path.display()
        );
        path
    }

    /// A console script (`rq`) of the same venv.
    pub fn script(self, name: &str) -> PathBuf {
        let path = self.python().with_file_name(name);
        assert!(
            path.exists(),
            "{} not found: run scripts/setup-python.sh",
            path.display()
        );
        path
    }
}

/// Lines every snippet starts with: `conn` (DB 9 of the test Redis) and `out(value)`,
/// which prints JSON on one line.
const PRELUDE: &str = "\
import json, os, sys
import redis
conn = redis.Redis(host='127.0.0.1', port=int(os.environ['RUNQ_TEST_REDIS_PORT']), db=9)
def out(value):
    print(json.dumps(value, default=str, sort_keys=True))
    sys.stdout.flush()
";

fn python_command(redis: &RedisServer, program: &Path) -> Command {
    let mut cmd = Command::new(program);
    clean_env(&mut cmd)
        .current_dir(python_dir())
        .env("PYTHONPATH", python_dir())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("RUNQ_TEST_REDIS_PORT", redis.port.to_string())
        .stdin(Stdio::null());
    cmd
}

/// Runs a Python snippet (dedented, after [`PRELUDE`]); asserts it succeeds; returns stdout.
pub fn python(py: Py, redis: &RedisServer, code: &str) -> String {
    python_env(py, redis, code, &[])
}

/// [`python`] with extra environment variables (e.g. `RQ_KEY_PREFIX`).
pub fn python_env(py: Py, redis: &RedisServer, code: &str, env: &[(&str, &str)]) -> String {
    let script = format!("{PRELUDE}{}\n", dedent(code));
    let out = python_command(redis, &py.python())
        .envs(env.iter().copied())
        .arg("-c")
        .arg(&script)
        .output()
        .expect("run python");
    let out = Output::from(out);
    assert!(
        out.status.success(),
        "{py:?} python snippet failed with {}\n--- script ---\n{script}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
    out.stdout
}

/// Runs a snippet and parses the last stdout line as JSON (what `out(...)` printed).
pub fn python_json(py: Py, redis: &RedisServer, code: &str) -> serde_json::Value {
    let stdout = python(py, redis, code);
    let last = stdout.lines().last().unwrap_or("");
    serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("python printed no JSON last line ({e}):\n{stdout}"))
}

/// Runs a console script of the venv (`rq info ...`, `rq worker ...`) with cwd and
/// PYTHONPATH at contrib/python. Does not assert success.
pub fn py_cli(py: Py, redis: &RedisServer, script: &str, args: &[&str]) -> Output {
    let out = python_command(redis, &py.script(script))
        .args(args)
        .output()
        .expect("run python console script");
    Output::from(out)
}

/// Starts a console script of the venv in the background, stdout and stderr to `log`.
pub fn py_cli_spawn(py: Py, redis: &RedisServer, script: &str, args: &[&str], log: &Path) -> Child {
    let file = File::create(log).expect("python log file");
    python_command(redis, &py.script(script))
        .args(args)
        .stdout(Stdio::from(file.try_clone().expect("dup log")))
        .stderr(Stdio::from(file))
        .spawn()
        .expect("run python console script")
}

/// Waits (bounded) for a child to exit and returns its status.
pub fn wait_exit(child: &mut Child) -> ExitStatus {
    match wait_child(child, WAIT) {
        Some(s) => s,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("process {} did not exit within {WAIT:?}", child.id());
        }
    }
}

// ---------------------------------------------------------------------------------------
// HTTP (the worker's metrics endpoint)

/// `GET path` on 127.0.0.1:`port`; returns the status code and body, or `None` when
/// nothing answers (connection refused or no response within 10 s).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

/// The samples of a Prometheus/OpenMetrics text body: `name{labels}` → value.
pub fn parse_metrics(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.to_string(), value.parse().ok()?))
        })
        .collect()
}
