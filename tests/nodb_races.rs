//! The five NoDb lock race conditions WEPPcloud hit, as regression tests of runq's fixed
//! behaviour (DESIGN §4): (1) a thundering herd on one lock takes turns, never two
//! holders at once; (2) rapid sequential requests for one run all succeed, in order;
//! (3) a task outliving its lock TTL keeps the lock through renewal, and one whose
//! renewal is blocked stops before its lease can pass to someone else, writing nothing;
//! (4) an unlock with a stale token is refused, force-unlock works; (5) clearing locks
//! under an active task fails that task cleanly without a write and leaves other runs
//! alone. Run with `--nocapture` to see the measured timings.

use runq_common::nodb::lock::{self, Lease, LockPayload, TokenCheck};
use runq_tests::*;
use serde_json::Value;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------
// Helpers

/// Worker config with a runs directory and extra TOML.
fn config(runs: &Path, extra: &str) -> String {
    format!(
        "[worker]\nruns_dir = \"{}\"\nheartbeat_secs = 2\n{extra}\n",
        runs.display()
    )
}

/// A connection to DB 0 (locks and run hashes).
fn lock_db(redis: &RedisServer) -> redis::Connection {
    redis.conn_db(0)
}

fn lock_value(redis: &RedisServer, runid: &str, rel: &str) -> Option<String> {
    redis::cmd("GET")
        .arg(lock::lock_key(runid, rel))
        .query(&mut lock_db(redis))
        .expect("GET lock")
}

fn flag(redis: &RedisServer, runid: &str, rel: &str) -> Option<String> {
    redis::cmd("HGET")
        .arg(runid)
        .arg(lock::flag_field(rel))
        .query(&mut lock_db(redis))
        .expect("HGET flag")
}

fn document(runs: &Path, runid: &str, rel: &str) -> Option<Value> {
    let text = std::fs::read_to_string(runs.join(runid).join(rel)).ok()?;
    Some(serde_json::from_str(&text).expect("documents are JSON"))
}

