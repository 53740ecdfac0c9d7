//! RedisPrep bookkeeping for enqueued jobs whose task works on a run: removes the step's
//! timestamp before, records `rq:<key>` = job id after, and refreshes the run's
//! `redisprep.dump` when the run directory is known. Jobs without run state cost nothing.

use crate::CliError;
use runq_common::nodb::enqueued::{self, PrepWrite};
use runq_common::nodb::{prep, rundir};
use runq_common::rq::NewJob;
use runq_common::Config;

/// The run-hash writes of a batch, with a DB 0 connection when there are any.
pub struct Prep<'a> {
    config: &'a Config,
    writes: Vec<PrepWrite>,
    conn: Option<redis::aio::MultiplexedConnection>,
}

impl<'a> Prep<'a> {
    pub async fn connect(
        config: &'a Config,
        jobs: impl IntoIterator<Item = &NewJob>,
    ) -> Result<Prep<'a>, CliError> {
        let writes: Vec<PrepWrite> = jobs
            .into_iter()
            .filter_map(|j| enqueued::prep_write(config, j))
            .collect();
        let conn = if writes.is_empty() {
            None
        } else {
            Some(runq_common::connect::dedicated(config, config.redis.db.lock).await?)
        };
        Ok(Prep {
            config,
            writes,
            conn,
        })
    }

    pub async fn before(&self) -> Result<(), CliError> {
        if let Some(conn) = &self.conn {
            enqueued::before(&mut conn.clone(), &self.writes).await?;
        }
        Ok(())
    }

    /// Records the jobs that `was_enqueued`, then rewrites each touched run's dump.
    pub async fn after(&self, was_enqueued: impl Fn(&str) -> bool) -> Result<(), CliError> {
        let Some(conn) = &self.conn else {
            return Ok(());
        };
        let mut conn = conn.clone();
        let done: Vec<PrepWrite> = self
            .writes
            .iter()
            .filter(|w| was_enqueued(&w.job_id))
            .cloned()
            .collect();
        enqueued::after(&mut conn, &done).await?;
        let Some(runs_dir) = &self.config.worker.runs_dir else {
            return Ok(());
        };
        let mut runids: Vec<&str> = done.iter().map(|w| w.runid.as_str()).collect();
        runids.sort();
        runids.dedup();
        for runid in runids {
            if let Ok(wd) = rundir::run_dir(runs_dir, runid) {
                if wd.is_dir() {
                    prep::dump(&mut conn, runid, &wd)
                        .await
                        .map_err(CliError::Other)?;
                }
            }
        }
        Ok(())
    }
}
