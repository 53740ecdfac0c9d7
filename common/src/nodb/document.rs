//! NoDb documents: a run's `.nodb` JSON files, one shared instance per absolute path in
//! a process (wepppy's `getInstance` singleton, safe under concurrency). Reads reuse the
//! cached value while the file's `(mtime, size)` signature is unchanged and reload it
//! otherwise. Writes are atomic, fenced (a caller-supplied check runs after the data is
//! durable and before the rename) and refuse stale writes: the file must still have the
//! signature this instance last read or wrote. A same-size rewrite moves mtime forward
//! so a detached stale writer can always tell.

use super::atomic;
use serde_json::Value;
use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `nodb.version` content, wepppy's `CURRENT_VERSION`.
pub const NODB_VERSION: &str = "1000\n";

/// A file's `(mtime, size)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signature {
    pub mtime_ns: i128,
    pub size: u64,
}

impl Signature {
    fn of(meta: &std::fs::Metadata) -> Signature {
        let mtime_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_nanos() as i128)
            .unwrap_or(0);
        Signature {
            mtime_ns,
            size: meta.len(),
        }
    }

    /// mtime as float seconds, as Python's `st_mtime`.
    pub fn mtime_secs(&self) -> f64 {
        self.mtime_ns as f64 / 1e9
    }
}

/// Why a document could not be read or written. One line each, naming the file.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DocError {
    #[error("{path}: {detail}")]
    Io { path: String, detail: String },
    #[error("{path}: not valid JSON: {detail}")]
    Parse { path: String, detail: String },
    #[error("NoDbStaleWriteError: stale NoDb write rejected for {path}: {detail}")]
    Stale { path: String, detail: String },
    #[error("NoDbLockLost: write to {path} refused: {reason}")]
    Fenced { path: String, reason: String },
}

#[derive(Default)]
struct State {
    value: Option<Value>,
    signature: Option<Signature>,
}

/// One `.nodb` file.
pub struct Document {
    path: PathBuf,
    state: tokio::sync::Mutex<State>,
}

fn stat(path: &Path) -> Result<Option<Signature>, DocError> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(Some(Signature::of(&m))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path, e)),
    }
}

fn io_err(path: &Path, e: std::io::Error) -> DocError {
    DocError::Io {
        path: path.display().to_string(),
        detail: e.to_string(),
    }
}

impl Document {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current content (None when the file does not exist), reloaded from disk only
    /// when the file's signature changed since this instance last saw it.
    pub async fn read(&self) -> Result<Option<Value>, DocError> {
        let mut st = self.state.lock().await;
        for _ in 0..3 {
            let Some(before) = stat(&self.path)? else {
                *st = State::default();
                return Ok(None);
            };
            if st.signature == Some(before) && st.value.is_some() {
                return Ok(st.value.clone());
            }
            let bytes = std::fs::read(&self.path).map_err(|e| io_err(&self.path, e))?;
            if stat(&self.path)? != Some(before) {
                continue; // rewritten while we read; read again
            }
            let value: Value = serde_json::from_slice(&bytes).map_err(|e| DocError::Parse {
                path: self.path.display().to_string(),
                detail: e.to_string(),
            })?;
            st.value = Some(value.clone());
            st.signature = Some(before);
            return Ok(Some(value));
        }
        Err(DocError::Io {
            path: self.path.display().to_string(),
            detail: "the file kept changing while it was read".into(),
        })
    }

