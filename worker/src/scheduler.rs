//! The scheduler: moves due jobs from `rq:scheduled:<q>` to their queues. Exactly one
//! scheduler is active per queue across all processes and hosts (Python's included),
//! through RQ's `rq:scheduler-lock:<q>` holding this scheduler's name as an owner token;
//! unlike RQ, the lock is renewed and released only by its owner (compare-token scripts).
//! Ticks every 500 ms, so a due job reaches its queue within a second.

use crate::registration::Identity;
use redis::Script;
use runq_common::config::Config;
use runq_common::connect::SharedConnection;
use runq_common::scripts::scripts;
use runq_common::timefmt::Stamp;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const LOCK_TTL: u64 = 61;
const TICK: Duration = Duration::from_millis(500);
const ACQUIRE_EVERY: Duration = Duration::from_secs(5);

/// Runs until `stop`, then releases the locks it holds.
pub async fn run(
    config: Arc<Config>,
    redis: SharedConnection,
    identity: Identity,
    stop: CancellationToken,
) {
    let keys = config.keys();
    let name = uuid::Uuid::new_v4().simple().to_string();
    let created = Stamp::now();
    let mut held: BTreeSet<String> = BTreeSet::new();
    let mut last_acquire: Option<Instant> = None;
    loop {
        let result: redis::RedisResult<()> = async {
            let mut conn = redis.get().await.map_err(to_redis)?;
            if last_acquire.is_none_or(|t| t.elapsed() >= ACQUIRE_EVERY) {
                last_acquire = Some(Instant::now());
                for q in config.queue_names() {
                    if held.contains(&q) {
                        continue;
                    }
                    let won: Option<String> = redis::cmd("SET")
                        .arg(keys.scheduler_lock(&q))
                        .arg(&name)
                        .arg("NX")
                        .arg("EX")
                        .arg(LOCK_TTL)
                        .query_async(&mut conn)
                        .await?;
                    if won.is_some() {
                        tracing::info!(queue = %q, scheduler = %name, "scheduler lock acquired");
                        held.insert(q);
                    }
                }
                if !held.is_empty() {
                    let now = Stamp::now();
                    let hk = format!("{}:scheduler:{name}", keys.prefix());
                    let queues = held.iter().cloned().collect::<Vec<_>>().join(",");
                    redis::pipe()
                        .hset_multiple(
                            &hk,
                            &[
                                ("name", name.as_str()),
                                ("hostname", identity.hostname.as_str()),
                                ("pid", &identity.pid.to_string()),
                                ("queues", &queues),
                                ("created_at", &created.text),
                                ("last_heartbeat", &now.text),
                            ],
                        )
                        .ignore()
                        .expire(&hk, LOCK_TTL as i64)
                        .ignore()
                        .query_async::<()>(&mut conn)
                        .await?;
                }
            }
            if held.is_empty() {
                return Ok(());
            }
            let now = Stamp::now();
            let mut inv = scripts().scheduler.prepare_invoke();
            inv.arg(keys.prefix()).arg(&name).arg(LOCK_TTL).arg(&now.text).arg(now.secs).arg(held.len());
            for q in &held {
                inv.arg(q);
            }
            let out: Vec<redis::Value> = inv.invoke_async(&mut conn).await?;
            let mut it = out.into_iter();
            let moved: i64 = redis::from_redis_value(it.next().unwrap_or(redis::Value::Int(0)))?;
            if moved > 0 {
                tracing::debug!(moved, "scheduled jobs moved to their queues");
            }
            for lost in it {
                let q: String = redis::from_redis_value(lost)?;
                tracing::warn!(queue = %q, "scheduler lock was taken over; no longer scheduling this queue");
                held.remove(&q);
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "scheduler tick failed; will retry");
            redis.reset().await;
        }
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = stop.cancelled() => break,
        }
    }
    release(&config, &redis, &name, &held).await;
}

/// Deletes the locks that still hold our token, and our scheduler record.
async fn release(config: &Config, redis: &SharedConnection, name: &str, held: &BTreeSet<String>) {
    let keys = config.keys();
    let cad = Script::new("if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0");
    if let Ok(mut conn) = redis.get().await {
        for q in held {
            let _: redis::RedisResult<i64> = cad
                .key(keys.scheduler_lock(q))
                .arg(name)
                .invoke_async(&mut conn)
                .await;
        }
        let _: redis::RedisResult<i64> = redis::cmd("DEL")
            .arg(format!("{}:scheduler:{name}", keys.prefix()))
            .query_async(&mut conn)
            .await;
    }
}

fn to_redis(e: runq_common::Error) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Io, "connection", e.to_string()))
}
