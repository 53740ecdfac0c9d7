//! runq-worker as a library: the daemon's parts, usable to embed Rust tasks.
//!
//! Data flows one way (Sidekiq's launcher → manager → processor → fetch split):
//! [`launcher`] wires everything and owns shutdown; [`fetch`] claims jobs for idle
//! slots; [`processor`] runs one slot's loop; [`execute`] runs a handler under timeout
//! and cancellation; [`complete`] records the outcome; [`heartbeat`] and
//! [`commands`] serve every slot of the process at once; [`metrics`] counts what happens
//! and [`metrics_http`] serves it to Prometheus.

pub mod commands;
pub mod complete;
pub mod execute;
pub mod fetch;
pub mod heartbeat;
pub mod launcher;
pub mod logging;
pub mod maintenance;
pub mod metrics;
pub mod metrics_http;
pub mod notify;
pub mod processor;
pub mod registration;
pub mod run;
pub mod scheduler;
pub mod shutdown;
pub mod slots;
pub mod tasks;

pub use launcher::{run, WorkerOptions};
pub use run::RunContext;
pub use tasks::{Registry, Task, TaskCall, TaskError, TaskOutput};
