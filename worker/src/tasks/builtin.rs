//! The built-in tasks: `runq.tasks.noop`, `echo`, `sleep` and `fail`.

use super::{Registry, TaskCall, TaskError, TaskResult};
use serde_json::{json, Value};
use std::time::Duration;

pub fn register(r: &mut Registry) {
    r.register("runq.tasks.noop", noop);
    r.register("runq.tasks.echo", echo);
    r.register("runq.tasks.sleep", sleep);
    r.register("runq.tasks.fail", fail);
}

/// Returns None.
async fn noop(_: TaskCall) -> TaskResult {
    Ok(Value::Null.into())
}

/// Returns `{"args": [...], "kwargs": {...}}`.
async fn echo(call: TaskCall) -> TaskResult {
    Ok(json!({"args": call.args, "kwargs": call.kwargs}).into())
}

/// `sleep(seconds)`: sleeps, returns the seconds slept.
async fn sleep(call: TaskCall) -> TaskResult {
    let secs = call
        .arg(0, "seconds")
        .and_then(Value::as_f64)
        .filter(|s| s.is_finite() && *s >= 0.0)
        .ok_or_else(|| {
            TaskError::bad_argument("runq.tasks.sleep(seconds) needs a non-negative number")
        })?;
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    Ok(call.args.first().cloned().unwrap_or(json!(secs)).into())
}

/// `fail(message)`: fails with that message.
async fn fail(call: TaskCall) -> TaskResult {
    let message = match call.arg(0, "message") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => "runq.tasks.fail called".to_string(),
    };
    Err(TaskError::new("RuntimeError", message))
}
