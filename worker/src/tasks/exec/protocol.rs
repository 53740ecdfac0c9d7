//! What passes between the worker and an exec child: the stdin input and environment
//! for each mode, the per-job result file, reading the result back, and the failure
//! text of a child that did not exit 0.

use super::child::Finished;
use crate::error::summary;
use crate::tasks::{TaskCall, TaskError, TaskOutput, TaskResult};
use runq_common::taskspec::ExecMode;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The child's stdin: the JSON envelope, or the payload exactly as RQ stored it.
pub fn input(mode: ExecMode, call: &TaskCall) -> Result<Arc<[u8]>, TaskError> {
    match mode {
        ExecMode::Json => {
            let envelope = json!({
                "job_id": call.job_id,
                "func": call.func_name,
                "args": call.args,
                "kwargs": call.kwargs,
            });
            Ok(envelope.to_string().into_bytes().into())
        }
        ExecMode::Raw if call.payload.is_empty() => Err(TaskError::new(
            "ExecFailed",
            format!(
                "raw exec task `{}` got no payload to pass on",
                call.func_name
            ),
        )),
        ExecMode::Raw => Ok(call.payload.clone()),
    }
}

/// The variables the child gets on top of the worker's environment.
pub fn env(mode: ExecMode, call: &TaskCall, result_file: &Path) -> Vec<(String, String)> {
    let mut env = vec![
        ("RUNQ_JOB_ID".to_string(), call.job_id.clone()),
        ("RUNQ_FUNC".to_string(), call.func_name.clone()),
        (
            "RUNQ_RESULT_FILE".to_string(),
            result_file.display().to_string(),
        ),
        (
            "RUNQ_EXEC_MODE".to_string(),
            match mode {
                ExecMode::Json => "json",
                ExecMode::Raw => "raw",
            }
            .to_string(),
        ),
    ];
    if mode == ExecMode::Raw {
        env.push((
            "RUNQ_SERIALIZER".to_string(),
            call.serializer.as_str().to_string(),
        ));
    }
    if let Some(run) = &call.run {
        env.extend(run.child_env());
    }
    env
}

/// A private directory per job holding the result file; removed when dropped.
pub struct ResultDir {
    dir: PathBuf,
}

impl ResultDir {
    /// Creates `<tmp>/runq-exec-<uuid>` (mode 0700).
    pub fn create() -> Result<ResultDir, TaskError> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = std::env::temp_dir().join(format!("runq-exec-{}", uuid::Uuid::new_v4()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| {
                TaskError::new(
                    "ExecFailed",
                    format!("cannot create the result directory {}: {e}", dir.display()),
                )
            })?;
        Ok(ResultDir { dir })
    }

    /// Where the child writes its result (`RUNQ_RESULT_FILE`); not created by the worker.
    pub fn result_file(&self) -> PathBuf {
        self.dir.join("result")
    }
}

impl Drop for ResultDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Reads the result file of a child that exited 0. No file (or an empty one) is None.
pub async fn read_result(mode: ExecMode, program: &str, path: &Path) -> TaskResult {
    let bytes = match tokio::fs::read(path).await {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            return Err(TaskError::new(
                "ExecBadResult",
                format!("cannot read the result {program} wrote: {e}"),
            ))
        }
    };
    match mode {
        ExecMode::Raw if bytes.is_empty() => Ok(TaskOutput::Value(Value::Null)),
        ExecMode::Raw => Ok(TaskOutput::Serialized(bytes)),
        ExecMode::Json if bytes.iter().all(u8::is_ascii_whitespace) => {
            Ok(TaskOutput::Value(Value::Null))
        }
        ExecMode::Json => serde_json::from_slice(&bytes)
            .map(TaskOutput::Value)
            .map_err(|e| {
                TaskError::new(
                    "ExecBadResult",
                    format!("{program} wrote a result that is not JSON: {e}"),
                )
            }),
    }
}

/// The failure of a child that did not exit 0: `<program> exited with status 3: <last
/// stderr line>` on the first line, then the stderr tail (and the stdout tail, marked).
pub fn failure(program: &str, finished: &Finished) -> TaskError {
    let mut message = format!("{program} {}", finished.how());
    if let Some(line) = summary(&finished.stderr) {
        message.push_str(": ");
        message.push_str(&line);
    }
    let stderr = finished.stderr.trim_end();
    if !stderr.is_empty() {
        message.push('\n');
        message.push_str(stderr);
    }
    let stdout = finished.stdout.trim_end();
    if !stdout.is_empty() {
        message.push_str("\n--- stdout ---\n");
        message.push_str(stdout);
    }
    TaskError::new("ExecFailed", message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_takes_the_traceback_exception_line() {
        let tb = "starting\nTraceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n    raise ValueError('boom')\nValueError: boom\n";
        assert_eq!(summary(tb).as_deref(), Some("ValueError: boom"));
        let chained = format!(
            "{tb}\nDuring handling of the above exception, another exception occurred:\n\n{}",
            tb.replace("ValueError: boom", "KeyError: 'k'")
        );
        assert_eq!(summary(&chained).as_deref(), Some("KeyError: 'k'"));
    }

    #[test]
    fn summary_of_plain_stderr_is_its_last_line() {
        assert_eq!(
            summary("ls: cannot access 'x': No such file or directory\n\n").as_deref(),
            Some("ls: cannot access 'x': No such file or directory")
        );
        assert_eq!(summary(" \n"), None);
        let long = "e".repeat(crate::error::SUMMARY_CHARS + 10);
        assert_eq!(
            summary(&long).unwrap().len(),
            crate::error::SUMMARY_CHARS + 3
        );
    }

    #[tokio::test]
    async fn missing_or_empty_result_is_none() {
        let dir = ResultDir::create().unwrap();
        let path = dir.result_file();
        for mode in [ExecMode::Json, ExecMode::Raw] {
            assert_eq!(
                read_result(mode, "p", &path).await.unwrap(),
                TaskOutput::Value(Value::Null)
            );
        }
        std::fs::write(&path, b"{\"a\": [1, 2]}\n").unwrap();
        assert_eq!(
            read_result(ExecMode::Json, "p", &path).await.unwrap(),
            TaskOutput::Value(json!({"a": [1, 2]}))
        );
        assert_eq!(
            read_result(ExecMode::Raw, "p", &path).await.unwrap(),
            TaskOutput::Serialized(b"{\"a\": [1, 2]}\n".to_vec())
        );
        std::fs::write(&path, b"not json").unwrap();
        let err = read_result(ExecMode::Json, "p", &path).await.unwrap_err();
        assert_eq!(err.kind, "ExecBadResult");
        let root = path.parent().unwrap().to_path_buf();
        drop(dir);
        assert!(!root.exists());
    }
}
