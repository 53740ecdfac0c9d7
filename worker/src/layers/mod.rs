//! The layers a handler runs inside, outermost first (Sidekiq's middleware chain, fixed):
//! [`run_state`] (a WEPPcloud run: open, locks, finish) around [`callbacks`] (RQ 3.0's
//! job callbacks) around [`deadline`] (the job's timeout and every way it can be cut off:
//! stop-job, kill-horse, lost lock, lost job, cold shutdown) around the handler itself.
//! Each layer turns what happened into a [`Completion`].

pub mod callbacks;
pub mod deadline;
pub mod run_state;

use crate::job::{Job, StopReason};
use crate::runstate::RunServices;
use crate::shutdown::Shutdown;
use crate::tasks::table::Resolved;
use crate::tasks::TaskCall;
use runq_common::scripts::complete::Completion;
use std::sync::Arc;

/// What the layers need besides the job.
pub struct LayerContext<'a> {
    pub run_services: &'a Arc<RunServices>,
    pub callbacks: &'a crate::callbacks::Callbacks,
    /// Cold shutdown requeues interrupted jobs (`interrupted_jobs = "requeue"`).
    pub requeue_on_shutdown: bool,
    pub shutdown: &'a Shutdown,
}

/// Runs `call` through every layer.
pub async fn call(
    ctx: &LayerContext<'_>,
    job: &Arc<Job>,
    resolved: &Resolved,
    call: TaskCall,
) -> Completion {
    run_state::wrap(ctx, job, resolved, call).await
}

/// The completion of a job cut off from outside, by why it was.
pub fn cut_off(ctx: &LayerContext<'_>, job: &Job, lock_lost: Option<String>) -> Completion {
    match job.stop_reason() {
        Some(StopReason::Stopped) => Completion::Stopped,
        Some(StopReason::Killed) => Completion::Failure {
            text: "Work-horse terminated unexpectedly; the job was killed by a kill-horse command"
                .into(),
            retry: true,
        },
        Some(StopReason::Lost) => Completion::Lost,
        Some(StopReason::LockLost) => Completion::Failure {
            text: lock_lost
                .unwrap_or_else(|| "NoDbLockLost: a NoDb lock of the task was lost".into()),
            retry: true,
        },
        Some(StopReason::Shutdown) | None => {
            if ctx.requeue_on_shutdown {
                Completion::Requeue
            } else {
                Completion::Failure {
                    text: "ShutDownImminentException: the worker shut down cold while the job ran"
                        .into(),
                    retry: true,
                }
            }
        }
    }
}

/// A failure as the completion script records it.
pub fn failed(e: crate::error::TaskError) -> Completion {
    Completion::Failure {
        text: e.to_string(),
        retry: e.retryable,
    }
}
