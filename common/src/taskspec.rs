//! A task's run-state conventions resolved from `[tasks."<name>"]` over runq's built-in
//! defaults: which argument is the runid, which NoDb locks it holds (in acquisition
//! order), which RedisPrep task it stamps, its status channel, timeout and lock timings.
//! The worker uses it to run a job; the CLI uses it to stamp `rq:<key>` at enqueue.

use crate::config::{Config, TaskConfig};
use serde_json::{Map, Value};

/// Lock TTL when a task sets none: short, because runq renews every TTL/3.
pub const DEFAULT_LOCK_TTL: u64 = 60;
/// Seconds a task waits for a held lock when it sets none.
pub const DEFAULT_LOCK_WAIT: u64 = 60;

/// How an exec handler hands the job to its child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecMode {
    /// `{"job_id", "func", "args", "kwargs"}` as JSON on stdin; JSON result.
    Json,
    /// The serialized payload exactly as stored; the result comes back serialized.
    Raw,
}

/// Which handler runs a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handler {
    /// A registered native handler, by its registered name.
    Native(String),
    /// A command run per job (argv, never a shell).
    Exec {
        command: Vec<String>,
        mode: ExecMode,
    },
    /// The Python task host (`[python]`).
    Python,
}

/// Everything runq needs to know about one task name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskSpec {
    pub name: String,
    pub handler: Handler,
    pub runid_arg: Option<String>,
    /// Relpaths, sorted: every task takes its locks in the same order.
    pub locks: Vec<String>,
    pub prep_task: Option<String>,
    pub status_channel: Option<String>,
    pub timeout: Option<i64>,
    pub lock_ttl: u64,
    pub lock_wait: u64,
}

impl TaskSpec {
    /// The spec for `name`: its `[tasks]` entry over the built-in defaults, or the
    /// built-in defaults alone, or a plain native task of that name.
    pub fn resolve(config: &Config, name: &str) -> TaskSpec {
        Self::resolve_with(config, name, false)
    }

    /// [`resolve`](Self::resolve) for a name known to match `[python] functions`: without
    /// a `handler` of its own, it runs in the Python host.
    pub fn resolve_python(config: &Config, name: &str) -> TaskSpec {
        Self::resolve_with(config, name, true)
    }

    fn resolve_with(config: &Config, name: &str, python: bool) -> TaskSpec {
        let own = builtin(name);
        let fallback = || {
            if python {
                TaskSpec {
                    handler: Handler::Python,
                    ..plain(name)
                }
            } else {
                plain(name)
            }
        };
        match config.tasks.get(name) {
            Some(cfg) => {
                let base = match cfg.handler.as_deref() {
                    Some(h) if h.starts_with("native:") => own
                        .or_else(|| builtin(&h["native:".len()..]))
                        .unwrap_or_else(|| plain(name)),
                    _ => own.unwrap_or_else(fallback),
                };
                TaskSpec::from_config(name, cfg, base)
            }
            None => own.unwrap_or_else(fallback),
        }
    }

    fn from_config(name: &str, cfg: &TaskConfig, base: TaskSpec) -> TaskSpec {
        let handler = match cfg.handler.as_deref() {
            Some("python") => Handler::Python,
            Some("exec") => Handler::Exec {
                command: cfg.command.clone(),
                mode: match cfg.mode.as_deref() {
                    Some("raw") => ExecMode::Raw,
                    _ => ExecMode::Json,
                },
            },
            Some(native) => {
                Handler::Native(native.strip_prefix("native:").unwrap_or(native).to_string())
            }
            None => base.handler.clone(),
        };
        let mut locks: Vec<String> = if cfg.locks.is_empty() {
            base.locks
        } else {
            cfg.locks.iter().map(|l| l.replace('\\', "/")).collect()
        };
        locks.sort();
        locks.dedup();
        TaskSpec {
            name: name.to_string(),
            handler,
            runid_arg: cfg.runid_arg.clone().or(base.runid_arg),
            locks,
            prep_task: cfg.prep_task.clone().or(base.prep_task),
            status_channel: cfg.status_channel.clone().or(base.status_channel),
            timeout: cfg.timeout.or(base.timeout),
            lock_ttl: cfg.lock_ttl.unwrap_or(base.lock_ttl),
            lock_wait: cfg.lock_wait.unwrap_or(base.lock_wait),
        }
    }

