//! Recomputing stored hourly rows with the plan in force at their hour. Pure: the store
//! engines read the rows of a host and hour, call [`host_hour`], write what it gives and
//! the rollups' differences.
//!
//! Energy never changes. Facility energy, location- and market-based emissions are made
//! from it exactly as at ingest (`facility_uj`, `operational_ug`). The embodied share is
//! made again from the host's covered time in the hour, read back from the stored
//! embodied emissions and the rate they were made with (rows without a rate count the
//! hour as covered whole: an agent pushes continuously), then shared as at ingest: the
//! server by all energy, the GPUs by GPU energy.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use empreinte_shared::split::split_amount;

use super::MonthFigures;
use crate::footprint::{HostPlan, operational_ug};
use crate::store::StoreError;
use crate::store::sqlite::writer::facility_uj;

/// A stored row, as a recomputation reads it.
#[derive(Clone, Debug, PartialEq)]
pub struct OldRow {
    pub hour_s: i64,
    pub host: String,
    pub project: String,
    pub component: String,
    pub source: String,
    pub site: String,
    pub zone: String,
    pub energy_uj: i64,
    pub facility_uj: i64,
    pub location_ug: i64,
    pub market_ug: Option<i64>,
    pub embodied_ug: i64,
    /// The coefficients it was made with (ids), pue first.
    pub pue_coef: i64,
    pub grid_coef: Option<i64>,
    pub market_coef: Option<i64>,
    pub embodied_coef: Option<i64>,
    /// The value of its embodied coefficient, gCO2e per hour.
    pub embodied_g_per_hour: Option<f64>,
}

impl OldRow {
    pub fn coefs(&self) -> impl Iterator<Item = i64> + '_ {
        [
            Some(self.pue_coef),
            self.grid_coef,
            self.market_coef,
            self.embodied_coef,
        ]
        .into_iter()
        .flatten()
    }
}

/// A row's new figures (its key is the old row's).
#[derive(Clone, Debug, PartialEq)]
pub struct NewRow {
    pub site: String,
    pub zone: String,
    pub facility_uj: i64,
    pub pue: f64,
    pub g_per_kwh: f64,
    /// The imported series used, else the plan's yearly grid factor.
    pub import: Option<i64>,
    pub location_ug: i64,
    pub market_g_per_kwh: Option<f64>,
    pub market_ug: Option<i64>,
    pub embodied_ug: i64,
    pub has_embodied: bool,
}

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The hour's covered share of the host (0..=1), from its stored embodied emissions.
fn covered_hours(rows: &[OldRow]) -> f64 {
    let rate = rows
        .iter()
        .find_map(|r| r.embodied_g_per_hour.filter(|v| *v > 0.0));
    match rate {
        Some(g) => {
            let ug: i64 = rows.iter().map(|r| r.embodied_ug).sum();
            (ug as f64 / (g * 1e6)).clamp(0.0, 1.0)
        }
        None => 1.0,
    }
}

