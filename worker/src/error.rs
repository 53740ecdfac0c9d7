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
