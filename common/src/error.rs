//! Typed errors shared by the library, the worker and the CLI.

use std::path::PathBuf;

/// Result alias used across runq-common.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every failure the shared library reports. Each variant's message names what went
/// wrong and where, on one line.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}:{line}: {message}")]
    ConfigFile {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("cannot read config file {path}: {source}")]
    ConfigRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("configuration: {0}")]
    Config(String),
    #[error("redis at {url}: {source}")]
    Redis {
        url: String,
        source: redis::RedisError,
    },
    #[error("redis at {url}: {source} (the server's TLS certificate is not trusted: set redis.ca_file, REDIS_CA_FILE or --redis-ca-file to the CA that signed it)")]
    UntrustedServer {
        url: String,
        source: redis::RedisError,
    },
    #[error("redis: {0}")]
    RedisCommand(#[from] redis::RedisError),
    #[error("redis pool: {0}")]
    Pool(String),
    #[error("job {id}: field `{field}`: {reason}")]
    JobField {
        id: String,
        field: &'static str,
        reason: String,
    },
    #[error("no such job: {0}")]
    NoSuchJob(String),
    #[error("cannot decode job payload: {0}")]
    Decode(String),
    #[error("cannot encode value: {0}")]
    Encode(String),
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// No sentinel named a master that answers `ROLE` as master (each sentinel's reason).
    #[error("redis sentinel: no sentinel of {sentinels} named a reachable master for `{master}` ({reasons})")]
    NoMaster {
        master: String,
        sentinels: String,
        reasons: String,
    },
    /// Redis did not answer in time (a dead connection waits for TCP otherwise).
    #[error("redis did not answer {what} within {secs} s")]
    NoAnswer { what: &'static str, secs: u64 },
}

impl From<deadpool_redis::PoolError> for Error {
    fn from(e: deadpool_redis::PoolError) -> Self {
        match e {
            deadpool_redis::PoolError::Backend(r) => Error::RedisCommand(r),
            other => Error::Pool(other.to_string()),
        }
    }
}
