//! The `state` field of an RQ worker hash, as RQ's `WorkerStatus` names it.

use std::fmt;

/// What a worker (one runq slot) is doing, as `rq info` and dashboards show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerState {
    Idle,
    Busy,
    Suspended,
}

impl WorkerState {
    /// The wire value (the Lua prelude writes the same words for idle and busy).
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Idle => "idle",
            WorkerState::Busy => "busy",
            WorkerState::Suspended => "suspended",
        }
    }
}

impl fmt::Display for WorkerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
