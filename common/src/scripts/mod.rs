//! The Lua scripts behind every job state change, one module per script next to its
//! `.lua` file. Each module is the script's typed boundary: one function whose arguments
//! and reply are Rust types (the argument order and the reply's shape live only there).
//! Every script runs as one round trip (EVALSHA, falling back to EVAL once per
//! connection), atomically, with the shared [`prelude.lua`](prelude.lua) prepended: key
//! builders, the execution member, Redis's clock, the integer rule, and the transitions
//! several scripts share (push onto a queue, release dependents, retry, fail).
//!
//! | script | used by | what it does |
//! |---|---|---|
//! | [`cycle`] | worker fetch | completions, then claims: [`complete`] (result, registries, TTLs, retries, repeats, rate limits, dependents) and [`claim`] (pop by priority and record as started) for every slot ready at once |
//! | [`heartbeat`] | worker heartbeat | every slot's worker key and every running job's deadline |
//! | [`maintenance`] | worker maintenance | abandoned jobs, expired entries, ready registry, dead workers |
//! | [`rate_limits`] | worker maintenance | RQ 3.0 rate-limit slots no job holds any more |
//! | [`scheduler`] | worker scheduler | owner-token locks, due jobs to their queues |
//! | [`enqueue`] | CLI, tests | save and enqueue / defer / schedule one job |
//! | [`cron`] | worker cron | periodic jobs: leader lock, fire once per tick |
//! | [`requeue`], [`cancel`], [`empty`] | CLI | operator commands |
//! | [`unrecordable`] | inside cycle, heartbeat, maintenance, scheduler | a job one of whose keys refuses a write (wrong type) is failed alone, naming the key |

pub mod cancel;
pub mod claim;
pub mod complete;
pub mod cron;
pub mod cycle;
pub mod empty;
pub mod enqueue;
pub mod heartbeat;
pub mod maintenance;
pub mod rate_limits;
pub mod requeue;
pub mod scheduler;
pub mod unrecordable;

const PRELUDE: &str = include_str!("prelude.lua");

/// Compiles script parts (each file's functions, the last one's main body) with the
/// prelude in front.
fn with_prelude(parts: &[&str]) -> redis::Script {
    redis::Script::new(&format!("{PRELUDE}\n{}", parts.join("\n")))
}

/// `static` accessor for one script: `script!("empty.lua")` compiles it once per process;
/// `script!("unrecordable.lua", "heartbeat.lua")` puts the first file's functions before
/// the script.
macro_rules! script {
    ($($file:literal),+) => {{
        static SCRIPT: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
        SCRIPT.get_or_init(|| super::with_prelude(&[$(include_str!($file)),+]))
    }};
}
use script;

/// Takes an owner-token lock: `key` set to `token` for `ttl_secs` when nobody holds it
/// (`SET NX EX`). Whether this call took it.
async fn take_owner_lock<C: redis::aio::ConnectionLike + Send>(
    conn: &mut C,
    key: String,
    token: &str,
    ttl_secs: u64,
) -> redis::RedisResult<bool> {
    let won: Option<String> = redis::cmd("SET")
        .arg(key)
        .arg(token)
        .arg("NX")
        .arg("EX")
        .arg(ttl_secs)
        .query_async(conn)
        .await?;
    Ok(won.is_some())
}

/// A reply that does not have the shape the script documents.
fn unexpected(script: &str, detail: impl std::fmt::Display) -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::UnexpectedReturnType,
        "unexpected script reply",
        format!("{script}: {detail}"),
    ))
}

/// The prelude's key builders, for the test that checks they match [`crate::Keys`].
pub fn prelude_source() -> &'static str {
    PRELUDE
}
