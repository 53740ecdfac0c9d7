//! Where slots hand in finished jobs and get their next one (Sidekiq's fetch, with the
//! completion folded in). Each slot sends one request: its last job's completion (if
//! any) and a wish for the next job. The fetcher answers every request that is pending
//! with one atomic script call ([`runq_common::scripts::cycle`]): the completions are
//! recorded, then jobs are popped by queue priority and recorded as started for the
//! slots — so no crash window can lose an id, and finishing a job and claiming the next
//! share a round trip with every other slot ready at the same moment (the lane lets the
//! slots that are finishing hand in first, so short jobs fill a round instead of
//! starting one each). When the queues are empty the idle slots wait until a
//! [`wakeups`] waiter sees a job. After a warm shutdown the fetcher still records
//! completions, and claims nothing.
//!
//! A process with several slots runs two fetchers ("lanes"), each serving half of the
//! slots, so one lane's round runs in Redis while the other lane's slots run their jobs
//! and the worker prepares the next round: Redis and the worker work at the same time
//! instead of taking turns. Queues with a per-process concurrency limit need one view of
//! the running jobs, so then one lane serves every slot.

pub mod limits;
pub mod wakeups;

use crate::job::Job;
use crate::registration;
use crate::shutdown::Shutdown;
use crate::slots::Slots;
use limits::{Permit, QueueLimits};
use runq_common::config::Config;
use runq_common::connect::{self, SharedConnection};
use runq_common::echo::clip;
use runq_common::scripts::claim::{ClaimEntry, ClaimReply, ClaimRequest};
use runq_common::scripts::complete::{Completion, Defaults, Ended, Execution, JobFacts, Recorded};
use runq_common::scripts::cycle::{self, CycleRequest};
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

/// A slot's finished job, to record.
pub struct Done {
    pub job: Arc<Job>,
    pub completion: Completion,
    /// Its place in its queue's limit, given back before the next claim.
    pub permit: Option<Permit>,
}

/// What a slot does next.
pub enum Next {
    /// Run this job.
    Job(Claimed),
    /// Nothing to run right now: ask again (the request waits until there is).
    Wait,
    /// The worker takes no more jobs: the slot ends.
    Stop,
}

/// The answer to a slot's request.
pub struct Reply {
    /// What the cycle recorded for the slot's finished job; `None` when the slot had
    /// none, or when recording was given up (cold shutdown, Redis gone: the job stays in
    /// the started registry for recovery).
    pub recorded: Option<Recorded>,
    /// The time the cycle stamped the job's end with (`ended_at`), when recorded.
    pub recorded_at: Option<chrono::DateTime<chrono::Utc>>,
    pub next: Next,
}

struct Request {
    slot: usize,
    done: Option<Done>,
    /// The execution id a claim for this slot uses; kept across retries, so a round
    /// whose reply was lost can give the slot the job it already claimed.
    exec_id: String,
    reply: oneshot::Sender<Reply>,
}

/// A slot's handle on the fetchers (its lane is `slot % lanes`).
#[derive(Clone)]
pub struct FetchHandle {
    lanes: Vec<mpsc::Sender<Request>>,
}

