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
    let mut enqueued = 0;
    for chunk in (0..a.jobs).collect::<Vec<_>>().chunks(1000) {
        let jobs: Vec<NewJob> = chunk
            .iter()
            .map(|_| {
                let mut j = NewJob::new(
                    &a.queue,
                    JobCall {
                        func_name: "runq.tasks.noop".into(),
                        args: vec![],
                        kwargs: Default::default(),
                    },
                    serializer,
                );
                j.result_ttl = Some(600);
                j
            })
            .collect();
        for r in rq::enqueue_many(&mut conn, &keys, &jobs).await? {
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
