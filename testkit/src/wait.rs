//! Waiting for a condition instead of sleeping for a fixed time: tests run on loaded CI
//! machines where any fixed sleep is either too short (flaky) or too long (slow).

// Waiting is about real time, which is what the clippy ban on `Instant` keeps out of
// the product; a test helper is where it belongs.
#![allow(clippy::disallowed_types)]

use std::time::{Duration, Instant};

/// How long a test waits for something that normally takes a second or two, on a CI
/// machine loaded with other tests. A condition that is met returns at once.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Polls `condition` (first at once, then every 5 ms growing to 100 ms) until it returns
/// `Some(value)`, and returns that value. Panics after `timeout`, saying what was
/// awaited: a test never goes on silently when its scenario did not happen.
pub fn wait_until<T>(what: &str, timeout: Duration, mut condition: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    let mut step = Duration::from_millis(5);
    loop {
        if let Some(v) = condition() {
            return v;
        }
        let waited = start.elapsed();
        if waited >= timeout {
            panic!("timed out after {waited:?} waiting for {what}");
        }
        std::thread::sleep(step.min(timeout - waited));
        step = (step * 2).min(Duration::from_millis(100));
    }
}

/// [`wait_until`] for a condition that is true or false.
pub fn wait_for(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    wait_until(what, timeout, || condition().then_some(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_value_once_the_condition_holds() {
        let mut calls = 0;
        let v = wait_until("the third call", Duration::from_secs(5), || {
            calls += 1;
            (calls == 3).then_some(calls * 10)
        });
        assert_eq!(v, 30);
    }

    #[test]
    fn panics_naming_what_was_awaited() {
        let err = std::panic::catch_unwind(|| {
            wait_for(
                "a condition that never holds",
                Duration::from_millis(30),
                || false,
            )
        })
        .unwrap_err();
        let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(msg.contains("a condition that never holds"), "{msg}");
    }
}
