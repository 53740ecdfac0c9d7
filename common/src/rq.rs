//! RQ operations shared by the CLI, the worker and tests: enqueue a job with RQ's exact
//! mapping, read jobs, results, queues and workers back.

use crate::description;
use crate::error::{Error, Result};
use crate::job::JobHash;
use crate::keys::Keys;
use crate::payload::{self, JobCall};
use crate::results::{ResultEntry, ResultType};
use crate::serializer::SerializerKind;
use crate::timefmt::Stamp;
use redis::{self, aio::ConnectionLike, AsyncCommands};
use serde_json::Value;
use std::collections::HashMap;

/// Everything needed to enqueue one job.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: String,
    pub queue: String,
    pub call: JobCall,
    pub serializer: SerializerKind,
    /// Seconds; `None` = RQ's default (180), `-1` = no limit.
    pub timeout: Option<i64>,
    pub result_ttl: Option<i64>,
    pub failure_ttl: Option<i64>,
    pub ttl: Option<i64>,
    pub description: Option<String>,
    pub meta: Option<Value>,
    pub at_front: bool,
    pub depends_on: Vec<String>,
    pub allow_dependency_failures: bool,
    /// `retries_left` and `retry_intervals`.
    pub retry: Option<(i64, Vec<i64>)>,
    /// Epoch second at which a scheduled job becomes due.
    pub schedule_at: Option<i64>,
    /// Seconds from now on Redis's clock at which a scheduled job becomes due (wins over
    /// `schedule_at`; so a client whose clock is off still schedules right).
    pub schedule_in: Option<i64>,
}

impl NewJob {
    pub fn new(queue: &str, call: JobCall, serializer: SerializerKind) -> Self {
        NewJob {
            id: crate::job::new_job_id(),
            queue: queue.to_string(),
            call,
            serializer,
            timeout: None,
            result_ttl: None,
            failure_ttl: None,
            ttl: None,
            description: None,
            meta: None,
            at_front: false,
            depends_on: Vec::new(),
            allow_dependency_failures: false,
            retry: None,
            schedule_at: None,
            schedule_in: None,
        }
    }

    /// The job hash fields RQ's `Job.save()` writes (status and `enqueued_at` are set by
    /// the enqueue script).
    pub fn fields(&self, now: &Stamp) -> Result<Vec<(&'static str, Vec<u8>)>> {
        let data = payload::encode(self.serializer, &self.call).map_err(Error::Encode)?;
        let description = self.description.clone().unwrap_or_else(|| {
            description::call_string(&self.call.func_name, &self.call.args, &self.call.kwargs)
        });
        let text = |s: &str| s.as_bytes().to_vec();
        let mut f: Vec<(&'static str, Vec<u8>)> = vec![
            ("created_at", text(&now.text)),
            ("data", data),
            ("success_callback_name", Vec::new()),
            ("failure_callback_name", Vec::new()),
            ("stopped_callback_name", Vec::new()),
            ("started_at", Vec::new()),
            ("ended_at", Vec::new()),
            ("last_heartbeat", Vec::new()),
            ("worker_name", Vec::new()),
            ("group_id", Vec::new()),
            ("origin", text(&self.queue)),
            ("description", text(&description)),
            ("timeout", text(&self.timeout.unwrap_or(180).to_string())),
        ];
        if let Some(v) = self.result_ttl {
            f.push(("result_ttl", text(&v.to_string())));
        }
        if let Some(v) = self.failure_ttl {
            f.push(("failure_ttl", text(&v.to_string())));
        }
        if let Some(v) = self.ttl {
            f.push(("ttl", text(&v.to_string())));
        }
        if let Some(meta) = self
            .meta
            .as_ref()
            .filter(|m| m.as_object().is_some_and(|o| !o.is_empty()))
        {
            f.push(("meta", self.serializer.dumps(meta).map_err(Error::Encode)?));
        }
        if let Some((left, intervals)) = &self.retry {
            f.push(("retries_left", text(&left.to_string())));
            f.push((
                "retry_intervals",
                crate::pyjson::to_vec(intervals).map_err(|e| Error::Encode(e.to_string()))?,
            ));
        }
        if !self.depends_on.is_empty() {
            f.push(("dependency_id", text(&self.depends_on[0])));
            f.push((
                "dependency_ids",
                crate::pyjson::to_vec(&self.depends_on)
                    .map_err(|e| Error::Encode(e.to_string()))?,
            ));
            if self.allow_dependency_failures {
                f.push(("allow_dependency_failures", text("1")));
            }
            if self.at_front {
                f.push(("enqueue_at_front", text("1")));
            }
        }
        Ok(f)
    }

    /// Checks every number and the id against the rules workers apply
    /// ([`crate::ints`]), so a job every worker would refuse is never written.
    pub fn validate(&self) -> Result<()> {
        use crate::ints::{valid_timeout, valid_ttl, MAX_RETRIES, MAX_TTL};
        crate::job::validate_job_id(&self.id)?;
        let bad = |what: &str, rule: &str| Err(Error::Invalid(format!("{what} {rule}")));
        if let Some(t) = self.timeout.filter(|t| !valid_timeout(*t)) {
            return bad(
                &format!("timeout {t}"),
                &format!("must be -1 (no limit) or 1 to {MAX_TTL} seconds"),
            );
        }
        for (name, v) in [
            ("result_ttl", self.result_ttl),
            ("failure_ttl", self.failure_ttl),
            ("ttl", self.ttl),
        ] {
            if let Some(v) = v.filter(|v| !valid_ttl(*v)) {
                return bad(
                    &format!("{name} {v}"),
                    &format!("must be -1 (keep) to {MAX_TTL} seconds"),
                );
            }
        }
        if let Some((left, intervals)) = &self.retry {
            if !(0..=MAX_RETRIES).contains(left) {
                return bad(
                    &format!("retry count {left}"),
                    &format!("must be 0 to {MAX_RETRIES}"),
                );
            }
            if let Some(i) = intervals.iter().find(|i| !(0..=MAX_TTL).contains(*i)) {
                return bad(
                    &format!("retry interval {i}"),
                    &format!("must be 0 to {MAX_TTL} seconds"),
                );
            }
        }
        Ok(())
    }
}

