//! The claim half of a [`cycle`](super::cycle) ([`claim.lua`](claim.lua)): pops ids by
//! queue priority and records each as started for one slot. Entries that cannot run (no
//! job hash, a key of the wrong type, an id or origin that is not text) are failed or
//! dropped inside the script and reported, so one bad entry never touches another job.

use super::unexpected;
use crate::job::JobHash;
use crate::results::encode_exc_string;
use redis::Value;

/// The claim half of a cycle: the queues in priority order with the capacity left in
/// each (`None` = unlimited), and the slots that want a job.
pub struct ClaimRequest<'a> {
    pub queues: &'a [(String, Option<usize>)],
    /// `(worker name, execution id)` per idle slot, in the order slots get jobs.
    pub slots: &'a [(&'a str, &'a str)],
}

/// A job recorded as started for `slots[slot]`.
#[derive(Debug)]
pub struct ClaimedJob {
    /// Index into [`ClaimRequest::slots`].
    pub slot: usize,
    pub id: String,
    pub origin: String,
    /// The queue list it was popped from.
    pub queue: String,
    pub hash: JobHash,
}

/// What happened to one popped entry.
#[derive(Debug)]
pub enum ClaimEntry {
    Claimed(ClaimedJob),
    /// Popped from `queue` but not runnable; failed (when it had a job hash) or dropped.
    Refused {
        queue: String,
        id: String,
        reason: String,
    },
    /// `queue`'s key is not a list; the queue was skipped this round.
    BrokenQueue {
        queue: String,
        error: String,
    },
}

/// The answer of one claim round.
#[derive(Debug)]
pub enum ClaimReply {
    /// `rq:suspended` is set: nothing was popped.
    Suspended,
    Entries(Vec<ClaimEntry>),
}

/// The claim half of a cycle's arguments.
pub(super) fn args(inv: &mut redis::ScriptInvocation<'_>, req: &ClaimRequest<'_>) {
    inv.arg(req.queues.len());
    for (q, capacity) in req.queues {
        inv.arg(q).arg(capacity.map_or(-1, |c| c as i64));
    }
    inv.arg(req.slots.len());
    for (worker, exec_id) in req.slots {
        inv.arg(*worker).arg(*exec_id);
    }
}

/// The texts a job refused at claim time fails with (RQ's `exc_string` encoding),
/// compressed once per process: every cycle sends them.
pub(super) fn refusal_texts() -> &'static (String, String) {
    static TEXTS: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();
    TEXTS.get_or_init(|| {
        (
            encode_exc_string(
                "InvalidJob: the job id is not UTF-8 text (or is longer than 512 bytes)",
            ),
            encode_exc_string(
                "InvalidJob: field `origin` is not UTF-8 text (or is longer than 512 bytes)",
            ),
        )
    })
}

pub(super) fn parse(reply: Value, slots: usize) -> redis::RedisResult<ClaimReply> {
    let bad = |d: &str| unexpected("claim", d);
    let items = match reply {
        Value::Array(items) => items,
        Value::BulkString(b) if b == b"suspended" => return Ok(ClaimReply::Suspended),
        Value::SimpleString(s) if s == "suspended" => return Ok(ClaimReply::Suspended),
        _ => return Err(bad("neither entries nor `suspended`")),
    };
    let mut entries = Vec::new();
    for item in items {
        let Value::Array(parts) = item else {
            return Err(bad("entry is not an array"));
        };
        let mut parts = parts.into_iter();
        let tag = parts.next().map(text).unwrap_or_default();
        let mut next_text = || parts.next().map(text).unwrap_or_default();
        entries.push(match tag.as_str() {
            "job" => {
                let slot: usize = next_text().parse().map_err(|_| bad("slot index"))?;
                if slot == 0 || slot > slots {
                    return Err(bad("slot index out of range"));
                }
                let (id, origin, queue) = (next_text(), next_text(), next_text());
                let flat: Vec<Vec<u8>> = match parts.next() {
                    Some(v) => redis::from_redis_value(v)?,
                    None => return Err(bad("missing job hash")),
                };
                ClaimEntry::Claimed(ClaimedJob {
                    slot: slot - 1,
                    hash: JobHash::from_flat(id.clone(), flat),
                    id,
                    origin,
                    queue,
                })
            }
            "refused" => ClaimEntry::Refused {
                queue: next_text(),
                id: next_text(),
                reason: next_text(),
            },
            "broken" => ClaimEntry::BrokenQueue {
                queue: next_text(),
                error: next_text(),
            },
            other => return Err(bad(&format!("entry tag {other:?}"))),
        });
    }
    Ok(ClaimReply::Entries(entries))
}

/// A reply element as text (lossy: ids the script refused may be any bytes).
fn text(v: Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
        Value::SimpleString(s) => s,
        Value::Int(i) => i.to_string(),
        other => format!("{other:?}"),
    }
}
