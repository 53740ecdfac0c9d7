//! The jobs a script failed alone because one of their own keys refused a write (a key
//! of the wrong type): [`unrecordable.lua`](unrecordable.lua) does it inside the cycle,
//! heartbeat, maintenance and scheduler scripts, and each reports them as a list of
//! `{id, reason}` pairs, parsed here.

use super::unexpected;

/// One job (or, from the heartbeat, one slot or execution member) and why its writes
/// were refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unrecorded {
    pub id: String,
    pub reason: String,
}

/// A script's `{{id, reason}...}` reply part (absent or nil: none). `script` names the
/// script in an error.
pub(super) fn parse_list(
    script: &'static str,
    v: Option<redis::Value>,
) -> redis::RedisResult<Vec<Unrecorded>> {
    let items = match v {
        None | Some(redis::Value::Nil) => return Ok(Vec::new()),
        Some(redis::Value::Array(items)) => items,
        Some(other) => return Err(unexpected(script, format!("unrecorded {other:?}"))),
    };
    items
        .into_iter()
        .map(|item| {
            // Ids and keys come from Redis as they are, not always UTF-8.
            let (id, reason): (Vec<u8>, Vec<u8>) = redis::from_redis_value(item)?;
            Ok(Unrecorded {
                id: String::from_utf8_lossy(&id).into_owned(),
                reason: String::from_utf8_lossy(&reason).into_owned(),
            })
        })
        .collect()
}
