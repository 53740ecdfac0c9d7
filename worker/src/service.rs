//! The one lifecycle every background service of a worker process follows (heartbeat,
//! maintenance, scheduler, commands, lock keeper, metrics endpoint, watchdog, Sentinel
//! watch, signals):
//! it is built with what it needs, spawned on the process's task tracker, and runs until
//! the [`Shutdown`] reaches the phase it stops at (exit, for all of them: they keep
//! serving while running jobs drain). The launcher waits for all of them before it
//! deregisters the workers.

use crate::shutdown::Shutdown;
use std::future::Future;
use tokio_util::task::TaskTracker;

/// A background service of the worker process.
pub trait Service: Send + 'static {
    /// For logs.
    const NAME: &'static str;
    /// Runs until `shutdown` reaches exit.
    fn run(self, shutdown: Shutdown) -> impl Future<Output = ()> + Send;
}

/// Spawns `service` on `tracker`.
pub fn spawn<S: Service>(tracker: &TaskTracker, shutdown: &Shutdown, service: S) {
    let shutdown = shutdown.clone();
    tracker.spawn(async move {
        service.run(shutdown).await;
        tracing::debug!(service = S::NAME, "stopped");
    });
}
