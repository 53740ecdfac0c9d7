//! The completion half of a [`cycle`](super::cycle) ([`complete.lua`](complete.lua)):
//! result, registries, TTLs, retries, repeats, rate-limit slots and dependents of one
//! execution. [`Completion`] is what the worker tells the script; [`Recorded`] is what
//! the script did, which is also the word metrics and logs use.

use super::unexpected;
use crate::job::JobHash;
use crate::results::encode_exc_string;
use crate::timefmt::Stamp;
use std::fmt;

/// How an execution ended, as the completion script records it.
#[derive(Debug, Clone, PartialEq)]
pub enum Completion {
    /// Success; the serialized return value, base64 (empty for None: RQ omits the field).
    Success { return_value: String },
    /// Failure text (RQ's `exc_string`); `retry` is false for a job that can never
    /// succeed (bad job data), which is then not retried.
    Failure { text: String, retry: bool },
    /// Stopped by `stop-job` / `stop-execution`.
    Stopped,
    /// Interrupted by a cold shutdown: back to the front of its queue.
    Requeue,
    /// The execution is no longer ours (its started-registry entry was taken): only this
    /// worker's own state is cleared.
    Lost,
    /// The function returned an `rq.Retry` (RQ 3.0): a RETRIED result and a requeue, or
    /// failed once `max` attempts were made. `return_value` is the serialized Retry, base64.
    RetryValue {
        return_value: String,
        max: i64,
        intervals: Vec<i64>,
        at_front: bool,
    },
}

impl Completion {
    fn kind_and_payload(&self) -> (&'static str, String) {
        match self {
            Completion::Success { return_value } => ("ok", return_value.clone()),
            Completion::Failure { text, retry: true } => ("fail", encode_exc_string(text)),
            Completion::Failure { text, retry: false } => ("fail_final", encode_exc_string(text)),
            Completion::Stopped => (
                "stop",
                encode_exc_string("Job stopped by user, work-horse terminated."),
            ),
            Completion::Requeue => ("requeue", String::new()),
            Completion::Lost => ("lost", String::new()),
            Completion::RetryValue { return_value, .. } => ("retry_value", return_value.clone()),
        }
    }

    /// `retry_max`, `retry_intervals_json`, `retry_at_front` for a returned Retry.
    fn retry_args(&self) -> (i64, String, &'static str) {
        match self {
            Completion::RetryValue {
                max,
                intervals,
                at_front,
                ..
            } => (
                *max,
                serde_json::to_string(intervals).unwrap_or_else(|_| "[]".into()),
                if *at_front { "1" } else { "0" },
            ),
            _ => (0, String::new(), "0"),
        }
    }
}

/// What the script recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    Finished,
    /// Finished with `result_ttl = 0`: the job was deleted.
    Deleted,
    /// Finished and put back on its queue for its next run (RQ 3.0's Repeat).
    Repeated,
    /// Finished and scheduled for its next run after an interval.
    RepeatScheduled,
    /// Failed and put back on its queue (retries left).
    Retried,
    /// Failed and scheduled for a retry after an interval.
    Scheduled,
    Failed,
    Stopped,
    Requeued,
    Lost,
}

impl Recorded {
    pub fn as_str(self) -> &'static str {
        match self {
            Recorded::Finished => "finished",
            Recorded::Deleted => "deleted",
            Recorded::Repeated => "repeated",
            Recorded::RepeatScheduled => "repeat_scheduled",
            Recorded::Retried => "retried",
            Recorded::Scheduled => "scheduled",
            Recorded::Failed => "failed",
            Recorded::Stopped => "stopped",
            Recorded::Requeued => "requeued",
            Recorded::Lost => "lost",
        }
    }

    fn parse(s: &str) -> Option<Recorded> {
        Some(match s {
            "finished" => Recorded::Finished,
            "deleted" => Recorded::Deleted,
            "repeated" => Recorded::Repeated,
            "repeat_scheduled" => Recorded::RepeatScheduled,
            "retried" => Recorded::Retried,
            "scheduled" => Recorded::Scheduled,
            "failed" => Recorded::Failed,
            "stopped" => Recorded::Stopped,
            "requeued" => Recorded::Requeued,
            "lost" => Recorded::Lost,
            _ => return None,
        })
    }
}

