//! The `runq` CLI's library part: argument parsing and the error type, shared with
//! the binary (`main.rs`) and the fuzz harness.

pub mod args;

/// A command's failure, printed as one line.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Common(#[from] runq_common::Error),
    #[error("{0}")]
    Usage(String),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("{0}")]
    Other(String),
}
