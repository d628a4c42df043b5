//! Differences of cumulative hardware energy counters: wraps, resets and glitches handled
//! in one place and reported, never dropped silently, and never an invented joule.
//!
//! The rule: a reading is accepted only if the energy it implies is physically possible
//! in the time since the last accepted reading, that is at most the zone's power
//! ceiling ([`Ceiling`]) times that time (plus [`TIMING_SLACK`], for the time between
//! taking the sample's timestamp and reading the file). So a lower reading is
//!
//! - a **wrap** when `max - prev + value` fits (RAPL's counters wrap at
//!   `max_energy_range_uj`, every few minutes at high power);
//! - else a **reset** when `value` itself fits (the counter restarted from zero: a GPU
//!   driver reload); the energy since the restart is counted;
//! - else a **glitch**: no energy is taken from it. One backward step of 300 J on a
//!   zone that wraps at 262 kJ would otherwise count as a wrap of 262 kJ.
//!
//! A higher reading beyond the ceiling is a glitch as well. After a glitch the last good
//! reading stays the baseline and the glitched value is remembered: the next reading is
//! measured from the good baseline if that is possible (the glitch was one bad read:
//! nothing is lost), else from the glitched value (the counter really moved: counting
//! goes on from there, and only the energy of the glitched interval is unknown).

use std::time::Duration;

use crate::clock::SampleTime;

/// The time added to every interval before applying the ceiling: a cycle's files are read
/// a little after its timestamp is taken, so two reads can be further apart than two
/// timestamps.
pub const TIMING_SLACK: Duration = Duration::from_millis(250);

/// How a cumulative counter behaves when a reading is lower than the previous one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rollover {
    /// The counter wraps to zero after reaching `max` (RAPL's `max_energy_range_uj`).
    WrapsAt { max: u64 },
    /// The counter never wraps; it restarts from zero when its owner restarts (NVML's
    /// energy counter on a driver reload).
    Resets,
}

/// The most a counter can advance per second: the zone's power ceiling in the counter's
/// own unit (µJ/s for RAPL, mJ/s for NVML).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ceiling {
    pub units_per_second: u64,
}

impl Ceiling {
    /// A ceiling of `watts` for a counter in microjoules.
    pub fn watts_in_microjoules(watts: u64) -> Ceiling {
        Ceiling {
            units_per_second: watts.saturating_mul(1_000_000),
        }
    }

    /// A ceiling of `watts` for a counter in millijoules.
    pub fn watts_in_millijoules(watts: u64) -> Ceiling {
        Ceiling {
            units_per_second: watts.saturating_mul(1_000),
        }
    }

    /// The most the counter can advance in `dt` (plus [`TIMING_SLACK`]).
    pub fn budget(self, dt: Duration) -> u64 {
        let micros = (dt + TIMING_SLACK).as_micros();
        u64::try_from(u128::from(self.units_per_second) * micros / 1_000_000).unwrap_or(u64::MAX)
    }
}

/// The outcome of one counter reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CounterStep {
    /// The first reading: a baseline, no energy yet.
    Baseline,
    /// The counter advanced by `delta` without anomaly.
    Advanced { delta: u64 },
    /// The counter wrapped past its maximum; `delta` is the true advance across the wrap.
    Wrapped { delta: u64 },
    /// The counter restarted from zero; `since_restart` is what it counted since (the
    /// energy before the restart, in this interval, is unknown to the counter).
    Reset { since_restart: u64 },
    /// A step no power within the ceiling explains: no energy taken, counted as a glitch.
    Glitch,
}

/// A reading that a counter cannot accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CounterError {
    #[error("counter value {value} is above its maximum {max}")]
    AboveMax { value: u64, max: u64 },
}

/// Tracks one cumulative counter and turns readings into differences.
#[derive(Clone, Debug)]
pub struct CumulativeCounter {
    rollover: Rollover,
    ceiling: Ceiling,
    /// The last accepted reading and when it was taken.
    last: Option<(u64, SampleTime)>,
    /// The value of the last glitch, a candidate baseline if the counter really moved.
    glitched: Option<(u64, SampleTime)>,
}

