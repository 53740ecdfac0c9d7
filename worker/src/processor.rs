//! One execution slot's loop (Sidekiq's processor): hand the last job's completion to
//! the fetcher and get the next job in the same exchange, install it in the slot, execute
//! it, repeat until the worker stops taking jobs. A panic anywhere in a job's execution
//! becomes that job's failure and a log line; the slot carries on.

use crate::execute::{execute, ExecContext};
use crate::fetch::{Claimed, Done, FetchHandle, Next};
use crate::followups::Followups;
use crate::job::Job;
use crate::layers::deadline::panic_text;
use crate::layers::LayerContext;
use crate::metrics::Metrics;
use crate::runstate::RunServices;
use crate::shutdown::Shutdown;
use crate::slots::Slots;
use crate::tasks::table::TaskTable;
use futures_util::FutureExt;
use runq_common::config::{Config, InterruptedJobPolicy};
use runq_common::connect::SharedConnection;
use runq_common::scripts::complete::{Completion, Recorded};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

/// What every processor of a process shares.
pub struct ProcessorContext {
    pub config: Arc<Config>,
    pub redis: SharedConnection,
    pub table: TaskTable,
    pub run_services: Arc<RunServices>,
    pub slots: Arc<Slots>,
    pub shutdown: Shutdown,
    pub metrics: Arc<Metrics>,
    pub followups: Followups,
}

/// Runs slot `slot` until the fetcher has no more jobs for it.
pub async fn run_slot(slot: usize, ctx: Arc<ProcessorContext>, fetch: FetchHandle) {
    let exec_ctx = ExecContext {
        table: &ctx.table,
        layers: LayerContext {
            run_services: &ctx.run_services,
            callbacks: &ctx.followups.callbacks,
            requeue_on_shutdown: ctx.config.worker.interrupted_jobs
                == InterruptedJobPolicy::Requeue,
            shutdown: &ctx.shutdown,
        },
        default_timeout: ctx.config.worker.default_timeout,
    };
    let mut done: Option<Done> = None;
    loop {
        let finished = done.as_ref().map(|d| (d.job.clone(), d.completion.clone()));
        let Some(reply) = fetch.exchange(slot, done.take()).await else {
            break;
        };
        if let Some((job, completion)) = finished {
            ctx.slots.clear(slot);
            after(&ctx, &job, &completion, reply.recorded, reply.recorded_at);
        }
        let Claimed { job, permit } = match reply.next {
            Next::Job(c) => c,
            Next::Wait => continue,
            Next::Stop => break,
        };
        ctx.slots.install(job.clone());
        tracing::debug!(worker = %job.worker, job = %job.id, queue = %job.origin, "job started");
        ctx.metrics.job_started(&job);
        let completion = match AssertUnwindSafe(execute(&exec_ctx, &job))
            .catch_unwind()
            .await
        {
            Ok(c) => c,
            Err(panic) => {
                let text = panic_text(panic);
                tracing::error!(job = %job.id, panic = %text, "the worker panicked while running the job; failing it");
                Completion::Failure {
                    text: format!(
                        "WorkerPanic: runq-worker panicked while running the job: {text}"
                    ),
                    retry: false,
                }
            }
        };
        job.mark_completing();
        done = Some(Done {
            job,
            completion,
            permit: Some(permit),
        });
    }
    tracing::debug!(worker = %ctx.slots.names[slot], "slot stopped");
}

/// Counters, metrics, the log line and the follow-ups of a job whose completion was
/// recorded (or given up on: `recorded` None).
fn after(
    ctx: &ProcessorContext,
    job: &Job,
    completion: &Completion,
    recorded: Option<Recorded>,
    recorded_at: Option<chrono::DateTime<chrono::Utc>>,
) {
    let secs = (runq_common::timefmt::now() - job.started.at).num_milliseconds() as f64 / 1000.0;
    ctx.metrics.job_done(job, recorded, secs);
    let Some(done) = recorded else { return };
    let finished = match completion {
        Completion::Success { .. } => Some(true),
        Completion::Requeue | Completion::Lost => None,
        _ => Some(false),
    };
    if done != Recorded::Lost {
        ctx.slots.count(job.slot, finished, secs);
    }
    log_outcome(job, completion, done, secs);
    ctx.followups
        .after_completion(job, completion, done, recorded_at);
}

fn log_outcome(job: &Job, completion: &Completion, done: Recorded, secs: f64) {
    let (worker, id, queue) = (&job.worker, &job.id, &job.origin);
    match completion {
        Completion::Success { .. } => {
            tracing::info!(worker = %worker, job = %id, queue = %queue, secs, "job {done}")
        }
        Completion::Failure { text, .. } => {
            let summary = crate::error::summary(text).unwrap_or_default();
            tracing::warn!(worker = %worker, job = %id, queue = %queue, secs, error = %summary, "job {done}")
        }
        _ => tracing::warn!(worker = %worker, job = %id, queue = %queue, secs, "job {done}"),
    }
}
