//! The RedisPrep side of enqueueing a task that works on a run, as WEPPcloud's routes do:
//! before the job is enqueued its `timestamps:<prep_task>` is removed (the run is no
//! longer "done" for that step), and once it is enqueued `rq:<short name>` holds its id.

use super::prep;
use crate::config::Config;
use crate::rq::NewJob;
use crate::taskspec::TaskSpec;
use redis::aio::ConnectionLike;

/// What enqueueing `job` writes to its run hash, if its task names a runid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrepWrite {
    /// The RedisPrep hash key (the last `;;` part of the runid).
    pub runid: String,
    /// Field `rq:<key>` gets the job id.
    pub key: String,
    /// Field `timestamps:<task>` is removed first.
    pub task: Option<String>,
    pub job_id: String,
}

/// The run-hash writes for `job`, or None for a task without run state.
pub fn prep_write(config: &Config, job: &NewJob) -> Option<PrepWrite> {
    let spec = TaskSpec::resolve(config, &job.call.func_name);
    let runid = spec.runid(&job.call.args, &job.call.kwargs)?;
    super::rundir::validate_runid(&runid).ok()?;
    Some(PrepWrite {
        runid: super::rundir::prep_key(&runid).to_string(),
        key: spec.short_name().to_string(),
        task: spec.prep_task.clone(),
        job_id: job.id.clone(),
    })
}

/// Before enqueueing: `HDEL <runid> timestamps:<task>` for every write, pipelined.
pub async fn before<C: ConnectionLike + Send>(
    conn: &mut C,
    writes: &[PrepWrite],
) -> redis::RedisResult<()> {
    let mut p = redis::pipe();
    for w in writes {
        if let Some(task) = &w.task {
            p.hdel(&w.runid, prep::timestamp_field(task)).ignore();
        }
    }
    p.query_async(conn).await
}

/// After enqueueing: `HSET <runid> rq:<key> <job id>` for every write, pipelined.
pub async fn after<C: ConnectionLike + Send>(
    conn: &mut C,
    writes: &[PrepWrite],
) -> redis::RedisResult<()> {
    let mut p = redis::pipe();
    for w in writes {
        p.hset(&w.runid, prep::rq_field(&w.key), &w.job_id).ignore();
    }
    p.query_async(conn).await
}
