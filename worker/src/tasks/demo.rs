//! The WEPP-like demo tasks, each `(runid, seconds=0)`: `runq.demo.build_climate`,
//! `build_soils`, `build_landuse` and `run_wepp`. Each holds its controller document's
//! NoDb lock (from its [`TaskSpec`](runq_common::taskspec::TaskSpec)), works for
//! `seconds`, updates the document (jsonpickle-shaped, `py/object` + `py/state`), and
//! emits its TRIGGER line; the worker stamps RedisPrep. `run_wepp` also reads the other
//! three documents. Every task appends its critical section's entry and exit to
//! `<run dir>/locks.ledger`, so mutual exclusion can be checked from outside.

use super::{Registry, TaskCall, TaskError, TaskResult};
use crate::runstate::RunContext;
use runq_common::nodb::loglevel::{DEBUG, INFO};
use serde_json::{json, Value};
use std::io::Write;
use std::time::Duration;

pub fn register(r: &mut Registry) {
    r.register("runq.demo.build_climate", |c| {
        build(c, "climate.nodb", "Climate", "CLIMATE_BUILD_TASK_COMPLETED")
    });
    r.register("runq.demo.build_soils", |c| {
        build(c, "soils.nodb", "Soils", "SOILS_BUILD_TASK_COMPLETED")
    });
    r.register("runq.demo.build_landuse", |c| {
        build(c, "landuse.nodb", "Landuse", "LANDUSE_BUILD_TASK_COMPLETED")
    });
    r.register("runq.demo.run_wepp", run_wepp);
}

fn run_of(call: &TaskCall) -> Result<&RunContext, TaskError> {
    call.run.as_deref().ok_or_else(|| {
        TaskError::new(
            "ConfigurationError",
            format!(
                "{} runs on a WEPPcloud run: its task needs `runid_arg`",
                call.func_name
            ),
        )
    })
}

fn seconds(call: &TaskCall) -> Result<f64, TaskError> {
    match call.arg(1, "seconds") {
        None | Some(Value::Null) => Ok(0.0),
        Some(v) => v
            .as_f64()
            .filter(|s| s.is_finite() && *s >= 0.0)
            .ok_or_else(|| {
                TaskError::bad_argument(format!(
                    "{}(runid, seconds=0): seconds must be a non-negative number, not {v}",
                    call.func_name
                ))
            }),
    }
}

/// A fresh controller document.
fn new_document(class: &str, runid: &str) -> Value {
    json!({
        "py/object": format!("runq.demo.{class}"),
        "py/state": {"runid": runid, "builds": 0, "history": []}
    })
}

async fn build(call: TaskCall, relpath: &'static str, class: &str, event: &str) -> TaskResult {
    let run = run_of(&call)?;
    let secs = seconds(&call)?;
    let ledger = Ledger::open(run, relpath)?;
    let name = relpath.trim_end_matches(".nodb");
    run.log(INFO, &format!("building {name}")).await;
    let mut doc = run
        .read_document(relpath)
        .await?
        .unwrap_or_else(|| new_document(class, run.runid()));
    work(run, secs, name).await;
    let builds = record_build(&mut doc, &call.job_id)?;
    run.write_document(relpath, &doc).await?;
    ledger.exit();
    run.trigger(event).await;
    Ok(json!({"runid": run.runid(), "document": relpath, "builds": builds}).into())
}

async fn run_wepp(call: TaskCall) -> TaskResult {
    let run = run_of(&call)?;
    let secs = seconds(&call)?;
    let ledger = Ledger::open(run, "wepp.nodb")?;
    let mut inputs = serde_json::Map::new();
    for input in ["climate.nodb", "landuse.nodb", "soils.nodb"] {
        let doc = run.read_document(input).await?.ok_or_else(|| {
            TaskError::new(
                "FileNotFoundError",
                format!(
                    "run_wepp needs {input} in run {}: build it first",
                    run.runid()
                ),
            )
        })?;
        inputs.insert(input.into(), doc["py/state"]["builds"].clone());
    }
    run.log(INFO, "running wepp").await;
    let mut doc = run
        .read_document("wepp.nodb")
        .await?
        .unwrap_or_else(|| new_document("Wepp", run.runid()));
    work(run, secs, "wepp").await;
    let builds = record_build(&mut doc, &call.job_id)?;
    doc["py/state"]["inputs"] = Value::Object(inputs);
    run.write_document("wepp.nodb", &doc).await?;
    ledger.exit();
    run.trigger("WEPP_RUN_TASK_COMPLETED").await;
    Ok(json!({"runid": run.runid(), "document": "wepp.nodb", "builds": builds}).into())
}

/// Sleeps `secs`, with a DEBUG progress line per second (shown when the run's log level
/// is DEBUG).
async fn work(run: &RunContext, secs: f64, name: &str) {
    let mut left = secs;
    let mut step = 0;
    while left > 0.0 {
        let nap = left.min(1.0);
        tokio::time::sleep(Duration::from_secs_f64(nap)).await;
        left -= nap;
        step += 1;
        run.log(DEBUG, &format!("{name}: step {step} done")).await;
    }
}

/// `builds += 1`, appends the job to `history`; returns the new count.
fn record_build(doc: &mut Value, job_id: &str) -> Result<u64, TaskError> {
    let state = doc
        .get_mut("py/state")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| TaskError::new("ValueError", "document has no `py/state` object"))?;
    let builds = state.get("builds").and_then(Value::as_u64).unwrap_or(0) + 1;
    state.insert("builds".into(), json!(builds));
    state.insert(
        "last_built".into(),
        json!(runq_common::timefmt::now().timestamp_millis() as f64 / 1000.0),
    );
    match state.get_mut("history").and_then(Value::as_array_mut) {
        Some(h) => h.push(json!(job_id)),
        None => {
            state.insert("history".into(), json!([job_id]));
        }
    }
    Ok(builds)
}

/// Appends `enter`/`exit` lines (`<event> <relpath> <job> <epoch µs>`) to the run's
/// `locks.ledger`. The exit line is written only after the document write succeeded.
struct Ledger {
    path: std::path::PathBuf,
    relpath: &'static str,
    job: String,
}

impl Ledger {
    fn open(run: &RunContext, relpath: &'static str) -> Result<Ledger, TaskError> {
        let wd = run.wd()?;
        std::fs::create_dir_all(wd).map_err(|e| {
            TaskError::new("OSError", format!("cannot create {}: {e}", wd.display()))
        })?;
        let ledger = Ledger {
            path: wd.join("locks.ledger"),
            relpath,
            job: run.job_id().to_string(),
        };
        ledger.append("enter");
        Ok(ledger)
    }

    fn exit(&self) {
        self.append("exit");
    }

    fn append(&self, event: &str) {
        let micros = runq_common::timefmt::now().timestamp_micros();
        let line = format!("{event} {} {} {micros}\n", self.relpath, self.job);
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = written {
            tracing::warn!(error = %e, path = %self.path.display(), "could not append to the lock ledger");
        }
    }
}
