//! The worker's Prometheus metrics: job counters and timings, queue depths, busy slots and
//! NoDb lock activity, in one registry encoded as Prometheus/OpenMetrics text by
//! [`crate::metrics_http`]. All names start with `runq_`.

use crate::fetch::Claimed;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Bucket bounds (seconds) for job run and queue wait times: jobs last from
/// milliseconds to hours.
const JOB_BUCKETS: [f64; 16] = [
    0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0,
    14400.0,
];

/// Bucket bounds (seconds) for NoDb lock waits.
const LOCK_BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0,
];

/// Labels of `runq_jobs_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabels {
    pub queue: String,
    /// The dotted function name (`unknown` when the payload does not decode).
    pub task: String,
    /// What the completion script recorded: finished, deleted, failed, stopped, retried,
    /// scheduled, requeued, lost; `unrecorded` when Redis never took the outcome.
    pub outcome: String,
}

/// A per-queue label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    pub queue: String,
}

type HistogramFamily = Family<QueueLabels, Histogram, fn() -> Histogram>;

fn job_histogram() -> Histogram {
    Histogram::new(JOB_BUCKETS)
}

/// Every metric of one worker process. Cheap to update from any task; the job hooks do
/// nothing when the endpoint is off.
#[derive(Debug)]
pub struct Metrics {
    enabled: bool,
    registry: Registry,
    jobs: Family<JobLabels, Counter>,
    job_seconds: HistogramFamily,
    wait_seconds: HistogramFamily,
    queue_depth: Family<QueueLabels, Gauge>,
    busy_slots: Gauge,
    slots: Gauge,
    lock_waits: Counter,
    lock_wait_seconds: Histogram,
    lock_renewals: Counter,
    lock_losses: Counter,
}

impl Metrics {
    /// A registry with every metric; `enabled` is false when no endpoint serves it.
    pub fn new(enabled: bool) -> Metrics {
        let mut registry = Registry::with_prefix("runq");
        let jobs = Family::<JobLabels, Counter>::default();
        registry.register(
            "jobs",
            "Jobs this worker ran, by queue, task and recorded outcome",
            jobs.clone(),
        );
        let job_seconds = HistogramFamily::new_with_constructor(job_histogram as fn() -> _);
        registry.register(
            "job_run_seconds",
            "Run time of jobs (started to outcome recorded), by queue",
            job_seconds.clone(),
        );
        let wait_seconds = HistogramFamily::new_with_constructor(job_histogram as fn() -> _);
        registry.register(
            "job_queue_wait_seconds",
            "Time jobs waited in their queue (enqueued_at to started), by queue",
            wait_seconds.clone(),
        );
        let queue_depth = Family::<QueueLabels, Gauge>::default();
        registry.register(
            "queue_depth",
            "Jobs waiting in each queue this worker listens on (LLEN at scrape time)",
            queue_depth.clone(),
        );
        let busy_slots = Gauge::default();
        registry.register(
            "busy_slots",
            "Execution slots running a job",
            busy_slots.clone(),
        );
        let slots = Gauge::default();
        registry.register("slots", "Execution slots in this process", slots.clone());
        let lock_waits = Counter::default();
        registry.register(
            "lock_waits",
            "Times a job waited for a NoDb lock held by someone else",
            lock_waits.clone(),
        );
        let lock_wait_seconds = Histogram::new(LOCK_BUCKETS);
        registry.register(
            "lock_wait_seconds",
            "Time jobs spent waiting for NoDb locks",
            lock_wait_seconds.clone(),
        );
        let lock_renewals = Counter::default();
        registry.register(
            "lock_renewals",
            "NoDb lock TTL renewals by the lock keeper",
            lock_renewals.clone(),
        );
        let lock_losses = Counter::default();
        registry.register(
            "lock_losses",
            "NoDb locks found lost (expired or taken) while a job held them",
            lock_losses.clone(),
        );
        Metrics {
            enabled,
            registry,
            jobs,
            job_seconds,
            wait_seconds,
            queue_depth,
            busy_slots,
            slots,
            lock_waits,
            lock_wait_seconds,
            lock_renewals,
            lock_losses,
        }
    }

    /// True when an endpoint serves these metrics.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// A job was claimed: records how long it waited in its queue.
    pub fn job_started(&self, job: &Claimed) {
        if !self.enabled {
            return;
        }
        if let Ok(Some(enqueued)) = job.hash.datetime("enqueued_at") {
            let waited = (job.started.at - enqueued).num_microseconds().unwrap_or(0) as f64 / 1e6;
            self.wait_seconds
                .get_or_create(&queue_label(&job.origin))
                .observe(waited.max(0.0));
        }
    }

    /// A job ended: counts it by task (`None`: its payload did not decode) and outcome
    /// (`done` is what the completion script returned, `None` when it could not be
    /// recorded), and records its run time.
    pub fn job_done(&self, job: &Claimed, task: Option<&str>, done: Option<&str>, run_secs: f64) {
        if !self.enabled {
            return;
        }
        let labels = JobLabels {
            queue: job.origin.clone(),
            task: task.unwrap_or("unknown").to_string(),
            outcome: done.unwrap_or("unrecorded").to_string(),
        };
        self.jobs.get_or_create(&labels).inc();
        self.job_seconds
            .get_or_create(&queue_label(&job.origin))
            .observe(run_secs.max(0.0));
    }

    /// A job waited `secs` for a NoDb lock someone else held. Called by the NoDb lock
    /// keeper once the lock is acquired (or the wait gives up).
    pub fn lock_wait(&self, secs: f64) {
        self.lock_waits.inc();
        self.lock_wait_seconds.observe(secs.max(0.0));
    }

    /// The NoDb lock keeper renewed `n` lock TTLs in one pass.
    pub fn lock_renewed(&self, n: u64) {
        self.lock_renewals.inc_by(n);
    }

    /// The NoDb lock keeper found a lock it held gone (expired or taken over).
    pub fn lock_lost(&self) {
        self.lock_losses.inc();
    }

    /// Sets the slot gauges (refreshed at scrape time).
    pub fn set_slots(&self, busy: usize, total: usize) {
        self.busy_slots.set(busy as i64);
        self.slots.set(total as i64);
    }

    /// Sets one queue's depth (refreshed at scrape time).
    pub fn set_queue_depth(&self, queue: &str, depth: i64) {
        self.queue_depth
            .get_or_create(&queue_label(queue))
            .set(depth);
    }

    /// The registry as OpenMetrics text (what Prometheus scrapes).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

fn queue_label(queue: &str) -> QueueLabels {
    QueueLabels {
        queue: queue.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_metrics_are_exposed() {
        let m = Metrics::new(true);
        m.lock_wait(0.3);
        m.lock_renewed(3);
        m.lock_renewed(2);
        m.lock_lost();
        m.set_slots(1, 4);
        m.set_queue_depth("default", 7);
        let text = m.encode();
        for line in [
            "runq_lock_waits_total 1",
            "runq_lock_wait_seconds_count 1",
            "runq_lock_renewals_total 5",
            "runq_lock_losses_total 1",
            "runq_busy_slots 1",
            "runq_slots 4",
            "runq_queue_depth{queue=\"default\"} 7",
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
        }
    }
}
