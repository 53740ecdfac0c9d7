//! RQ worker commands over pub/sub (`rq:pubsub:<worker>`): `shutdown` (warm shutdown of
//! the whole process), `kill-horse`, `stop-job` and `stop-execution`. One subscription
//! serves every slot; it resubscribes after a lost connection, and on the new master as
//! soon as the process switches to another one (Sentinel). A stop for a job its slot has
//! not installed yet (claimed a moment ago) is kept and applied when it is.

use crate::job::StopReason;
use crate::service::Service;
use crate::shutdown::Shutdown;
use crate::slots::Slots;
use futures_util::StreamExt;
use runq_common::config::Config;
use runq_common::connect::{master_generation, master_moved};
use runq_common::echo::clip;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

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

/// The command listener service.
pub struct Commands {
    pub config: Arc<Config>,
    pub slots: Arc<Slots>,
    /// Told once the first subscription is in place.
    pub subscribed: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Service for Commands {
    const NAME: &'static str = "commands";

    async fn run(mut self, shutdown: Shutdown) {
        let keys = self.config.keys();
        let channels: Vec<String> = self.slots.names.iter().map(|n| keys.pubsub(n)).collect();
        loop {
            let made = master_generation();
            let mut pubsub = match runq_common::connect::pubsub(
                &self.config,
                self.config.redis.db.rq,
            )
            .await
            {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot subscribe to worker command channels; retrying");
                    if !shutdown.sleep(Duration::from_secs(1)).await {
                        return;
                    }
                    continue;
                }
            };
            if let Err(e) = pubsub.subscribe(&channels).await {
                tracing::warn!(error = %e, "subscribe failed; retrying");
                if !shutdown.sleep(Duration::from_secs(1)).await {
                    return;
                }
                continue;
            }
            if let Some(tx) = self.subscribed.take() {
                let _ = tx.send(());
            }
            let mut messages = pubsub.on_message();
            let moved = loop {
                let msg = tokio::select! {
                    m = messages.next() => m,
                    _ = shutdown.exiting() => return,
                    _ = master_moved(made) => break true,
                };
                let Some(msg) = msg else { break false };
                let channel = msg.get_channel_name().to_string();
                let Some(slot) = channels.iter().position(|c| *c == channel) else {
                    continue;
                };
                match Command::parse(msg.get_payload_bytes()) {
                    Some(cmd) => handle(cmd, slot, &self.slots, &shutdown),
                    None => {
                        tracing::warn!(channel = %channel, "ignoring a command that is not RQ's JSON form")
                    }
                }
            };
            if moved {
                tracing::info!("subscribing to the worker command channels on the new master");
            } else {
                tracing::warn!("command subscription lost; resubscribing");
            }
        }
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
            if let Some(job) = slots.get(slot) {
                tracing::info!(worker = %worker, job = %job.id, "kill-horse command received");
                job.stop(StopReason::Killed);
            }
        }
        Command::StopJob { job_id } => {
            let job = clip(&job_id, 80);
            if slots.stop_job(&job_id, Some(slot), None, StopReason::Stopped) {
                tracing::info!(worker = %worker, job = %job, "stop-job command received");
            } else {
                tracing::info!(worker = %worker, job = %job, "stop-job command for a job this slot is not running; it applies if the job starts here within a minute");
            }
        }
        Command::StopExecution {
            job_id,
            execution_id,
        } => {
            let job = clip(&job_id, 80);
            if slots.stop_job(&job_id, None, Some(&execution_id), StopReason::Stopped) {
                tracing::info!(job = %job, execution = %clip(&execution_id, 80), "stop-execution command received");
            }
        }
        Command::Unknown(name) => {
            tracing::debug!(worker = %worker, command = %clip(&name, 80), "ignoring unknown command")
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
