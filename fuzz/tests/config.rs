//! Fuzz target: `Config::from_toml` over generated TOML-ish text (known sections and
//! keys with random values, deep arrays and tables) and mutated copies of the shipped
//! queues.toml. Every case: no panic; errors name a line.

use proptest::collection::vec;
use proptest::prelude::*;
use runq_common::Config;
use runq_fuzz::{gen, Report};
use std::path::Path;

fn shipped() -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../queues.toml"))
        .expect("queues.toml")
}

fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "-?[0-9]{1,22}",
        "\"[ -~]{0,30}\"",
        Just("true".to_string()),
        "\\[(\"[a-z]{1,6}\", ?){0,4}\\]",
        "[0-9]{1,3}(s|m|h|d|ms|x)",
        (1usize..3000).prop_map(|n| format!("{}1{}", "[".repeat(n), "]".repeat(n))),
        (1usize..3000).prop_map(|n| format!("{}1{}", "{a=".repeat(n), "}".repeat(n))),
        "\\PC{0,20}",
    ]
}

fn toml_text() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "url",
        "prefix",
        "password",
        "ca_file",
        "rq",
        "lock",
        "status",
        "concurrency",
        "heartbeat_secs",
        "default_timeout",
        "result_ttl",
        "failure_ttl",
        "shutdown_grace_secs",
        "interrupted_jobs",
        "abandoned_jobs",
        "serializer",
        "handler",
        "argv",
        "mode",
        "runid_arg",
        "timeout",
        "names",
        "bogus",
    ]);
    let section = prop::sample::select(vec![
        "[redis]",
        "[redis.db]",
        "[worker]",
        "[queues]",
        "[queues.default]",
        "[tasks.\"runq.tasks.echo\"]",
        "[tasks.x]",
        "[[queues]]",
        "[nope]",
        "",
    ]);
    vec((section, vec((key, toml_value()), 0..6)), 0..6).prop_map(|sections| {
        let mut t = String::new();
        for (s, kvs) in sections {
            t.push_str(s);
            t.push('\n');
            for (k, v) in kvs {
                t.push_str(&format!("{k} = {v}\n"));
            }
        }
        t
    })
}

fn config_case(text: Vec<u8>) -> Result<Report, proptest::test_runner::TestCaseError> {
    let text = String::from_utf8_lossy(&text).into_owned();
    let len = text.len();
    let m = runq_fuzz::measure(move || {
        Config::from_toml(&text, Path::new("queues.toml")).map_err(|e| e.to_string())
    });
    runq_fuzz::check_measured(&m, runq_fuzz::memory_bound(len, len))?;
    let outcome = match &m.out {
        Ok(_) => "ok".to_string(),
        Err(e) => {
            prop_assert!(e.starts_with("queues.toml"), "{e}");
            "error".to_string()
        }
    };
    Ok(Report::new(outcome, &m))
}

#[test]
fn generated_toml() {
    runq_fuzz::fuzz(
        "config/generated",
        300,
        toml_text().prop_map(String::into_bytes),
        config_case,
    );
}

#[test]
fn mutated_queues_toml() {
    runq_fuzz::fuzz(
        "config/mutated",
        200,
        gen::mutated(vec![shipped()]),
        config_case,
    );
}

#[test]
fn shipped_queues_toml_parses() {
    let text = String::from_utf8(shipped()).unwrap();
    Config::from_toml(&text, Path::new("queues.toml")).unwrap();
}

#[test]
#[ignore = "long run: cargo test -p runq-fuzz --release -- --ignored"]
fn long_config() {
    runq_fuzz::long_run(|| {
        generated_toml();
        mutated_queues_toml();
    });
}
