//! One exec child process: spawned from an argv (never a shell) as the leader of its own
//! process group ([`GroupChild`]), its input written to stdin and the last
//! [`TAIL_BYTES`] of stdout and stderr kept while both are read concurrently (so the pipes
//! never fill). When the job is cancelled the group gets SIGTERM, then SIGKILL after
//! [`KILL_GRACE`], and the leader is reaped before [`run`] returns; a future dropped
//! before that SIGKILLs the group at once.

use crate::tasks::process_group::{describe_exit, GroupChild};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::ChildStdin;
use tokio_util::sync::CancellationToken;

/// Bytes kept from the end of each of stdout and stderr.
pub const TAIL_BYTES: usize = 4096;
/// Time between SIGTERM and SIGKILL for a child killed before it exited.
pub const KILL_GRACE: Duration = Duration::from_secs(2);
/// Time the output readers get after the child exited (a grandchild may hold the pipes).
const DRAIN: Duration = Duration::from_secs(1);

/// Why a child could not be run to its exit.
#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    #[error("cannot run `{program}`: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("lost track of `{program}`: {source}")]
    Wait {
        program: String,
        source: std::io::Error,
    },
    #[error("`{program}` was cancelled")]
    Cancelled { program: String },
}

/// A child that exited.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    /// `exited with status 3` or `was killed by signal 9 (SIGKILL)`.
    pub fn how(&self) -> String {
        describe_exit(&self.status)
    }
}

/// Runs `argv` with `env` added to the worker's environment and `input` on stdin, until
/// it exits or `cancel` fires (then its group is stopped and reaped before returning).
pub async fn run(
    argv: &[String],
    env: Vec<(String, String)>,
    input: Arc<[u8]>,
    cancel: &CancellationToken,
) -> Result<Finished, ChildError> {
    let program = argv.first().cloned().unwrap_or_default();
    let mut cmd = tokio::process::Command::new(&program);
    cmd.args(argv.iter().skip(1))
        .envs(env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut group = GroupChild::spawn(&mut cmd).map_err(|source| ChildError::Spawn {
        program: program.clone(),
        source,
    })?;
    let stdout_tail = Arc::new(Mutex::new(Tail::default()));
    let stderr_tail = Arc::new(Mutex::new(Tail::default()));
    let mut readers = tokio::task::JoinSet::new();
    let mut writer = tokio::task::JoinSet::new();
    if let Some(child) = group.child_mut() {
        if let Some(r) = child.stdout.take() {
            readers.spawn(read_tail(r, stdout_tail.clone()));
        }
        if let Some(r) = child.stderr.take() {
            readers.spawn(read_tail(r, stderr_tail.clone()));
        }
        if let Some(w) = child.stdin.take() {
            writer.spawn(write_input(w, input));
        }
    }
    let status = tokio::select! {
        s = group.wait() => s.map_err(|source| ChildError::Wait { program: program.clone(), source })?,
        _ = cancel.cancelled() => {
            group.stop(KILL_GRACE).await;
            return Err(ChildError::Cancelled { program });
        }
    };
    let _ = tokio::time::timeout(DRAIN, async {
        while readers.join_next().await.is_some() {}
    })
    .await;
    let text = |t: &Arc<Mutex<Tail>>| t.lock().map(|t| t.text()).unwrap_or_default();
    Ok(Finished {
        status,
        stdout: text(&stdout_tail),
        stderr: text(&stderr_tail),
    })
}

/// Writes the input and closes stdin. A child that exits without reading it is not an
/// error here: its exit status tells.
async fn write_input(mut stdin: ChildStdin, input: Arc<[u8]>) {
    if let Err(e) = stdin.write_all(&input).await {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            tracing::debug!(error = %e, "could not write an exec child's stdin");
        }
    }
    drop(stdin);
}

async fn read_tail(mut from: impl AsyncRead + Unpin, tail: Arc<Mutex<Tail>>) {
    let mut buf = vec![0u8; 8192];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if let Ok(mut t) = tail.lock() {
                    t.push(&buf[..n]);
                }
            }
        }
    }
}

/// The last [`TAIL_BYTES`] of a stream.
#[derive(Debug, Default)]
pub struct Tail {
    buf: Vec<u8>,
    dropped: u64,
}

