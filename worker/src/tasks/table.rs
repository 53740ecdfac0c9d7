//! The process's task table: every function name this worker runs, resolved once at
//! startup to its handler and [`TaskSpec`] — configured tasks, the built-in demo tasks
//! and every registered native handler. A configured task whose handler cannot be
//! built is a startup error naming the task.

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

/// Function name → [`Resolved`].
#[derive(Clone, Default)]
pub struct TaskTable {
    entries: HashMap<String, Arc<Resolved>>,
}

impl TaskTable {
    /// Resolves every registered and configured task name.
    pub fn build(config: &Config, registry: &Registry) -> Result<TaskTable, String> {
        let mut table = TaskTable::default();
        for name in registry.names() {
            let spec = TaskSpec::resolve(config, name);
            table.insert(spec, registry)?;
        }
        for name in config.tasks.keys() {
            let spec = TaskSpec::resolve(config, name);
            table.insert(spec, registry)?;
        }
        Ok(table)
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
        };
        self.entries
            .insert(spec.name.clone(), Arc::new(Resolved { spec, task }));
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<Arc<Resolved>> {
        self.entries.get(name).cloned()
    }
}
