//! Batched heartbeats: one script call ([`runq_common::scripts::heartbeat`]) per interval
//! keeps every slot's worker key and every running job's started-registry deadline alive
//! (Redis's clock + 3 × heartbeat), and writes the job counters each slot gathered since
//! the last beat (the last beat, at exit, writes the rest). A beat that failed, took
//! long or got no answer within one period (the connection is then dropped) is followed
//! by another at once (a stall must not eat the lease). Executions whose registry entry
//! vanished are cancelled (someone else now owns the job); slots whose worker key vanished
//! are registered again.

use crate::job::{Job, StopReason};
use crate::registration::{self, Identity};
use crate::service::Service;
use crate::shutdown::Shutdown;
use crate::slots::Slots;
use runq_common::config::Config;
use runq_common::connect::SharedConnection;
use runq_common::echo::clip;
use runq_common::scripts::heartbeat::{self, Beating, SlotBeat};
use runq_common::scripts::unrecordable::Unrecorded;
use runq_common::timefmt::Stamp;
use runq_common::worker_state::WorkerState;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Heartbeat {
    pub config: Arc<Config>,
    pub redis: SharedConnection,
    pub slots: Arc<Slots>,
    pub identity: Identity,
    /// Slots and executions whose beat a key of the wrong type refused, already logged
    /// (each is logged once, not on every beat).
    pub damaged_logged: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl Service for Heartbeat {
    const NAME: &'static str = "heartbeat";

    async fn run(self, shutdown: Shutdown) {
        let period = Duration::from_secs(self.config.worker.heartbeat_secs);
        let mut wait = period;
        loop {
            if !shutdown.sleep(wait).await {
                // Exiting: one last beat writes the counters gathered since the last one.
                if let Err(e) = self.beat().await {
                    tracing::debug!(error = %e, "the last heartbeat failed");
                }
                return;
            }
            let started = Instant::now();
            let result = self.beat().await;
            let slow = started.elapsed() > period / 4;
            wait = match &result {
                Ok(()) if !slow => period,
                // A failed or slow beat (Redis stalled or restarting): beat again soon,
                // so the lease is refreshed as soon as Redis answers again.
                _ => Duration::from_millis(100),
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "heartbeat failed; retrying");
                self.redis.reset().await;
            }
        }
    }
}

impl Heartbeat {
    /// Logs each slot or execution whose beat a key refused, once; forgets those no
    /// longer running.
    fn log_damaged(&self, damaged: &[Unrecorded], running: &[Arc<Job>]) {
        let mut logged = self
            .damaged_logged
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        logged.retain(|k| {
            self.slots.names.iter().any(|n| n == k) || running.iter().any(|j| &j.member() == k)
        });
        for d in damaged {
            if logged.insert(d.id.clone()) {
                tracing::error!(of = %clip(&d.id, 120), "the heartbeat cannot refresh this: {}", clip(&d.reason, 300));
            }
        }
    }

    /// One heartbeat for all slots.
    pub async fn beat(&self) -> runq_common::Result<()> {
        let keys = self.config.keys();
        let lease = self.config.worker.heartbeat_secs * 3;
        // A job whose completion is in flight is not counted: its entry is about to go.
        let running: Vec<_> = self
            .slots
            .running()
            .into_iter()
            .filter(|j| !j.is_completing())
            .collect();
        let beating: Vec<Beating> = running
            .iter()
            .map(|j| Beating {
                id: &j.id,
                exec_id: &j.exec_id,
                origin: &j.origin,
            })
            .collect();
        let counters = self.slots.take_counters();
        let slot_beats: Vec<SlotBeat> = self
            .slots
            .names
            .iter()
            .zip(&counters)
            .map(|(worker, c)| SlotBeat {
                worker,
                finished: c.finished,
                failed: c.failed,
                working_secs: c.working_secs,
            })
            .collect();
        // A beat waits at most one period for its answer: on a connection that died
        // silently (a network partition) the request would otherwise wait for TCP to give
        // up, minutes after the lease ran out, while other requests use a new connection.
        let period_secs = self.config.worker.heartbeat_secs;
        let sent = tokio::time::timeout(Duration::from_secs(period_secs), async {
            let mut conn = self.redis.get().await?;
            let reply = heartbeat::beat(
                &mut conn,
                &keys,
                &Stamp::now(),
                lease,
                self.config.worker.heartbeat_secs * 2,
                &slot_beats,
                &beating,
            )
            .await?;
            Ok::<_, runq_common::Error>((conn, reply))
        })
        .await
        .unwrap_or(Err(runq_common::Error::NoAnswer {
            what: "the heartbeat",
            secs: period_secs,
        }));
        let (mut conn, reply) = match sent {
            Ok(r) => r,
            Err(e) => {
                self.slots.restore_counters(&counters);
                return Err(e);
            }
        };
        self.log_damaged(&reply.damaged, &running);
        for member in reply.lost {
            if let Some(job) = running.iter().find(|j| j.member() == member) {
                if !job.is_completing() {
                    tracing::warn!(job = %job.id, "the job's started-registry entry is gone; cancelling it here");
                    job.stop(StopReason::Lost);
                }
            }
        }
        let missing = reply.missing_workers;
        if !missing.is_empty() {
            tracing::warn!(workers = ?missing, "worker keys expired (Redis was unreachable?); registering again");
            registration::register(&mut conn, &keys, &missing, &self.identity, lease).await?;
            let busy: Vec<String> = running
                .iter()
                .map(|j| j.worker.clone())
                .filter(|n| missing.contains(n))
                .collect();
            registration::set_state(&mut conn, &keys, &busy, WorkerState::Busy).await?;
        }
        Ok(())
    }
}
