//! Run state around a job whose task names a runid (DESIGN §4): open the run (directory,
//! log level, `STARTED` line), take the task's NoDb locks in order, and at the end stamp
//! RedisPrep, publish `COMPLETED` or `EXCEPTION`, release the locks and snapshot the run
//! hash to `redisprep.dump`.

pub mod context;
pub mod fence;
pub mod keeper;
pub mod turns;

pub use context::{RunContext, RunServices};

use crate::slots::Running;
use fence::Fence;
use runq_common::nodb::lock::{self, Lease, TokenCheck};
use runq_common::nodb::{loglevel, prep, rundir, status};
use runq_common::taskspec::TaskSpec;
use std::sync::Arc;
use std::time::Duration;

/// Opens the run for a job: validates the runid, finds its directory, reads its log
/// level and publishes `STARTED`. Locks are taken separately ([`take_locks`]).
pub async fn open(
    services: &Arc<RunServices>,
    spec: &TaskSpec,
    job_id: &str,
    runid: String,
    ticket: i64,
    running: &Running,
) -> Result<Arc<RunContext>, String> {
    rundir::validate_runid(&runid).map_err(|e| format!("ValueError: {e}"))?;
    // The place in the first lock's line is taken before any await, so the order jobs
    // arrive in is the order they get the lock. Later locks are queued for only once the
    // earlier ones are held (a waiter holding places everywhere could deadlock).
    let places = spec
        .locks
        .first()
        .map(|rel| services.keeper.join(&lock::lock_key(&runid, rel), ticket))
        .into_iter()
        .collect();
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
    let ctx = Arc::new(RunContext {
        services: services.clone(),
        job_id: job_id.to_string(),
        func: spec.short_name().to_string(),
        channel: spec
            .status_channel
            .as_ref()
            .map(|c| status::channel(&runid, c)),
        runid,
        wd,
        level,
        places: std::sync::Mutex::new(places),
        ticket,
        fence: Arc::new(Fence::new(running.clone())),
        held: Default::default(),
        pending: Default::default(),
    });
    ctx.publish(&status::started(&ctx.job_id, &ctx.func, &ctx.runid))
        .await;
    Ok(ctx)
}

/// Takes the task's locks in the spec's (sorted) order, each waiting up to `lock_wait`.
pub async fn take_locks(ctx: &RunContext, spec: &TaskSpec) -> Result<(), String> {
    let mut first = ctx.places.lock().expect("places").pop();
    for relpath in &spec.locks {
        let lease = Lease::new(&ctx.runid, relpath, spec.lock_ttl);
        let place = first
            .take()
            .unwrap_or_else(|| ctx.services.keeper.join(&lease.key, ctx.ticket));
        ctx.pending.lock().expect("pending").push(lease.clone());
        let got = ctx
            .services
            .keeper
            .acquire(
                place,
                lease.clone(),
                Duration::from_secs(spec.lock_wait),
                ctx.fence.clone(),
            )
            .await;
        // A lease whose attempt ended in a Redis error stays pending: the script may have
        // run before the reply was lost, so `finish` releases it by token.
        if !matches!(
            got,
            Err(lock::LockError::Redis(_) | lock::LockError::Connection(_))
        ) {
            ctx.pending
                .lock()
                .expect("pending")
                .retain(|l| l.token != lease.token);
        }
        let (held, waited) = got.map_err(|e| e.to_string())?;
        if waited > 0.05 {
            tracing::debug!(lock = %held.lease.key, waited, "waited for a NoDb lock");
        }
        ctx.held.lock().expect("held locks").push(held);
    }
    Ok(())
}

/// How the job ended, for the run side.
pub enum Ending<'a> {
    Success,
    /// Cut off by a cold shutdown and put back on its queue.
    Requeued,
    Failure(&'a str),
}

/// Closes the run: on success stamps `timestamps:<prep_task>` and publishes `COMPLETED`,
/// otherwise `EXCEPTION`; releases every lock (compare-token-and-delete) and rewrites
/// `redisprep.dump` when the run directory exists.
pub async fn finish(ctx: &RunContext, spec: &TaskSpec, ending: Ending<'_>) {
    match ending {
        Ending::Success => {
            if let Some(task) = &spec.prep_task {
                if bounded(stamp(ctx, task)).await.is_none() {
                    tracing::warn!(runid = %ctx.runid, task, "RedisPrep stamp timed out");
                }
            }
            ctx.publish(&status::completed(&ctx.job_id, &ctx.func, &ctx.runid))
                .await;
        }
        Ending::Requeued => {
            ctx.status("interrupted by a worker shutdown; requeued")
                .await;
        }
        Ending::Failure(text) => {
            ctx.publish(&status::exception(&ctx.job_id, &ctx.func, &ctx.runid, text))
                .await;
        }
    }
    release_all(ctx).await;
    if let Ok(wd) = &ctx.wd {
        if wd.is_dir() {
            let dumped = bounded(async {
                let mut conn = ctx
                    .services
                    .lock_db
                    .get()
                    .await
                    .map_err(|e| e.to_string())?;
                let fields = prep::fields(&mut conn, rundir::prep_key(&ctx.runid))
                    .await
                    .map_err(|e| e.to_string())?;
                let wd = wd.clone();
                tokio::task::spawn_blocking(move || prep::write_dump(&wd, &fields))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())
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

/// How long one run-state round trip (status line, stamp, release, fence check) may
/// take before it is given up on, so a hung connection never holds a slot.
pub const REDIS_BUDGET: Duration = Duration::from_secs(5);

/// `fut` within [`REDIS_BUDGET`]; None when it ran out.
pub(crate) async fn bounded<T>(fut: impl std::future::Future<Output = T>) -> Option<T> {
    tokio::time::timeout(REDIS_BUDGET, fut).await.ok()
}

async fn stamp(ctx: &RunContext, task: &str) {
    let now = chrono::Utc::now().timestamp();
    match ctx.services.lock_db.get().await {
        Ok(mut conn) => {
            if let Err(e) = prep::stamp(&mut conn, rundir::prep_key(&ctx.runid), task, now).await {
                ctx.services.lock_db.reset().await;
                tracing::warn!(error = %e, runid = %ctx.runid, task, "could not stamp RedisPrep");
            }
        }
        Err(e) => tracing::warn!(error = %e, runid = %ctx.runid, task, "could not stamp RedisPrep"),
    }
}

async fn release_all(ctx: &RunContext) {
    let held: Vec<_> = std::mem::take(&mut *ctx.held.lock().expect("held locks"));
    for h in held.into_iter().rev() {
        let key = h.lease.key.clone();
        match ctx.services.keeper.release(h).await {
            Ok(TokenCheck::Ok) => {}
            Ok(TokenCheck::Gone) => tracing::debug!(lock = %key, "lock had already gone"),
            Ok(TokenCheck::Held(owner)) => {
                tracing::warn!(lock = %key, owner, "lock is someone else's now; left alone")
            }
            Err(e) => {
                tracing::warn!(lock = %key, error = %e, "could not release a NoDb lock; it expires with its TTL")
            }
        }
    }
    let pending: Vec<Lease> = std::mem::take(&mut *ctx.pending.lock().expect("pending"));
    if pending.is_empty() {
        return;
    }
    bounded(async {
        if let Ok(mut conn) = ctx.services.lock_db.get().await {
            for lease in pending {
                let _ = lock::release(&mut conn, &lease).await;
            }
        }
    })
    .await;
}
