//! The process's NoDb lock keeper: takes locks for jobs (in-process waiters queue FIFO
//! per lock key, so only the head of the queue polls Redis), and renews every held lock
//! in one batched compare-token-and-extend round trip, each lock every TTL/3. A lock
//! whose renewal finds it gone or taken, or that could not be renewed before its lease
//! would run out (Redis unreachable or paused), is lost: its job's [`Fence`] trips,
//! which refuses the job's writes and cancels it at once.

use super::fence::Fence;
use super::turns::{Place, Turn, Turns};
use crate::metrics::Metrics;
use crate::service::Service;
use crate::shutdown::Shutdown;
use runq_common::connect::SharedConnection;
use runq_common::nodb::lock::{self, Lease, LockError, TokenCheck};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// How often the keeper looks at its leases while it holds any.
const TICK: Duration = Duration::from_millis(100);

/// A lock held for a job, until [`LockKeeper::release`].
pub struct HeldLock {
    id: u64,
    pub lease: Lease,
    _turn: Turn,
}

struct Entry {
    id: u64,
    lease: Lease,
    confirmed_at: Instant,
    fence: Arc<Fence>,
}

#[derive(Default)]
struct Inner {
    held: Mutex<Vec<Entry>>,
    lines: Mutex<HashMap<String, Arc<Turns>>>,
    next_id: AtomicU64,
    wake: Notify,
}

/// Cloneable handle on the keeper.
#[derive(Clone)]
pub struct LockKeeper {
    conn: SharedConnection,
    metrics: Arc<Metrics>,
    inner: Arc<Inner>,
}

/// When an unconfirmed lease counts as lost: `ttl − margin` after its last confirmation.
fn deadline(e: &Entry) -> Instant {
    let ttl = Duration::from_secs(e.lease.ttl);
    e.confirmed_at + ttl.saturating_sub(safety_margin(e.lease.ttl))
}

/// Seconds before a lease would expire at which an unrenewed lock counts as lost.
fn safety_margin(ttl: u64) -> Duration {
    Duration::from_secs(ttl)
        .mul_f64(0.25)
        .max(Duration::from_millis(200))
}

impl LockKeeper {
    pub fn new(conn: SharedConnection, metrics: Arc<Metrics>) -> LockKeeper {
        LockKeeper {
            conn,
            metrics,
            inner: Default::default(),
        }
    }

    /// Joins this process's line for a lock key, ordered by `ticket` (the job's enqueue
    /// time). Synchronous, so a job's place is fixed the moment it starts.
    pub fn join(&self, key: &str, ticket: i64) -> Place {
        let line = {
            let mut lines = self.inner.lines.lock().expect("lock lines");
            lines.retain(|_, l| Arc::strong_count(l) > 1 || !l.idle());
            lines.entry(key.to_string()).or_default().clone()
        };
        let seq = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        line.join(ticket, seq)
    }

