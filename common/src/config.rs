//! Configuration: `queues.toml` plus WEPPcloud's environment variables (`REDIS_URL`,
//! `REDIS_HOST`, `REDIS_PORT`, `REDIS_PASSWORD`; also `REDIS_CA_FILE`, and Sentinel's
//! `REDIS_SENTINELS` / `REDIS_SENTINEL_MASTER` / `REDIS_SENTINEL_PASSWORD`), which win over
//! the file. Defaults work with no file at all. A bad file is an error naming file, line and field.

use crate::error::{Error, Result};
use crate::serializer::SerializerKind;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The whole configuration of a runq process.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub redis: RedisConfig,
    pub worker: WorkerConfig,
    /// Queues in priority order (first = highest).
    pub queues: Vec<QueueConfig>,
    /// Task settings keyed by the dotted function name RQ stores.
    pub tasks: BTreeMap<String, TaskConfig>,
    /// The Python task host (`[python]`): absent = no Python tasks.
    pub python: Option<PythonConfig>,
    /// Periodic jobs (`[[cron]]`), enqueued once per tick across every process and host.
    pub cron: Vec<CronConfig>,
    /// Where the file came from, for messages.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            redis: RedisConfig::default(),
            worker: WorkerConfig::default(),
            queues: vec![QueueConfig::named("default")],
            tasks: BTreeMap::new(),
            python: None,
            cron: Vec::new(),
            source: None,
        }
    }
}

/// A periodic job: `func(*args, **kwargs)` on `queue`, every `interval` or on the `cron`
/// expression's ticks (UTC, five fields: minute hour day month weekday).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CronConfig {
    pub name: String,
    pub func: String,
    #[serde(default)]
    pub args: Vec<serde_json::Value>,
    #[serde(default)]
    pub kwargs: serde_json::Map<String, serde_json::Value>,
    #[serde(default = "default_queue")]
    pub queue: String,
    #[serde(default)]
    pub cron: Option<String>,
    /// `90s`, `15m`, `2h` …
    #[serde(default)]
    pub interval: Option<String>,
    /// The enqueued jobs' timeout in seconds (RQ's default when unset).
    #[serde(default)]
    pub timeout: Option<i64>,
}

fn default_queue() -> String {
    "default".into()
}

/// When a periodic job is due.
#[derive(Debug, Clone)]
pub enum CronSchedule {
    Every(i64),
    Cron(Box<croner::Cron>),
}

impl CronSchedule {
    /// The first tick strictly after `after`.
    pub fn next_after(
        &self,
        after: chrono::DateTime<chrono::Utc>,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        match self {
            CronSchedule::Every(secs) => {
                after.checked_add_signed(chrono::TimeDelta::seconds(*secs))
            }
            CronSchedule::Cron(c) => c.find_next_occurrence(&after, false).ok(),
        }
    }
}

impl CronConfig {
    /// The entry's schedule (validated when the configuration is).
    pub fn schedule(&self) -> std::result::Result<CronSchedule, String> {
        match (&self.cron, &self.interval) {
            (Some(expr), None) => {
                let parsed: croner::Cron = expr
                    .parse()
                    .map_err(|e| format!("cron `{expr}` is not a cron expression: {e}"))?;
                Ok(CronSchedule::Cron(Box::new(parsed)))
            }
            (None, Some(every)) => match crate::ints::duration_secs(every) {
                Ok(secs) if secs >= 1 => Ok(CronSchedule::Every(secs)),
                _ => Err(format!(
                    "interval `{every}` is not a duration of 1s to ten years (90s, 15m, 2h, 1d)"
                )),
            },
            _ => Err("set exactly one of `cron` or `interval`".into()),
        }
    }

