//! The deadline layer: races the run's lock phase and then the handler against the job's
//! timeout and its cancellation (stop-job, kill-horse, lost lock, lost job, cold
//! shutdown). A handler that is cut off is cancelled and given its
//! [`wind_down`](crate::tasks::Task::wind_down) to end on its own (process handlers kill
//! and reap their group in it) before it is dropped, so locks are released only after a
//! job's processes are gone. A panicking handler becomes a failed job.

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

/// Runs `run`'s lock phase (when there is a run) and the handler under the deadline.
pub async fn guard(
    ctx: &LayerContext<'_>,
    job: &Arc<Job>,
    resolved: &Resolved,
    run: Option<&RunState>,
    call: TaskCall,
) -> Completion {
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
            r = run.take_locks() => if let Err(e) = r { return failed(e) },
            _ = expired(Duration::ZERO) => return timed_out(),
            _ = stopped() => return cut_off(ctx, job, lock_lost()),
        }
    }

    let serializer = call.serializer;
    let mut handle = tokio::spawn(task.run(call));
    let result = tokio::select! {
        r = &mut handle => r,
        _ = expired(task.timeout_grace()) => {
            cancel.cancel();
            wind_down(&mut handle, task.wind_down()).await;
            return timed_out();
        }
        _ = stopped() => {
            wind_down(&mut handle, task.wind_down()).await;
            return cut_off(ctx, job, lock_lost());
        }
    };
    match result {
        Ok(Ok(output)) => Completion::Success {
            return_value: encode_return(serializer, output),
        },
        Ok(Err(e)) => failed(e),
        Err(join) if join.is_panic() => failed(TaskError::new(
            "TaskPanic",
            format!(
                "the handler for `{}` panicked: {}",
                resolved.spec.name,
                panic_text(join.into_panic())
            ),
        )),
        Err(_) => failed(TaskError::new("TaskCancelled", "the handler was cancelled")),
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
        TaskOutput::Serialized(bytes) => bytes,
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
