//! The read API under `/api/v1/` (read token): projects, footprint over a time range
//! grouped by project, host, site, component, source or day, objectives, agents, and
//! the coefficients behind the figures. Described by `collector/openapi.json`.
//!
//! Every figure is given both as the exact stored integer (µJ, µg) and in the unit
//! people read (kWh, kgCO2e).

use std::borrow::Cow;
use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};

use crate::auth;
use crate::clock::now_unix_ms;
use crate::config::parse_month;
use crate::objectives::{self, ObjectiveStatus};
use crate::period::{Month, local_day, month, month_of, parse_bound};
use crate::server::{AppError, AppState};
use crate::store::{AgentRecord, FootprintQuery, Grouping, StoredCoefficient, Sums, TokenKind};

/// The OpenAPI document.
pub const OPENAPI: &str = include_str!("../openapi.json");

pub async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

pub async fn reader(state: &AppState, headers: &HeaderMap) -> Result<(), AppError> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    auth::verify(state.store.as_ref(), authorization, TokenKind::Read).await?;
    Ok(())
}

fn now_s() -> i64 {
    i64::try_from(now_unix_ms() / 1000).unwrap_or(i64::MAX)
}

/// Sums in the units people read, with the exact integers beside them.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Figures {
    pub energy_kwh: f64,
    pub facility_energy_kwh: f64,
    /// Share of the energy that was measured (RAPL, NVML) rather than estimated.
    pub measured_share: f64,
    pub co2e_kg_location: f64,
    pub co2e_kg_market: f64,
    pub co2e_kg_embodied: f64,
    pub exact: Sums,
}