    fn check(&self) -> std::result::Result<(), String> {
        if !valid_name(&self.name) {
            return Err(format!(
                "cron name `{}` may only hold [A-Za-z0-9_.-]",
                self.name
            ));
        }
        if !valid_dotted(&self.func) {
            return Err(format!(
                "func `{}` is not a dotted function name",
                self.func
            ));
        }
        if !valid_name(&self.queue) {
            return Err(format!(
                "queue `{}` may only hold [A-Za-z0-9_.-]",
                self.queue
            ));
        }
        if self.timeout.is_some_and(|t| !crate::ints::valid_timeout(t)) {
            return Err("timeout must be -1 (no limit) or 1 to ten years in seconds".into());
        }
        self.schedule().map(|_| ())
    }
}

/// The Python task host: one preloaded fork server per worker process that runs every
/// function matching `functions` (see docs/python-tasks.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PythonConfig {
    /// The interpreter, as an argv (never a shell): `["/opt/venv/bin/python"]`.
    pub command: Vec<String>,
    /// Directories prepended to the host's `sys.path`, in order.
    pub path: Vec<PathBuf>,
    /// Modules imported once, before any job.
    pub preload: Vec<String>,
    /// Glob patterns of RQ function names that run in Python (`*` matches dots too).
    pub functions: Vec<String>,
    /// A callable (`module.function`) called in each job's process with the Job first.
    pub before_job: Option<String>,
}

impl Default for PythonConfig {
    fn default() -> Self {
        PythonConfig {
            command: vec!["python3".into()],
            path: Vec::new(),
            preload: Vec::new(),
            functions: Vec::new(),
            before_job: None,
        }
    }
}

impl PythonConfig {
    /// The compiled `functions` patterns (checked when the configuration is validated).
    pub fn patterns(&self) -> Vec<glob::Pattern> {
        self.functions
            .iter()
            .filter_map(|f| glob::Pattern::new(f).ok())
            .collect()
    }

    fn check(&self) -> std::result::Result<(), (String, String)> {
        if self.command.first().is_none_or(|c| c.trim().is_empty()) {
            return Err((
                "command".into(),
                "python.command must name the interpreter (an argv such as [\"/opt/venv/bin/python\"])".into(),
            ));
        }
        for f in &self.functions {
            if let Err(e) = glob::Pattern::new(f) {
                return Err((
                    f.clone(),
                    format!("python.functions: `{f}` is not a glob pattern: {e}"),
                ));
            }
        }
        for m in &self.preload {
            if !valid_dotted(m) {
                return Err((
                    m.clone(),
                    format!("python.preload: `{m}` is not a dotted Python module name"),
                ));
            }
        }
        if let Some(b) = &self.before_job {
            if !valid_dotted(b) || !b.contains('.') {
                return Err((
                    b.clone(),
                    format!("python.before_job: `{b}` is not `module.function`"),
                ));
            }
        }
        Ok(())
    }
}

/// `a.b_c.d`: Python identifiers joined by dots.
fn valid_dotted(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
}

/// Where Redis is and how runq's data is laid out in it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// Base URL; its DB path segment is replaced per logical database.
    pub url: String,
    /// RQ key prefix (RQ's `RQ_KEY_PREFIX`).
    pub prefix: String,
    /// Password injected when the URL carries none.
    pub password: Option<String>,
    /// Username for Redis ACL auth, injected when the URL carries none.
    pub username: Option<String>,
    /// CA bundle for `rediss://` connections.
    pub ca_file: Option<PathBuf>,
    pub db: DbNumbers,
    /// Redis Sentinel (`[redis.sentinel]`): the master is whatever the sentinels name
    /// now; `url`'s host is then unused, its credentials and scheme still apply.
    pub sentinel: Option<SentinelConfig>,
    /// After each batch of job state changes, wait until this many replicas have it
    /// (`WAIT`), at most `wait_timeout_ms`; 0 = do not wait (asynchronous replication).
    pub wait_replicas: u32,
    pub wait_timeout_ms: u64,
}

