//! `runq prep RUNID`: the run's RedisPrep hash, readable — job ids, step timestamps (as
//! times), attributes and lock flags — followed by preflight's checklist.

use crate::CliError;
use clap::Args;
use runq_common::nodb::{prep, rundir};
use runq_common::Config;

#[derive(Args, Debug)]
pub struct PrepArgs {
    pub runid: String,
    /// Machine-readable output: `{"fields": {...}, "checklist": {...}}`.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(config: &Config, a: PrepArgs) -> Result<(), CliError> {
    rundir::validate_runid(&a.runid).map_err(CliError::Usage)?;
    let mut conn = runq_common::connect::ping(config, config.redis.db.lock).await?;
    let mut fields = prep::fields(&mut conn, &a.runid).await?;
    fields.sort();
    let checklist = prep::checklist(&fields);
    if a.json {
        let f: serde_json::Map<_, _> = fields
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        let c: serde_json::Map<_, _> = checklist
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::Bool(*v)))
            .collect();
        println!(
            "{}",
            serde_json::json!({"runid": a.runid, "fields": f, "checklist": c})
        );
        return Ok(());
    }
    print!("{}", render(&a.runid, &fields, &checklist));
    Ok(())
}

fn render(runid: &str, fields: &[(String, String)], checklist: &[(&str, bool)]) -> String {
    let mut out = format!("run {runid}\n");
    if fields.is_empty() {
        out.push_str("  (no run hash in Redis)\n");
    }
    let sections: [(&str, &str); 4] = [
        ("jobs", "rq:"),
        ("timestamps", "timestamps:"),
        ("attributes", "attrs:"),
        ("lock flags", "locked:"),
    ];
    for (title, prefix) in sections {
        let rows: Vec<_> = fields
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .collect();
        if rows.is_empty() {
            continue;
        }
        out.push_str(&format!("{title}:\n"));
        for (k, v) in rows {
            let name = &k[prefix.len()..];
            let shown = if prefix == "timestamps:" {
                human_time(v)
            } else {
                v.clone()
            };
            out.push_str(&format!("  {name:<28} {shown}\n"));
        }
    }
    let other: Vec<_> = fields
        .iter()
        .filter(|(k, _)| !sections.iter().any(|(_, p)| k.starts_with(p)))
        .collect();
    if !other.is_empty() {
        out.push_str("other:\n");
        for (k, v) in other {
            let shown = if k == "last_modified" {
                human_time(v)
            } else {
                v.clone()
            };
            out.push_str(&format!("  {k:<28} {shown}\n"));
        }
    }
    out.push_str("checklist:\n");
    for (name, done) in checklist {
        out.push_str(&format!("  [{}] {name}\n", if *done { "x" } else { " " }));
    }
    out
}

/// `1761234567` → `1761234567 (2025-10-23 15:49:27 UTC)`.
fn human_time(v: &str) -> String {
    match v
        .trim()
        .parse::<i64>()
        .ok()
        .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
    {
        Some(t) => format!("{v} ({})", t.format("%Y-%m-%d %H:%M:%S UTC")),
        None => v.to_string(),
    }
}
