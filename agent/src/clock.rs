//! The one module that reads the clock. Everything else is handed a [`SampleTime`].

#![allow(clippy::disallowed_types)]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The time of one sample: monotonic time since the agent started. The sampler takes it
/// once per cycle and hands it to every source, so that all sources of a cycle agree on
/// the interval and tests can play any timeline.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SampleTime(Duration);

impl SampleTime {
    /// A sample time at `since_start` after the start of the timeline.
    pub fn from_monotonic(since_start: Duration) -> SampleTime {
        SampleTime(since_start)
    }

    pub fn since_start(self) -> Duration {
        self.0
    }

    /// Time elapsed from `earlier` to `self`; zero if `earlier` is later.
    pub fn since(self, earlier: SampleTime) -> Duration {
        self.0.saturating_sub(earlier.0)
    }
}

/// The agent's monotonic clock.
#[derive(Clone, Copy, Debug)]
pub struct MonotonicClock {
    start: Instant,
}

impl MonotonicClock {
    pub fn start() -> MonotonicClock {
        MonotonicClock {
            start: Instant::now(),
        }
    }

    pub fn now(&self) -> SampleTime {
        SampleTime(self.start.elapsed())
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::start()
    }
}

/// A stopwatch for measuring the agent's own work (sampling cost). Not for sources.
#[derive(Debug)]
pub struct Stopwatch(Instant);

impl Stopwatch {
    pub fn start() -> Stopwatch {
        Stopwatch(Instant::now())
    }

    pub fn elapsed(&self) -> Duration {
        self.0.elapsed()
    }
}

/// Wall-clock time as seconds since the Unix epoch (for build info and wire records).
pub fn unix_time() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Wall-clock time as milliseconds since the Unix epoch (UTC): the end of a sampling
/// interval on the wire, and "now" for the spool's age limit.
pub fn unix_ms() -> u64 {
    u64::try_from(unix_time().as_millis()).unwrap_or(u64::MAX)
}
