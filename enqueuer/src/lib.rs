//! runq-enqueuer: the `runq` command-line client. The commands live in the binary
//! (`src/main.rs` and its modules); this library holds what they share and what other
//! crates test directly: the argument-value parsers ([`args`], fuzzed by `fuzz/`) and the
//! one-line error every command fails with ([`CliError`]).

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
