//! Periodic jobs (`[[cron]]`): one process across every host leads (an owner-token lock,
//! renewed every second, lost within [`LOCK_TTL`] of its holder dying), and fires each due
//! entry with [`runq_common::scripts::cron::fire`], which enqueues the job and moves the
//! entry's next tick in one atomic step guarded by the lock and the tick — so each tick
//! is enqueued exactly once. Ticks are read on Redis's clock; ticks missed while nobody
//! led are caught up with one job, then the schedule continues from now.

use crate::service::Service;
use crate::shutdown::Shutdown;
use chrono::{DateTime, Utc};
use runq_common::config::{Config, CronConfig, CronSchedule};
use runq_common::connect::SharedConnection;
use runq_common::payload::JobCall;
use runq_common::rq::NewJob;
use runq_common::scripts::cron::{self, CronState, Fired};
use std::sync::Arc;
use std::time::Duration;

/// How long the leader lock lives without renewal: the failover time.
pub const LOCK_TTL: u64 = 5;
const TICK: Duration = Duration::from_secs(1);

pub struct Cron {
    pub config: Arc<Config>,
    pub redis: SharedConnection,
}

/// An entry with its parsed schedule.
struct Entry {
    config: CronConfig,
    schedule: CronSchedule,
    /// For `runq info`: the expression or `every 90s`.
    shown: String,
}

impl Service for Cron {
    const NAME: &'static str = "cron";

    async fn run(self, shutdown: Shutdown) {
        let entries: Vec<Entry> = self
            .config
            .cron
            .iter()
            .filter_map(|c| {
                let schedule = c.schedule().ok()?;
                let shown = match (&c.cron, &c.interval) {
                    (Some(expr), _) => expr.clone(),
                    (_, Some(every)) => format!("every {every}"),
                    _ => String::new(),
                };
                Some(Entry {
                    config: c.clone(),
                    schedule,
                    shown,
                })
            })
            .collect();
        let token = uuid::Uuid::new_v4().simple().to_string();
        let mut leading = false;
        loop {
            match self.tick(&entries, &token, leading).await {
                Ok(now_leading) => {
                    if now_leading && !leading {
                        tracing::info!(entries = entries.len(), "leading periodic jobs ([[cron]])");
                    } else if leading && !now_leading {
                        tracing::warn!("no longer leading periodic jobs (the lock was taken over)");
                    }
                    leading = now_leading;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "periodic jobs tick failed; will retry");
                    self.redis.reset().await;
                }
            }
            if !shutdown.sleep(TICK).await {
                break;
            }
        }
        if leading {
            if let Ok(mut conn) = self.redis.get().await {
                let _ = cron::keep_lead(&mut conn, &self.config.keys(), &token, 0).await;
            }
        }
    }
}

impl Cron {
    /// One tick: lead (or keep leading), then fire what is due. Returns whether this
    /// process leads.
    async fn tick(
        &self,
        entries: &[Entry],
        token: &str,
        leading: bool,
    ) -> runq_common::Result<bool> {
        let keys = self.config.keys();
        let mut conn = self.redis.get().await?;
        let leads = if leading {
            cron::keep_lead(&mut conn, &keys, token, LOCK_TTL).await?
        } else {
            cron::try_lead(&mut conn, &keys, token, LOCK_TTL).await?
        };
        if !leads {
            return Ok(false);
        }
        let now = redis_now(&mut conn).await?;
        let states = cron::states(&mut conn, &keys).await?;
        for entry in entries {
            let name = &entry.config.name;
            let Some(state) = states.get(name) else {
                // First sight of this entry: its first tick is the next one from now.
                if let Some(next) = entry.schedule.next_after(now) {
                    cron::init(&mut conn, &keys, name, &self.state(entry, next, None, None))
                        .await?;
                }
                continue;
            };
            if now.timestamp() < state.next {
                continue;
            }
            let Some(next) = entry.schedule.next_after(now) else {
                continue;
            };
            let job = self.job(&entry.config);
            let new_state = self.state(entry, next, Some(state.next), Some(job.id.clone()));
            match cron::fire(
                &mut conn,
                &keys,
                token,
                name,
                Some(state.next),
                &new_state,
                &job,
            )
            .await?
            {
                Fired::Enqueued(status) => {
                    tracing::info!(cron = %name, job = %job.id, queue = %job.queue, %status, "periodic job enqueued")
                }
                Fired::NotLeader => return Ok(false),
                Fired::Stale => {}
            }
        }
        Ok(true)
    }

    fn state(
        &self,
        entry: &Entry,
        next: DateTime<Utc>,
        last: Option<i64>,
        last_job: Option<String>,
    ) -> CronState {
        CronState {
            next: next.timestamp(),
            schedule: entry.shown.clone(),
            func: entry.config.func.clone(),
            queue: entry.config.queue.clone(),
            last,
            last_job,
        }
    }

    fn job(&self, c: &CronConfig) -> NewJob {
        let call = JobCall {
            func_name: c.func.clone(),
            args: c.args.clone(),
            kwargs: c.kwargs.clone(),
        };
        let mut job = NewJob::new(&c.queue, call, self.config.serializer_for(&c.queue));
        job.timeout = c.timeout;
        job
    }
}

/// Redis's clock.
async fn redis_now(
    conn: &mut redis::aio::MultiplexedConnection,
) -> runq_common::Result<DateTime<Utc>> {
    let (secs, micros): (i64, i64) = redis::cmd("TIME").query_async(conn).await?;
    Ok(DateTime::from_timestamp(secs, (micros * 1000) as u32).unwrap_or_else(Utc::now))
}