    /// Replaces the document. `fence` runs once the new content is durable in a temp file
    /// and just before the rename; an `Err` from it abandons the write. The file must be
    /// unchanged since this instance last read or wrote it (or absent, if it never
    /// existed for this instance). Returns the new signature.
    pub async fn write<F, Fut>(&self, value: &Value, fence: F) -> Result<Signature, DocError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(), String>>,
    {
        let mut st = self.state.lock().await;
        let path = self.path.display().to_string();
        let observed = stat(&self.path)?;
        match (st.signature, observed) {
            (Some(expected), Some(observed)) if expected != observed => {
                return Err(DocError::Stale {
                    path,
                    detail: format!(
                        "expected (mtime={:.6}, size={}), observed (mtime={:.6}, size={})",
                        expected.mtime_secs(),
                        expected.size,
                        observed.mtime_secs(),
                        observed.size
                    ),
                })
            }
            (Some(_), None) => {
                return Err(DocError::Stale {
                    path,
                    detail: "the expected prior payload is missing on disk".into(),
                })
            }
            (None, Some(_)) => {
                return Err(DocError::Stale {
                    path,
                    detail: "the file exists but this writer never read it".into(),
                })
            }
            _ => {}
        }
        let bytes = serde_json::to_vec(value).map_err(|e| DocError::Io {
            path: path.clone(),
            detail: format!("cannot encode: {e}"),
        })?;
        // The data is made durable off the async threads (fsync can be slow, on NFS
        // especially); the fence is checked after that and right before the rename.
        let target = self.path.clone();
        let prepared = blocking(move || atomic::prepare(&target, &bytes))
            .await
            .map_err(|e| io_err(&self.path, e))?;
        fence().await.map_err(|reason| DocError::Fenced {
            path: path.clone(),
            reason,
        })?;
        let meta = prepared.commit().map_err(|e| io_err(&self.path, e))?;
        // Committed: from here on this is the content, whatever else fails.
        st.value = Some(value.clone());
        st.signature = Some(Signature::of(&meta));
        if let Some(old) = observed {
            let new = Signature::of(&meta);
            if new.size == old.size && new.mtime_ns <= old.mtime_ns {
                st.signature = Some(self.push_mtime_forward(old)?);
            }
        }
        if let Some(dir) = self.path.parent() {
            let version = dir.join("nodb.version");
            let v = version.clone();
            blocking(move || atomic::write(&v, NODB_VERSION.as_bytes()))
                .await
                .map_err(|e| io_err(&version, e))?;
        }
        Ok(st.signature.expect("set above"))
    }

    /// Sets mtime to `max(now, old + 1 s)` so a same-size rewrite is always visible.
    fn push_mtime_forward(&self, old: Signature) -> Result<Signature, DocError> {
        let old_plus =
            UNIX_EPOCH + Duration::from_nanos(old.mtime_ns.max(0) as u64) + Duration::from_secs(1);
        let when = SystemTime::now().max(old_plus);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.path)
            .map_err(|e| io_err(&self.path, e))?;
        f.set_modified(when).map_err(|e| io_err(&self.path, e))?;
        f.sync_all().map_err(|e| io_err(&self.path, e))?;
        let meta = f.metadata().map_err(|e| io_err(&self.path, e))?;
        Ok(Signature::of(&meta))
    }
}

/// Runs blocking file work on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?
}

/// The per-process map of documents by absolute path.
#[derive(Default)]
pub struct DocumentStore {
    docs: Mutex<HashMap<PathBuf, Arc<Document>>>,
}

impl DocumentStore {
    /// The one instance for `path` (made absolute against the current directory).
    pub fn get(&self, path: &Path) -> Arc<Document> {
        let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let mut docs = self.docs.lock().expect("document store lock");
        docs.entry(abs.clone())
            .or_insert_with(|| {
                Arc::new(Document {
                    path: abs,
                    state: Default::default(),
                })
            })
            .clone()
    }
}

/// `SET <absolute path> <payload> EX 72h` in the DB 13 cache, as wepppy's `dump()` does.
pub async fn cache_set<C: redis::aio::ConnectionLike + Send>(
    conn: &mut C,
    path: &Path,
    payload: &str,
) -> redis::RedisResult<()> {
    redis::cmd("SET")
        .arg(path.to_string_lossy().as_ref())
        .arg(payload)
        .arg("EX")
        .arg(super::NODB_CACHE_TTL)
        .query_async(conn)
        .await
}

