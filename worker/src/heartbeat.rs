//! Batched heartbeats: one script call per interval keeps every slot's worker key and
//! every running job's started-registry deadline alive. Executions whose registry entry
//! vanished are cancelled (someone else now owns the job); slots whose worker key
//! vanished are registered again.

use crate::registration::{self, Identity};
use crate::slots::{Slots, StopReason};
use runq_common::config::Config;
use runq_common::connect::SharedConnection;
use runq_common::scripts::scripts;
use runq_common::timefmt::Stamp;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Beats until `stop` is cancelled.
pub async fn run(
    config: Arc<Config>,
    redis: SharedConnection,
    slots: Arc<Slots>,
    identity: Identity,
    stop: CancellationToken,
) {
    let period = Duration::from_secs(config.worker.heartbeat_secs);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = stop.cancelled() => return,
        }
        if let Err(e) = beat(&config, &redis, &slots, &identity).await {
            tracing::warn!(error = %e, "heartbeat failed; will retry");
            redis.reset().await;
        }
    }
}

/// One heartbeat for all slots.
pub async fn beat(
    config: &Config,
    redis: &SharedConnection,
    slots: &Slots,
    identity: &Identity,
) -> runq_common::Result<()> {
    let keys = config.keys();
    let ttl = config.worker.heartbeat_secs * 3;
    let now = Stamp::now();
    let running = slots.running();
    let mut inv = scripts().heartbeat.prepare_invoke();
    inv.arg(keys.prefix())
        .arg(&now.text)
        .arg(&now.epoch_text)
        .arg(now.secs + ttl as i64)
        .arg(ttl)
        .arg(slots.len());
    for n in &slots.names {
        inv.arg(n);
    }
    inv.arg(running.len());
    for (_, r) in &running {
        inv.arg(&r.id).arg(&r.exec_id).arg(&r.origin);
    }
    let mut conn = redis.get().await?;
    let (missing, lost): (Vec<String>, Vec<String>) = inv.invoke_async(&mut conn).await?;
    for member in lost {
        if let Some((_, r)) = running.iter().find(|(_, r)| r.member() == member) {
            tracing::warn!(job = %r.id, "the job's started-registry entry is gone; cancelling it here");
            r.stop(StopReason::Lost);
        }
    }
    if !missing.is_empty() {
        tracing::warn!(workers = ?missing, "worker keys expired (Redis was unreachable?); registering again");
        registration::register(&mut conn, &keys, &missing, identity, ttl).await?;
        let busy: Vec<String> = running
            .iter()
            .map(|(i, _)| slots.names[*i].clone())
            .filter(|n| missing.contains(n))
            .collect();
        registration::set_state(&mut conn, &keys, &busy, "busy").await?;
    }
    Ok(())
}
