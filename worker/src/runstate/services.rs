//! [`RunServices`]: what every job's run state in a process shares — one connection per
//! WEPPcloud database, the lock keeper, the document store and the runs directory.

use super::lock_keeper::LockKeeper;
use crate::metrics::Metrics;
use runq_common::config::Config;
use runq_common::connect::SharedConnection;
use runq_common::nodb::document::DocumentStore;
use std::path::PathBuf;
use std::sync::Arc;

pub struct RunServices {
    /// DB 0: locks and the run hash.
    pub lock_db: SharedConnection,
    /// DB 2: status pub/sub.
    pub status_db: SharedConnection,
    /// DB 13: the NoDb JSON cache.
    pub cache_db: SharedConnection,
    /// DB 15: per-run log levels.
    pub loglevel_db: SharedConnection,
    pub keeper: LockKeeper,
    pub documents: DocumentStore,
    pub runs_dir: Option<PathBuf>,
}

impl RunServices {
    /// Pools for DB 0, 2, 13 and 15 (connected lazily).
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> runq_common::Result<RunServices> {
        let db = &config.redis.db;
        let pool = |n: u16| -> runq_common::Result<SharedConnection> {
            SharedConnection::open(config, n, 4)
        };
        Ok(RunServices {
            keeper: LockKeeper::new(pool(db.lock)?, metrics),
            lock_db: pool(db.lock)?,
            status_db: pool(db.status)?,
            cache_db: pool(db.nodb_cache)?,
            loglevel_db: pool(db.log_level)?,
            documents: Default::default(),
            runs_dir: config.worker.runs_dir.clone(),
        })
    }
}

/// How long one run-state round trip (status line, stamp, release, fence check) may
/// take before it is given up on, so a hung connection never holds a slot.
pub const REDIS_BUDGET: std::time::Duration = std::time::Duration::from_secs(5);

/// `fut` within [`REDIS_BUDGET`]; None when it ran out.
pub(crate) async fn bounded<T>(fut: impl std::future::Future<Output = T>) -> Option<T> {
    tokio::time::timeout(REDIS_BUDGET, fut).await.ok()
}
