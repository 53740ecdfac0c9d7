//! RQ worker commands over pub/sub (`rq:pubsub:<worker>`): `shutdown` (warm shutdown of
//! the whole process), `kill-horse`, `stop-job` and `stop-execution`. One subscription
//! serves every slot; it resubscribes after a lost connection.

use crate::shutdown::Shutdown;
use crate::slots::{Slots, StopReason};
use futures_util::StreamExt;
use runq_common::config::Config;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A parsed command, addressed to one slot.
#[derive(Debug, PartialEq)]
pub enum Command {
    Shutdown,
    KillHorse,
    StopJob {
        job_id: String,
    },
    StopExecution {
        job_id: String,
        execution_id: String,
    },
    Unknown(String),
}

impl Command {
    pub fn parse(payload: &[u8]) -> Option<Command> {
        let v: Value = serde_json::from_slice(payload).ok()?;
        let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        Some(match text("command")?.as_str() {
            "shutdown" => Command::Shutdown,
            "kill-horse" => Command::KillHorse,
            "stop-job" => Command::StopJob {
                job_id: text("job_id")?,
            },
            "stop-execution" => Command::StopExecution {
                job_id: text("job_id")?,
                execution_id: text("execution_id")?,
            },
            other => Command::Unknown(other.to_string()),
        })
    }
}

/// Listens until `stop` is cancelled.
pub async fn run(
    config: Arc<Config>,
    slots: Arc<Slots>,
    shutdown: Shutdown,
    stop: CancellationToken,
    subscribed: tokio::sync::oneshot::Sender<()>,
) {
    let keys = config.keys();
    let channels: Vec<String> = slots.names.iter().map(|n| keys.pubsub(n)).collect();
    let mut subscribed = Some(subscribed);
    loop {
        let mut pubsub = match runq_common::connect::pubsub(&config, config.redis.db.rq).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "cannot subscribe to worker command channels; retrying");
                tokio::select! { _ = tokio::time::sleep(Duration::from_secs(1)) => continue, _ = stop.cancelled() => return }
            }
        };
        if let Err(e) = pubsub.subscribe(&channels).await {
            tracing::warn!(error = %e, "subscribe failed; retrying");
            continue;
        }
        if let Some(tx) = subscribed.take() {
            let _ = tx.send(());
        }
        let mut messages = pubsub.on_message();
        loop {
            let msg = tokio::select! {
                m = messages.next() => m,
                _ = stop.cancelled() => return,
            };
            let Some(msg) = msg else { break };
            let channel = msg.get_channel_name().to_string();
            let Some(slot) = slots.names.iter().position(|n| keys.pubsub(n) == channel) else {
                continue;
            };
            match Command::parse(msg.get_payload_bytes()) {
                Some(cmd) => handle(cmd, slot, &slots, &shutdown),
                None => {
                    tracing::warn!(channel = %channel, "ignoring a command that is not RQ's JSON form")
                }
            }
        }
        tracing::warn!("command subscription lost; resubscribing");
    }
}

fn handle(cmd: Command, slot: usize, slots: &Slots, shutdown: &Shutdown) {
    let worker = &slots.names[slot];
    match cmd {
        Command::Shutdown => {
            tracing::info!(worker = %worker, "shutdown command received; warm shutdown");
            shutdown.begin_warm();
        }
        Command::KillHorse => {
            if let Some(r) = slots.get(slot) {
                tracing::info!(worker = %worker, job = %r.id, "kill-horse command received");
                r.stop(StopReason::Killed);
            }
        }
        Command::StopJob { job_id } => {
            if let Some(r) = slots.get(slot).filter(|r| r.id == job_id) {
                tracing::info!(worker = %worker, job = %job_id, "stop-job command received");
                r.stop(StopReason::Stopped);
            }
        }
        Command::StopExecution {
            job_id,
            execution_id,
        } => {
            if slots.stop_job(&job_id, Some(&execution_id), StopReason::Stopped) {
                tracing::info!(job = %job_id, execution = %execution_id, "stop-execution command received");
            }
        }
        Command::Unknown(name) => {
            tracing::debug!(worker = %worker, command = %name, "ignoring unknown command")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rq_commands() {
        assert_eq!(
            Command::parse(br#"{"command": "shutdown"}"#),
            Some(Command::Shutdown)
        );
        assert_eq!(
            Command::parse(br#"{"command": "stop-job", "job_id": "j"}"#),
            Some(Command::StopJob { job_id: "j".into() })
        );
        assert_eq!(Command::parse(b"nope"), None);
    }
}
