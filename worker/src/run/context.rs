//! [`RunContext`]: what a task running on a WEPPcloud run can do — publish status lines
//! on its channel, log at the run's level, read its NoDb documents and write the ones
//! whose locks it holds (fenced: a lost lock refuses the write), and hand its lock
//! tokens to a child process.

use super::fence::Fence;
use super::keeper::{HeldLock, LockKeeper};

use crate::tasks::TaskError;
use runq_common::connect::SharedConnection;
use runq_common::nodb::document::{cache_payload, DocumentStore};
use runq_common::nodb::lock::{self, TokenCheck};
use runq_common::nodb::{status, NODB_CACHE_TTL};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What every run context of a process shares.
pub struct RunServices {
    /// DB 0: locks and the run hash.
    pub lock_db: SharedConnection,
    /// DB 2: status pub/sub.
    pub status_db: SharedConnection,
    /// DB 13: the NoDb JSON cache.
    pub cache_db: SharedConnection,
    /// DB 15: per-run log levels.
    pub loglevel_db: SharedConnection,
    pub keeper: LockKeeper,
    pub documents: DocumentStore,
    pub runs_dir: Option<PathBuf>,
}

/// One job's view of its run.
pub struct RunContext {
    pub(super) services: Arc<RunServices>,
    pub(super) job_id: String,
    pub(super) func: String,
    pub(super) runid: String,
    pub(super) channel: Option<String>,
    pub(super) wd: Result<PathBuf, String>,
    pub(super) level: u8,
    /// The place in this process's line for the task's first lock (see `take_locks`).
    pub(super) places: std::sync::Mutex<Vec<super::turns::Place>>,
    /// The job's enqueue time in µs: its order in this process's lock lines.
    pub(super) ticket: i64,
    pub(super) fence: Arc<Fence>,
    pub(super) held: std::sync::Mutex<Vec<HeldLock>>,
    /// Leases being acquired: released by token at the end even if the acquire was cut
    /// off after Redis took the lock.
    pub(super) pending: std::sync::Mutex<Vec<runq_common::nodb::lock::Lease>>,
}

impl std::fmt::Debug for RunContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunContext")
            .field("job_id", &self.job_id)
            .field("runid", &self.runid)
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

impl RunContext {
    pub fn runid(&self) -> &str {
        &self.runid
    }

    pub fn job_id(&self) -> &str {
        &self.job_id
    }

    /// The run directory, or why there is none (no `runs_dir`, composite runid).
    pub fn wd(&self) -> Result<&Path, TaskError> {
        self.wd
            .as_deref()
            .map_err(|e| TaskError::new("NoRunDirectory", e.clone()))
    }

    /// Why the job's fence tripped, if it did.
    pub fn lock_lost(&self) -> Option<String> {
        self.fence.lost()
    }

    /// The run's log level from DB 15 (`loglevel:<runid>`), read when the job started.
    pub fn log_level(&self) -> u8 {
        self.level
    }

    /// Publishes a free-text line on the task's channel (no-op without a channel).
    pub async fn publish(&self, line: &str) {
        let Some(channel) = &self.channel else { return };
        publish_on(&self.services.status_db, channel, line).await;
    }

    /// Publishes `text` when `level` is at or above the run's log level.
    pub async fn log(&self, level: u8, text: &str) {
        if level >= self.level {
            self.publish(text).await;
        }
    }

    /// `rq:<id> STATUS <text>`.
    pub async fn status(&self, text: &str) {
        self.publish(&status::status(&self.job_id, text)).await;
    }

    /// `rq:<id> TRIGGER   <channel> <EVENT>`.
    pub async fn trigger(&self, event: &str) {
        if let Some(channel) = &self.channel {
            let suffix = channel.rsplit(':').next().unwrap_or(channel);
            self.publish(&status::trigger(&self.job_id, suffix, event))
                .await;
        }
    }

    /// `relpath` under the run directory.
    pub fn document_path(&self, relpath: &str) -> Result<PathBuf, TaskError> {
        Ok(self.wd()?.join(relpath))
    }

    /// Reads a run document (None when it does not exist yet). Every task of the process
    /// shares one instance per file.
    pub async fn read_document(&self, relpath: &str) -> Result<Option<Value>, TaskError> {
        let doc = self.services.documents.get(&self.document_path(relpath)?);
        doc.read()
            .await
            .map_err(|e| TaskError::new("NoDbReadError", e.to_string()))
    }

