//! `runq enqueue --file jobs.jsonl`: one job per line, with the same options as the
//! command line as JSON keys, e.g.
//! `{"func": "runq.tasks.echo", "args": [1, "x"], "kwargs": {"k": 2}, "queue": "high", "timeout": "30s"}`.
//! Jobs are pipelined in chunks; a progress bar shows on a terminal, a summary line
//! otherwise. A bad line is reported with its line number and does not stop the others,
//! unless `--strict`, which enqueues nothing when any line is bad.

use crate::new_job::{build, EnqueueArgs};
use crate::CliError;
use runq_common::nodb::enqueued::PrepWrite;
use runq_common::rq::{self, NewJob};
use runq_common::Config;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::io::{BufRead, IsTerminal};
use std::path::Path;
use std::time::Instant;

const CHUNK: usize = 2000;

/// One line of the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    func: String,
    #[serde(default)]
    args: Vec<Value>,
    #[serde(default)]
    kwargs: Map<String, Value>,
    queue: Option<String>,
    job_id: Option<String>,
    timeout: Option<Value>,
    result_ttl: Option<i64>,
    failure_ttl: Option<i64>,
    ttl: Option<Value>,
    description: Option<String>,
    meta: Option<Value>,
    #[serde(default)]
    at_front: bool,
    serializer: Option<String>,
    retry: Option<i64>,
    #[serde(default)]
    retry_intervals: Vec<i64>,
    #[serde(default)]
    depends_on: Vec<String>,
    #[serde(default)]
    allow_dependency_failures: bool,
    at: Option<Value>,
    #[serde(rename = "in")]
    in_: Option<Value>,
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl Line {
    fn into_args(self) -> EnqueueArgs {
        EnqueueArgs {
            func: Some(self.func),
            file: None,
            strict: false,
            args: self
                .args
                .iter()
                .map(|v| serde_json::to_string(v).unwrap_or_default())
                .collect(),
            kwargs: self
                .kwargs
                .iter()
                .map(|(k, v)| format!("{k}={}", serde_json::to_string(v).unwrap_or_default()))
                .collect(),
            queue: self.queue.unwrap_or_else(|| "default".into()),
            job_id: self.job_id,
            timeout: self.timeout.as_ref().map(text),
            result_ttl: self.result_ttl,
            failure_ttl: self.failure_ttl,
            ttl: self.ttl.as_ref().map(text),
            description: self.description,
            meta: self.meta.map(|m| m.to_string()),
            at_front: self.at_front,
            serializer: self.serializer,
            retry: self.retry,
            retry_intervals: self.retry_intervals,
            depends_on: self.depends_on,
            allow_dependency_failures: self.allow_dependency_failures,
            at: self.at.as_ref().map(text),
            in_: self.in_.as_ref().map(text),
        }
    }
}

/// Parses one line into a job; errors are one line of text.
fn parse_line(config: &Config, line: &str) -> Result<NewJob, String> {
    let parsed: Line = serde_json::from_str(line).map_err(|e| e.to_string())?;
    build(config, &parsed.into_args()).map_err(|e| e.to_string())
}

