//! WEPPcloud's NoDb run state (reference/wepppy-redis.md): locks and the RedisPrep run
//! hash in DB 0, status lines on DB 2, per-run log levels in DB 15, run directories and
//! their `.nodb` documents with the DB 13 cache.

pub mod atomic;
pub mod document;
pub mod enqueued;
pub mod lock;
pub mod loglevel;
pub mod prep;
pub mod rundir;
pub mod status;

/// TTL of DB 13 cache entries: 72 h, as wepppy's `REDIS_NODB_EXPIRY`.
pub const NODB_CACHE_TTL: u64 = 72 * 3600;
