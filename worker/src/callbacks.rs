//! RQ 3.0's job callbacks (`on_success`, `on_failure`, `on_stopped`): which callback a job
//! asks for (`*_callback_name`, `*_callback_timeout`, default 60 s), and running it —
//! a Rust callback registered under that name ([`Registry::register_callback`]), or the
//! Python task host for any other name. A job whose callback can run nowhere gets a clear
//! error naming the callback, never a silent skip.
//!
//! [`Registry::register_callback`]: crate::tasks::Registry::register_callback

use crate::error::TaskError;
use crate::tasks::python::frames::RunCallback;
use crate::tasks::python::PythonHost;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use runq_common::echo::clip;
use runq_common::ints;
use runq_common::job::JobHash;
use runq_common::SerializerKind;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// RQ's default callback timeout (`CALLBACK_TIMEOUT`).
pub const DEFAULT_TIMEOUT_SECS: i64 = 60;

/// Which of a job's callbacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackKind {
    Success,
    Failure,
    Stopped,
}

impl CallbackKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CallbackKind::Success => "success",
            CallbackKind::Failure => "failure",
            CallbackKind::Stopped => "stopped",
        }
    }
}

impl fmt::Display for CallbackKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a Rust callback gets.
#[derive(Debug, Clone)]
pub struct CallbackCall {
    pub kind: CallbackKind,
    pub job_id: String,
    /// The callback's registered name.
    pub name: String,
    /// Success: the job's return value, serialized with the job's serializer (None for
    /// a None return).
    pub return_value: Option<Vec<u8>>,
    /// Failure: the job's failure text.
    pub failure: Option<String>,
}

pub type CallbackFuture = Pin<Box<dyn Future<Output = Result<(), TaskError>> + Send>>;

/// A callback written in Rust.
pub trait Callback: Send + Sync {
    fn call(&self, call: CallbackCall) -> CallbackFuture;
}

impl<F, Fut> Callback for F
where
    F: Fn(CallbackCall) -> Fut + Send + Sync,
    Fut: Future<Output = Result<(), TaskError>> + Send + 'static,
{
    fn call(&self, call: CallbackCall) -> CallbackFuture {
        Box::pin(self(call))
    }
}

/// A job's callback of one kind, as its hash names it.
#[derive(Debug, Clone, PartialEq)]
pub struct Wanted {
    pub kind: CallbackKind,
    pub name: String,
    /// `None`: no limit (RQ's -1).
    pub timeout: Option<Duration>,
}

/// The callback of `kind` the job asks for, if any.
pub fn wanted(hash: &JobHash, kind: CallbackKind) -> Option<Wanted> {
    let name_field = match kind {
        CallbackKind::Success => "success_callback_name",
        CallbackKind::Failure => "failure_callback_name",
        CallbackKind::Stopped => "stopped_callback_name",
    };
    let timeout_field = match kind {
        CallbackKind::Success => "success_callback_timeout",
        CallbackKind::Failure => "failure_callback_timeout",
        CallbackKind::Stopped => "stopped_callback_timeout",
    };
    let name = hash.text_nonempty(name_field).ok().flatten()?;
    let secs = hash
        .text_nonempty(timeout_field)
        .ok()
        .flatten()
        .and_then(|t| ints::int_in(t, -1, ints::MAX_TIMEOUT))
        .unwrap_or(DEFAULT_TIMEOUT_SECS);
    Some(Wanted {
        kind,
        name: name.to_string(),
        timeout: (secs > 0).then(|| Duration::from_secs(secs as u64)),
    })
}

/// Runs callbacks: Rust ones by name, the rest in the Python host.
#[derive(Clone, Default)]
pub struct Callbacks {
    rust: HashMap<String, Arc<dyn Callback>>,
    python: Option<Arc<PythonHost>>,
}

