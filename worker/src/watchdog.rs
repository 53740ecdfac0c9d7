//! The systemd watchdog service: `WATCHDOG=1` every [`Notifier::watchdog_interval`] while
//! the async runtime runs (a wedged runtime gets no ping and is restarted; a Redis outage,
//! which the worker survives by reconnecting, does not stop the pings), and `STOPPING=1`
//! once warm shutdown begins. Each tick also PINGs Redis on the shared connection and
//! replaces a connection that does not answer, so a half-open socket cannot wedge the
//! worker's Redis traffic.

use crate::notify::Notifier;
use crate::service::Service;
use crate::shutdown::Shutdown;
use runq_common::connect::SharedConnection;
use std::time::Duration;

/// How long a PING may take before the shared connection is replaced.
const PING_WAIT: Duration = Duration::from_secs(5);

pub struct Watchdog {
    pub notifier: Notifier,
    pub redis: SharedConnection,
}

impl Service for Watchdog {
    const NAME: &'static str = "watchdog";

    async fn run(self, shutdown: Shutdown) {
        let tick = self
            .notifier
            .watchdog_interval()
            .unwrap_or(Duration::from_secs(10));
        let mut stopping_sent = false;
        loop {
            tokio::select! {
                biased;
                _ = shutdown.warm(), if !stopping_sent => {
                    self.notifier.stopping();
                    stopping_sent = true;
                    continue;
                }
                _ = shutdown.exiting() => {
                    // Exiting: STOPPING goes out even when the drain was too quick to see.
                    if !stopping_sent {
                        self.notifier.stopping();
                    }
                    return;
                }
                _ = tokio::time::sleep(tick) => {}
            }
            self.notifier.watchdog();
            self.check_redis().await;
        }
    }
}

impl Watchdog {
    async fn check_redis(&self) {
        let ping = tokio::time::timeout(PING_WAIT, async {
            let mut conn = self.redis.get().await.ok()?;
            redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .ok()
        })
        .await;
        if !matches!(ping, Ok(Some(_))) {
            tracing::warn!("Redis does not answer PING on the shared connection; reconnecting");
            self.redis.reset().await;
        }
    }
}
