//! Energy and power units. The unit is in the type, never only in a comment.

use std::fmt;
use std::ops::{Add, AddAssign};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// An amount of energy in microjoules. The accounting unit of Empreinte: every energy
/// figure is summed as an integer of this type, so that totals are exact.
///
/// `u64` microjoules hold 18.4 TJ, about 584 years of a 1 kW host.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct MicroJoules(pub u64);

/// An amount of energy in millijoules (NVML's energy counter unit).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct MilliJoules(pub u64);

/// A power in milliwatts (NVML's power unit).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct MilliWatts(pub u64);

/// A power in watts. Derived from energy over time, or a model coefficient.
#[derive(Clone, Copy, Debug, Default, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Watts(pub f64);

impl MicroJoules {
    pub const ZERO: MicroJoules = MicroJoules(0);

    /// The energy in joules, for display and export (the float is never summed back).
    pub fn as_joules(self) -> f64 {
        self.0 as f64 / 1e6
    }

    /// Saturating addition: a total that would overflow `u64` stays at its maximum rather
    /// than wrapping to a small number (it would take centuries of a megawatt to get there).
    pub fn saturating_add(self, other: MicroJoules) -> MicroJoules {
        MicroJoules(self.0.saturating_add(other.0))
    }

    pub fn checked_sub(self, other: MicroJoules) -> Option<MicroJoules> {
        self.0.checked_sub(other.0).map(MicroJoules)
    }

    /// Energy delivered by a constant `power` during `duration`, rounded to the nearest
    /// microjoule. Negative or non-finite powers give zero.
    pub fn from_power(power: Watts, duration: Duration) -> MicroJoules {
        let uj = power.0 * duration.as_secs_f64() * 1e6;
        if uj.is_finite() && uj > 0.0 {
            MicroJoules(uj.round() as u64)
        } else {
            MicroJoules::ZERO
        }
    }

    /// Mean power of this energy spent over `duration`; zero for an empty duration.
    pub fn mean_power(self, duration: Duration) -> Watts {
        let secs = duration.as_secs_f64();
        if secs > 0.0 {
            Watts(self.as_joules() / secs)
        } else {
            Watts(0.0)
        }
    }
}

impl Add for MicroJoules {
    type Output = MicroJoules;
    fn add(self, rhs: MicroJoules) -> MicroJoules {
        self.saturating_add(rhs)
    }
}

impl AddAssign for MicroJoules {
    fn add_assign(&mut self, rhs: MicroJoules) {
        *self = self.saturating_add(rhs);
    }
}

impl std::iter::Sum for MicroJoules {
    fn sum<I: Iterator<Item = MicroJoules>>(iter: I) -> MicroJoules {
        iter.fold(MicroJoules::ZERO, |a, b| a + b)
    }
}

impl From<MilliJoules> for MicroJoules {
    fn from(mj: MilliJoules) -> MicroJoules {
        MicroJoules(mj.0.saturating_mul(1000))
    }
}

impl From<MilliWatts> for Watts {
    fn from(mw: MilliWatts) -> Watts {
        Watts(mw.0 as f64 / 1000.0)
    }
}

impl fmt::Display for MicroJoules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.6} J", self.as_joules())
    }
}

impl fmt::Display for Watts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.3} W", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_and_energy_round_trip() {
        let e = MicroJoules::from_power(Watts(42.5), Duration::from_millis(1500));
        assert_eq!(e, MicroJoules(63_750_000));
        assert!((e.mean_power(Duration::from_millis(1500)).0 - 42.5).abs() < 1e-9);
    }

    #[test]
    fn bad_power_gives_no_energy() {
        for p in [f64::NAN, f64::INFINITY, -3.0] {
            assert_eq!(
                MicroJoules::from_power(Watts(p), Duration::from_secs(1)),
                MicroJoules::ZERO
            );
        }
        assert_eq!(MicroJoules(5).mean_power(Duration::ZERO), Watts(0.0));
    }

    #[test]
    fn millijoules_convert_exactly_and_sums_saturate() {
        assert_eq!(MicroJoules::from(MilliJoules(1234)), MicroJoules(1_234_000));
        assert_eq!(
            MicroJoules(u64::MAX) + MicroJoules(1),
            MicroJoules(u64::MAX)
        );
        let total: MicroJoules = [1, 2, 3].into_iter().map(MicroJoules).sum();
        assert_eq!(total, MicroJoules(6));
    }
}
