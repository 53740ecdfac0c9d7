//! Child processes the harness spawned: signals, and waits for their exit that are bounded
//! by [`WAIT`].

use crate::WAIT;
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
    match wait_child(child, WAIT) {
        Some(s) => s,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("process {} did not exit within {WAIT:?}", child.id());
        }
    }
}
