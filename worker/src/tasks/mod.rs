//! Task handlers: the [`Task`] trait, the [`Registry`] of native handlers by name, and
//! the values a handler receives ([`TaskCall`]) and returns ([`TaskOutput`]).
//! [`table`] resolves a job's function name to its handler and run-state spec. Handler
//! kinds: [`builtin`] and [`demo`] native tasks, [`exec`] (a command per job) and
//! [`python`] (the preloaded Python task host); both process kinds share
//! [`process_group`].

pub mod builtin;
pub mod demo;
pub mod exec;
pub mod process_group;
pub mod python;
pub mod table;

use crate::job::Job;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub use crate::error::TaskError;
pub use crate::runstate::RunContext;
pub use runq_common::SerializerKind;

/// What a handler gets for one job.
#[derive(Debug, Clone)]
pub struct TaskCall {
    pub job_id: String,
    pub func_name: String,
    /// The decoded arguments. For handlers that take the payload as stored
    /// ([`TaskInput::Stored`]) values runq cannot represent are `null` here.
    pub args: Vec<Value>,
    pub kwargs: Map<String, Value>,
    /// Cancelled when the job is stopped, times out or the worker shuts down cold.
    /// A handler with a [`Task::wind_down`] gets that long to end on its own afterwards;
    /// others are dropped at once.
    pub cancel: CancellationToken,
    /// The job's payload as stored (inflated), for [`TaskInput::Stored`] handlers.
    pub payload: Arc<[u8]>,
    /// The serializer the payload was written with; results are stored with it.
    pub serializer: SerializerKind,
    /// The job's timeout in seconds (`None`: no limit).
    pub timeout_secs: Option<u64>,
    /// The run this job works on (runid, held NoDb locks, status lines, documents),
    /// when its task names a runid argument.
    pub run: Option<Arc<RunContext>>,
    /// The claimed job itself (hash, worker name, start time).
    pub job: Arc<Job>,
}

impl TaskCall {
    /// Positional argument `i`, or keyword `name`.
    pub fn arg(&self, i: usize, name: &str) -> Option<&Value> {
        self.args.get(i).or_else(|| self.kwargs.get(name))
    }
}

/// What a handler returns.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskOutput {
    /// A value; the worker serializes it with the job's serializer (None is omitted).
    Value(Value),
    /// Bytes already serialized with the job's serializer (a child's pickle).
    Serialized(Vec<u8>),
    /// The function returned an `rq.Retry` (RQ 3.0): retry the job `max` times at
    /// `intervals`. `serialized` is the Retry object itself, stored as the RETRIED result.
    Retry {
        serialized: Vec<u8>,
        max: i64,
        intervals: Vec<i64>,
        at_front: bool,
    },
}

impl From<Value> for TaskOutput {
    fn from(v: Value) -> Self {
        TaskOutput::Value(v)
    }
}

pub type TaskResult = Result<TaskOutput, TaskError>;
pub type TaskFuture = Pin<Box<dyn Future<Output = TaskResult> + Send>>;

/// How a handler takes its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskInput {
    /// Decoded by runq (a payload runq cannot represent fails the job before it runs).
    Decoded,
    /// The payload as stored, decoded by the handler's own (Python) serializer.
    Stored,
}

/// A task handler.
pub trait Task: Send + Sync {
    fn run(&self, call: TaskCall) -> TaskFuture;

    fn input(&self) -> TaskInput {
        TaskInput::Decoded
    }

    /// How long the handler may take, after its job was cancelled, to end on its own
    /// (process handlers kill and reap their process group in that time). Zero: the
    /// handler is dropped at once.
    fn wind_down(&self) -> Duration {
        Duration::ZERO
    }

    /// Time past the job's timeout the handler gets to report the timeout itself (the
    /// Python host raises RQ's JobTimeoutException inside the job) before runq cuts it off.
    fn timeout_grace(&self) -> Duration {
        Duration::ZERO
    }

    /// True when the handler runs the job's success and failure callbacks itself (the
    /// Python host does, in the job's process, as RQ's work horse does).
    fn runs_callbacks(&self) -> bool {
        false
    }
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

/// Native handlers by function name, and Rust job callbacks by callback name.
#[derive(Clone, Default)]
pub struct Registry {
    tasks: HashMap<String, Arc<dyn Task>>,
    callbacks: HashMap<String, Arc<dyn crate::callbacks::Callback>>,
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

    /// Registers a Rust callback under the dotted name jobs give as `on_success`,
    /// `on_failure` or `on_stopped` (RQ 3.0's `Callback(name)`).
    pub fn register_callback(
        &mut self,
        name: &str,
        callback: impl crate::callbacks::Callback + 'static,
    ) {
        self.callbacks.insert(name.to_string(), Arc::new(callback));
    }

    /// The registered Rust callbacks.
    pub fn callbacks(&self) -> HashMap<String, Arc<dyn crate::callbacks::Callback>> {
        self.callbacks.clone()
    }

    pub fn names(&self) -> Vec<&str> {
        let mut n: Vec<&str> = self.tasks.keys().map(String::as_str).collect();
        n.sort();
        n
    }
}
