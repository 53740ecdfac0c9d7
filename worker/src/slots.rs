//! The process's execution slots: each slot's RQ worker name and the job it is running,
//! shared by the processors, the heartbeat and the command listener.

use std::sync::Mutex;
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

/// One job running in a slot.
#[derive(Debug, Clone)]
pub struct Running {
    pub id: String,
    pub exec_id: String,
    pub origin: String,
    cancel: CancellationToken,
    reason: std::sync::Arc<Mutex<Option<StopReason>>>,
    /// The job's function name, once its payload is decoded.
    func: std::sync::Arc<std::sync::OnceLock<String>>,
}

impl Running {
    pub fn new(id: &str, exec_id: &str, origin: &str) -> Self {
        Running {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            origin: origin.to_string(),
            cancel: CancellationToken::new(),
            reason: Default::default(),
            func: Default::default(),
        }
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
        let mut r = self.reason.lock().expect("stop reason lock");
        if r.is_none() {
            *r = Some(reason);
        }
        drop(r);
        self.cancel.cancel();
    }
    pub fn reason(&self) -> Option<StopReason> {
        *self.reason.lock().expect("stop reason lock")
    }
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }
    pub fn member(&self) -> String {
        format!("{}:{}", self.id, self.exec_id)
    }
}

/// All slots of the process.
pub struct Slots {
    pub names: Vec<String>,
    running: Vec<Mutex<Option<Running>>>,
}

impl Slots {
    pub fn new(names: Vec<String>) -> Self {
        let running = names.iter().map(|_| Mutex::new(None)).collect();
        Slots { names, running }
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn set(&self, slot: usize, job: Option<Running>) {
        *self.running[slot].lock().expect("slot lock") = job;
    }

    pub fn get(&self, slot: usize) -> Option<Running> {
        self.running[slot].lock().expect("slot lock").clone()
    }

    /// Every running job with its slot.
    pub fn running(&self) -> Vec<(usize, Running)> {
        (0..self.len())
            .filter_map(|i| self.get(i).map(|r| (i, r)))
            .collect()
    }

    pub fn slot_of(&self, worker_name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == worker_name)
    }

    /// Stops the job with this id (and execution id, when given) if it runs here.
    pub fn stop_job(&self, job_id: &str, exec_id: Option<&str>, reason: StopReason) -> bool {
        let mut found = false;
        for (_, r) in self.running() {
            if r.id == job_id && exec_id.is_none_or(|e| e == r.exec_id) {
                r.stop(reason);
                found = true;
            }
        }
        found
    }

    pub fn stop_all(&self, reason: StopReason) {
        for (_, r) in self.running() {
            r.stop(reason);
        }
    }

    pub fn busy_count(&self) -> usize {
        self.running().len()
    }
}
