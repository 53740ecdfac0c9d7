//! Test harness for runq's integration tests: a private `redis-server` per test, the
//! `runq-worker` and `runq` binaries from the cargo target directory, and Python RQ
//! (3.0.0 and 1.16.2) from the virtualenvs `scripts/setup-python.sh` creates.
//!
//! Every wait is bounded ([`WAIT`]) and polls; nothing asserts on speed.
//!
//! One module per concept; everything is re-exported here, so `use runq_tests::*;` is all
//! a test file needs:
//!
//! - `paths`: [`repo_root`], [`python_dir`], [`bin`], [`free_port`], [`TempDir`]
//! - `process`: [`wait_exit`], [`wait_exit_logged`] (and the signals and bounded waits the others use)
//! - `wait`: [`WAIT`], [`wait_for`], [`wait_until`], [`wait_until_with`], [`wait_within`],
//!   [`sorted`]
//! - `redis_server`: [`RedisServer`], [`RedisOpts`] and the key helpers
//! - `tls`: [`TlsFiles`]
//! - `cli`: [`runq`], [`runq_at`], [`runq_env`], [`runq_prefixed`], [`Output`],
//!   [`enqueue`], [`job_json`], [`failure_text`], [`failure_hint`]
//! - `worker`: [`WorkerCmd`], [`Worker`], [`worker_output`]
//! - `python`: [`Py`], [`python`], [`python_env`], [`python_json`], [`py_cli`],
//!   [`py_cli_spawn`], [`PyWorker`], [`dedent`]
//! - `http`: [`http_get`], [`parse_metrics`]
//! - [`hostile`]: hostile-input builders; [`netns`]: hosts in network namespaces

pub use redis::Commands;

mod cli;
mod http;
mod paths;
mod process;
mod python;
mod redis_server;
mod tls;
mod wait;
mod worker;

pub mod hostile;
pub mod netns;

pub use cli::{
    enqueue, failure_hint, failure_text, job_json, runq, runq_at, runq_env, runq_prefixed, Output,
};
pub use http::{http_get, parse_metrics};
pub use paths::{bin, free_port, python_dir, repo_root, TempDir};
pub use process::{wait_exit, wait_exit_logged};
pub use python::{dedent, py_cli, py_cli_spawn, python, python_env, python_json, Py, PyWorker};
pub use redis_server::{RedisOpts, RedisServer};
pub use tls::TlsFiles;
pub use wait::{sorted, wait_for, wait_until, wait_until_with, wait_within, WAIT};
pub use worker::{worker_output, Worker, WorkerCmd};
