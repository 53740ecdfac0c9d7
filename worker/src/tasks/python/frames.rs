//! The frames runq-worker and the Python task host exchange (PROTOCOL.md beside this
//! file): a 4-byte big-endian length, then that many bytes of JSON with an `op` field.
//! [`ToHost`] and [`FromHost`] are every message, typed.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Longest frame either side accepts.
pub const MAX_FRAME: usize = 256 * 1024 * 1024;

/// The protocol version both sides speak.
pub const PROTOCOL: u32 = 1;

/// worker → host.
#[derive(Debug, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ToHost {
    Init {
        protocol: u32,
        sys_path: Vec<String>,
        preload: Vec<String>,
        before_job: Option<String>,
        redis_url: String,
        redis_ca_file: Option<String>,
        kill_grace: f64,
        max_output_bytes: u64,
    },
    Run(RunJob),
    Kill {
        job_id: String,
    },
    Callback(RunCallback),
    Ping {
        seq: u64,
    },
}

/// A job to fork a child for.
#[derive(Debug, Serialize)]
pub struct RunJob {
    pub job_id: String,
    pub func: String,
    pub serializer: String,
    /// Every field of the job hash as claimed, base64.
    pub hash: BTreeMap<String, String>,
    pub status: String,
    pub started_at: String,
    pub worker_name: String,
    /// Seconds; `None`: no limit.
    pub timeout: Option<u64>,
    pub env: BTreeMap<String, String>,
    /// The Redis URL for this job's process when it is no longer the `init` frame's
    /// (Sentinel named another master since the host started).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,
}

/// A callback to run in a child of its own (stopped callbacks; callbacks of jobs that did
/// not run in Python).
#[derive(Debug, Serialize)]
pub struct RunCallback {
    pub job_id: String,
    /// `success`, `failure` or `stopped`.
    pub kind: String,
    pub serializer: String,
    pub hash: BTreeMap<String, String>,
    pub timeout: Option<u64>,
    pub return_value: Option<String>,
    pub exc_string: Option<String>,
    /// A failure callback for a job abandoned by its worker: RQ's cleanup passes
    /// `(AbandonedJobError, AbandonedJobError(), None)`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub abandoned: bool,
    /// As [`RunJob::redis_url`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,
}

/// host → worker.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum FromHost {
    Ready {
        protocol: u32,
        pid: u32,
        python: String,
        rq: String,
        /// Of the host's memory, gathered into transparent huge pages before the first fork.
        #[serde(default)]
        huge_page_bytes: u64,
    },
    Fatal {
        error: String,
    },
    Started {
        job_id: String,
        pid: i32,
    },
    Output {
        job_id: String,
        stream: String,
        text: String,
    },
    Done(Done),
    Pong {
        seq: u64,
        rss_bytes: u64,
        children: u64,
    },
    Error {
        job_id: Option<String>,
        error: String,
    },
}

/// How a job (or callback) child ended.
#[derive(Debug, Deserialize)]
pub struct Done {
    pub job_id: String,
    /// `ok`, `failed`, `retry`, `crashed` or `killed`.
    pub outcome: String,
    #[serde(default)]
    pub return_value: Option<String>,
    #[serde(default)]
    pub exc_string: Option<String>,
    #[serde(default)]
    pub max: Option<i64>,
    #[serde(default)]
    pub intervals: Option<Vec<i64>>,
    #[serde(default)]
    pub at_front: Option<bool>,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub signal: Option<i32>,
}

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {0} bytes is above the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    #[error("frame is not a protocol message: {0}")]
    Json(#[from] serde_json::Error),
}

/// Writes one frame (length and body in one write: one syscall on an unbuffered pipe).
pub async fn write<W: AsyncWrite + Unpin>(w: &mut W, msg: &ToHost) -> Result<(), FrameError> {
    let mut frame = vec![0u8; 4];
    serde_json::to_writer(&mut frame, msg)?;
    let len = frame.len() - 4;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    frame[..4].copy_from_slice(&(len as u32).to_be_bytes());
    w.write_all(&frame).await?;
    w.flush().await?;
    Ok(())
}

/// Reads one frame; `Ok(None)` at a clean end of stream.
pub async fn read<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Vec<u8>>, FrameError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let n = u32::from_be_bytes(len) as usize;
    if n > MAX_FRAME {
        return Err(FrameError::TooLarge(n));
    }
    let mut body = vec![0u8; n];
    r.read_exact(&mut body).await?;
    Ok(Some(body))
}

/// Parses a frame read by [`read`].
pub fn parse(body: &[u8]) -> Result<FromHost, FrameError> {
    Ok(serde_json::from_slice(body)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_are_bounded() {
        let mut buf = Vec::new();
        write(&mut buf, &ToHost::Ping { seq: 7 }).await.unwrap();
        assert_eq!(&buf[4..], br#"{"op":"ping","seq":7}"#);
        let mut r = &buf[..];
        let body = read(&mut r).await.unwrap().unwrap();
        assert_eq!(body, br#"{"op":"ping","seq":7}"#);
        assert!(read(&mut r).await.unwrap().is_none());
        let huge = (MAX_FRAME as u32 + 1).to_be_bytes();
        assert!(matches!(
            read(&mut &huge[..]).await,
            Err(FrameError::TooLarge(_))
        ));
        let done =
            parse(br#"{"op":"done","job_id":"j","outcome":"crashed","exit_code":3,"signal":null}"#)
                .unwrap();
        assert!(matches!(
            done,
            FromHost::Done(Done {
                exit_code: Some(3),
                ..
            })
        ));
    }

    #[test]
    fn ready_may_name_its_huge_pages() {
        let with = parse(br#"{"op":"ready","protocol":1,"pid":9,"python":"3.11.7","rq":"3.0.0","huge_page_bytes":14680064}"#)
            .unwrap();
        assert!(matches!(
            with,
            FromHost::Ready {
                huge_page_bytes: 14_680_064,
                ..
            }
        ));
        let without =
            parse(br#"{"op":"ready","protocol":1,"pid":9,"python":"3.11.7","rq":"1.16.2"}"#)
                .unwrap();
        assert!(matches!(
            without,
            FromHost::Ready {
                huge_page_bytes: 0,
                ..
            }
        ));
    }
}
