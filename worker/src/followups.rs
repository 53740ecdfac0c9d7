//! What happens after a job's final state is saved, off the slot: webhooks for the state
//! RQ sends them for (`finished` on every successful run, repeats included; `failed` on a
//! terminal failure, not on a stop or a retry), and — for jobs maintenance failed as
//! abandoned — the failure callback RQ's cleanup runs (`AbandonedJobError`) and their
//! `failed` webhooks.

use crate::callbacks::{self, CallbackArgs, CallbackKind, Callbacks};
use crate::job::Job;
use crate::webhooks::{self, Event, Webhooks};
use runq_common::connect::SharedConnection;
use runq_common::job::JobHash;
use runq_common::scripts::complete::{Completion, Recorded};
use runq_common::{payload, Keys};

/// Webhooks and callbacks after the fact.
#[derive(Clone)]
pub struct Followups {
    pub webhooks: Webhooks,
    pub callbacks: Callbacks,
}

impl Followups {
    /// After a slot recorded `completion` as `recorded` at `ended_at` (the time the
    /// completion wrote into the job: RQ's payload carries the saved `ended_at`).
    pub fn after_completion(
        &self,
        job: &Job,
        completion: &Completion,
        recorded: Recorded,
        ended_at: Option<chrono::DateTime<chrono::Utc>>,
    ) {
        let (event, exc) = match (recorded, completion) {
            (
                Recorded::Finished
                | Recorded::Deleted
                | Recorded::Repeated
                | Recorded::RepeatScheduled,
                _,
            ) => (Event::Finished, None),
            (Recorded::Failed, Completion::Failure { text, .. }) => {
                (Event::Failed, Some(text.as_str()))
            }
            (Recorded::Failed, _) => (Event::Failed, Some("")),
            _ => return,
        };
        let func = job.func().unwrap_or("");
        let sends = webhooks::deliveries(&job.hash, func, event, exc, ended_at);
        self.webhooks.send(sends);
    }

    /// After maintenance failed `ids` as abandoned (or stuck): their failure callbacks
    /// (with RQ's `AbandonedJobError`) and `failed` webhooks, in a task of their own.
    pub fn after_abandoned(&self, redis: &SharedConnection, keys: &Keys, ids: Vec<String>) {
        if ids.is_empty() {
            return;
        }
        let (this, redis, keys) = (self.clone(), redis.clone(), keys.clone());
        tokio::spawn(async move {
            for id in ids {
                let read = async {
                    let mut conn = redis.get().await?;
                    let hash = runq_common::rq::fetch_job(&mut conn, &keys, &id).await?;
                    let result = runq_common::rq::latest_result(&mut conn, &keys, &id).await?;
                    Ok::<_, runq_common::Error>((hash, result))
                };
                match read.await {
                    Ok((Some(hash), result)) => {
                        let exc = result
                            .and_then(|r| r.fields.get("exc_string").cloned())
                            .and_then(|b| runq_common::results::decode_exc_string(&b))
                            .unwrap_or_default();
                        this.abandoned(&hash, &exc).await
                    }
                    Ok((None, _)) => {}
                    Err(e) => {
                        tracing::warn!(job = %id, error = %e, "cannot read an abandoned job for its callbacks and webhooks")
                    }
                }
            }
        });
    }

    async fn abandoned(&self, hash: &JobHash, exc: &str) {
        let decoded = hash
            .data()
            .ok()
            .and_then(|d| payload::inflate(d).ok())
            .and_then(|raw| payload::parse(&raw, true).ok());
        let (serializer, func) = match &decoded {
            Some((s, call)) => (*s, call.func_name.as_str()),
            None => (Default::default(), ""),
        };
        if let Some(wanted) = callbacks::wanted(hash, CallbackKind::Failure) {
            if let Err(e) = self
                .callbacks
                .run(hash, &wanted, serializer, CallbackArgs::abandoned())
                .await
            {
                tracing::warn!(job = %hash.id, error = %runq_common::echo::clip(&e.to_string(), 500), "the abandoned job's failure callback failed");
            }
        }
        // RQ's cleanup fails an abandoned job without an `ended_at`: the payload has null.
        let sends = webhooks::deliveries(hash, func, Event::Failed, Some(exc), None);
        self.webhooks.send(sends);
    }
}