/// What a callback is told of the job's end.
#[derive(Clone, Copy)]
pub struct CallbackArgs<'a> {
    /// Base64 of the serialized return value (a success callback).
    pub return_value: Option<&'a str>,
    /// The failure text (a failure callback).
    pub failure: Option<&'a str>,
    /// A job maintenance failed as abandoned: RQ's arguments are `AbandonedJobError`,
    /// `AbandonedJobError()` and `None` (a Rust callback gets the text `AbandonedJobError`).
    pub abandoned: bool,
}

impl CallbackArgs<'_> {
    /// The failure callback's arguments for an abandoned job.
    pub fn abandoned() -> CallbackArgs<'static> {
        CallbackArgs {
            return_value: None,
            failure: Some("AbandonedJobError"),
            abandoned: true,
        }
    }
}

impl Callbacks {
    pub fn new(
        rust: HashMap<String, Arc<dyn Callback>>,
        python: Option<Arc<PythonHost>>,
    ) -> Callbacks {
        Callbacks { rust, python }
    }

    /// Runs `wanted` for the job `hash` under its timeout, telling it `args`.
    pub async fn run(
        &self,
        hash: &JobHash,
        wanted: &Wanted,
        serializer: SerializerKind,
        args: CallbackArgs<'_>,
    ) -> Result<(), TaskError> {
        let CallbackArgs {
            return_value,
            failure,
            abandoned,
        } = args;
        if let Some(cb) = self.rust.get(&wanted.name) {
            let call = CallbackCall {
                kind: wanted.kind,
                job_id: hash.id.clone(),
                name: wanted.name.clone(),
                return_value: return_value.and_then(|b| B64.decode(b).ok()),
                failure: failure.map(str::to_string),
            };
            let run = cb.call(call);
            return match wanted.timeout {
                None => run.await,
                Some(limit) => tokio::time::timeout(limit, run)
                    .await
                    .unwrap_or_else(|_| Err(timed_out(limit))),
            };
        }
        let Some(host) = &self.python else {
            return Err(TaskError::new(
                "CallbackUnavailable",
                format!(
                    "the job's {} callback `{}` cannot run: no Rust callback is registered under that name and no [python] task host is configured",
                    wanted.kind,
                    clip(&wanted.name, 200)
                ),
            ));
        };
        let frame = RunCallback {
            job_id: hash.id.clone(),
            kind: wanted.kind.as_str().to_string(),
            serializer: serializer.as_str().to_string(),
            hash: hash
                .fields
                .iter()
                .map(|(k, v)| (k.clone(), B64.encode(v)))
                .collect(),
            timeout: wanted.timeout.map(|t| t.as_secs()),
            return_value: return_value.map(str::to_string),
            exc_string: failure.map(str::to_string),
            abandoned,
            redis_url: None,
        };
        // The host enforces the callback's timeout in the child; this bound only guards
        // against a child that ignores it.
        let cancel = tokio_util::sync::CancellationToken::new();
        let limit = wanted
            .timeout
            .map(|t| t + Duration::from_secs(5))
            .unwrap_or(Duration::MAX);
        let run = host.callback(frame, &cancel);
        tokio::pin!(run);
        let done = tokio::select! {
            d = &mut run => d?,
            _ = tokio::time::sleep(limit) => {
                cancel.cancel();
                let _ = run.await;
                return Err(timed_out(wanted.timeout.unwrap_or_default()));
            }
        };
        match done.outcome.as_str() {
            "ok" => Ok(()),
            _ => Err(TaskError::text(done.exc_string.unwrap_or_else(|| {
                format!("the {} callback `{}` failed", wanted.kind, wanted.name)
            }))),
        }
    }
}

fn timed_out(limit: Duration) -> TaskError {
    TaskError::new(
        "JobTimeoutException",
        format!(
            "Task exceeded maximum timeout value ({} seconds)",
            limit.as_secs()
        ),
    )
}

/// Python's text for an exception raised while handling another, as RQ records a failure
/// callback that raised.
pub fn chained(first: &str, second: &str) -> String {
    format!(
        "{}\n\nDuring handling of the above exception, another exception occurred:\n\n{second}",
        first.trim_end()
    )
}
