//! [`TaskError`]: why a job failed, as a value, from the handler (or from runq before the
//! handler ran) to the job's failure result: `<kind>: <message>`, and whether a retry
//! could ever help.

use std::fmt;

/// A job failure; recorded as `<kind>: <message>` in the job's failure result.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskError {
    /// A Python-style exception name (`TypeError`, `InvalidJob`, `NoDbLockLost`, …).
    pub kind: String,
    pub message: String,
    /// False when the job can never succeed as it is (bad job data): it is then not
    /// retried even when it has retries left.
    pub retryable: bool,
}

impl TaskError {
    pub fn new(kind: &str, message: impl Into<String>) -> Self {
        TaskError {
            kind: kind.to_string(),
            message: message.into(),
            retryable: true,
        }
    }
    /// A failure no retry can fix (the job's data is wrong).
    pub fn permanent(kind: &str, message: impl Into<String>) -> Self {
        TaskError {
            retryable: false,
            ..TaskError::new(kind, message)
        }
    }
    /// A bad argument, named like Python's `TypeError`.
    pub fn bad_argument(message: impl Into<String>) -> Self {
        TaskError::new("TypeError", message)
    }
    /// A failure whose whole text is already written (RQ's traceback, a child's stderr).
    pub fn text(text: impl Into<String>) -> Self {
        TaskError::new("", text)
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.kind.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.kind, self.message)
        }
    }
}

impl std::error::Error for TaskError {}

/// Longest summary put on a failure's first line (and on the log line of a failed job).
pub const SUMMARY_CHARS: usize = 300;

/// The line that says what went wrong: after a Python traceback, its last unindented
/// line (`ValueError: boom`); otherwise the last non-empty line. Cut to a bounded length.
pub fn summary(stderr: &str) -> Option<String> {
    let lines = || stderr.lines().map(str::trim_end).filter(|l| !l.is_empty());
    let line = match stderr.rfind("Traceback (most recent call last):") {
        Some(at) => stderr[at..]
            .lines()
            .map(str::trim_end)
            .rfind(|l| !l.is_empty() && !l.starts_with(char::is_whitespace))
            .or_else(|| lines().next_back()),
        None => lines().next_back(),
    }?;
    let line = line.trim();
    Some(match line.char_indices().nth(SUMMARY_CHARS) {
        Some((at, _)) => format!("{}...", &line[..at]),
        None => line.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts() {
        assert_eq!(
            TaskError::new("ValueError", "x").to_string(),
            "ValueError: x"
        );
        assert_eq!(
            TaskError::text("Traceback ...").to_string(),
            "Traceback ..."
        );
        assert!(!TaskError::permanent("InvalidJob", "x").retryable);
    }
}