impl CumulativeCounter {
    pub fn new(rollover: Rollover, ceiling: Ceiling) -> CumulativeCounter {
        CumulativeCounter {
            rollover,
            ceiling,
            last: None,
            glitched: None,
        }
    }

    /// The last accepted reading.
    pub fn last(&self) -> Option<u64> {
        self.last.map(|(v, _)| v)
    }

    /// Accepts a reading taken at `at`. A rejected reading leaves the baseline unchanged,
    /// so the next good reading covers both intervals and nothing is lost.
    pub fn update(&mut self, value: u64, at: SampleTime) -> Result<CounterStep, CounterError> {
        if let Rollover::WrapsAt { max } = self.rollover {
            if value > max {
                return Err(CounterError::AboveMax { value, max });
            }
        }
        let Some((prev, prev_at)) = self.last else {
            self.last = Some((value, at));
            return Ok(CounterStep::Baseline);
        };
        let from_last = self.classify(prev, value, at.since(prev_at));
        let from_glitch = self
            .glitched
            .and_then(|(g, g_at)| self.classify(g, value, at.since(g_at)));
        match from_last.or(from_glitch) {
            Some(step) => {
                self.last = Some((value, at));
                self.glitched = None;
                Ok(step)
            }
            None => {
                self.glitched = Some((value, at));
                Ok(CounterStep::Glitch)
            }
        }
    }

