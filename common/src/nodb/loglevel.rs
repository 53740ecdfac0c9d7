//! Per-run log levels in DB 15: `loglevel:<runid>` holds a number (`10`..`50`) or a name
//! (`debug`, `info`, `warning`, `error`, `critical`); anything else means INFO (20).

use redis::aio::ConnectionLike;

pub const DEBUG: u8 = 10;
pub const INFO: u8 = 20;
pub const WARNING: u8 = 30;
pub const ERROR: u8 = 40;

/// `loglevel:<runid>`.
pub fn key(runid: &str) -> String {
    format!("loglevel:{runid}")
}

/// Parses a stored level as wepppy's getter does.
pub fn parse(raw: Option<&str>) -> u8 {
    let Some(raw) = raw.map(str::trim) else {
        return INFO;
    };
    match raw.to_ascii_lowercase().as_str() {
        "debug" | "10" => 10,
        "info" | "20" => 20,
        "warning" | "30" => 30,
        "error" | "40" => 40,
        "critical" | "50" => 50,
        _ => INFO,
    }
}

/// The run's level (INFO when unset or invalid).
pub async fn get<C: ConnectionLike + Send>(conn: &mut C, runid: &str) -> redis::RedisResult<u8> {
    let raw: Option<String> = redis::cmd("GET").arg(key(runid)).query_async(conn).await?;
    Ok(parse(raw.as_deref()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_and_numbers() {
        assert_eq!(super::parse(Some("DEBUG")), 10);
        assert_eq!(super::parse(Some("40")), 40);
        assert_eq!(super::parse(Some("loud")), 20);
        assert_eq!(super::parse(None), 20);
    }
}
