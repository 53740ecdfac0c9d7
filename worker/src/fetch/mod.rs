//! Claiming jobs for idle slots (Sidekiq's fetch). Idle slots ask the fetcher for work;
//! it claims for all of them at once with one atomic script call
//! ([`runq_common::scripts::claim`]: pop by queue priority and record as started, so no
//! crash window can lose an id) and hands each slot its [`Job`] with a queue-limit
//! [`Permit`]. When the queues are empty it sleeps until a [`wakeups`] waiter sees a job.

pub mod limits;
pub mod wakeups;

use crate::job::Job;
use crate::registration;
use crate::shutdown::Shutdown;
use crate::slots::Slots;
use limits::{Permit, QueueLimits};
use runq_common::config::Config;
use runq_common::connect::SharedConnection;
use runq_common::echo::clip;
use runq_common::scripts::claim::{self, ClaimEntry, ClaimReply, ClaimRequest};
use runq_common::timefmt::Stamp;
use runq_common::worker_state::WorkerState;
use runq_common::Keys;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use wakeups::Wakeups;

/// A job handed to a slot, with its place in its queue's limit (given back on drop).
pub struct Claimed {
    pub job: Arc<Job>,
    pub permit: Permit,
}

struct Request {
    slot: usize,
    reply: oneshot::Sender<Claimed>,
}

/// A slot's handle on the fetcher.
#[derive(Clone)]
pub struct FetchHandle {
    tx: mpsc::Sender<Request>,
}

impl FetchHandle {
    /// Waits for the next job for `slot`; `None` when the worker stops taking jobs.
    pub async fn next(&self, slot: usize) -> Option<Claimed> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Request { slot, reply }).await.ok()?;
        rx.await.ok()
    }
}

/// Why the fetcher stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum FetchEnd {
    /// Warm shutdown (or every slot went away).
    Stopped,
    /// Burst mode found the queues empty with every slot idle.
    Drained,
}

pub struct Fetcher {
    config: Arc<Config>,
    redis: SharedConnection,
    keys: Keys,
    slots: Arc<Slots>,
    shutdown: Shutdown,
    burst: bool,
    limits: Arc<QueueLimits>,
    rx: mpsc::Receiver<Request>,
    /// Queues whose key was found not to be a list (logged once until it is fixed).
    broken: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// What one claim round did for the idle slots.
enum Round {
    Suspended,
    /// How many slots got a job.
    HandedOut(usize),
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
        let fetcher = Fetcher {
            keys: config.keys(),
            limits: QueueLimits::new(&config.queues),
            config,
            redis,
            slots,
            shutdown,
            burst,
            rx,
            broken: Default::default(),
        };
        (fetcher, FetchHandle { tx })
    }