/// Reads a job hash; `None` when the job does not exist.
pub use crate::scripts::enqueue::{
    enqueue, enqueue_many, prepare_enqueue, send_enqueue, BatchOutcome, PreparedEnqueue,
};

pub async fn fetch_job<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &Keys,
    id: &str,
) -> Result<Option<JobHash>> {
    let fields: HashMap<String, Vec<u8>> = conn.hgetall(keys.job(id)).await?;
    Ok((!fields.is_empty()).then(|| JobHash::new(id, fields)))
}

/// The newest results-stream entry of a job (RQ's `latest_result()`).
pub async fn latest_result<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &Keys,
    id: &str,
) -> Result<Option<ResultEntry>> {
    let reply: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
        .arg(keys.results(id))
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(conn)
        .await?;
    Ok(reply.ids.into_iter().next().map(|entry| {
        let fields: HashMap<String, Vec<u8>> = entry
            .map
            .iter()
            .filter_map(|(k, v)| {
                redis::from_redis_value_ref::<Vec<u8>>(v)
                    .ok()
                    .map(|b| (k.clone(), b))
            })
            .collect();
        let kind = fields
            .get("type")
            .and_then(|t| std::str::from_utf8(t).ok())
            .and_then(ResultType::from_code);
        ResultEntry {
            stream_id: entry.id,
            kind,
            fields,
        }
    }))
}

/// Queue names registered in `rq:queues`, sorted.
pub async fn all_queues<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &Keys,
) -> Result<Vec<String>> {
    let members: Vec<String> = conn.smembers(keys.queues()).await?;
    let prefix = keys.queue_key_prefix();
    let mut names: Vec<String> = members
        .into_iter()
        .filter_map(|m| m.strip_prefix(&prefix).map(str::to_string))
        .collect();
    names.sort();
    Ok(names)
}

/// Job counts of one queue, as `rq info` shows them.
#[derive(Debug, Clone, Default, serde::Serialize, PartialEq, Eq)]
pub struct QueueCounts {
    pub queued: u64,
    pub started: u64,
    pub finished: u64,
    pub failed: u64,
    pub deferred: u64,
    pub scheduled: u64,
    pub canceled: u64,
}

/// Reads the counts of several queues in one pipelined round trip.
pub async fn queue_counts<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &Keys,
    queues: &[String],
) -> Result<Vec<QueueCounts>> {
    if queues.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for q in queues {
        pipe.llen(keys.queue(q))
            .zcard(keys.started(q))
            .zcard(keys.finished(q))
            .zcard(keys.failed(q))
            .zcard(keys.deferred(q))
            .zcard(keys.scheduled(q))
            .zcard(keys.canceled(q));
    }
    let flat: Vec<u64> = pipe.query_async(conn).await?;
    Ok(flat
        .chunks(7)
        .map(|c| QueueCounts {
            queued: c[0],
            started: c[1],
            finished: c[2],
            failed: c[3],
            deferred: c[4],
            scheduled: c[5],
            canceled: c[6],
        })
        .collect())
}

/// A worker record as `rq info` lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WorkerInfo {
    pub name: String,
    pub state: String,
    pub queues: Vec<String>,
    pub hostname: String,
    pub pid: String,
    pub ip_address: String,
    pub current_job: Option<String>,
    pub successful_job_count: u64,
    pub failed_job_count: u64,
    pub birth: String,
    pub last_heartbeat: String,
}

/// Live workers (those whose key exists), in name order. When `queues` is given, only
/// workers listening on one of them.
pub async fn workers<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &Keys,
    queues: Option<&[String]>,
) -> Result<Vec<WorkerInfo>> {
    let mut names: Vec<String> = match queues {
        None => conn.smembers(keys.workers()).await?,
        Some(qs) => {
            let mut all = std::collections::BTreeSet::new();
            for q in qs {
                let m: Vec<String> = conn.smembers(keys.queue_workers(q)).await?;
                all.extend(m);
            }
            all.into_iter().collect()
        }
    };
    names.sort();
    let mut pipe = redis::pipe();
    for key in &names {
        pipe.hgetall(key);
    }
    let hashes: Vec<HashMap<String, String>> = if names.is_empty() {
        Vec::new()
    } else {
        pipe.query_async(conn).await?
    };
    let prefix = keys.worker_key_prefix();
    Ok(names
        .into_iter()
        .zip(hashes)
        .filter(|(_, h)| !h.is_empty())
        .map(|(key, h)| {
            let get = |f: &str| h.get(f).cloned().unwrap_or_default();
            WorkerInfo {
                name: key.strip_prefix(&prefix).unwrap_or(&key).to_string(),
                state: get("state"),
                queues: get("queues")
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect(),
                hostname: get("hostname"),
                pid: get("pid"),
                ip_address: get("ip_address"),
                current_job: h.get("current_job").cloned().filter(|s| !s.is_empty()),
                successful_job_count: get("successful_job_count").parse().unwrap_or(0),
                failed_job_count: get("failed_job_count").parse().unwrap_or(0),
                birth: get("birth"),
                last_heartbeat: get("last_heartbeat"),
            }
        })
        .collect())
}