    /// Takes `lease`, waiting up to `wait`: first for `place` to come first in this
    /// process's line, then on Redis with jittered backoff. The lock is renewed until
    /// released; losing it trips `fence`. Returns the lock and the seconds spent waiting.
    pub async fn acquire(
        &self,
        place: Place,
        lease: Lease,
        wait: Duration,
        fence: Arc<Fence>,
    ) -> Result<(HeldLock, f64), LockError> {
        let start = Instant::now();
        let turn = match tokio::time::timeout(wait, place.wait()).await {
            Ok(turn) => turn,
            Err(_) => {
                self.metrics.lock_wait(start.elapsed().as_secs_f64());
                let mut conn = self.conn.get().await.map_err(connection_error)?;
                let holder = match lock::holder(&mut conn, &lease.key).await? {
                    Some(h) => h.describe(),
                    None => "another job of this process".to_string(),
                };
                return Err(LockError::Held {
                    key: lease.key.clone(),
                    holder,
                    waited_secs: start.elapsed().as_secs_f64(),
                });
            }
        };
        let left = wait.saturating_sub(start.elapsed());
        let mut conn = self.conn.get().await.map_err(connection_error)?;
        let mut lease = lease;
        let local_wait = start.elapsed();
        match lock::acquire_waiting(&mut conn, &mut lease, left).await {
            Ok(attempts) => {
                if attempts > 1 || local_wait > Duration::from_millis(1) {
                    self.metrics.lock_wait(start.elapsed().as_secs_f64());
                }
            }
            Err(LockError::Held { key, holder, .. }) => {
                self.metrics.lock_wait(start.elapsed().as_secs_f64());
                return Err(LockError::Held {
                    key,
                    holder,
                    waited_secs: start.elapsed().as_secs_f64(),
                });
            }
            Err(e) => {
                self.conn.reset().await;
                return Err(e);
            }
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        self.inner.held.lock().expect("held locks").push(Entry {
            id,
            lease: lease.clone(),
            confirmed_at: Instant::now(),
            fence,
        });
        self.inner.wake.notify_one();
        Ok((
            HeldLock {
                id,
                lease,
                _turn: turn,
            },
            start.elapsed().as_secs_f64(),
        ))
    }

    /// Stops renewing and releases with compare-token-and-delete.
    pub async fn release(&self, held: HeldLock) -> Result<TokenCheck, String> {
        self.inner
            .held
            .lock()
            .expect("held locks")
            .retain(|e| e.id != held.id);
        let released = super::services::bounded(async {
            let mut conn = self.conn.get().await.map_err(|e| e.to_string())?;
            lock::release(&mut conn, &held.lease)
                .await
                .map_err(|e| e.to_string())
        })
        .await
        .unwrap_or_else(|| Err("timed out".into()));
        if released.is_err() {
            self.reset().await;
        }
        released
    }

    /// Renews the leases that are due, then trips the fences of any lease that could not
    /// be confirmed in time.
    async fn tick(&self) {
        let now = Instant::now();
        let due: Vec<(u64, Lease)> = self
            .inner
            .held
            .lock()
            .expect("held locks")
            .iter()
            .filter(|e| now >= e.confirmed_at + Duration::from_secs(e.lease.ttl) / 3)
            .map(|e| (e.id, e.lease.clone()))
            .collect();
        if !due.is_empty() {
            // A renewal may take at most TTL/3, and never past the earliest moment a
            // lease must count as lost: the deadline check below must not wait on it.
            let budget = due
                .iter()
                .map(|(_, l)| Duration::from_secs(l.ttl) / 3)
                .min()
                .unwrap_or(TICK)
                .max(TICK)
                .min(
                    self.until_earliest_deadline()
                        .max(Duration::from_millis(10)),
                );
            let sent_at = Instant::now();
            let answers = tokio::time::timeout(budget, async {
                let mut conn = self.conn.get().await.map_err(|e| e.to_string())?;
                let refs: Vec<&Lease> = due.iter().map(|(_, l)| l).collect();
                lock::renew(&mut conn, &refs)
                    .await
                    .map_err(|e| e.to_string())
            })
            .await;
            match answers {
                Ok(Ok(answers)) => self.apply(&due, &answers, sent_at),
                Ok(Err(e)) => {
                    self.reset().await;
                    tracing::warn!(error = %e, locks = due.len(), "could not renew NoDb locks; retrying");
                }
                Err(_) => {
                    self.reset().await;
                    tracing::warn!(locks = due.len(), "NoDb lock renewal timed out; retrying");
                }
            }
        }
        self.expire_unconfirmed();
    }

    /// Time left until the first held lease must count as lost.
    fn until_earliest_deadline(&self) -> Duration {
        let now = Instant::now();
        self.inner
            .held
            .lock()
            .expect("held locks")
            .iter()
            .map(|e| deadline(e).saturating_duration_since(now))
            .min()
            .unwrap_or(TICK)
    }

    /// Drops the connection after an error, without ever waiting long for it.
    async fn reset(&self) {
        let _ = tokio::time::timeout(TICK, self.conn.reset()).await;
    }

    fn apply(&self, due: &[(u64, Lease)], answers: &[TokenCheck], sent_at: Instant) {
        let mut held = self.inner.held.lock().expect("held locks");
        let mut lost = Vec::new();
        let renewed = answers.iter().filter(|a| **a == TokenCheck::Ok).count() as u64;
        self.metrics.lock_renewed(renewed);
        for ((id, lease), answer) in due.iter().zip(answers) {
            let Some(pos) = held.iter().position(|e| e.id == *id) else {
                continue;
            };
            match answer {
                TokenCheck::Ok => {
                    held[pos].confirmed_at = sent_at;
                }
                TokenCheck::Gone => lost.push((
                    held.remove(pos),
                    format!(
                        "NoDb lock {} was lost while the task ran: it was cleared or expired",
                        lease.key
                    ),
                )),
                TokenCheck::Held(owner) => lost.push((
                    held.remove(pos),
                    format!(
                        "NoDb lock {} was lost while the task ran: it is now held by {owner}",
                        lease.key
                    ),
                )),
            }
        }
        drop(held);
        for (entry, why) in lost {
            tracing::warn!(lock = %entry.lease.key, "{why}");
            self.metrics.lock_lost();
            entry.fence.trip(why);
        }
    }

    /// Trips the fence of every lease not confirmed within `ttl - margin`: its key may
    /// expire in Redis any moment, so the job must stop before someone else can take it.
    fn expire_unconfirmed(&self) {
        let now = Instant::now();
        let mut held = self.inner.held.lock().expect("held locks");
        let mut lost = Vec::new();
        held.retain(|e| {
            if now >= deadline(e) {
                lost.push((e.fence.clone(), e.lease.key.clone()));
                false
            } else {
                true
            }
        });
        drop(held);
        for (fence, key) in lost {
            self.metrics.lock_lost();
            let why = format!(
                "NoDb lock {key} was lost while the task ran: it could not be renewed before its lease ran out (Redis unreachable)"
            );
            tracing::warn!(lock = %key, "{why}");
            fence.trip(why);
        }
    }
}

impl Service for LockKeeper {
    const NAME: &'static str = "lock keeper";

    /// Renews until the process exits.
    async fn run(self, shutdown: Shutdown) {
        loop {
            let idle = self.inner.held.lock().expect("held locks").is_empty();
            if idle {
                tokio::select! {
                    _ = shutdown.exiting() => return,
                    _ = self.inner.wake.notified() => continue,
                }
            }
            if !shutdown.sleep(TICK).await {
                return;
            }
            self.tick().await;
        }
    }
}

fn connection_error(e: runq_common::Error) -> LockError {
    LockError::Connection(e.to_string())
}