impl fmt::Display for Recorded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The execution being completed.
pub struct Execution<'a> {
    pub id: &'a str,
    pub exec_id: &'a str,
    pub worker: &'a str,
    pub origin: &'a str,
    pub started: &'a Stamp,
}

/// TTLs for jobs whose hash sets none.
#[derive(Debug, Clone, Copy)]
pub struct Defaults {
    pub result_ttl: i64,
    pub failure_ttl: i64,
}

/// What the worker read from the job hash as claimed and the completion uses (RQ's
/// worker uses the job it fetched, too). The script validates each again.
#[derive(Debug, Clone, Default)]
pub struct JobFacts {
    pub result_ttl: String,
    pub rate_limit_key: String,
    pub rate_limit_concurrency: String,
    pub repeats_left: String,
    pub repeat_intervals: String,
    pub ttl: String,
    pub has_dependencies: bool,
}

impl JobFacts {
    pub fn of(hash: &JobHash) -> JobFacts {
        let text = |f: &str| {
            hash.raw(f)
                .and_then(|v| std::str::from_utf8(v).ok())
                .unwrap_or("")
                .to_string()
        };
        JobFacts {
            result_ttl: text("result_ttl"),
            rate_limit_key: text("rate_limit_key"),
            rate_limit_concurrency: text("rate_limit_concurrency"),
            repeats_left: text("repeats_left"),
            repeat_intervals: text("repeat_intervals"),
            ttl: text("ttl"),
            has_dependencies: !text("dependency_ids").is_empty()
                || !text("dependency_id").is_empty(),
        }
    }

    /// Whether any fact beyond `result_ttl` is set.
    fn has_optional(&self) -> bool {
        self.has_dependencies
            || [
                &self.rate_limit_key,
                &self.rate_limit_concurrency,
                &self.repeats_left,
                &self.repeat_intervals,
                &self.ttl,
            ]
            .iter()
            .any(|v| !v.is_empty())
    }
}

/// One execution that ended, for a cycle.
pub struct Ended<'a> {
    pub exec: Execution<'a>,
    pub completion: &'a Completion,
    pub facts: &'a JobFacts,
}

/// Arguments per ended execution (cycle.lua's completion list): eight always, then `0`,
/// or `1` and the nine optional facts when any is set (most jobs have none, and each
/// argument costs Redis time).
pub(super) fn args(inv: &mut redis::ScriptInvocation<'_>, ended: &[Ended<'_>]) {
    inv.arg(ended.len());
    for e in ended {
        let (kind, payload) = e.completion.kind_and_payload();
        let f = e.facts;
        inv.arg(e.exec.id)
            .arg(e.exec.exec_id)
            .arg(e.exec.worker)
            .arg(e.exec.origin)
            .arg(kind)
            .arg(payload)
            .arg(&e.exec.started.epoch_text)
            .arg(&f.result_ttl);
        let retry_value = matches!(e.completion, Completion::RetryValue { .. });
        if !retry_value && !f.has_optional() {
            inv.arg("0");
            continue;
        }
        let (retry_max, retry_intervals, retry_at_front) = e.completion.retry_args();
        inv.arg("1")
            .arg(&f.rate_limit_key)
            .arg(&f.rate_limit_concurrency)
            .arg(&f.repeats_left)
            .arg(&f.repeat_intervals)
            .arg(&f.ttl)
            .arg(if f.has_dependencies { "1" } else { "0" })
            .arg(retry_max)
            .arg(retry_intervals)
            .arg(retry_at_front);
    }
}

/// Parses one recorded outcome.
pub(super) fn recorded(v: redis::Value) -> redis::RedisResult<Recorded> {
    let s: String = redis::from_redis_value(v)?;
    Recorded::parse(&s).ok_or_else(|| unexpected("cycle", format!("recorded {s:?}")))
}
