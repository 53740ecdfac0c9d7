//! The RQ job hash (`rq:job:<id>`): reading every field with RQ's encodings and
//! building the mapping `enqueue` writes.

use crate::error::{Error, Result};
use crate::ints;
use crate::timefmt;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::fmt;

/// RQ job statuses runq reads; it writes only those every RQ version understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    Created,
    Queued,
    Deferred,
    Scheduled,
    Started,
    Finished,
    Failed,
    Stopped,
    Canceled,
    ReadyToEnqueue,
    RateLimited,
}

impl JobStatus {
    pub fn parse(s: &str) -> Option<JobStatus> {
        Some(match s {
            "created" => JobStatus::Created,
            "queued" => JobStatus::Queued,
            "deferred" => JobStatus::Deferred,
            "scheduled" => JobStatus::Scheduled,
            "started" => JobStatus::Started,
            "finished" => JobStatus::Finished,
            "failed" => JobStatus::Failed,
            "stopped" => JobStatus::Stopped,
            "canceled" => JobStatus::Canceled,
            "ready_to_enqueue" => JobStatus::ReadyToEnqueue,
            "rate_limited" => JobStatus::RateLimited,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Created => "created",
            JobStatus::Queued => "queued",
            JobStatus::Deferred => "deferred",
            JobStatus::Scheduled => "scheduled",
            JobStatus::Started => "started",
            JobStatus::Finished => "finished",
            JobStatus::Failed => "failed",
            JobStatus::Stopped => "stopped",
            JobStatus::Canceled => "canceled",
            JobStatus::ReadyToEnqueue => "ready_to_enqueue",
            JobStatus::RateLimited => "rate_limited",
        }
    }

    /// True for statuses after which the job will not run again by itself.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Finished | JobStatus::Failed | JobStatus::Stopped | JobStatus::Canceled
        )
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job hash as read with `HGETALL`, with typed accessors that name the bad field.
#[derive(Debug, Clone)]
pub struct JobHash {
    pub id: String,
    pub fields: HashMap<String, Vec<u8>>,
}

impl JobHash {
    pub fn new(id: impl Into<String>, fields: HashMap<String, Vec<u8>>) -> Self {
        JobHash {
            id: id.into(),
            fields,
        }
    }

    /// Builds from a flat `[field, value, field, value…]` reply.
    pub fn from_flat(id: impl Into<String>, flat: Vec<Vec<u8>>) -> Self {
        let mut fields = HashMap::with_capacity(flat.len() / 2);
        let mut it = flat.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            fields.insert(String::from_utf8_lossy(&k).into_owned(), v);
        }
        JobHash::new(id, fields)
    }

    fn err(&self, field: &'static str, reason: impl Into<String>) -> Error {
        Error::JobField {
            id: self.id.clone(),
            field,
            reason: reason.into(),
        }
    }

    pub fn raw(&self, field: &str) -> Option<&[u8]> {
        self.fields.get(field).map(|v| v.as_slice())
    }

    /// UTF-8 text of a field; `None` when absent.
    pub fn text(&self, field: &'static str) -> Result<Option<&str>> {
        match self.fields.get(field) {
            None => Ok(None),
            Some(v) => std::str::from_utf8(v)
                .map(Some)
                .map_err(|_| self.err(field, "not UTF-8 text")),
        }
    }

    /// Text that is absent or empty counts as unset.
    pub fn text_nonempty(&self, field: &'static str) -> Result<Option<&str>> {
        Ok(self.text(field)?.filter(|s| !s.is_empty()))
    }

    /// An integer field under the shared rule ([`crate::ints`]), within `lo..=hi`.
    fn int(&self, field: &'static str, lo: i64, hi: i64) -> Result<Option<i64>> {
        let Some(s) = self.text_nonempty(field)? else {
            return Ok(None);
        };
        let shown = crate::echo::clip(s, 40);
        match ints::parse_int(s) {
            None => Err(self.err(field, format!("`{shown}` is not an integer"))),
            Some(n) if !(lo..=hi).contains(&n) => {
                Err(self.err(field, format!("{n} is out of range ({lo} to {hi})")))
            }
            Some(n) => Ok(Some(n)),
        }
    }

    pub fn data(&self) -> Result<&[u8]> {
        self.raw("data")
            .ok_or_else(|| self.err("data", "missing (the job hash has no payload)"))
    }

    pub fn status(&self) -> Result<Option<JobStatus>> {
        match self.text_nonempty("status")? {
            None => Ok(None),
            Some(s) => JobStatus::parse(s).map(Some).ok_or_else(|| {
                self.err(
                    "status",
                    format!("unknown status `{}`", crate::echo::clip(s, 40)),
                )
            }),
        }
    }

