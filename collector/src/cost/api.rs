//! `GET /api/v1/costs` (read token): the cost of the facility energy over a month or a
//! range, grouped by project, use, department, site, month or tariff rate, with every
//! tariff rate used (its price, band, validity and source) and the facility energy no
//! tariff covers.

use std::collections::{BTreeMap, BTreeSet};

use axum::Json;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use serde::Serialize;

use super::{CostLine, StoredTariff, UEUR_PER_EUR};
use crate::api::{RangeParams, instant, range, reader};
use crate::register::Register;
use crate::register::api::undeclared_label;
use crate::server::{AppError, AppState};

/// A cost in euros for reading, with the exact integer beside it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Money {
    pub cost_eur: f64,
    pub cost_ueur: u64,
    pub facility_energy_kwh: f64,
    pub facility_energy_uj: u64,
}

impl Money {
    fn add(&mut self, l: &CostLine) {
        self.cost_ueur = self.cost_ueur.saturating_add(l.cost_ueur);
        self.facility_energy_uj = self.facility_energy_uj.saturating_add(l.facility_uj);
        self.cost_eur = self.cost_ueur as f64 / UEUR_PER_EUR;
        self.facility_energy_kwh = crate::footprint::kwh(self.facility_energy_uj);
    }
}

#[derive(Serialize)]
pub struct CostRow {
    pub key: String,
    #[serde(flatten)]
    pub money: Money,
    /// The tariff rates (ids in `tariffs`) behind this row's cost.
    pub tariff_ids: Vec<i64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub undeclared_use: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<crate::register::Bilingual>,
}

#[derive(Serialize)]
pub struct TariffUse {
    #[serde(flatten)]
    pub tariff: StoredTariff,
    pub price_eur_per_kwh: f64,
    #[serde(flatten)]
    pub money: Money,
}

#[derive(Serialize)]
pub struct CostsResponse {
    pub from: String,
    pub to: String,
    pub timezone: String,
    pub group_by: String,
    pub currency: &'static str,
    pub rows: Vec<CostRow>,
    /// `group_by=use|department`: projects no use declares, apart.
    pub undeclared: Vec<CostRow>,
    pub total: Money,
    /// Facility energy of the range at sites (or hours) no tariff covers: not costed.
    pub uncosted_facility_energy_kwh: f64,
    pub uncosted_facility_energy_uj: u64,
    /// Every tariff rate that produced a cost of the range.
    pub tariffs: Vec<TariffUse>,
    /// The amortised hardware cost of the range, apart from the energy costs above
    /// (which `total` alone sums).
    pub hardware: super::hardware_api::HardwareCosts,
}

/// The group of a cost line, or `Err(project)` for a project no use declares.
fn key_of(
    l: &CostLine,
    by: &str,
    register: &Register,
    tz: &jiff::tz::TimeZone,
) -> Result<String, String> {
    group_of(
        (l.hour_s, &l.site, &l.project, l.tariff.id),
        by,
        register,
        tz,
    )
}

/// The group of a cost of `(hour_s, site, project, rate id)`, or `Err(project)` for a
/// project no use declares.
pub(super) fn group_of(
    (hour_s, site, project, rate_id): (i64, &str, &str, i64),
    by: &str,
    register: &Register,
    tz: &jiff::tz::TimeZone,
) -> Result<String, String> {
    Ok(match by {
        "use" | "department" => {
            crate::register::api::group_key(register, by, project).ok_or(project.to_string())?
        }
        "site" => site.to_string(),
        "tariff" => rate_id.to_string(),
        "month" => jiff::Timestamp::from_second(hour_s)
            .map(|t| t.to_zoned(tz.clone()).strftime("%Y-%m").to_string())
            .unwrap_or_default(),
        _ => project.to_string(),
    })
}

