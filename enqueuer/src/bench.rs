//! `runq bench`: enqueues N no-op jobs on a fresh queue (pipelined), runs
//! `runq-worker --burst` over them and reports jobs per second for the worker run alone,
//! and what it cost Redis: commands and server CPU per job ([`crate::redis_cost`]), for
//! the enqueue and for the worker run.

use crate::redis_cost::{Cost, Snapshot};
use crate::CliError;
use clap::Args;
use runq_common::payload::JobCall;
use runq_common::rq::{self, NewJob};
use runq_common::{Config, SerializerKind};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[arg(long, default_value_t = 10_000)]
    pub jobs: usize,
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Queue to use (emptied first).
    #[arg(long, default_value = "runq-bench")]
    pub queue: String,
    /// Serializer of the enqueued jobs.
    #[arg(long, default_value = "pickle")]
    pub serializer: String,
    /// Only enqueue; do not run a worker (to measure another worker on the same jobs).
    #[arg(long)]
    pub enqueue_only: bool,
    /// Path of runq-worker (default: next to this binary).
    #[arg(long)]
    pub worker_bin: Option<PathBuf>,
}

/// Jobs per enqueue call of the benchmark.
const BENCH_CHUNK: usize = 2_000;

/// One benchmark job: `runq.tasks.noop()`, results kept 10 minutes.
fn noop_job(queue: &str, serializer: SerializerKind) -> NewJob {
    let mut j = NewJob::new(
        queue,
        JobCall {
            func_name: "runq.tasks.noop".into(),
            args: vec![],
            kwargs: Default::default(),
        },
        serializer,
    );
    j.result_ttl = Some(600);
    j
}

pub async fn run(config: &Config, a: BenchArgs) -> Result<(), CliError> {
    let serializer: SerializerKind = a.serializer.parse().map_err(CliError::Usage)?;
    let mut conn = crate::connect(config).await?;
    let keys = config.keys();
    redis::cmd("DEL")
        .arg(keys.queue(&a.queue))
        .arg(keys.finished(&a.queue))
        .arg(keys.failed(&a.queue))
        .query_async::<()>(&mut conn)
        .await?;
    let before_enqueue = Snapshot::take(&mut conn).await?;
    let t0 = Instant::now();
    // Two chunks in flight: one is built (pickled, compressed) while Redis runs the other.
    let mut in_flight: std::collections::VecDeque<tokio::task::JoinHandle<_>> = Default::default();
    let mut enqueued = 0;
    let mut start = 0;
    while start < a.jobs || !in_flight.is_empty() {
        if start < a.jobs && in_flight.len() < 4 {
            let n = BENCH_CHUNK.min(a.jobs - start);
            start += n;
            let (mut conn, keys, queue) = (conn.clone(), keys.clone(), a.queue.clone());
            in_flight.push_back(tokio::spawn(async move {
                let jobs: Vec<NewJob> = (0..n).map(|_| noop_job(&queue, serializer)).collect();
                rq::enqueue_many(&mut conn, &keys, &jobs).await
            }));
            continue;
        }
        let Some(next) = in_flight.pop_front() else {
            break;
        };
        let results = next
            .await
            .map_err(|e| CliError::Other(format!("enqueue task failed: {e}")))??;
        for r in results {
            r.map_err(CliError::Other)?;
            enqueued += 1;
        }
    }
    let enqueue_secs = t0.elapsed().as_secs_f64();
    let after_enqueue = Snapshot::take(&mut conn).await?;
    println!(
        "enqueued {enqueued} jobs in {enqueue_secs:.2} s ({:.0} jobs/s); enqueue cost: {}",
        enqueued as f64 / enqueue_secs,
        Cost::between(&before_enqueue, &after_enqueue, enqueued as u64).line()
    );
    if a.enqueue_only {
        return Ok(());
    }
    let bin = match &a.worker_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()
            .map_err(|e| CliError::Other(e.to_string()))?
            .with_file_name("runq-worker"),
    };
    let mut cmd = std::process::Command::new(&bin);
    cmd.args([
        "--burst",
        "--queues",
        &a.queue,
        "--concurrency",
        &a.concurrency.to_string(),
        "--name",
        &format!("bench-{}", std::process::id()),
    ]);
    if let Some(c) = &config.source {
        cmd.arg("--config").arg(c);
    }
    cmd.env("RUST_LOG", "warn");
    let before_run = Snapshot::take(&mut conn).await?;
    let t1 = Instant::now();
    let status = cmd
        .status()
        .map_err(|e| CliError::Other(format!("cannot run {}: {e}", bin.display())))?;
    let secs = t1.elapsed().as_secs_f64();
    if !status.success() {
        return Err(CliError::Other(format!("runq-worker exited with {status}")));
    }
    let after_run = Snapshot::take(&mut conn).await?;
    let finished: u64 = redis::cmd("ZCARD")
        .arg(keys.finished(&a.queue))
        .query_async(&mut conn)
        .await?;
    println!(
        "worker cost: {}",
        Cost::between(&before_run, &after_run, finished).line()
    );
    println!(
        "runq-worker --burst --concurrency {}: {finished} jobs finished in {secs:.2} s = {:.0} jobs/s",
        a.concurrency,
        finished as f64 / secs
    );
    Ok(())
}
