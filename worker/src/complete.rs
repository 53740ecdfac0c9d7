//! Recording a job's [`Completion`] with the completion script
//! ([`runq_common::scripts::complete`]). Redis errors are retried with backoff; until the
//! record lands the job stays in the started registry, where recovery can find it.

use crate::job::Job;
use crate::shutdown::Shutdown;
use runq_common::config::Config;
use runq_common::connect::SharedConnection;
use runq_common::scripts::complete::{self, Completion, Defaults, Execution, Recorded};
use std::time::Duration;

/// Writes `completion` for `job`; returns what the script recorded, or `None` when it
/// gave up (only during a cold shutdown, after five attempts).
pub async fn record(
    redis: &SharedConnection,
    config: &Config,
    job: &Job,
    completion: &Completion,
    shutdown: &Shutdown,
) -> Option<Recorded> {
    let keys = config.keys();
    let exec = Execution {
        id: &job.id,
        exec_id: &job.exec_id,
        worker: &job.worker,
        origin: &job.origin,
        started: &job.started,
    };
    let defaults = Defaults {
        result_ttl: config.worker.result_ttl,
        failure_ttl: config.worker.failure_ttl,
    };
    let mut backoff = Duration::from_millis(100);
    let mut attempts = 0;
    loop {
        let result = match redis.get().await {
            Ok(mut conn) => complete::complete(&mut conn, &keys, &exec, completion, defaults)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok(done) => return Some(done),
            Err(e) => {
                redis.reset().await;
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