impl FetchHandle {
    /// Hands in `done` (the slot's finished job, if any) and waits for the answer;
    /// `None` when the fetcher is gone.
    pub async fn exchange(&self, slot: usize, done: Option<Done>) -> Option<Reply> {
        let (reply, rx) = oneshot::channel();
        let request = Request {
            slot,
            done,
            exec_id: uuid::Uuid::new_v4().simple().to_string(),
            reply,
        };
        let lane = &self.lanes[slot % self.lanes.len()];
        lane.send(request).await.ok()?;
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
    /// This fetcher's lane (the first one logs what every lane sees) and how many slots
    /// it serves.
    lane: usize,
    lane_slots: usize,
    /// Queues whose key was found not to be a list (logged once until it is fixed).
    broken: std::collections::HashSet<String>,
    suspended: bool,
    end: Option<FetchEnd>,
}

/// What one round did for the waiting slots.
enum Round {
    Suspended,
    /// How many slots got a job.
    HandedOut(usize),
}

/// Slots per lane from which a second lane pays off.
const SLOTS_FOR_TWO_LANES: usize = 4;

/// How often a lane yields to its slots before sending a round ([`Fetcher::gather`]).
const GATHER_YIELDS: usize = 4;

impl Fetcher {
    /// The fetchers for a process's slots (one or two lanes) and the handle slots use.
    pub fn lanes(
        config: Arc<Config>,
        redis: SharedConnection,
        slots: Arc<Slots>,
        shutdown: Shutdown,
        burst: bool,
    ) -> (Vec<Fetcher>, FetchHandle) {
        let limits = QueueLimits::new(&config.queues);
        let count = if slots.len() >= SLOTS_FOR_TWO_LANES && !limits.any_limit() {
            2
        } else {
            1
        };
        let mut fetchers = Vec::new();
        let mut senders = Vec::new();
        for lane in 0..count {
            let lane_slots = (0..slots.len()).filter(|s| s % count == lane).count();
            let (tx, rx) = mpsc::channel(lane_slots.max(1) * 2);
            senders.push(tx);
            fetchers.push(Fetcher {
                keys: config.keys(),
                limits: limits.clone(),
                config: config.clone(),
                redis: redis.clone(),
                slots: slots.clone(),
                shutdown: shutdown.clone(),
                burst,
                rx,
                lane,
                lane_slots,
                broken: Default::default(),
                suspended: false,
                end: None,
            });
        }
        (fetchers, FetchHandle { lanes: senders })
    }

