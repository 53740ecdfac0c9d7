//! The scheduler: moves due jobs from `rq:scheduled:<q>` to their queues. Exactly one
//! scheduler is active per queue across all processes and hosts (Python's included),
//! through RQ's `rq:scheduler-lock:<q>` holding this scheduler's name as an owner token
//! ([`runq_common::scripts::scheduler`]); unlike RQ, the lock is renewed and released
//! only by its owner. Ticks every 500 ms, so a due job reaches its queue within a second.

use crate::registration::Identity;
use crate::service::Service;
use crate::shutdown::Shutdown;
use runq_common::config::Config;
use runq_common::connect::SharedConnection;
use runq_common::echo::clip;
use runq_common::scripts::scheduler;
use runq_common::timefmt::Stamp;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

const LOCK_TTL: u64 = 61;
const TICK: Duration = Duration::from_millis(500);
const ACQUIRE_EVERY: Duration = Duration::from_secs(5);

pub struct Scheduler {
    pub config: Arc<Config>,
    pub redis: SharedConnection,
    pub identity: Identity,
}

/// The scheduler's state between ticks.
struct Held {
    name: String,
    created: Stamp,
    queues: BTreeSet<String>,
    last_acquire: Option<Instant>,
}

impl Service for Scheduler {
    const NAME: &'static str = "scheduler";

    async fn run(self, shutdown: Shutdown) {
        let mut held = Held {
            name: uuid::Uuid::new_v4().simple().to_string(),
            created: Stamp::now(),
            queues: BTreeSet::new(),
            last_acquire: None,
        };
        loop {
            if let Err(e) = self.tick(&mut held).await {
                tracing::warn!(error = %e, "scheduler tick failed; will retry");
                self.redis.reset().await;
            }
            if !shutdown.sleep(TICK).await {
                break;
            }
        }
        let queues: Vec<String> = held.queues.into_iter().collect();
        if let Ok(mut conn) = self.redis.get().await {
            let _ = scheduler::unlock(&mut conn, &self.config.keys(), &held.name, &queues).await;
        }
    }
}

impl Scheduler {
    async fn tick(&self, held: &mut Held) -> runq_common::Result<()> {
        let keys = self.config.keys();
        let mut conn = self.redis.get().await?;
        if held
            .last_acquire
            .is_none_or(|t| t.elapsed() >= ACQUIRE_EVERY)
        {
            held.last_acquire = Some(Instant::now());
            for q in self.config.queue_names() {
                if !held.queues.contains(&q)
                    && scheduler::try_lock(&mut conn, &keys, &q, &held.name, LOCK_TTL).await?
                {
                    tracing::info!(queue = %q, scheduler = %held.name, "scheduler lock acquired");
                    held.queues.insert(q);
                }
            }
            if !held.queues.is_empty() {
                self.write_record(&mut conn, held).await?;
            }
        }
        if held.queues.is_empty() {
            return Ok(());
        }
        let queues: Vec<String> = held.queues.iter().cloned().collect();
        let reply = scheduler::tick(
            &mut conn,
            &keys,
            &held.name,
            LOCK_TTL,
            &queues,
            self.config.worker.failure_ttl,
        )
        .await?;
        for d in &reply.damaged {
            tracing::error!(job = %clip(&d.id, 80), "a due job could not be moved to its queue, so it was failed instead: {}", clip(&d.reason, 300));
        }
        if reply.moved > 0 {
            tracing::debug!(moved = reply.moved, "scheduled jobs moved to their queues");
        }
        for q in reply.lost {
            tracing::warn!(queue = %q, "scheduler lock was taken over; no longer scheduling this queue");
            held.queues.remove(&q);
        }
        Ok(())
    }

    /// `rq:scheduler:<name>`, as RQ's scheduler registers itself.
    async fn write_record(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
        held: &Held,
    ) -> redis::RedisResult<()> {
        let hk = self.config.keys().scheduler(&held.name);
        let queues = held.queues.iter().cloned().collect::<Vec<_>>().join(",");
        redis::pipe()
            .hset_multiple(
                &hk,
                &[
                    ("name", held.name.as_str()),
                    ("hostname", self.identity.hostname.as_str()),
                    ("pid", &self.identity.pid.to_string()),
                    ("queues", &queues),
                    ("created_at", &held.created.text),
                    ("last_heartbeat", &Stamp::now().text),
                ],
            )
            .ignore()
            .expire(&hk, LOCK_TTL as i64)
            .ignore()
            .query_async(conn)
            .await
    }
}
