//! The amortised hardware cost in `GET /api/v1/costs` (its `hardware` object, apart
//! from the energy costs) and in `/metrics`
//! (`empreinte_footprint_hardware_cost_euros_total`).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::UEUR_PER_EUR;
use super::hardware::{HardwareLine, StoredRate};
use crate::register::Register;
use crate::register::api::undeclared_label;
use crate::server::{AppError, AppState};

/// An amortised cost in euros for reading, with the exact integer beside it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Amortised {
    pub cost_eur: f64,
    pub cost_ueur: u64,
}

impl Amortised {
    fn add(&mut self, ueur: u64) {
        self.cost_ueur = self.cost_ueur.saturating_add(ueur);
        self.cost_eur = self.cost_ueur as f64 / UEUR_PER_EUR;
    }
}

#[derive(Serialize)]
pub struct HardwareRow {
    pub key: String,
    #[serde(flatten)]
    pub money: Amortised,
    /// The rates (ids in `hardware_rates`) behind this row's cost.
    pub rate_ids: Vec<i64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub undeclared_use: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<crate::register::Bilingual>,
}

#[derive(Serialize)]
pub struct RateUse {
    #[serde(flatten)]
    pub rate: StoredRate,
    pub price_eur: f64,
    pub amortisation_years: f64,
    pub eur_per_hour: f64,
    #[serde(flatten)]
    pub money: Amortised,
}

/// The amortised hardware cost of a range: a host's purchase price spread over its
/// amortisation period, for the time it reported, shared by energy between its projects.
#[derive(Serialize)]
pub struct HardwareCosts {
    /// Grouped as the energy costs (`group_by=tariff`: by rate).
    pub rows: Vec<HardwareRow>,
    pub undeclared: Vec<HardwareRow>,
    pub total: Amortised,
    /// Every rate (host, price, period, purchase date, source) behind a cost of the range.
    pub rates: Vec<RateUse>,
}

type Groups = BTreeMap<String, (Amortised, BTreeSet<i64>)>;

pub(super) async fn gather(
    state: &AppState,
    (from_s, to_s): (i64, i64),
    project: Option<&str>,
    group_by: &str,
    register: &Register,
) -> Result<HardwareCosts, AppError> {
    let lines: Vec<HardwareLine> = state
        .store
        .hardware_costs(from_s, to_s)
        .await?
        .into_iter()
        .filter(|l| project.is_none_or(|p| p == l.project))
        .collect();
    let mut rows: Groups = BTreeMap::new();
    let mut undeclared: Groups = BTreeMap::new();
    let mut rates: BTreeMap<i64, (StoredRate, Amortised)> = BTreeMap::new();
    let mut total = Amortised::default();
    for l in &lines {
        total.add(l.cost_ueur);
        let key = (l.hour_s, l.site.as_str(), l.project.as_str(), l.rate.id);
        let e = match super::api::group_of(key, group_by, register, &state.tz) {
            Ok(k) => rows.entry(k).or_default(),
            Err(p) => undeclared.entry(p).or_default(),
        };
        e.0.add(l.cost_ueur);
        e.1.insert(l.rate.id);
        rates
            .entry(l.rate.id)
            .or_insert_with(|| (l.rate.clone(), Amortised::default()))
            .1
            .add(l.cost_ueur);
    }
    let row =
        |(key, (money, ids)): (String, (Amortised, BTreeSet<i64>)), undeclared: bool| HardwareRow {
            key,
            money,
            rate_ids: ids.into_iter().collect(),
            undeclared_use: undeclared,
            label: undeclared.then(undeclared_label),
        };
    Ok(HardwareCosts {
        rows: rows.into_iter().map(|r| row(r, false)).collect(),
        undeclared: undeclared.into_iter().map(|r| row(r, true)).collect(),
        total,
        rates: rates
            .into_values()
            .map(|(rate, money)| RateUse {
                price_eur: rate.price_ueur as f64 / UEUR_PER_EUR,
                amortisation_years: rate.period_hours as f64 / crate::plan::HOURS_PER_YEAR,
                eur_per_hour: if rate.period_hours == 0 {
                    0.0
                } else {
                    rate.price_ueur as f64 / UEUR_PER_EUR / rate.period_hours as f64
                },
                rate,
                money,
            })
            .collect(),
    })
}

/// The series' name.
pub const HARDWARE_METRIC: &str = "empreinte_footprint_hardware_cost_euros_total";

/// `empreinte_footprint_hardware_cost_euros_total{project, site}`: the all-time
/// amortised hardware cost, from the store at every scrape.
pub async fn prometheus(state: &AppState) -> Result<String, crate::store::StoreError> {
    use std::fmt::Write;
    let Some(reads) = state.store.cost_reads() else {
        return Ok(String::new());
    };
    let totals = reads.hardware_cost_totals().await?;
    let mut out = String::new();
    if totals.is_empty() {
        return Ok(out);
    }
    let _ = writeln!(
        out,
        "# HELP {HARDWARE_METRIC} Amortised purchase price of the hosts (inventory price spread over its amortisation period, for the time each host reported), euros, per project and site; apart from the energy cost.\n# TYPE {HARDWARE_METRIC} counter"
    );
    for t in totals {
        let _ = writeln!(
            out,
            "{HARDWARE_METRIC}{{project=\"{}\",site=\"{}\"}} {}",
            super::api::escape(&t.project),
            super::api::escape(&t.site),
            t.cost_ueur as f64 / UEUR_PER_EUR
        );
    }
    Ok(out)
}
