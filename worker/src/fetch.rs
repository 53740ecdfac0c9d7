//! Claiming jobs for idle slots. Idle slots ask the fetcher for work; the fetcher claims
//! for all of them at once with one atomic script call (pop by queue priority and record
//! as started, so no crash window can lose an id). When the queues are empty it blocks on
//! `BLMOVE q q LEFT LEFT`, which wakes as soon as a queue gets a job without removing
//! anything, so an idle worker does not poll Redis.

use crate::shutdown::Shutdown;
use crate::slots::Slots;
use redis::aio::MultiplexedConnection;
use runq_common::config::Config;
use runq_common::connect::SharedConnection;
use runq_common::job::JobHash;
use runq_common::scripts::scripts;
use runq_common::timefmt::Stamp;
use runq_common::Keys;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Notify};

/// A job claimed for a slot and already recorded as started.
#[derive(Debug)]
pub struct Claimed {
    pub slot: usize,
    pub id: String,
    pub exec_id: String,
    /// The job's origin (registries use it).
    pub origin: String,
    /// The queue list it was popped from (per-queue limits use it).
    pub queue: String,
    pub hash: JobHash,
    pub started: Stamp,
}

struct Request {
    slot: usize,
    reply: oneshot::Sender<Claimed>,
}

/// A slot's handle on the fetcher.
#[derive(Clone)]
pub struct FetchHandle {
    tx: mpsc::Sender<Request>,
    limits: Arc<QueueLimits>,
}

impl FetchHandle {
    /// Waits for the next job for `slot`; `None` when the worker stops taking jobs.
    pub async fn next(&self, slot: usize) -> Option<Claimed> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Request { slot, reply }).await.ok()?;
        rx.await.ok()
    }

    /// Tells the fetcher a job popped from `queue` has ended.
    pub fn release(&self, queue: &str) {
        self.limits.release(queue);
    }
}

/// Per-queue concurrency limits of this process.
struct QueueLimits {
    names: Vec<String>,
    limits: Vec<Option<usize>>,
    running: Vec<AtomicUsize>,
}

impl QueueLimits {
    fn capacity(&self, i: usize) -> i64 {
        match self.limits[i] {
            None => -1,
            Some(l) => l.saturating_sub(self.running[i].load(Ordering::SeqCst)) as i64,
        }
    }
    fn take(&self, queue: &str) {
        if let Some(i) = self.names.iter().position(|n| n == queue) {
            self.running[i].fetch_add(1, Ordering::SeqCst);
        }
    }
    fn release(&self, queue: &str) {
        if let Some(i) = self.names.iter().position(|n| n == queue) {
            let _ = self.running[i]
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1));
        }
    }
}

/// Wake-ups from the per-queue blocking waiters.
struct Waiters {
    armed: AtomicBool,
    arm: Notify,
    wake: Notify,
}

pub struct Fetcher {
    config: Arc<Config>,
    redis: SharedConnection,
    keys: Keys,
    slots: Arc<Slots>,
    shutdown: Shutdown,
    burst: bool,
    limits: Arc<QueueLimits>,
    waiters: Arc<Waiters>,
    rx: mpsc::Receiver<Request>,
    /// Set once the queues were found empty in burst mode with every slot idle.
    pub drained: Arc<AtomicBool>,
}

impl Fetcher {
    pub fn new(
        config: Arc<Config>,
        redis: SharedConnection,
        slots: Arc<Slots>,
        shutdown: Shutdown,
        burst: bool,
    ) -> (Fetcher, FetchHandle) {
        let (tx, rx) = mpsc::channel(slots.len().max(1) * 2);
        let limits = Arc::new(QueueLimits {
            names: config.queue_names(),
            limits: config.queues.iter().map(|q| q.concurrency).collect(),
            running: config.queues.iter().map(|_| AtomicUsize::new(0)).collect(),
        });
        let fetcher = Fetcher {
            keys: config.keys(),
            config,
            redis,
            slots,
            shutdown,
            burst,
            limits: limits.clone(),
            waiters: Arc::new(Waiters {
                armed: AtomicBool::new(false),
                arm: Notify::new(),
                wake: Notify::new(),
            }),
            rx,
            drained: Arc::new(AtomicBool::new(false)),
        };
        (fetcher, FetchHandle { tx, limits })
    }