    /// The step from `prev` to `value` over `dt`, if it is physically possible.
    fn classify(&self, prev: u64, value: u64, dt: Duration) -> Option<CounterStep> {
        let budget = self.ceiling.budget(dt);
        if value >= prev {
            let delta = value - prev;
            return (delta <= budget).then_some(CounterStep::Advanced { delta });
        }
        if let Rollover::WrapsAt { max } = self.rollover {
            // prev <= max was checked when prev was accepted.
            let delta = (max - prev).saturating_add(value);
            if delta <= budget {
                return Some(CounterStep::Wrapped { delta });
            }
        }
        (value <= budget).then_some(CounterStep::Reset {
            since_restart: value,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// 1000 units per second: at 1 s steps, a budget of 1250.
    const CEILING: Ceiling = Ceiling {
        units_per_second: 1000,
    };

    fn at(s: u64) -> SampleTime {
        SampleTime::from_monotonic(Duration::from_secs(s))
    }

    #[test]
    fn first_reading_is_a_baseline_then_differences() {
        let mut c = CumulativeCounter::new(Rollover::WrapsAt { max: 10_000 }, CEILING);
        assert_eq!(c.update(100, at(0)), Ok(CounterStep::Baseline));
        assert_eq!(
            c.update(250, at(1)),
            Ok(CounterStep::Advanced { delta: 150 })
        );
        assert_eq!(c.update(250, at(2)), Ok(CounterStep::Advanced { delta: 0 }));
    }

    #[test]
    fn a_wrap_is_corrected_and_reported() {
        let mut c = CumulativeCounter::new(Rollover::WrapsAt { max: 10_000 }, CEILING);
        c.update(9_900, at(0)).unwrap();
        // 9900 -> 10000 (100) then 0 -> 50 (50).
        assert_eq!(c.update(50, at(1)), Ok(CounterStep::Wrapped { delta: 150 }));
        assert_eq!(c.update(60, at(2)), Ok(CounterStep::Advanced { delta: 10 }));
    }

    #[test]
    fn a_small_backward_step_is_a_glitch_not_a_wrap() {
        let mut c = CumulativeCounter::new(Rollover::WrapsAt { max: 1_000_000 }, CEILING);
        c.update(500_000, at(0)).unwrap();
        // 300 back: as a wrap it would be 999 700 units in 1 s, far above the ceiling.
        assert_eq!(c.update(499_700, at(1)), Ok(CounterStep::Glitch));
        // One bad read: the next is measured from the good baseline, nothing lost.
        assert_eq!(
            c.update(500_900, at(2)),
            Ok(CounterStep::Advanced { delta: 900 })
        );
        // The counter really stepped back: counting goes on from the glitched value.
        assert_eq!(c.update(500_600, at(3)), Ok(CounterStep::Glitch));
        assert_eq!(
            c.update(500_700, at(4)),
            Ok(CounterStep::Advanced { delta: 100 })
        );
        assert_eq!(c.last(), Some(500_700));
    }

    #[test]
    fn a_jump_beyond_the_ceiling_is_a_glitch() {
        let mut c = CumulativeCounter::new(Rollover::Resets, CEILING);
        c.update(1_000, at(0)).unwrap();
        assert_eq!(c.update(201_000, at(1)), Ok(CounterStep::Glitch));
        assert_eq!(
            c.update(1_500, at(2)),
            Ok(CounterStep::Advanced { delta: 500 })
        );
        // A long gap makes a large advance possible.
        assert_eq!(
            c.update(101_500, at(102)),
            Ok(CounterStep::Advanced { delta: 100_000 })
        );
    }

    #[test]
    fn a_restart_from_zero_is_a_reset_that_keeps_the_energy_since() {
        let mut c = CumulativeCounter::new(Rollover::Resets, CEILING);
        c.update(5_000, at(0)).unwrap();
        assert_eq!(
            c.update(40, at(1)),
            Ok(CounterStep::Reset { since_restart: 40 })
        );
        assert_eq!(c.last(), Some(40));
        assert_eq!(c.update(90, at(2)), Ok(CounterStep::Advanced { delta: 50 }));
        // Backwards, but not to near zero: a glitch.
        c.update(10_000, at(12)).unwrap();
        assert_eq!(c.update(5_000, at(13)), Ok(CounterStep::Glitch));
    }

    #[test]
    fn a_value_above_the_maximum_is_refused_and_the_baseline_kept() {
        let mut c = CumulativeCounter::new(Rollover::WrapsAt { max: 1000 }, CEILING);
        c.update(10, at(0)).unwrap();
        assert_eq!(
            c.update(1001, at(1)),
            Err(CounterError::AboveMax {
                value: 1001,
                max: 1000
            })
        );
        assert_eq!(c.update(30, at(2)), Ok(CounterStep::Advanced { delta: 20 }));
    }

    proptest! {
        /// Whatever the steps (each possible within the ceiling), the sum of the
        /// differences equals the true advance of the counter.
        #[test]
        fn differences_sum_to_the_true_advance(
            max in 1_000u64..u32::MAX as u64,
            start_frac in 0.0f64..1.0,
            steps in proptest::collection::vec(0.0f64..1.0, 1..50),
        ) {
            let start = (start_frac * max as f64) as u64;
            // A ceiling that allows just under one full range per second.
            let ceiling = Ceiling { units_per_second: max - 1 };
            let mut c = CumulativeCounter::new(Rollover::WrapsAt { max }, ceiling);
            c.update(start, at(0)).unwrap();
            let (mut truth, mut sum) = (0u128, 0u128);
            let mut value = start as u128;
            for (i, s) in steps.into_iter().enumerate() {
                let step = (s * (max - 1) as f64) as u128; // within the ceiling
                truth += step;
                value += step;
                if value > max as u128 {
                    value -= max as u128;
                }
                match c.update(value as u64, at(i as u64 + 1)).unwrap() {
                    CounterStep::Advanced { delta } | CounterStep::Wrapped { delta } => sum += delta as u128,
                    other => prop_assert!(false, "unexpected {other:?}"),
                }
            }
            prop_assert_eq!(sum, truth);
        }

        /// A counter never yields more than its ceiling allows, whatever it reads.
        #[test]
        fn no_reading_yields_more_than_the_ceiling(
            readings in proptest::collection::vec(0u64..1_000_000, 1..60),
        ) {
            let mut c = CumulativeCounter::new(Rollover::WrapsAt { max: 1_000_000 }, CEILING);
            for (i, v) in readings.into_iter().enumerate() {
                let step = c.update(v, at(i as u64)).unwrap();
                let got = match step {
                    CounterStep::Advanced { delta } | CounterStep::Wrapped { delta } => delta,
                    CounterStep::Reset { since_restart } => since_restart,
                    CounterStep::Baseline | CounterStep::Glitch => 0,
                };
                // Since the last accepted reading at most i + 1 seconds passed.
                prop_assert!(got <= CEILING.budget(Duration::from_secs(i as u64 + 1)));
            }
        }
    }
}
