//! `runq-worker`: the daemon. Parses the command line, loads the configuration and hands
//! over to the launcher. Exits 0 after a clean (warm, cold or burst) stop, 1 when it
//! cannot start.

use clap::Parser;
use runq_common::Config;
use runq_worker::{Registry, WorkerOptions};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "runq-worker",
    version,
    about = "Runs RQ jobs from Redis with native and exec task handlers"
)]
struct Args {
    /// Configuration file (queues.toml). Without one, defaults apply.
    #[arg(long, short = 'c', env = "RUNQ_CONFIG")]
    config: Option<PathBuf>,
    /// Queues to listen on, in priority order (comma-separated).
    #[arg(long, short = 'q', value_delimiter = ',')]
    queues: Option<Vec<String>>,
    /// Execution slots in this process (each is one RQ worker).
    #[arg(long, short = 'n')]
    concurrency: Option<usize>,
    /// Exit once the queues are empty.
    #[arg(long, short = 'b')]
    burst: bool,
    /// Worker name (slots get `-<n>` suffixes when there are several).
    #[arg(long)]
    name: Option<String>,
    /// Log format: text or json.
    #[arg(long)]
    log_format: Option<String>,
    /// Serve Prometheus metrics on HOST:PORT (`/metrics`, `/healthz`); overrides
    /// `worker.metrics_addr`.
    #[arg(long, value_name = "HOST:PORT")]
    metrics_addr: Option<String>,
    /// CA bundle (PEM) for `rediss://` connections; overrides `redis.ca_file` and
    /// `REDIS_CA_FILE`.
    #[arg(long, value_name = "FILE")]
    redis_ca_file: Option<PathBuf>,
    /// Debug logging.
    #[arg(long, short = 'v')]
    verbose: bool,
    /// Queue positional arguments, as `rq worker high default low`.
    #[arg(value_name = "QUEUE")]
    positional_queues: Vec<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut config = match Config::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("runq-worker: {e}");
            return ExitCode::from(1);
        }
    };
    if let Some(f) = &args.log_format {
        config.worker.log_format = f.clone();
    }
    if let Some(a) = &args.metrics_addr {
        config.worker.metrics_addr = a.clone();
    }
    if let Some(ca) = &args.redis_ca_file {
        config.redis.ca_file = Some(ca.clone());
    }
    if let Err(e) = config.validate() {
        eprintln!("runq-worker: {e}");
        return ExitCode::from(1);
    }
    runq_worker::logging::init(config.worker.log_format == "json", args.verbose);
    let queues = args
        .queues
        .or_else(|| (!args.positional_queues.is_empty()).then_some(args.positional_queues));
    let opts = WorkerOptions {
        queues,
        concurrency: args.concurrency,
        burst: args.burst,
        name: args.name,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("runq-worker: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(runq_worker::run(config, opts, Registry::with_builtins()));
    // Dropping the runtime drops anything still running; a process child dropped that
    // way has its group SIGKILLed at once.
    drop(runtime);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(runq_worker::launcher::LaunchError::StoppedWhileWaiting) => {
            eprintln!("runq-worker: stopped by a signal while waiting for Redis");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("runq-worker: {e}");
            ExitCode::from(1)
        }
    }
}
