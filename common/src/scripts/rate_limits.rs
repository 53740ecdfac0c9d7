//! The rate-limit sweep ([`rate_limits.lua`](rate_limits.lua)), run once per maintenance
//! pass: slots held by jobs that no longer run are freed, waiters promoted, empty keys
//! dropped (RQ 3.0's `RateLimitRegistry.cleanup`).

use super::script;
use crate::keys::Keys;
use crate::timefmt::Stamp;
use redis::aio::ConnectionLike;

/// What one sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepReport {
    pub slots_freed: u64,
    pub promoted: u64,
    pub keys_dropped: u64,
}

/// Sweeps (up to 100 of) the rate-limit keys in `rq:rl-keys`.
pub async fn sweep<C: ConnectionLike + Send>(
    conn: &mut C,
    keys: &Keys,
) -> redis::RedisResult<SweepReport> {
    let (slots_freed, promoted, keys_dropped): (u64, u64, u64) = script!("rate_limits.lua")
        .prepare_invoke()
        .arg(keys.prefix())
        .arg(Stamp::now().text)
        .invoke_async(conn)
        .await?;
    Ok(SweepReport {
        slots_freed,
        promoted,
        keys_dropped,
    })
}
