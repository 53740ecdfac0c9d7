//! Fuzz targets: single values read back (`SerializerKind::loads` / `loads_bounded`
//! for return values and `meta`), `results::decode_exc_string`, and the iterative
//! MessagePack reader against rmp-serde on everything within budget.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use runq_common::budget::{self, Budget};
use runq_common::serializer::LoadError;
use runq_common::{results, SerializerKind};
use runq_fuzz::{gen, Report};

const KINDS: [SerializerKind; 3] = [
    SerializerKind::Pickle,
    SerializerKind::Json,
    SerializerKind::Msgpack,
];

/// Loads `bytes` with every serializer (and with the one `detect` picks, as
/// `runq job` does).
fn loads_case(bytes: Vec<u8>) -> Result<Report, TestCaseError> {
    let budget = Budget::for_input(bytes.len());
    let bound = runq_fuzz::memory_bound(bytes.len(), bytes.len());
    let mut report: Option<Report> = None;
    for kind in KINDS {
        let b = bytes.clone();
        let m = runq_fuzz::measure(move || kind.loads_bounded(&b, "return value"));
        runq_fuzz::check_measured(&m, bound)?;
        let outcome = match &m.out {
            Ok(v) => {
                runq_fuzz::check_decoded(v, &budget, 0)?;
                "ok".to_string()
            }
            Err(e) => {
                runq_fuzz::check_error_text(&e.to_string())?;
                match e {
                    LoadError::Limit(l) => {
                        prop_assert!(e.to_string().starts_with("return value: "), "{e}");
                        format!("limit:{}", runq_fuzz::limit_name(&l.limit))
                    }
                    LoadError::Undecodable(_) => "undecodable".to_string(),
                }
            }
        };
        // The String form (`loads`) is the same text.
        let again = kind.loads(&bytes, "return value");
        prop_assert_eq!(again.is_ok(), m.out.is_ok());
        if Some(kind) == SerializerKind::detect(&bytes) || report.is_none() {
            report = Some(Report::new(format!("{kind}:{outcome}"), &m));
        }
    }
    Ok(report.expect("three kinds"))
}

#[test]
fn loads_values() {
    runq_fuzz::fuzz("loads", 300, gen::value_bytes(), loads_case);
}

fn exc_case(b64: Vec<u8>) -> Result<Report, TestCaseError> {
    let extent = B64
        .decode(&b64)
        .map(|b| runq_fuzz::inflated_extent(&b))
        .unwrap_or(0);
    let bound = runq_fuzz::memory_bound(b64.len(), extent);
    let m = runq_fuzz::measure(move || results::decode_exc_string(&b64));
    runq_fuzz::check_measured(&m, bound)?;
    let outcome = match &m.out {
        Some(s) if s.len() > 1 << 20 => "text>1MiB",
        Some(_) => "text",
        None => "none",
    };
    Ok(Report::new(outcome, &m))
}

#[test]
fn exc_strings() {
    let texts = prop_oneof![
        "\\PC{0,200}".prop_map(|s| B64
            .encode(runq_common::payload::deflate(s.as_bytes()))
            .into_bytes()),
        gen::zlib_payload().prop_map(|z| B64.encode(z).into_bytes()),
        prop::collection::vec(any::<u8>(), 0..128).prop_map(|b| B64.encode(b).into_bytes()),
        prop::collection::vec(any::<u8>(), 0..128),
    ];
    runq_fuzz::fuzz("exc_string", 200, texts, exc_case);
}

/// Where the budget passes, the iterative reader and rmp-serde agree.
#[test]
fn msgpack_reader_matches_rmp_serde() {
    runq_fuzz::fuzz(
        "msgpack/differential",
        300,
        gen::msgpack_payload(),
        |bytes| {
            let budget = Budget::for_input(bytes.len());
            if budget::check(SerializerKind::Msgpack, &bytes, &budget).is_err() {
                return Ok(Report {
                    outcome: "over budget".into(),
                    peak: 0,
                    took: Default::default(),
                });
            }
            let b = bytes.clone();
            let m = runq_fuzz::measure(move || {
                let ours = runq_common::msgpack::to_value(&b);
                let theirs = rmp_serde::from_slice::<serde_json::Value>(&b);
                (ours, theirs.map_err(|e| e.to_string()))
            });
            let (ours, theirs) = &m.out;
            match (ours, theirs) {
                (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
                (Err(_), Err(_)) => {}
                (a, b) => {
                    return Err(TestCaseError::fail(format!(
                        "runq: {a:?}, rmp-serde: {b:?}"
                    )))
                }
            }
            Ok(Report::new(
                if ours.is_ok() { "both ok" } else { "both err" },
                &m,
            ))
        },
    );
}

/// Inputs the long run found, kept as regressions.
#[test]
fn found_by_fuzzing() {
    // pickle INT whose line is 193 control characters: serde-pickle quotes the literal,
    // and escaping each as `\u{e}` made the clipped text six times too long.
    let mut int_line = vec![b'I'];
    int_line.extend([14u8; 193]);
    loads_case(int_line).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
#[ignore = "long run: cargo test -p runq-fuzz --release -- --ignored"]
fn long_values() {
    runq_fuzz::long_run(|| {
        loads_values();
        exc_strings();
        msgpack_reader_matches_rmp_serde();
    });
}
