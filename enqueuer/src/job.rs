//! `runq job ID`: one job's status, origin, timestamps, worker and its return value or
//! failure text, for people or (`--json`) machines.

use crate::CliError;
use clap::Args;
use runq_common::job::JobHash;
use runq_common::results::{ResultEntry, ResultType};
use runq_common::rq;
use runq_common::{Config, SerializerKind};
use serde_json::{json, Value};

#[derive(Args, Debug)]
pub struct JobArgs {
    pub id: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// The job as the CLI reports it.
pub fn describe(job: &JobHash, result: Option<&ResultEntry>) -> Value {
    let text = |f: &'static str| job.text(f).ok().flatten().unwrap_or("").to_string();
    let mut v = json!({
        "id": job.id,
        "status": text("status"),
        "origin": text("origin"),
        "description": text("description"),
        "created_at": text("created_at"),
        "enqueued_at": text("enqueued_at"),
        "started_at": text("started_at"),
        "ended_at": text("ended_at"),
        "worker_name": text("worker_name"),
        "timeout": text("timeout"),
    });
    if let Some(r) = result {
        v["result_type"] = json!(r.kind.map(ResultType::name));
        if let Some(bytes) = r.return_value_bytes() {
            v["return_value"] = decode_value(&bytes);
        } else if r.kind == Some(ResultType::Successful) {
            v["return_value"] = Value::Null;
        }
        if let Some(exc) = r.exc_text() {
            v["exc_string"] = json!(exc);
        }
    }
    v
}

/// Decodes a serialized return value with whichever serializer wrote it; one that does
/// not decode (within the decoding budgets) shows why.
fn decode_value(bytes: &[u8]) -> Value {
    match SerializerKind::detect(bytes) {
        Some(k) => k
            .loads(bytes, "return value")
            .unwrap_or_else(|why| json!({ "undecodable": why })),
        None => json!({ "undecodable": format!(
            "return value: not pickle, JSON or MessagePack ({} bytes)",
            bytes.len()
        ) }),
    }
}

pub async fn run(config: &Config, a: JobArgs) -> Result<(), CliError> {
    let mut conn = crate::connect(config).await?;
    let keys = config.keys();
    let job = rq::fetch_job(&mut conn, &keys, &a.id)
        .await?
        .ok_or_else(|| {
            CliError::Other(format!("no such job: {} (key {})", a.id, keys.job(&a.id)))
        })?;
    let result = rq::latest_result(&mut conn, &keys, &a.id).await?;
    let v = describe(&job, result.as_ref());
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(());
    }
    for key in [
        "id",
        "status",
        "origin",
        "description",
        "created_at",
        "enqueued_at",
        "started_at",
        "ended_at",
        "worker_name",
    ] {
        let s = v[key].as_str().unwrap_or("");
        println!(
            "{:<12} {}",
            format!("{key}:"),
            if s.is_empty() { "-" } else { s }
        );
    }
    if let Some(r) = v.get("result_type").and_then(Value::as_str) {
        println!("{:<12} {r}", "result:");
    }
    if let Some(rv) = v.get("return_value") {
        println!("{:<12} {rv}", "return:");
    }
    if let Some(exc) = v.get("exc_string").and_then(Value::as_str) {
        println!("failure:\n{exc}");
    }
    Ok(())
}
