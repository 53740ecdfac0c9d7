//! The batched heartbeat ([`heartbeat.lua`](heartbeat.lua)): one call refreshes every
//! slot's worker key (adding the job counters it gathered since the last beat) and every
//! running execution's started-registry deadline (Redis's clock + the lease), and says
//! which worker keys vanished and which executions are no longer ours.

use super::script;
use super::unrecordable::{self, Unrecorded};
use crate::keys::Keys;
use crate::timefmt::Stamp;
use redis::aio::ConnectionLike;

/// A running execution, as the heartbeat refreshes it.
pub struct Beating<'a> {
    pub id: &'a str,
    pub exec_id: &'a str,
    pub origin: &'a str,
}

/// A slot's worker name and what it did since its last beat.
pub struct SlotBeat<'a> {
    pub worker: &'a str,
    pub finished: u64,
    pub failed: u64,
    pub working_secs: f64,
}

/// What one beat found.
#[derive(Debug, Default)]
pub struct BeatReply {
    /// Worker names whose key no longer exists (to register again).
    pub missing_workers: Vec<String>,
    /// Members (`id:exec_id`) whose started-registry entry is gone.
    pub lost: Vec<String>,
    /// Slots (worker names) and members whose beat a key of the wrong type refused.
    pub damaged: Vec<Unrecorded>,
}

/// Beats once for `workers` and `running`.
pub async fn beat<C: ConnectionLike + Send>(
    conn: &mut C,
    keys: &Keys,
    now: &Stamp,
    lease_secs: u64,
    stall_gap_secs: u64,
    workers: &[SlotBeat<'_>],
    running: &[Beating<'_>],
) -> redis::RedisResult<BeatReply> {
    let mut inv = script!("unrecordable.lua", "heartbeat.lua").prepare_invoke();
    inv.arg(keys.prefix())
        .arg(&now.text)
        .arg(&now.epoch_text)
        .arg(lease_secs)
        .arg(stall_gap_secs)
        .arg(workers.len());
    for w in workers {
        inv.arg(w.worker)
            .arg(w.finished)
            .arg(w.failed)
            .arg(if w.working_secs > 0.0 {
                format!("{}", w.working_secs)
            } else {
                "0".into()
            });
    }
    inv.arg(running.len());
    for r in running {
        inv.arg(r.id).arg(r.exec_id).arg(r.origin);
    }
    let (missing_workers, lost, damaged): (Vec<String>, Vec<String>, redis::Value) =
        inv.invoke_async(conn).await?;
    Ok(BeatReply {
        missing_workers,
        lost,
        damaged: unrecordable::parse_list("heartbeat", Some(damaged))?,
    })
}