/// Redis Sentinel, as RQ's `SENTINEL` settings: the sentinels, the master's name, and the
/// sentinels' own credentials.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SentinelConfig {
    /// The name the sentinels monitor the master under (`sentinel monitor <name> ...`).
    pub master: String,
    /// `host:port` of each sentinel.
    pub nodes: Vec<String>,
    /// Credentials for the sentinels (not the master's).
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// Speak TLS to the sentinels (the master's TLS follows `url`'s scheme).
    #[serde(default)]
    pub tls: bool,
}

impl SentinelConfig {
    /// The sentinels as (host, port).
    pub fn addrs(&self) -> std::result::Result<Vec<(String, u16)>, String> {
        self.nodes
            .iter()
            .map(|n| {
                let (host, port) = n
                    .rsplit_once(':')
                    .ok_or_else(|| format!("sentinel node `{n}` is not host:port"))?;
                let port: u16 = port
                    .parse()
                    .map_err(|_| format!("sentinel node `{n}`: port is not a number"))?;
                if host.is_empty() {
                    return Err(format!("sentinel node `{n}` has no host"));
                }
                Ok((host.trim_matches(['[', ']']).to_string(), port))
            })
            .collect()
    }
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: "redis://127.0.0.1:6379".into(),
            prefix: "rq".into(),
            password: None,
            username: None,
            ca_file: None,
            db: DbNumbers::default(),
            sentinel: None,
            wait_replicas: 0,
            wait_timeout_ms: 1000,
        }
    }
}

/// Logical database numbers (WEPPcloud's `RedisDB` enum).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DbNumbers {
    pub rq: u16,
    pub lock: u16,
    pub status: u16,
    pub nodb_cache: u16,
    pub log_level: u16,
}

impl Default for DbNumbers {
    fn default() -> Self {
        DbNumbers {
            rq: 9,
            lock: 0,
            status: 2,
            nodb_cache: 13,
            log_level: 15,
        }
    }
}

/// What to do with jobs still running when a cold shutdown cancels them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InterruptedJobPolicy {
    /// Put the job back at the front of its queue (status `queued`).
    Requeue,
    /// Fail the job with a message saying the worker shut down.
    Fail,
}

/// Worker process defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// Execution slots per process; each is one RQ worker.
    pub concurrency: usize,
    /// Seconds between batched heartbeats. Started-registry deadlines are 3x this.
    pub heartbeat_secs: u64,
    /// Timeout for jobs whose hash has none (RQ: 180).
    pub default_timeout: i64,
    /// Result TTL for jobs without `result_ttl` (RQ: 500).
    pub result_ttl: i64,
    /// Failure TTL for jobs without `failure_ttl` (RQ: one year).
    pub failure_ttl: i64,
    /// Seconds running jobs get to finish after the first SIGTERM.
    pub shutdown_grace_secs: u64,
    /// What a cold shutdown does with interrupted jobs.
    pub interrupted_jobs: InterruptedJobPolicy,
    /// `host:port` for the Prometheus endpoint; empty = off.
    pub metrics_addr: String,
    /// `text` or `json`.
    pub log_format: String,
    /// Seconds between maintenance passes (abandoned jobs, registries).
    pub maintenance_secs: u64,
    /// What maintenance does with abandoned jobs: `fail` (RQ's behaviour) or `requeue`.
    pub abandoned_jobs: InterruptedJobPolicy,
    /// Run the scheduler (due scheduled jobs to their queues) in this process.
    pub scheduler: bool,
    /// Directory holding run directories (`<runs_dir>/<runid>`), for NoDb files.
    pub runs_dir: Option<PathBuf>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            concurrency: 4,
            heartbeat_secs: 10,
            default_timeout: 180,
            result_ttl: 500,
            failure_ttl: 31_536_000,
            shutdown_grace_secs: 30,
            interrupted_jobs: InterruptedJobPolicy::Requeue,
            metrics_addr: String::new(),
            log_format: "text".into(),
            maintenance_secs: 10,
            abandoned_jobs: InterruptedJobPolicy::Fail,
            scheduler: true,
            runs_dir: None,
        }
    }
}

