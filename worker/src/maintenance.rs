//! Periodic maintenance in every worker process: for each queue, one atomic script
//! ([`runq_common::scripts::maintenance`]) recovers abandoned jobs (their
//! started-registry deadline passed on Redis's clock because the owning process died) by
//! failing them with RQ's AbandonedJobError text or requeueing them, honouring retries;
//! trims expired finished/failed entries; clears stale intermediate-list entries left by
//! Python workers; drops dead worker records. Scripts are atomic, so several processes
//! running maintenance never double-handle a job.

use crate::service::Service;
use crate::shutdown::Shutdown;
use runq_common::config::Config;
use runq_common::connect::SharedConnection;
use runq_common::scripts::maintenance::{self, Pass, PassReply, PassReport};
use std::sync::Arc;
use std::time::Duration;

pub struct Maintenance {
    pub config: Arc<Config>,
    pub redis: SharedConnection,
}

impl Service for Maintenance {
    const NAME: &'static str = "maintenance";

    async fn run(self, shutdown: Shutdown) {
        let period = Duration::from_secs(self.config.worker.maintenance_secs.max(1));
        loop {
            for q in self.config.queue_names() {
                match self.pass(&q).await {
                    Ok(PassReply::Done(r)) if r != PassReport::default() => {
                        tracing::info!(queue = %q, report = ?r, "maintenance recovered jobs")
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(queue = %q, error = %e, "maintenance failed; will retry");
                        self.redis.reset().await;
                    }
                }
            }
            if !shutdown.sleep(period).await {
                return;
            }
        }
    }
}

impl Maintenance {
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