pub async fn costs(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Result<Query<RangeParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<CostsResponse>, AppError> {
    reader(&state, &headers).await?;
    let Query(p) = params.map_err(|e| AppError::BadQuery(e.body_text()))?;
    if p.host.is_some() {
        return Err(AppError::BadQuery(
            "costs are kept per site and project, not per host: use group_by=site".into(),
        ));
    }
    let (from_s, to_s) = range(&state, &p)?;
    let group_by = p.group_by.clone().unwrap_or_else(|| "project".into());
    if !matches!(
        group_by.as_str(),
        "project" | "use" | "department" | "site" | "month" | "tariff"
    ) {
        return Err(AppError::BadQuery(format!(
            "group_by={group_by:?}: allowed are project, use, department, site, month, tariff"
        )));
    }
    let lines: Vec<CostLine> = state
        .store
        .costs(from_s, to_s)
        .await?
        .into_iter()
        .filter(|l| p.project.as_ref().is_none_or(|x| *x == l.project))
        .collect();
    let register = state.register.get();
    let mut rows: BTreeMap<String, (Money, BTreeSet<i64>)> = BTreeMap::new();
    let mut undeclared: BTreeMap<String, (Money, BTreeSet<i64>)> = BTreeMap::new();
    let mut tariffs: BTreeMap<i64, (StoredTariff, Money)> = BTreeMap::new();
    let mut total = Money::default();
    for l in &lines {
        total.add(l);
        let e = match key_of(l, &group_by, &register, &state.tz) {
            Ok(k) => rows.entry(k).or_default(),
            Err(project) => undeclared.entry(project).or_default(),
        };
        e.0.add(l);
        e.1.insert(l.tariff.id);
        tariffs
            .entry(l.tariff.id)
            .or_insert_with(|| (l.tariff.clone(), Money::default()))
            .1
            .add(l);
    }
    let facility: u64 = state
        .store
        .footprint(&crate::store::FootprintQuery {
            from_s,
            to_s,
            project: p.project.clone(),
            host: None,
            group: crate::store::Grouping::Site,
        })
        .await?
        .iter()
        .map(|(_, s)| s.facility_energy_uj)
        .sum();
    let uncosted = facility.saturating_sub(total.facility_energy_uj);
    let hardware = super::hardware_api::gather(
        &state,
        (from_s, to_s),
        p.project.as_deref(),
        &group_by,
        &register,
    )
    .await?;
    let row = |(key, (money, ids)): (String, (Money, BTreeSet<i64>)), undeclared: bool| CostRow {
        key,
        money,
        tariff_ids: ids.into_iter().collect(),
        undeclared_use: undeclared,
        label: undeclared.then(undeclared_label),
    };
    Ok(Json(CostsResponse {
        from: instant(from_s),
        to: instant(to_s),
        timezone: state.planner.config().organisation.timezone.clone(),
        group_by,
        currency: "EUR",
        rows: rows.into_iter().map(|r| row(r, false)).collect(),
        undeclared: undeclared.into_iter().map(|r| row(r, true)).collect(),
        total,
        uncosted_facility_energy_kwh: crate::footprint::kwh(uncosted),
        uncosted_facility_energy_uj: uncosted,
        tariffs: tariffs
            .into_values()
            .map(|(t, money)| TariffUse {
                price_eur_per_kwh: t.price_ueur_per_kwh as f64 / UEUR_PER_EUR,
                tariff: t,
                money,
            })
            .collect(),
        hardware,
    }))
}

/// The series' name.
pub const COST_METRIC: &str = "empreinte_footprint_cost_euros_total";

/// `empreinte_footprint_cost_euros_total{project, site}`: the all-time cost of the
/// facility energy, from the store at every scrape (so it never goes back across a
/// restart).
pub async fn prometheus(state: &AppState) -> Result<String, crate::store::StoreError> {
    use std::fmt::Write;
    // An engine that keeps no costs (a declared capability, said in the log at start)
    // has no series.
    let Some(reads) = state.store.cost_reads() else {
        return Ok(String::new());
    };
    let totals = reads.cost_totals().await?;
    let mut out = String::new();
    if totals.is_empty() {
        return Ok(out);
    }
    let _ = writeln!(
        out,
        "# HELP {COST_METRIC} Cost of the facility energy (PUE included) at each site's electricity tariff, euros, per project and site.\n# TYPE {COST_METRIC} counter"
    );
    for t in totals {
        let _ = writeln!(
            out,
            "{COST_METRIC}{{project=\"{}\",site=\"{}\"}} {}",
            escape(&t.project),
            escape(&t.site),
            t.cost_ueur as f64 / UEUR_PER_EUR
        );
    }
    Ok(out)
}

pub(super) fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
