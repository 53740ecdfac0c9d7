//! The run-state layer: for a task that names a runid, opens the job's
//! [`RunState`](crate::runstate::RunState) before the handler, takes its locks inside
//! the deadline (waiting counts against the job's timeout), fails a job whose lock was
//! lost even if its handler returned, and closes the run after it.

use super::{callbacks, failed, LayerContext};
use crate::error::TaskError;
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
    mut call: TaskCall,
) -> Completion {
    let spec = &resolved.spec;
    if !spec.has_run_state() {
        return callbacks::wrap(ctx, job, resolved, None, call).await;
    }
    let Some(runid) = spec.runid(&call.args, &call.kwargs) else {
        return failed(TaskError::permanent(
            "TypeError",
            format!(
                "{} needs a runid string in argument `{}`",
                spec.name,
                spec.runid_arg.as_deref().unwrap_or("")
            ),
        ));
    };
    let run = match RunState::open(ctx.run_services, spec, job, runid).await {
        Ok(r) => r,
        Err(e) => return failed(e),
    };
    call.run = Some(run.context());
    let mut completion = callbacks::wrap(ctx, job, resolved, Some(&run), call).await;
    if let (Completion::Success { .. }, Some(why)) = (&completion, run.lock_lost()) {
        completion = Completion::Failure {
            text: why,
            retry: true,
        };
    }
    run.finish(&completion).await;
    completion
}
