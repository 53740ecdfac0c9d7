//! Redis over TLS (`rediss://`) with a CA file: the worker (pooled, blocking and pub/sub
//! connections) and the CLI against a TLS-only redis-server, and one-line errors for a
//! wrong, missing or unusable CA file.

use runq_tests::*;

#[test]
fn worker_and_cli_run_jobs_over_tls_with_a_ca_file() {
    let redis = RedisServer::start_tls();
    let url = redis.url();
    assert!(url.starts_with("rediss://"), "{url}");
    let ca = redis.ca_file().to_str().unwrap().to_string();

    // The CLI takes the CA from REDIS_CA_FILE or --redis-ca-file.
    let out = runq_env(
        &url,
        &["enqueue", "runq.tasks.echo", "7", "--job-id", "tlsjob"],
        &[("REDIS_CA_FILE", &ca)],
    )
    .ok("runq enqueue over TLS (REDIS_CA_FILE)");
    assert_eq!(out.last_line(), "tlsjob");

    // The worker takes it from the config file.
    let mut worker = WorkerCmd::new(&redis)
        .args(&["--concurrency", "1", "--name", "tls-worker"])
        .config(&format!("[redis]\nca_file = \"{ca}\"\n"))
        .spawn();
    redis.wait_status("tlsjob", "finished");
    redis.wait_subscribed("tls-worker");

    // Pub/sub over TLS: stop-job reaches the worker's command channel.
    let sleeper = runq_at(
        &url,
        &["--redis-ca-file", &ca, "enqueue", "runq.tasks.sleep", "300"],
    )
    .ok("runq --redis-ca-file enqueue")
    .last_line()
    .to_string();
    redis.wait_status(&sleeper, "started");
    runq_at(&url, &["--redis-ca-file", &ca, "stop-job", &sleeper]).ok("runq stop-job over TLS");
    redis.wait_status(&sleeper, "stopped");

    // The idle worker's blocking wait (its own connection) wakes for a new job.
    let late = runq_env(
        &url,
        &["enqueue", "runq.tasks.noop", "--job-id", "late"],
        &[("REDIS_CA_FILE", &ca)],
    )
    .ok("runq enqueue late");
    assert_eq!(late.last_line(), "late");
    redis.wait_status("late", "finished");

    let info = runq_env(&url, &["info"], &[("REDIS_CA_FILE", &ca)]).ok("runq info over TLS");
    assert!(info.stdout.contains("tls-worker"), "{}", info.stdout);
    let job = runq_env(
        &url,
        &["job", "tlsjob", "--json"],
        &[("REDIS_CA_FILE", &ca)],
    )
    .ok("runq job over TLS");
    let v: serde_json::Value = serde_json::from_str(&job.stdout).unwrap();
    assert_eq!(v["status"], "finished");
    assert_eq!(
        v["return_value"],
        serde_json::json!({"args": [7], "kwargs": {}})
    );

    worker.sigterm();
    assert_eq!(worker.wait_exit(), Some(0), "{}", worker.logs());
}

/// Asserts a failed command printed exactly one line starting with `prefix` and
/// containing `needle`.
fn assert_one_line(out: &Output, prefix: &str, needle: &str) {
    assert!(!out.status.success(), "expected a failure: {out:?}");
    let stderr = out.stderr.trim();
    assert!(
        stderr.lines().count() == 1 && stderr.starts_with(prefix) && stderr.contains(needle),
        "expected one line starting `{prefix}` containing `{needle}`, got:\n{stderr}"
    );
}

#[test]
fn wrong_missing_or_unusable_ca_files_are_clear_errors() {
    let redis = RedisServer::start_tls();
    let url = redis.url();
    let port = redis.port;
    let other = TempDir::new("other-ca");
    let other_ca = TlsFiles::generate(other.path()).ca;
    let other_ca = other_ca.to_str().unwrap();

    // A CA that did not sign the server's certificate.
    let out = runq_env(&url, &["info"], &[("REDIS_CA_FILE", other_ca)]);
    assert_one_line(
        &out,
        &format!("runq: redis at rediss://127.0.0.1:{port}/9:"),
        "certificate is not trusted",
    );
    let out = worker_output(&url, &["--burst", "--redis-ca-file", other_ca]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_one_line(
        &out,
        &format!("runq-worker: redis at rediss://127.0.0.1:{port}/9:"),
        "certificate is not trusted",
    );

    // No CA file: the system roots do not know the test CA either.
    let out = runq_at(&url, &["info"]);
    assert_one_line(
        &out,
        "runq: redis at rediss://",
        "certificate is not trusted",
    );

    // A CA file that is missing, or holds no certificate.
    let out = runq_at(&url, &["--redis-ca-file", "/nonexistent/ca.pem", "info"]);
    assert_one_line(
        &out,
        "runq: configuration: cannot read redis.ca_file /nonexistent/ca.pem:",
        "",
    );
    let not_pem = other.path().join("not.pem");
    std::fs::write(&not_pem, "hello\n").unwrap();
    let out = worker_output(
        &url,
        &["--burst", "--redis-ca-file", not_pem.to_str().unwrap()],
    );
    assert_one_line(
        &out,
        "runq-worker: configuration: redis.ca_file",
        "holds no PEM certificate",
    );

    // A CA file with a plain redis:// URL is a mistake, not silently ignored.
    let out = runq_env(
        &format!("redis://127.0.0.1:{port}"),
        &["info"],
        &[("REDIS_CA_FILE", redis.ca_file().to_str().unwrap())],
    );
    assert_one_line(
        &out,
        "runq: configuration: redis.ca_file is set",
        "not rediss://",
    );
}
