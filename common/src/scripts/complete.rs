//! Recording how an execution ended ([`complete.lua`](complete.lua)): result,
//! registries, TTLs, worker counters and state, retries and dependents in one atomic
//! step. [`Completion`] is what the worker tells the script; [`Recorded`] is what the
//! script did, which is also the word metrics and logs use.

use super::{script, unexpected};
use crate::keys::Keys;
use crate::results::encode_exc_string;
use crate::timefmt::Stamp;
use redis::aio::ConnectionLike;
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

/// Records `completion` for `exec`.
pub async fn complete<C: ConnectionLike + Send>(
    conn: &mut C,
    keys: &Keys,
    exec: &Execution<'_>,
    completion: &Completion,
    defaults: Defaults,
) -> redis::RedisResult<Recorded> {
    let now = Stamp::now();
    let working = (now.at - exec.started.at).num_microseconds().unwrap_or(0) as f64 / 1e6;
    let (kind, payload) = completion.kind_and_payload();
    let (retry_max, retry_intervals, retry_at_front) = completion.retry_args();
    let reply: String = script!("complete.lua")
        .prepare_invoke()
        .arg(keys.prefix())
        .arg(&now.text)
        .arg(&now.epoch_text)
        .arg(exec.id)
        .arg(exec.exec_id)
        .arg(exec.worker)
        .arg(exec.origin)
        .arg(kind)
        .arg(payload)
        .arg(&exec.started.epoch_text)
        .arg(format!("{working}"))
        .arg(defaults.result_ttl)
        .arg(defaults.failure_ttl)
        .arg(retry_max)
        .arg(retry_intervals)
        .arg(retry_at_front)
        .invoke_async(conn)
        .await?;
    Recorded::parse(&reply).ok_or_else(|| unexpected("complete", format!("reply {reply:?}")))
}
