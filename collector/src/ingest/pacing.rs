//! When to tell a turned-away agent to come back (`Retry-After` on a 503 from a full
//! ingest bound), so that a fleet catching up after an outage returns at the rate the
//! collector stores, not all at once (a retry storm).
//!
//! The collector measures how many push bytes it stores per second. Each refused push
//! books the time its bytes would take at that rate after the pushes refused before it,
//! and is told to come back then: the first refused get 1 s, the next ones later and
//! later, and the retries arrive spread over the time the collector needs to serve them.
//! The agent waits that long plus up to a quarter more at random, without doubling
//! (`empreinte_agent::push::client::failed_wait`), and at most 2 min: the booking is
//! capped there too.

use std::sync::Mutex;

use crate::clock::Stopwatch;

/// The longest `Retry-After` given, in seconds (the agent waits no longer than this).
pub const MAX_RETRY_AFTER_S: u64 = 120;
/// The lowest rate assumed (bytes per second), also before any push was stored. An
/// estimate below what the collector can store leaves it idle while agents wait (a
/// 1 MiB/s floor told 1,000 agents with 4.5 MB backlogs to wait up to 2 min while the
/// collector stood idle, BENCHMARKS.md); one above costs a few more 503s.
const FLOOR_BYTES_PER_S: f64 = 32.0 * 1024.0 * 1024.0;
/// Stored bytes are counted over windows of this length before they update the rate.
const WINDOW_MS: u64 = 1_000;

#[derive(Debug)]
struct State {
    /// Bytes per second stored, smoothed over windows.
    rate: f64,
    window_start_ms: u64,
    window_bytes: u64,
    /// Until when (ms on this pacer's clock) refused pushes are booked.
    booked_until_ms: u64,
}

/// The retry schedule of one collector.
#[derive(Debug)]
pub struct Pacer {
    clock: Stopwatch,
    state: Mutex<State>,
}

impl Default for Pacer {
    fn default() -> Pacer {
        Pacer::new()
    }
}

impl Pacer {
    pub fn new() -> Pacer {
        Pacer {
            clock: Stopwatch::start(),
            state: Mutex::new(State {
                rate: FLOOR_BYTES_PER_S,
                window_start_ms: 0,
                window_bytes: 0,
                booked_until_ms: 0,
            }),
        }
    }

    fn now_ms(&self) -> u64 {
        (self.clock.elapsed_seconds() * 1000.0) as u64
    }

    /// A push of `bytes` was stored.
    pub fn stored(&self, bytes: u64) {
        self.stored_at(bytes, self.now_ms());
    }

    /// A push of `bytes` is turned away: seconds until it should come back.
    pub fn retry_after_s(&self, bytes: u64) -> u64 {
        self.retry_after_at(bytes, self.now_ms())
    }

    fn stored_at(&self, bytes: u64, now_ms: u64) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.window_bytes = s.window_bytes.saturating_add(bytes);
        let elapsed = now_ms.saturating_sub(s.window_start_ms);
        if elapsed >= WINDOW_MS {
            let measured = s.window_bytes as f64 * 1000.0 / elapsed as f64;
            s.rate = (0.5 * s.rate + 0.5 * measured).max(FLOOR_BYTES_PER_S);
            s.window_start_ms = now_ms;
            s.window_bytes = 0;
        }
    }

    fn retry_after_at(&self, bytes: u64, now_ms: u64) -> u64 {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let service_ms = (bytes as f64 * 1000.0 / s.rate).ceil() as u64;
        let start = s.booked_until_ms.max(now_ms);
        let until = start
            .saturating_add(service_ms)
            .min(now_ms + MAX_RETRY_AFTER_S * 1000);
        s.booked_until_ms = until;
        let wait_ms = until.saturating_sub(now_ms);
        wait_ms.div_ceil(1000).clamp(1, MAX_RETRY_AFTER_S)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_pushes_are_spread_over_the_time_the_collector_needs() {
        let p = Pacer::new();
        // 50 MB/s stored for a few windows.
        for t in 0..5u64 {
            for i in 0..10 {
                p.stored_at(5_000_000, t * 1000 + i * 100);
            }
        }
        p.stored_at(0, 5_000);
        let rate = p.state.lock().unwrap().rate;
        assert!((40e6..=56e6).contains(&rate), "{rate}");
        // 200 pushes of 4.5 MB refused at once: about 18 s of work at 50 MB/s.
        let waits: Vec<u64> = (0..200)
            .map(|_| p.retry_after_at(4_500_000, 5_000))
            .collect();
        assert_eq!(waits[0], 1);
        assert!(waits.windows(2).all(|w| w[0] <= w[1]), "{waits:?}");
        let last = *waits.last().unwrap();
        assert!((15..=25).contains(&last), "{last}");
        // Spread: each second gets back about what the collector stores in a second.
        let mut per_second = std::collections::BTreeMap::new();
        for w in &waits {
            *per_second.entry(*w).or_insert(0) += 1;
        }
        assert!(per_second.values().all(|&n| n <= 13), "{per_second:?}");
    }

    #[test]
    fn a_slow_measure_never_books_below_the_floor() {
        let p = Pacer::new();
        p.stored_at(1_000, 0);
        p.stored_at(1_000, 2_000);
        // 100 pushes of 4.5 MB at the floor (32 MiB/s): about 13 s, not minutes.
        let last = (0..100).map(|_| p.retry_after_at(4_500_000, 2_000)).max();
        assert!(last.is_some_and(|s| (10..=16).contains(&s)), "{last:?}");
    }

    #[test]
    fn the_booking_ends_when_time_passes_and_is_capped() {
        let p = Pacer::new();
        for _ in 0..1000 {
            p.retry_after_at(100 * 1024 * 1024, 0);
        }
        assert_eq!(p.retry_after_at(1, 0), MAX_RETRY_AFTER_S);
        // Two minutes later nothing is booked: back to 1 s.
        assert_eq!(p.retry_after_at(1, 200_000), 1);
    }
}
