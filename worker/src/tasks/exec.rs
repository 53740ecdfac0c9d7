//! Exec tasks: a configured argv command run per job. (Being built.)

use super::{Task, TaskCall, TaskError, TaskFuture};
use runq_common::taskspec::{ExecMode, Handler, TaskSpec};

/// Runs a job by spawning the task's command.
pub struct ExecTask {
    command: Vec<String>,
    mode: ExecMode,
}

impl ExecTask {
    pub fn new(spec: &TaskSpec) -> Result<ExecTask, String> {
        match &spec.handler {
            Handler::Exec { command, mode } if !command.is_empty() => Ok(ExecTask {
                command: command.clone(),
                mode: *mode,
            }),
            _ => Err("an exec handler needs a non-empty `command`".into()),
        }
    }
}

impl Task for ExecTask {
    fn run(&self, _call: TaskCall) -> TaskFuture {
        let what = format!("{:?} ({:?})", self.command, self.mode);
        Box::pin(async move {
            Err(TaskError::new(
                "NotImplemented",
                format!("exec tasks are not built yet: {what}"),
            ))
        })
    }
}
