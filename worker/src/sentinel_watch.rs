//! The Sentinel watch (started only with `[redis.sentinel]`): the process follows the
//! master the sentinels name as soon as they name another one. After a planned failover
//! (`SENTINEL FAILOVER`) the old master stays a writable master until the sentinels demote
//! it about 10 s later, and its connections do not fail; whatever the workers claimed or
//! finished there in the meantime is dropped when it becomes a replica, and runs again.
//!
//! The watch subscribes to one sentinel's `+switch-master` (and `+promoted-slave`, which
//! the sentinel running the failover publishes the moment the replica is promoted),
//! moving on to the next sentinel when that one fails or stops answering PING on the
//! subscription; and, as a backstop, it asks the sentinels `GET-MASTER-ADDR-BY-NAME` about
//! every second. When the master named is another server that answers `ROLE` as a master
//! ([`Sentinels::follow`]: not an older sentinel view), the process switches: one log line
//! ("redis master is now host:port (was ...)"), and the master generation moves on, so
//! every shared connection reconnects to the new master at its next use and the holders of
//! dedicated and pub/sub connections (queue wake-ups, worker commands) reconnect too.

use crate::service::Service;
use crate::shutdown::Shutdown;
use futures_util::StreamExt;
use runq_common::config::Config;
use runq_common::sentinel::{Named, Sentinels, SENTINEL_TIMEOUT};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::MissedTickBehavior;

/// How often the sentinels are asked where the master is.
const POLL: Duration = Duration::from_secs(1);

/// The sentinel events that name a new master.
const CHANNELS: [&str; 2] = ["+switch-master", "+promoted-slave"];

pub struct SentinelWatch {
    pub config: Arc<Config>,
    pub sentinels: Sentinels,
}

impl Service for SentinelWatch {
    const NAME: &'static str = "sentinel watch";

    async fn run(self, shutdown: Shutdown) {
        let n = self.sentinels.len();
        if n == 0 {
            return;
        }
        let mut poll = tokio::time::interval(POLL);
        poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut next = self.sentinels.order()[0];
        // Whether the last subscription attempt failed (logged once until one works).
        let mut failing = false;
        let mut polls_failing = false;
        loop {
            let i = next;
            next = (i + 1) % n;
            let label = self.sentinels.label(i).to_string();
            let subscribed = tokio::select! {
                s = self.subscribe(i) => s,
                _ = shutdown.exiting() => return,
            };
            let (mut sink, mut events) = match subscribed {
                Ok(p) => p,
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "cannot subscribe to the events of sentinel {label}; trying the next one (the sentinels are still asked every second)");
                        failing = true;
                    }
                    tokio::select! {
                        _ = poll.tick() => self.poll(&mut polls_failing).await,
                        _ = shutdown.exiting() => return,
                    }
                    continue;
                }
            };
            if failing {
                tracing::info!("subscribed to the events of sentinel {label}");
                failing = false;
            } else {
                tracing::debug!("subscribed to the events of sentinel {label}");
            }
            loop {
                tokio::select! {
                    biased;
                    _ = shutdown.exiting() => return,
                    msg = events.next() => {
                        let Some(msg) = msg else {
                            tracing::warn!("lost the subscription to sentinel {label}; moving to the next sentinel");
                            break;
                        };
                        let payload: String = msg.get_payload().unwrap_or_default();
                        let Some(addr) = self.sentinels.event_names(msg.get_channel_name(), &payload) else {
                            continue;
                        };
                        tracing::debug!(channel = msg.get_channel_name(), %payload, "sentinel {label} names {addr}");
                        // That sentinel's view now, with its configuration epoch.
                        let named = self.sentinels.ask(i).await.unwrap_or(Named {
                            addr,
                            epoch: None,
                            sentinel: i,
                        });
                        self.sentinels.follow(named, self.config.redis.db.rq).await;
                    }
                    _ = poll.tick() => {
                        self.poll(&mut polls_failing).await;
                        // A subscription to a sentinel that went away silently would
                        // never end: it must answer PING.
                        let alive = tokio::time::timeout(
                            SENTINEL_TIMEOUT,
                            sink.ping::<redis::Value>(),
                        )
                        .await
                        .is_ok_and(|r| r.is_ok());
                        if !alive {
                            tracing::warn!("sentinel {label} does not answer PING on the event subscription; moving to the next sentinel");
                            break;
                        }
                    }
                }
            }
        }
    }
}

impl SentinelWatch {
    async fn subscribe(
        &self,
        i: usize,
    ) -> runq_common::Result<(redis::aio::PubSubSink, redis::aio::PubSubStream)> {
        let (mut sink, events) = self.sentinels.subscriber(i).await?.split();
        tokio::time::timeout(SENTINEL_TIMEOUT, sink.subscribe(&CHANNELS[..]))
            .await
            .map_err(|_| runq_common::Error::NoAnswer {
                what: "SUBSCRIBE",
                secs: SENTINEL_TIMEOUT.as_secs(),
            })??;
        Ok((sink, events))
    }

    /// Asks the sentinels where the master is and follows the answer.
    async fn poll(&self, failing: &mut bool) {
        match self.sentinels.ask_in_turn().await {
            Ok(named) => {
                if *failing {
                    tracing::info!("a sentinel answers again");
                    *failing = false;
                }
                self.sentinels.follow(named, self.config.redis.db.rq).await;
            }
            Err(e) => {
                if !*failing {
                    tracing::warn!(error = %e, "no sentinel says where the master is");
                    *failing = true;
                }
            }
        }
    }
}