impl From<&Sums> for Figures {
    fn from(s: &Sums) -> Figures {
        Figures {
            energy_kwh: crate::footprint::kwh(s.energy_uj),
            facility_energy_kwh: crate::footprint::kwh(s.facility_energy_uj),
            measured_share: if s.energy_uj > 0 {
                s.measured_energy_uj as f64 / s.energy_uj as f64
            } else {
                0.0
            },
            co2e_kg_location: s.location_co2e_ug as f64 / 1e9,
            co2e_kg_market: s.market_co2e_ug as f64 / 1e9,
            co2e_kg_embodied: s.embodied_co2e_ug as f64 / 1e9,
            exact: s.clone(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeParams {
    /// `YYYY-MM` (in the organisation's time zone); or use `from`/`to`.
    pub month: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub group_by: Option<String>,
    pub project: Option<String>,
    pub host: Option<String>,
}

pub fn resolve_month(state: &AppState, text: Option<&str>) -> Result<Month, AppError> {
    match text {
        Some(t) => parse_month(t)
            .and_then(|(y, m)| month(&state.tz, y, m))
            .map_err(AppError::BadQuery),
        None => month_of(&state.tz, now_s()).map_err(AppError::BadQuery),
    }
}

/// `[from, to)` from `month` or `from`/`to` (default: the current month).
pub fn range(state: &AppState, p: &RangeParams) -> Result<(i64, i64), AppError> {
    match (&p.month, &p.from, &p.to) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => Err(AppError::BadQuery(
            "give either month or from/to, not both".into(),
        )),
        (_, Some(f), Some(t)) => {
            let from =
                parse_bound(&state.tz, f).map_err(|e| AppError::BadQuery(format!("from: {e}")))?;
            let to =
                parse_bound(&state.tz, t).map_err(|e| AppError::BadQuery(format!("to: {e}")))?;
            if to <= from {
                return Err(AppError::BadQuery(format!(
                    "to ({t}) must be after from ({f})"
                )));
            }
            Ok((from, to))
        }
        (_, Some(_), None) | (_, None, Some(_)) => {
            Err(AppError::BadQuery("from and to go together".into()))
        }
        (m, None, None) => {
            let m = resolve_month(state, m.as_deref())?;
            Ok((m.from_s, m.to_s))
        }
    }
}

#[derive(Serialize)]
pub struct FootprintRow {
    pub key: String,
    #[serde(flatten)]
    pub figures: Figures,
    /// The row's propagated standard uncertainties (`crate::uncertainty`): from its own
    /// lines for groupings by project, use, department, host, site, component and
    /// source; for days and hours, the period's relative uncertainties applied to the
    /// row's figures.
    pub uncertainty: crate::uncertainty::FigureUncertainty,
    /// `group_by=project`: the project's use and department, or the undeclared flag.
    #[serde(flatten)]
    pub register: crate::register::api::ProjectTags,
}

#[derive(Serialize)]
pub struct FootprintResponse {
    pub from: String,
    pub to: String,
    pub timezone: String,
    pub group_by: String,
    pub rows: Vec<FootprintRow>,
    /// `group_by=use|department`: the projects with energy that no use declares
    /// ("usage non déclaré"); rows and these add up to the total.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub undeclared: Vec<crate::register::api::Undeclared>,
    pub total: Figures,
    /// The total's propagated standard uncertainties (`crate::uncertainty`).
    pub uncertainty: crate::uncertainty::FigureUncertainty,
}

pub fn instant(s: i64) -> String {
    jiff::Timestamp::from_second(s)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

pub async fn footprint(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Result<Query<RangeParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<FootprintResponse>, AppError> {
    reader(&state, &headers).await?;
    let Query(p) = params.map_err(|e| AppError::BadQuery(e.body_text()))?;
    let (from_s, to_s) = range(&state, &p)?;
    let group_by = p.group_by.clone().unwrap_or_else(|| "project".into());
    let group = match group_by.as_str() {
        "project" | "use" | "department" => Grouping::Project,
        "host" => Grouping::Host,
        "site" => Grouping::Site,
        "component" => Grouping::Component,
        "source" => Grouping::Source,
        // Days from the daily rollups when they are in the organisation's time zone.
        "day" if state.store.rollup_timezone() == state.planner.config().organisation.timezone => {
            Grouping::Day
        }
        "day" | "hour" => Grouping::Hour,
        other => {
            return Err(AppError::BadQuery(format!(
                "group_by={other:?}: allowed are project, use, department, host, site, component, source, day, hour"
            )));
        }
    };
    let rows = state
        .store
        .footprint(&FootprintQuery {
            from_s,
            to_s,
            project: p.project.clone(),
            host: p.host.clone(),
            group,
        })
        .await?;
    let mut total = Sums::default();
    let mut grouped: BTreeMap<String, Sums> = BTreeMap::new();
    let register = state.register.get();
    let mut undeclared: BTreeMap<String, Sums> = BTreeMap::new();
    for (key, sums) in &rows {
        total.add(sums);
        let key = match group_by.as_str() {
            "day" => local_day(&state.tz, key.parse().unwrap_or_default()),
            "hour" => instant(key.parse().unwrap_or_default()),
            "use" | "department" => {
                match crate::register::api::group_key(&register, &group_by, key) {
                    Some(k) => k,
                    None => {
                        undeclared.entry(key.clone()).or_default().add(sums);
                        continue;
                    }
                }
            }
            _ => key.clone(),
        };
        grouped.entry(key).or_default().add(sums);
    }
    let lines = state.store.lines(from_s, to_s).await?;
    let config = state.planner.config();
    let pcts = crate::uncertainty::CoefficientPcts::for_config(config);
    let selected: Vec<&crate::store::AggregateLine> = lines
        .iter()
        .filter(|l| {
            p.project.as_ref().is_none_or(|x| *x == l.project)
                && p.host.as_ref().is_none_or(|x| *x == l.host)
        })
        .collect();
    let uncertainty = crate::uncertainty::of_lines_with(selected.iter().copied(), config, &pcts);
    let mut by_key: BTreeMap<Cow<'_, str>, Vec<&crate::store::AggregateLine>> = BTreeMap::new();
    for l in &selected {
        let key = match group {
            Grouping::Project if group_by == "project" => Cow::Borrowed(l.project.as_str()),
            Grouping::Project => {
                match crate::register::api::group_key(&register, &group_by, &l.project) {
                    Some(k) => Cow::Owned(k),
                    None => continue,
                }
            }
            Grouping::Host => Cow::Borrowed(l.host.as_str()),
            Grouping::Site => Cow::Borrowed(l.site.as_str()),
            Grouping::Component => Cow::Borrowed(l.component.as_str()),
            Grouping::Source => Cow::Borrowed(l.source.as_str()),
            Grouping::Day | Grouping::Hour => continue,
        };
        by_key.entry(key).or_default().push(l);
    }
    let row_uncertainty = |key: &str, s: &Sums| match by_key.get(key) {
        Some(group_lines) => {
            crate::uncertainty::of_lines_with(group_lines.iter().copied(), config, &pcts)
        }
        None => uncertainty.scaled_to(s),
    };
    let rows = grouped
        .into_iter()
        .map(|(key, s)| FootprintRow {
            uncertainty: row_uncertainty(&key, &s),
            register: if group_by == "project" {
                crate::register::api::ProjectTags::of(&register, &key)
            } else {
                crate::register::api::ProjectTags::default()
            },
            key,
            figures: Figures::from(&s),
        })
        .collect();
    Ok(Json(FootprintResponse {
        from: instant(from_s),
        to: instant(to_s),
        timezone: state.planner.config().organisation.timezone.clone(),
        group_by,
        rows,
        undeclared: undeclared
            .iter()
            .map(|(p, s)| crate::register::api::Undeclared::new(p, s))
            .collect(),
        total: Figures::from(&total),
        uncertainty,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonthParams {
    pub month: Option<String>,
}

#[derive(Serialize)]
pub struct ProjectEntry {
    pub project: String,
    pub first_hour: String,
    pub last_hour: String,
    pub hosts: u64,
    pub month: String,
    pub month_to_date: Figures,
}

#[derive(Serialize)]
pub struct ProjectsResponse {
    pub projects: Vec<ProjectEntry>,
}

pub async fn projects(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<ProjectsResponse>, AppError> {
    reader(&state, &headers).await?;
    let m = resolve_month(&state, None)?;
    let mtd = month_to_date_by_project(&state, &m).await?;
    let projects = state
        .store
        .projects()
        .await?
        .into_iter()
        .map(|p| ProjectEntry {
            month_to_date: Figures::from(&mtd.get(&p.project).cloned().unwrap_or_default()),
            first_hour: instant(p.first_hour_s),
            last_hour: instant(p.last_hour_s),
            hosts: p.hosts,
            month: m.label(),
            project: p.project,
        })
        .collect();
    Ok(Json(ProjectsResponse { projects }))
}

/// The month's figures so far, per project: what `/api/v1/projects` and `empreinte up`
/// show.
pub async fn month_to_date_by_project(
    state: &AppState,
    m: &Month,
) -> Result<BTreeMap<String, Sums>, crate::store::StoreError> {
    Ok(state
        .store
        .footprint(&FootprintQuery {
            from_s: m.from_s,
            to_s: m.to_s,
            project: None,
            host: None,
            group: Grouping::Project,
        })
        .await?
        .into_iter()
        .collect())
}

#[derive(Serialize)]
pub struct ObjectivesResponse {
    pub month: String,
    pub objectives: Vec<ObjectiveStatus>,
}

pub async fn objectives(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Result<Query<MonthParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ObjectivesResponse>, AppError> {
    reader(&state, &headers).await?;
    let Query(p) = params.map_err(|e| AppError::BadQuery(e.body_text()))?;
    let m = resolve_month(&state, p.month.as_deref())?;
    let objectives = objectives::evaluate(
        state.store.as_ref(),
        &state.planner.config().objectives,
        &state.register.get(),
        &state.tz,
        &m,
        now_s(),
    )
    .await?;
    Ok(Json(ObjectivesResponse {
        month: m.label(),
        objectives,
    }))
}

#[derive(Serialize)]
pub struct AgentEntry {
    #[serde(flatten)]
    pub agent: AgentRecord,
    /// Energy the agent's runs say they measured (their latest cumulative counters)…
    pub counted_uj: u64,
    /// …and energy stored from its batches. Equal when nothing is missing.
    pub stored_uj: u64,
}

#[derive(Serialize)]
pub struct AgentsResponse {
    pub agents: Vec<AgentEntry>,
}

pub async fn agents(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<AgentsResponse>, AppError> {
    reader(&state, &headers).await?;
    let mut out = Vec::new();
    for agent in state.store.agents().await? {
        let (counted_uj, stored_uj) = state.store.agent_balance(&agent.agent_id).await?;
        out.push(AgentEntry {
            agent,
            counted_uj,
            stored_uj,
        });
    }
    Ok(Json(AgentsResponse { agents: out }))
}

#[derive(Serialize)]
pub struct CoefficientsResponse {
    pub from: String,
    pub to: String,
    pub coefficients: Vec<StoredCoefficient>,
}

pub async fn coefficients(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Result<Query<RangeParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<CoefficientsResponse>, AppError> {
    reader(&state, &headers).await?;
    let Query(p) = params.map_err(|e| AppError::BadQuery(e.body_text()))?;
    if p.group_by.is_some() || p.project.is_some() || p.host.is_some() {
        return Err(AppError::BadQuery(
            "coefficients take month or from/to only".into(),
        ));
    }
    let (from_s, to_s) = range(&state, &p)?;
    Ok(Json(CoefficientsResponse {
        from: instant(from_s),
        to: instant(to_s),
        coefficients: state.store.coefficients_used(from_s, to_s).await?,
    }))
}
