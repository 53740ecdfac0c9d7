//! Bounded polling: [`WAIT`], the longest any test waits, [`wait_for`] and [`wait_until`]
//! (poll until a condition holds, panic after [`WAIT`]), [`wait_until_with`] (the same,
//! with context in the panic message) and [`wait_within`] (a promised bound shorter than
//! [`WAIT`], returning the time it took); and [`sorted`], for comparing with replies that
//! come in no particular order.
//!
//! Every wait is bounded and polls; nothing asserts on speed except [`wait_within`] where
//! runq promises a bound.

use std::time::{Duration, Instant};

/// The longest any test waits for something to happen.
pub const WAIT: Duration = Duration::from_secs(30);

/// Polls `check` every `every` until it returns `Some`, for at most `limit`; on timeout
/// panics with `what` and whatever `context` says.
fn poll<T>(
    what: &str,
    limit: Duration,
    every: Duration,
    mut check: impl FnMut() -> Option<T>,
    context: impl FnOnce() -> String,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return v;
        }
        if Instant::now() > deadline {
            let context = context();
            if context.is_empty() {
                panic!("timed out after {limit:?} waiting for {what}");
            }
            panic!("timed out after {limit:?} waiting for {what}\n{context}");
        }
        std::thread::sleep(every);
    }
}

/// Polls `check` every 50 ms until it returns `Some`, for at most [`WAIT`].
pub fn wait_for<T>(what: &str, check: impl FnMut() -> Option<T>) -> T {
    poll(what, WAIT, Duration::from_millis(50), check, String::new)
}

/// Polls until `check` is true, for at most [`WAIT`].
pub fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    wait_for(what, || check().then_some(()))
}

/// [`wait_until`], adding `context()` (a log, the state seen last) to the panic message
/// when it times out.
pub fn wait_until_with(
    what: &str,
    mut check: impl FnMut() -> bool,
    context: impl FnOnce() -> String,
) {
    poll(
        what,
        WAIT,
        Duration::from_millis(50),
        || check().then_some(()),
        context,
    )
}

/// Polls `check` every 20 ms until true, for at most `limit` (a bound runq promises);
/// returns how long it took.
pub fn wait_within(what: &str, limit: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    poll(
        what,
        limit,
        Duration::from_millis(20),
        || check().then_some(()),
        String::new,
    );
    start.elapsed()
}

/// `v` sorted: for comparing with what Redis returns in no particular order.
pub fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}
