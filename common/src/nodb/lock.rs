//! NoDb distributed locks in DB 0, wire-compatible with wepppy's `NoDbBase.lock()`:
//! key `nodb-lock:{runid}:{relpath}`, the compact JSON payload, `SET NX EX`, and the
//! legacy `locked:<relpath>` flag in the run hash. Unlike wepppy, release is an atomic
//! compare-token-and-delete, renewal is a batched compare-token-and-extend that
//! rewrites `expires_at`, and [`acquire_waiting`] waits with jittered backoff instead
//! of failing fast.

use rand::Rng;
use redis::aio::ConnectionLike;
use redis::Script;
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const LOCK_KEY_PREFIX: &str = "nodb-lock";

/// `nodb-lock:{runid}:{relpath}` (backslashes normalised to `/`, as wepppy does).
pub fn lock_key(runid: &str, relpath: &str) -> String {
    format!("{LOCK_KEY_PREFIX}:{runid}:{}", relpath.replace('\\', "/"))
}

/// The legacy run-hash field preflight reads: `locked:<relpath>`.
pub fn flag_field(relpath: &str) -> String {
    format!("locked:{}", relpath.replace('\\', "/"))
}

/// `<hostname>:<pid>`, wepppy's owner format.
pub fn owner_id() -> String {
    format!(
        "{}:{}",
        gethostname::gethostname().to_string_lossy(),
        std::process::id()
    )
}

/// A fresh token: uuid4 hex, 32 lowercase characters without hyphens.
pub fn new_token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// The stored lock value, in wepppy's field order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockPayload {
    pub token: String,
    pub owner: String,
    pub acquired_at: i64,
    pub expires_at: i64,
    pub ttl: i64,
}

impl LockPayload {
    /// Compact JSON (`separators=(',', ':')`), byte for byte what wepppy writes.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a lock payload always serializes")
    }

    /// Reads a stored value the way wepppy's `_parse_lock_payload` does: a JSON object,
    /// or else a bare legacy token.
    pub fn parse(raw: &str) -> StoredLock {
        match serde_json::from_str::<serde_json::Value>(raw) {
            Ok(serde_json::Value::Object(m)) => StoredLock {
                token: m
                    .get("token")
                    .and_then(|v| v.as_str())
                    .unwrap_or(raw)
                    .to_string(),
                owner: m.get("owner").and_then(|v| v.as_str()).map(str::to_string),
                acquired_at: m.get("acquired_at").and_then(|v| v.as_i64()),
                expires_at: m.get("expires_at").and_then(|v| v.as_i64()),
            },
            _ => StoredLock {
                token: raw.to_string(),
                owner: None,
                acquired_at: None,
                expires_at: None,
            },
        }
    }
}

/// What another holder's stored value says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLock {
    pub token: String,
    pub owner: Option<String>,
    pub acquired_at: Option<i64>,
    pub expires_at: Option<i64>,
}

impl StoredLock {
    /// `owner=<owner>` or `token=<token>`, as wepppy's error suffix.
    pub fn describe(&self) -> String {
        match &self.owner {
            Some(o) => format!("owner={o}"),
            None => format!("token={}", self.token),
        }
    }
}

/// A lock this process holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub runid: String,
    pub relpath: String,
    pub key: String,
    pub token: String,
    pub owner: String,
    pub acquired_at: i64,
    pub ttl: u64,
}

impl Lease {
    /// A lease not yet taken, with a fresh token.
    pub fn new(runid: &str, relpath: &str, ttl: u64) -> Lease {
        Lease {
            runid: runid.to_string(),
            relpath: relpath.replace('\\', "/"),
            key: lock_key(runid, relpath),
            token: new_token(),
            owner: owner_id(),
            acquired_at: now_secs(),
            ttl: ttl.max(1),
        }
    }

    /// The payload with `expires_at = now + ttl`.
    pub fn payload_at(&self, now: i64) -> LockPayload {
        LockPayload {
            token: self.token.clone(),
            owner: self.owner.clone(),
            acquired_at: self.acquired_at,
            expires_at: now + self.ttl as i64,
            ttl: self.ttl as i64,
        }
    }
}

