//! Running one claimed job: validate the hash, decode the payload, find the task, open
//! its run (locks, status lines) when it has one, and run the handler under the job's
//! timeout and the slot's cancellation. Every failure becomes a clear one-line text for
//! the job's failure result; nothing here panics on job data.

use crate::fetch::Claimed;
use crate::run::{self, Ending, RunContext, RunServices};
use crate::slots::{Running, StopReason};
use crate::tasks::table::{Resolved, TaskTable};
use crate::tasks::{TaskCall, TaskOutput};
use runq_common::payload::{self, JobCall};
use runq_common::results;
use runq_common::taskspec::{ExecMode, Handler};
use runq_common::SerializerKind;
use std::sync::Arc;
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

    /// The one-line reason this outcome is not a success.
    fn reason(&self) -> &str {
        match self {
            Outcome::Success { .. } => "",
            Outcome::Failure { text, .. } => text,
            Outcome::Stopped => "JobStopped: stopped by a stop-job command",
            Outcome::Requeue => "ShutDownImminentException: the worker shut down; requeued",
            Outcome::Lost => "JobLost: the job was taken over by maintenance",
        }
    }
}

/// What the execution needs besides the job.
pub struct ExecContext<'a> {
    pub table: &'a TaskTable,
    pub run_services: &'a Arc<RunServices>,
    pub default_timeout: i64,
    pub requeue_on_shutdown: bool,
    /// A cold shutdown cancels the running job.
    pub shutdown: &'a crate::shutdown::Shutdown,
}

/// The decoded job, ready to run.
struct Prepared {
    resolved: Arc<Resolved>,
    serializer: SerializerKind,
    call: JobCall,
    payload: Arc<[u8]>,
}

/// Runs a claimed job to an [`Outcome`].
pub async fn execute(ctx: &ExecContext<'_>, job: &Claimed, running: &Running) -> Outcome {
    let prepared = match prepare(ctx, job, running) {
        Ok(p) => p,
        Err(text) => return Outcome::failure(text),
    };
    let resolved = prepared.resolved.clone();
    let spec = &resolved.spec;
    let timeout = match (spec.timeout, job.hash.timeout()) {
        (Some(t), _) => t,
        (None, Ok(Some(t))) => t,
        _ => ctx.default_timeout,
    };
    let run = if spec.has_run_state() {
        let Some(runid) = spec.runid(&prepared.call.args, &prepared.call.kwargs) else {
            return Outcome::failure(format!(
                "TypeError: {} needs a runid string in argument `{}`",
                spec.name,
                spec.runid_arg.as_deref().unwrap_or("")
            ));
        };
        let ticket = job
            .hash
            .datetime("enqueued_at")
            .ok()
            .flatten()
            .map(|t| t.timestamp_micros())
            .unwrap_or(i64::MAX);
        match run::open(ctx.run_services, spec, &job.id, runid, ticket, running).await {
            Ok(r) => Some(r),
            Err(text) => return Outcome::failure(text),
        }
    } else {
        None
    };
    let mut outcome = run_handler(ctx, job, running, prepared, run.clone(), timeout).await;
    if matches!(spec.handler, Handler::Exec { .. }) {
        // A cut-off child gets SIGTERM, then SIGKILL after a grace: its locks stay held
        // (and renewed) until its process group is gone.
        crate::tasks::exec::children_gone(&job.id).await;
    }
    if let Some(run) = run {
        if let (Outcome::Success { .. }, Some(why)) = (&outcome, run.lock_lost()) {
            outcome = Outcome::failure(why);
        }
        let ending = match &outcome {
            Outcome::Success { .. } => Ending::Success,
            Outcome::Requeue => Ending::Requeued,
            other => Ending::Failure(other.reason()),
        };
        run::finish(&run, spec, ending).await;
    }
    outcome
}