/// The rows of one host and hour (`rows`, same `hour_s` and host) recomputed with
/// `plan`; `imported`: the imported intensity of the plan's zone at that hour, if any.
pub fn host_hour(rows: &[OldRow], plan: &HostPlan, imported: Option<(f64, i64)>) -> Vec<NewRow> {
    let pue = plan.pue.value;
    let (g, import) = match imported {
        Some((g, id)) => (g, Some(id)),
        None => (plan.grid_default.value, None),
    };
    let market_g = plan.market.as_ref().map(|m| m.value);
    let mut embodied = vec![0u64; rows.len()];
    if let Some(rate) = &plan.embodied {
        let hours = covered_hours(rows);
        let amount = |per_hour: f64| {
            let v = per_hour * hours;
            if v.is_finite() && v > 0.0 {
                v.round() as u64
            } else {
                0
            }
        };
        let all: Vec<u64> = rows
            .iter()
            .map(|r| u64::try_from(r.energy_uj).unwrap_or(0))
            .collect();
        let gpu: Vec<u64> = rows
            .iter()
            .zip(&all)
            .map(|(r, e)| if r.component == "gpu" { *e } else { 0 })
            .collect();
        let mut parts = Vec::new();
        for (ug, weights) in [
            (amount(rate.server_ug_per_hour), &all),
            (
                amount(rate.gpu_ug_per_hour),
                if gpu.iter().any(|&w| w > 0) {
                    &gpu
                } else {
                    &all
                },
            ),
        ] {
            if split_amount(ug, weights, &mut parts) {
                for (e, p) in embodied.iter_mut().zip(&parts) {
                    *e += p;
                }
            }
        }
    }
    rows.iter()
        .zip(embodied)
        .map(|(r, emb)| {
            let energy = u64::try_from(r.energy_uj).unwrap_or(0);
            NewRow {
                site: plan.site.clone(),
                zone: plan.zone.clone(),
                facility_uj: int(facility_uj(energy, pue)),
                pue,
                g_per_kwh: g,
                import,
                location_ug: int(operational_ug(energy, pue, g)),
                market_g_per_kwh: market_g,
                market_ug: market_g.map(|m| int(operational_ug(energy, pue, m))),
                embodied_ug: int(emb),
                has_embodied: plan.embodied.is_some(),
            }
        })
        .collect()
}

/// `[energy, facility, location, market, embodied]` of a row as the rollups sum it
/// (market-based is the location figure where no contract is set).
pub fn old_sums(r: &OldRow) -> [i64; 5] {
    [
        r.energy_uj,
        r.facility_uj,
        r.location_ug,
        r.market_ug.unwrap_or(r.location_ug),
        r.embodied_ug,
    ]
}

pub fn new_sums(energy_uj: i64, n: &NewRow) -> [i64; 5] {
    [
        energy_uj,
        n.facility_uj,
        n.location_ug,
        n.market_ug.unwrap_or(n.location_ug),
        n.embodied_ug,
    ]
}

/// Per month (its start, Unix second): rows rewritten, figures before, figures after,
/// coefficients the rows had before. Both engines' recomputations fill it alike with
/// [`count_in_month`] and [`set_costs`] and record it in `recomputed_months`.
pub type Months = BTreeMap<i64, (u64, MonthFigures, MonthFigures, BTreeSet<i64>)>;

/// Counts the row `old`, rewritten, in its month `month_s`: its sums before (`before`,
/// [`old_sums`]) and after (`after`, [`new_sums`]), and its coefficients before.
pub fn count_in_month(
    months: &mut Months,
    month_s: i64,
    old: &OldRow,
    before: [i64; 5],
    after: [i64; 5],
) {
    let m = months.entry(month_s).or_default();
    m.0 += 1;
    m.1.add(&figures(before));
    m.2.add(&figures(after));
    m.3.extend(old.coefs());
}

/// Sets each month's cost before and after from the costs per month (`month_s` → µEUR)
/// read before and after the rewrite (0 for a month without cost rows).
pub fn set_costs(months: &mut Months, before: &HashMap<i64, i64>, after: &HashMap<i64, i64>) {
    for (month_s, m) in months.iter_mut() {
        m.1.cost_ueur = before.get(month_s).copied().unwrap_or(0);
        m.2.cost_ueur = after.get(month_s).copied().unwrap_or(0);
    }
}

/// Refuses a recomputation from `from_s` when the hours before `compacted` (the stored
/// `store_meta.hourly_compacted_before`, if any) were compacted and `from_s` is before
/// it: those hours are gone, only their daily sums are left.
pub fn check_not_compacted(compacted: Option<&str>, from_s: i64) -> Result<(), StoreError> {
    if let Some(c) = compacted.and_then(|v| v.parse::<i64>().ok()) {
        if from_s < c {
            return Err(StoreError::Invalid(format!(
                "the hours before {} were compacted into daily sums (retention): recompute can start from that instant on, not {}",
                super::instant(c),
                super::instant(from_s)
            )));
        }
    }
    Ok(())
}

