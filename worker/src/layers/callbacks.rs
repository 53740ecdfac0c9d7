//! The callbacks layer (RQ 3.0's `on_success` / `on_failure` / `on_stopped`), between the
//! run-state and deadline layers, in RQ's order: the success callback after the job
//! returned and before its success is recorded (a callback that fails turns the job into
//! a failure, and the failure callback then runs too); the failure callback after the job
//! raised or timed out (a callback that fails replaces the recorded failure, chained as
//! Python chains it); the stopped callback after a stop (its failure is logged, the job
//! stays stopped). A handler that runs success and failure callbacks itself (the Python
//! host, in the job's process) only gets the stopped callback here; a job cut off in any
//! other way (kill-horse, lost job, shutdown) gets none, as a dead RQ work horse does.

use super::deadline::{self, Cause};
use super::LayerContext;
use crate::callbacks::{self, CallbackArgs, CallbackKind};
use crate::job::Job;
use crate::runstate::RunState;
use crate::tasks::table::Resolved;
use crate::tasks::TaskCall;
use runq_common::scripts::complete::Completion;
use std::sync::Arc;

pub async fn wrap(
    ctx: &LayerContext<'_>,
    job: &Arc<Job>,
    resolved: &Resolved,
    run: Option<&RunState>,
    call: TaskCall,
) -> Completion {
    let serializer = call.serializer;
    let guarded = deadline::guard(ctx, job, resolved, run, call).await;
    let own = resolved.task.runs_callbacks();
    let run_cb = |kind, rv: Option<String>, failure: Option<String>| async move {
        let Some(wanted) = callbacks::wanted(&job.hash, kind) else {
            return Ok(());
        };
        ctx.callbacks
            .run(
                &job.hash,
                &wanted,
                serializer,
                CallbackArgs {
                    return_value: rv.as_deref(),
                    failure: failure.as_deref(),
                    abandoned: false,
                },
            )
            .await
    };
    match (guarded.completion, guarded.cause) {
        (Completion::Success { return_value }, Cause::Returned) if !own => {
            match run_cb(CallbackKind::Success, Some(return_value.clone()), None).await {
                Ok(()) => Completion::Success { return_value },
                Err(e) => failure_with_callback(&run_cb, e.to_string()).await,
            }
        }
        (Completion::Failure { text, .. }, Cause::Raised) if !own => {
            failure_with_callback(&run_cb, text).await
        }
        (Completion::Stopped, _) => {
            if let Err(e) = run_cb(CallbackKind::Stopped, None, None).await {
                tracing::warn!(job = %job.id, error = %runq_common::echo::clip(&e.to_string(), 500), "the job's stopped callback failed; the job stays stopped");
            }
            Completion::Stopped
        }
        (completion, _) => completion,
    }
}

/// A failure after its failure callback ran; a callback that failed is chained onto it.
async fn failure_with_callback<F, Fut>(run_cb: &F, text: String) -> Completion
where
    F: Fn(CallbackKind, Option<String>, Option<String>) -> Fut,
    Fut: std::future::Future<Output = Result<(), crate::error::TaskError>>,
{
    let text = match run_cb(CallbackKind::Failure, None, Some(text.clone())).await {
        Ok(()) => text,
        Err(e) => callbacks::chained(&text, &e.to_string()),
    };
    Completion::Failure { text, retry: true }
}
