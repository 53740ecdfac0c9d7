//! [`RunContext`]: what a task running on a WEPPcloud run can do — publish status lines
//! on its channel, log at the run's level, read its NoDb documents and write the ones
//! whose locks it holds (fenced: a lost lock refuses the write), and hand its lock
//! tokens to a child process. [`RunState`](super::RunState) opens and closes it.

use super::fence::Fence;
use super::locks::LockSet;
use super::services::{bounded, RunServices};
use crate::error::TaskError;
use runq_common::connect::SharedConnection;
use runq_common::nodb::document::{cache_payload, DocError, DocumentStore, Signature};
use runq_common::nodb::lock::{self, TokenCheck};
use runq_common::nodb::{document, prep, rundir, status};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One job's view of its run.
pub struct RunContext {
    services: Arc<RunServices>,
    job_id: String,
    func: String,
    runid: String,
    channel: Option<String>,
    wd: Result<PathBuf, String>,
    level: u8,
    fence: Arc<Fence>,
    locks: LockSet,
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

/// Everything a run context is made of, gathered by [`RunState::open`](super::RunState::open).
pub(super) struct Parts {
    pub services: Arc<RunServices>,
    pub job_id: String,
    pub func: String,
    pub runid: String,
    pub channel: Option<String>,
    pub wd: Result<PathBuf, String>,
    pub level: u8,
    pub fence: Arc<Fence>,
    pub locks: LockSet,
}

impl RunContext {
    pub(super) fn new(p: Parts) -> RunContext {
        RunContext {
            services: p.services,
            job_id: p.job_id,
            func: p.func,
            runid: p.runid,
            channel: p.channel,
            wd: p.wd,
            level: p.level,
            fence: p.fence,
            locks: p.locks,
        }
    }

    pub(super) fn services(&self) -> &Arc<RunServices> {
        &self.services
    }

    pub(super) fn locks(&self) -> &LockSet {
        &self.locks
    }

    pub(super) fn fence(&self) -> &Arc<Fence> {
        &self.fence
    }

    pub fn runid(&self) -> &str {
        &self.runid
    }

    pub fn job_id(&self) -> &str {
        &self.job_id
    }

    /// The short function name used in status lines.
    pub fn func(&self) -> &str {
        &self.func
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
        let doc = self.documents().get(&self.document_path(relpath)?);
        doc.read()
            .await
            .map_err(|e| TaskError::new("NoDbReadError", e.to_string()))
    }

    fn documents(&self) -> &DocumentStore {
        &self.services.documents
    }

    /// Writes a run document. Refused unless this job holds the document's lock and the
    /// lock is still its own in Redis at the moment of the rename; refused as stale if
    /// the file changed since it was read. Then refreshes the DB 13 cache and the run
    /// hash's `last_modified`.
    pub async fn write_document(&self, relpath: &str, value: &Value) -> Result<(), TaskError> {
        let Some(lease) = self.locks.lease_for(relpath) else {
            return Err(TaskError::new(
                "NoDbLockNotHeld",
                format!(
                    "cannot write {relpath} of run {}: this task does not hold its lock",
                    self.runid
                ),
            ));
        };
        let path = self.document_path(relpath)?;
        let doc = self.documents().get(&path);
        let fence = self.fence.clone();
        let lock_db = self.services.lock_db.clone();
        let signature = doc
            .write(value, || async move {
                if let Some(why) = fence.lost() {
                    return Err(why);
                }
                let checked = bounded(async {
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
                    DocError::Fenced { .. } => "NoDbLockLost",
                    DocError::Stale { .. } => "NoDbStaleWriteError",
                    _ => "NoDbWriteError",
                };
                TaskError::new(kind, e.to_string())
            })?;
        if bounded(self.after_write(doc.path(), value, signature))
            .await
            .is_none()
        {
            tracing::warn!(runid = %self.runid, "refreshing the NoDb cache timed out");
        }
        Ok(())
    }

    /// Best effort, as wepppy: a cache or `last_modified` failure never fails the write.
    async fn after_write(&self, path: &Path, value: &Value, signature: Signature) {
        if let Ok(mut conn) = self.services.cache_db.get().await {
            let payload = cache_payload(value, signature);
            if let Err(e) = document::cache_set(&mut conn, path, &payload).await {
                tracing::warn!(error = %e, path = %path.display(), "could not refresh the NoDb cache");
            }
        }
        if let Ok(mut conn) = self.services.lock_db.get().await {
            let key = rundir::prep_key(&self.runid);
            let mtime = signature.mtime_secs().round() as i64;
            if let Err(e) = prep::set_last_modified(&mut conn, key, mtime).await {
                tracing::warn!(error = %e, runid = %self.runid, "could not stamp last_modified");
            }
        }
    }

    /// Environment for a child process: `RUNQ_JOB_ID`, `RUNQ_RUNID`, `RUNQ_LOCK_TOKENS`
    /// (a JSON object relpath → {key, token}) and `RUNQ_RUN_DIR`.
    pub fn child_env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("RUNQ_JOB_ID".to_string(), self.job_id.clone()),
            ("RUNQ_RUNID".to_string(), self.runid.clone()),
            (
                "RUNQ_LOCK_TOKENS".to_string(),
                self.locks.tokens().to_string(),
            ),
        ];
        if let Ok(wd) = &self.wd {
            env.push(("RUNQ_RUN_DIR".into(), wd.display().to_string()));
        }
        env
    }
}

/// Publishes, logging (not failing) when Redis refuses.
async fn publish_on(db: &SharedConnection, channel: &str, line: &str) {
    let sent = bounded(async {
        match db.get().await {
            Ok(mut conn) => {
                if let Err(e) = status::publish(&mut conn, channel, line).await {
                    db.reset().await;
                    tracing::warn!(error = %e, channel, "could not publish a status line");
                }
            }
            Err(e) => tracing::warn!(error = %e, channel, "could not publish a status line"),
        }
    })
    .await;
    if sent.is_none() {
        tracing::warn!(channel, "publishing a status line timed out");
    }
}