    /// The function's own name without its module (`build_climate` for
    /// `runq.demo.build_climate`), as WEPPcloud's status lines and `rq:<key>` use it.
    pub fn short_name(&self) -> &str {
        self.name.rsplit('.').next().unwrap_or(&self.name)
    }

    /// The runid from the call's arguments, when the task names one.
    pub fn runid(&self, args: &[Value], kwargs: &Map<String, Value>) -> Option<String> {
        let arg = self.runid_arg.as_deref()?;
        let v = match arg.parse::<usize>() {
            Ok(i) => args.get(i).or_else(|| kwargs.get("runid")),
            Err(_) => kwargs.get(arg),
        }?;
        v.as_str().map(str::to_string)
    }

    /// True when the task runs with run state (a runid argument is configured).
    pub fn has_run_state(&self) -> bool {
        self.runid_arg.is_some()
    }
}

fn plain(name: &str) -> TaskSpec {
    TaskSpec {
        name: name.to_string(),
        handler: Handler::Native(name.to_string()),
        runid_arg: None,
        locks: Vec::new(),
        prep_task: None,
        status_channel: None,
        timeout: None,
        lock_ttl: DEFAULT_LOCK_TTL,
        lock_wait: DEFAULT_LOCK_WAIT,
    }
}

/// The demo NoDb tasks: `(name, document it locks, prep task, channel)`.
pub const DEMO_TASKS: [(&str, &str, &str, &str); 4] = [
    (
        "runq.demo.build_climate",
        "climate.nodb",
        "build_climate",
        "climate",
    ),
    (
        "runq.demo.build_soils",
        "soils.nodb",
        "build_soils",
        "soils",
    ),
    (
        "runq.demo.build_landuse",
        "landuse.nodb",
        "build_landuse",
        "landuse",
    ),
    (
        "runq.demo.run_wepp",
        "wepp.nodb",
        "run_wepp_watershed",
        "wepp",
    ),
];

fn builtin(name: &str) -> Option<TaskSpec> {
    DEMO_TASKS
        .iter()
        .find(|(n, ..)| *n == name)
        .map(|(n, lock, prep, channel)| TaskSpec {
            runid_arg: Some("0".into()),
            locks: vec![lock.to_string()],
            prep_task: Some(prep.to_string()),
            status_channel: Some(channel.to_string()),
            ..plain(n)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::path::Path;

    #[test]
    fn demo_tasks_have_built_in_run_state() {
        let spec = TaskSpec::resolve(&Config::default(), "runq.demo.build_climate");
        assert_eq!(spec.locks, vec!["climate.nodb"]);
        assert_eq!(spec.short_name(), "build_climate");
        assert_eq!(
            spec.runid(&[json!("run-1")], &Map::new()).as_deref(),
            Some("run-1")
        );
    }

    #[test]
    fn config_overrides_and_sorts_locks() {
        let text = r#"
[tasks."my.task"]
handler = "native:runq.demo.build_soils"
runid_arg = "runid"
locks = ["wepp.nodb", "climate.nodb"]
lock_ttl = 9
"#;
        let config = Config::from_toml(text, Path::new("q.toml")).unwrap();
        let spec = TaskSpec::resolve(&config, "my.task");
        assert_eq!(
            spec.handler,
            Handler::Native("runq.demo.build_soils".into())
        );
        assert_eq!(spec.locks, vec!["climate.nodb", "wepp.nodb"]);
        assert_eq!(spec.prep_task.as_deref(), Some("build_soils"));
        assert_eq!(spec.lock_ttl, 9);
        let mut kw = Map::new();
        kw.insert("runid".into(), json!("r"));
        assert_eq!(spec.runid(&[], &kw).as_deref(), Some("r"));
    }

    #[test]
    fn unknown_task_is_plain_native() {
        let spec = TaskSpec::resolve(&Config::default(), "a.b");
        assert_eq!(spec.handler, Handler::Native("a.b".into()));
        assert!(!spec.has_run_state());
    }
}