    /// Runs until warm shutdown (or, in burst mode, until the queues are drained).
    pub async fn run(mut self) -> FetchEnd {
        let wakeups = (!self.burst).then(|| Wakeups::start(&self.config, &self.shutdown));
        let mut pending: Vec<Request> = Vec::new();
        let mut backoff = Duration::from_millis(250);
        let mut suspended = false;
        loop {
            if pending.is_empty() {
                if let Some(w) = &wakeups {
                    w.disarm();
                }
                tokio::select! {
                    r = self.rx.recv() => match r { Some(r) => pending.push(r), None => return FetchEnd::Stopped },
                    _ = self.shutdown.warm() => return FetchEnd::Stopped,
                }
            }
            while let Ok(r) = self.rx.try_recv() {
                pending.push(r);
            }
            pending.retain(|r| !r.reply.is_closed());
            if self.shutdown.is_warm() {
                return FetchEnd::Stopped;
            }
            if pending.is_empty() {
                continue;
            }
            match self.round(&mut pending).await {
                Ok(Round::Suspended) => {
                    if !suspended {
                        tracing::info!("queues are suspended (rq:suspended); not taking jobs");
                        suspended = true;
                        self.set_state(&pending, WorkerState::Suspended).await;
                    }
                    if self.burst {
                        return FetchEnd::Stopped;
                    }
                    self.pause(Duration::from_millis(500)).await;
                }
                Ok(Round::HandedOut(handed_out)) => {
                    backoff = Duration::from_millis(250);
                    if suspended {
                        tracing::info!("queues resumed");
                        suspended = false;
                        self.set_state(&pending, WorkerState::Idle).await;
                    }
                    if pending.is_empty() || handed_out > 0 {
                        continue;
                    }
                    if self.burst {
                        if pending.len() == self.slots.len() {
                            return FetchEnd::Drained;
                        }
                        // Other slots are still busy and may enqueue dependents or retries.
                        self.wait_for_request_or(Duration::from_millis(100), &mut pending)
                            .await;
                        continue;
                    }
                    if let Some(w) = &wakeups {
                        w.arm();
                        tokio::select! {
                            _ = w.woken() => {}
                            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                            _ = self.shutdown.warm() => return FetchEnd::Stopped,
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "claiming jobs failed; retrying in {backoff:?}");
                    self.redis.reset().await;
                    self.pause(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    async fn set_state(&self, pending: &[Request], state: WorkerState) {
        let idle: Vec<String> = pending
            .iter()
            .map(|r| self.slots.names[r.slot].clone())
            .collect();
        if let Ok(mut conn) = self.redis.get().await {
            let _ = registration::set_state(&mut conn, &self.keys, &idle, state).await;
        }
    }

    async fn pause(&self, d: Duration) {
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

    /// One claim for every pending request; served requests leave `pending`.
    async fn round(&self, pending: &mut Vec<Request>) -> runq_common::Result<Round> {
        let now = Stamp::now();
        let exec_ids: Vec<String> = pending
            .iter()
            .map(|_| uuid::Uuid::new_v4().simple().to_string())
            .collect();
        let slot_args: Vec<(&str, &str)> = pending
            .iter()
            .zip(&exec_ids)
            .map(|(r, ex)| (self.slots.names[r.slot].as_str(), ex.as_str()))
            .collect();
        let queues = self.limits.capacities();
        let request = ClaimRequest {
            now: &now,
            lease_secs: self.config.worker.heartbeat_secs * 3,
            default_failure_ttl: self.config.worker.failure_ttl,
            queues: &queues,
            slots: &slot_args,
        };
        let mut conn = self.redis.get().await?;
        let entries = match claim::claim(&mut conn, &self.keys, &request).await? {
            ClaimReply::Suspended => return Ok(Round::Suspended),
            ClaimReply::Entries(entries) => entries,
        };
        let mut requests: Vec<Option<Request>> = pending.drain(..).map(Some).collect();
        let mut handed_out = 0;

        for entry in entries {
            match entry {
                ClaimEntry::Claimed(c) => {
                    let Some(request) = requests.get_mut(c.slot).and_then(Option::take) else {
                        continue;
                    };
                    self.broken
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&c.queue);
                    let permit = self.limits.take(&c.queue);
                    let exec_id = exec_ids[c.slot].clone();
                    let job = Arc::new(Job::new(
                        request.slot,
                        &self.slots.names[request.slot],
                        c,
                        &exec_id,
                        now.clone(),
                    ));
                    handed_out += 1;
                    if let Err(lost) = request.reply.send(Claimed { job, permit }) {
                        tracing::error!(job = %lost.job.id, "slot went away after claiming; the job stays in the started registry for recovery");
                    }
                }
                ClaimEntry::Refused { queue, id, reason } => {
                    tracing::warn!(queue = %queue, job = %clip(&id, 80), "refused a queue entry: {reason}");
                }
                ClaimEntry::BrokenQueue { queue, error } => {
                    let mut known = self.broken.lock().unwrap_or_else(|p| p.into_inner());
                    if known.insert(queue.clone()) {
                        tracing::error!(queue = %queue, error = %clip(&error, 200), "the queue key is not a list; skipping this queue until it is fixed");
                    }
                }
            }
        }

        pending.extend(requests.into_iter().flatten());
        Ok(Round::HandedOut(handed_out))
    }
}
