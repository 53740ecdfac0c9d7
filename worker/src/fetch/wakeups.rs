//! Wake-ups for an idle fetcher without polling Redis: while armed, one task per queue
//! blocks on `BLMOVE q q LEFT LEFT`, which returns as soon as the queue holds a job and
//! removes nothing; the fetcher is then woken to claim. Disarmed (slots busy), nobody
//! blocks. A queue key of the wrong type is logged once and waited on gently. After a
//! switch to another master (Sentinel) the waiters reconnect to it at once.

use runq_common::config::Config;
use runq_common::connect::{master_generation, master_moved};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

use crate::shutdown::Shutdown;

/// The shared arm/wake state.
#[derive(Default)]
pub struct Wakeups {
    armed: AtomicBool,
    arm: Notify,
    wake: Notify,
}

impl Wakeups {
    /// Starts one waiter per queue; they end when the process exits.
    pub fn start(config: &Arc<Config>, shutdown: &Shutdown) -> Arc<Wakeups> {
        let wakeups = Arc::new(Wakeups::default());
        for q in config.queue_names() {
            tokio::spawn(wait_on_queue(
                config.clone(),
                config.keys().queue(&q),
                wakeups.clone(),
                shutdown.clone(),
            ));
        }
        wakeups
    }

    /// Waiters block until a queue has a job, then [`woken`](Self::woken) returns.
    pub fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
        self.arm.notify_waiters();
    }

    pub fn disarm(&self) {
        self.armed.store(false, Ordering::SeqCst);
    }

    /// Returns once a waiter saw a job.
    pub async fn woken(&self) {
        self.wake.notified().await
    }

    async fn armed(&self) {
        loop {
            let notified = self.arm.notified();
            if self.armed.load(Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    }
}

async fn wait_on_queue(
    config: Arc<Config>,
    queue_key: String,
    wakeups: Arc<Wakeups>,
    shutdown: Shutdown,
) {
    let mut conn = None;
    // The master generation `conn` was made under.
    let mut made = 0;
    let mut warned = false;
    loop {
        tokio::select! {
            _ = wakeups.armed() => {}
            _ = shutdown.warm() => return,
        }
        if made != master_generation() {
            conn = None;
        }
        if conn.is_none() {
            made = master_generation();
            match runq_common::connect::dedicated(&config, config.redis.db.rq).await {
                Ok(c) => conn = Some(c),
                Err(_) => {
                    shutdown.sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let mut blmove = redis::cmd("BLMOVE");
        blmove
            .arg(&queue_key)
            .arg(&queue_key)
            .arg("LEFT")
            .arg("LEFT")
            .arg(5);
        let moved: redis::RedisResult<Option<Vec<u8>>> = tokio::select! {
            r = blmove.query_async(c) => r,
            _ = shutdown.warm() => return,
            // The process now uses another master: wait on its queue instead.
            _ = master_moved(made) => continue,
        };
        match moved {
            Ok(Some(_)) => {
                warned = false;
                wakeups.wake.notify_one();
                // Give the fetcher a moment to claim before looking again.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Ok(None) => {}
            Err(e) if e.code() == Some("WRONGTYPE") => {
                if !warned {
                    tracing::error!(queue = %queue_key, "the queue key is not a list; this queue is skipped until it is fixed");
                    warned = true;
                }
                shutdown.sleep(Duration::from_secs(5)).await;
            }
            Err(_) => {
                conn = None;
                shutdown.sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
