//! Exec tasks: a configured argv command (never a shell) run as a child process per job.
//!
//! The protocol (also in `docs/exec-tasks.md`):
//! - **Environment**: the worker's own, plus `RUNQ_JOB_ID`, `RUNQ_FUNC` (the dotted
//!   function name), `RUNQ_RESULT_FILE` (a path in a fresh private directory the worker
//!   removes after the job), `RUNQ_EXEC_MODE` (`json` or `raw`), in raw mode
//!   `RUNQ_SERIALIZER` (`pickle`, `json` or `msgpack`), and for a task with run state
//!   `RUNQ_RUNID`, `RUNQ_LOCK_TOKENS` and `RUNQ_RUN_DIR` (the worker holds and renews the
//!   locks while the child runs).
//! - **JSON mode**: stdin is `{"job_id", "func", "args", "kwargs"}`; the child writes its
//!   JSON result to `RUNQ_RESULT_FILE`, stored with the job's serializer.
//! - **Raw mode**: stdin is the job's payload exactly as RQ stored it (inflated):
//!   `(func_name, instance, args, kwargs)` serialized with the job's serializer, so
//!   pickled arguments pass untouched. The child writes its return value serialized the
//!   same way to `RUNQ_RESULT_FILE`; the bytes are stored as the RQ return value as-is.
//! - In both modes no result file (or an empty one) means None.
//! - Exit 0 is success. Any other exit, or death by a signal, fails the job with
//!   `ExecFailed: <argv0> exited with status N: <last stderr line>` (after a Python
//!   traceback, its exception line), then the stderr tail on the following lines.
//! - Timeout, stop-job, a lost lock and cold shutdown cancel the handler: the child's
//!   whole process group gets SIGTERM, then SIGKILL once the leader exited or 2 s
//!   later, and the handler returns only once the leader is reaped ([`child`]), so a
//!   job's NoDb locks are released only after its processes are gone.
//!
//! `contrib/python/runq/runner.py` is the Python side of both modes.

pub mod child;
pub mod protocol;

use super::{Task, TaskCall, TaskError, TaskFuture, TaskInput, TaskResult};
use child::ChildError;
use runq_common::taskspec::{ExecMode, Handler, TaskSpec};
use std::sync::Arc;
use std::time::Duration;

/// Runs a job by spawning the task's command.
pub struct ExecTask {
    command: Arc<[String]>,
    mode: ExecMode,
}

impl ExecTask {
    pub fn new(spec: &TaskSpec) -> Result<ExecTask, String> {
        match &spec.handler {
            Handler::Exec { command, mode } if !command.is_empty() => Ok(ExecTask {
                command: command.clone().into(),
                mode: *mode,
            }),
            _ => Err("an exec handler needs a non-empty `command`".into()),
        }
    }
}

impl Task for ExecTask {
    fn run(&self, call: TaskCall) -> TaskFuture {
        Box::pin(run_job(self.command.clone(), self.mode, call))
    }

    fn input(&self) -> TaskInput {
        match self.mode {
            ExecMode::Json => TaskInput::Decoded,
            ExecMode::Raw => TaskInput::Stored,
        }
    }

    fn wind_down(&self) -> Duration {
        child::KILL_GRACE + Duration::from_secs(3)
    }
}

async fn run_job(command: Arc<[String]>, mode: ExecMode, call: TaskCall) -> TaskResult {
    let program = command[0].as_str();
    let dir = protocol::ResultDir::create()?;
    let result_file = dir.result_file();
    let input = protocol::input(mode, &call)?;
    let env = protocol::env(mode, &call, &result_file);
    let finished = child::run(&command, env, input, &call.cancel)
        .await
        .map_err(|e| match e {
            ChildError::Spawn { .. } => TaskError::new("ExecSpawnFailed", e.to_string()),
            ChildError::Cancelled { .. } => TaskError::new("ExecCancelled", e.to_string()),
            ChildError::Wait { .. } => TaskError::new("ExecFailed", e.to_string()),
        })?;
    tracing::debug!(
        job_id = %call.job_id,
        status = %finished.status,
        stdout = %finished.stdout,
        stderr = %finished.stderr,
        "exec child finished"
    );
    if !finished.status.success() {
        return Err(protocol::failure(program, &finished));
    }
    protocol::read_result(mode, program, &result_file).await
}
