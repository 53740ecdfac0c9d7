//! The scheduler's scripts ([`scheduler.lua`](scheduler.lua),
//! [`scheduler_unlock.lua`](scheduler_unlock.lua)) and its lock: one active scheduler per
//! queue across every process and host, through RQ's `rq:scheduler-lock:<q>` holding the
//! scheduler's name as an owner token that only the owner renews or releases.

use super::script;
use crate::keys::Keys;
use crate::timefmt::Stamp;
use redis::aio::ConnectionLike;

/// Takes `queue`'s scheduler lock for `token` when nobody holds it.
pub async fn try_lock<C: ConnectionLike + Send>(
    conn: &mut C,
    keys: &Keys,
    queue: &str,
    token: &str,
    ttl_secs: u64,
) -> redis::RedisResult<bool> {
    super::take_owner_lock(conn, keys.scheduler_lock(queue), token, ttl_secs).await
}

/// What one tick did.
#[derive(Debug, Default)]
pub struct TickReply {
    /// Due jobs moved to their queues.
    pub moved: u64,
    /// Queues whose lock is no longer `token`'s (skipped).
    pub lost: Vec<String>,
}

/// Renews `token`'s locks on `queues` and moves their due jobs.
pub async fn tick<C: ConnectionLike + Send>(
    conn: &mut C,
    keys: &Keys,
    token: &str,
    lock_ttl_secs: u64,
    queues: &[String],
) -> redis::RedisResult<TickReply> {
    let now = Stamp::now();
    let mut inv = script!("scheduler.lua").prepare_invoke();
    inv.arg(keys.prefix())
        .arg(token)
        .arg(lock_ttl_secs)
        .arg(&now.text)
        .arg(queues.len());
    for q in queues {
        inv.arg(q);
    }
    let out: Vec<redis::Value> = inv.invoke_async(conn).await?;
    let mut it = out.into_iter();
    let moved: u64 = redis::from_redis_value(it.next().unwrap_or(redis::Value::Int(0)))?;
    let lost = it
        .map(redis::from_redis_value::<String>)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(TickReply { moved, lost })
}

/// Releases the locks on `queues` still held with `token`, and deletes the scheduler's
/// record `rq:scheduler:<token>`.
pub async fn unlock<C: ConnectionLike + Send>(
    conn: &mut C,
    keys: &Keys,
    token: &str,
    queues: &[String],
) -> redis::RedisResult<u64> {
    let mut inv = script!("scheduler_unlock.lua").prepare_invoke();
    inv.arg(keys.prefix()).arg(token).arg(keys.scheduler(token));
    for q in queues {
        inv.arg(q);
    }
    inv.invoke_async(conn).await
}
