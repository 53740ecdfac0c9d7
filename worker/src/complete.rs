//! Recording an execution's outcome with the completion script: one atomic round trip
//! for status, result, registries, TTLs, worker counters, retries and dependents.
//! Redis errors are retried with backoff; until the record lands the job stays in the
//! started registry, where recovery can find it.

use crate::execute::Outcome;
use crate::fetch::Claimed;
use crate::shutdown::Shutdown;
use runq_common::config::Config;
use runq_common::connect::SharedConnection;
use runq_common::results;
use runq_common::scripts::scripts;
use runq_common::timefmt::Stamp;
use std::time::Duration;

/// Writes the outcome; returns what the script did (`finished`, `failed`, `retried`…).
pub async fn record(
    redis: &SharedConnection,
    config: &Config,
    job: &Claimed,
    worker: &str,
    outcome: &Outcome,
    shutdown: &Shutdown,
) -> Option<String> {
    let (kind, payload) = match outcome {
        Outcome::Success { return_value } => ("ok", return_value.clone()),
        Outcome::Failure { text, retry: true } => ("fail", results::encode_exc_string(text)),
        Outcome::Failure { text, retry: false } => ("fail_final", results::encode_exc_string(text)),
        Outcome::Stopped => (
            "stop",
            results::encode_exc_string("Job stopped by user, work-horse terminated."),
        ),
        Outcome::Requeue => ("requeue", String::new()),
        Outcome::Lost => ("lost", String::new()),
    };
    let keys = config.keys();
    let mut backoff = Duration::from_millis(100);
    let mut attempts = 0;
    loop {
        let now = Stamp::now();
        let working = (now.at - job.started.at).num_microseconds().unwrap_or(0) as f64 / 1e6;
        let mut inv = scripts().complete.prepare_invoke();
        inv.arg(keys.prefix())
            .arg(&now.text)
            .arg(&now.epoch_text)
            .arg(now.secs)
            .arg(&job.id)
            .arg(&job.exec_id)
            .arg(worker)
            .arg(&job.origin)
            .arg(kind)
            .arg(&payload)
            .arg(&job.started.epoch_text)
            .arg(format!("{working}"))
            .arg(config.worker.result_ttl)
            .arg(config.worker.failure_ttl);
        let result = match redis.get().await {
            Ok(mut conn) => inv
                .invoke_async::<String>(&mut conn)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if result.is_err() {
            redis.reset().await;
        }
        match result {
            Ok(done) => return Some(done),
            Err(e) => {
                attempts += 1;
                if shutdown.is_cold() && attempts >= 5 {
                    tracing::error!(job = %job.id, error = %e, "giving up recording the outcome during shutdown; the job stays in the started registry for recovery");
                    return None;
                }
                tracing::warn!(job = %job.id, error = %e, "recording the outcome failed; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}
