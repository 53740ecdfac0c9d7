//! The process's task table: every function name this worker runs, resolved to its
//! handler and [`TaskSpec`] — configured tasks, the built-in demo tasks, every registered
//! native handler, and any name matching `[python] functions` (resolved when a job asks,
//! so wepppy's hundred private helpers need no entry each). A configured task whose
//! handler cannot be built is a startup error naming the task.

use super::exec::ExecTask;
use super::{Registry, Task};
use runq_common::taskspec::{Handler, TaskSpec};
use runq_common::Config;
use std::collections::HashMap;
use std::sync::Arc;

/// A function name's handler and conventions.
pub struct Resolved {
    pub spec: TaskSpec,
    pub task: Arc<dyn Task>,
}

/// Names matching `[python] functions` run in the Python host.
struct PythonRoute {
    patterns: Vec<glob::Pattern>,
    task: Arc<dyn Task>,
}

/// Function name → [`Resolved`].
pub struct TaskTable {
    config: Arc<Config>,
    entries: HashMap<String, Arc<Resolved>>,
    python: Option<PythonRoute>,
}

impl TaskTable {
    /// Resolves every registered and configured task name; `python` is the Python host's
    /// handler when `[python]` is configured.
    pub fn build(
        config: &Arc<Config>,
        registry: &Registry,
        python: Option<Arc<dyn Task>>,
    ) -> Result<TaskTable, String> {
        let mut table = TaskTable {
            config: config.clone(),
            entries: HashMap::new(),
            python: match (&config.python, python) {
                (Some(cfg), Some(task)) => Some(PythonRoute {
                    patterns: cfg.patterns(),
                    task,
                }),
                _ => None,
            },
        };
        for name in registry.names() {
            let spec = TaskSpec::resolve(config, name);
            table.insert(spec, registry)?;
        }
        for name in config.tasks.keys() {
            let spec = if table.python_matches(name) {
                TaskSpec::resolve_python(config, name)
            } else {
                TaskSpec::resolve(config, name)
            };
            table.insert(spec, registry)?;
        }
        Ok(table)
    }

    fn python_matches(&self, name: &str) -> bool {
        self.python
            .as_ref()
            .is_some_and(|p| p.patterns.iter().any(|pat| pat.matches(name)))
    }

    fn insert(&mut self, spec: TaskSpec, registry: &Registry) -> Result<(), String> {
        let task: Arc<dyn Task> = match &spec.handler {
            Handler::Native(handler) => registry.get(handler).ok_or_else(|| {
                format!(
                    "task `{}`: no native handler `{handler}` is registered in this runq-worker (registered: {})",
                    spec.name,
                    registry.names().join(", ")
                )
            })?,
            Handler::Exec { .. } => Arc::new(
                ExecTask::new(&spec).map_err(|e| format!("task `{}`: {e}", spec.name))?,
            ),
            Handler::Python => match &self.python {
                Some(p) => p.task.clone(),
                None => {
                    return Err(format!(
                        "task `{}`: handler `python` needs a [python] section",
                        spec.name
                    ))
                }
            },
        };
        self.entries
            .insert(spec.name.clone(), Arc::new(Resolved { spec, task }));
        Ok(())
    }

    /// The handler for `name`: a known task, or the Python host for a name matching
    /// `[python] functions`.
    pub fn get(&self, name: &str) -> Option<Arc<Resolved>> {
        if let Some(r) = self.entries.get(name) {
            return Some(r.clone());
        }
        let python = self.python.as_ref()?;
        if !python.patterns.iter().any(|p| p.matches(name)) {
            return None;
        }
        Some(Arc::new(Resolved {
            spec: TaskSpec::resolve_python(&self.config, name),
            task: python.task.clone(),
        }))
    }
}
