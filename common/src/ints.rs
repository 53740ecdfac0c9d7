//! The one rule for integers in job data, shared with the Lua prelude
//! (`parse_int`/`int_in` in `scripts/prelude.lua`), so Rust and the scripts always agree
//! on what a valid `timeout`, TTL or retry count is: an optional `-` then 1 to 15 ASCII
//! digits, nothing else (no spaces, exponents, `inf`, `nan` or hex), which keeps every
//! value exact both in i64 and in Lua's doubles. Bounds keep every value something Redis
//! can EXPIRE and a timer can add to the clock.

/// Longest TTL (and retry interval) in seconds: ten years.
pub const MAX_TTL: i64 = 315_360_000;
/// Longest job timeout in seconds: ten years.
pub const MAX_TIMEOUT: i64 = MAX_TTL;
/// Most retries a job may ask for.
pub const MAX_RETRIES: i64 = 1_000_000;

/// Parses an integer under the shared rule.
pub fn parse_int(s: &str) -> Option<i64> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    if digits.is_empty() || digits.len() > 15 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Parses an integer and checks it lies in `lo..=hi`.
pub fn int_in(s: &str, lo: i64, hi: i64) -> Option<i64> {
    parse_int(s).filter(|n| (lo..=hi).contains(n))
}

/// Why a duration was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DurationError {
    /// Not `90`, `90s`, `15m`, `12h` or `2d`.
    Malformed,
    /// Longer than [`MAX_TTL`].
    TooLong,
}

/// Seconds from `90`, `90s`, `15m`, `12h`, `2d` (the shared integer rule before the
/// unit), at most [`MAX_TTL`]: anything longer is refused, never wrapped.
pub fn duration_secs(s: &str) -> Result<i64, DurationError> {
    let (num, mult) = match s.as_bytes().last() {
        Some(b's') => (&s[..s.len() - 1], 1),
        Some(b'm') => (&s[..s.len() - 1], 60),
        Some(b'h') => (&s[..s.len() - 1], 3600),
        Some(b'd') => (&s[..s.len() - 1], 86400),
        _ => (s, 1),
    };
    let n = parse_int(num).filter(|n| *n >= 0);
    match n.map(|n| n.checked_mul(mult)) {
        None => Err(DurationError::Malformed),
        Some(Some(secs)) if secs <= MAX_TTL => Ok(secs),
        Some(_) => Err(DurationError::TooLong),
    }
}

/// True for a TTL a job may carry: -1 (keep forever) to [`MAX_TTL`].
pub fn valid_ttl(n: i64) -> bool {
    (-1..=MAX_TTL).contains(&n)
}

/// True for a job timeout: -1 (no limit) or 1 to [`MAX_TIMEOUT`] seconds.
pub fn valid_timeout(n: i64) -> bool {
    n == -1 || (1..=MAX_TIMEOUT).contains(&n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_decimal_integers_parse() {
        for ok in ["0", "5", "-1", "123456789012345", "-123456789012345"] {
            assert!(parse_int(ok).is_some(), "{ok}");
        }
        for bad in [
            "",
            "-",
            " 5",
            "5 ",
            "+5",
            "1e3",
            "inf",
            "nan",
            "0x10",
            "1.0",
            "1234567890123456",
            "--1",
        ] {
            assert_eq!(parse_int(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(duration_secs("90"), Ok(90));
        assert_eq!(duration_secs("15m"), Ok(900));
        assert_eq!(duration_secs("2d"), Ok(172_800));
        assert_eq!(
            duration_secs("213503982334602d"),
            Err(DurationError::TooLong)
        );
        assert_eq!(duration_secs("-5s"), Err(DurationError::Malformed));
        assert_eq!(duration_secs("soon"), Err(DurationError::Malformed));
    }

    #[test]
    fn bounds_are_checked() {
        assert_eq!(int_in("10", 0, 5), None);
        assert_eq!(int_in("5", 0, 5), Some(5));
        assert!(valid_ttl(-1) && valid_ttl(MAX_TTL) && !valid_ttl(MAX_TTL + 1) && !valid_ttl(-2));
        assert!(valid_timeout(-1) && !valid_timeout(0) && !valid_timeout(-5));
    }
}
