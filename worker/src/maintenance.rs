//! Periodic maintenance in every worker process: for each queue, one atomic script
//! ([`runq_common::scripts::maintenance`]) recovers abandoned jobs (their
//! started-registry deadline passed on Redis's clock because the owning process died) by
//! failing them with RQ's AbandonedJobError text or requeueing them, honouring retries;
//! trims expired finished/failed entries; pushes what a crashed Python 3.0 worker left in
//! the ready registry; clears stale intermediate-list entries left by Python workers;
//! drops dead worker records; then frees rate-limit slots no job holds any more. Jobs it
//! failed get their failure callbacks and webhooks through [`Followups`]. Scripts are atomic, so several processes
//! running maintenance never double-handle a job.

use crate::followups::Followups;
use crate::service::Service;
use crate::shutdown::Shutdown;
use runq_common::config::Config;
use runq_common::connect::SharedConnection;
use runq_common::echo::clip;
use runq_common::scripts::maintenance::{self, Pass, PassReply, PassReport};
use runq_common::scripts::rate_limits::{self, SweepReport};
use std::sync::Arc;
use std::time::Duration;

pub struct Maintenance {
    pub config: Arc<Config>,
    pub redis: SharedConnection,
    pub followups: Followups,
}

impl Service for Maintenance {
    const NAME: &'static str = "maintenance";

    async fn run(self, shutdown: Shutdown) {
        let period = Duration::from_secs(self.config.worker.maintenance_secs.max(1));
        loop {
            for q in self.config.queue_names() {
                match self.pass(&q).await {
                    Ok(PassReply::Done(r, failed, damaged)) => {
                        for d in &damaged {
                            tracing::error!(queue = %q, job = %clip(&d.id, 80), "maintenance could not recover the job as usual, so it was failed instead: {}", clip(&d.reason, 300));
                        }
                        if r != PassReport::default() {
                            tracing::info!(queue = %q, report = ?r, "maintenance recovered jobs");
                        }
                        self.followups
                            .after_abandoned(&self.redis, &self.config.keys(), failed);
                    }
                    Ok(PassReply::Busy) => {}
                    Err(e) => {
                        tracing::warn!(queue = %q, error = %e, "maintenance failed; will retry");
                        self.redis.reset().await;
                    }
                }
            }
            match self.sweep_rate_limits().await {
                Ok(r) if r != SweepReport::default() => {
                    tracing::info!(report = ?r, "rate-limit slots no job holds were freed")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "rate-limit sweep failed; will retry"),
            }
            if !shutdown.sleep(period).await {
                return;
            }
        }
    }
}

impl Maintenance {
    /// The rate-limit sweep (once per pass, not per queue).
    pub async fn sweep_rate_limits(&self) -> runq_common::Result<SweepReport> {
        let mut conn = self.redis.get().await?;
        Ok(rate_limits::sweep(&mut conn, &self.config.keys()).await?)
    }

    /// One pass over one queue.
    pub async fn pass(&self, queue: &str) -> runq_common::Result<PassReply> {
        let heartbeat = self.config.worker.heartbeat_secs;
        let pass = Pass {
            queue,
            policy: self.config.worker.abandoned_jobs,
            default_failure_ttl: self.config.worker.failure_ttl,
            lease_secs: heartbeat * 3,
            stall_gap_secs: heartbeat * 2,
        };
        let mut conn = self.redis.get().await?;
        Ok(maintenance::pass(&mut conn, &self.config.keys(), &pass).await?)
    }
}
