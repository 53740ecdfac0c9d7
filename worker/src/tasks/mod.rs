//! Task handlers: the [`Task`] trait, the [`Registry`] of native handlers by name, and
//! the values a handler receives and returns. [`table`] resolves a job's function name
//! to its handler and run-state spec.

pub mod builtin;
pub mod demo;
pub mod exec;
pub mod table;

use serde_json::{Map, Value};
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub use crate::run::RunContext;
pub use runq_common::SerializerKind;

/// What a handler gets for one job.
#[derive(Debug, Clone)]
pub struct TaskCall {
    pub job_id: String,
    pub func_name: String,
    pub args: Vec<Value>,
    pub kwargs: Map<String, Value>,
    /// Cancelled when the job is stopped, times out or the worker shuts down cold.
    /// Handlers are also dropped at that point; the token serves cooperative cleanup.
    pub cancel: CancellationToken,
    /// The job's payload as stored (inflated), for handlers that pass it on untouched.
    pub payload: Arc<[u8]>,
    /// The serializer the payload was written with; results are stored with it.
    pub serializer: SerializerKind,
    /// The run this job works on (runid, held NoDb locks, status lines, documents),
    /// when its task names a runid argument.
    pub run: Option<Arc<RunContext>>,
}

impl TaskCall {
    /// Positional argument `i`, or keyword `name`.
    pub fn arg(&self, i: usize, name: &str) -> Option<&Value> {
        self.args.get(i).or_else(|| self.kwargs.get(name))
    }
}

/// A handler failure; recorded as `<kind>: <message>` in the job's failure result.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskError {
    pub kind: String,
    pub message: String,
}

impl TaskError {
    pub fn new(kind: &str, message: impl Into<String>) -> Self {
        TaskError {
            kind: kind.to_string(),
            message: message.into(),
        }
    }
    /// A bad argument, named like Python's `TypeError`.
    pub fn bad_argument(message: impl Into<String>) -> Self {
        TaskError::new("TypeError", message)
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

/// What a handler returns.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskOutput {
    /// A value; the worker serializes it with the job's serializer (None is omitted).
    Value(Value),
    /// Bytes already serialized with the job's serializer (an exec child's pickle).
    Serialized(Vec<u8>),
}

impl From<Value> for TaskOutput {
    fn from(v: Value) -> Self {
        TaskOutput::Value(v)
    }
}

pub type TaskResult = Result<TaskOutput, TaskError>;
pub type TaskFuture = Pin<Box<dyn Future<Output = TaskResult> + Send>>;

/// A native task handler.
pub trait Task: Send + Sync {
    fn run(&self, call: TaskCall) -> TaskFuture;
}

impl<F, Fut> Task for F
where
    F: Fn(TaskCall) -> Fut + Send + Sync,
    Fut: Future<Output = TaskResult> + Send + 'static,
{
    fn run(&self, call: TaskCall) -> TaskFuture {
        Box::pin(self(call))
    }
}

/// Handlers by function name.
#[derive(Clone, Default)]
pub struct Registry {
    tasks: HashMap<String, Arc<dyn Task>>,
}

impl Registry {
    /// A registry holding runq's built-in tasks (`runq.tasks.*`, `runq.demo.*`).
    pub fn with_builtins() -> Self {
        let mut r = Registry::default();
        builtin::register(&mut r);
        demo::register(&mut r);
        r
    }

    pub fn register(&mut self, name: &str, task: impl Task + 'static) {
        self.tasks.insert(name.to_string(), Arc::new(task));
    }

    pub fn get(&self, name: &str) -> Option<Arc<dyn Task>> {
        self.tasks.get(name).cloned()
    }

    pub fn names(&self) -> Vec<&str> {
        let mut n: Vec<&str> = self.tasks.keys().map(String::as_str).collect();
        n.sort();
        n
    }
}
