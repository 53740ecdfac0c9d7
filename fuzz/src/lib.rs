//! runq-fuzz: the fuzzing harness for runq's parsers of untrusted input, on the stable
//! toolchain with proptest. This file owns the runner (a short bounded run by default,
//! a long timed run for `--ignored` tests), the per-thread allocation counter every
//! case is measured with, and the checks shared by the targets in `tests/`. The
//! generators are in `gen`.

pub mod gen;

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};
use runq_common::budget::{Budget, MAX_DEPTH, NODE_BYTES};
use serde_json::Value;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

// ---- allocation counting ----

/// The global allocator of every binary linking this crate: the system allocator,
/// counting the bytes each thread holds and its peak, so a case can be measured.
pub struct Counting;

thread_local! {
    static HELD: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn account(delta: isize) {
    let _ = HELD.try_with(|h| {
        let now = h.get() + delta;
        h.set(now);
        let _ = PEAK.try_with(|p| {
            if now > p.get() {
                p.set(now)
            }
        });
    });
}

// SAFETY: every call is forwarded to `System` unchanged; only counters are updated.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            account(l.size() as isize);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(l) };
        if !p.is_null() {
            account(l.size() as isize);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        account(-(l.size() as isize));
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            account(new as isize - l.size() as isize);
        }
        q
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// One measured run: its result, the most bytes it held at once beyond what the thread
/// held before, and how long it took.
pub struct Measured<T> {
    pub out: T,
    pub peak: usize,
    pub took: Duration,
}

/// Runs `f` on a fresh thread with a 512 KiB stack (a quarter of tokio's default, so
/// deep recursion shows up here first) and measures it there.
pub fn measure<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Measured<T> {
    let h = std::thread::Builder::new()
        .stack_size(512 * 1024)
        .spawn(move || {
            let start = HELD.with(Cell::get);
            PEAK.with(|p| p.set(start));
            let t = Instant::now();
            let out = f();
            let took = t.elapsed();
            let peak = (PEAK.with(Cell::get) - start).max(0) as usize;
            Measured { out, peak, took }
        })
        .expect("spawn a measuring thread");
    match h.join() {
        Ok(m) => m,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// The most a decode of `input_len` bytes (inflating to `inflated_len`) may hold at
/// once: the input and what inflating makes, a few times the decoded-size budget
/// (serde-pickle's values, runq's values and the copy in between), plus slack.
pub fn memory_bound(input_len: usize, inflated_len: usize) -> usize {
    let budget = Budget::for_input(inflated_len).max_bytes as usize;
    4 * 1024 * 1024 + 4 * input_len + 4 * inflated_len + 6 * budget
}

/// How many bytes inflating `data` produces before it ends or fails (at most the
/// payload limit + 1), or its length when it is not zlib: what a decode may hold.
pub fn inflated_extent(data: &[u8]) -> usize {
    use std::io::Read;
    if !runq_common::payload::is_zlib_header(data) {
        return data.len();
    }
    let mut dec = flate2::bufread::ZlibDecoder::new(data);
    let mut buf = vec![0u8; 64 * 1024];
    let mut n = 0;
    while n <= runq_common::payload::MAX_PAYLOAD_BYTES {
        match dec.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    n.max(data.len())
}

/// Longest a single case may take before it counts as a hang (debug build, shared CI).
pub const CASE_TIME_LIMIT: Duration = Duration::from_secs(30);

/// The decoded-size estimate of a value, as the budget counts it (iteratively).
pub fn decoded_size(v: &Value) -> (u64, usize) {
    let mut bytes = 0u64;
    let mut deepest = 0usize;
    let mut todo: Vec<(&Value, usize)> = vec![(v, 0)];
    while let Some((v, d)) = todo.pop() {
        bytes += NODE_BYTES;
        match v {
            Value::String(s) => bytes += s.len() as u64,
            Value::Array(a) => {
                deepest = deepest.max(d + 1);
                todo.extend(a.iter().map(|x| (x, d + 1)));
            }
            Value::Object(m) => {
                deepest = deepest.max(d + 1);
                for (k, x) in m {
                    bytes += k.len() as u64;
                    todo.push((x, d + 1));
                }
            }
            _ => {}
        }
    }
    (bytes, deepest)
}

/// A decoded value must be within the budget its input was checked against: the
/// estimate is conservative (never smaller than what decoding makes).
pub fn check_decoded(v: &Value, budget: &Budget, extra_depth: usize) -> Result<(), TestCaseError> {
    let (bytes, depth) = decoded_size(v);
    if depth + extra_depth > MAX_DEPTH {
        return Err(TestCaseError::fail(format!(
            "decoded value is {depth} (+{extra_depth}) deep, above {MAX_DEPTH}"
        )));
    }
    if bytes > budget.max_bytes {
        return Err(TestCaseError::fail(format!(
            "decoded value is {bytes} bytes, above the {}-byte budget it passed",
            budget.max_bytes
        )));
    }
    Ok(())
}

/// An error text must be one short line, whatever the input quoted.
pub fn check_error_text(text: &str) -> Result<(), TestCaseError> {
    if text.contains('\n') || text.len() > 1024 {
        return Err(TestCaseError::fail(format!(
            "error text is not one short line ({} bytes): {}",
            text.len(),
            runq_common::echo::clip(text, 300)
        )));
    }
    Ok(())
}

/// Memory and time limits of one measured case.
pub fn check_measured<T>(m: &Measured<T>, bound: usize) -> Result<(), TestCaseError> {
    if m.peak > bound {
        return Err(TestCaseError::fail(format!(
            "held {} bytes at once, above the {bound}-byte bound",
            m.peak
        )));
    }
    if m.took > CASE_TIME_LIMIT {
        return Err(TestCaseError::fail(format!("took {:?}", m.took)));
    }
    Ok(())
}

// ---- the runner ----

/// What one case reports: a label for the outcome histogram, its peak and duration.
pub struct Report {
    pub outcome: String,
    pub peak: usize,
    pub took: Duration,
}

impl Report {
    pub fn new<T>(outcome: impl Into<String>, m: &Measured<T>) -> Report {
        Report {
            outcome: outcome.into(),
            peak: m.peak,
            took: m.took,
        }
    }
}

#[derive(Default)]
struct Stats {
    cases: u64,
    outcomes: BTreeMap<String, u64>,
    max_peak: usize,
    slowest: Duration,
}

static LONG: AtomicBool = AtomicBool::new(false);

/// True under `RUNQ_FUZZ_LONG=1` or inside [`long_run`] (the `--ignored` tests).
fn long_mode() -> bool {
    LONG.load(Ordering::Relaxed) || std::env::var("RUNQ_FUZZ_LONG").is_ok_and(|v| v == "1")
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Runs `property` over `strategy`: `short_cases` cases by default (or
/// `RUNQ_FUZZ_CASES` / `PROPTEST_CASES`); in long mode, batches of fresh random cases
/// until `RUNQ_FUZZ_SECS` (default 60) per target have passed. A failing case is
/// shrunk and the test panics with it. Prints a summary of what was tried.
pub fn fuzz<S>(
    name: &str,
    short_cases: u32,
    strategy: S,
    property: impl Fn(S::Value) -> Result<Report, TestCaseError>,
) where
    S: Strategy,
    S::Value: Debug,
{
    let long = long_mode();
    let cases = env_u64("RUNQ_FUZZ_CASES")
        .or_else(|| env_u64("PROPTEST_CASES"))
        .map(|c| c as u32)
        .unwrap_or(if long { 2000 } else { short_cases });
    let deadline = Instant::now() + Duration::from_secs(env_u64("RUNQ_FUZZ_SECS").unwrap_or(60));
    let stats = Mutex::new(Stats::default());
    let started = Instant::now();
    loop {
        let mut config = Config::with_cases(cases);
        config.failure_persistence = None;
        config.max_shrink_iters = 512;
        let mut runner = TestRunner::new(config);
        let result = runner.run(&strategy, |v| {
            let r = property(v)?;
            let mut s = stats.lock().unwrap_or_else(|e| e.into_inner());
            s.cases += 1;
            *s.outcomes.entry(r.outcome).or_default() += 1;
            s.max_peak = s.max_peak.max(r.peak);
            s.slowest = s.slowest.max(r.took);
            Ok(())
        });
        match result {
            Ok(()) => {}
            Err(TestError::Fail(why, input)) => {
                let shown = format!("{input:?}");
                panic!(
                    "fuzz {name}: {why}\nminimal failing input ({} chars of Debug): {}",
                    shown.len(),
                    runq_common::echo::clip(&shown, 4000)
                );
            }
            Err(TestError::Abort(why)) => panic!("fuzz {name}: aborted: {why}"),
        }
        if !long || Instant::now() >= deadline {
            break;
        }
    }
    let s = stats.into_inner().unwrap_or_else(|e| e.into_inner());
    let outcomes: Vec<String> = s.outcomes.iter().map(|(k, n)| format!("{k} {n}")).collect();
    eprintln!(
        "fuzz {name}: {} cases in {:.1?}; max held {} KiB, slowest {:.1?}; outcomes: {}",
        s.cases,
        started.elapsed(),
        s.max_peak / 1024,
        s.slowest,
        outcomes.join(", ")
    );
}

/// For the `--ignored` long tests: runs `f` with the runner in long mode.
pub fn long_run(f: impl FnOnce()) {
    LONG.store(true, Ordering::Relaxed);
    f();
}

/// A label for a decode error: its variant and, for a limit, which one.
pub fn payload_outcome(e: &runq_common::payload::PayloadError) -> String {
    use runq_common::payload::PayloadError as E;
    match e {
        E::Limit(l) => format!("limit:{}", limit_name(&l.limit)),
        E::TooLarge(_) => "too-large".into(),
        E::InflatesTooLarge { .. } => "inflates-too-large".into(),
        E::BadZlib(_) => "bad-zlib".into(),
        E::Unrecognised(_) => "unrecognised".into(),
        E::Empty => "empty".into(),
        E::Undecodable { kind, .. } => format!("undecodable:{kind}"),
        E::Shape { kind, .. } => format!("shape:{kind}"),
        E::FuncNameTooLong { .. } => "func-name-too-long".into(),
        E::HasInstance { .. } => "has-instance".into(),
    }
}

pub fn limit_name(l: &runq_common::budget::Limit) -> &'static str {
    use runq_common::budget::Limit as L;
    match l {
        L::Depth { .. } => "depth",
        L::Size { .. } => "size",
        L::Work { .. } => "work",
        L::DeclaredLength { .. } => "declared-length",
        L::Digits { .. } => "digits",
        L::SharedMutation { .. } => "shared-mutation",
        L::MemoReuse { .. } => "memo-reuse",
    }
}
