//! Child processes the harness spawned: signals, and waits for their exit that are bounded
//! by [`WAIT`] (with the end of the child's log when it does not exit).

use crate::WAIT;
use std::path::Path;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

pub(crate) fn send_signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) with a pid this harness spawned and still owns (not yet reaped).
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// The child's exit status once it exits within `limit`; `None` if it is still running.
pub(crate) fn wait_child(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return Some(s);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (bounded) for a child to exit and returns its status.
pub fn wait_exit(child: &mut Child) -> ExitStatus {
    wait_exit_or_show(child, None)
}

/// [`wait_exit`] for a child that writes a log file: a child that does not exit is
/// reported with the log's end, which says where it hung.
pub fn wait_exit_logged(child: &mut Child, log: &Path) -> ExitStatus {
    wait_exit_or_show(child, Some(log))
}

fn wait_exit_or_show(child: &mut Child, log: Option<&Path>) -> ExitStatus {
    match wait_child(child, WAIT) {
        Some(s) => s,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            let tail = log.map(log_tail).unwrap_or_default();
            panic!("process {} did not exit within {WAIT:?}{tail}", child.id());
        }
    }
}

/// The last lines of a log file, as a panic message's suffix.
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(30);
    format!(
        "; the end of {}:\n{}",
        log.display(),
        lines[start..].join("\n")
    )
}
