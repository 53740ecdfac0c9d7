//! `runq`: the command-line client. Enqueues jobs and inspects jobs, queues and workers.
//! Every failure prints one line naming what went wrong and exits non-zero.

mod batch;
mod bench;
mod bench_locks;
mod control;
mod enqueue;
mod info;
mod job;
mod locks;
mod new_job;
mod prep;
mod redis_cost;
mod runstate;
mod tail;

pub use clap::{Parser, Subcommand};
use runq_common::Config;
use runq_enqueuer::{args, CliError};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "runq",
    version,
    about = "Enqueue and inspect RQ-compatible jobs"
)]
struct Cli {
    /// Configuration file (queues.toml). Without one, defaults apply.
    #[arg(long, short = 'c', env = "RUNQ_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// CA bundle (PEM) for `rediss://` connections; overrides `redis.ca_file` and
    /// `REDIS_CA_FILE`.
    #[arg(long, value_name = "FILE", global = true)]
    redis_ca_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Enqueue one job; prints the job id alone on the last line.
    Enqueue(Box<new_job::EnqueueArgs>),
    /// Show one job: status, origin, timestamps, worker, result or failure.
    Job(job::JobArgs),
    /// Queues with their counts and workers with their state, like `rq info`.
    Info(info::InfoArgs),
    /// Put failed jobs back on their queues.
    Requeue(control::RequeueArgs),
    /// Cancel a job that has not started.
    Cancel { id: String },
    /// Delete every waiting job of a queue.
    Empty { queue: String },
    /// Stop all workers from taking jobs (sets rq:suspended).
    Suspend {
        /// Resume automatically after this many seconds.
        #[arg(long)]
        duration: Option<u64>,
    },
    /// Undo `suspend`.
    Resume,
    /// Stop a running job (it ends `stopped`, in the failed registry).
    StopJob { id: String },
    /// Ask a worker (or all) to shut down warm.
    Shutdown {
        worker: Option<String>,
        #[arg(long)]
        all: bool,
    },
    /// Throughput benchmark: enqueue no-op jobs and run a burst worker over them.
    Bench(bench::BenchArgs),
    /// NoDb lock latency: acquire/release p50/p99 and renewal cost per held lock.
    BenchLocks(bench_locks::BenchLocksArgs),
    /// A run's NoDb locks: owner, age, TTL left; clear or force-unlock them.
    Locks(locks::LocksArgs),
    /// A run's RedisPrep hash, readable, with preflight's checklist.
    Prep(prep::PrepArgs),
    /// Follow a run's status lines (DB 2) live.
    Tail(tail::TailArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("runq: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(ca) = cli.redis_ca_file {
        config.redis.ca_file = Some(ca);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("runq: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Enqueue(a) => enqueue::run(&config, *a).await,
            Command::Job(a) => job::run(&config, a).await,
            Command::Info(a) => info::run(&config, a).await,
            Command::Bench(a) => bench::run(&config, a).await,
            Command::BenchLocks(a) => bench_locks::run(&config, a).await,
            Command::Locks(a) => locks::run(&config, a).await,
            Command::Prep(a) => prep::run(&config, a).await,
            Command::Tail(a) => tail::run(&config, a).await,
            Command::Requeue(a) => control::requeue(&config, a).await,
            Command::Cancel { id } => control::cancel(&config, &id).await,
            Command::Empty { queue } => control::empty(&config, &queue).await,
            Command::Suspend { duration } => control::suspend(&config, duration).await,
            Command::Resume => control::resume(&config).await,
            Command::StopJob { id } => control::stop_job(&config, &id).await,
            Command::Shutdown { worker, all } => {
                control::shutdown(&config, worker.as_deref(), all).await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Usage(m)) => {
            eprintln!("runq: {m}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("runq: {e}");
            ExitCode::from(1)
        }
    }
}

/// Connects to the RQ database, with a clear error when Redis does not answer.
pub async fn connect(config: &Config) -> Result<redis::aio::MultiplexedConnection, CliError> {
    Ok(runq_common::connect::ping(config, config.redis.db.rq).await?)
}