    /// Writes a run document. Refused unless this job holds the document's lock and the
    /// lock is still its own in Redis at the moment of the rename; refused as stale if
    /// the file changed since it was read. Then refreshes the DB 13 cache and the run
    /// hash's `last_modified`.
    pub async fn write_document(&self, relpath: &str, value: &Value) -> Result<(), TaskError> {
        let lease = {
            let held = self.held.lock().expect("held locks");
            held.iter()
                .find(|h| h.lease.relpath == relpath)
                .map(|h| h.lease.clone())
        };
        let Some(lease) = lease else {
            return Err(TaskError::new(
                "NoDbLockNotHeld",
                format!(
                    "cannot write {relpath} of run {}: this task does not hold its lock",
                    self.runid
                ),
            ));
        };
        let path = self.document_path(relpath)?;
        let doc = self.services.documents.get(&path);
        let fence = self.fence.clone();
        let lock_db = self.services.lock_db.clone();
        let signature = doc
            .write(value, || async move {
                if let Some(why) = fence.lost() {
                    return Err(why);
                }
                let checked = super::bounded(async {
                    let mut conn = lock_db.get().await.map_err(|e| e.to_string())?;
                    lock::check(&mut conn, &lease)
                        .await
                        .map_err(|e| e.to_string())
                })
                .await
                .unwrap_or_else(|| Err("timed out".into()));
                match checked {
                    Ok(TokenCheck::Ok) => Ok(()),
                    Ok(TokenCheck::Gone) => {
                        Err(format!("lock {} is gone (cleared or expired)", lease.key))
                    }
                    Ok(TokenCheck::Held(owner)) => {
                        Err(format!("lock {} is held by {owner}", lease.key))
                    }
                    Err(e) => Err(format!("cannot confirm lock {}: {e}", lease.key)),
                }
            })
            .await
            .map_err(|e| {
                let kind = match &e {
                    runq_common::nodb::document::DocError::Fenced { .. } => "NoDbLockLost",
                    runq_common::nodb::document::DocError::Stale { .. } => "NoDbStaleWriteError",
                    _ => "NoDbWriteError",
                };
                TaskError::new(kind, e.to_string())
            })?;
        if super::bounded(self.after_write(doc.path(), value, signature))
            .await
            .is_none()
        {
            tracing::warn!(runid = %self.runid, "refreshing the NoDb cache timed out");
        }
        Ok(())
    }

    /// Best effort, as wepppy: a cache or `last_modified` failure never fails the write.
    async fn after_write(
        &self,
        path: &Path,
        value: &Value,
        signature: runq_common::nodb::document::Signature,
    ) {
        if let Ok(mut conn) = self.services.cache_db.get().await {
            let r: redis::RedisResult<()> = redis::cmd("SET")
                .arg(path.to_string_lossy().as_ref())
                .arg(cache_payload(value, signature))
                .arg("EX")
                .arg(NODB_CACHE_TTL)
                .query_async(&mut conn)
                .await;
            if let Err(e) = r {
                tracing::warn!(error = %e, path = %path.display(), "could not refresh the NoDb cache");
            }
        }
        if let Ok(mut conn) = self.services.lock_db.get().await {
            let r: redis::RedisResult<()> = redis::cmd("HSET")
                .arg(runq_common::nodb::rundir::prep_key(&self.runid))
                .arg("last_modified")
                .arg(signature.mtime_secs().round() as i64)
                .query_async(&mut conn)
                .await;
            if let Err(e) = r {
                tracing::warn!(error = %e, runid = %self.runid, "could not stamp last_modified");
            }
        }
    }

    /// Environment for a child process: `RUNQ_JOB_ID`, `RUNQ_RUNID`, and
    /// `RUNQ_LOCK_TOKENS` (a JSON object relpath → {key, token}).
    pub fn child_env(&self) -> Vec<(String, String)> {
        let tokens: serde_json::Map<String, Value> = self
            .held
            .lock()
            .expect("held locks")
            .iter()
            .map(|h| {
                (
                    h.lease.relpath.clone(),
                    serde_json::json!({"key": h.lease.key, "token": h.lease.token}),
                )
            })
            .collect();
        let mut env = vec![
            ("RUNQ_JOB_ID".to_string(), self.job_id.clone()),
            ("RUNQ_RUNID".to_string(), self.runid.clone()),
            (
                "RUNQ_LOCK_TOKENS".to_string(),
                Value::Object(tokens).to_string(),
            ),
        ];
        if let Ok(wd) = &self.wd {
            env.push(("RUNQ_RUN_DIR".into(), wd.display().to_string()));
        }
        env
    }

    /// The short function name used in status lines.
    pub fn func(&self) -> &str {
        &self.func
    }
}

/// Publishes, logging (not failing) when Redis refuses.
pub(super) async fn publish_on(db: &SharedConnection, channel: &str, line: &str) {
    if super::bounded(publish_now(db, channel, line))
        .await
        .is_none()
    {
        tracing::warn!(channel, "publishing a status line timed out");
    }
}

async fn publish_now(db: &SharedConnection, channel: &str, line: &str) {
    match db.get().await {
        Ok(mut conn) => {
            if let Err(e) = status::publish(&mut conn, channel, line).await {
                db.reset().await;
                tracing::warn!(error = %e, channel, "could not publish a status line");
            }
        }
        Err(e) => tracing::warn!(error = %e, channel, "could not publish a status line"),
    }
}
