//! The worker's Prometheus endpoint: job counters by queue, task and outcome, run and
//! queue-wait histograms, queue depth and busy-slot gauges, `/healthz` following Redis,
//! 404 elsewhere, and a clear start-up error when the address is taken.

use runq_tests::*;
use std::collections::HashMap;

/// Scrapes `/metrics` (it must answer 200).
fn scrape(port: u16) -> HashMap<String, f64> {
    let (code, body) = http_get(port, "/metrics").expect("the metrics endpoint answers");
    assert_eq!(code, 200, "GET /metrics: {body}");
    assert!(
        body.ends_with("# EOF\n"),
        "OpenMetrics text ends with # EOF:\n{body}"
    );
    parse_metrics(&body)
}

fn sample(samples: &HashMap<String, f64>, key: &str) -> f64 {
    samples.get(key).copied().unwrap_or(0.0)
}

fn jobs_key(task: &str, outcome: &str) -> String {
    format!("runq_jobs_total{{queue=\"default\",task=\"{task}\",outcome=\"{outcome}\"}}")
}

#[test]
fn metrics_count_jobs_and_follow_slots_queues_and_redis_health() {
    let redis = RedisServer::start();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut worker = WorkerCmd::new(&redis)
        .args(&[
            "--concurrency",
            "1",
            "--name",
            "metered",
            "--metrics-addr",
            &addr,
        ])
        .spawn();
    redis.wait_worker("metered");
    wait_until("the metrics endpoint to answer", || {
        http_get(port, "/healthz").is_some()
    });
    assert_eq!(http_get(port, "/healthz"), Some((200, "ok\n".to_string())));
    assert_eq!(http_get(port, "/nope").map(|(c, _)| c), Some(404));

    // A long job holds the only slot, so the jobs enqueued next wait in the queue.
    let sleeper = enqueue(&redis, &["runq.tasks.sleep", "300"]);
    redis.wait_status(&sleeper, "started");
    let noops: Vec<String> = (0..5)
        .map(|i| enqueue(&redis, &["runq.tasks.noop", &i.to_string()]))
        .collect();
    let fails: Vec<String> = (0..3)
        .map(|i| enqueue(&redis, &["runq.tasks.fail", &format!("boom {i}")]))
        .collect();
    // The slot is marked busy right after the claim that set `started`.
    let during = wait_for("the busy-slots gauge to show the running job", || {
        let s = scrape(port);
        (sample(&s, "runq_busy_slots") == 1.0).then_some(s)
    });
    assert_eq!(sample(&during, "runq_slots"), 1.0, "{during:?}");
    assert_eq!(
        sample(&during, "runq_queue_depth{queue=\"default\"}"),
        8.0,
        "{during:?}"
    );

    runq(&redis, &["stop-job", &sleeper]).ok("runq stop-job");
    for id in &noops {
        redis.wait_status(id, "finished");
    }
    for id in &fails {
        redis.wait_status(id, "failed");
    }
    redis.wait_status(&sleeper, "stopped");
    // The counters move right after the completion script, so poll until they settle.
    let after = wait_for("the job counters to reach what ran", || {
        let s = scrape(port);
        (sample(&s, "runq_job_run_seconds_count{queue=\"default\"}") == 9.0).then_some(s)
    });
    assert_eq!(
        sample(&after, &jobs_key("runq.tasks.noop", "finished")),
        5.0
    );
    assert_eq!(sample(&after, &jobs_key("runq.tasks.fail", "failed")), 3.0);
    assert_eq!(
        sample(&after, &jobs_key("runq.tasks.sleep", "stopped")),
        1.0
    );
    let counted: f64 = after
        .iter()
        .filter(|(k, _)| k.starts_with("runq_jobs_total{"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(counted, 9.0, "no other outcomes were counted: {after:?}");
    assert_eq!(
        sample(
            &after,
            "runq_job_queue_wait_seconds_count{queue=\"default\"}"
        ),
        9.0
    );
    assert_eq!(
        sample(
            &after,
            "runq_job_run_seconds_bucket{le=\"+Inf\",queue=\"default\"}"
        ),
        9.0
    );
    assert_eq!(sample(&after, "runq_busy_slots"), 0.0);
    assert_eq!(sample(&after, "runq_queue_depth{queue=\"default\"}"), 0.0);
    for lock_metric in [
        "runq_lock_waits_total",
        "runq_lock_wait_seconds_count",
        "runq_lock_renewals_total",
        "runq_lock_losses_total",
    ] {
        assert!(after.contains_key(lock_metric), "{lock_metric} is exposed");
    }

    // /healthz follows Redis.
    redis.pause();
    wait_until("/healthz to report 503 while Redis is paused", || {
        matches!(http_get(port, "/healthz"), Some((503, _)))
    });
    redis.resume();
    wait_until("/healthz to report 200 after Redis resumes", || {
        matches!(http_get(port, "/healthz"), Some((200, _)))
    });

    worker.sigterm();
    assert_eq!(worker.wait_exit(), Some(0), "{}", worker.logs());
}

#[test]
fn metrics_addr_from_the_config_file_and_a_taken_address() {
    let redis = RedisServer::start();
    let port = free_port();
    let mut worker = WorkerCmd::new(&redis)
        .args(&["--concurrency", "1", "--name", "configured"])
        .config(&format!("[worker]\nmetrics_addr = \"127.0.0.1:{port}\"\n"))
        .spawn();
    redis.wait_worker("configured");
    wait_until("the metrics endpoint from the config file", || {
        matches!(http_get(port, "/healthz"), Some((200, _)))
    });

    // Another worker asked for the same address refuses to start, saying why.
    let out = worker_output(
        &redis.url(),
        &[
            "--name",
            "second",
            "--metrics-addr",
            &format!("127.0.0.1:{port}"),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = out.stderr.trim();
    assert!(
        stderr.starts_with(&format!(
            "runq-worker: cannot listen on metrics address `127.0.0.1:{port}`:"
        )) && stderr.lines().count() == 1,
        "{stderr}"
    );
    assert!(
        !redis
            .smembers("rq:workers")
            .contains(&"rq:worker:second".to_string()),
        "a worker that cannot start does not register"
    );

    worker.sigterm();
    assert_eq!(worker.wait_exit(), Some(0), "{}", worker.logs());
}
