//! RQ 3.0's webhooks: the job's `webhooks` field (a JSON list of `{url, job_status,
//! method, headers, timeout}`, validated as RQ's `Webhook.from_dict` does — one bad entry
//! and the job has none), the payload RQ posts (`job_id`, `func_name`, `status`,
//! `enqueued_at`, `ended_at`, and `exc_info` for failures, as Python's `json.dumps`
//! writes it), and the [`WebhookSender`] service that sends them from the worker process
//! after the job's final state is saved, never blocking a slot. A failed send never fails
//! the job: it is logged and counted in `/metrics`.

use crate::metrics::Metrics;
use crate::service::Service;
use crate::shutdown::Shutdown;
use chrono::{DateTime, Timelike, Utc};
use runq_common::echo::clip;
use runq_common::job::JobHash;
use serde::Serialize;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};

/// The `webhooks` field is read only up to this size.
const MAX_FIELD_BYTES: usize = 64 * 1024;
/// At most this many webhooks per job.
const MAX_HOOKS: usize = 20;
/// How long an exiting worker keeps sending the webhooks still queued.
const DRAIN: Duration = Duration::from_secs(15);

/// Longest per-webhook timeout honoured, in seconds.
const MAX_TIMEOUT_SECS: u64 = 300;
/// Deliveries waiting to be sent; beyond this they are dropped (and counted).
const QUEUE: usize = 10_000;
/// Deliveries in flight at once.
const IN_FLIGHT: usize = 16;

/// Which final state a webhook is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Finished,
    Failed,
}

impl Event {
    fn as_str(self) -> &'static str {
        match self {
            Event::Finished => "finished",
            Event::Failed => "failed",
        }
    }
}

/// One validated webhook of a job.
#[derive(Debug, Clone, PartialEq)]
pub struct Hook {
    pub url: String,
    pub event: Event,
    pub post: bool,
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
}

/// The job's webhooks, as RQ reads them: any invalid entry (or field) means none.
pub fn hooks_of(hash: &JobHash) -> Result<Vec<Hook>, String> {
    let Some(raw) = hash.raw("webhooks").filter(|r| !r.is_empty()) else {
        return Ok(Vec::new());
    };
    if raw.len() > MAX_FIELD_BYTES {
        return Err(format!(
            "the webhooks field is {} bytes (at most {MAX_FIELD_BYTES})",
            raw.len()
        ));
    }
    let list: Vec<Value> =
        serde_json::from_slice(raw).map_err(|e| format!("webhooks is not a JSON list: {e}"))?;
    if list.len() > MAX_HOOKS {
        return Err(format!("{} webhooks (at most {MAX_HOOKS})", list.len()));
    }
    list.iter().map(hook).collect()
}

fn hook(v: &Value) -> Result<Hook, String> {
    let o = v.as_object().ok_or("a webhook is not an object")?;
    let text = |k: &str| o.get(k).and_then(Value::as_str);
    let url = text("url").ok_or("a webhook has no url")?;
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| format!("webhook url `{}` is not http(s)", clip(url, 100)))?;
    if rest.split(['/', '?', '#']).next().unwrap_or("").is_empty() {
        return Err(format!("webhook url `{}` has no host", clip(url, 100)));
    }
    let event = match text("job_status") {
        Some("finished") => Event::Finished,
        Some("failed") => Event::Failed,
        other => {
            return Err(format!(
                "webhook job_status {other:?} is not finished or failed"
            ))
        }
    };
    let post = match o.get("method") {
        None | Some(Value::Null) => false,
        Some(Value::String(m)) if m == "GET" => false,
        Some(Value::String(m)) if m == "POST" => true,
        Some(other) => return Err(format!("webhook method {other} is not GET or POST")),
    };
    let headers = match o.get("headers") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(h)) if h.len() <= 50 => h
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                other => Ok((k.clone(), other.to_string())),
            })
            .collect::<Result<_, String>>()?,
        Some(_) => return Err("webhook headers are not an object (of at most 50)".into()),
    };
    let timeout = match o.get("timeout") {
        None | Some(Value::Null) => 10,
        Some(v) => v
            .as_u64()
            .filter(|t| *t > 0)
            .ok_or_else(|| format!("webhook timeout {v} is not a positive integer"))?,
    };
    Ok(Hook {
        url: url.to_string(),
        event,
        post,
        headers,
        timeout: Duration::from_secs(timeout.min(MAX_TIMEOUT_SECS)),
    })
}

