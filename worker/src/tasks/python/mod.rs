//! Python task functions under runq-worker, as `rq worker` runs them but without its
//! per-job import cost: one preloaded fork server per process ([`host`], the program
//! `runq_host.py`, the protocol in PROTOCOL.md) forks a child per job in which RQ's own
//! API works (`get_current_job()`, `job.meta`, `save_meta()`, enqueueing, callbacks).
//! [`PythonTask`] is the handler every name matching `[python] functions` resolves to:
//! it hands the job hash as claimed to the host, and maps the child's outcome back.

pub mod frames;
pub mod host;

pub use host::{HostError, PythonHost};

use super::{Task, TaskCall, TaskError, TaskFuture, TaskInput, TaskOutput, TaskResult};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use frames::RunJob;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Runs a job's function in the Python host.
pub struct PythonTask {
    host: Arc<PythonHost>,
}

impl PythonTask {
    pub fn new(host: Arc<PythonHost>) -> PythonTask {
        PythonTask { host }
    }
}

impl Task for PythonTask {
    fn run(&self, call: TaskCall) -> TaskFuture {
        let host = self.host.clone();
        Box::pin(async move { run_job(&host, call).await })
    }

    /// The child decodes the payload with Python's own serializer.
    fn input(&self) -> TaskInput {
        TaskInput::Stored
    }

    /// The host kills the child's group (SIGTERM, then SIGKILL) and reaps it.
    fn wind_down(&self) -> Duration {
        host::KILL_GRACE + Duration::from_secs(5)
    }

    /// The child raises RQ's JobTimeoutException itself (SIGALRM), as a work horse does.
    fn timeout_grace(&self) -> Duration {
        Duration::from_secs(3)
    }

    /// Success and failure callbacks run in the job's child, as in RQ's work horse.
    fn runs_callbacks(&self) -> bool {
        true
    }
}

/// The `run` frame for a call: the hash as claimed, what the claim wrote over it, and the
/// run-state environment (lock tokens) of a task with run state.
fn run_frame(call: &TaskCall) -> RunJob {
    let job = &call.job;
    let hash: BTreeMap<String, String> = job
        .hash
        .fields
        .iter()
        .map(|(k, v)| (k.clone(), B64.encode(v)))
        .collect();
    let mut env = BTreeMap::from([("RUNQ_JOB_ID".to_string(), job.id.clone())]);
    if let Some(run) = &call.run {
        env.extend(run.child_env());
    }
    RunJob {
        job_id: job.id.clone(),
        func: call.func_name.clone(),
        serializer: call.serializer.as_str().to_string(),
        hash,
        status: "started".into(),
        started_at: job.started.text.clone(),
        worker_name: job.worker.clone(),
        timeout: call.timeout_secs,
        env,
        redis_url: None,
    }
}

async fn run_job(host: &PythonHost, call: TaskCall) -> TaskResult {
    let done = host.run(run_frame(&call), &call.cancel).await?;
    let text = |t: Option<String>, fallback: &str| t.unwrap_or_else(|| fallback.to_string());
    match done.outcome.as_str() {
        "ok" => match done.return_value {
            None => Ok(TaskOutput::Value(serde_json::Value::Null)),
            Some(b64) => B64
                .decode(b64.as_bytes())
                .map(TaskOutput::Serialized)
                .map_err(|e| {
                    TaskError::new(
                        "PythonHostError",
                        format!("the return value from the host is not base64: {e}"),
                    )
                }),
        },
        "failed" | "crashed" => Err(TaskError::text(text(
            done.exc_string,
            "the Python job failed without a traceback",
        ))),
        "killed" => Err(TaskError::new(
            "JobKilled",
            "the job's process group was killed",
        )),
        "retry" => Ok(TaskOutput::Retry {
            serialized: done
                .return_value
                .and_then(|b| B64.decode(b.as_bytes()).ok())
                .unwrap_or_default(),
            max: done.max.unwrap_or(1),
            intervals: done.intervals.unwrap_or_default(),
            at_front: done.at_front.unwrap_or(false),
        }),
        other => Err(TaskError::new(
            "PythonHostError",
            format!(
                "unknown outcome `{}` from the host",
                runq_common::echo::clip(other, 40)
            ),
        )),
    }
}
