//! Saving and enqueueing jobs ([`enqueue.lua`](enqueue.lua)): the hash RQ's `Job.save()`
//! writes, then queued, deferred (unmet dependencies) or scheduled, in one atomic step
//! per job; many jobs pipeline one EVALSHA each.

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

/// Enqueues many jobs in one pipeline; returns each job's status or error, in order.
pub async fn enqueue_many<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &Keys,
    jobs: &[NewJob],
) -> Result<Vec<std::result::Result<JobStatus, String>>> {
    let sha: String = script!("enqueue.lua").load_async(conn).await?;
    let now = Stamp::now();
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    let mut out: Vec<Option<std::result::Result<JobStatus, String>>> =
        Vec::with_capacity(jobs.len());
    let mut sent = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        match args(job, keys, &now) {
            Ok(a) => {
                pipe.cmd("EVALSHA").arg(&sha).arg(0).arg(a);
                sent.push(i);
                out.push(None);
            }
            Err(e) => out.push(Some(Err(e.to_string()))),
        }
    }
    if !sent.is_empty() {
        let replies: Vec<redis::Value> = pipe.query_async(conn).await?;
        for (i, reply) in sent.into_iter().zip(replies) {
            out[i] = Some(match reply {
                redis::Value::ServerError(e) => Err(e.details().unwrap_or("error").to_string()),
                v => redis::from_redis_value::<String>(v)
                    .map_err(|e| e.to_string())
                    .and_then(status),
            });
        }
    }
    Ok(out
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Err("no reply from Redis".into())))
        .collect())
}