    /// Runs until every slot has gone (after a warm shutdown, or a drained burst).
    pub async fn run(mut self) -> FetchEnd {
        let wakeups = (!self.burst).then(|| Wakeups::start(&self.config, &self.shutdown));
        let mut pending: Vec<Request> = Vec::new();
        let mut backoff = Duration::from_millis(250);
        let mut failures = 0u32;
        loop {
            if pending.is_empty() {
                if let Some(w) = &wakeups {
                    w.disarm();
                }
                match self.rx.recv().await {
                    Some(r) => pending.push(r),
                    None => return self.end.take().unwrap_or(FetchEnd::Stopped),
                }
            }
            while let Ok(r) = self.rx.try_recv() {
                pending.push(r);
            }
            self.gather(&mut pending).await;
            pending.retain(|r| r.done.is_some() || !r.reply.is_closed());
            let claiming = !self.shutdown.is_warm() && self.end.is_none();
            // A failed round retries at once when the process switches to another master.
            let generation = connect::master_generation();
            if !claiming {
                // Slots waiting for a job end; finished jobs are still recorded below.
                for r in pending.extract_if(.., |r| r.done.is_none()) {
                    let _ = r.reply.send(Reply {
                        recorded: None,
                        recorded_at: None,
                        next: Next::Stop,
                    });
                }
                if pending.is_empty() {
                    continue;
                }
            }
            match self.round(&mut pending, claiming, failures > 0).await {
                Ok(round) => {
                    backoff = Duration::from_millis(250);
                    failures = 0;
                    let idle_waiting = !pending.is_empty();
                    match round {
                        Round::HandedOut(n) if n > 0 || !idle_waiting => continue,
                        Round::Suspended if self.burst => {
                            self.end = Some(FetchEnd::Stopped);
                            continue;
                        }
                        Round::Suspended => {
                            self.wait(None, Duration::from_millis(500), &mut pending)
                                .await
                        }
                        Round::HandedOut(_) if self.burst => {
                            if pending.len() == self.lane_slots {
                                self.end = Some(FetchEnd::Drained);
                                continue;
                            }
                            // Other slots are still busy and may enqueue dependents or retries.
                            self.wait(None, Duration::from_millis(100), &mut pending)
                                .await;
                        }
                        Round::HandedOut(_) => {
                            self.wait(wakeups.as_deref(), Duration::from_secs(2), &mut pending)
                                .await
                        }
                    }
                }
                Err(e) => {
                    failures += 1;
                    self.redis.reset().await;
                    if self.shutdown.is_cold() && failures >= 5 {
                        tracing::error!(error = %e, "giving up recording outcomes during shutdown; the jobs stay in the started registry for recovery");
                        for r in pending.drain(..) {
                            let _ = r.reply.send(Reply {
                                recorded: None,
                                recorded_at: None,
                                next: Next::Stop,
                            });
                        }
                        continue;
                    }
                    tracing::warn!(error = %e, "recording and claiming jobs failed; retrying in {backoff:?}");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = connect::master_moved(generation) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    /// Waits until a slot hands in something, a waiter sees a job, `limit` passes or the
    /// shutdown begins.
    async fn wait(
        &mut self,
        wakeups: Option<&Wakeups>,
        limit: Duration,
        pending: &mut Vec<Request>,
    ) {
        if let Some(w) = wakeups {
            w.arm();
        }
        let woken = async {
            match wakeups {
                Some(w) => w.woken().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = self.rx.recv() => if let Some(r) = r { pending.push(r) },
            _ = woken => {}
            _ = tokio::time::sleep(limit) => {}
            _ = self.shutdown.warm() => {}
        }
    }

    /// Lets the lane's other slots run for a moment before a round goes out: slots
    /// whose jobs are finishing right now (those handed out by the last round, for short
    /// jobs) then share this round, and its fixed cost in Redis, instead of each
    /// starting a round of its own. It yields to the runtime at most [`GATHER_YIELDS`]
    /// times and stops as soon as a yield brings nothing new, so it never waits for a
    /// slot that is still busy.
    async fn gather(&mut self, pending: &mut Vec<Request>) {
        for _ in 0..GATHER_YIELDS {
            if pending.len() >= self.lane_slots {
                return;
            }
            tokio::task::yield_now().await;
            let before = pending.len();
            while let Ok(r) = self.rx.try_recv() {
                pending.push(r);
            }
            if pending.len() == before {
                return;
            }
        }
    }

    async fn set_state(&self, slots: &[usize], state: WorkerState) {
        let names: Vec<String> = slots.iter().map(|s| self.slots.names[*s].clone()).collect();
        if let Ok(mut conn) = self.redis.get().await {
            let _ = registration::set_state(&mut conn, &self.keys, &names, state).await;
        }
    }

    /// One cycle for every pending request: record what is done, claim for every slot
    /// (when `claiming`). Answered requests leave `pending`; the idle ones that got no
    /// job stay.
    async fn round(
        &mut self,
        pending: &mut Vec<Request>,
        claiming: bool,
        again: bool,
    ) -> runq_common::Result<Round> {
        let now = Stamp::now();
        // A finished job's place in its queue limit is free before the claim.
        for r in pending.iter_mut() {
            if let Some(d) = r.done.as_mut() {
                d.permit = None;
            }
        }
        let facts: Vec<JobFacts> = pending
            .iter()
            .filter_map(|r| r.done.as_ref())
            .map(|d| JobFacts::of(&d.job.hash))
            .collect();
        let done: Vec<&Done> = pending.iter().filter_map(|r| r.done.as_ref()).collect();
        let ended: Vec<Ended> = done
            .iter()
            .zip(&facts)
            .map(|(d, facts)| Ended {
                exec: Execution {
                    id: &d.job.id,
                    exec_id: &d.job.exec_id,
                    worker: &d.job.worker,
                    origin: &d.job.origin,
                    started: &d.job.started,
                },
                completion: &d.completion,
                facts,
            })
            .collect();
        let slot_args: Vec<(&str, &str)> = if claiming {
            pending
                .iter()
                .map(|r| (self.slots.names[r.slot].as_str(), r.exec_id.as_str()))
                .collect()
        } else {
            Vec::new()
        };
        let queues = self.limits.capacities();
        let request = CycleRequest {
            now: &now,
            lease_secs: self.config.worker.heartbeat_secs * 3,
            defaults: Defaults {
                result_ttl: self.config.worker.result_ttl,
                failure_ttl: self.config.worker.failure_ttl,
            },
            ended: &ended,
            claim: ClaimRequest {
                queues: &queues,
                slots: &slot_args,
            },
            again,
        };
        let mut conn = self.redis.get().await?;
        // No answer within a lease: the connection died silently (a partition). The
        // round is repeated on a new connection (`again`), which hands back what a lost
        // reply claimed.
        let lease = Duration::from_secs(request.lease_secs);
        let reply = tokio::time::timeout(lease, cycle::cycle(&mut conn, &self.keys, &request))
            .await
            .map_err(|_| runq_common::Error::NoAnswer {
                what: "the fetch cycle",
                secs: request.lease_secs,
            })??;
        if self.config.redis.wait_replicas > 0 && (!ended.is_empty() || !slot_args.is_empty()) {
            // Asynchronous replication can lose the last writes at a failover: wait until
            // the replicas have these state changes before anyone acts on them.
            let acked: i64 = redis::cmd("WAIT")
                .arg(self.config.redis.wait_replicas)
                .arg(self.config.redis.wait_timeout_ms)
                .query_async(&mut conn)
                .await?;
            if acked < i64::from(self.config.redis.wait_replicas) {
                tracing::warn!(acked, wanted = self.config.redis.wait_replicas, "fewer replicas than redis.wait_replicas acknowledged the last job state changes");
            }
        }
        drop(ended);
        drop(done);
        for u in &reply.unrecorded {
            tracing::error!(job = %clip(&u.id, 80), "a key of the job refused a write, so the job was failed instead: {}", clip(&u.reason, 300));
        }
        let mut recorded = reply.recorded.into_iter();
        let mut answers: Vec<(Request, Option<Recorded>, Option<Claimed>)> = pending
            .drain(..)
            .map(|r| {
                let rec = if r.done.is_some() {
                    recorded.next()
                } else {
                    None
                };
                (r, rec, None)
            })
            .collect();
        let suspended = matches!(reply.claim, ClaimReply::Suspended);
        let mut handed_out = 0;
        if let ClaimReply::Entries(entries) = reply.claim {
            for entry in entries {
                match entry {
                    ClaimEntry::Claimed(c) => {
                        let Some(answer) = answers.get_mut(c.slot) else {
                            continue;
                        };
                        self.broken.remove(&c.queue);
                        let permit = self.limits.take(&c.queue);
                        let r = &answer.0;
                        let job = Arc::new(Job::new(
                            r.slot,
                            &self.slots.names[r.slot],
                            c,
                            &r.exec_id,
                            now.clone(),
                        ));
                        answer.2 = Some(Claimed { job, permit });
                        handed_out += 1;
                    }
                    ClaimEntry::Refused { queue, id, reason } => {
                        tracing::warn!(queue = %queue, job = %clip(&id, 80), "refused a queue entry: {reason}");
                    }
                    ClaimEntry::BrokenQueue { queue, error } => {
                        if self.broken.insert(queue.clone()) && self.lane == 0 {
                            tracing::error!(queue = %queue, error = %clip(&error, 200), "the queue key is not a list; skipping this queue until it is fixed");
                        }
                    }
                }
            }
        }
        self.note_suspension(suspended, &answers).await;
        for (r, rec, claimed) in answers {
            let next = match claimed {
                Some(c) => Next::Job(c),
                None if !claiming => Next::Stop,
                None if r.done.is_some() => Next::Wait,
                None => {
                    // An idle slot with nothing to run keeps waiting for a job.
                    pending.push(r);
                    continue;
                }
            };
            if let Err(lost) = r.reply.send(Reply {
                recorded_at: rec.map(|_| now.at),
                recorded: rec,
                next,
            }) {
                if let Next::Job(c) = lost.next {
                    tracing::error!(job = %c.job.id, "slot went away after claiming; the job stays in the started registry for recovery");
                }
            }
        }
        Ok(if suspended {
            Round::Suspended
        } else {
            Round::HandedOut(handed_out)
        })
    }

    /// Logs and shows (worker `state`) a suspension when it starts or ends.
    async fn note_suspension(
        &mut self,
        suspended: bool,
        answers: &[(Request, Option<Recorded>, Option<Claimed>)],
    ) {
        if suspended == self.suspended {
            return;
        }
        self.suspended = suspended;
        let waiting: Vec<usize> = answers.iter().map(|(r, ..)| r.slot).collect();
        if self.lane != 0 {
            let state = if suspended {
                WorkerState::Suspended
            } else {
                WorkerState::Idle
            };
            self.set_state(&waiting, state).await;
        } else if suspended {
            tracing::info!("queues are suspended (rq:suspended); not taking jobs");
            self.set_state(&waiting, WorkerState::Suspended).await;
        } else {
            tracing::info!("queues resumed");
            self.set_state(&waiting, WorkerState::Idle).await;
        }
    }
}
