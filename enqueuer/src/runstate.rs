//! RedisPrep bookkeeping for enqueued jobs whose task works on a run: removes the step's
//! timestamp before, records `rq:<key>` = job id after, and refreshes the run's
//! `redisprep.dump` when the run directory is known. Jobs without run state cost nothing.

use crate::CliError;
use runq_common::nodb::enqueued::{self, PrepWrite};
use runq_common::nodb::{prep, rundir};
use runq_common::rq::NewJob;
use runq_common::Config;

/// The run-hash writes of enqueued jobs; connects to DB 0 the first time a job has any.
pub struct Prep<'a> {
    config: &'a Config,
    conn: Option<redis::aio::MultiplexedConnection>,
}

impl<'a> Prep<'a> {
    pub fn new(config: &'a Config) -> Prep<'a> {
        Prep { config, conn: None }
    }

    /// The writes `jobs` need (often none, then nothing else happens).
    pub fn writes<'j>(&self, jobs: impl IntoIterator<Item = &'j NewJob>) -> Vec<PrepWrite> {
        jobs.into_iter()
            .filter_map(|j| enqueued::prep_write(self.config, j))
            .collect()
    }

    async fn conn(&mut self) -> Result<&mut redis::aio::MultiplexedConnection, CliError> {
        if self.conn.is_none() {
            let db = self.config.redis.db.lock;
            self.conn = Some(runq_common::connect::dedicated(self.config, db).await?);
        }
        Ok(self.conn.as_mut().expect("connected above"))
    }

    /// Before enqueueing: removes the steps' timestamps.
    pub async fn before(&mut self, writes: &[PrepWrite]) -> Result<(), CliError> {
        if !writes.is_empty() {
            enqueued::before(self.conn().await?, writes).await?;
        }
        Ok(())
    }

    /// Records the jobs that `was_enqueued`, then rewrites each touched run's dump.
    pub async fn after(
        &mut self,
        writes: &[PrepWrite],
        was_enqueued: impl Fn(&str) -> bool,
    ) -> Result<(), CliError> {
        let done: Vec<PrepWrite> = writes
            .iter()
            .filter(|w| was_enqueued(&w.job_id))
            .cloned()
            .collect();
        if done.is_empty() {
            return Ok(());
        }
        let runs_dir = self.config.worker.runs_dir.clone();
        let conn = self.conn().await?;
        enqueued::after(conn, &done).await?;
        let Some(runs_dir) = runs_dir else {
            return Ok(());
        };
        let mut runids: Vec<&str> = done.iter().map(|w| w.runid.as_str()).collect();
        runids.sort();
        runids.dedup();
        for runid in runids {
            if let Ok(wd) = rundir::run_dir(&runs_dir, runid) {
                if wd.is_dir() {
                    prep::dump(conn, runid, &wd)
                        .await
                        .map_err(CliError::Other)?;
                }
            }
        }
        Ok(())
    }
}
