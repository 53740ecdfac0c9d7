//! Parsing of CLI argument values: JSON-or-string job arguments, durations like `30s`
//! or `12h`, `k=JSON` keyword pairs and times for scheduling.

use crate::CliError;
use runq_common::ints::{DurationError, MAX_TTL};
use serde_json::Value;

/// A job argument: a JSON value, or a bare word that is not JSON taken as a string.
pub fn json_or_string(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.to_string()))
}

/// `k=JSON` for `--kwarg`.
pub fn kwarg(s: &str) -> Result<(String, Value), CliError> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| CliError::Usage(format!("--kwarg `{s}`: expected KEY=JSON")))?;
    if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(CliError::Usage(format!(
            "--kwarg `{s}`: `{k}` is not a Python identifier"
        )));
    }
    Ok((k.to_string(), json_or_string(v)))
}

/// Seconds from `90`, `90s`, `15m`, `12h`, `2d`; `-1` passes through. At most
/// [`MAX_TTL`] (ten years): anything longer is refused, never wrapped.
pub fn seconds(flag: &str, s: &str) -> Result<i64, CliError> {
    let shown = runq_common::echo::clip(s, 40).to_string();
    let bad = || {
        CliError::Usage(format!(
            "{flag} `{shown}`: expected seconds or a duration like 30s, 15m, 12h, 2d"
        ))
    };
    if s == "-1" {
        return Ok(-1);
    }
    match runq_common::ints::duration_secs(s) {
        Ok(secs) => Ok(secs),
        Err(DurationError::Malformed) => Err(bad()),
        Err(DurationError::TooLong) => Err(CliError::Usage(format!(
            "{flag} `{shown}`: longer than {MAX_TTL} seconds (ten years)"
        ))),
    }
}

/// An absolute time for `--at`: RFC 3339 (`2026-11-23T18:00:00Z`) or epoch seconds.
pub fn at_time(s: &str) -> Result<i64, CliError> {
    if let Ok(secs) = s.parse::<i64>() {
        return Ok(secs);
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp())
        .map_err(|_| {
            CliError::Usage(format!(
                "--at `{s}`: expected RFC 3339 time (2026-11-23T18:00:00Z) or epoch seconds"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_values() {
        assert_eq!(json_or_string("3"), json!(3));
        assert_eq!(json_or_string("hello"), json!("hello"));
        assert_eq!(json_or_string("[1, \"a\"]"), json!([1, "a"]));
        assert_eq!(kwarg("k=[1,2]").unwrap(), ("k".to_string(), json!([1, 2])));
        assert!(kwarg("nokey").is_err());
        assert_eq!(seconds("--timeout", "12h").unwrap(), 43200);
        assert_eq!(seconds("--timeout", "30").unwrap(), 30);
        assert_eq!(seconds("--timeout", "-1").unwrap(), -1);
        assert!(seconds("--timeout", "soon").is_err());
        assert!(seconds("--ttl", "2562050000000000h").is_err());
        assert_eq!(at_time("1970-01-01T00:01:00Z").unwrap(), 60);
        for huge in ["213503982334602d", "9223372036854775807", "315360001"] {
            let e = seconds("--timeout", huge).unwrap_err().to_string();
            assert!(e.contains("--timeout"), "{e}");
        }
        assert_eq!(seconds("--ttl", "3650d").unwrap(), 315_360_000);
    }
}
