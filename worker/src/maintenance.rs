//! Periodic maintenance in every worker process: for each queue, one atomic script
//! recovers abandoned jobs (their started-registry deadline passed because the owning
//! process died) by failing them with RQ's AbandonedJobError text or requeueing them,
//! honouring retries; trims expired finished/failed entries; clears stale
//! intermediate-list entries left by Python workers; drops dead worker records.
//! Scripts are atomic, so several processes running maintenance never double-handle a job.

use runq_common::config::{Config, InterruptedJobPolicy};
use runq_common::connect::SharedConnection;
use runq_common::results;
use runq_common::scripts::scripts;
use runq_common::timefmt::Stamp;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Counts from one pass over one queue.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PassReport {
    pub abandoned_failed: u64,
    pub abandoned_requeued: u64,
    pub abandoned_retried: u64,
    pub intermediate_cleared: u64,
    pub dead_workers: u64,
}

/// Runs maintenance every `maintenance_secs` until `stop`.
pub async fn run(config: Arc<Config>, redis: SharedConnection, stop: CancellationToken) {
    let period = Duration::from_secs(config.worker.maintenance_secs.max(1));
    loop {
        for q in config.queue_names() {
            match pass(&config, &redis, &q).await {
                Ok(Some(r)) if r != PassReport::default() => {
                    tracing::info!(queue = %q, report = ?r, "maintenance recovered jobs")
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(queue = %q, error = %e, "maintenance failed; will retry");
                    redis.reset().await;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// One pass over one queue; `None` when Python RQ's cleanup holds the queue right now.
pub async fn pass(
    config: &Config,
    redis: &SharedConnection,
    queue: &str,
) -> runq_common::Result<Option<PassReport>> {
    let now = Stamp::now();
    let python_now = now.at.format("%Y-%m-%d %H:%M:%S%.6f+00:00");
    let abandoned = results::encode_exc_string(&format!(
        "Moved to FailedJobRegistry, due to AbandonedJobError, at {python_now}"
    ));
    let stuck = results::encode_exc_string("Job was stuck in intermediate queue.");
    let policy = match config.worker.abandoned_jobs {
        InterruptedJobPolicy::Fail => "fail",
        InterruptedJobPolicy::Requeue => "requeue",
    };
    let mut conn = redis.get().await?;
    let reply: redis::Value = scripts()
        .maintenance
        .prepare_invoke()
        .arg(config.keys().prefix())
        .arg(&now.text)
        .arg(now.secs)
        .arg(&now.epoch_text)
        .arg(queue)
        .arg(policy)
        .arg(config.worker.failure_ttl)
        .arg(abandoned)
        .arg(stuck)
        .invoke_async(&mut conn)
        .await?;
    let counts: Result<Vec<u64>, _> = redis::from_redis_value(reply);
    Ok(counts.ok().filter(|c| c.len() == 5).map(|c| PassReport {
        abandoned_failed: c[0],
        abandoned_requeued: c[1],
        abandoned_retried: c[2],
        intermediate_cleared: c[3],
        dead_workers: c[4],
    }))
}
