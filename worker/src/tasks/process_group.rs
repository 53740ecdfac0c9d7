//! A child process that leads its own process group, for handlers that run processes
//! (exec tasks). Stopping it ([`GroupChild::stop`]) sends SIGTERM to the whole group,
//! waits up to a grace for the leader to exit, then SIGKILLs the group and reaps the
//! leader; the leader stays unreaped (a zombie holds the group id) until the group has
//! been signalled, so the id can never name an unrelated process. Dropping a child that
//! was neither waited for nor stopped SIGKILLs its group at once (tokio reaps it).

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// How often a stopping child is looked at.
const PEEK: Duration = Duration::from_millis(10);

pub struct GroupChild {
    child: Option<Child>,
    pgid: Option<libc::pid_t>,
}

impl GroupChild {
    /// Spawns `cmd` as the leader of a new process group.
    pub fn spawn(cmd: &mut Command) -> std::io::Result<GroupChild> {
        let child = cmd.process_group(0).spawn()?;
        // A group id of 0 or 1 would make kill(2) signal far more than this child.
        let pgid = child
            .id()
            .and_then(|p| libc::pid_t::try_from(p).ok())
            .filter(|p| *p > 1);
        Ok(GroupChild {
            child: Some(child),
            pgid,
        })
    }

    /// The child, to take its pipes.
    pub fn child_mut(&mut self) -> Option<&mut Child> {
        self.child.as_mut()
    }

    /// Waits for the leader to exit and reaps it (cancel-safe).
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        let Some(child) = self.child.as_mut() else {
            return Err(std::io::Error::other("the child was already reaped"));
        };
        let status = child.wait().await?;
        self.child = None;
        Ok(status)
    }

    /// SIGTERM to the group; once the leader exits, or after `grace`, SIGKILL to the
    /// group; then the leader is reaped. Returns the leader's exit status.
    pub async fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let Some(pgid) = self.pgid else {
            let _ = child.start_kill();
            return child.wait().await.ok();
        };
        signal_group(pgid, libc::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline && !has_exited(pgid) {
            tokio::time::sleep(PEEK).await;
        }
        signal_group(pgid, libc::SIGKILL);
        child.wait().await.ok()
    }
}

impl Drop for GroupChild {
    fn drop(&mut self) {
        if self.child.is_some() {
            if let Some(pgid) = self.pgid {
                signal_group(pgid, libc::SIGKILL);
            }
        }
    }
}

/// Has the leader `pid` exited? Looks without reaping (`waitid` with `WNOWAIT`).
fn has_exited(pid: libc::pid_t) -> bool {
    // SAFETY: waitid on our own child with WNOHANG | WNOWAIT only inspects its state; the
    // zeroed siginfo_t is a valid out-parameter.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let r = libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        );
        r == 0 && info.si_pid() != 0
    }
}

/// Sends `sig` to process group `pgid` (never to 0, 1 or a negative id).
pub fn signal_group(pgid: libc::pid_t, sig: libc::c_int) {
    if pgid <= 1 {
        return;
    }
    // SAFETY: kill(2) on a process group this worker created for its own child, whose
    // unreaped leader keeps the group id from being reused.
    unsafe {
        libc::kill(-pgid, sig);
    }
}

/// `exited with status 3` or `was killed by signal 9 (SIGKILL)`.
pub fn describe_exit(status: &ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => match signal_name(sig) {
            Some(name) => format!("was killed by signal {sig} ({name})"),
            None => format!("was killed by signal {sig}"),
        },
        (None, None) => format!("ended with {status}"),
    }
}

pub fn signal_name(sig: i32) -> Option<&'static str> {
    Some(match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGUSR2 => "SIGUSR2",
        _ => return None,
    })
}