/// Validates the hash, decodes the payload (recording the function name on `running`)
/// and finds the task. A raw exec task gets its payload untouched even when runq cannot
/// represent its arguments.
fn prepare(ctx: &ExecContext<'_>, job: &Claimed, running: &Running) -> Result<Prepared, String> {
    job.hash
        .validate_for_run()
        .map_err(|e| format!("InvalidJob: {e}"))?;
    let data = job.hash.data().map_err(|e| format!("InvalidJob: {e}"))?;
    let unknown = |name: &str| {
        format!("UnknownFunction: no handler is registered for `{name}` in this runq-worker")
    };
    let passes_raw = |r: &Resolved| {
        matches!(
            r.spec.handler,
            Handler::Exec {
                mode: ExecMode::Raw,
                ..
            }
        )
    };
    let raw = payload::inflate(data).map_err(|e| e.to_string())?;
    let (serializer, call) = match payload::parse(&raw, false) {
        Ok(decoded) => decoded,
        // Not representable here: only a raw exec task (its child decodes) may run it.
        Err(strict) => match payload::parse(&raw, true) {
            Ok((serializer, call))
                if ctx
                    .table
                    .get(&call.func_name)
                    .is_some_and(|r| passes_raw(&r)) =>
            {
                (serializer, call)
            }
            _ => return Err(strict.to_string()),
        },
    };
    running.set_func(&call.func_name);
    let resolved = ctx
        .table
        .get(&call.func_name)
        .ok_or_else(|| unknown(&call.func_name))?;
    let payload: Arc<[u8]> = if passes_raw(&resolved) {
        raw.into()
    } else {
        Arc::from(Vec::new())
    };
    Ok(Prepared {
        resolved,
        serializer,
        call,
        payload,
    })
}

/// Takes the run's locks and runs the handler, racing the timeout and cancellation.
async fn run_handler(
    ctx: &ExecContext<'_>,
    job: &Claimed,
    running: &Running,
    prepared: Prepared,
    run: Option<Arc<RunContext>>,
    timeout: i64,
) -> Outcome {
    let cancel = running.cancel_token();
    let Prepared {
        resolved,
        serializer,
        call,
        payload,
    } = prepared;
    let call = TaskCall {
        job_id: job.id.clone(),
        func_name: call.func_name,
        args: call.args,
        kwargs: call.kwargs,
        cancel: cancel.clone(),
        payload,
        serializer,
        run: run.clone(),
    };
    let task = resolved.task.clone();
    let spec = &resolved.spec;
    let deadline =
        (timeout > 0).then(|| tokio::time::Instant::now() + Duration::from_secs(timeout as u64));
    let limit = || async move {
        match deadline {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending::<()>().await,
        }
    };
    let stopped = || async {
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = ctx.shutdown.cold() => running.stop(StopReason::Shutdown),
        }
    };
    let timed_out = || {
        cancel.cancel();
        Outcome::failure(format!(
            "JobTimeoutException: Task exceeded maximum timeout value ({timeout} seconds)"
        ))
    };
    // Phase 1: the run's locks (waiting counts against the job's timeout).
    if let Some(run) = &run {
        tokio::select! {
            r = run::take_locks(run, spec) => {
                if let Err(lock_error) = r {
                    return Outcome::failure(lock_error);
                }
            }
            _ = limit() => return timed_out(),
            _ = stopped() => return cancelled_outcome(ctx, running, Some(run)),
        }
    }
    // Phase 2: the handler. When it is cut off, the abort is awaited, so the handler has
    // been dropped (an exec child's group signalled) before the locks are released.
    let mut handle = tokio::spawn(task.run(call));
    let result = tokio::select! {
        r = &mut handle => r,
        _ = limit() => {
            handle.abort();
            let _ = handle.await;
            return timed_out();
        }
        _ = stopped() => {
            handle.abort();
            let _ = handle.await;
            return cancelled_outcome(ctx, running, run.as_deref());
        }
    };
    match result {
        Ok(Ok(output)) => Outcome::Success {
            return_value: encode_return(serializer, output),
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

fn cancelled_outcome(
    ctx: &ExecContext<'_>,
    running: &Running,
    run: Option<&RunContext>,
) -> Outcome {
    match running.reason() {
        Some(StopReason::Stopped) => Outcome::Stopped,
        Some(StopReason::Killed) => Outcome::Failure {
            text: "Work-horse terminated unexpectedly; the job was killed by a kill-horse command"
                .into(),
            retry: true,
        },
        Some(StopReason::Lost) => Outcome::Lost,
        Some(StopReason::LockLost) => Outcome::failure(
            run.and_then(RunContext::lock_lost)
                .unwrap_or_else(|| "NoDbLockLost: a NoDb lock of the task was lost".into()),
        ),
        Some(StopReason::Shutdown) | None => {
            if ctx.requeue_on_shutdown {
                Outcome::Requeue
            } else {
                Outcome::Failure {
                    text: "ShutDownImminentException: the worker shut down cold while the job ran"
                        .into(),
                    retry: true,
                }
            }
        }
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
