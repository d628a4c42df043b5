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

/// The agent's monotonic clock, anchored once to the wall clock when it starts.
#[derive(Clone, Copy, Debug)]
pub struct MonotonicClock {
    start: Instant,
    anchor: WallAnchor,
}

impl MonotonicClock {
    pub fn start() -> MonotonicClock {
        let start = Instant::now();
        MonotonicClock {
            start,
            anchor: WallAnchor::new(unix_ms()),
        }
    }

    pub fn now(&self) -> SampleTime {
        SampleTime(self.start.elapsed())
    }

    /// The wall-clock reading taken when this clock started, which dates every sample.
    pub fn anchor(&self) -> WallAnchor {
        self.anchor
    }
}

/// The wall clock read once, at the start of the sampling timeline: a sample's Unix time
/// is the anchor plus its monotonic time, so a later step of the wall clock (NTP, an
/// operator) neither dates a batch in the future nor stretches or reverses one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WallAnchor {
    start_unix_ms: u64,
}

impl WallAnchor {
    /// The anchor of a timeline whose start was at `start_unix_ms` by the wall clock.
    pub fn new(start_unix_ms: u64) -> WallAnchor {
        WallAnchor { start_unix_ms }
    }

    /// The Unix time, in ms, of a sample taken at `at` on this timeline.
    pub fn unix_ms(self, at: SampleTime) -> u64 {
        let since = u64::try_from(at.since_start().as_millis()).unwrap_or(u64::MAX);
        self.start_unix_ms.saturating_add(since)
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