/// The month figures of row sums (`[energy, facility, location, market, embodied]`).
fn figures(s: [i64; 5]) -> MonthFigures {
    MonthFigures {
        facility_uj: s[1],
        location_ug: s[2],
        market_ug: s[3],
        embodied_ug: s[4],
        cost_ueur: 0,
    }
}

/// The ids of `recomputed_months.coefficients_before`: in order, comma-separated.
pub fn coefficients_text(ids: &[i64]) -> String {
    ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::footprint::{Coefficient, CoefficientKind, EmbodiedRate};

    fn coef(kind: CoefficientKind, value: f64) -> Coefficient {
        Coefficient {
            kind,
            subject: "s".into(),
            value,
            unit: "",
            source: "test".into(),
            year: None,
            is_default: false,
            detail: String::new(),
        }
    }

    fn row(component: &str, energy: i64, embodied: i64, rate: Option<f64>) -> OldRow {
        OldRow {
            hour_s: 3600,
            host: "h".into(),
            project: "p".into(),
            component: component.into(),
            source: "rapl".into(),
            site: "old".into(),
            zone: "FR".into(),
            energy_uj: energy,
            facility_uj: energy,
            location_ug: 0,
            market_ug: None,
            embodied_ug: embodied,
            pue_coef: 1,
            grid_coef: Some(2),
            market_coef: None,
            embodied_coef: rate.map(|_| 3),
            embodied_g_per_hour: rate,
        }
    }

    fn plan(pue: f64, server_g: f64, gpu_g: f64) -> HostPlan {
        HostPlan {
            site: "new".into(),
            zone: "FR".into(),
            pue: coef(CoefficientKind::Pue, pue),
            grid_default: coef(CoefficientKind::GridIntensity, 50.0),
            market: None,
            embodied: Some(EmbodiedRate {
                server_ug_per_hour: server_g * 1e6,
                gpu_ug_per_hour: gpu_g * 1e6,
                coefficient: coef(CoefficientKind::Embodied, server_g + gpu_g),
            }),
            tariff: None,
            hardware: None,
        }
    }

    #[test]
    fn a_host_hour_is_made_again_with_the_new_plan_and_the_same_covered_time() {
        // Half an hour covered at 10 g/h: 5 g stored, 1:3 by energy.
        let rows = [
            row("cpu", 3_600_000_000_000, 1_250_000, Some(10.0)),
            row("gpu", 10_800_000_000_000, 3_750_000, Some(10.0)),
        ];
        let n = host_hour(&rows, &plan(1.5, 4.0, 16.0), None);
        // 1 kWh × 1.5 × 50 g = 75 g; 3 kWh: 225 g.
        assert_eq!(n[0].location_ug, 75_000_000);
        assert_eq!(n[1].location_ug, 225_000_000);
        assert_eq!(n[0].facility_uj, 5_400_000_000_000);
        // Half an hour: server 2 g by energy 1:3, GPUs 8 g to the GPU row.
        assert_eq!(n[0].embodied_ug, 500_000);
        assert_eq!(n[1].embodied_ug, 1_500_000 + 8_000_000);
        assert_eq!(n[0].site, "new");
        // Imported intensity wins over the yearly factor.
        let i = host_hour(&rows, &plan(1.0, 0.0, 0.0), Some((20.0, 7)));
        assert_eq!((i[0].location_ug, i[0].import), (20_000_000, Some(7)));
        // No stored rate: the hour counts whole.
        let whole = host_hour(&[row("cpu", 1, 0, None)], &plan(1.0, 4.0, 0.0), None);
        assert_eq!(whole[0].embodied_ug, 4_000_000);
    }
}
