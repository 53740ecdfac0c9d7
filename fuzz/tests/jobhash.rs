//! Fuzz target: `JobHash::validate_for_run` (and the accessors a worker reads) over
//! random field maps: known RQ fields with plausible, junk, huge and non-UTF-8 values.

use proptest::collection::{hash_map, vec};
use proptest::prelude::*;
use runq_common::job::JobHash;
use runq_fuzz::Report;

fn field_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        "-?[0-9]{1,25}".prop_map(String::into_bytes),
        Just(b"-1".to_vec()),
        "(queued|started|finished|failed|deferred|scheduled|stopped|canceled|created|weird)"
            .prop_map(String::into_bytes),
        "20[0-9]{2}-[01][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?Z?"
            .prop_map(String::into_bytes),
        "\\[(-?[0-9]{1,20}, ?){0,4}\\]".prop_map(String::into_bytes),
        "\\[(\"[a-z0-9-]{0,8}\", ?){0,3}\\]".prop_map(String::into_bytes),
        vec(any::<u8>(), 0..32),
        (1usize..200_000).prop_map(|n| vec![b'9'; n]),
        (1usize..20_000).prop_map(|n| "[".repeat(n).into_bytes()),
        "\\PC{0,40}".prop_map(String::into_bytes),
    ]
}

fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => prop::sample::select(vec![
            "data", "status", "timeout", "result_ttl", "failure_ttl", "ttl", "retries_left",
            "retry_intervals", "created_at", "enqueued_at", "started_at", "ended_at", "origin",
            "dependency_ids", "meta", "description", "worker_name",
        ]).prop_map(str::to_string),
        1 => "[a-z_]{1,12}",
    ]
}

#[test]
fn validate_for_run() {
    let maps = (
        "[a-z0-9-]{1,36}",
        hash_map(field_name(), field_value(), 0..14),
    );
    runq_fuzz::fuzz("jobhash", 400, maps, |(id, fields)| {
        let input_len: usize = fields.iter().map(|(k, v)| k.len() + v.len()).sum();
        let h = JobHash::new(id, fields);
        let m = runq_fuzz::measure(move || {
            let r = h.validate_for_run().map_err(|e| e.to_string());
            // What a worker reads besides.
            let _ = (
                h.origin(),
                h.ttl(),
                h.dependency_ids(),
                h.meta(),
                h.status(),
            );
            r
        });
        runq_fuzz::check_measured(&m, runq_fuzz::memory_bound(input_len, input_len))?;
        let outcome = match &m.out {
            Ok(()) => "valid".to_string(),
            Err(e) => {
                // job.rs quotes bad values whole; bounded by the input, one line only
                // when the value has no line break.
                prop_assert!(e.len() <= 2 * input_len + 200, "{} bytes", e.len());
                let field = e.split('`').nth(1).unwrap_or("?").to_string();
                format!("invalid {field}")
            }
        };
        Ok(Report::new(outcome, &m))
    });
}

#[test]
#[ignore = "long run: cargo test -p runq-fuzz --release -- --ignored"]
fn long_jobhash() {
    runq_fuzz::long_run(validate_for_run);
}
