//! Operator commands that change job or worker state: requeue, cancel, empty,
//! suspend/resume, stop-job and shutdown. Each prints what it did and fails clearly on a
//! wrong id, queue or worker.

use crate::CliError;
use clap::Args;
use redis::AsyncCommands;
use runq_common::scripts::{cancel, empty, requeue};
use runq_common::{rq, Config};

#[derive(Args, Debug)]
pub struct RequeueArgs {
    /// Failed job ids to put back on their queues.
    pub ids: Vec<String>,
    /// Requeue every failed job of --queue.
    #[arg(long, requires = "queue")]
    pub all: bool,
    #[arg(long, short = 'q')]
    pub queue: Option<String>,
}

pub async fn requeue(config: &Config, a: RequeueArgs) -> Result<(), CliError> {
    let mut conn = crate::connect(config).await?;
    let keys = config.keys();
    let mut ids = a.ids.clone();
    if a.all {
        let q = a.queue.as_deref().unwrap_or("default");
        let failed: Vec<String> = conn.zrange(keys.failed(q), 0, -1).await?;
        if failed.is_empty() {
            println!("no failed jobs on queue {q}");
            return Ok(());
        }
        ids.extend(failed);
    }
    if ids.is_empty() {
        return Err(CliError::Usage("give job ids or --all --queue Q".into()));
    }
    let out = requeue::requeue(&mut conn, &keys, &ids).await?;
    let mut errors = 0;
    for (id, r) in ids.iter().zip(out) {
        match r {
            Ok(q) => println!("requeued {id} on queue {q}"),
            Err(why) => {
                errors += 1;
                eprintln!("runq: cannot requeue {id}: {why}");
            }
        }
    }
    if errors > 0 {
        return Err(CliError::Other(format!(
            "{errors} of {} jobs could not be requeued",
            ids.len()
        )));
    }
    Ok(())
}

pub async fn cancel(config: &Config, id: &str) -> Result<(), CliError> {
    let mut conn = crate::connect(config).await?;
    let previous = cancel::cancel(&mut conn, &config.keys(), id)
        .await
        .map_err(|e| CliError::Other(e.detail().unwrap_or(&e.to_string()).to_string()))?;
    println!("canceled {id} (was {previous})");
    Ok(())
}

pub async fn empty(config: &Config, queue: &str) -> Result<(), CliError> {
    let mut conn = crate::connect(config).await?;
    let keys = config.keys();
    let known = rq::all_queues(&mut conn, &keys).await?;
    if !known.iter().any(|q| q == queue) {
        return Err(CliError::Other(format!(
            "no such queue: {queue} (known: {})",
            known.join(", ")
        )));
    }
    let n = empty::empty(&mut conn, &keys, queue).await?;
    println!("emptied queue {queue}: {n} jobs removed");
    Ok(())
}

pub async fn suspend(config: &Config, duration: Option<u64>) -> Result<(), CliError> {
    let mut conn = crate::connect(config).await?;
    let key = config.keys().suspended();
    match duration {
        Some(d) => conn.set_ex::<_, _, ()>(&key, 1, d).await?,
        None => conn.set::<_, _, ()>(&key, 1).await?,
    }
    match duration {
        Some(d) => println!("suspended all workers for {d} s"),
        None => println!("suspended all workers (runq resume to undo)"),
    }
    Ok(())
}

pub async fn resume(config: &Config) -> Result<(), CliError> {
    let mut conn = crate::connect(config).await?;
    let n: i64 = conn.del(config.keys().suspended()).await?;
    println!(
        "{}",
        if n > 0 {
            "resumed all workers"
        } else {
            "workers were not suspended"
        }
    );
    Ok(())
}

/// Publishes an RQ command (JSON as Python's json.dumps writes it).
async fn publish(
    conn: &mut redis::aio::MultiplexedConnection,
    config: &Config,
    worker: &str,
    body: serde_json::Value,
) -> Result<i64, CliError> {
    let payload =
        runq_common::pyjson::to_string(&body).map_err(|e| CliError::Other(e.to_string()))?;
    Ok(conn.publish(config.keys().pubsub(worker), payload).await?)
}

pub async fn stop_job(config: &Config, id: &str) -> Result<(), CliError> {
    let mut conn = crate::connect(config).await?;
    let keys = config.keys();
    let job = rq::fetch_job(&mut conn, &keys, id)
        .await?
        .ok_or_else(|| CliError::Other(format!("no such job: {id}")))?;
    let status = job.text("status").ok().flatten().unwrap_or("").to_string();
    let worker = job
        .text("worker_name")
        .ok()
        .flatten()
        .unwrap_or("")
        .to_string();
    if status != "started" || worker.is_empty() {
        return Err(CliError::Other(format!(
            "job {id} is not running (status {status})"
        )));
    }
    publish(
        &mut conn,
        config,
        &worker,
        serde_json::json!({"command": "stop-job", "job_id": id}),
    )
    .await?;
    println!("sent stop-job for {id} to worker {worker}");
    Ok(())
}

pub async fn shutdown(config: &Config, worker: Option<&str>, all: bool) -> Result<(), CliError> {
    let mut conn = crate::connect(config).await?;
    let keys = config.keys();
    let live = rq::workers(&mut conn, &keys, None).await?;
    let targets: Vec<String> = match (worker, all) {
        (_, true) => live.iter().map(|w| w.name.clone()).collect(),
        (Some(w), false) => {
            if !live.iter().any(|l| l.name == w) {
                return Err(CliError::Other(format!("no live worker named {w}")));
            }
            vec![w.to_string()]
        }
        (None, false) => return Err(CliError::Usage("give a worker name or --all".into())),
    };
    for w in &targets {
        publish(
            &mut conn,
            config,
            w,
            serde_json::json!({"command": "shutdown"}),
        )
        .await?;
        println!("sent shutdown to {w}");
    }
    if targets.is_empty() {
        println!("no live workers");
    }
    Ok(())
}
