//! [`LockSet`]: the NoDb locks one job holds on its run — taken in the spec's (sorted)
//! order, each waiting up to `lock_wait`, renewed by the process's lock keeper, released
//! by compare-token-and-delete at the end (also those whose acquire was cut off after
//! Redis may have taken them).

use super::fence::Fence;
use super::lock_keeper::{HeldLock, LockKeeper};
use super::services::bounded;
use super::turns::Place;
use crate::error::TaskError;
use runq_common::connect::SharedConnection;
use runq_common::nodb::lock::{self, Lease, LockError, TokenCheck};
use runq_common::taskspec::TaskSpec;
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct LockSet {
    /// The place in this process's line for the task's first lock, taken when the job
    /// started so that jobs get the lock in the order they arrived.
    first_place: Mutex<Option<Place>>,
    held: Mutex<Vec<HeldLock>>,
    /// Leases being acquired: released by token at the end even if the acquire was cut
    /// off after Redis took the lock.
    pending: Mutex<Vec<Lease>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl LockSet {
    /// Joins the line for the spec's first lock now (before any await).
    pub fn join(keeper: &LockKeeper, spec: &TaskSpec, runid: &str, ticket: i64) -> LockSet {
        let first = spec
            .locks
            .first()
            .map(|rel| keeper.join(&lock::lock_key(runid, rel), ticket));
        LockSet {
            first_place: Mutex::new(first),
            held: Mutex::default(),
            pending: Mutex::default(),
        }
    }

    /// Takes every lock of `spec` in order. Later locks are queued for only once the
    /// earlier ones are held (a waiter holding places everywhere could deadlock).
    pub async fn take(
        &self,
        keeper: &LockKeeper,
        spec: &TaskSpec,
        runid: &str,
        ticket: i64,
        fence: &Arc<Fence>,
    ) -> Result<(), TaskError> {
        let mut first = lock(&self.first_place).take();
        for relpath in &spec.locks {
            let lease = Lease::new(runid, relpath, spec.lock_ttl);
            let place = first
                .take()
                .unwrap_or_else(|| keeper.join(&lease.key, ticket));
            lock(&self.pending).push(lease.clone());
            let got = keeper
                .acquire(
                    place,
                    lease.clone(),
                    Duration::from_secs(spec.lock_wait),
                    fence.clone(),
                )
                .await;
            // A lease whose attempt ended in a Redis error stays pending: the script may
            // have run before the reply was lost, so `release_all` releases it by token.
            if !matches!(got, Err(LockError::Redis(_) | LockError::Connection(_))) {
                lock(&self.pending).retain(|l| l.token != lease.token);
            }
            let (held, waited) = got.map_err(|e| {
                let kind = match e {
                    LockError::Held { .. } => "NoDbAlreadyLockedError",
                    _ => "NoDbLockError",
                };
                TaskError::new(kind, e.to_string())
            })?;
            if waited > 0.05 {
                tracing::debug!(lock = %held.lease.key, waited, "waited for a NoDb lock");
            }
            lock(&self.held).push(held);
        }
        Ok(())
    }

    /// The lease held for `relpath`, if this job holds that lock.
    pub fn lease_for(&self, relpath: &str) -> Option<Lease> {
        lock(&self.held)
            .iter()
            .find(|h| h.lease.relpath == relpath)
            .map(|h| h.lease.clone())
    }

    /// `{relpath: {"key", "token"}}` for a child process.
    pub fn tokens(&self) -> Value {
        Value::Object(
            lock(&self.held)
                .iter()
                .map(|h| {
                    (
                        h.lease.relpath.clone(),
                        serde_json::json!({"key": h.lease.key, "token": h.lease.token}),
                    )
                })
                .collect(),
        )
    }

    /// Releases every held lock (newest first), then any lease whose acquire was cut off.
    pub async fn release_all(&self, keeper: &LockKeeper, lock_db: &SharedConnection) {
        let held: Vec<HeldLock> = std::mem::take(&mut *lock(&self.held));
        for h in held.into_iter().rev() {
            let key = h.lease.key.clone();
            match keeper.release(h).await {
                Ok(TokenCheck::Ok) => {}
                Ok(TokenCheck::Gone) => tracing::debug!(lock = %key, "lock had already gone"),
                Ok(TokenCheck::Held(owner)) => {
                    tracing::warn!(lock = %key, owner, "lock is someone else's now; left alone")
                }
                Err(e) => {
                    tracing::warn!(lock = %key, error = %e, "could not release a NoDb lock; it expires with its TTL")
                }
            }
        }
        let pending: Vec<Lease> = std::mem::take(&mut *lock(&self.pending));
        if pending.is_empty() {
            return;
        }
        bounded(async {
            if let Ok(mut conn) = lock_db.get().await {
                for lease in pending {
                    let _ = lock::release(&mut conn, &lease).await;
                }
            }
        })
        .await;
    }
}
