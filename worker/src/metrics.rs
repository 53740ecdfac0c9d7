//! The worker's Prometheus metrics: job counters and timings, queue depths, busy slots,
//! NoDb lock activity and the Python task host, in one registry encoded as
//! Prometheus/OpenMetrics text by [`crate::metrics_http`]. All names start with `runq_`.
//! Label values come from a bounded set ([`Labels`]): job data can never mint series
//! without limit.

use crate::job::Job;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use runq_common::scripts::complete::Recorded;
use std::collections::HashSet;
use std::sync::Mutex;

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

/// Task names beyond the configured ones that may become label values (first seen, first
/// kept: the Python host's pattern-matched functions); the rest count as `other`.
const MAX_EXTRA_TASKS: usize = 256;
/// Longest label value taken from job data.
const MAX_LABEL_CHARS: usize = 200;

/// The label values metrics may use: configured queues and known tasks, a bounded number
/// of further task names, then `other`.
#[derive(Debug, Default)]
pub struct Labels {
    queues: HashSet<String>,
    tasks: HashSet<String>,
    extra_tasks: Mutex<HashSet<String>>,
}

impl Labels {
    pub fn new(queues: &[String], tasks: impl IntoIterator<Item = String>) -> Labels {
        Labels {
            queues: queues.iter().cloned().collect(),
            tasks: tasks.into_iter().collect(),
            extra_tasks: Mutex::default(),
        }
    }

    fn queue(&self, q: &str) -> String {
        if self.queues.contains(q) {
            q.to_string()
        } else {
            "other".into()
        }
    }

    fn task(&self, t: &str) -> String {
        if self.tasks.contains(t) {
            return t.to_string();
        }
        if t.chars().count() > MAX_LABEL_CHARS {
            return "other".into();
        }
        let mut extra = self.extra_tasks.lock().unwrap_or_else(|p| p.into_inner());
        if extra.contains(t) || extra.len() < MAX_EXTRA_TASKS && extra.insert(t.to_string()) {
            t.to_string()
        } else {
            "other".into()
        }
    }
}

/// Every metric of one worker process. Cheap to update from any task; the job hooks do
/// nothing when the endpoint is off.
#[derive(Debug)]
pub struct Metrics {
    enabled: bool,
    labels: Labels,
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
    python_rss: Gauge,
    python_children: Gauge,
    python_restarts: Counter,
    webhooks: Family<OutcomeLabels, Counter>,
}

/// The label of `runq_webhooks_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `sent`, `failed` or `dropped`.
    pub outcome: String,
}

/// Registers metrics in one registry: each `add` registers a clone (clones share one
/// value) and hands the metric back for [`Metrics`] to keep.
struct Registrar<'a>(&'a mut Registry);

impl Registrar<'_> {
    fn add<M: prometheus_client::registry::Metric + Clone>(
        &mut self,
        name: &str,
        help: &str,
        metric: M,
    ) -> M {
        self.0.register(name, help, metric.clone());
        metric
    }
}

