//! One GPU's state between polls: its counter, the cross-check of the counter against
//! integrated power, and the energy of one interval from either.

use std::time::Duration;

use empreinte_shared::{MicroJoules, MilliJoules, MilliWatts, Watts};

use super::{
    CounterCheck, DRIFT_THRESHOLD, FIRST_CHECK, GpuMethod, MAX_INTEGRATION_GAP, MIN_CHECK_JOULES,
    RECHECK_EVERY,
};
use crate::clock::SampleTime;
use crate::counter::{CounterStep, CumulativeCounter};
use crate::sources::Correction;

#[derive(Default)]
pub(super) struct CheckWindow {
    elapsed: Duration,
    counter_uj: u64,
    integrated_uj: u64,
}

pub(super) struct Gpu {
    pub(super) index: u32,
    pub(super) uuid: String,
    pub(super) method: GpuMethod,
    pub(super) check: CounterCheck,
    pub(super) window: CheckWindow,
    pub(super) counter: CumulativeCounter,
    /// Last power reading and when it was taken.
    pub(super) last_power: Option<(SampleTime, MilliWatts)>,
    /// When the last good reading (counter or power) was taken.
    pub(super) last_good: Option<SampleTime>,
    /// Driver timestamp (µs) of the newest utilisation sample seen.
    pub(super) last_sample_us: u64,
    pub(super) unaccounted: Duration,
    /// Energy counted in excess by a rejected counter, held back from the next intervals.
    pub(super) debt_uj: u64,
}

/// Energy of a linear power ramp from `a` to `b` over `dt` (the trapezoidal rule).
pub(super) fn trapezoid(a: MilliWatts, b: MilliWatts, dt: Duration) -> MicroJoules {
    MicroJoules::from_power(Watts((Watts::from(a).0 + Watts::from(b).0) / 2.0), dt)
}

impl Gpu {
    pub(super) fn new(
        index: u32,
        uuid: String,
        method: GpuMethod,
        check: CounterCheck,
        counter: CumulativeCounter,
    ) -> Gpu {
        Gpu {
            index,
            uuid,
            method,
            check,
            window: CheckWindow::default(),
            counter,
            last_power: None,
            last_good: None,
            last_sample_us: 0,
            unaccounted: Duration::ZERO,
            debt_uj: 0,
        }
    }

    /// Whether this interval's energy comes from the counter (not rejected, present).
    pub(super) fn uses_counter(&self) -> bool {
        self.method == GpuMethod::EnergyCounter
            && !matches!(self.check, CounterCheck::Rejected { .. })
    }

    /// The power integrated since the last reading, if both readings exist.
    pub(super) fn integrated_since_last(
        &self,
        power: Option<MilliWatts>,
        at: SampleTime,
    ) -> Option<MicroJoules> {
        match (self.last_power, power) {
            (Some((t0, p0)), Some(p1)) => Some(trapezoid(p0, p1, at.since(t0))),
            _ => None,
        }
    }

    /// The interval's energy from a counter reading of `mj`, cross-checked against
    /// `integrated` where a power reading exists.
    pub(super) fn energy_from_counter(
        &mut self,
        mj: u64,
        integrated: Option<MicroJoules>,
        at: SampleTime,
    ) -> (MicroJoules, Option<Correction>) {
        let step = self.counter.update(mj, at).unwrap_or(CounterStep::Baseline);
        let result = match step {
            CounterStep::Baseline => (MicroJoules::ZERO, None),
            CounterStep::Advanced { delta } | CounterStep::Wrapped { delta } => {
                let counted = MicroJoules::from(MilliJoules(delta));
                let add = match integrated {
                    Some(i) => {
                        let dt = self
                            .last_power
                            .map_or(Duration::ZERO, |(t0, _)| at.since(t0));
                        self.cross_check(counted, i, dt)
                    }
                    None => 0,
                };
                (MicroJoules(counted.0.saturating_add(add)), None)
            }
            // Driver reload: the counter restarted. A short interval is covered by the
            // power readings around it; after a longer outage the counter's new value
            // (energy since the reload) is what is known, and the rest of the gap is
            // unaccounted.
            CounterStep::Reset { since_restart } => {
                self.window = CheckWindow::default();
                if self.check != CounterCheck::NotApplicable {
                    self.check = CounterCheck::Checking;
                }
                let gap = self.last_good.map_or(Duration::ZERO, |t| at.since(t));
                let energy = match integrated {
                    Some(i) if gap <= MAX_INTEGRATION_GAP => i,
                    _ => {
                        self.unaccounted += gap;
                        MicroJoules::from(MilliJoules(since_restart))
                    }
                };
                (energy, Some(Correction::Reset))
            }
            // A step no board can draw: nothing taken from it.
            CounterStep::Glitch => (MicroJoules::ZERO, Some(Correction::Glitch)),
        };
        self.last_good = Some(at);
        result
    }

    /// The interval's energy from integrated power, less what a rejected counter counted
    /// in excess before (held back so the total never goes backwards).
    pub(super) fn energy_from_power(
        &mut self,
        integrated: Option<MicroJoules>,
        at: SampleTime,
    ) -> MicroJoules {
        self.last_good = Some(at);
        let raw = integrated.unwrap_or_default().0;
        let repaid = raw.min(self.debt_uj);
        self.debt_uj -= repaid;
        MicroJoules(raw - repaid)
    }

    /// Folds one interval into the cross-check window and concludes when it is long
    /// enough. On a rejection, returns the energy to add now (a counter that read low);
    /// an excess goes to `debt_uj`.
    #[must_use]
    fn cross_check(&mut self, counter: MicroJoules, integrated: MicroJoules, dt: Duration) -> u64 {
        self.window.elapsed += dt;
        self.window.counter_uj = self.window.counter_uj.saturating_add(counter.0);
        self.window.integrated_uj = self.window.integrated_uj.saturating_add(integrated.0);
        let needed = match self.check {
            CounterCheck::Checking => FIRST_CHECK,
            CounterCheck::Trusted { .. } => RECHECK_EVERY,
            _ => return 0,
        };
        let integrated_j = self.window.integrated_uj as f64 / 1e6;
        if self.window.elapsed < needed || integrated_j < MIN_CHECK_JOULES {
            return 0;
        }
        let counter_j = self.window.counter_uj as f64 / 1e6;
        let disagreement = (counter_j - integrated_j).abs() / integrated_j;
        let (counted, truth) = (self.window.counter_uj, self.window.integrated_uj);
        self.window = CheckWindow::default();
        if disagreement <= DRIFT_THRESHOLD {
            self.check = CounterCheck::Trusted { disagreement };
            0
        } else {
            tracing::warn!(
                gpu = self.index,
                uuid = %self.uuid,
                counter_j,
                integrated_j,
                "the GPU's energy counter disagrees with its integrated power beyond the threshold; power integration is used for this GPU from now on"
            );
            self.check = CounterCheck::Rejected {
                counter_j,
                integrated_j,
            };
            self.debt_uj = self.debt_uj.saturating_add(counted.saturating_sub(truth));
            truth.saturating_sub(counted)
        }
    }
}
