//! The deadline layer: races the run's lock phase and then the handler against the job's
//! timeout and its cancellation (stop-job, kill-horse, lost lock, lost job, cold
//! shutdown). A handler that is cut off is cancelled and given its
//! [`wind_down`](crate::tasks::Task::wind_down) to end on its own (process handlers kill
//! and reap their group in it) before it is dropped, so locks are released only after a
//! job's processes are gone. A panicking handler becomes a failed job. It says how the
//! job ended ([`Cause`]) so the callbacks layer knows which callback applies.

use super::{cut_off, failed, LayerContext};
use crate::error::TaskError;
use crate::job::{Job, StopReason};
use crate::runstate::RunState;
use crate::tasks::table::Resolved;
use crate::tasks::{TaskCall, TaskOutput};
use runq_common::results;
use runq_common::scripts::complete::Completion;
use runq_common::SerializerKind;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How the guarded part ended, for the callbacks around it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The handler returned a value.
    Returned,
    /// The handler returned an error (or panicked), or the job timed out: RQ's work horse
    /// raised.
    Raised,
    /// Cut off from outside (stop-job, kill-horse, lost lock or job, cold shutdown), or the
    /// run's locks could not be taken.
    CutOff,
}

/// What the deadline layer produced.
pub struct Guarded {
    pub completion: Completion,
    pub cause: Cause,
}

impl Guarded {
    fn new(completion: Completion, cause: Cause) -> Guarded {
        Guarded { completion, cause }
    }
}

/// Runs `run`'s lock phase (when there is a run) and the handler under the deadline.
pub async fn guard(
    ctx: &LayerContext<'_>,
    job: &Arc<Job>,
    resolved: &Resolved,
    run: Option<&RunState>,
    mut call: TaskCall,
) -> Guarded {
    let task = resolved.task.clone();
    let timeout = call.timeout_secs;
    let deadline = timeout.and_then(|t| Instant::now().checked_add(Duration::from_secs(t)));
    let cancel = job.cancel_token();
    let timed_out = || {
        failed(TaskError::new(
            "JobTimeoutException",
            format!(
                "Task exceeded maximum timeout value ({} seconds)",
                timeout.unwrap_or(0)
            ),
        ))
    };
    let expired = |extra: Duration| async move {
        match deadline.and_then(|d| d.checked_add(extra)) {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending::<()>().await,
        }
    };
    let stopped = || async {
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = ctx.shutdown.cold() => job.stop(StopReason::Shutdown),
        }
    };
    let lock_lost = || run.and_then(RunState::lock_lost);

    if let Some(run) = run {
        tokio::select! {
            r = run.take_locks() => if let Err(e) = r { return Guarded::new(failed(e), Cause::CutOff) },
            _ = expired(Duration::ZERO) => return Guarded::new(timed_out(), Cause::Raised),
            _ = stopped() => return Guarded::new(cut_off(ctx, job, lock_lost()), Cause::CutOff),
        }
    }

    // The handler gets what is left of the timeout after the lock wait (a handler that
    // enforces it itself, as the Python host does, must not start its clock afresh).
    if let Some(at) = deadline {
        let left = at.saturating_duration_since(Instant::now());
        call.timeout_secs = Some(left.as_secs_f64().ceil().max(1.0) as u64);
    }
    let serializer = call.serializer;
    let mut handle = tokio::spawn(task.run(call));
    let result = tokio::select! {
        r = &mut handle => r,
        _ = expired(task.timeout_grace()) => {
            cancel.cancel();
            wind_down(&mut handle, task.wind_down()).await;
            return Guarded::new(timed_out(), Cause::Raised);
        }
        _ = stopped() => {
            wind_down(&mut handle, task.wind_down()).await;
            return Guarded::new(cut_off(ctx, job, lock_lost()), Cause::CutOff);
        }
    };
    match result {
        Ok(Ok(TaskOutput::Retry {
            serialized,
            max,
            intervals,
            at_front,
        })) => Guarded::new(
            Completion::RetryValue {
                return_value: results::encode_return_value(&serialized),
                max,
                intervals,
                at_front,
            },
            Cause::CutOff,
        ),
        Ok(Ok(output)) => Guarded::new(
            Completion::Success {
                return_value: encode_return(serializer, output),
            },
            Cause::Returned,
        ),
        Ok(Err(e)) => Guarded::new(failed(e), Cause::Raised),
        Err(join) if join.is_panic() => Guarded::new(
            failed(TaskError::new(
                "TaskPanic",
                format!(
                    "the handler for `{}` panicked: {}",
                    resolved.spec.name,
                    panic_text(join.into_panic())
                ),
            )),
            Cause::Raised,
        ),
        Err(_) => Guarded::new(
            failed(TaskError::new("TaskCancelled", "the handler was cancelled")),
            Cause::CutOff,
        ),
    }
}

/// Gives a cancelled handler `limit` to end on its own, then drops it (and waits for
/// that, so whatever it owned is gone when this returns).
async fn wind_down(
    handle: &mut tokio::task::JoinHandle<crate::tasks::TaskResult>,
    limit: Duration,
) {
    if tokio::time::timeout(limit, &mut *handle).await.is_err() {
        handle.abort();
        let _ = handle.await;
    }
}

/// Base64 of the serialized return value; empty for None (RQ omits the field).
fn encode_return(serializer: SerializerKind, output: TaskOutput) -> String {
    let bytes = match output {
        TaskOutput::Serialized(bytes)
        | TaskOutput::Retry {
            serialized: bytes, ..
        } => bytes,
        TaskOutput::Value(serde_json::Value::Null) => return String::new(),
        TaskOutput::Value(value) => serializer.dumps(&value).unwrap_or_else(|_| {
            serializer
                .dumps(&serde_json::Value::String(
                    "Unserializable return value".into(),
                ))
                .unwrap_or_default()
        }),
    };
    results::encode_return_value(&bytes)
}

/// The text of a panic payload.
pub fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".into()
    }
}
