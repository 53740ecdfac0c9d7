//! Cancelling a job that has not started ([`cancel.lua`](cancel.lua)), as RQ's
//! `job.cancel()`.

use super::script;
use crate::keys::Keys;
use crate::timefmt::Stamp;
use redis::aio::ConnectionLike;

/// Cancels `id`; returns its previous status. A job that does not exist, runs or already
/// ended is a Redis error whose detail says so.
pub async fn cancel<C: ConnectionLike + Send>(
    conn: &mut C,
    keys: &Keys,
    id: &str,
) -> redis::RedisResult<String> {
    script!("cancel.lua")
        .prepare_invoke()
        .arg(keys.prefix())
        .arg(id)
        .arg(Stamp::now().text)
        .invoke_async(conn)
        .await
}
