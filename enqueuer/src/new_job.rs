//! The `runq enqueue` options ([`EnqueueArgs`], shared by the command line and each line
//! of `--file`) and how they become an RQ job ([`build`]), validated as workers will.

use crate::args;
use crate::CliError;
use clap::Args;
use runq_common::job::validate_job_id;
use runq_common::payload::JobCall;
use runq_common::rq::NewJob;
use runq_common::{Config, SerializerKind};
use serde_json::{Map, Value};

#[derive(Args, Debug)]
pub struct EnqueueArgs {
    /// Dotted function name, e.g. `runq.tasks.echo` or `mymod.add`.
    #[arg(required_unless_present = "file")]
    pub func: Option<String>,
    /// Enqueue one job per line of this JSON Lines file (`-` = stdin); see `batch`.
    #[arg(long, conflicts_with = "func")]
    pub file: Option<std::path::PathBuf>,
    /// With --file: enqueue nothing if any line is bad.
    #[arg(long, requires = "file")]
    pub strict: bool,
    /// Positional arguments, each parsed as JSON (a bare word is a string).
    #[arg(allow_negative_numbers = true)]
    pub args: Vec<String>,
    /// Keyword argument KEY=JSON (repeatable).
    #[arg(long = "kwarg", short = 'k')]
    pub kwargs: Vec<String>,
    #[arg(long, short = 'q', default_value = "default")]
    pub queue: String,
    /// Custom job id ([A-Za-z0-9_-]+).
    #[arg(long)]
    pub job_id: Option<String>,
    /// Seconds or 30s/15m/12h; -1 = no limit.
    #[arg(long, allow_negative_numbers = true)]
    pub timeout: Option<String>,
    #[arg(long, allow_negative_numbers = true)]
    pub result_ttl: Option<i64>,
    #[arg(long, allow_negative_numbers = true)]
    pub failure_ttl: Option<i64>,
    /// Lifetime of the job key while it waits.
    #[arg(long)]
    pub ttl: Option<String>,
    #[arg(long)]
    pub description: Option<String>,
    /// Job meta as a JSON object.
    #[arg(long)]
    pub meta: Option<String>,
    #[arg(long)]
    pub at_front: bool,
    /// pickle, json or msgpack (default: the queue's configured serializer).
    #[arg(long, short = 's')]
    pub serializer: Option<String>,
    /// Retry a failed job up to N times.
    #[arg(long)]
    pub retry: Option<i64>,
    /// Seconds between retries, comma-separated (e.g. 10,30,60).
    #[arg(long, value_delimiter = ',')]
    pub retry_intervals: Vec<i64>,
    /// Run only after this job finished (repeatable).
    #[arg(long)]
    pub depends_on: Vec<String>,
    /// Dependencies that failed count as met.
    #[arg(long)]
    pub allow_dependency_failures: bool,
    /// Enqueue at this time (RFC 3339 or epoch seconds).
    #[arg(long, conflicts_with = "in_")]
    pub at: Option<String>,
    /// Enqueue after this delay (e.g. 90s, 5m).
    #[arg(long = "in", id = "in_")]
    pub in_: Option<String>,
}

/// Builds the job the arguments describe.
pub fn build(config: &Config, a: &EnqueueArgs) -> Result<NewJob, CliError> {
    let serializer = match &a.serializer {
        Some(s) => s.parse::<SerializerKind>().map_err(CliError::Usage)?,
        None => config.serializer_for(&a.queue),
    };
    let mut kwargs = Map::new();
    for kv in &a.kwargs {
        let (k, v) = args::kwarg(kv)?;
        kwargs.insert(k, v);
    }
    let func = a.func.clone().unwrap_or_default();
    let call = JobCall {
        func_name: func.clone(),
        args: a.args.iter().map(|s| args::json_or_string(s)).collect(),
        kwargs,
    };
    if func.is_empty() || func.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err(CliError::Usage(format!(
            "function name `{}` is not a dotted name",
            runq_common::echo::clip(&func, 80)
        )));
    }
    if !runq_common::config::valid_queue_name(&a.queue) {
        return Err(CliError::Usage(format!(
            "--queue `{}`: a queue name may only hold [A-Za-z0-9_.-]",
            runq_common::echo::clip(&a.queue, 80)
        )));
    }
    let mut job = NewJob::new(&a.queue, call, serializer);
    if let Some(id) = &a.job_id {
        validate_job_id(id).map_err(|e| CliError::Usage(e.to_string()))?;
        job.id = id.clone();
    }
    if let Some(t) = &a.timeout {
        let t = args::seconds("--timeout", t)?;
        if t == 0 {
            return Err(CliError::Usage(
                "--timeout 0 is refused (use -1 for no limit)".into(),
            ));
        }
        job.timeout = Some(t);
    }
    job.result_ttl = a.result_ttl;
    job.failure_ttl = a.failure_ttl;
    if let Some(t) = &a.ttl {
        job.ttl = Some(args::seconds("--ttl", t)?);
    }
    job.description = a.description.clone();
    if let Some(m) = &a.meta {
        let v: Value = serde_json::from_str(m)
            .map_err(|e| CliError::Usage(format!("--meta: not JSON: {e}")))?;
        if !v.is_object() {
            return Err(CliError::Usage("--meta must be a JSON object".into()));
        }
        job.meta = Some(v);
    }
    job.at_front = a.at_front;
    if let Some(n) = a.retry {
        if n < 1 {
            return Err(CliError::Usage("--retry must be at least 1".into()));
        }
        job.retry = Some((n, a.retry_intervals.clone()));
    } else if !a.retry_intervals.is_empty() {
        return Err(CliError::Usage("--retry-intervals needs --retry N".into()));
    }
    for d in &a.depends_on {
        validate_job_id(d).map_err(|e| CliError::Usage(format!("--depends-on: {e}")))?;
    }
    job.depends_on = a.depends_on.clone();
    job.allow_dependency_failures = a.allow_dependency_failures;
    if (a.at.is_some() || a.in_.is_some()) && !a.depends_on.is_empty() {
        return Err(CliError::Usage(
            "--at/--in cannot be combined with --depends-on (a job waits for its time or for its dependencies, not both)".into(),
        ));
    }
    if let Some(at) = &a.at {
        job.schedule_at = Some(args::at_time(at)?);
    }
    if let Some(delay) = &a.in_ {
        // Relative to Redis's clock (filled in by the enqueue, not this host's clock).
        job.schedule_in = Some(args::seconds("--in", delay)?);
    }
    Ok(job)
}
