//! Running one claimed job: validate its hash, decode its payload, find its task, then
//! call the handler through the [`layers`](crate::layers) and return how it ended as a
//! [`Completion`]. Every failure here is a typed [`TaskError`]; bad job data fails the job
//! for good (no retry) with a one-line message naming what was wrong.

use crate::error::TaskError;
use crate::job::Job;
use crate::layers::{self, failed, LayerContext};
use crate::tasks::table::{Resolved, TaskTable};
use crate::tasks::{TaskCall, TaskInput};
use runq_common::echo::clip;
use runq_common::payload::{self, JobCall};
use runq_common::scripts::complete::Completion;
use runq_common::SerializerKind;
use std::sync::Arc;

/// What execution needs besides the job.
pub struct ExecContext<'a> {
    pub table: &'a TaskTable,
    pub layers: LayerContext<'a>,
    pub default_timeout: i64,
}

/// The decoded job, ready to call.
struct Decoded {
    resolved: Arc<Resolved>,
    serializer: SerializerKind,
    call: JobCall,
    payload: Arc<[u8]>,
}

/// Runs a claimed job to its [`Completion`].
pub async fn execute(ctx: &ExecContext<'_>, job: &Arc<Job>) -> Completion {
    let decoded = match decode(ctx.table, job) {
        Ok(d) => d,
        Err(e) => return failed(e),
    };
    let timeout = match (decoded.resolved.spec.timeout, job.hash.timeout()) {
        (Some(t), _) => t,
        (None, Ok(Some(t))) => t,
        _ => ctx.default_timeout,
    };
    let call = TaskCall {
        job_id: job.id.clone(),
        func_name: decoded.call.func_name,
        args: decoded.call.args,
        kwargs: decoded.call.kwargs,
        cancel: job.cancel_token(),
        payload: decoded.payload,
        serializer: decoded.serializer,
        timeout_secs: u64::try_from(timeout).ok(),
        run: None,
        job: job.clone(),
    };
    layers::call(&ctx.layers, job, &decoded.resolved, call).await
}

/// Validates the hash, decodes the payload (recording the function name on `job`) and
/// finds the task. A payload runq cannot represent still runs when its handler decodes
/// the stored payload itself (raw exec, Python).
fn decode(table: &TaskTable, job: &Job) -> Result<Decoded, TaskError> {
    let invalid = |e: runq_common::Error| TaskError::permanent("InvalidJob", e.to_string());
    job.hash.validate_for_run().map_err(invalid)?;
    let data = job.hash.data().map_err(invalid)?;
    let undecodable = |e: payload::PayloadError| TaskError::permanent("", e.to_string());
    let raw = payload::inflate(data).map_err(undecodable)?;
    // Strict first (the common case decodes once); lenient only to learn the function.
    let (serializer, call, strict_error) = match payload::parse(&raw, false) {
        Ok((s, c)) => (s, c, None),
        Err(strict) => match payload::parse(&raw, true) {
            Ok((s, c)) => (s, c, Some(strict)),
            Err(_) => return Err(undecodable(strict)),
        },
    };
    job.set_func(&call.func_name);
    let resolved = table.get(&call.func_name).ok_or_else(|| {
        TaskError::permanent(
            "UnknownFunction",
            format!(
                "no handler is registered for `{}` in this runq-worker",
                clip(&call.func_name, 200)
            ),
        )
    })?;
    let stored = resolved.task.input() == TaskInput::Stored;
    if let (Some(strict), false) = (strict_error, stored) {
        // Only a handler that decodes the stored payload itself may run it.
        return Err(undecodable(strict));
    }
    let payload: Arc<[u8]> = if stored {
        raw.into()
    } else {
        Arc::from(Vec::new())
    };
    Ok(Decoded {
        resolved,
        serializer,
        call,
        payload,
    })
}