    /// Runs until shutdown (or, in burst mode, until the queues are drained).
    pub async fn run(mut self) {
        if !self.burst {
            for q in self.config.queue_names() {
                tokio::spawn(wait_for_jobs(
                    self.config.clone(),
                    self.keys.queue(&q),
                    self.waiters.clone(),
                ));
            }
        }
        let mut pending: Vec<Request> = Vec::new();
        let mut backoff = Duration::from_millis(250);
        let mut suspended = false;
        loop {
            if pending.is_empty() {
                self.waiters.armed.store(false, Ordering::SeqCst);
                tokio::select! {
                    r = self.rx.recv() => match r { Some(r) => pending.push(r), None => return },
                    _ = self.shutdown.warm() => return,
                }
            }
            while let Ok(r) = self.rx.try_recv() {
                pending.push(r);
            }
            pending.retain(|r| !r.reply.is_closed());
            if self.shutdown.is_warm() {
                return;
            }
            if pending.is_empty() {
                continue;
            }
            let mut conn = match self.redis.get().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot reach Redis to claim jobs; retrying in {backoff:?}");
                    self.pause(&mut backoff).await;
                    continue;
                }
            };
            let c = &mut conn;
            match self.claim(c, &mut pending).await {
                Ok(ClaimOutcome::Suspended) => {
                    if !suspended {
                        tracing::info!("queues are suspended (rq:suspended); not taking jobs");
                        suspended = true;
                        let idle = self.idle_names(&pending);
                        let _ =
                            crate::registration::set_state(c, &self.keys, &idle, "suspended").await;
                    }
                    if self.burst {
                        return;
                    }
                    self.sleep_or_shutdown(Duration::from_millis(500)).await;
                }
                Ok(ClaimOutcome::Claimed { handed_out }) => {
                    backoff = Duration::from_millis(250);
                    if suspended {
                        tracing::info!("queues resumed");
                        suspended = false;
                        let idle = self.idle_names(&pending);
                        let _ = crate::registration::set_state(c, &self.keys, &idle, "idle").await;
                    }
                    if pending.is_empty() || handed_out > 0 {
                        continue;
                    }
                    if self.burst {
                        if pending.len() == self.slots.len() {
                            self.drained.store(true, Ordering::SeqCst);
                            return;
                        }
                        // Other slots are still busy and may enqueue dependents or retries.
                        self.wait_for_request_or(Duration::from_millis(100), &mut pending)
                            .await;
                        continue;
                    }
                    self.waiters.armed.store(true, Ordering::SeqCst);
                    self.waiters.arm.notify_waiters();
                    tokio::select! {
                        _ = self.waiters.wake.notified() => {}
                        _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                        _ = self.shutdown.warm() => return,
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "claiming jobs failed; retrying in {backoff:?}");
                    self.redis.reset().await;
                    self.pause(&mut backoff).await;
                }
            }
        }
    }

    fn idle_names(&self, pending: &[Request]) -> Vec<String> {
        pending
            .iter()
            .map(|r| self.slots.names[r.slot].clone())
            .collect()
    }

    async fn pause(&self, backoff: &mut Duration) {
        self.sleep_or_shutdown(*backoff).await;
        *backoff = (*backoff * 2).min(Duration::from_secs(30));
    }

    async fn sleep_or_shutdown(&self, d: Duration) {
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = self.shutdown.warm() => {}
        }
    }

    async fn wait_for_request_or(&mut self, d: Duration, pending: &mut Vec<Request>) {
        tokio::select! {
            r = self.rx.recv() => if let Some(r) = r { pending.push(r) },
            _ = tokio::time::sleep(d) => {}
            _ = self.shutdown.warm() => {}
        }
    }

    async fn claim(
        &self,
        conn: &mut MultiplexedConnection,
        pending: &mut Vec<Request>,
    ) -> redis::RedisResult<ClaimOutcome> {
        let now = Stamp::now();
        let ttl = self.config.worker.heartbeat_secs * 3;
        let exec_ids: Vec<String> = pending
            .iter()
            .map(|_| uuid::Uuid::new_v4().simple().to_string())
            .collect();
        let mut inv = scripts().claim.prepare_invoke();
        inv.arg(self.keys.prefix())
            .arg(&now.text)
            .arg(&now.epoch_text)
            .arg(now.secs + ttl as i64)
            .arg(ttl)
            .arg(self.limits.names.len());
        for (i, q) in self.limits.names.iter().enumerate() {
            inv.arg(q).arg(self.limits.capacity(i));
        }
        inv.arg(pending.len());
        for (r, ex) in pending.iter().zip(&exec_ids) {
            inv.arg(&self.slots.names[r.slot]).arg(ex);
        }
        let reply: redis::Value = inv.invoke_async(conn).await?;
        let items = match reply {
            redis::Value::Array(items) => items,
            other => return Err(unexpected(format!("claim returned {other:?}"))),
        };
        let mut it = items.into_iter();
        let status: String = redis::from_redis_value(it.next().unwrap_or(redis::Value::Nil))?;
        if status == "suspended" {
            return Ok(ClaimOutcome::Suspended);
        }
        let mut taken = vec![false; pending.len()];
        let mut handed_out = 0;
        let mut claimed = Vec::new();
        for item in it {
            let (index, id, origin, queue, flat): (usize, String, String, String, Vec<Vec<u8>>) =
                redis::from_redis_value(item)?;
            claimed.push((index - 1, id, origin, queue, flat));
        }
        for (index, id, origin, queue, flat) in claimed {
            taken[index] = true;
            self.limits.take(&queue);
            let request = &pending[index];
            let job = Claimed {
                slot: request.slot,
                hash: JobHash::from_flat(id.clone(), flat),
                id,
                exec_id: exec_ids[index].clone(),
                origin,
                queue,
                started: now.clone(),
            };
            handed_out += 1;
            // A slot whose receiver vanished (shutdown race) leaves the job started; the
            // processor that owns the slot is gone, so hand it back through the slot table.
            if let Err(job) = take_reply(pending, index).send(job) {
                tracing::error!(job = %job.id, "slot went away after claiming; the job stays in the started registry for recovery");
            }
        }
        let mut i = 0;
        pending.retain(|_| {
            let keep = !taken[i];
            i += 1;
            keep
        });
        Ok(ClaimOutcome::Claimed { handed_out })
    }
}