/// Why a lock could not be taken or kept.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Someone else holds it (after waiting, when a wait was asked for).
    #[error("NoDbAlreadyLockedError: lock() called on an already locked nodb ({holder}); waited {waited_secs:.1} s for {key}")]
    Held {
        key: String,
        holder: String,
        waited_secs: f64,
    },
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("{0}")]
    Connection(String),
}

/// The answer of a compare-token script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenCheck {
    /// Still ours (renewed, or checked).
    Ok,
    /// The key is gone (expired or cleared).
    Gone,
    /// Someone else's now; their owner (or token).
    Held(String),
}

impl TokenCheck {
    fn parse(s: &str) -> TokenCheck {
        match s {
            "ok" | "released" => TokenCheck::Ok,
            "gone" | "absent" => TokenCheck::Gone,
            other => TokenCheck::Held(other.strip_prefix("held:").unwrap_or(other).to_string()),
        }
    }
}

struct LockScripts {
    acquire: Script,
    release: Script,
    renew: Script,
    check: Script,
}

fn scripts() -> &'static LockScripts {
    static S: OnceLock<LockScripts> = OnceLock::new();
    const TOKEN: &str = include_str!("lua/token.lua");
    S.get_or_init(|| LockScripts {
        acquire: Script::new(include_str!("lua/acquire.lua")),
        release: Script::new(&format!("{TOKEN}\n{}", include_str!("lua/release.lua"))),
        renew: Script::new(&format!("{TOKEN}\n{}", include_str!("lua/renew.lua"))),
        check: Script::new(&format!("{TOKEN}\n{}", include_str!("lua/check.lua"))),
    })
}

pub fn now_secs() -> i64 {
    crate::timefmt::now().timestamp()
}

/// One attempt: `Ok(None)` when taken (flag raised), `Ok(Some(holder))` when held.
pub async fn try_acquire<C: ConnectionLike + Send>(
    conn: &mut C,
    lease: &Lease,
) -> redis::RedisResult<Option<StoredLock>> {
    let reply: String = scripts()
        .acquire
        .key(&lease.key)
        .key(&lease.runid)
        .arg(lease.payload_at(now_secs()).to_json())
        .arg(lease.ttl)
        .arg(flag_field(&lease.relpath))
        .invoke_async(conn)
        .await?;
    Ok(if reply == "ok" {
        None
    } else {
        Some(LockPayload::parse(&reply))
    })
}

/// Takes the lock, waiting with jittered exponential backoff (10 ms doubling to 500 ms)
/// up to `wait`; then fails naming the holder. Each attempt stamps `acquired_at` anew, so
/// the stored payload says when the lock was really taken. Returns the attempts made.
pub async fn acquire_waiting<C: ConnectionLike + Send>(
    conn: &mut C,
    lease: &mut Lease,
    wait: Duration,
) -> Result<u32, LockError> {
    let start = Instant::now();
    let mut delay = Duration::from_millis(10);
    let mut attempts = 0;
    loop {
        attempts += 1;
        lease.acquired_at = now_secs();
        let holder = match try_acquire(conn, lease).await? {
            None => return Ok(attempts),
            Some(h) => h,
        };
        let elapsed = start.elapsed();
        if elapsed >= wait {
            return Err(LockError::Held {
                key: lease.key.clone(),
                holder: holder.describe(),
                waited_secs: elapsed.as_secs_f64(),
            });
        }
        let jittered = delay.mul_f64(rand::rng().random_range(0.5..1.0));
        tokio::time::sleep(jittered.min(wait - elapsed)).await;
        delay = (delay * 2).min(Duration::from_millis(500));
    }
}

/// Compare-token-and-delete, then lowers the flag. `Ok` = released, `Gone` = it had
/// already expired or been cleared (flag lowered), `Held` = another holder's (untouched).
pub async fn release<C: ConnectionLike + Send>(
    conn: &mut C,
    lease: &Lease,
) -> redis::RedisResult<TokenCheck> {
    let reply: String = scripts()
        .release
        .key(&lease.key)
        .key(&lease.runid)
        .arg(&lease.token)
        .arg(flag_field(&lease.relpath))
        .invoke_async(conn)
        .await?;
    Ok(TokenCheck::parse(&reply))
}

