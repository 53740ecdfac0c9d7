//! Emptying a queue ([`empty.lua`](empty.lua)), as RQ's `Queue.empty()`.

use super::script;
use crate::keys::Keys;
use redis::aio::ConnectionLike;

/// Deletes every waiting job of `queue` and the list; returns how many were removed.
pub async fn empty<C: ConnectionLike + Send>(
    conn: &mut C,
    keys: &Keys,
    queue: &str,
) -> redis::RedisResult<u64> {
    script!("empty.lua")
        .prepare_invoke()
        .arg(keys.prefix())
        .arg(queue)
        .invoke_async(conn)
        .await
}
