//! Status lines on DB 2 pub/sub, channel `<runid>:<channel>`, in WEPPcloud's grammar:
//! `rq:<jobid> STARTED <func>(<runid>)`, `COMPLETED`, `EXCEPTION`, `TRIGGER`, `STATUS`.

use redis::aio::ConnectionLike;

/// `<runid>:<channel>`.
pub fn channel(runid: &str, suffix: &str) -> String {
    format!("{runid}:{suffix}")
}

pub fn started(job_id: &str, func: &str, runid: &str) -> String {
    format!("rq:{job_id} STARTED {func}({runid})")
}

pub fn completed(job_id: &str, func: &str, runid: &str) -> String {
    format!("rq:{job_id} COMPLETED {func}({runid})")
}

/// `rq:<id> EXCEPTION <func>(<runid>): <error>` (the error on the same line).
pub fn exception(job_id: &str, func: &str, runid: &str, error: &str) -> String {
    let first = error.lines().next().unwrap_or("");
    format!("rq:{job_id} EXCEPTION {func}({runid}): {first}")
}

/// `rq:<id> TRIGGER   <channel> <EVENT>` (three spaces, as WEPPcloud's project tasks;
/// the browser takes the last token as the event and the one before as the channel).
pub fn trigger(job_id: &str, channel: &str, event: &str) -> String {
    format!("rq:{job_id} TRIGGER   {channel} {event}")
}

/// `rq:<id> STATUS <text>`.
pub fn status(job_id: &str, text: &str) -> String {
    format!("rq:{job_id} STATUS {text}")
}

/// `PUBLISH channel line`; returns the number of subscribers that got it.
pub async fn publish<C: ConnectionLike + Send>(
    conn: &mut C,
    channel: &str,
    line: &str,
) -> redis::RedisResult<i64> {
    redis::cmd("PUBLISH")
        .arg(channel)
        .arg(line)
        .query_async(conn)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_match_wepppy_grammar() {
        assert_eq!(
            started("j1", "build_climate", "run-1"),
            "rq:j1 STARTED build_climate(run-1)"
        );
        assert_eq!(
            trigger("j1", "climate", "CLIMATE_BUILD_TASK_COMPLETED"),
            "rq:j1 TRIGGER   climate CLIMATE_BUILD_TASK_COMPLETED"
        );
        assert_eq!(
            exception("j1", "f", "r", "ValueError: bad\ntrace"),
            "rq:j1 EXCEPTION f(r): ValueError: bad"
        );
    }
}
