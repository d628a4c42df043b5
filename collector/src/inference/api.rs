//! `GET /api/v1/inference?month=YYYY-MM&group_by=project|model|host|day` (read token):
//! requests, tokens and the energy and emissions per request and per 1,000 output
//! tokens of a month, per group, with the share of the group's energy the counts cover.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};

use super::figures::{GroupBy, GroupFigures, group, project_energy};
use crate::api::{instant, reader, resolve_month};
use crate::server::{AppError, AppState};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferenceParams {
    /// `YYYY-MM` in the organisation's time zone (default: the current month).
    pub month: Option<String>,
    /// `project` (default), `model`, `host` or `day`.
    pub group_by: Option<String>,
}

/// One group's figures as the API gives them: counts `null` where the servers do not
/// count them, ratios `null` where nothing was counted.
#[derive(Debug, Serialize, PartialEq)]
pub struct InferenceRow {
    pub requests: Option<u64>,
    pub input_tokens: Option<u64>,
    pub cached_input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    /// Energy at the meter of the hours that have counts, µJ.
    pub energy_uj: u64,
    /// The group's energy (for a model: all the energy tagged with it; otherwise the
    /// energy of the projects that served inference), µJ.
    pub energy_total_uj: u64,
    /// `energy_uj / energy_total_uj`.
    pub covered_share: Option<f64>,
    pub joules_per_request: Option<f64>,
    pub wh_per_1k_output_tokens: Option<f64>,
    /// Operational (location-based, PUE included) and embodied, per request.
    pub co2e_g_per_request: Option<f64>,
    /// Emissions of `energy_uj`, µg CO2e.
    pub co2e_ug: u64,
    /// Of `energy_uj`, the GPUs' share.
    pub gpu_share: Option<f64>,
    /// Some energy was split from a process serving several models (an allocation).
    pub allocated: bool,
    /// Server restarts (counter resets) seen.
    pub resets: u64,
    /// Time the servers could not be scraped, inside the counted time, s.
    pub gap_s: f64,
    /// Server kinds that counted.
    pub servers: Vec<&'static str>,
}

impl From<&GroupFigures> for InferenceRow {
    fn from(g: &GroupFigures) -> InferenceRow {
        InferenceRow {
            requests: g.counts.requests,
            input_tokens: g.counts.input_tokens,
            cached_input_tokens: g.counts.cached_input_tokens,
            output_tokens: g.counts.output_tokens,
            energy_uj: g.energy_uj,
            energy_total_uj: g.energy_total_uj,
            covered_share: g.covered_share(),
            joules_per_request: g.joules_per_request(),
            wh_per_1k_output_tokens: g.wh_per_1k_output_tokens(),
            co2e_g_per_request: g.co2e_g_per_request(),
            co2e_ug: g.co2e_ug,
            gpu_share: g.gpu_share(),
            allocated: g.allocated,
            resets: g.resets,
            gap_s: g.gap_ms as f64 / 1e3,
            servers: super::server_names(g.server_kinds),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct KeyedInferenceRow {
    pub key: String,
    #[serde(flatten)]
    pub figures: InferenceRow,
}

#[derive(Debug, Serialize)]
pub struct InferenceResponse {
    pub month: String,
    pub from: String,
    pub to: String,
    pub timezone: String,
    pub group_by: String,
    pub rows: Vec<KeyedInferenceRow>,
    pub total: InferenceRow,
}

pub async fn inference(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Result<Query<InferenceParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<InferenceResponse>, AppError> {
    reader(&state, &headers).await?;
    let Query(p) = params.map_err(|e| {
        AppError::BadQuery(format!(
            "{}; allowed parameters are month (YYYY-MM) and group_by ({})",
            e.body_text(),
            GroupBy::API
        ))
    })?;
    let by =
        GroupBy::parse(p.group_by.as_deref().unwrap_or("project")).map_err(AppError::BadQuery)?;
    let m = resolve_month(&state, p.month.as_deref())?;
    let units = state.store.inference_units(m.from_s, m.to_s).await?;
    let totals = project_energy(
        state.store.as_ref(),
        &units,
        by,
        (m.from_s, m.to_s),
        &state.tz,
    )
    .await?;
    let groups = group(&units, by, &state.tz, &totals);
    let mut total = GroupFigures::default();
    for g in &groups {
        total.merge(g);
    }
    Ok(Json(InferenceResponse {
        month: m.label(),
        from: instant(m.from_s),
        to: instant(m.to_s),
        timezone: state.planner.config().organisation.timezone.clone(),
        group_by: by.as_str().to_string(),
        rows: groups
            .iter()
            .map(|g| KeyedInferenceRow {
                key: g.key.0.clone(),
                figures: InferenceRow::from(g),
            })
            .collect(),
        total: InferenceRow::from(&total),
    }))
}
