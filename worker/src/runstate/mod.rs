//! WEPPcloud run state around a job whose task names a runid (DESIGN §4), as a wrapper
//! the execute layers put around the handler: [`RunState::open`] (directory, log level,
//! `STARTED` line), [`RunState::take_locks`] (the task's NoDb locks, in order, refused on
//! a READONLY run as wepppy refuses), and [`RunState::finish`] (RedisPrep stamp,
//! `COMPLETED` or `EXCEPTION`, lock release, `redisprep.dump`). Tasks see the run through
//! [`RunContext`].

pub mod context;
pub mod fence;
pub mod lock_keeper;
pub mod locks;
pub mod services;
pub mod turns;

pub use context::RunContext;
pub use services::RunServices;

use crate::error::TaskError;
use crate::job::Job;
use context::Parts;
use fence::Fence;
use locks::LockSet;
use runq_common::nodb::{loglevel, prep, rundir, status};
use runq_common::scripts::complete::Completion;
use runq_common::taskspec::TaskSpec;
use services::bounded;
use std::sync::Arc;

/// A job's run: its context (shared with the handler) and the spec it follows.
pub struct RunState {
    ctx: Arc<RunContext>,
    spec: TaskSpec,
    /// The job's enqueue time in µs: its order in this process's lock lines.
    ticket: i64,
}

impl RunState {
    /// Opens the run for `job`: validates the runid, joins the line for its first lock,
    /// finds its directory, reads its log level and publishes `STARTED`.
    pub async fn open(
        services: &Arc<RunServices>,
        spec: &TaskSpec,
        job: &Arc<Job>,
        runid: String,
    ) -> Result<RunState, TaskError> {
        rundir::validate_runid(&runid).map_err(|e| TaskError::permanent("ValueError", e))?;
        let ticket = job
            .hash
            .datetime("enqueued_at")
            .ok()
            .flatten()
            .map(|t| t.timestamp_micros())
            .unwrap_or(i64::MAX);
        // The place in the first lock's line is taken before any await, so the order
        // jobs arrive in is the order they get the lock.
        let locks = LockSet::join(&services.keeper, spec, &runid, ticket);
        let wd = match &services.runs_dir {
            Some(dir) => rundir::run_dir(dir, &runid),
            None => Err("worker.runs_dir is not configured, so runs have no directory".into()),
        };
        let level = bounded(async {
            let mut conn = services.loglevel_db.get().await.ok()?;
            loglevel::get(&mut conn, &runid).await.ok()
        })
        .await
        .flatten()
        .unwrap_or(loglevel::INFO);
        let ctx = Arc::new(RunContext::new(Parts {
            services: services.clone(),
            job_id: job.id.clone(),
            func: spec.short_name().to_string(),
            channel: spec
                .status_channel
                .as_ref()
                .map(|c| status::channel(&runid, c)),
            runid,
            wd,
            level,
            fence: Arc::new(Fence::new(job.clone())),
            locks,
        }));
        ctx.publish(&status::started(ctx.job_id(), ctx.func(), ctx.runid()))
            .await;
        Ok(RunState {
            ctx,
            spec: spec.clone(),
            ticket,
        })
    }

    /// The context the handler gets.
    pub fn context(&self) -> Arc<RunContext> {
        self.ctx.clone()
    }

    /// Why one of the job's locks was lost, if one was.
    pub fn lock_lost(&self) -> Option<String> {
        self.ctx.lock_lost()
    }

    /// Takes the task's locks in order, each waiting up to `lock_wait`. A run whose
    /// directory holds `READONLY` is refused first, with wepppy's own wording.
    pub async fn take_locks(&self) -> Result<(), TaskError> {
        if self.spec.locks.is_empty() {
            return Ok(());
        }
        if let Ok(wd) = self.ctx.wd() {
            let readonly = wd.join("READONLY");
            if tokio::fs::try_exists(&readonly).await.unwrap_or(false) {
                return Err(TaskError::permanent(
                    "Exception",
                    format!(
                        "lock() called on readonly project ({} exists)",
                        readonly.display()
                    ),
                ));
            }
        }
        let services = self.ctx.services();
        self.ctx
            .locks()
            .take(
                &services.keeper,
                &self.spec,
                self.ctx.runid(),
                self.ticket,
                self.ctx.fence(),
            )
            .await
    }

    /// Closes the run: on success stamps `timestamps:<prep_task>` and publishes
    /// `COMPLETED`, otherwise `EXCEPTION` (or a STATUS line for a requeue); releases every
    /// lock (compare-token-and-delete) and rewrites `redisprep.dump` when the run
    /// directory exists.
    pub async fn finish(self, completion: &Completion) {
        let ctx = &self.ctx;
        let (job_id, func, runid) = (ctx.job_id(), ctx.func(), ctx.runid());
        match completion {
            Completion::Success { .. } => {
                if let Some(task) = &self.spec.prep_task {
                    if bounded(self.stamp(task)).await.is_none() {
                        tracing::warn!(runid, task, "RedisPrep stamp timed out");
                    }
                }
                ctx.publish(&status::completed(job_id, func, runid)).await;
            }
            Completion::Requeue => {
                ctx.status("interrupted by a worker shutdown; requeued")
                    .await;
            }
            Completion::RetryValue { .. } => {
                ctx.status("returned rq.Retry; it runs again").await;
            }
            Completion::Failure { text, .. } => {
                ctx.publish(&status::exception(job_id, func, runid, text))
                    .await;
            }
            Completion::Stopped => {
                ctx.publish(&status::exception(job_id, func, runid, STOPPED))
                    .await;
            }
            Completion::Lost => {
                ctx.publish(&status::exception(job_id, func, runid, LOST))
                    .await;
            }
        }
        let services = ctx.services();
        ctx.locks()
            .release_all(&services.keeper, &services.lock_db)
            .await;
        if let Ok(wd) = ctx.wd() {
            if wd.is_dir() {
                let dumped = bounded(async {
                    let mut conn = services.lock_db.get().await.map_err(|e| e.to_string())?;
                    prep::dump(&mut conn, rundir::prep_key(runid), wd).await
                })
                .await;
                match dumped {
                    Some(Ok(())) => {}
                    Some(Err(e)) => tracing::warn!(error = %e, "could not write redisprep.dump"),
                    None => tracing::warn!("writing redisprep.dump timed out"),
                }
            }
        }
    }

    async fn stamp(&self, task: &str) {
        let services = self.ctx.services();
        let runid = self.ctx.runid();
        let now = runq_common::timefmt::now().timestamp();
        match services.lock_db.get().await {
            Ok(mut conn) => {
                if let Err(e) = prep::stamp(&mut conn, rundir::prep_key(runid), task, now).await {
                    services.lock_db.reset().await;
                    tracing::warn!(error = %e, runid, task, "could not stamp RedisPrep");
                }
            }
            Err(e) => tracing::warn!(error = %e, runid, task, "could not stamp RedisPrep"),
        }
    }
}

/// The EXCEPTION text of a stopped job.
pub const STOPPED: &str = "JobStopped: stopped by a stop-job command";
/// The EXCEPTION text of a job taken over by maintenance.
pub const LOST: &str = "JobLost: the job was taken over by maintenance";
