//! Requeueing failed jobs ([`requeue.lua`](requeue.lua)), as RQ's
//! `FailedJobRegistry.requeue`: each must be in the failed registry of its origin.

use super::script;
use crate::keys::Keys;
use crate::timefmt::Stamp;
use redis::aio::ConnectionLike;

/// Requeues `ids`; per id, the queue it went back to or why it could not.
pub async fn requeue<C: ConnectionLike + Send>(
    conn: &mut C,
    keys: &Keys,
    ids: &[String],
) -> redis::RedisResult<Vec<Result<String, String>>> {
    let mut inv = script!("requeue.lua").prepare_invoke();
    inv.arg(keys.prefix()).arg(Stamp::now().text);
    for id in ids {
        inv.arg(id);
    }
    let out: Vec<String> = inv.invoke_async(conn).await?;
    Ok(out
        .into_iter()
        .map(|r| match r.strip_prefix("queued:") {
            Some(q) => Ok(q.to_string()),
            None => Err(r),
        })
        .collect())
}