/// The DB 13 cache value for a written document: its JSON with `_nodb_mtime` and
/// `_nodb_size` set to the new file's signature (inside `py/state` when present), so
/// wepppy's cache signature gate accepts it.
pub fn cache_payload(value: &Value, signature: Signature) -> String {
    let mut v = value.clone();
    let target = match v.get_mut("py/state") {
        Some(Value::Object(_)) => v.get_mut("py/state"),
        _ => Some(&mut v),
    };
    if let Some(Value::Object(m)) = target {
        m.insert(
            "_nodb_mtime".into(),
            serde_json::json!(signature.mtime_secs()),
        );
        m.insert("_nodb_size".into(), serde_json::json!(signature.size));
    }
    v.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn temp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("runq-doc-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[tokio::test]
    async fn singleton_per_path_under_concurrency() {
        let store = Arc::new(DocumentStore::default());
        let dir = temp("single");
        let path = dir.join("climate.nodb");
        let handles: Vec<_> = (0..10)
            .map(|_| {
                let store = store.clone();
                let path = path.clone();
                tokio::spawn(async move { store.get(&path) })
            })
            .collect();
        let first = store.get(&path);
        for h in handles {
            assert!(Arc::ptr_eq(&first, &h.await.unwrap()));
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn stale_and_fenced_writes_are_refused() {
        let dir = temp("stale");
        let store = DocumentStore::default();
        let doc = store.get(&dir.join("soils.nodb"));
        assert_eq!(doc.read().await.unwrap(), None);
        doc.write(&json!({"n": 1}), || async { Ok(()) })
            .await
            .unwrap();
        // Fenced: the lock check fails, nothing is written.
        let err = doc
            .write(&json!({"n": 2}), || async { Err("lock lost".to_string()) })
            .await
            .unwrap_err();
        assert!(matches!(err, DocError::Fenced { .. }), "{err}");
        assert_eq!(doc.read().await.unwrap(), Some(json!({"n": 1})));
        // An outside writer changes the file: our next write is stale.
        std::fs::write(dir.join("soils.nodb"), br#"{"n": 100}"#).unwrap();
        let err = doc
            .write(&json!({"n": 3}), || async { Ok(()) })
            .await
            .unwrap_err();
        assert!(err.to_string().starts_with("NoDbStaleWriteError"), "{err}");
        assert_eq!(
            std::fs::read_to_string(dir.join("soils.nodb")).unwrap(),
            r#"{"n": 100}"#
        );
        // Reading again picks up the outside content; then writing works.
        assert_eq!(doc.read().await.unwrap(), Some(json!({"n": 100})));
        doc.write(&json!({"n": 4}), || async { Ok(()) })
            .await
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("nodb.version")).unwrap(),
            NODB_VERSION
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn same_size_rewrite_moves_mtime_forward() {
        let dir = temp("mtime");
        let store = DocumentStore::default();
        let doc = store.get(&dir.join("wepp.nodb"));
        doc.read().await.unwrap();
        let a = doc
            .write(&json!({"n": 1}), || async { Ok(()) })
            .await
            .unwrap();
        let b = doc
            .write(&json!({"n": 2}), || async { Ok(()) })
            .await
            .unwrap();
        assert_eq!(a.size, b.size);
        assert!(b.mtime_ns > a.mtime_ns);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn cache_payload_carries_the_signature() {
        let sig = Signature {
            mtime_ns: 1_500_000_000,
            size: 7,
        };
        let v = json!({"py/object": "x.Climate", "py/state": {"a": 1}});
        let cached: Value = serde_json::from_str(&cache_payload(&v, sig)).unwrap();
        assert_eq!(cached["py/state"]["_nodb_size"], json!(7));
        assert_eq!(cached["py/state"]["_nodb_mtime"], json!(1.5));
    }
}
