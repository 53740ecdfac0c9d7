//! One execution slot's loop: ask the fetcher for a job, run it, record the outcome,
//! repeat until the worker stops taking jobs.

use crate::complete;
use crate::execute::{execute, ExecContext, Outcome};
use crate::fetch::FetchHandle;
use crate::metrics::Metrics;
use crate::run::RunServices;
use crate::shutdown::Shutdown;
use crate::slots::{Running, Slots};
use crate::tasks::table::TaskTable;
use runq_common::config::{Config, InterruptedJobPolicy};
use runq_common::connect::SharedConnection;
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
}

/// Runs slot `slot` until the fetcher has no more jobs for it.
pub async fn run_slot(slot: usize, ctx: Arc<ProcessorContext>, fetch: FetchHandle) {
    let worker = ctx.slots.names[slot].clone();
    let exec_ctx = ExecContext {
        table: &ctx.table,
        run_services: &ctx.run_services,
        default_timeout: ctx.config.worker.default_timeout,
        requeue_on_shutdown: ctx.config.worker.interrupted_jobs == InterruptedJobPolicy::Requeue,
        shutdown: &ctx.shutdown,
    };
    while let Some(job) = fetch.next(slot).await {
        let running = Running::new(&job.id, &job.exec_id, &job.origin);
        ctx.slots.set(slot, Some(running.clone()));
        tracing::debug!(worker = %worker, job = %job.id, queue = %job.origin, "job started");
        ctx.metrics.job_started(&job);
        let outcome = execute(&exec_ctx, &job, &running).await;
        let done = complete::record(
            &ctx.redis,
            &ctx.config,
            &job,
            &worker,
            &outcome,
            &ctx.shutdown,
        )
        .await;
        ctx.slots.set(slot, None);
        fetch.release(&job.queue);
        let secs = (chrono::Utc::now() - job.started.at).num_milliseconds() as f64 / 1000.0;
        ctx.metrics
            .job_done(&job, running.func(), done.as_deref(), secs);
        match (&outcome, done.as_deref()) {
            (Outcome::Success { .. }, Some(d)) => {
                tracing::info!(worker = %worker, job = %job.id, queue = %job.origin, secs, "job {d}")
            }
            (Outcome::Failure { text, .. }, Some(d)) => {
                tracing::warn!(worker = %worker, job = %job.id, queue = %job.origin, secs, error = %text, "job {d}")
            }
            (_, Some(d)) => {
                tracing::warn!(worker = %worker, job = %job.id, queue = %job.origin, secs, "job {d}")
            }
            (_, None) => {}
        }
    }
    tracing::debug!(worker = %worker, "slot stopped");
}
