//! A job's fence: tripped when one of its NoDb locks is lost. A tripped fence refuses
//! the job's document writes and cancels the job at once; its reason becomes the job's
//! failure text.

use crate::job::{Job, StopReason};
use std::sync::{Arc, Mutex};

pub struct Fence {
    lost: Mutex<Option<String>>,
    job: Arc<Job>,
}

impl Fence {
    pub fn new(job: Arc<Job>) -> Fence {
        Fence {
            lost: Mutex::new(None),
            job,
        }
    }

    /// Records why (the first reason wins) and cancels the job.
    pub fn trip(&self, why: String) {
        let mut lost = self.lost.lock().expect("fence lock");
        if lost.is_none() {
            *lost = Some(why);
        }
        drop(lost);
        self.job.stop(StopReason::LockLost);
    }

    /// Why the fence tripped, if it did.
    pub fn lost(&self) -> Option<String> {
        self.lost.lock().expect("fence lock").clone()
    }
}
