//! runq-worker as a library: the daemon's parts, usable to embed Rust tasks
//! ([`Registry::register`]). Data flows one way (Sidekiq's launcher → processor → fetch
//! split), every Redis state change going through one typed script of
//! [`runq_common::scripts`]:
//!
//! **Lifecycle**
//! - [`launcher`]: build → register → spawn services → run slots → stop.
//! - [`shutdown`]: the one stop signal, in phases (warm → cold → exit).
//! - [`service`]: the lifecycle every background service shares.
//! - [`signals`]: SIGTERM/SIGINT to phases, the shutdown grace timer.
//! - [`registration`]: each slot's RQ worker record (birth, state, death).
//!
//! **A job's way through the process**
//! - [`fetch`]: one round trip for every slot ready at once — finished jobs recorded
//!   (result, registries, retries, repeats, rate limits, dependents), next jobs claimed
//!   (pop + record as started, atomically) — with queue limits and wake-ups.
//! - [`job`]: the unit of work, from claim to completion.
//! - [`slots`]: which slot runs which job.
//! - [`processor`]: one slot's loop: exchange (complete + fetch) → execute.
//! - [`execute`]: decode, resolve, call through the [`layers`], map to a completion.
//! - [`layers`]: run state and deadline around the handler.
//! - [`callbacks`]: RQ 3.0 job callbacks, Rust or Python; [`followups`] and
//!   [`webhooks`]: what happens after a final state is saved.
//! - [`tasks`]: handlers — native, exec, the Python task host — and the task table.
//! - [`error`]: [`TaskError`], a job's failure as a value.
//!
//! **Background services**
//! - [`heartbeat`]: worker keys and started-registry deadlines, batched per process.
//! - [`maintenance`]: abandoned jobs, expired entries, dead workers.
//! - [`scheduler`]: due scheduled jobs to their queues, one owner per queue.
//! - [`cron`]: periodic jobs (`[[cron]]`), one leader across every host.
//! - [`commands`]: RQ worker commands over pub/sub.
//! - [`sentinel_watch`]: with Sentinel, the switch to a new master as soon as the
//!   sentinels name it.
//! - [`runstate`]: WEPPcloud run state; its [`lock_keeper`](runstate::lock_keeper)
//!   renews NoDb locks in one batched round trip.
//! - [`metrics`], [`metrics_http`]: Prometheus counters and the endpoint.
//! - [`watchdog`], [`notify`]: systemd readiness and watchdog.
//! - [`logging`]: log output.

pub mod callbacks;
pub mod commands;
pub mod cron;
pub mod error;
pub mod execute;
pub mod fetch;
pub mod followups;
pub mod heartbeat;
pub mod job;
pub mod launcher;
pub mod layers;
pub mod logging;
pub mod maintenance;
pub mod metrics;
pub mod metrics_http;
pub mod notify;
pub mod processor;
pub mod registration;
pub mod runstate;
pub mod scheduler;
pub mod sentinel_watch;
pub mod service;
pub mod shutdown;
pub mod signals;
pub mod slots;
pub mod tasks;
pub mod watchdog;
pub mod webhooks;

pub use error::TaskError;
pub use launcher::{run, WorkerOptions};
pub use runstate::RunContext;
pub use tasks::{Registry, Task, TaskCall, TaskOutput};
