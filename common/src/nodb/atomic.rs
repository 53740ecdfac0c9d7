//! Atomic file replacement: a temp file in the same directory, written and fsynced,
//! renamed over the target, then the directory fsynced (best effort, as wepppy: NFS may
//! refuse it). Readers see the old file or the new one, never a partial one. Two phases
//! ([`prepare`], [`Prepared::commit`]) let a writer run a last check between them.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Replaces `path` with `bytes`; returns the new file's metadata.
pub fn write(path: &Path, bytes: &[u8]) -> std::io::Result<fs::Metadata> {
    prepare(path, bytes)?.commit()
}

/// A durable temp file waiting to replace its target; dropped uncommitted, it is removed.
pub struct Prepared {
    tmp: PathBuf,
    target: PathBuf,
    committed: bool,
}

/// Writes and fsyncs the temp file (keeping the target's permissions).
pub fn prepare(path: &Path, bytes: &[u8]) -> std::io::Result<Prepared> {
    let dir = parent(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let prepared = Prepared {
        tmp: dir.join(format!(
            ".{name}.{}.{}.tmp",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        )),
        target: path.to_path_buf(),
        committed: false,
    };
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&prepared.tmp)?;
    if let Ok(meta) = fs::metadata(path) {
        f.set_permissions(meta.permissions())?;
    }
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(prepared)
}

impl Prepared {
    /// Renames over the target and fsyncs the directory.
    pub fn commit(mut self) -> std::io::Result<fs::Metadata> {
        fs::rename(&self.tmp, &self.target)?;
        self.committed = true;
        if let Ok(d) = File::open(parent(&self.target)) {
            let _ = d.sync_all();
        }
        fs::metadata(&self.target)
    }
}

impl Drop for Prepared {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

fn parent(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uncommitted_write_leaves_nothing() {
        let dir = std::env::temp_dir().join(format!("runq-atomic-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let target = dir.join("x.nodb");
        write(&target, b"one").unwrap();
        drop(prepare(&target, b"two").unwrap());
        assert_eq!(fs::read(&target).unwrap(), b"one");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }
}
