//! One maintenance pass over one queue ([`maintenance.lua`](maintenance.lua)):
//! abandoned jobs (deadline passed on Redis's clock) failed, retried or requeued; expired
//! registry entries trimmed; stale intermediate-list entries failed; dead worker records
//! dropped. After a Redis stall, recovery waits one lease for live workers to beat.

use super::unrecordable::{self, Unrecorded};
use super::{script, unexpected};
use crate::config::InterruptedJobPolicy;
use crate::keys::Keys;
use crate::results::encode_exc_string;
use crate::timefmt::Stamp;
use redis::aio::ConnectionLike;

/// The settings of one pass.
pub struct Pass<'a> {
    pub queue: &'a str,
    /// What happens to an abandoned job with no retries left.
    pub policy: InterruptedJobPolicy,
    pub default_failure_ttl: i64,
    /// The started-registry lease (3 × heartbeat).
    pub lease_secs: u64,
    /// A gap this long with no runq process beating means Redis stalled.
    pub stall_gap_secs: u64,
}

/// Counts from one pass.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PassReport {
    pub abandoned_failed: u64,
    pub abandoned_requeued: u64,
    pub abandoned_retried: u64,
    pub intermediate_cleared: u64,
    pub dead_workers: u64,
    /// Expired entries left alone because Redis stalled moments ago.
    pub deferred_by_stall: u64,
    /// Jobs a crashed Python worker left in the ready registry, now queued.
    pub ready_moved: u64,
}

/// The answer of one pass.
#[derive(Debug, PartialEq, Eq)]
pub enum PassReply {
    /// Python RQ's own cleanup holds the queue right now.
    Busy,
    /// The counts, the jobs the pass failed for good (their failure callbacks and
    /// webhooks are the worker's to run), and the jobs it failed because one of their
    /// keys refused a write.
    Done(PassReport, Vec<String>, Vec<Unrecorded>),
}

/// Runs one pass.
pub async fn pass<C: ConnectionLike + Send>(
    conn: &mut C,
    keys: &Keys,
    pass: &Pass<'_>,
) -> redis::RedisResult<PassReply> {
    let now = Stamp::now();
    let python_now = now.at.format("%Y-%m-%d %H:%M:%S%.6f+00:00");
    let abandoned = encode_exc_string(&format!(
        "Moved to FailedJobRegistry, due to AbandonedJobError, at {python_now}"
    ));
    let stuck = encode_exc_string("Job was stuck in intermediate queue.");
    let policy = match pass.policy {
        InterruptedJobPolicy::Fail => "fail",
        InterruptedJobPolicy::Requeue => "requeue",
    };
    let reply: redis::Value = script!("unrecordable.lua", "maintenance.lua")
        .prepare_invoke()
        .arg(keys.prefix())
        .arg(&now.text)
        .arg(pass.queue)
        .arg(policy)
        .arg(pass.default_failure_ttl)
        .arg(abandoned)
        .arg(stuck)
        .arg(pass.lease_secs)
        .arg(pass.stall_gap_secs)
        .invoke_async(conn)
        .await?;
    let redis::Value::Array(mut items) = reply else {
        return Err(unexpected("maintenance", "not an array"));
    };
    if items.len() == 1 {
        return Ok(PassReply::Busy);
    }
    let damaged = unrecordable::parse_list("maintenance", items.pop())?;
    let failed_ids = match items.pop() {
        Some(v) => redis::from_redis_value::<Vec<String>>(v).unwrap_or_default(),
        None => Vec::new(),
    };
    let c: Vec<u64> = redis::from_redis_value(redis::Value::Array(items))?;
    let [failed, requeued, retried, stuck, dead, deferred, ready] = c[..] else {
        return Err(unexpected("maintenance", format!("{} counts", c.len())));
    };
    Ok(PassReply::Done(
        PassReport {
            abandoned_failed: failed,
            abandoned_requeued: requeued,
            abandoned_retried: retried,
            intermediate_cleared: stuck,
            dead_workers: dead,
            deferred_by_stall: deferred,
            ready_moved: ready,
        },
        failed_ids,
        damaged,
    ))
}
