//! Sobriety objectives: a monthly budget of energy and/or emissions per project (or for
//! the whole organisation), fixed or set as a reduction against a baseline month.
//!
//! The energy of a budget is the IT equipment's energy at the meter (what the agents
//! measure, without the facility's PUE); emissions are operational location-based plus
//! embodied. The end-of-month projection assumes the rest of the month goes on at the
//! pace since the first day with data (not since the month's first day: a project that
//! began on the 28th is projected at its own pace): `used / elapsed share of the month
//! since that day`, and says from which day it projects.
//!
//! Fair verdicts: a month that is (or precedes) its objective's baseline month gets no
//! verdict (it is the reference, not a month to judge); the organisation's objective
//! (`project = "*"`) counts every project of the organisation.

use jiff::tz::TimeZone;
use serde::Serialize;

use crate::config::{Objective, parse_month};
use crate::period::{Month, month};
use crate::store::{FootprintQuery, Grouping, Store, StoreError, Sums};

/// What a budget counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BudgetKind {
    /// kWh of IT energy.
    Energy,
    /// kgCO2e, operational (location-based) and embodied.
    Co2e,
}

impl BudgetKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetKind::Energy => "energy",
            BudgetKind::Co2e => "co2e",
        }
    }
    pub fn unit(self) -> &'static str {
        match self {
            BudgetKind::Energy => "kWh",
            BudgetKind::Co2e => "kgCO2e",
        }
    }
    fn of(self, s: &Sums) -> f64 {
        match self {
            BudgetKind::Energy => crate::footprint::kwh(s.energy_uj),
            BudgetKind::Co2e => (s.location_co2e_ug + s.embodied_co2e_ug) as f64 / 1e9,
        }
    }
}

/// Where an objective stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The month is not over and the projection is within the budget.
    OnTrack,
    /// The month is not over and the projection exceeds the budget.
    ProjectedToExceed,
    /// Already over the budget.
    Exceeded,
    /// The month is over, within the budget.
    Met,
    /// The baseline month has no data: the budget cannot be set.
    NoBaseline,
    /// This month is the objective's baseline month (or before it): the reference, not
    /// judged.
    Baseline,
}

/// One budget of one objective for one month.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ObjectiveStatus {
    /// A project, or `*` for the organisation.
    pub project: String,
    pub month: String,
    pub kind: BudgetKind,
    pub unit: &'static str,
    /// `None` when it could not be set (no baseline).
    pub budget: Option<f64>,
    /// How the budget was set, in words.
    pub basis: String,
    pub used: f64,
    pub projected: f64,
    pub used_ratio: Option<f64>,
    pub projected_ratio: Option<f64>,
    /// Share of the month elapsed at evaluation time (1 for a past month), counted from
    /// the first day with data.
    pub elapsed: f64,
    /// The first local day with data of the month (`YYYY-MM-DD`) when it is not the
    /// month's first day: the projection runs from it.
    pub projected_from: Option<String>,
    pub verdict: Verdict,
}

async fn sums(store: &dyn Store, project: &str, m: &Month) -> Result<Sums, StoreError> {
    let rows = store
        .footprint(&FootprintQuery {
            from_s: m.from_s,
            to_s: m.to_s,
            project: (project != "*").then(|| project.to_string()),
            host: None,
            group: Grouping::Component,
        })
        .await?;
    let mut total = Sums::default();
    for (_, s) in &rows {
        total.add(s);
    }
    Ok(total)
}

/// The start of the first period of `m` with energy for `project` (`*`: any project),
/// from the store's daily sums; `None` when the month has no data for it.
async fn first_data(
    store: &dyn Store,
    tz: &TimeZone,
    m: &Month,
    project: &str,
) -> Result<Option<i64>, StoreError> {
    let timezone = tz.iana_name().unwrap_or("UTC");
    let days = store.energy_by_day(m.from_s, m.to_s, timezone).await?;
    Ok(days
        .iter()
        .filter(|(_, p, e)| *e > 0 && (project == "*" || p == project))
        .map(|(start_s, _, _)| local_day_start(tz, *start_s))
        .min())
}

/// The start of the local day holding `at_s`.
fn local_day_start(tz: &TimeZone, at_s: i64) -> i64 {
    jiff::Timestamp::from_second(at_s)
        .ok()
        .and_then(|t| t.to_zoned(tz.clone()).start_of_day().ok())
        .map(|z| z.timestamp().as_second())
        .unwrap_or(at_s)
}