/// One queue a worker listens on.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    pub name: String,
    /// At most this many slots of one process run jobs of this queue at once.
    #[serde(default)]
    pub concurrency: Option<usize>,
    /// Serializer used for jobs `runq enqueue` writes to this queue.
    #[serde(default)]
    pub serializer: SerializerKind,
}

impl QueueConfig {
    pub fn named(name: &str) -> Self {
        QueueConfig {
            name: name.to_string(),
            concurrency: None,
            serializer: SerializerKind::Pickle,
        }
    }
}

/// How one task (by function name) runs: its handler, locks and run-state conventions.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskConfig {
    /// `native:<registered name>` or `exec`; without it, the native handler registered
    /// under the task's own name (to tune a built-in task's locks or timings).
    #[serde(default)]
    pub handler: Option<String>,
    /// For exec handlers: the argv to run (never through a shell).
    #[serde(default)]
    pub command: Vec<String>,
    /// For exec handlers: `json` (arguments as JSON on stdin) or `raw` (payload as stored).
    #[serde(default)]
    pub mode: Option<String>,
    /// NoDb documents (relpaths) whose locks the task holds while it runs.
    #[serde(default)]
    pub locks: Vec<String>,
    /// Which argument carries the runid: a position (`"0"`) or a keyword name.
    #[serde(default)]
    pub runid_arg: Option<String>,
    /// RedisPrep task stamped (`timestamps:<name>`) on success.
    #[serde(default)]
    pub prep_task: Option<String>,
    /// Status channel suffix (`<runid>:<channel>`).
    #[serde(default)]
    pub status_channel: Option<String>,
    /// Timeout override in seconds.
    #[serde(default)]
    pub timeout: Option<i64>,
    #[serde(default)]
    pub lock_ttl: Option<u64>,
    #[serde(default)]
    pub lock_wait: Option<u64>,
}

impl Config {
    /// Loads the file (if any), then applies the environment.
    pub fn load(path: Option<&Path>) -> Result<Config> {
        let mut config = match path {
            Some(p) => Self::from_file(p)?,
            None => Config::default(),
        };
        config.apply_env(|k| std::env::var(k).ok());
        config.validate()?;
        Ok(config)
    }

