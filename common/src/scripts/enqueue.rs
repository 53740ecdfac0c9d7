//! Saving and enqueueing jobs ([`enqueue.lua`](enqueue.lua)): the hash RQ's `Job.save()`
//! writes, then queued, deferred (unmet dependencies) or scheduled, in one atomic step
//! per job; many jobs go [`BATCH_JOBS`] to a script call
//! ([`enqueue_batch.lua`](enqueue_batch.lua)).

use super::script;
use crate::error::{Error, Result};
use crate::job::JobStatus;
use crate::keys::Keys;
use crate::rq::NewJob;
use crate::timefmt::Stamp;
use redis::aio::ConnectionLike;

/// The script's arguments for one job (validated first), without the prefix.
pub(super) fn job_args(job: &NewJob, now: &Stamp) -> Result<Vec<Vec<u8>>> {
    job.validate()?;
    let fields = job.fields(now)?;
    let mode = if job.schedule_at.is_some() || job.schedule_in.is_some() {
        "schedule"
    } else if job.at_front {
        "front"
    } else {
        "back"
    };
    let text = |s: &str| s.as_bytes().to_vec();
    let mut args = vec![
        text(&job.id),
        text(&job.queue),
        text(mode),
        text(&match job.schedule_in {
            Some(delay) => format!("+{delay}"),
            None => job.schedule_at.unwrap_or(0).to_string(),
        }),
        text(&now.text),
        text(&job.ttl.map(|t| t.to_string()).unwrap_or_default()),
        text(if job.allow_dependency_failures {
            "1"
        } else {
            "0"
        }),
        text(&job.depends_on.len().to_string()),
    ];
    args.extend(job.depends_on.iter().map(|d| text(d)));
    args.push(text(&fields.len().to_string()));
    for (k, v) in fields {
        args.push(text(k));
        args.push(v);
    }
    Ok(args)
}

/// The script's arguments for one job: the prefix, then [`job_args`].
fn args(job: &NewJob, keys: &Keys, now: &Stamp) -> Result<Vec<Vec<u8>>> {
    let mut args = vec![keys.prefix().as_bytes().to_vec()];
    args.extend(job_args(job, now)?);
    Ok(args)
}

pub(super) fn status(reply: String) -> std::result::Result<JobStatus, String> {
    JobStatus::parse(&reply).ok_or_else(|| format!("enqueue returned `{reply}`"))
}

/// Enqueues one job; returns the status it got (queued, deferred or scheduled).
pub async fn enqueue<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &Keys,
    job: &NewJob,
) -> Result<JobStatus> {
    let mut inv = script!("enqueue.lua").prepare_invoke();
    for a in args(job, keys, &Stamp::now())? {
        inv.arg(a);
    }
    let reply: String = inv.invoke_async(conn).await?;
    status(reply).map_err(Error::Invalid)
}

/// Jobs per script call in [`enqueue_many`]: Redis runs one call at a time, so a batch
/// is kept short enough (a few milliseconds) not to hold up the workers.
pub const BATCH_JOBS: usize = 250;

/// One job's outcome in a batch: the status it got, or why it was not enqueued.
pub type BatchOutcome = std::result::Result<JobStatus, String>;

/// Jobs checked and encoded for [`send_enqueue`]: the pipeline of script calls
/// ([`BATCH_JOBS`] jobs each) and, per job, its outcome where it is known before Redis
/// (a job that fails validation). Building it is the CPU part of an enqueue (pickling,
/// compressing), so a caller can build the next one while Redis runs this one.
pub struct PreparedEnqueue {
    pipe: redis::Pipeline,
    batches: Vec<Vec<usize>>,
    out: Vec<Option<BatchOutcome>>,
}

/// Checks and encodes `jobs` for [`send_enqueue`] (touches no Redis).
pub fn prepare_enqueue(keys: &Keys, jobs: &[NewJob]) -> PreparedEnqueue {
    let sha = script!("enqueue_batch.lua").get_hash().to_string();
    let now = Stamp::now();
    let mut out: Vec<Option<BatchOutcome>> = Vec::with_capacity(jobs.len());
    let mut batches: Vec<Vec<usize>> = Vec::new();
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    let mut call: Option<(redis::Cmd, Vec<usize>, Vec<Vec<u8>>)> = None;
    for (i, job) in jobs.iter().enumerate() {
        match job_args(job, &now) {
            Ok(a) => {
                let (_, members, args) =
                    call.get_or_insert_with(|| (redis::cmd("EVALSHA"), Vec::new(), Vec::new()));
                members.push(i);
                args.extend(a);
                out.push(None);
                if members.len() == BATCH_JOBS {
                    let (cmd, members, args) = call.take().expect("just filled");
                    add_batch(&mut pipe, cmd, &sha, keys, &members, args);
                    batches.push(members);
                }
            }
            Err(e) => out.push(Some(Err(e.to_string()))),
        }
    }
    if let Some((cmd, members, args)) = call.take() {
        add_batch(&mut pipe, cmd, &sha, keys, &members, args);
        batches.push(members);
    }
    PreparedEnqueue { pipe, batches, out }
}

/// Sends a [`prepare_enqueue`]d batch in one pipeline; returns each job's status or
/// error, in order (a job that fails validation or whose enqueue Redis refuses is
/// reported, and the others still go ahead).
pub async fn send_enqueue<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    prepared: PreparedEnqueue,
) -> Result<Vec<BatchOutcome>> {
    let PreparedEnqueue {
        pipe,
        batches,
        mut out,
    } = prepared;
    if !batches.is_empty() {
        // Loaded (a no-op when Redis has it) before every batch: Redis may have restarted
        // or flushed its scripts since the last one.
        script!("enqueue_batch.lua").load_async(conn).await?;
        let replies: Vec<redis::Value> = pipe.query_async(conn).await?;
        for (members, reply) in batches.into_iter().zip(replies) {
            let entries: Vec<String> = match reply {
                redis::Value::ServerError(e) => {
                    let why = e.details().unwrap_or("error").to_string();
                    vec![format!("error {why}"); members.len()]
                }
                v => redis::from_redis_value(v).map_err(redis::RedisError::from)?,
            };
            for (i, entry) in members.into_iter().zip(entries) {
                out[i] = Some(match entry.strip_prefix("error ") {
                    Some(why) => Err(why.to_string()),
                    None => status(entry),
                });
            }
        }
    }
    Ok(out
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Err("no reply from Redis".into())))
        .collect())
}

/// Enqueues many jobs, [`BATCH_JOBS`] per script call, all calls in one pipeline:
/// [`prepare_enqueue`] then [`send_enqueue`].
pub async fn enqueue_many<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &Keys,
    jobs: &[NewJob],
) -> Result<Vec<BatchOutcome>> {
    send_enqueue(conn, prepare_enqueue(keys, jobs)).await
}

fn add_batch(
    pipe: &mut redis::Pipeline,
    mut cmd: redis::Cmd,
    sha: &str,
    keys: &Keys,
    members: &[usize],
    args: Vec<Vec<u8>>,
) {
    cmd.arg(sha).arg(0).arg(keys.prefix()).arg(members.len());
    for a in args {
        cmd.arg(a);
    }
    pipe.add_command(cmd);
}
