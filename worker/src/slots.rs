//! The process's execution slots: each slot's RQ worker name, the job it runs and the
//! job counters it gathered since the last heartbeat (which writes them to the worker
//! hash), shared by the processors, the heartbeat and the command listener. A stop command for a job a
//! slot has been handed but not yet installed (the claim marked it started a moment ago)
//! is kept and applied when the job is installed, so no stop-job is lost in that gap.

use crate::job::{Job, StopReason};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a stop for a job not (yet) running here is kept.
const PENDING_STOP_TTL: Duration = Duration::from_secs(60);
/// At most this many pending stops are kept (hostile command floods stay bounded).
const MAX_PENDING_STOPS: usize = 256;

/// All slots of the process.
pub struct Slots {
    pub names: Vec<String>,
    running: Vec<Mutex<Option<Arc<Job>>>>,
    counters: Vec<Mutex<Counters>>,
    pending_stops: Mutex<HashMap<String, PendingStop>>,
}

/// What one slot did since its counters were last taken (RQ's worker counters).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Counters {
    pub finished: u64,
    pub failed: u64,
    pub working_secs: f64,
}

/// A stop for a job this process was not running when it arrived.
struct PendingStop {
    reason: StopReason,
    /// Only a job installed on this slot (stop-job names the worker) …
    slot: Option<usize>,
    /// … or with this execution id (stop-execution names it).
    exec_id: Option<String>,
    at: Instant,
}

impl PendingStop {
    fn applies_to(&self, job: &Job) -> bool {
        self.at.elapsed() < PENDING_STOP_TTL
            && self.slot.is_none_or(|s| s == job.slot)
            && self.exec_id.as_deref().is_none_or(|e| e == job.exec_id)
    }
}

impl Slots {
    pub fn new(names: Vec<String>) -> Self {
        let running = names.iter().map(|_| Mutex::new(None)).collect();
        let counters = names.iter().map(|_| Mutex::default()).collect();
        Slots {
            names,
            running,
            counters,
            pending_stops: Mutex::new(HashMap::new()),
        }
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    fn slot(&self, i: usize) -> std::sync::MutexGuard<'_, Option<Arc<Job>>> {
        self.running[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `job` the one its slot runs, applying a stop that arrived for it early.
    pub fn install(&self, job: Arc<Job>) {
        let early = self
            .pending_stops
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&job.id)
            .filter(|p| p.applies_to(&job));
        *self.slot(job.slot) = Some(job.clone());
        if let Some(p) = early {
            tracing::info!(job = %job.id, "applying a stop command that arrived as the job was claimed");
            job.stop(p.reason);
        }
    }

    /// The slot is free again.
    pub fn clear(&self, slot: usize) {
        *self.slot(slot) = None;
    }

    pub fn get(&self, slot: usize) -> Option<Arc<Job>> {
        self.slot(slot).clone()
    }

    /// Every running job.
    pub fn running(&self) -> Vec<Arc<Job>> {
        (0..self.len()).filter_map(|i| self.get(i)).collect()
    }

    /// Stops the job with this id if it runs here — on `slot` when given, with
    /// `exec_id` when given; true when it did. Otherwise the stop is kept (bounded, for
    /// a minute) and applied if such a job is installed: the claim may have marked it
    /// started a moment before the slot got it.
    pub fn stop_job(
        &self,
        job_id: &str,
        slot: Option<usize>,
        exec_id: Option<&str>,
        reason: StopReason,
    ) -> bool {
        let mut found = false;
        for job in self.running() {
            if job.id == job_id
                && slot.is_none_or(|s| s == job.slot)
                && exec_id.is_none_or(|e| e == job.exec_id)
            {
                job.stop(reason);
                found = true;
            }
        }
        if !found {
            let mut pending = self.pending_stops.lock().unwrap_or_else(|p| p.into_inner());
            pending.retain(|_, p| p.at.elapsed() < PENDING_STOP_TTL);
            if pending.len() < MAX_PENDING_STOPS {
                pending.insert(
                    job_id.to_string(),
                    PendingStop {
                        reason,
                        slot,
                        exec_id: exec_id.map(str::to_string),
                        at: Instant::now(),
                    },
                );
            }
        }
        found
    }

    /// Counts a job slot `slot` ran (`finished` or failed) for `working_secs`.
    pub fn count(&self, slot: usize, finished: Option<bool>, working_secs: f64) {
        let mut c = self.counters[slot]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match finished {
            Some(true) => c.finished += 1,
            Some(false) => c.failed += 1,
            None => {}
        }
        c.working_secs += working_secs;
    }

    /// Takes every slot's counters (zeroing them).
    pub fn take_counters(&self) -> Vec<Counters> {
        self.counters
            .iter()
            .map(|c| std::mem::take(&mut *c.lock().unwrap_or_else(|p| p.into_inner())))
            .collect()
    }

    /// Puts counters back (a beat that failed to write them).
    pub fn restore_counters(&self, taken: &[Counters]) {
        for (c, t) in self.counters.iter().zip(taken) {
            let mut c = c.lock().unwrap_or_else(|p| p.into_inner());
            c.finished += t.finished;
            c.failed += t.failed;
            c.working_secs += t.working_secs;
        }
    }

    pub fn stop_all(&self, reason: StopReason) {
        for job in self.running() {
            job.stop(reason);
        }
    }

    pub fn busy_count(&self) -> usize {
        self.running().len()
    }
}
