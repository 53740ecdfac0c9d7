//! RQ's time encodings: the `%Y-%m-%dT%H:%M:%S.%fZ` datetime text, float epoch text and
//! whole-second registry scores.

use chrono::{DateTime, NaiveDateTime, Utc};

/// RQ's datetime format, always UTC with six fractional digits and a literal `Z`.
pub const RQ_DATETIME_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.6fZ";

/// One instant rendered in every form a state change needs, so a transition uses one clock reading.
#[derive(Debug, Clone)]
pub struct Stamp {
    pub at: DateTime<Utc>,
    /// `2026-11-23T18:39:54.346171Z`
    pub text: String,
    /// Float epoch seconds as Python prints them, e.g. `1795459194.3455`.
    pub epoch_text: String,
    /// Whole UNIX seconds, as registry scores use them.
    pub secs: i64,
}

/// This host's wall clock, shifted by `RUNQ_CLOCK_OFFSET_SECS` when that is set (a test
/// hook for clock skew between hosts: runq takes every decision that compares times across
/// hosts — deadlines, abandonment, due times, lock expiry — from Redis's clock or from
/// relative durations, and only writes its own clock into timestamps people read).
pub fn now() -> DateTime<Utc> {
    static OFFSET: std::sync::OnceLock<chrono::TimeDelta> = std::sync::OnceLock::new();
    let offset = OFFSET.get_or_init(|| {
        std::env::var("RUNQ_CLOCK_OFFSET_SECS")
            .ok()
            .and_then(|v| v.trim().parse::<i64>().ok())
            .and_then(chrono::TimeDelta::try_seconds)
            .unwrap_or_default()
    });
    Utc::now() + *offset
}

impl Stamp {
    pub fn now() -> Self {
        Self::at(now())
    }

    pub fn at(at: DateTime<Utc>) -> Self {
        Stamp {
            text: format_datetime(&at),
            epoch_text: epoch_text(&at),
            secs: at.timestamp(),
            at,
        }
    }
}

/// Formats a datetime exactly as RQ's `utcformat` does (written out by hand for the
/// years RQ can produce: every state change stamps several of these).
pub fn format_datetime(at: &DateTime<Utc>) -> String {
    use chrono::{Datelike, Timelike};
    let year = at.year();
    if !(0..=9999).contains(&year) {
        return at.format(RQ_DATETIME_FORMAT).to_string();
    }
    // A leap second shows as nanosecond >= 1e9; `%.6f` prints it the same way.
    let micros = at.nanosecond() / 1_000;
    format!(
        "{year:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        at.month(),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

/// Parses RQ datetime text (with or without the fractional part). Empty text is `None`.
pub fn parse_datetime(text: &str) -> Result<Option<DateTime<Utc>>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.fZ")
        .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%SZ"))
        .map(|n| Some(n.and_utc()))
        .map_err(|_| format!("`{text}` is not RQ datetime text (%Y-%m-%dT%H:%M:%S.%fZ)"))
}

/// Float epoch seconds in Python's shortest `repr` form.
pub fn epoch_text(at: &DateTime<Utc>) -> String {
    let micros = at.timestamp_micros();
    let secs = micros as f64 / 1_000_000.0;
    format!("{secs}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_formatting_matches_the_strftime_format() {
        let mut at = DateTime::<Utc>::from_timestamp(0, 0).unwrap();
        for step in [1, 999_999, 86_399_999_999, 1_234_567_890_123_456] {
            for _ in 0..50 {
                at += chrono::TimeDelta::microseconds(step);
                assert_eq!(
                    format_datetime(&at),
                    at.format(RQ_DATETIME_FORMAT).to_string()
                );
            }
        }
    }

    #[test]
    fn round_trips_rq_datetime() {
        let at = parse_datetime("2026-11-23T18:39:54.346171Z")
            .unwrap()
            .unwrap();
        assert_eq!(format_datetime(&at), "2026-11-23T18:39:54.346171Z");
        let plain = parse_datetime("2026-01-01T00:00:00Z").unwrap().unwrap();
        assert_eq!(format_datetime(&plain), "2026-01-01T00:00:00.000000Z");
        assert!(parse_datetime("2026-01-01T00:00:00+00:00").is_err());
        assert_eq!(parse_datetime("").unwrap(), None);
    }

    #[test]
    fn epoch_text_matches_python_repr() {
        let at = DateTime::from_timestamp_micros(1_795_459_194_345_500).unwrap();
        assert_eq!(epoch_text(&at), "1795459194.3455");
    }
}
