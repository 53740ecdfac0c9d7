//! Running one claimed job: validate the hash, decode the payload, find the handler and
//! run it under the job's timeout and the slot's cancellation. Every failure becomes a
//! clear one-line text for the job's failure result; nothing here panics on job data.

use crate::fetch::Claimed;
use crate::slots::{Running, StopReason};
use crate::tasks::{Registry, TaskCall};
use runq_common::payload;
use runq_common::results;
use runq_common::SerializerKind;
use std::time::Duration;

/// How an execution ended, ready for the completion script.
#[derive(Debug)]
pub enum Outcome {
    /// Success; the base64 return value (empty for None).
    Success { return_value: String },
    /// Failure text; `retry` is false when the job must not be retried.
    Failure { text: String, retry: bool },
    /// Stopped by `stop-job` / `stop-execution`.
    Stopped,
    /// Cold shutdown interrupted the job and policy says requeue.
    Requeue,
    /// The started-registry entry vanished; the job is no longer ours.
    Lost,
}

impl Outcome {
    fn failure(text: impl Into<String>) -> Outcome {
        Outcome::Failure {
            text: text.into(),
            retry: true,
        }
    }
}

/// What the execution needs besides the job.
pub struct ExecContext<'a> {
    pub registry: &'a Registry,
    pub default_timeout: i64,
    pub requeue_on_shutdown: bool,
    /// A cold shutdown cancels the running job.
    pub shutdown: &'a crate::shutdown::Shutdown,
}

/// Runs a claimed job to an [`Outcome`].
pub async fn execute(ctx: &ExecContext<'_>, job: &Claimed, running: &Running) -> Outcome {
    if let Err(e) = job.hash.validate_for_run() {
        return Outcome::failure(format!("InvalidJob: {e}"));
    }
    let data = match job.hash.data() {
        Ok(d) => d,
        Err(e) => return Outcome::failure(format!("InvalidJob: {e}")),
    };
    let (serializer, call) = match payload::decode(data) {
        Ok(decoded) => decoded,
        Err(e) => return Outcome::failure(e.to_string()),
    };
    let Some(task) = ctx.registry.get(&call.func_name) else {
        return Outcome::failure(format!(
            "UnknownFunction: no handler is registered for `{}` in this runq-worker",
            call.func_name
        ));
    };
    let timeout = match job.hash.timeout() {
        Ok(Some(t)) => t,
        _ => ctx.default_timeout,
    };
    let cancel = running.cancel_token();
    let call = TaskCall {
        job_id: job.id.clone(),
        func_name: call.func_name,
        args: call.args,
        kwargs: call.kwargs,
        cancel: cancel.clone(),
    };
    let mut handle = tokio::spawn(task.run(call));
    let limit = async {
        if timeout > 0 {
            tokio::time::sleep(Duration::from_secs(timeout as u64)).await
        } else {
            std::future::pending::<()>().await
        }
    };
    let result = tokio::select! {
        r = &mut handle => r,
        _ = limit => {
            handle.abort();
            cancel.cancel();
            return Outcome::failure(format!(
                "JobTimeoutException: Task exceeded maximum timeout value ({timeout} seconds)"
            ));
        }
        _ = async {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = ctx.shutdown.cold() => running.stop(StopReason::Shutdown),
            }
        } => {
            handle.abort();
            return match running.reason() {
                Some(StopReason::Stopped) => Outcome::Stopped,
                Some(StopReason::Killed) => Outcome::Failure {
                    text: "Work-horse terminated unexpectedly; the job was killed by a kill-horse command".into(),
                    retry: true,
                },
                Some(StopReason::Lost) => Outcome::Lost,
                Some(StopReason::Shutdown) | None => {
                    if ctx.requeue_on_shutdown {
                        Outcome::Requeue
                    } else {
                        Outcome::Failure { text: "ShutDownImminentException: the worker shut down cold while the job ran".into(), retry: true }
                    }
                }
            };
        }
    };
    match result {
        Ok(Ok(value)) => Outcome::Success {
            return_value: encode_return(serializer, &value),
        },
        Ok(Err(e)) => Outcome::failure(e.to_string()),
        Err(join) if join.is_panic() => Outcome::failure(format!(
            "TaskPanic: the handler for `{}` panicked: {}",
            job.id,
            panic_text(join)
        )),
        Err(_) => Outcome::failure("TaskCancelled: the handler was cancelled"),
    }
}

/// Base64 of the serialized return value; empty for None (RQ omits the field).
fn encode_return(serializer: SerializerKind, value: &serde_json::Value) -> String {
    if value.is_null() {
        return String::new();
    }
    let bytes = serializer.dumps(value).unwrap_or_else(|_| {
        serializer
            .dumps(&serde_json::Value::String(
                "Unserializable return value".into(),
            ))
            .unwrap_or_default()
    });
    results::encode_return_value(&bytes)
}

fn panic_text(join: tokio::task::JoinError) -> String {
    let payload = join.into_panic();
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".into()
    }
}