impl Metrics {
    /// A registry with every metric; `enabled` is false when no endpoint serves it.
    pub fn new(enabled: bool, labels: Labels) -> Metrics {
        let mut registry = Registry::with_prefix("runq");
        let mut reg = Registrar(&mut registry);
        let jobs = reg.add(
            "jobs",
            "Jobs this worker ran, by queue, task and recorded outcome",
            Family::<JobLabels, Counter>::default(),
        );
        let job_seconds = reg.add(
            "job_run_seconds",
            "Run time of jobs (started to outcome recorded), by queue",
            HistogramFamily::new_with_constructor(job_histogram as fn() -> _),
        );
        let wait_seconds = reg.add(
            "job_queue_wait_seconds",
            "Time jobs waited in their queue (enqueued_at to started), by queue",
            HistogramFamily::new_with_constructor(job_histogram as fn() -> _),
        );
        let queue_depth = reg.add(
            "queue_depth",
            "Jobs waiting in each queue this worker listens on (LLEN at scrape time)",
            Family::<QueueLabels, Gauge>::default(),
        );
        let busy_slots = reg.add(
            "busy_slots",
            "Execution slots running a job",
            Gauge::default(),
        );
        let slots = reg.add("slots", "Execution slots in this process", Gauge::default());
        let lock_waits = reg.add(
            "lock_waits",
            "Times a job waited for a NoDb lock held by someone else",
            Counter::default(),
        );
        let lock_wait_seconds = reg.add(
            "lock_wait_seconds",
            "Time jobs spent waiting for NoDb locks",
            Histogram::new(LOCK_BUCKETS),
        );
        let lock_renewals = reg.add(
            "lock_renewals",
            "NoDb lock TTL renewals by the lock keeper",
            Counter::default(),
        );
        let lock_losses = reg.add(
            "lock_losses",
            "NoDb locks found lost (expired or taken) while a job held them",
            Counter::default(),
        );
        let python_rss = reg.add(
            "python_host_rss_bytes",
            "Resident memory of the Python task host (without its job children)",
            Gauge::default(),
        );
        let python_children = reg.add(
            "python_children",
            "Python job processes the task host is running",
            Gauge::default(),
        );
        let python_restarts = reg.add(
            "python_host_restarts",
            "Times the Python task host died and was started again",
            Counter::default(),
        );
        let webhooks = reg.add("webhooks", "RQ webhooks by outcome: sent, failed (the request failed; the job is unaffected) or dropped (too many waiting)", Family::<OutcomeLabels, Counter>::default());
        Metrics {
            enabled,
            labels,
            webhooks,
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
            python_rss,
            python_children,
            python_restarts,
        }
    }

    /// True when an endpoint serves these metrics.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// A job was claimed: records how long it waited in its queue.
    pub fn job_started(&self, job: &Job) {
        if !self.enabled {
            return;
        }
        if let Ok(Some(enqueued)) = job.hash.datetime("enqueued_at") {
            let waited = (job.started.at - enqueued).num_microseconds().unwrap_or(0) as f64 / 1e6;
            self.wait_seconds
                .get_or_create(&self.queue_label(&job.origin))
                .observe(waited.max(0.0));
        }
    }

    /// A job ended: counts it by task (`unknown`: its payload did not decode) and what
    /// the completion script recorded (`unrecorded` when Redis never took it), and
    /// records its run time.
    pub fn job_done(&self, job: &Job, recorded: Option<Recorded>, run_secs: f64) {
        if !self.enabled {
            return;
        }
        let labels = JobLabels {
            queue: self.labels.queue(&job.origin),
            task: job
                .func()
                .map(|f| self.labels.task(f))
                .unwrap_or_else(|| "unknown".into()),
            outcome: recorded.map_or("unrecorded", Recorded::as_str).to_string(),
        };
        self.jobs.get_or_create(&labels).inc();
        self.job_seconds
            .get_or_create(&self.queue_label(&job.origin))
            .observe(run_secs.max(0.0));
    }

    fn queue_label(&self, queue: &str) -> QueueLabels {
        QueueLabels {
            queue: self.labels.queue(queue),
        }
    }

    /// The Python host's resident memory and running children (refreshed by the host).
    pub fn set_python_host(&self, rss_bytes: u64, children: u64) {
        self.python_rss.set(rss_bytes as i64);
        self.python_children.set(children as i64);
    }

    /// A webhook was sent, failed or dropped.
    pub fn webhook(&self, outcome: &str) {
        self.webhooks
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// The Python host died and is being started again.
    pub fn python_host_restarted(&self) {
        self.python_restarts.inc();
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
            .get_or_create(&self.queue_label(queue))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_metrics_are_exposed() {
        let m = Metrics::new(true, Labels::new(&["default".to_string()], []));
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

    #[test]
    fn label_values_are_bounded() {
        let l = Labels::new(&["default".to_string()], ["known.task".to_string()]);
        assert_eq!(l.queue("default"), "default");
        assert_eq!(l.queue("made-up"), "other");
        assert_eq!(l.task("known.task"), "known.task");
        for i in 0..MAX_EXTRA_TASKS {
            assert_eq!(l.task(&format!("t{i}")), format!("t{i}"));
        }
        assert_eq!(l.task("one.too.many"), "other");
        assert_eq!(l.task("t0"), "t0");
        assert_eq!(l.task(&"x".repeat(MAX_LABEL_CHARS + 1)), "other");
    }
}
