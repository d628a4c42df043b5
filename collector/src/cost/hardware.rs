//! The amortised hardware cost: a host's purchase price (from the inventory) spread
//! evenly over its amortisation period, charged for the time the host reports, and
//! shared between its projects by energy as the embodied emissions are. Kept apart from
//! the electricity cost everywhere (API, series, dashboards, report): it is an
//! accounting figure, not a consumption.
//!
//! Money is integer: the price in micro-euros, the period in whole hours (years × 8,760,
//! as the embodied emissions' lifetimes). The cost of `[a, b)` is
//! `⌊price × (b − o) / period⌋ − ⌊price × (a − o) / period⌋` (`o` the start of the
//! period, or the epoch when no purchase date is given): contiguous batches add up to
//! exactly the price × time / period of their whole span, however small each batch is,
//! and the whole period costs exactly the price.
//!
//! Architecture invariant: every stored hardware cost names the rate that produced it
//! (`hardware_cost_hourly.rate_id` → `hardware_rates`: host, price, period, purchase date,
//! source), as an energy cost names its tariff.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::footprint::{HostPlan, HourlyDelta};

const MS_PER_HOUR: u128 = 3_600_000;

/// A host's amortisation: what a cost is stored with. It travels with the host's plan.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct HardwareRate {
    /// The host (agent id) the price is for.
    pub host: String,
    /// Purchase price of the host, everything included, in micro-euros.
    pub price_ueur: u64,
    /// Amortisation period, in hours (years × 8,760).
    pub period_hours: u64,
    /// First local day of the amortisation (`YYYY-MM-DD`), empty when not given.
    pub purchased_on: String,
    /// Start of that day, Unix seconds: before it and after the period, no cost.
    pub from_s: Option<i64>,
    pub source: String,
}

impl HardwareRate {
    /// Cumulative cost at `t_ms` since the origin, floored (clamped to the period when a
    /// purchase date bounds it).
    fn cumulative(&self, t_ms: u64) -> u128 {
        let period_ms = u128::from(self.period_hours) * MS_PER_HOUR;
        if period_ms == 0 {
            return 0;
        }
        let t = match self.from_s {
            Some(from_s) => {
                let from_ms = i128::from(from_s) * 1000;
                let rel = (i128::from(t_ms) - from_ms).clamp(0, period_ms as i128);
                rel as u128
            }
            None => u128::from(t_ms),
        };
        u128::from(self.price_ueur) * t / period_ms
    }

    /// The cost of `[start_ms, end_ms)`, in micro-euros.
    pub fn cost_ueur(&self, start_ms: u64, end_ms: u64) -> u64 {
        if end_ms <= start_ms {
            return 0;
        }
        let v = self.cumulative(end_ms) - self.cumulative(start_ms);
        u64::try_from(v).unwrap_or(u64::MAX)
    }

    /// The cost of one hour of use, in euros (for reading).
    pub fn eur_per_hour(&self) -> f64 {
        if self.period_hours == 0 {
            return 0.0;
        }
        self.price_ueur as f64 / super::UEUR_PER_EUR / self.period_hours as f64
    }
}

/// What a group of new batches adds: `(hour_s, host, project, rate)` → (site, µEUR).
#[derive(Default, Debug)]
pub struct HardwareDeltas {
    map: BTreeMap<(i64, String, String, HardwareRate), (String, u64)>,
}

impl HardwareDeltas {
    /// Charges the host of `plan` for the span of a new batch, shared between the
    /// batch's parts by energy (nothing when the host has no price or the batch no
    /// energy).
    pub fn add_batch(
        &mut self,
        host: &str,
        plan: &HostPlan,
        start_ms: u64,
        end_ms: u64,
        deltas: &[HourlyDelta],
    ) {
        let Some(rate) = plan.hardware.as_deref() else {
            return;
        };
        let amount = rate.cost_ueur(start_ms, end_ms);
        if amount == 0 {
            return;
        }
        let weights: Vec<u64> = deltas.iter().map(|d| d.energy_uj).collect();
        let mut parts = Vec::with_capacity(weights.len());
        if !empreinte_shared::split::split_amount(amount, &weights, &mut parts) {
            return;
        }
        for (d, p) in deltas.iter().zip(parts) {
            if p == 0 {
                continue;
            }
            let e = self
                .map
                .entry((d.hour_s, host.to_string(), d.project.clone(), rate.clone()))
                .or_insert_with(|| (plan.site.clone(), 0));
            e.1 = e.1.saturating_add(p);
        }
    }