    pub fn origin(&self) -> Result<&str> {
        self.text_nonempty("origin")?
            .ok_or_else(|| self.err("origin", "missing"))
    }

    /// Seconds: -1 (no limit) or 1 to [`ints::MAX_TIMEOUT`].
    pub fn timeout(&self) -> Result<Option<i64>> {
        let t = self.int("timeout", -1, ints::MAX_TIMEOUT)?;
        if t == Some(0) {
            return Err(self.err("timeout", "must be positive or -1"));
        }
        Ok(t)
    }

    pub fn result_ttl(&self) -> Result<Option<i64>> {
        self.int("result_ttl", -1, ints::MAX_TTL)
    }

    pub fn failure_ttl(&self) -> Result<Option<i64>> {
        self.int("failure_ttl", -1, ints::MAX_TTL)
    }

    pub fn ttl(&self) -> Result<Option<i64>> {
        self.int("ttl", -1, ints::MAX_TTL)
    }

    pub fn retries_left(&self) -> Result<Option<i64>> {
        self.int("retries_left", 0, ints::MAX_RETRIES)
    }

    pub fn retry_intervals(&self) -> Result<Vec<i64>> {
        let Some(s) = self.text_nonempty("retry_intervals")? else {
            return Ok(Vec::new());
        };
        let shown = crate::echo::clip(s, 60);
        let intervals: Vec<i64> = serde_json::from_str(s).map_err(|_| {
            self.err(
                "retry_intervals",
                format!("`{shown}` is not a JSON list of integers"),
            )
        })?;
        match intervals.iter().find(|i| !(0..=ints::MAX_TTL).contains(*i)) {
            Some(i) => Err(self.err(
                "retry_intervals",
                format!("{i} is out of range (0 to {})", ints::MAX_TTL),
            )),
            None => Ok(intervals),
        }
    }

    pub fn dependency_ids(&self) -> Result<Vec<String>> {
        match self.text_nonempty("dependency_ids")? {
            None => Ok(self
                .text_nonempty("dependency_id")?
                .map(|s| vec![s.to_string()])
                .unwrap_or_default()),
            Some(s) => serde_json::from_str(s).map_err(|_| {
                self.err("dependency_ids", format!("`{s}` is not a JSON list of ids"))
            }),
        }
    }

    pub fn datetime(&self, field: &'static str) -> Result<Option<DateTime<Utc>>> {
        match self.text(field)? {
            None => Ok(None),
            Some(s) => timefmt::parse_datetime(s).map_err(|e| self.err(field, e)),
        }
    }

    pub fn meta(&self) -> Option<&[u8]> {
        self.raw("meta")
    }

    /// Checks every field a worker relies on, so a malformed hash fails with a message
    /// naming the field before anything runs.
    pub fn validate_for_run(&self) -> Result<()> {
        self.data()?;
        self.status()?;
        self.timeout()?;
        self.result_ttl()?;
        self.failure_ttl()?;
        self.retries_left()?;
        self.retry_intervals()?;
        for f in ["created_at", "enqueued_at"] {
            self.datetime(f)?;
        }
        Ok(())
    }
}

/// Validates a custom job id as RQ 2.8+ does: `[A-Za-z0-9_-]+`.
pub fn validate_job_id(id: &str) -> Result<()> {
    if !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "job id `{}` must match [A-Za-z0-9_-]+",
            crate::echo::clip(id, 80)
        )))
    }
}

/// A fresh RQ-style job id (canonical UUID4 with dashes).
pub fn new_job_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(pairs: &[(&str, &str)]) -> JobHash {
        JobHash::new(
            "j1",
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect(),
        )
    }

    #[test]
    fn malformed_fields_are_named() {
        let h = hash(&[("data", "x"), ("timeout", "soon")]);
        let e = h.validate_for_run().unwrap_err().to_string();
        assert_eq!(e, "job j1: field `timeout`: `soon` is not an integer");
        let h = hash(&[("timeout", "5")]);
        assert!(h
            .validate_for_run()
            .unwrap_err()
            .to_string()
            .contains("`data`"));
        let h = hash(&[("data", "x"), ("status", "weird")]);
        assert!(h
            .validate_for_run()
            .unwrap_err()
            .to_string()
            .contains("unknown status"));
    }

    #[test]
    fn job_ids_follow_rq_rules() {
        assert!(validate_job_id("abc_DEF-1").is_ok());
        assert!(validate_job_id("a:b").is_err());
        assert!(validate_job_id("").is_err());
    }
}
