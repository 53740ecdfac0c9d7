//! Fuzz target: job payload decoding (`payload::decode` strict, `inflate` + `parse`
//! lenient) for all three serializers, zlib-wrapped or raw, with bombs and mutated real
//! RQ payloads. Every case: no panic, a typed one-line error or a call within budget,
//! bounded memory.

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use runq_common::budget::Budget;
use runq_common::payload::{self, PayloadError};
use runq_fuzz::{gen, Report};

fn check_call(call: &payload::JobCall, budget: &Budget) -> Result<(), TestCaseError> {
    let v = serde_json::json!([
        call.func_name.clone(),
        null,
        call.args.clone(),
        call.kwargs.clone()
    ]);
    runq_fuzz::check_decoded(&v, budget, 0)
}

/// Decodes `data` as a worker does (strict, then lenient), measuring each.
fn decode_case(data: Vec<u8>) -> Result<Report, TestCaseError> {
    let inflated_len = runq_fuzz::inflated_extent(&data);
    let budget = Budget::for_input(inflated_len);
    let bound = runq_fuzz::memory_bound(data.len(), inflated_len);
    let input = data.clone();
    let strict = runq_fuzz::measure(move || payload::decode(&input));
    runq_fuzz::check_measured(&strict, bound)?;
    let outcome = match &strict.out {
        Ok((_, call)) => {
            check_call(call, &budget)?;
            "ok".to_string()
        }
        Err(e) => {
            runq_fuzz::check_error_text(&e.to_string())?;
            runq_fuzz::payload_outcome(e)
        }
    };
    let lenient = runq_fuzz::measure(move || {
        payload::inflate(&data).and_then(|raw| payload::parse(&raw, true))
    });
    runq_fuzz::check_measured(&lenient, bound)?;
    match &lenient.out {
        Ok((_, call)) => check_call(call, &budget)?,
        Err(e) => runq_fuzz::check_error_text(&e.to_string())?,
    }
    let mut r = Report::new(outcome, &strict);
    r.peak = r.peak.max(lenient.peak);
    r.took += lenient.took;
    Ok(r)
}

#[test]
fn pickle_payloads() {
    runq_fuzz::fuzz("payload/pickle", 300, gen::pickle_payload(), decode_case);
}

#[test]
fn json_payloads() {
    runq_fuzz::fuzz("payload/json", 200, gen::json_payload(), decode_case);
}

#[test]
fn msgpack_payloads() {
    runq_fuzz::fuzz("payload/msgpack", 200, gen::msgpack_payload(), decode_case);
}

#[test]
fn zlib_payloads() {
    runq_fuzz::fuzz("payload/zlib", 150, gen::zlib_payload(), decode_case);
}

#[test]
fn random_bytes() {
    runq_fuzz::fuzz(
        "payload/bytes",
        200,
        prop::collection::vec(any::<u8>(), 0..256),
        decode_case,
    );
}

/// The seed corpus decodes as Python wrote it: plain values strictly, classes only
/// leniently, an `instance` refused.
#[test]
fn corpus_decodes_as_python_wrote_it() {
    let mut n = 0;
    for (name, data) in gen::corpus() {
        if name.starts_with("result-") {
            continue;
        }
        n += 1;
        let strict = payload::decode(data);
        if name.contains("-instance") {
            assert!(
                matches!(strict, Err(PayloadError::HasInstance { .. })),
                "{name}: {strict:?}"
            );
        } else if name.contains("-class") {
            assert!(strict.is_err(), "{name}");
            let raw = payload::inflate(data).unwrap();
            let (_, call) = payload::parse(&raw, true).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(call.func_name, "runq.tasks.echo");
        } else if name.contains("-bigint") && name.starts_with("pickle") {
            // beyond 64 bits: no JSON form, refused strictly, null leniently
            let e = strict.unwrap_err().to_string();
            assert!(e.contains("integer of 71 bits is too large"), "{name}: {e}");
            let raw = payload::inflate(data).unwrap();
            payload::parse(&raw, true).unwrap_or_else(|e| panic!("{name}: {e}"));
        } else if name.contains("-shared") && name.starts_with("pickle") {
            // serde-pickle counts memo references per slot and cannot expand a shared
            // list whose own items are memoized ([["s"] * 3] * 4): a known limitation.
            let e = strict.unwrap_err().to_string();
            assert!(e.contains("recursive structure found"), "{name}: {e}");
        } else if name.contains("-bytes") && name.starts_with("pickle") {
            // non-UTF-8 bytes have no JSON form: refused strictly, null leniently
            let raw = payload::inflate(data).unwrap();
            payload::parse(&raw, true).unwrap_or_else(|e| panic!("{name}: {e}"));
        } else {
            let (_, call) = strict.unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!call.func_name.is_empty(), "{name}");
        }
    }
    assert!(n >= 60, "{n} corpus payloads");
}

/// Inputs the long run found, kept as regressions.
#[test]
fn found_by_fuzzing() {
    // msgpack call whose func name holds a line break, with an `instance`: the echo was
    // two lines.
    let found: &[&[u8]] = &[&[
        148, 186, 46, 46, 97, 95, 95, 46, 95, 46, 97, 95, 97, 97, 46, 10, 93, 113, 0, 40, 104, 0,
        104, 0, 108, 113, 1, 46, 46, 97, 95, 46, 95, 46, 97, 95, 97, 97, 46, 192, 145, 144, 128,
    ]];
    for data in found {
        decode_case(data.to_vec()).unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
#[ignore = "long run: cargo test -p runq-fuzz --release -- --ignored"]
fn long_payloads() {
    runq_fuzz::long_run(|| {
        pickle_payloads();
        json_payloads();
        msgpack_payloads();
        zlib_payloads();
        random_bytes();
    });
}