fn history(runs: &Path, runid: &str, rel: &str) -> Vec<String> {
    document(runs, runid, rel)
        .map(|d| {
            d["py/state"]["history"]
                .as_array()
                .expect("history array")
                .iter()
                .map(|v| v.as_str().expect("job id").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// `(event, job)` lines of the run's lock ledger.
fn ledger(runs: &Path, runid: &str) -> Vec<(String, String)> {
    std::fs::read_to_string(runs.join(runid).join("locks.ledger"))
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let parts: Vec<&str> = l.split_whitespace().collect();
            (parts[0].to_string(), parts[2].to_string())
        })
        .collect()
}

/// Asserts that critical sections never overlap: entries and exits alternate, each
/// exit by the job that entered last.
fn assert_no_overlap(entries: &[(String, String)]) {
    let mut inside: Option<&str> = None;
    for (event, job) in entries {
        match (event.as_str(), inside) {
            ("enter", None) => inside = Some(job),
            ("exit", Some(j)) if j == job => inside = None,
            _ => panic!("overlapping critical sections at {event} {job} (inside: {inside:?}):\n{entries:#?}"),
        }
    }
}

fn wait_finished(redis: &RedisServer, ids: &[String]) {
    for id in ids {
        wait_until(&format!("job {id} to finish"), || {
            matches!(
                redis.status(id).as_deref(),
                Some("finished") | Some("failed")
            )
        });
        assert_eq!(
            redis.status(id).as_deref(),
            Some("finished"),
            "job {id} failed: {}",
            failure_hint(redis, id)
        );
    }
}

fn wait_failed(redis: &RedisServer, id: &str) -> String {
    wait_until(&format!("job {id} to fail"), || {
        matches!(
            redis.status(id).as_deref(),
            Some("finished") | Some("failed")
        )
    });
    assert_eq!(redis.status(id).as_deref(), Some("failed"), "job {id}");
    failure_text(redis, id)
}

/// The time (epoch seconds) of the first worker log line containing `needle`.
fn log_time(logs: &str, needle: &str) -> f64 {
    let line = logs
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no log line with {needle:?}:\n{logs}"));
    let stamp = line.split_whitespace().next().expect("timestamp");
    runq_common::timefmt::parse_datetime(stamp)
        .unwrap_or_else(|e| panic!("{e}: {line}"))
        .expect("a timestamp")
        .timestamp_micros() as f64
        / 1e6
}

fn now_epoch() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

// ---------------------------------------------------------------------------------------
// (1) Thundering herd

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn race1_sixteen_contenders_take_turns_on_one_lock() {
    let redis = RedisServer::start();
    let client = redis::Client::open(redis.url_db(0)).unwrap();
    let inside = Arc::new(AtomicUsize::new(0));
    let most_inside = Arc::new(AtomicUsize::new(0));
    let ledger = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for n in 0..16 {
        let (client, inside, most_inside, ledger) = (
            client.clone(),
            inside.clone(),
            most_inside.clone(),
            ledger.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut conn = client.get_multiplexed_async_connection().await.unwrap();
            let mut lease = Lease::new("herd-run", "climate.nodb", 30);
            lock::acquire_waiting(&mut conn, &mut lease, Duration::from_secs(30))
                .await
                .unwrap_or_else(|e| panic!("contender {n} gave up: {e}"));
            let now_inside = inside.fetch_add(1, Ordering::SeqCst) + 1;
            most_inside.fetch_max(now_inside, Ordering::SeqCst);
            ledger
                .lock()
                .unwrap()
                .push(("enter".to_string(), n.to_string()));
            tokio::time::sleep(Duration::from_millis(20)).await;
            ledger
                .lock()
                .unwrap()
                .push(("exit".to_string(), n.to_string()));
            inside.fetch_sub(1, Ordering::SeqCst);
            assert_eq!(
                lock::release(&mut conn, &lease).await.unwrap(),
                TokenCheck::Ok
            );
        }));
    }
    for t in tasks {
        t.await.expect("every contender gets the lock");
    }
    eprintln!(
        "race 1: 16 contenders x 20 ms critical sections in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(most_inside.load(Ordering::SeqCst), 1, "two holders at once");
    let entries = ledger.lock().unwrap().clone();
    assert_eq!(entries.len(), 32);
    assert_no_overlap(&entries);
    assert_eq!(lock_value(&redis, "herd-run", "climate.nodb"), None);
    assert_eq!(
        flag(&redis, "herd-run", "climate.nodb").as_deref(),
        Some("false")
    );
}

#[test]
fn race1_sixteen_jobs_on_two_workers_build_one_run_in_turns() {
    let redis = RedisServer::start();
    let runs = TempDir::new("herd-runs");
    let ids: Vec<String> = (0..16)
        .map(|_| enqueue(&redis, &["runq.demo.build_climate", "herd", "0.05"]))
        .collect();
    let cfg = config(
        runs.path(),
        "[tasks.\"runq.demo.build_climate\"]\nlock_wait = 120\n",
    );
    let a = WorkerCmd::new(&redis)
        .config(&cfg)
        .args(&["--concurrency", "8", "--name", "herd-a"])
        .spawn();
    let b = WorkerCmd::new(&redis)
        .config(&cfg)
        .args(&["--concurrency", "8", "--name", "herd-b"])
        .spawn();
    wait_finished(&redis, &ids);
    drop((a, b));
    let entries = ledger(runs.path(), "herd");
    assert_eq!(entries.len(), 32, "{entries:#?}");
    assert_no_overlap(&entries);
    let doc = document(runs.path(), "herd", "climate.nodb").expect("climate.nodb");
    assert_eq!(doc["py/state"]["builds"], 16, "no build was lost: {doc}");
    let mut seen = history(runs.path(), "herd", "climate.nodb");
    seen.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(seen, want);
}

// ---------------------------------------------------------------------------------------
// (2) Rapid sequential requests

#[test]
fn race2_five_rapid_requests_for_one_run_all_succeed_in_order() {
    let redis = RedisServer::start();
    let runs = TempDir::new("rapid-runs");
    let worker = WorkerCmd::new(&redis)
        .config(&config(runs.path(), ""))
        .args(&["--concurrency", "5", "--name", "rapid"])
        .spawn();
    redis.wait_worker("rapid-1");
    let ids: Vec<String> = (0..5)
        .map(|_| enqueue(&redis, &["runq.demo.build_climate", "rapid", "0.2"]))
        .collect();
    wait_finished(&redis, &ids);
    assert_eq!(
        history(runs.path(), "rapid", "climate.nodb"),
        ids,
        "builds ran in request order\n{}",
        worker.logs()
    );
    assert_no_overlap(&ledger(runs.path(), "rapid"));
}

// ---------------------------------------------------------------------------------------
// (3) TTL expiry during a long operation

#[test]
fn race3_task_longer_than_its_lock_ttl_keeps_the_lock_by_renewal() {
    let redis = RedisServer::start();
    let runs = TempDir::new("long-runs");
    let _worker = WorkerCmd::new(&redis)
        .config(&config(
            runs.path(),
            "[tasks.\"runq.demo.build_climate\"]\nlock_ttl = 1\n",
        ))
        .args(&["--name", "long"])
        .spawn();
    let id = enqueue(&redis, &["runq.demo.build_climate", "long", "3.5"]);
    let first = wait_for("the lock to be taken", || {
        lock_value(&redis, "long", "climate.nodb")
    });
    let first = LockPayload::parse(&first);
    assert_eq!(first.expires_at, first.acquired_at.map(|a| a + 1));
    // Two TTLs later the same holder still has it, with expires_at moved on.
    std::thread::sleep(Duration::from_secs(2));
    let later = LockPayload::parse(
        &lock_value(&redis, "long", "climate.nodb").expect("still locked after 2 TTLs"),
    );
    assert_eq!(later.token, first.token);
    assert!(
        later.expires_at > first.expires_at,
        "{first:?} -> {later:?}"
    );
    let pttl: i64 = redis::cmd("PTTL")
        .arg(lock::lock_key("long", "climate.nodb"))
        .query(&mut lock_db(&redis))
        .unwrap();
    assert!((0..=1000).contains(&pttl), "renewed to the 1 s TTL: {pttl}");
    wait_finished(&redis, std::slice::from_ref(&id));
    assert_eq!(history(runs.path(), "long", "climate.nodb"), vec![id]);
    assert_eq!(lock_value(&redis, "long", "climate.nodb"), None);
    assert_eq!(
        flag(&redis, "long", "climate.nodb").as_deref(),
        Some("false")
    );
}

#[test]
fn race3_blocked_renewal_stops_the_task_before_its_lease_can_pass_on() {
    let redis = RedisServer::start();
    let runs = TempDir::new("blocked-runs");
    let worker = WorkerCmd::new(&redis)
        .config(&config(
            runs.path(),
            "[tasks.\"runq.demo.build_climate\"]\nlock_ttl = 2\n",
        ))
        .args(&["--name", "blocked"])
        .spawn();
    let id = enqueue(&redis, &["runq.demo.build_climate", "blocked", "8"]);
    wait_for("the lock to be taken", || {
        lock_value(&redis, "blocked", "climate.nodb")
    });
    std::thread::sleep(Duration::from_millis(300));
    // Redis stops answering: renewals cannot reach it.
    let paused_at = now_epoch();
    redis.pause();
    std::thread::sleep(Duration::from_millis(3500));
    let resumed_at = now_epoch();
    redis.resume();
    // By now the key has expired in Redis: another holder gets the lock at once.
    let mut contender = Lease::new("blocked", "climate.nodb", 30);
    contender.owner = "contender:1".into();
    let taken: Option<String> = redis::cmd("SET")
        .arg(&contender.key)
        .arg(contender.payload_at(lock::now_secs()).to_json())
        .arg("NX")
        .arg("EX")
        .arg(30)
        .query(&mut lock_db(&redis))
        .unwrap();
    assert!(taken.is_some(), "the old lease had expired");
    let text = wait_failed(&redis, &id);
    assert!(
        text.contains("could not be renewed before its lease ran out"),
        "{text}"
    );
    let lost_at = log_time(&worker.logs(), "could not be renewed");
    eprintln!(
        "race 3: renewal blocked at +0.00 s, task stopped at +{:.2} s, lease (2 s TTL) could pass on at +{:.2} s",
        lost_at - paused_at,
        resumed_at - paused_at
    );
    assert!(lost_at < resumed_at, "stopped while Redis was still paused");
    assert!(
        lost_at - paused_at < 2.0,
        "stopped within the 2 s TTL of the last renewal"
    );
    assert!(
        document(runs.path(), "blocked", "climate.nodb").is_none(),
        "the stopped task wrote nothing"
    );
    assert_eq!(
        ledger(runs.path(), "blocked"),
        vec![("enter".to_string(), id.clone())],
        "entered, never finished its critical section"
    );
    // Its release left the contender's lock alone.
    let held = LockPayload::parse(&lock_value(&redis, "blocked", "climate.nodb").unwrap());
    assert_eq!(held.token, contender.token);
}

// ---------------------------------------------------------------------------------------
// (4) Stale-token unlock

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn race4_stale_token_unlock_is_refused_and_force_unlock_works() {
    let redis = RedisServer::start();
    let client = redis::Client::open(redis.url_db(0)).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut owner = Lease::new("stale-run", "climate.nodb", 60);
    lock::acquire_waiting(&mut conn, &mut owner, Duration::from_secs(1))
        .await
        .unwrap();
    // A previous holder's token: refused, naming the owner; the lock is intact.
    let answer = lock::release_token(&mut conn, "stale-run", "climate.nodb", &lock::new_token())
        .await
        .unwrap();
    assert_eq!(answer, TokenCheck::Held(owner.owner.clone()));
    let stored = LockPayload::parse(&lock_value(&redis, "stale-run", "climate.nodb").unwrap());
    assert_eq!(stored.token, owner.token);
    assert_eq!(
        flag(&redis, "stale-run", "climate.nodb").as_deref(),
        Some("true")
    );
    // The same through the CLI.
    let out = runq(
        &redis,
        &[
            "locks",
            "stale-run",
            "--unlock",
            "climate.nodb",
            "--token",
            "0123abcd",
        ],
    );
    assert!(!out.status.success());
    assert!(out.stderr.contains("refused"), "{}", out.stderr);
    assert!(out.stderr.contains(&owner.owner), "{}", out.stderr);
    assert!(lock_value(&redis, "stale-run", "climate.nodb").is_some());
    // Force-unlock works; the owner then finds its lock gone.
    let out = runq(
        &redis,
        &["locks", "stale-run", "--force-unlock", "climate.nodb"],
    )
    .ok("runq locks --force-unlock");
    assert!(out.stdout.contains(&owner.owner), "{}", out.stdout);
    assert_eq!(lock_value(&redis, "stale-run", "climate.nodb"), None);
    assert_eq!(
        flag(&redis, "stale-run", "climate.nodb").as_deref(),
        Some("false")
    );
    assert_eq!(
        lock::release(&mut conn, &owner).await.unwrap(),
        TokenCheck::Gone
    );
    // And the lock can be taken again.
    let next = Lease::new("stale-run", "climate.nodb", 60);
    assert_eq!(lock::try_acquire(&mut conn, &next).await.unwrap(), None);
}

// ---------------------------------------------------------------------------------------
// (5) Clearing locks under an active operation

#[test]
fn race5_clearing_locks_fails_the_active_task_cleanly_and_spares_other_runs() {
    let redis = RedisServer::start();
    let runs = TempDir::new("clear-runs");
    let _worker = WorkerCmd::new(&redis)
        .config(&config(
            runs.path(),
            "[tasks.\"runq.demo.build_climate\"]\nlock_ttl = 3\n",
        ))
        .args(&["--concurrency", "2", "--name", "clearing"])
        .spawn();
    let victim = enqueue(&redis, &["runq.demo.build_climate", "clear-a", "4"]);
    let other = enqueue(
        &redis,
        &["runq.demo.build_climate", "clear-a-different", "4"],
    );
    wait_for("both locks", || {
        lock_value(&redis, "clear-a", "climate.nodb").and(lock_value(
            &redis,
            "clear-a-different",
            "climate.nodb",
        ))
    });
    let other_before = lock_value(&redis, "clear-a-different", "climate.nodb").unwrap();
    let cleared_at = Instant::now();
    let out = runq(&redis, &["locks", "clear-a", "--clear"]).ok("runq locks --clear");
    assert!(out.stdout.contains("cleared 1 lock(s)"), "{}", out.stdout);
    assert!(out.stdout.contains("locked:climate.nodb"), "{}", out.stdout);
    assert_eq!(
        lock_value(&redis, "clear-a-different", "climate.nodb"),
        Some(other_before),
        "the other run's lock is untouched"
    );
    let text = wait_failed(&redis, &victim);
    eprintln!(
        "race 5: the holder failed {:.2} s after its lock was cleared",
        cleared_at.elapsed().as_secs_f64()
    );
    assert!(
        text.contains("was lost while the task ran: it was cleared or expired"),
        "{text}"
    );
    assert!(document(runs.path(), "clear-a", "climate.nodb").is_none());
    wait_finished(&redis, &[other]);
    assert_eq!(
        document(runs.path(), "clear-a-different", "climate.nodb").unwrap()["py/state"]["builds"],
        1
    );
    // The cleared run can be locked again.
    let again = enqueue(&redis, &["runq.demo.build_climate", "clear-a"]);
    wait_finished(&redis, std::slice::from_ref(&again));
    assert_eq!(history(runs.path(), "clear-a", "climate.nodb"), vec![again]);
}