impl Tail {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() > TAIL_BYTES {
            let cut = self.buf.len() - TAIL_BYTES;
            self.buf.drain(..cut);
            self.dropped += cut as u64;
        }
    }

    /// The kept text; when bytes were dropped, a note says how many and the text starts
    /// at a character boundary.
    pub fn text(&self) -> String {
        if self.dropped == 0 {
            return String::from_utf8_lossy(&self.buf).into_owned();
        }
        let start = self
            .buf
            .iter()
            .position(|b| b & 0xC0 != 0x80)
            .unwrap_or(self.buf.len());
        format!(
            "[... {} earlier bytes not kept]\n{}",
            self.dropped + start as u64,
            String::from_utf8_lossy(&self.buf[start..])
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_end_at_a_char_boundary() {
        let mut t = Tail::default();
        t.push(b"x");
        t.push("é".repeat(TAIL_BYTES).as_bytes());
        let text = t.text();
        let (note, rest) = text.split_once('\n').unwrap();
        assert!(note.starts_with("[... ") && note.ends_with(" earlier bytes not kept]"));
        assert!(rest.chars().all(|c| c == 'é'), "{rest:?}");
        assert_eq!(rest.len(), TAIL_BYTES);
    }

    #[test]
    fn short_output_is_kept_whole() {
        let mut t = Tail::default();
        t.push(b"line 1\n");
        t.push(b"line 2\n");
        assert_eq!(t.text(), "line 1\nline 2\n");
    }

    fn argv(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn runs_with_input_env_and_status() {
        let finished = run(
            &argv(&["sh", "-c", "cat; echo \"$RUNQ_X\" >&2; exit 3"]),
            vec![("RUNQ_X".into(), "from env".into())],
            Arc::from(&b"from stdin"[..]),
            &CancellationToken::new(),
        )
        .await
        .unwrap();
        assert_eq!(finished.status.code(), Some(3));
        assert_eq!(finished.stdout, "from stdin");
        assert_eq!(finished.stderr, "from env\n");
        assert_eq!(finished.how(), "exited with status 3");
    }

    #[tokio::test]
    async fn missing_program_is_a_spawn_error() {
        let err = run(
            &argv(&["/nonexistent/runq-child"]),
            vec![],
            Arc::from(&b""[..]),
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot run `/nonexistent/runq-child`: "),
            "{err}"
        );
    }

    #[tokio::test]
    async fn cancel_kills_the_group() {
        let cancel = CancellationToken::new();
        let dir = std::env::temp_dir().join(format!("runq-child-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pidfile = dir.join("pid");
        let script = format!("sleep 1000 & echo $$ $! > {}; wait", pidfile.display());
        let c = cancel.clone();
        let p = pidfile.clone();
        tokio::spawn(async move {
            while !p.exists() || std::fs::read_to_string(&p).unwrap_or_default().is_empty() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            c.cancel();
        });
        let err = run(
            &argv(&["sh", "-c", &script]),
            vec![],
            Arc::from(&b""[..]),
            &cancel,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, ChildError::Cancelled { .. }), "{err}");
        let pids: Vec<libc::pid_t> = std::fs::read_to_string(&pidfile)
            .unwrap()
            .split_whitespace()
            .map(|p| p.parse().unwrap())
            .collect();
        let (leader, grandchild) = (pids[0], pids[1]);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while alive(grandchild) {
            assert!(
                std::time::Instant::now() < deadline,
                "grandchild {grandchild} survived"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // The leader is this process's child: gone once `run` reaped it.
        // SAFETY: signal 0 only checks that the process exists.
        while unsafe { libc::kill(leader, 0) } == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "leader {leader} was not reaped"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Running and not a zombie.
    fn alive(pid: libc::pid_t) -> bool {
        // SAFETY: signal 0 only checks that the process exists.
        let exists = unsafe { libc::kill(pid, 0) } == 0;
        exists
            && std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| {
                    s.rsplit_once(") ")
                        .map(|(_, r)| !r.starts_with('Z'))
                        .unwrap_or(true)
                })
                .unwrap_or(false)
    }
}
