//! The scheduler's scripts ([`scheduler.lua`](scheduler.lua),
//! [`scheduler_unlock.lua`](scheduler_unlock.lua)) and its lock: one active scheduler per
//! queue across every process and host, through RQ's `rq:scheduler-lock:<q>` holding the
//! scheduler's name as an owner token that only the owner renews or releases.

use super::script;
use super::unrecordable::{self, Unrecorded};
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
    /// Due jobs failed because one of their keys refused a write.
    pub damaged: Vec<Unrecorded>,
}

/// Renews `token`'s locks on `queues` and moves their due jobs (a job one of whose keys
/// refuses the move is failed, kept `default_failure_ttl` seconds unless it has its own).
pub async fn tick<C: ConnectionLike + Send>(
    conn: &mut C,
    keys: &Keys,
    token: &str,
    lock_ttl_secs: u64,
    queues: &[String],
    default_failure_ttl: i64,
) -> redis::RedisResult<TickReply> {
    let now = Stamp::now();
    let mut inv = script!("unrecordable.lua", "scheduler.lua").prepare_invoke();
    inv.arg(keys.prefix())
        .arg(token)
        .arg(lock_ttl_secs)
        .arg(&now.text)
        .arg(queues.len());
    for q in queues {
        inv.arg(q);
    }
    inv.arg(default_failure_ttl);
    let (moved, lost, damaged): (u64, Vec<String>, redis::Value) = inv.invoke_async(conn).await?;
    Ok(TickReply {
        moved,
        lost,
        damaged: unrecordable::parse_list("scheduler", Some(damaged))?,
    })
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
