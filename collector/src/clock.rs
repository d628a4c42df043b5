//! The one module of the collector that reads the clock. Everything else is handed the
//! time, so that tests can play any timeline.

#![allow(clippy::disallowed_types)]

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Now, in Unix milliseconds (UTC).
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

/// A stopwatch for the collector's own work (store latency).
#[derive(Debug)]
pub struct Stopwatch(Instant);

impl Stopwatch {
    pub fn start() -> Stopwatch {
        Stopwatch(Instant::now())
    }

    pub fn elapsed_seconds(&self) -> f64 {
        self.0.elapsed().as_secs_f64()
    }
}