    /// Parses a TOML file; errors name the file and line.
    pub fn from_file(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ConfigRead {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = Self::from_toml(&text, path)?;
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    /// Parses TOML text attributed to `path`.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let unknown = e
                .message()
                .strip_prefix("unknown field `")
                .and_then(|rest| rest.split('`').next())
                .and_then(|field| {
                    text.lines()
                        .position(|l| l.trim_start().starts_with(field))
                        .map(|i| i + 1)
                });
            let line = unknown.unwrap_or_else(|| {
                e.span()
                    .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
                    .unwrap_or(1)
            });
            let snippet = text.lines().nth(line - 1).unwrap_or("").trim();
            let message = e.message().trim().to_string();
            Error::ConfigFile {
                path: path.to_path_buf(),
                line,
                message: if snippet.is_empty() {
                    message
                } else {
                    format!("{message} (at `{snippet}`)")
                },
            }
        })?;
        let mut config = config;
        config.source = Some(path.to_path_buf());
        config.validate_with_source(Some(text))?;
        Ok(config)
    }

    /// Environment overrides, WEPPcloud style: a non-empty `REDIS_URL` wins; otherwise
    /// `REDIS_HOST`/`REDIS_PORT` build one. `REDIS_PASSWORD` fills a missing password;
    /// `REDIS_CA_FILE` sets the CA bundle for `rediss://`.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) {
        let non_empty = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        if let Some(url) = non_empty("REDIS_URL").or_else(|| non_empty("RQ_REDIS_URL")) {
            self.redis.url = url;
        } else if non_empty("REDIS_HOST").is_some() || non_empty("REDIS_PORT").is_some() {
            let host = non_empty("REDIS_HOST").unwrap_or_else(|| "localhost".into());
            let port = non_empty("REDIS_PORT").unwrap_or_else(|| "6379".into());
            self.redis.url = format!("redis://{host}:{port}");
        }
        if let Some(pw) = non_empty("REDIS_PASSWORD") {
            self.redis.password = Some(pw);
        }
        if let Some(user) = non_empty("REDIS_USERNAME") {
            self.redis.username = Some(user);
        }
        if let Some(prefix) = non_empty("RQ_KEY_PREFIX") {
            self.redis.prefix = prefix;
        }
        if let Some(ca) = non_empty("REDIS_CA_FILE") {
            self.redis.ca_file = Some(PathBuf::from(ca));
        }
        if let (Some(nodes), Some(master)) = (
            non_empty("REDIS_SENTINELS"),
            non_empty("REDIS_SENTINEL_MASTER"),
        ) {
            let mut sentinel = self.redis.sentinel.clone().unwrap_or(SentinelConfig {
                master: String::new(),
                nodes: Vec::new(),
                username: None,
                password: None,
                tls: false,
            });
            sentinel.master = master;
            sentinel.nodes = nodes.split(',').map(|n| n.trim().to_string()).collect();
            if let Some(pw) = non_empty("REDIS_SENTINEL_PASSWORD") {
                sentinel.password = Some(pw);
            }
            self.redis.sentinel = Some(sentinel);
        }
    }

    pub fn validate(&self) -> Result<()> {
        self.validate_with_source(None)
    }

    fn validate_with_source(&self, text: Option<&str>) -> Result<()> {
        let fail = |needle: &str, message: String| -> Error {
            match (&self.source, text) {
                (Some(path), Some(text)) => Error::ConfigFile {
                    path: path.clone(),
                    line: line_of(text, needle),
                    message,
                },
                (Some(path), None) => Error::Config(format!("{}: {message}", path.display())),
                _ => Error::Config(message),
            }
        };
        if self.worker.concurrency == 0 {
            return Err(fail(
                "concurrency",
                "worker.concurrency must be at least 1".into(),
            ));
        }
        if self.worker.heartbeat_secs == 0 {
            return Err(fail(
                "heartbeat_secs",
                "worker.heartbeat_secs must be at least 1".into(),
            ));
        }
        if !crate::ints::valid_timeout(self.worker.default_timeout) {
            return Err(fail(
                "default_timeout",
                format!(
                    "worker.default_timeout must be -1 (no limit) or 1 to {} seconds",
                    crate::ints::MAX_TIMEOUT
                ),
            ));
        }
        if self.worker.heartbeat_secs > 3600 {
            return Err(fail(
                "heartbeat_secs",
                "worker.heartbeat_secs must be at most 3600".into(),
            ));
        }
        for (name, v) in [
            ("result_ttl", self.worker.result_ttl),
            ("failure_ttl", self.worker.failure_ttl),
        ] {
            if !crate::ints::valid_ttl(v) {
                return Err(fail(
                    name,
                    format!(
                        "worker.{name} must be -1 (keep) to {} seconds",
                        crate::ints::MAX_TTL
                    ),
                ));
            }
        }
        for (name, v) in [
            ("shutdown_grace_secs", self.worker.shutdown_grace_secs),
            ("maintenance_secs", self.worker.maintenance_secs),
        ] {
            if v > 86_400 {
                return Err(fail(name, format!("worker.{name} must be at most 86400")));
            }
        }
        if let Err(message) = crate::connect::check_url(&self.redis.url) {
            return Err(fail("url", message));
        }
        if let Some(s) = &self.redis.sentinel {
            if s.master.trim().is_empty() {
                return Err(fail(
                    "master",
                    "redis.sentinel.master must name the master".into(),
                ));
            }
            if s.nodes.is_empty() {
                return Err(fail(
                    "nodes",
                    "redis.sentinel.nodes needs at least one host:port".into(),
                ));
            }
            if let Err(message) = s.addrs() {
                return Err(fail("nodes", format!("redis.sentinel.nodes: {message}")));
            }
        }
        if !matches!(self.worker.log_format.as_str(), "text" | "json") {
            return Err(fail(
                "log_format",
                format!(
                    "worker.log_format must be `text` or `json`, not `{}`",
                    self.worker.log_format
                ),
            ));
        }
        if !valid_prefix(&self.redis.prefix) {
            return Err(fail(
                "prefix",
                format!(
                    "redis.prefix `{}` may only hold [A-Za-z0-9_.:{{}}-]",
                    self.redis.prefix
                ),
            ));
        }
        if self.queues.is_empty() {
            return Err(fail(
                "queues",
                "at least one [[queues]] entry is needed".into(),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for q in &self.queues {
            if !valid_name(&q.name) {
                return Err(fail(
                    &q.name,
                    format!("queue name `{}` may only hold [A-Za-z0-9_.-]", q.name),
                ));
            }
            if !seen.insert(&q.name) {
                return Err(fail(&q.name, format!("queue `{}` is listed twice", q.name)));
            }
            if q.concurrency == Some(0) {
                return Err(fail(
                    &q.name,
                    format!("queue `{}`: concurrency must be at least 1", q.name),
                ));
            }
        }
        for (name, task) in &self.tasks {
            if let Err(message) = task.check() {
                return Err(fail(name, format!("task `{name}`: {message}")));
            }
        }
        if let Some(python) = &self.python {
            if let Err((needle, message)) = python.check() {
                return Err(fail(&needle, message));
            }
        } else if let Some((name, _)) = self
            .tasks
            .iter()
            .find(|(_, t)| t.handler.as_deref() == Some("python"))
        {
            return Err(fail(
                name,
                format!("task `{name}`: handler `python` needs a [python] section"),
            ));
        }
        let mut cron_names = std::collections::HashSet::new();
        for c in &self.cron {
            if let Err(message) = c.check() {
                return Err(fail(&c.name, format!("cron `{}`: {message}", c.name)));
            }
            if !cron_names.insert(&c.name) {
                return Err(fail(&c.name, format!("cron `{}` is listed twice", c.name)));
            }
        }
        Ok(())
    }

    /// The queue's configured serializer, pickle when the queue is not configured.
    pub fn serializer_for(&self, queue: &str) -> SerializerKind {
        self.queues
            .iter()
            .find(|q| q.name == queue)
            .map(|q| q.serializer)
            .unwrap_or_default()
    }

    pub fn queue_names(&self) -> Vec<String> {
        self.queues.iter().map(|q| q.name.clone()).collect()
    }

    pub fn keys(&self) -> crate::Keys {
        crate::Keys::new(&self.redis.prefix)
    }
}

impl TaskConfig {
    fn check(&self) -> std::result::Result<(), String> {
        let handler = self.handler.as_deref().unwrap_or("native:");
        if handler == "python" {
            if !self.command.is_empty() || self.mode.is_some() {
                return Err(
                    "a python handler takes no `command` or `mode` (set them in [python])".into(),
                );
            }
        } else if handler == "exec" {
            if self.command.is_empty() {
                return Err("an exec handler needs a non-empty `command`".into());
            }
            match self.mode.as_deref() {
                None | Some("json") | Some("raw") => {}
                Some(other) => return Err(format!("mode must be `json` or `raw`, not `{other}`")),
            }
        } else if self.handler.is_some()
            && (!handler.starts_with("native:") || handler.len() <= "native:".len())
        {
            return Err(format!(
                "handler must be `native:<name>`, `exec` or `python`, not `{handler}`"
            ));
        }
        for lock in &self.locks {
            let rel = lock.replace('\\', "/");
            if rel.is_empty() || rel.starts_with('/') || rel.split('/').any(|p| p == "..") {
                return Err(format!(
                    "lock `{lock}` must be a relative path inside the run directory"
                ));
            }
        }
        if !self.locks.is_empty() && self.runid_arg.is_none() {
            return Err("a task holding locks needs `runid_arg`".into());
        }
        if self.timeout.is_some_and(|t| !crate::ints::valid_timeout(t)) {
            return Err(format!(
                "timeout must be -1 (no limit) or 1 to {} seconds",
                crate::ints::MAX_TIMEOUT
            ));
        }
        if self.lock_ttl.is_some_and(|t| t == 0 || t > 86_400) {
            return Err("lock_ttl must be 1 to 86400 seconds".into());
        }
        if self.lock_wait.is_some_and(|t| t > 86_400) {
            return Err("lock_wait must be at most 86400 seconds".into());
        }
        Ok(())
    }
}

/// Line number (1-based) of the line `needle` is most likely about: the first line that
/// sets it as a key (`needle = ...`), else the first non-comment line mentioning it, else 1.
fn line_of(text: &str, needle: &str) -> usize {
    let code = |l: &str| l.split('#').next().unwrap_or("").to_string();
    let lines: Vec<String> = text.lines().map(code).collect();
    lines
        .iter()
        .position(|l| {
            let t = l.trim_start();
            t.strip_prefix(needle)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .or_else(|| lines.iter().position(|l| l.contains(needle)))
        .map(|i| i + 1)
        .unwrap_or(1)
}

/// A queue name runq accepts: `[A-Za-z0-9_.-]+` (the worker's config and the CLI alike).
pub fn valid_queue_name(s: &str) -> bool {
    valid_name(s)
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

fn valid_prefix(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '{' | '}'))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error `Config::from_toml` gives for `text` read from `q.toml`.
    fn refusal(text: &str) -> String {
        Config::from_toml(text, Path::new("q.toml"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn defaults_without_file() {
        let c = Config::default();
        assert_eq!(c.queue_names(), vec!["default"]);
        assert_eq!(c.redis.db.rq, 9);
        c.validate().unwrap();
    }

    #[test]
    fn bad_value_names_file_line_and_field() {
        let err = refusal("[worker]\nconcurrency = \"many\"\n");
        assert!(err.starts_with("q.toml:2:"), "{err}");
        assert!(err.contains("concurrency"), "{err}");
    }

    #[test]
    fn unknown_field_is_refused() {
        let err = refusal("[worker]\nconcurency = 3\n");
        assert!(
            err.contains("q.toml:2") && err.contains("concurency"),
            "{err}"
        );
    }

    #[test]
    fn semantic_error_names_line() {
        let err = refusal("[worker]\nheartbeat_secs = 5\nconcurrency = 0\n");
        assert_eq!(err, "q.toml:3: worker.concurrency must be at least 1");
    }

    #[test]
    fn misconfigured_task_is_named() {
        let err = refusal("[tasks.\"a.b\"]\nhandler = \"exec\"\n");
        assert!(
            err.contains("task `a.b`") && err.contains("command"),
            "{err}"
        );
    }

    #[test]
    fn env_overrides_file() {
        let mut c = Config::default();
        c.apply_env(|k| match k {
            "REDIS_HOST" => Some("redis.internal".into()),
            "REDIS_PASSWORD" => Some("s3cret".into()),
            "REDIS_CA_FILE" => Some("/etc/ssl/redis-ca.pem".into()),
            _ => None,
        });
        assert_eq!(c.redis.url, "redis://redis.internal:6379");
        assert_eq!(c.redis.password.as_deref(), Some("s3cret"));
        assert_eq!(
            c.redis.ca_file.as_deref(),
            Some(Path::new("/etc/ssl/redis-ca.pem"))
        );
    }
}