pub async fn run(config: &Config, path: &Path, strict: bool) -> Result<(), CliError> {
    let name = if path == Path::new("-") {
        "stdin".to_string()
    } else {
        path.display().to_string()
    };
    let reader: Box<dyn BufRead> = if path == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        let f = std::fs::File::open(path)
            .map_err(|e| CliError::Other(format!("cannot read {name}: {e}")))?;
        Box::new(std::io::BufReader::new(f))
    };
    let mut jobs: Vec<(usize, NewJob)> = Vec::new();
    let mut bad = 0usize;
    for (i, line) in reader.lines().enumerate() {
        let n = i + 1;
        let line = line.map_err(|e| CliError::Other(format!("{name}:{n}: cannot read: {e}")))?;
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        match parse_line(config, &line) {
            Ok(job) => jobs.push((n, job)),
            Err(e) => {
                bad += 1;
                eprintln!("runq: {name}:{n}: {e}");
            }
        }
    }
    if strict && bad > 0 {
        return Err(CliError::Other(format!(
            "{bad} bad lines in {name}; --strict: nothing enqueued"
        )));
    }
    let conn = crate::connect(config).await?;
    let keys = config.keys();
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = indicatif::ProgressBar::new(jobs.len() as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} jobs {per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let start = Instant::now();
    let mut tally = Tally::default();
    let mut prep = crate::runstate::Prep::new(config);
    // One chunk in Redis while the next is built (pickled, compressed): a chunk is sent
    // only once the one before it has been answered, so the queues get the file's order
    // and a job may depend on one from an earlier chunk.
    let mut in_flight: Option<InFlight> = None;
    for (index, chunk) in jobs.chunks(CHUNK).enumerate() {
        let batch: Vec<NewJob> = chunk.iter().map(|(_, j)| j.clone()).collect();
        let prepared = rq::prepare_enqueue(&keys, &batch);
        let writes = prep.writes(&batch);
        if let Some(prev) = in_flight.take() {
            tally
                .settle(prev, &jobs, &mut prep, &name, bar.as_ref())
                .await?;
        }
        prep.before(&writes).await?;
        let mut conn = conn.clone();
        in_flight = Some(InFlight {
            first: index * CHUNK,
            writes,
            reply: tokio::spawn(async move { rq::send_enqueue(&mut conn, prepared).await }),
        });
    }
    if let Some(prev) = in_flight.take() {
        tally
            .settle(prev, &jobs, &mut prep, &name, bar.as_ref())
            .await?;
    }
    let Tally { ok, refused } = tally;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "enqueued {ok} jobs from {name} in {secs:.2} s ({:.0} jobs/s); {} bad lines",
        ok as f64 / secs.max(1e-9),
        bad + refused
    );
    if bad + refused > 0 {
        return Err(CliError::Other(format!(
            "{} of {} lines were not enqueued",
            bad + refused,
            ok + bad + refused
        )));
    }
    Ok(())
}

/// A chunk sent to Redis and not yet answered.
struct InFlight {
    /// Index in the file's jobs of the chunk's first job.
    first: usize,
    writes: Vec<PrepWrite>,
    reply: tokio::task::JoinHandle<runq_common::Result<Vec<rq::BatchOutcome>>>,
}

/// Jobs enqueued and refused so far.
#[derive(Default)]
struct Tally {
    ok: usize,
    refused: usize,
}

impl Tally {
    /// Waits for a chunk's answer: its RedisPrep writes for the jobs Redis took, one
    /// line per refused job (with its line number), the progress bar.
    async fn settle(
        &mut self,
        chunk: InFlight,
        jobs: &[(usize, NewJob)],
        prep: &mut crate::runstate::Prep<'_>,
        name: &str,
        bar: Option<&indicatif::ProgressBar>,
    ) -> Result<(), CliError> {
        let results = chunk
            .reply
            .await
            .map_err(|e| CliError::Other(format!("enqueue task failed: {e}")))??;
        let lines = &jobs[chunk.first..chunk.first + results.len()];
        let enqueued: std::collections::HashSet<&str> = lines
            .iter()
            .zip(&results)
            .filter(|(_, r)| r.is_ok())
            .map(|((_, job), _)| job.id.as_str())
            .collect();
        prep.after(&chunk.writes, |id| enqueued.contains(id))
            .await?;
        for ((n, _), r) in lines.iter().zip(&results) {
            match r {
                Ok(_) => self.ok += 1,
                Err(e) => {
                    self.refused += 1;
                    eprintln!("runq: {name}:{n}: {e}");
                }
            }
        }
        if let Some(b) = bar {
            b.inc(results.len() as u64);
        }
        Ok(())
    }
}
