//! Fuzz target: the `runq` CLI's argument parsers (`runq_enqueuer::args`): JSON-or-word
//! job arguments, `k=JSON` pairs, durations and `--at` times. No input may panic.

use proptest::prelude::*;
use runq_enqueuer::args;
use runq_fuzz::Report;

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,40}",
        "-?[0-9]{1,25}[smhd]?",
        Just("-1".to_string()),
        "[a-z_]{0,8}=\\PC{0,20}",
        "20[0-9]{2}-[01][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-5][0-9](Z|[+-][0-9]{2}:[0-9]{2})",
        (1usize..5000).prop_map(|n| format!("{}{}", "[".repeat(n), "]".repeat(n))),
        (1usize..100_000).prop_map(|n| "9".repeat(n)),
    ]
}

#[test]
fn argument_parsers() {
    runq_fuzz::fuzz("cli/args", 400, word(), |s| {
        let len = s.len();
        let m = runq_fuzz::measure(move || {
            let v = args::json_or_string(&s);
            let kw = args::kwarg(&s).map(|_| ()).map_err(|e| e.to_string());
            let secs = args::seconds("--ttl", &s).map_err(|e| e.to_string());
            let at = args::at_time(&s).map_err(|e| e.to_string());
            (v.is_string(), kw.is_ok(), secs, at.is_ok())
        });
        runq_fuzz::check_measured(&m, runq_fuzz::memory_bound(len, len))?;
        let (_, _, secs, _) = &m.out;
        if let Ok(n) = secs {
            prop_assert!(*n >= -1, "{n}");
        }
        let outcome = match &m.out {
            (true, ..) => "word",
            (false, ..) => "json",
        };
        Ok(Report::new(outcome, &m))
    });
}

#[test]
#[ignore = "long run: cargo test -p runq-fuzz --release -- --ignored"]
fn long_cli_args() {
    runq_fuzz::long_run(argument_parsers);
}