/// RQ's webhook payload.
#[derive(Debug, Serialize)]
struct Payload<'a> {
    job_id: &'a str,
    func_name: &'a str,
    status: &'a str,
    enqueued_at: Option<String>,
    ended_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exc_info: Option<&'a str>,
}

/// Python's `datetime.isoformat()` of an aware UTC time: `+00:00`, microseconds unless 0.
fn isoformat(t: &DateTime<Utc>) -> String {
    if t.nanosecond() / 1000 == 0 {
        t.format("%Y-%m-%dT%H:%M:%S+00:00").to_string()
    } else {
        t.format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string()
    }
}

/// One webhook to send.
#[derive(Debug)]
pub struct Delivery {
    pub job_id: String,
    pub hook: Hook,
    /// The JSON body (also used to build nothing for GET).
    pub body: Vec<u8>,
}

/// The deliveries a job's final state calls for.
pub fn deliveries(
    hash: &JobHash,
    func_name: &str,
    event: Event,
    exc_info: Option<&str>,
    ended: Option<DateTime<Utc>>,
) -> Vec<Delivery> {
    let hooks = match hooks_of(hash) {
        Ok(h) => h,
        Err(why) => {
            tracing::warn!(job = %hash.id, "ignoring the job's webhooks: {why}");
            return Vec::new();
        }
    };
    let payload = Payload {
        job_id: &hash.id,
        func_name,
        status: event.as_str(),
        enqueued_at: hash
            .datetime("enqueued_at")
            .ok()
            .flatten()
            .map(|t| isoformat(&t)),
        ended_at: ended.as_ref().map(isoformat),
        exc_info: match event {
            Event::Failed => Some(exc_info.unwrap_or("")),
            Event::Finished => None,
        },
    };
    let body = runq_common::pyjson::to_vec(&payload).unwrap_or_default();
    hooks
        .into_iter()
        .filter(|h| h.event == event)
        .map(|hook| Delivery {
            job_id: hash.id.clone(),
            hook,
            body: body.clone(),
        })
        .collect()
}

/// Where deliveries are handed to the sender; cheap to clone.
#[derive(Clone)]
pub struct Webhooks {
    tx: mpsc::Sender<Delivery>,
    metrics: Arc<Metrics>,
}

impl Webhooks {
    /// The handle and the service that sends what it is handed.
    pub fn new(metrics: Arc<Metrics>) -> (Webhooks, WebhookSender) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (
            Webhooks {
                tx,
                metrics: metrics.clone(),
            },
            WebhookSender { rx, metrics },
        )
    }

    /// Queues `deliveries` without waiting; a full queue drops them (counted).
    pub fn send(&self, deliveries: Vec<Delivery>) {
        for d in deliveries {
            if let Err(e) = self.tx.try_send(d) {
                let d = match e {
                    mpsc::error::TrySendError::Full(d) | mpsc::error::TrySendError::Closed(d) => d,
                };
                tracing::warn!(job = %d.job_id, url = %clip(&d.hook.url, 200), "webhook dropped: too many waiting to be sent");
                self.metrics.webhook("dropped");
            }
        }
    }
}

/// The service sending webhooks, [`IN_FLIGHT`] at a time, on blocking threads.
pub struct WebhookSender {
    rx: mpsc::Receiver<Delivery>,
    metrics: Arc<Metrics>,
}

impl Service for WebhookSender {
    const NAME: &'static str = "webhooks";

    async fn run(mut self, shutdown: Shutdown) {
        let slots = Arc::new(Semaphore::new(IN_FLIGHT));
        loop {
            let delivery = tokio::select! {
                d = self.rx.recv() => d,
                _ = shutdown.exiting() => None,
            };
            let Some(delivery) = delivery else { break };
            let Ok(permit) = slots.clone().acquire_owned().await else {
                break;
            };
            self.spawn_send(delivery, permit);
        }
        // Exiting (every slot has stopped, so nothing more is queued): what is queued is
        // still sent, as RQ sends every webhook before it exits, for up to DRAIN; what
        // cannot be sent by then is logged and counted as dropped.
        let deadline = tokio::time::Instant::now() + DRAIN;
        let mut dropped = 0u64;
        while let Ok(delivery) = self.rx.try_recv() {
            match tokio::time::timeout_at(deadline, slots.clone().acquire_owned()).await {
                Ok(Ok(permit)) => self.spawn_send(delivery, permit),
                _ => {
                    dropped += 1;
                    self.metrics.webhook("dropped");
                }
            }
        }
        let _ = tokio::time::timeout_at(deadline, slots.acquire_many(IN_FLIGHT as u32)).await;
        if dropped > 0 {
            tracing::warn!(dropped, "webhooks not sent: the worker exited before their turn ({DRAIN:?} after the last job)");
        }
    }
}