    /// Adds a later group's additions.
    pub fn merge(&mut self, later: HardwareDeltas) {
        for (k, (site, v)) in later.map {
            let e = self.map.entry(k).or_insert((site, 0));
            e.1 = e.1.saturating_add(v);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// In key order: `(hour_s, host, project, rate)` → (site, µEUR).
    pub fn entries(
        &self,
    ) -> impl Iterator<Item = (&(i64, String, String, HardwareRate), &(String, u64))> {
        self.map.iter()
    }
}

/// A stored hardware rate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StoredRate {
    pub id: i64,
    pub host: String,
    pub price_ueur: u64,
    pub period_hours: u64,
    pub purchased_on: String,
    pub source: String,
}

/// A stored hardware cost: an hour, a host at a site, a project, the rate behind it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HardwareLine {
    pub hour_s: i64,
    pub site: String,
    pub host: String,
    pub project: String,
    pub cost_ueur: u64,
    pub rate: StoredRate,
}

/// The rate of an inventory item for `host`, if the item gives a purchase price.
pub fn rate_of(
    host: &str,
    item: &crate::config::InventoryItem,
    tz: &jiff::tz::TimeZone,
) -> Option<HardwareRate> {
    let price = super::ueur(item.purchase_price_eur?)?;
    let years = item.amortisation_years?;
    let period_hours = (years * crate::plan::HOURS_PER_YEAR).round();
    if !(1.0..1e7).contains(&period_hours) {
        return None;
    }
    let (purchased_on, from_s) = match &item.purchased_on {
        Some(d) => {
            let date: jiff::civil::Date = d.parse().ok()?;
            let start = date.to_zoned(tz.clone()).ok()?.timestamp().as_second();
            (date.to_string(), Some(start))
        }
        None => (String::new(), None),
    };
    Some(HardwareRate {
        host: host.to_string(),
        price_ueur: price,
        period_hours: period_hours as u64,
        purchased_on,
        from_s,
        source: item.purchase_source.clone().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(from_s: Option<i64>) -> HardwareRate {
        HardwareRate {
            host: "h".into(),
            // 8,760 € over one year: one euro an hour.
            price_ueur: 8_760_000_000,
            period_hours: 8_760,
            purchased_on: String::new(),
            from_s,
            source: "test".into(),
        }
    }

    #[test]
    fn contiguous_batches_add_up_to_the_price_of_their_span() {
        let r = HardwareRate {
            price_ueur: 45_000_000_000,
            period_hours: 5 * 8_760,
            ..rate(None)
        };
        // One-second batches over a day: each rounds, their sum does not drift.
        let start = 1_700_000_000_000u64;
        let sum: u64 = (0..86_400)
            .map(|i| r.cost_ueur(start + i * 1000, start + (i + 1) * 1000))
            .sum();
        assert_eq!(sum, r.cost_ueur(start, start + 86_400_000));
        // 45,000 € / 43,800 h × 24 h = 24.657534… €.
        assert!((sum as f64 / 1e6 - 45_000.0 / 43_800.0 * 24.0).abs() < 1e-6);
        assert_eq!(rate(None).cost_ueur(0, 3_600_000), 1_000_000);
    }

    #[test]
    fn nothing_is_charged_before_the_purchase_nor_after_the_period() {
        let r = rate(Some(3600));
        assert_eq!(r.cost_ueur(0, 3_600_000), 0);
        assert_eq!(r.cost_ueur(3_600_000, 7_200_000), 1_000_000);
        let end_ms = (3600 + 8_760 * 3600) * 1000;
        assert_eq!(r.cost_ueur(0, end_ms + 10 * 3_600_000), 8_760_000_000);
        assert_eq!(r.cost_ueur(end_ms, end_ms + 3_600_000), 0);
    }
}
