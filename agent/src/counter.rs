//! Differences of cumulative hardware energy counters, with wraparound and resets
//! handled in one place and reported, never dropped silently.

/// How a cumulative counter behaves when a reading is lower than the previous one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rollover {
    /// The counter wraps to zero after reaching `max` (RAPL's `max_energy_range_uj`):
    /// a lower reading means it wrapped once.
    WrapsAt { max: u64 },
    /// The counter restarts from zero when its owner restarts (NVML's energy counter on a
    /// driver reload): a lower reading means a reset.
    Resets,
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
    /// The counter went backwards and does not wrap: it was reset. The new reading is the
    /// baseline; the advance during this interval is unknown to the counter.
    Reset,
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
    last: Option<u64>,
}

impl CumulativeCounter {
    pub fn new(rollover: Rollover) -> CumulativeCounter {
        CumulativeCounter {
            rollover,
            last: None,
        }
    }

    /// The last accepted reading.
    pub fn last(&self) -> Option<u64> {
        self.last
    }

    /// Accepts a reading. A rejected reading leaves the baseline unchanged, so the next
    /// good reading covers both intervals and nothing is lost.
    pub fn update(&mut self, value: u64) -> Result<CounterStep, CounterError> {
        if let Rollover::WrapsAt { max } = self.rollover {
            if value > max {
                return Err(CounterError::AboveMax { value, max });
            }
        }
        let step = match self.last {
            None => CounterStep::Baseline,
            Some(prev) if value >= prev => CounterStep::Advanced {
                delta: value - prev,
            },
            Some(prev) => match self.rollover {
                // prev <= max was checked when prev was accepted.
                Rollover::WrapsAt { max } => CounterStep::Wrapped {
                    delta: (max - prev).saturating_add(value),
                },
                Rollover::Resets => CounterStep::Reset,
            },
        };
        self.last = Some(value);
        Ok(step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn first_reading_is_a_baseline_then_differences() {
        let mut c = CumulativeCounter::new(Rollover::WrapsAt { max: 1000 });
        assert_eq!(c.update(100), Ok(CounterStep::Baseline));
        assert_eq!(c.update(250), Ok(CounterStep::Advanced { delta: 150 }));
        assert_eq!(c.update(250), Ok(CounterStep::Advanced { delta: 0 }));
    }

    #[test]
    fn a_wrap_is_corrected_and_reported() {
        let mut c = CumulativeCounter::new(Rollover::WrapsAt { max: 1000 });
        c.update(900).unwrap();
        // 900 -> 1000 (100) then 0 -> 50 (50).
        assert_eq!(c.update(50), Ok(CounterStep::Wrapped { delta: 150 }));
        assert_eq!(c.update(60), Ok(CounterStep::Advanced { delta: 10 }));
    }

    #[test]
    fn a_value_above_the_maximum_is_refused_and_the_baseline_kept() {
        let mut c = CumulativeCounter::new(Rollover::WrapsAt { max: 1000 });
        c.update(10).unwrap();
        assert_eq!(
            c.update(1001),
            Err(CounterError::AboveMax {
                value: 1001,
                max: 1000
            })
        );
        assert_eq!(c.update(30), Ok(CounterStep::Advanced { delta: 20 }));
    }

    #[test]
    fn a_resetting_counter_restarts_from_the_new_value() {
        let mut c = CumulativeCounter::new(Rollover::Resets);
        c.update(5_000).unwrap();
        assert_eq!(c.update(40), Ok(CounterStep::Reset));
        assert_eq!(c.last(), Some(40));
        assert_eq!(c.update(90), Ok(CounterStep::Advanced { delta: 50 }));
    }

    proptest! {
        /// Whatever the steps (each below the wrap range), the sum of the differences
        /// equals the true advance of the counter.
        #[test]
        fn differences_sum_to_the_true_advance(
            max in 1_000u64..u32::MAX as u64,
            start_frac in 0.0f64..1.0,
            steps in proptest::collection::vec(0.0f64..1.0, 1..50),
        ) {
            let start = (start_frac * max as f64) as u64;
            let mut c = CumulativeCounter::new(Rollover::WrapsAt { max });
            c.update(start).unwrap();
            let (mut truth, mut sum) = (0u128, 0u128);
            let mut value = start as u128;
            for s in steps {
                let step = (s * max as f64) as u128; // strictly less than one full range
                truth += step;
                // The counter counts 0..=max, then wraps: it has max + 1 states but the
                // kernel's convention (and ours) is a wrap from max to 0 costs max - prev + new.
                value += step;
                if value > max as u128 {
                    value -= max as u128;
                }
                match c.update(value as u64).unwrap() {
                    CounterStep::Advanced { delta } | CounterStep::Wrapped { delta } => sum += delta as u128,
                    other => prop_assert!(false, "unexpected {other:?}"),
                }
            }
            prop_assert_eq!(sum, truth);
        }
    }
}