/// The budget of `kind` for `o` and how it was set; `None` when the objective sets none
/// of this kind.
fn budget_of(
    o: &Objective,
    kind: BudgetKind,
    baseline: &Option<(String, Sums)>,
) -> Option<(Option<f64>, String)> {
    let fixed = match kind {
        BudgetKind::Energy => o.monthly_energy_kwh,
        BudgetKind::Co2e => o.monthly_co2e_kg,
    };
    match (fixed, o.reduction_percent, baseline) {
        (Some(b), _, _) => Some((Some(b), format!("fixed budget of {b} {}", kind.unit()))),
        (None, Some(pct), Some((label, base))) => {
            let base_value = kind.of(base);
            if base_value > 0.0 {
                Some((
                    Some(base_value * (1.0 - pct / 100.0)),
                    format!(
                        "{pct} % less than {label} ({base_value:.3} {})",
                        kind.unit()
                    ),
                ))
            } else {
                Some((
                    None,
                    format!("{pct} % less than {label}, which has no data"),
                ))
            }
        }
        (None, Some(pct), None) => o
            .baseline_month
            .as_ref()
            .map(|label| (None, format!("{pct} % less than {label}"))),
        _ => None,
    }
}

/// Whether `m` is the objective's baseline month or comes before it.
fn is_baseline(o: &Objective, m: &Month) -> bool {
    o.fixed_free_reduction()
        && o.baseline_month
            .as_deref()
            .is_some_and(|b| m.label().as_str() <= b)
}

impl Objective {
    /// A reduction against a baseline, for at least one kind without a fixed budget.
    fn fixed_free_reduction(&self) -> bool {
        self.reduction_percent.is_some()
            && (self.monthly_energy_kwh.is_none() || self.monthly_co2e_kg.is_none())
    }
}

/// The status of every objective for the month `m`, evaluated at `now_s`.
pub async fn evaluate(
    store: &dyn Store,
    objectives: &[Objective],
    tz: &TimeZone,
    m: &Month,
    now_s: i64,
) -> Result<Vec<ObjectiveStatus>, StoreError> {
    let mut out = Vec::new();
    for o in objectives {
        let used = sums(store, &o.project, m).await?;
        let baseline = match &o.baseline_month {
            Some(b) => match parse_month(b).and_then(|(y, mo)| month(tz, y, mo)) {
                Ok(bm) => Some((b.clone(), sums(store, &o.project, &bm).await?)),
                Err(_) => None,
            },
            None => None,
        };
        // The projection runs from the first day with data (the month's start if none).
        let start_s = first_data(store, tz, m, &o.project)
            .await?
            .unwrap_or(m.from_s)
            .max(m.from_s);
        let span = (m.to_s - start_s).max(1) as f64;
        let elapsed = ((now_s - start_s) as f64 / span).clamp(0.0, 1.0);
        let projected_from = (start_s > m.from_s).then(|| crate::period::local_day(tz, start_s));
        for kind in [BudgetKind::Energy, BudgetKind::Co2e] {
            let Some((budget, basis)) = budget_of(o, kind, &baseline) else {
                continue;
            };
            let used_value = kind.of(&used);
            let projected = if elapsed > 0.0 {
                used_value / elapsed
            } else {
                used_value
            };
            let fixed = match kind {
                BudgetKind::Energy => o.monthly_energy_kwh.is_some(),
                BudgetKind::Co2e => o.monthly_co2e_kg.is_some(),
            };
            let verdict = match budget {
                _ if !fixed && is_baseline(o, m) => Verdict::Baseline,
                None => Verdict::NoBaseline,
                Some(b) if used_value > b => Verdict::Exceeded,
                Some(_) if now_s >= m.to_s => Verdict::Met,
                Some(b) if projected > b => Verdict::ProjectedToExceed,
                Some(_) => Verdict::OnTrack,
            };
            let budget = if verdict == Verdict::Baseline {
                None
            } else {
                budget
            };
            out.push(ObjectiveStatus {
                project: o.project.clone(),
                month: m.label(),
                kind,
                unit: kind.unit(),
                budget,
                basis,
                used: used_value,
                projected,
                used_ratio: budget.filter(|b| *b > 0.0).map(|b| used_value / b),
                projected_ratio: budget.filter(|b| *b > 0.0).map(|b| projected / b),
                elapsed,
                projected_from: projected_from.clone(),
                verdict,
            });
        }
    }
    Ok(out)
}
