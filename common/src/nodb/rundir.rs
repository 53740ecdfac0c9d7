//! Run directories: validating a runid as WEPPcloud's `get_wd` does and finding its
//! directory under `worker.runs_dir` — `<runs_dir>/<runid[:2]>/<runid>` (WEPPcloud's
//! layout) when that exists, otherwise `<runs_dir>/<runid>`.

use std::path::{Path, PathBuf};

/// Refuses empty, `.`/`..`, and runids with `/`, `\` or NUL (also per `;;` part).
pub fn validate_runid(runid: &str) -> Result<(), String> {
    let bad = |p: &str| p.is_empty() || p == "." || p == ".." || p.contains(['/', '\\', '\0']);
    if bad(runid) || runid.split(";;").any(bad) {
        return Err(format!(
            "invalid runid `{}`: it must be non-empty, not `.`/`..`, without `/`, `\\` or NUL",
            runid.escape_debug()
        ));
    }
    Ok(())
}

/// The RedisPrep hash key of a run: the last `;;` part (wepppy's RedisPrep keys by the run
/// directory's name, so `batch;;spring;;run-1` stamps hash `run-1`; locks keep the full id).
pub fn prep_key(runid: &str) -> &str {
    runid.rsplit(";;").next().unwrap_or(runid)
}

/// The run's directory (not created).
pub fn run_dir(runs_dir: &Path, runid: &str) -> Result<PathBuf, String> {
    validate_runid(runid)?;
    if runid.contains(";;") {
        return Err(format!(
            "runid `{runid}`: composite (`;;`) runids have no run directory under runs_dir"
        ));
    }
    let prefixed = runs_dir
        .join(runid.chars().take(2).collect::<String>())
        .join(runid);
    if prefixed.is_dir() {
        return Ok(prefixed);
    }
    Ok(runs_dir.join(runid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runids_are_validated() {
        assert!(validate_runid("decimal-pleasing").is_ok());
        assert!(validate_runid("batch;;spring;;run-1").is_ok());
        for bad in ["", "..", "a/b", "a;;;;b", "x\\y"] {
            assert!(validate_runid(bad).is_err(), "{bad}");
        }
        assert_eq!(
            run_dir(Path::new("/runs"), "abc").unwrap(),
            PathBuf::from("/runs/abc")
        );
    }
}
