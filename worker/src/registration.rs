//! Each slot's RQ worker record: birth (worker hash, `rq:workers`, `rq:workers:<q>`),
//! state changes and death, written as RQ writes them so `rq info` and `Worker.all()`
//! see runq's slots.

use redis::aio::ConnectionLike;
use runq_common::timefmt::Stamp;
use runq_common::worker_state::WorkerState;
use runq_common::Keys;

/// What every slot of this process reports about itself.
#[derive(Debug, Clone)]
pub struct Identity {
    pub hostname: String,
    pub pid: u32,
    pub ip_address: String,
    pub queues: Vec<String>,
}

impl Identity {
    pub async fn discover<C: ConnectionLike + Send>(conn: &mut C, queues: Vec<String>) -> Identity {
        let info: Option<String> = redis::cmd("CLIENT")
            .arg("INFO")
            .query_async(conn)
            .await
            .ok();
        let ip_address = info
            .as_deref()
            .and_then(|i| {
                i.split_whitespace()
                    .find_map(|kv| kv.strip_prefix("laddr=").or(kv.strip_prefix("addr=")))
            })
            .map(|s| s.to_string())
            .unwrap_or_else(|| "unknown".into());
        Identity {
            hostname: gethostname(),
            pid: std::process::id(),
            ip_address,
            queues,
        }
    }
}

fn gethostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// A name is taken when its worker key exists without a `death` field.
pub async fn taken_names<C: ConnectionLike + Send>(
    conn: &mut C,
    keys: &Keys,
    names: &[String],
) -> redis::RedisResult<Vec<String>> {
    let mut pipe = redis::pipe();
    for n in names {
        pipe.exists(keys.worker(n)).hexists(keys.worker(n), "death");
    }
    let flags: Vec<bool> = pipe.query_async(conn).await?;
    Ok(names
        .iter()
        .zip(flags.chunks(2))
        .filter(|(_, f)| f[0] && !f[1])
        .map(|(n, _)| n.clone())
        .collect())
}

/// One transaction with `write(pipe, name, worker key)` for each named slot.
fn per_slot(
    keys: &Keys,
    names: &[String],
    mut write: impl FnMut(&mut redis::Pipeline, &str, &str),
) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    pipe.atomic();
    for n in names {
        write(&mut pipe, n, &keys.worker(n));
    }
    pipe
}

/// Registers the named slots in one transaction.
pub async fn register<C: ConnectionLike + Send>(
    conn: &mut C,
    keys: &Keys,
    names: &[String],
    id: &Identity,
    ttl: u64,
) -> redis::RedisResult<()> {
    let now = Stamp::now();
    let pipe = per_slot(keys, names, |pipe, _, wk| {
        pipe.del(wk).ignore();
        pipe.hset_multiple(
            wk,
            &[
                ("birth", now.text.as_str()),
                ("last_heartbeat", now.text.as_str()),
                ("queues", &id.queues.join(",")),
                ("pid", &id.pid.to_string()),
                ("hostname", &id.hostname),
                ("ip_address", &id.ip_address),
                ("version", concat!("runq-", env!("CARGO_PKG_VERSION"))),
                ("python_version", "runq-worker (Rust); no Python"),
                ("state", WorkerState::Idle.as_str()),
                ("successful_job_count", "0"),
                ("failed_job_count", "0"),
                ("total_working_time", "0"),
            ],
        )
        .ignore();
        pipe.sadd(keys.workers(), wk).ignore();
        for q in &id.queues {
            pipe.sadd(keys.queue_workers(q), wk).ignore();
        }
        pipe.expire(wk, ttl as i64).ignore();
    });
    pipe.query_async(conn).await
}

/// Sets `state` on every named slot.
pub async fn set_state<C: ConnectionLike + Send>(
    conn: &mut C,
    keys: &Keys,
    names: &[String],
    state: WorkerState,
) -> redis::RedisResult<()> {
    let mut pipe = redis::pipe();
    for n in names {
        pipe.hset(keys.worker(n), "state", state.as_str()).ignore();
    }
    pipe.query_async(conn).await
}

/// Records `shutdown_requested_date` on the named slots (RQ does it for busy workers).
pub async fn mark_shutdown_requested<C: ConnectionLike + Send>(
    conn: &mut C,
    keys: &Keys,
    names: &[String],
) -> redis::RedisResult<()> {
    let now = Stamp::now();
    let mut pipe = redis::pipe();
    for n in names {
        pipe.hset(keys.worker(n), "shutdown_requested_date", &now.text)
            .ignore();
    }
    pipe.query_async(conn).await
}

/// Death: out of the sets, `death` stamped, key kept 60 s, executions set removed.
pub async fn deregister<C: ConnectionLike + Send>(
    conn: &mut C,
    keys: &Keys,
    names: &[String],
    queues: &[String],
) -> redis::RedisResult<()> {
    let now = Stamp::now();
    let pipe = per_slot(keys, names, |pipe, n, wk| {
        pipe.srem(keys.workers(), wk).ignore();
        for q in queues {
            pipe.srem(keys.queue_workers(q), wk).ignore();
        }
        pipe.hset(wk, "death", &now.text).ignore();
        pipe.expire(wk, 60).ignore();
        pipe.del(keys.worker_executions(n)).ignore();
    });
    pipe.query_async(conn).await
}
