//! The process's shutdown phases as one shared signal: warm (stop claiming, let jobs
//! finish) and cold (cancel running jobs and return them to a safe state).

use tokio_util::sync::CancellationToken;

#[derive(Clone, Default)]
pub struct Shutdown {
    warm: CancellationToken,
    cold: CancellationToken,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }
    /// Stop taking new jobs.
    pub fn begin_warm(&self) {
        self.warm.cancel();
    }
    /// Cancel running jobs too.
    pub fn begin_cold(&self) {
        self.warm.cancel();
        self.cold.cancel();
    }
    pub fn is_warm(&self) -> bool {
        self.warm.is_cancelled()
    }
    pub fn is_cold(&self) -> bool {
        self.cold.is_cancelled()
    }
    pub async fn warm(&self) {
        self.warm.cancelled().await
    }
    pub async fn cold(&self) {
        self.cold.cancelled().await
    }
}
