//! Turning signals and the clock into shutdown phases: the first SIGTERM/SIGINT starts a
//! warm shutdown, a second one (at least 1 s later, as RQ does, to absorb duplicates from
//! process managers) a cold one; once warm, busy workers get RQ's
//! `shutdown_requested_date` and the grace period starts, after which the shutdown goes
//! cold.

use crate::registration;
use crate::service::Service;
use crate::shutdown::Shutdown;
use crate::slots::Slots;
use runq_common::config::Config;
use runq_common::connect::SharedConnection;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::signal::unix::{signal, Signal, SignalKind};

/// SIGTERM and SIGINT, installed before anything else so a stop request during start-up
/// (waiting for Redis) is honoured.
pub struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    pub fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// The next SIGTERM or SIGINT.
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

impl Service for Signals {
    const NAME: &'static str = "signals";

    async fn run(mut self, shutdown: Shutdown) {
        let mut first: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = self.recv() => {}
                _ = shutdown.exiting() => return,
            }
            match first {
                None if !shutdown.is_warm() => {
                    tracing::info!(
                        "warm shutdown requested: finishing running jobs, taking no new ones"
                    );
                    first = Some(Instant::now());
                    shutdown.begin_warm();
                }
                None => {
                    first = Some(Instant::now());
                    tracing::info!("cold shutdown requested: cancelling running jobs");
                    shutdown.begin_cold();
                }
                Some(t) if t.elapsed() >= Duration::from_secs(1) => {
                    tracing::info!("cold shutdown requested: cancelling running jobs");
                    shutdown.begin_cold();
                }
                Some(_) => tracing::debug!("ignoring a duplicate signal within 1 s of the first"),
            }
        }
    }
}

/// Once warm shutdown starts: marks busy workers as RQ does, then goes cold when the
/// grace period runs out.
pub struct GraceTimer {
    pub config: Arc<Config>,
    pub redis: SharedConnection,
    pub slots: Arc<Slots>,
}

impl Service for GraceTimer {
    const NAME: &'static str = "grace timer";

    async fn run(self, shutdown: Shutdown) {
        tokio::select! {
            _ = shutdown.warm() => {}
            _ = shutdown.exiting() => return,
        }
        let busy: Vec<String> = self
            .slots
            .running()
            .iter()
            .map(|j| j.worker.clone())
            .collect();
        if !busy.is_empty() {
            if let Ok(mut conn) = self.redis.get().await {
                let _ =
                    registration::mark_shutdown_requested(&mut conn, &self.config.keys(), &busy)
                        .await;
            }
        }
        let grace = Duration::from_secs(self.config.worker.shutdown_grace_secs);
        tokio::select! {
            _ = tokio::time::sleep(grace) => {
                if self.slots.busy_count() > 0 {
                    tracing::warn!("shutdown grace of {grace:?} ran out; cancelling running jobs");
                }
                shutdown.begin_cold();
            }
            _ = shutdown.cold() => {}
            _ = shutdown.exiting() => {}
        }
    }
}
