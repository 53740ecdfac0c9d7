//! One round trip for a process's slots ([`cycle.lua`](cycle.lua), assembled from
//! [`complete.lua`](complete.lua) and [`claim.lua`](claim.lua)): record every execution
//! that ended since the last round, then claim jobs for every slot that wants one — so
//! finishing a job and claiming the next share one script call, and so do all slots
//! that are ready at the same moment.

use super::claim::{self, ClaimReply, ClaimRequest};
use super::complete::{self, Defaults, Ended, Recorded};
use super::unexpected;
use super::unrecordable::{self, Unrecorded};
use crate::keys::Keys;
use crate::timefmt::Stamp;
use redis::aio::ConnectionLike;

/// A cycle's input.
pub struct CycleRequest<'a> {
    pub now: &'a Stamp,
    /// Seconds a started job stays in the started registry without a heartbeat.
    pub lease_secs: u64,
    pub defaults: Defaults,
    pub ended: &'a [Ended<'a>],
    pub claim: ClaimRequest<'a>,
    /// This repeats a round whose reply was lost (same execution ids): slots the lost
    /// round already claimed for get those jobs back.
    pub again: bool,
}

/// What the cycle did: one recorded outcome per ended execution, in order, and the claim.
#[derive(Debug)]
pub struct CycleReply {
    pub recorded: Vec<Recorded>,
    pub claim: ClaimReply,
    /// Completions a key of the job refused to record (a key of the wrong type): each
    /// such job was failed as far as its keys allowed ([`unrecordable.lua`](unrecordable.lua)).
    pub unrecorded: Vec<Unrecorded>,
}

fn script() -> &'static redis::Script {
    static SCRIPT: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
    SCRIPT.get_or_init(|| {
        super::with_prelude(&[
            include_str!("unrecordable.lua"),
            include_str!("complete.lua"),
            include_str!("claim.lua"),
            include_str!("cycle.lua"),
        ])
    })
}

/// Runs one cycle.
pub async fn cycle<C: ConnectionLike + Send>(
    conn: &mut C,
    keys: &Keys,
    req: &CycleRequest<'_>,
) -> redis::RedisResult<CycleReply> {
    let (bad_id, bad_origin) = claim::refusal_texts();
    let mut inv = script().prepare_invoke();
    inv.arg(keys.prefix())
        .arg(&req.now.text)
        .arg(&req.now.epoch_text)
        .arg(req.lease_secs)
        .arg(req.defaults.result_ttl)
        .arg(req.defaults.failure_ttl)
        .arg(bad_id)
        .arg(bad_origin)
        .arg(if req.again { "1" } else { "0" });
    complete::args(&mut inv, req.ended);
    claim::args(&mut inv, &req.claim);
    let reply: redis::Value = inv.invoke_async(conn).await?;
    let redis::Value::Array(parts) = reply else {
        return Err(unexpected("cycle", "not an array"));
    };
    let mut parts = parts.into_iter();
    let (Some(recorded), Some(claimed), unrecorded) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(unexpected("cycle", "not {recorded, claimed, unrecorded}"));
    };
    let recorded: Vec<redis::Value> = match recorded {
        redis::Value::Array(v) => v,
        redis::Value::Nil => Vec::new(),
        other => return Err(unexpected("cycle", format!("recorded {other:?}"))),
    };
    let recorded = recorded
        .into_iter()
        .map(complete::recorded)
        .collect::<redis::RedisResult<Vec<_>>>()?;
    if recorded.len() != req.ended.len() {
        return Err(unexpected(
            "cycle",
            "one recorded outcome per ended execution",
        ));
    }
    Ok(CycleReply {
        recorded,
        claim: claim::parse(claimed, req.claim.slots.len())?,
        unrecorded: unrecordable::parse_list("cycle", unrecorded)?,
    })
}