/// Unlocks with a token that may be stale (the operator path of wepppy's `unlock()`).
pub async fn release_token<C: ConnectionLike + Send>(
    conn: &mut C,
    runid: &str,
    relpath: &str,
    token: &str,
) -> redis::RedisResult<TokenCheck> {
    let mut lease = Lease::new(runid, relpath, 1);
    lease.token = token.to_string();
    release(conn, &lease).await
}

/// Renews every lease in one round trip; answers in the same order.
pub async fn renew<C: ConnectionLike + Send>(
    conn: &mut C,
    leases: &[&Lease],
) -> redis::RedisResult<Vec<TokenCheck>> {
    if leases.is_empty() {
        return Ok(Vec::new());
    }
    let now = now_secs();
    let mut inv = scripts().renew.prepare_invoke();
    for l in leases {
        inv.key(&l.key);
    }
    for l in leases {
        inv.arg(&l.token)
            .arg(l.payload_at(now).to_json())
            .arg(l.ttl);
    }
    let replies: Vec<String> = inv.invoke_async(conn).await?;
    Ok(replies.iter().map(|r| TokenCheck::parse(r)).collect())
}

/// Is the lease still held with its token? (The fencing check before a write.)
pub async fn check<C: ConnectionLike + Send>(
    conn: &mut C,
    lease: &Lease,
) -> redis::RedisResult<TokenCheck> {
    let reply: String = scripts()
        .check
        .key(&lease.key)
        .arg(&lease.token)
        .invoke_async(conn)
        .await?;
    Ok(TokenCheck::parse(&reply))
}

/// Who holds `key` now (None when nobody does); read-only.
pub async fn holder<C: ConnectionLike + Send>(
    conn: &mut C,
    key: &str,
) -> redis::RedisResult<Option<StoredLock>> {
    let raw: Option<String> = redis::cmd("GET").arg(key).query_async(conn).await?;
    Ok(raw.map(|r| LockPayload::parse(&r)))
}

/// One lock of a run as operators see it.
#[derive(Debug, Clone, PartialEq)]
pub struct LockStatus {
    pub relpath: String,
    /// The stored payload, when the key exists.
    pub stored: Option<StoredLock>,
    /// Milliseconds until the key expires (-1: no expiry, None: no key).
    pub pttl: Option<i64>,
    /// The legacy flag's value, when the field exists.
    pub flag: Option<String>,
}

/// Every lock key and `locked:*` flag of a run, sorted by relpath.
pub async fn statuses<C: ConnectionLike + Send>(
    conn: &mut C,
    runid: &str,
) -> redis::RedisResult<Vec<LockStatus>> {
    use std::collections::BTreeMap;
    let mut by_rel: BTreeMap<String, LockStatus> = BTreeMap::new();
    let blank = |relpath: &str| LockStatus {
        relpath: relpath.to_string(),
        stored: None,
        pttl: None,
        flag: None,
    };
    for key in scan_lock_keys(conn, runid).await? {
        let rel = key[lock_key(runid, "").len()..].to_string();
        let (raw, pttl): (Option<String>, i64) = redis::pipe()
            .get(&key)
            .cmd("PTTL")
            .arg(&key)
            .query_async(conn)
            .await?;
        let Some(raw) = raw else { continue };
        let entry = by_rel.entry(rel.clone()).or_insert_with(|| blank(&rel));
        entry.stored = Some(LockPayload::parse(&raw));
        entry.pttl = Some(pttl);
    }
    let fields: Vec<(String, String)> = redis::cmd("HGETALL").arg(runid).query_async(conn).await?;
    for (field, value) in fields {
        if let Some(rel) = field.strip_prefix("locked:") {
            by_rel
                .entry(rel.to_string())
                .or_insert_with(|| blank(rel))
                .flag = Some(value);
        }
    }
    Ok(by_rel.into_values().collect())
}

