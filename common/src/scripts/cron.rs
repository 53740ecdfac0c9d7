//! Periodic jobs' Redis side ([`cron_fire.lua`](cron_fire.lua),
//! [`owner_lock.lua`](owner_lock.lua)): the leader lock one process holds
//! (`rq:runq:cron-lock`, owner token), each entry's state in `rq:runq:cron` (JSON: next
//! tick, schedule, last run), and firing an entry — compare-and-set on its next tick, then
//! the enqueue — in one atomic step, so a tick is enqueued exactly once however many
//! processes run.

use super::enqueue::{job_args, status};
use super::script;
use crate::error::{Error, Result};
use crate::job::JobStatus;
use crate::keys::Keys;
use crate::rq::NewJob;
use crate::timefmt::Stamp;
use redis::aio::ConnectionLike;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One entry's stored state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CronState {
    /// The next tick, epoch seconds.
    pub next: i64,
    /// `*/5 * * * *` or `every 90s`, for `runq info`.
    pub schedule: String,
    pub func: String,
    pub queue: String,
    /// The last tick fired and the job it enqueued.
    #[serde(default)]
    pub last: Option<i64>,
    #[serde(default)]
    pub last_job: Option<String>,
}

/// Every entry's state.
pub async fn states<C: ConnectionLike + Send>(
    conn: &mut C,
    keys: &Keys,
) -> redis::RedisResult<BTreeMap<String, CronState>> {
    let raw: BTreeMap<String, String> = redis::cmd("HGETALL")
        .arg(keys.cron())
        .query_async(conn)
        .await?;
    Ok(raw
        .into_iter()
        .filter_map(|(k, v)| serde_json::from_str(&v).ok().map(|s| (k, s)))
        .collect())
}

/// Stores an entry's state when it has none yet (its first tick).
pub async fn init<C: ConnectionLike + Send>(
    conn: &mut C,
    keys: &Keys,
    name: &str,
    state: &CronState,
) -> redis::RedisResult<bool> {
    let text = serde_json::to_string(state).unwrap_or_default();
    redis::cmd("HSETNX")
        .arg(keys.cron())
        .arg(name)
        .arg(text)
        .query_async(conn)
        .await
}

/// Takes the leader lock for `token` when nobody holds it.
pub async fn try_lead<C: ConnectionLike + Send>(
    conn: &mut C,
    keys: &Keys,
    token: &str,
    ttl_secs: u64,
) -> redis::RedisResult<bool> {
    super::take_owner_lock(conn, keys.cron_lock(), token, ttl_secs).await
}

/// Renews the leader lock (or releases it, `ttl_secs = 0`) if `token` still holds it.
pub async fn keep_lead<C: ConnectionLike + Send>(
    conn: &mut C,
    keys: &Keys,
    token: &str,
    ttl_secs: u64,
) -> redis::RedisResult<bool> {
    let ours: i64 = script!("owner_lock.lua")
        .prepare_invoke()
        .arg(keys.prefix())
        .arg(keys.cron_lock())
        .arg(token)
        .arg(ttl_secs)
        .invoke_async(conn)
        .await?;
    Ok(ours == 1)
}

/// What firing an entry did.
#[derive(Debug, PartialEq, Eq)]
pub enum Fired {
    /// The job was enqueued.
    Enqueued(JobStatus),
    /// `token` no longer holds the leader lock: nothing was done.
    NotLeader,
    /// The entry's next tick changed under us (another leader fired it): nothing done.
    Stale,
}

/// Fires `name` for the tick `expected_next` (None: no state stored yet), storing
/// `new_state` and enqueueing `job`, atomically.
pub async fn fire<C: ConnectionLike + Send>(
    conn: &mut C,
    keys: &Keys,
    token: &str,
    name: &str,
    expected_next: Option<i64>,
    new_state: &CronState,
    job: &NewJob,
) -> Result<Fired> {
    let mut inv = script!("cron_fire.lua").prepare_invoke();
    inv.arg(keys.prefix())
        .arg(token)
        .arg(name)
        .arg(expected_next.map(|n| n.to_string()).unwrap_or_default())
        .arg(serde_json::to_string(new_state).map_err(|e| Error::Encode(e.to_string()))?);
    for a in job_args(job, &Stamp::now())? {
        inv.arg(a);
    }
    let reply: String = inv.invoke_async(conn).await?;
    Ok(match reply.as_str() {
        "not-leader" => Fired::NotLeader,
        "stale" => Fired::Stale,
        _ => Fired::Enqueued(status(reply).map_err(Error::Invalid)?),
    })
}