impl WebhookSender {
    /// Sends one delivery on the blocking pool, holding `permit` (one of IN_FLIGHT).
    fn spawn_send(&self, delivery: Delivery, permit: tokio::sync::OwnedSemaphorePermit) {
        let metrics = self.metrics.clone();
        tokio::task::spawn_blocking(move || {
            let outcome = match send(&delivery) {
                Ok(()) => "sent",
                Err(e) => {
                    tracing::warn!(job = %delivery.job_id, url = %clip(&delivery.hook.url, 200), error = %clip(&e, 300), "failed to send webhook");
                    "failed"
                }
            };
            metrics.webhook(outcome);
            drop(permit);
        });
    }
}

/// Sends one webhook (blocking): GET without a body, or POST of the JSON payload with
/// `Content-Type: application/json` unless the webhook's headers set one.
fn send(d: &Delivery) -> Result<(), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(d.hook.timeout))
        .http_status_as_error(true)
        .build()
        .into();
    let has = |name: &str| {
        d.hook
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case(name))
    };
    let result = if d.hook.post {
        let mut req = agent.post(&d.hook.url);
        if !has("content-type") {
            req = req.header("Content-Type", "application/json");
        }
        for (k, v) in &d.hook.headers {
            req = req.header(k, v);
        }
        req.send(&d.body[..])
    } else {
        let mut req = agent.get(&d.hook.url);
        for (k, v) in &d.hook.headers {
            req = req.header(k, v);
        }
        req.call()
    };
    result.map(|_| ()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn hash(webhooks: &str) -> JobHash {
        let mut f = HashMap::new();
        f.insert("webhooks".to_string(), webhooks.as_bytes().to_vec());
        f.insert(
            "enqueued_at".to_string(),
            b"2026-12-01T23:31:50.479885Z".to_vec(),
        );
        JobHash::new("wh_ok", f)
    }

    #[test]
    fn rq_webhooks_are_read_and_one_bad_entry_drops_all() {
        let h = hash(
            r#"[{"url": "http://127.0.0.1:1/f", "job_status": "finished", "method": "POST", "headers": {"X-A": "b"}, "timeout": 3}, {"url": "http://127.0.0.1:1/x", "job_status": "failed"}]"#,
        );
        let hooks = hooks_of(&h).unwrap();
        assert_eq!(hooks.len(), 2);
        assert!(hooks[0].post && hooks[0].timeout == Duration::from_secs(3));
        assert!(!hooks[1].post && hooks[1].timeout == Duration::from_secs(10));
        let bad = hash(
            r#"[{"url": "http://h/f", "job_status": "finished"}, {"url": "ftp://h", "job_status": "finished"}]"#,
        );
        assert!(hooks_of(&bad).is_err());
        assert!(deliveries(&bad, "f", Event::Finished, None, Some(Utc::now())).is_empty());
    }

    #[test]
    fn payload_is_rqs() {
        let h =
            hash(r#"[{"url": "http://127.0.0.1:1/f", "job_status": "failed", "method": "POST"}]"#);
        let ended = Some(
            DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z")
                .unwrap()
                .with_timezone(&Utc),
        );
        let d = deliveries(&h, "tasks.ok", Event::Failed, Some("boom é"), ended);
        assert_eq!(d.len(), 1);
        assert_eq!(
            String::from_utf8(d[0].body.clone()).unwrap(),
            r#"{"job_id": "wh_ok", "func_name": "tasks.ok", "status": "failed", "enqueued_at": "2026-12-01T23:31:50.479885+00:00", "ended_at": "2026-01-02T03:04:05+00:00", "exc_info": "boom \u00e9"}"#
        );
        assert!(deliveries(&h, "tasks.ok", Event::Finished, None, ended).is_empty());
        // An abandoned job has no ended_at: RQ sends null.
        let d = deliveries(&h, "tasks.ok", Event::Failed, Some(""), None);
        assert!(String::from_utf8(d[0].body.clone())
            .unwrap()
            .contains(r#""ended_at": null"#));
    }
}