/// Force-releases one lock regardless of its token (wepppy's `unlock('-f')`).
/// Returns true when a key was deleted. The holder finds out at its next renewal.
pub async fn force_unlock<C: ConnectionLike + Send>(
    conn: &mut C,
    runid: &str,
    relpath: &str,
) -> redis::RedisResult<bool> {
    let (deleted, _): (i64, i64) = redis::pipe()
        .atomic()
        .del(lock_key(runid, relpath))
        .hset(runid, flag_field(relpath), "false")
        .query_async(conn)
        .await?;
    Ok(deleted > 0)
}

/// wepppy's `clear_locks(runid, pup_relpath)`: deletes every lock key of the run (within
/// `scope` when given: the relpath itself or anything under `scope/`) and lowers every
/// flag. Returns the cleared `locked:<relpath>` field names, de-duplicated.
pub async fn clear_locks<C: ConnectionLike + Send>(
    conn: &mut C,
    runid: &str,
    scope: Option<&str>,
) -> redis::RedisResult<Vec<String>> {
    let scope = scope
        .map(|s| s.trim_end_matches('/'))
        .filter(|s| !s.is_empty() && *s != ".");
    let in_scope = |rel: &str| match scope {
        None => true,
        Some(s) => rel == s || rel.starts_with(&format!("{s}/")),
    };
    let mut cleared: Vec<String> = Vec::new();
    let fields: Vec<(String, String)> = redis::cmd("HGETALL").arg(runid).query_async(conn).await?;
    for (field, value) in fields {
        let Some(rel) = field.strip_prefix("locked:") else {
            continue;
        };
        if !in_scope(rel) {
            continue;
        }
        let mut p = redis::pipe();
        if value != "false" {
            p.hset(runid, &field, "false").ignore();
        }
        p.del(lock_key(runid, rel)).ignore();
        p.query_async::<()>(conn).await?;
        cleared.push(field);
    }
    for key in scan_lock_keys(conn, runid).await? {
        let rel = key[lock_key(runid, "").len()..].to_string();
        if !in_scope(&rel) {
            continue;
        }
        redis::pipe()
            .del(&key)
            .ignore()
            .hset(runid, flag_field(&rel), "false")
            .ignore()
            .query_async::<()>(conn)
            .await?;
        let field = flag_field(&rel);
        if !cleared.contains(&field) {
            cleared.push(field);
        }
    }
    Ok(cleared)
}

/// Every `nodb-lock:{runid}:*` key (the runid glob-escaped).
async fn scan_lock_keys<C: ConnectionLike + Send>(
    conn: &mut C,
    runid: &str,
) -> redis::RedisResult<Vec<String>> {
    let pattern = format!("{}*", glob_escape(&lock_key(runid, "")));
    let mut cursor: u64 = 0;
    let mut keys = Vec::new();
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(500)
            .query_async(conn)
            .await?;
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    keys.sort();
    keys.dedup();
    Ok(keys)
}

/// Escapes Redis glob characters so a runid matches itself only.
pub fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_wepppy_compact_json() {
        let p = LockPayload {
            token: "ab".repeat(16),
            owner: "host:42".into(),
            acquired_at: 100,
            expires_at: 160,
            ttl: 60,
        };
        assert_eq!(
            p.to_json(),
            format!(
                r#"{{"token":"{}","owner":"host:42","acquired_at":100,"expires_at":160,"ttl":60}}"#,
                "ab".repeat(16)
            )
        );
        assert_eq!(
            LockPayload::parse(&p.to_json()).owner.as_deref(),
            Some("host:42")
        );
    }

    #[test]
    fn legacy_bare_token_parses() {
        let s = LockPayload::parse("deadbeef");
        assert_eq!(s.token, "deadbeef");
        assert_eq!(s.describe(), "token=deadbeef");
    }

    #[test]
    fn keys_and_tokens_match_wepppy() {
        assert_eq!(
            lock_key("batch;;spring;;run-1", "_pups\\omni\\wepp.nodb"),
            "nodb-lock:batch;;spring;;run-1:_pups/omni/wepp.nodb"
        );
        let t = new_token();
        assert_eq!(t.len(), 32);
        assert!(t
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_uppercase()));
        assert_eq!(glob_escape("a*b[1]"), "a\\*b\\[1\\]");
    }
}
