//! Per-queue concurrency limits of this process (`[[queues]] concurrency`): how many
//! more jobs of each queue may start now, and a [`Permit`] per started job that gives its
//! place back when dropped.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

pub struct QueueLimits {
    names: Vec<String>,
    limits: Vec<Option<usize>>,
    running: Vec<AtomicUsize>,
}

impl QueueLimits {
    pub fn new(queues: &[runq_common::config::QueueConfig]) -> Arc<QueueLimits> {
        Arc::new(QueueLimits {
            names: queues.iter().map(|q| q.name.clone()).collect(),
            limits: queues.iter().map(|q| q.concurrency).collect(),
            running: queues.iter().map(|_| AtomicUsize::new(0)).collect(),
        })
    }

    /// Whether any queue has a limit.
    pub fn any_limit(&self) -> bool {
        self.limits.iter().any(Option::is_some)
    }

    /// Every queue in priority order with the number of jobs it may still start
    /// (`None`: no limit).
    pub fn capacities(&self) -> Vec<(String, Option<usize>)> {
        self.names
            .iter()
            .zip(&self.limits)
            .zip(&self.running)
            .map(|((name, limit), running)| {
                let left = limit.map(|l| l.saturating_sub(running.load(Ordering::SeqCst)));
                (name.clone(), left)
            })
            .collect()
    }

    /// Counts a job popped from `queue` until the permit is dropped.
    pub fn take(self: &Arc<Self>, queue: &str) -> Permit {
        let index = self.names.iter().position(|n| n == queue);
        if let Some(i) = index {
            self.running[i].fetch_add(1, Ordering::SeqCst);
        }
        Permit {
            limits: self.clone(),
            index,
        }
    }
}

/// One started job's place in its queue's limit.
pub struct Permit {
    limits: Arc<QueueLimits>,
    index: Option<usize>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(i) = self.index {
            let _ = self.limits.running[i]
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use runq_common::config::QueueConfig;

    #[test]
    fn permits_count_and_give_back() {
        let mut q = QueueConfig::named("a");
        q.concurrency = Some(2);
        let limits = QueueLimits::new(&[q, QueueConfig::named("b")]);
        let p = limits.take("a");
        assert_eq!(
            limits.capacities(),
            vec![("a".to_string(), Some(1)), ("b".to_string(), None)]
        );
        drop(p);
        assert_eq!(limits.capacities()[0].1, Some(2));
    }
}