enum ClaimOutcome {
    Suspended,
    Claimed { handed_out: usize },
}

/// Moves the reply sender out of a request that is about to be dropped.
fn take_reply(pending: &mut [Request], index: usize) -> oneshot::Sender<Claimed> {
    let (dummy, _) = oneshot::channel();
    std::mem::replace(&mut pending[index].reply, dummy)
}

fn unexpected(msg: String) -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::UnexpectedReturnType,
        "unexpected reply",
        msg,
    ))
}

/// Blocks on one queue while the fetcher is armed; wakes it when the queue has a job.
async fn wait_for_jobs(config: Arc<Config>, queue_key: String, waiters: Arc<Waiters>) {
    let mut conn: Option<MultiplexedConnection> = None;
    loop {
        if !waiters.armed.load(Ordering::SeqCst) {
            let armed = waiters.arm.notified();
            if !waiters.armed.load(Ordering::SeqCst) {
                armed.await;
            }
            continue;
        }
        if conn.is_none() {
            match runq_common::connect::dedicated(&config, config.redis.db.rq).await {
                Ok(c) => conn = Some(c),
                Err(_) => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
        }
        let c = conn.as_mut().expect("connected above");
        let moved: redis::RedisResult<Option<String>> = redis::cmd("BLMOVE")
            .arg(&queue_key)
            .arg(&queue_key)
            .arg("LEFT")
            .arg("LEFT")
            .arg(5)
            .query_async(c)
            .await;
        match moved {
            Ok(Some(_)) => {
                waiters.wake.notify_one();
                // Give the fetcher a moment to claim before looking again.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Ok(None) => {}
            Err(_) => {
                conn = None;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
