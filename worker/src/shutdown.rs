//! The process's one stop signal, in phases: **warm** (stop claiming, let running jobs
//! finish), **cold** (cancel running jobs and return them to a safe state), **exit** (every
//! slot has drained: background services stop). Each phase implies the ones before it.
//! Every part of the worker watches this one value; nothing else stops anything.

use tokio_util::sync::CancellationToken;

#[derive(Clone, Default)]
pub struct Shutdown {
    warm: CancellationToken,
    cold: CancellationToken,
    exit: CancellationToken,
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
    /// Every slot is done: stop the background services.
    pub fn begin_exit(&self) {
        self.begin_cold();
        self.exit.cancel();
    }
    pub fn is_warm(&self) -> bool {
        self.warm.is_cancelled()
    }
    pub fn is_cold(&self) -> bool {
        self.cold.is_cancelled()
    }
    pub fn is_exiting(&self) -> bool {
        self.exit.is_cancelled()
    }
    pub async fn warm(&self) {
        self.warm.cancelled().await
    }
    pub async fn cold(&self) {
        self.cold.cancelled().await
    }
    pub async fn exiting(&self) {
        self.exit.cancelled().await
    }
    /// Sleeps `d`, or less when the process starts to exit; true when it slept in full.
    pub async fn sleep(&self, d: std::time::Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => true,
            _ = self.exiting() => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_imply_the_earlier_ones() {
        let s = Shutdown::new();
        assert!(!s.is_warm());
        s.begin_exit();
        assert!(s.is_warm() && s.is_cold() && s.is_exiting());
    }
}
