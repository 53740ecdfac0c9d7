//! `runq info`: queues with their counts and workers with their state and current job,
//! like `rq info` (but read-only: it never runs cleanup), then the periodic jobs
//! (`[[cron]]`) with their next run. `--json` for machines.

use crate::CliError;
use clap::Args;
use runq_common::rq::{self, QueueCounts, WorkerInfo};
use runq_common::scripts::cron::{self, CronState};
use runq_common::Config;
use serde_json::json;

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// Only these queues (default: every queue in rq:queues).
    pub queues: Vec<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Redraw in place every SECONDS (default 2) until interrupted.
    #[arg(long, num_args = 0..=1, default_missing_value = "2", value_name = "SECONDS")]
    pub watch: Option<f64>,
}

pub struct Snapshot {
    pub queues: Vec<(String, QueueCounts)>,
    pub workers: Vec<WorkerInfo>,
    pub cron: std::collections::BTreeMap<String, CronState>,
    /// Redis's clock, for "next run in …".
    pub now: i64,
}

pub async fn snapshot(
    config: &Config,
    conn: &mut redis::aio::MultiplexedConnection,
    only: &[String],
) -> Result<Snapshot, CliError> {
    let keys = config.keys();
    let names = if only.is_empty() {
        rq::all_queues(conn, &keys).await?
    } else {
        only.to_vec()
    };
    let counts = rq::queue_counts(conn, &keys, &names).await?;
    let workers = if only.is_empty() {
        rq::workers(conn, &keys, None).await?
    } else {
        rq::workers(conn, &keys, Some(only)).await?
    };
    let cron = cron::states(conn, &keys).await?;
    let (now, _): (i64, i64) = redis::cmd("TIME").query_async(conn).await?;
    Ok(Snapshot {
        queues: names.into_iter().zip(counts).collect(),
        workers,
        cron,
        now,
    })
}

pub fn render(s: &Snapshot) -> String {
    let mut out = String::new();
    let width = s
        .queues
        .iter()
        .map(|(n, _)| n.len())
        .max()
        .unwrap_or(0)
        .max(12);
    let mut total = 0;
    for (name, c) in &s.queues {
        total += c.queued;
        let bar = "█".repeat((c.queued as usize).min(40));
        out.push_str(&format!(
            "{name:<width$} |{bar} {}, {} executing, {} finished, {} failed, {} deferred, {} scheduled\n",
            c.queued, c.started, c.finished, c.failed, c.deferred, c.scheduled
        ));
    }
    out.push_str(&format!(
        "{} queues, {total} jobs total\n\n",
        s.queues.len()
    ));
    for w in &s.workers {
        let current = w
            .current_job
            .as_deref()
            .map(|j| format!(" current job {j}."))
            .unwrap_or_default();
        out.push_str(&format!(
            "{} ({} {} {}): {} {}.{current} jobs: {} finished, {} failed\n",
            w.name,
            w.hostname,
            w.ip_address,
            w.pid,
            w.state,
            w.queues.join(","),
            w.successful_job_count,
            w.failed_job_count
        ));
    }
    out.push_str(&format!(
        "{} workers, {} queues\n",
        s.workers.len(),
        s.queues.len()
    ));
    if !s.cron.is_empty() {
        out.push('\n');
        for (name, c) in &s.cron {
            let when = chrono::DateTime::from_timestamp(c.next, 0)
                .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                .unwrap_or_default();
            let last = c
                .last_job
                .as_deref()
                .map(|j| format!(", last job {j}"))
                .unwrap_or_default();
            out.push_str(&format!(
                "cron {name}: {} on {} ({}), next run {when} (in {}s){last}\n",
                c.func,
                c.queue,
                c.schedule,
                (c.next - s.now).max(0)
            ));
        }
        out.push_str(&format!("{} periodic jobs\n", s.cron.len()));
    }
    out
}

pub async fn run(config: &Config, a: InfoArgs) -> Result<(), CliError> {
    let mut conn = crate::connect(config).await?;
    if let Some(every) = a.watch {
        let every = std::time::Duration::from_secs_f64(every.max(0.2));
        loop {
            let s = snapshot(config, &mut conn, &a.queues).await?;
            // Clear the screen and home the cursor, then draw.
            print!(
                "\x1b[2J\x1b[H{}\nUpdated: {}\n",
                render(&s),
                chrono::Utc::now().format("%Y-%m-%d %H:%M:%S")
            );
            use std::io::Write;
            let _ = std::io::stdout().flush();
            tokio::time::sleep(every).await;
        }
    }
    let s = snapshot(config, &mut conn, &a.queues).await?;
    if a.json {
        let queues: Vec<_> = s
            .queues
            .iter()
            .map(|(n, c)| json!({"name": n, "counts": c}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"queues": queues, "workers": s.workers, "cron": s.cron})
            )
            .unwrap_or_default()
        );
    } else {
        print!("{}", render(&s));
    }
    Ok(())
}
