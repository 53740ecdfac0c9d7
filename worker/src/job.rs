//! [`Job`]: one claimed job, from the moment the claim recorded it as started until its
//! outcome is recorded — what the fetcher claimed (id, execution, origin, hash) and the
//! handle everyone else uses to stop it (cancellation with a reason) or to see where it
//! is (its function name once decoded, whether its completion is in flight).

use runq_common::job::JobHash;
use runq_common::keys::execution_member;
use runq_common::timefmt::Stamp;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use tokio_util::sync::CancellationToken;

/// Why a running job was cancelled from outside its handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// RQ `stop-job` / `stop-execution`: the job ends `stopped`.
    Stopped,
    /// RQ `kill-horse`: the job fails as terminated.
    Killed,
    /// Cold shutdown: the job goes back to a safe state (requeued or failed, per config).
    Shutdown,
    /// The started-registry entry vanished (maintenance or an operator took the job).
    Lost,
    /// One of the job's NoDb locks was lost (cleared, taken or not renewable): the job
    /// fails with the fence's reason.
    LockLost,
}

/// A job claimed for one slot and recorded as started in Redis.
#[derive(Debug)]
pub struct Job {
    /// The slot running it and that slot's RQ worker name.
    pub slot: usize,
    pub worker: String,
    pub id: String,
    pub exec_id: String,
    /// The job's origin (registries use it).
    pub origin: String,
    /// The queue list it was popped from (per-queue limits use it).
    pub queue: String,
    pub hash: JobHash,
    /// When the claim recorded it as started.
    pub started: Stamp,
    cancel: CancellationToken,
    reason: Mutex<Option<StopReason>>,
    func: OnceLock<String>,
    completing: AtomicBool,
}

impl Job {
    pub fn new(
        slot: usize,
        worker: &str,
        claimed: runq_common::scripts::claim::ClaimedJob,
        exec_id: &str,
        started: Stamp,
    ) -> Job {
        Job {
            slot,
            worker: worker.to_string(),
            id: claimed.id,
            exec_id: exec_id.to_string(),
            origin: claimed.origin,
            queue: claimed.queue,
            hash: claimed.hash,
            started,
            cancel: CancellationToken::new(),
            reason: Mutex::new(None),
            func: OnceLock::new(),
            completing: AtomicBool::new(false),
        }
    }

    /// The started-registry member `<id>:<exec_id>`.
    pub fn member(&self) -> String {
        execution_member(&self.id, &self.exec_id)
    }

    /// Records the job's function name (the first one given stays).
    pub fn set_func(&self, name: &str) {
        let _ = self.func.set(name.to_string());
    }

    /// The job's function name, when its payload could be decoded.
    pub fn func(&self) -> Option<&str> {
        self.func.get().map(String::as_str)
    }

    /// Cancels the job; the first reason given wins.
    pub fn stop(&self, reason: StopReason) {
        let mut r = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        if r.is_none() {
            *r = Some(reason);
        }
        drop(r);
        self.cancel.cancel();
    }

    /// Why the job was cancelled, if it was.
    pub fn stop_reason(&self) -> Option<StopReason> {
        *self.reason.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Cancelled when the job is stopped, times out, loses a lock or the worker shuts
    /// down cold.
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// The handler is done and the outcome is being recorded: heartbeats no longer count
    /// the job (its started-registry entry is about to go).
    pub fn mark_completing(&self) {
        self.completing.store(true, Ordering::SeqCst);
    }

    pub fn is_completing(&self) -> bool {
        self.completing.load(Ordering::SeqCst)
    }
}
