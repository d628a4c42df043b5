//! Inference counts and model-tagged energy as either engine reads them back, and the
//! pure step from those rows to [`InferenceUnit`]s and [`InferenceTotal`]s.
//!
//! Shared by the SQLite (`store/sqlite/inference.rs`) and PostgreSQL
//! (`store/pg/inference.rs`) stores: the tables (migration `0003_inference.sql` of each
//! engine) have the same columns and decode as the same Rust types on both (`allocated`
//! is `BOOLEAN` on PostgreSQL, an `INTEGER` 0 or 1 on SQLite, both read as `bool`), so
//! the units, their emissions' shares and the checks are computed once. Each engine
//! keeps its own queries (placeholders, casts and the sums' functions differ) and its
//! own writes.

use std::collections::BTreeMap;

use empreinte_shared::Component;

use super::StoreError;
use super::rows::{opt_quantity, quantity};
use crate::inference::{Counts, InferenceTotal, InferenceUnit};

/// An `inference_hourly` row: hour, host, project, model, server kinds, requests,
/// input, cached input and output tokens, span, gap, resets, allocated.
pub(super) type CountsRow = (
    i64,
    String,
    String,
    String,
    i64,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    i64,
    i64,
    i64,
    bool,
);

/// The counts of `[$1, $2)` ([`CountsRow`]), the same SQL on both engines (sqlx binds
/// `$n` by number on SQLite too).
pub(super) const COUNTS_SQL: &str =
    "SELECT hour_s, host, project, model, server_kinds, requests, input_tokens,
                cached_input_tokens, output_tokens, span_ms, gap_ms, resets, allocated
         FROM inference_hourly WHERE hour_s >= $1 AND hour_s < $2";

/// A `model_energy_hourly` row: hour, host, project, model, component, energy, with the
/// project's stored energy and emissions of the same hour, host and component.
pub(super) type EnergyRow = (i64, String, String, String, String, i64, f64, f64);

/// The columns of `inference_totals` that [`TotalsRow`] reads, in its order.
pub(super) const TOTALS_SQL: &str =
    "SELECT project, model, requests, input_tokens, cached_input_tokens, output_tokens,
                energy_uj
         FROM inference_totals ORDER BY project, model";

/// A row of [`TOTALS_SQL`]: project, model, the four counts, energy.
pub(super) type TotalsRow = (
    String,
    String,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    i64,
);

/// Every hour with counts or model-tagged energy, per host, project and model, ordered
/// by those keys. A unit's emissions are the project's stored emissions (location-based
/// operational with PUE, and embodied) of the same hour, host and component in
/// proportion to the model's share of its energy.
pub(super) fn units(
    counted: Vec<CountsRow>,
    energy: Vec<EnergyRow>,
) -> Result<Vec<InferenceUnit>, StoreError> {
    let mut out: BTreeMap<(i64, String, String, String), InferenceUnit> = BTreeMap::new();
    for r in counted {
        let (hour_s, host, project, model) = (r.0, r.1, r.2, r.3);
        let u = InferenceUnit {
            hour_s,
            host: host.clone(),
            project: project.clone(),
            model: model.clone(),
            server_kinds: u32::try_from(r.4).unwrap_or(0),
            counts: Counts {
                requests: opt_quantity(r.5, "inference_hourly.requests")?,
                input_tokens: opt_quantity(r.6, "inference_hourly.input_tokens")?,
                cached_input_tokens: opt_quantity(r.7, "inference_hourly.cached_input_tokens")?,
                output_tokens: opt_quantity(r.8, "inference_hourly.output_tokens")?,
            },
            span_ms: quantity(r.9, "inference_hourly.span_ms")?,
            gap_ms: quantity(r.10, "inference_hourly.gap_ms")?,
            resets: quantity(r.11, "inference_hourly.resets")?,
            allocated: r.12,
            ..InferenceUnit::default()
        };
        out.insert((hour_s, host, project, model), u);
    }
    for (hour_s, host, project, model, component, uj, project_uj, project_ug) in energy {
        let uj = quantity(uj, "model_energy_hourly.energy_uj")?;
        let u = out
            .entry((hour_s, host.clone(), project.clone(), model.clone()))
            .or_insert_with(|| InferenceUnit {
                hour_s,
                host,
                project,
                model,
                ..InferenceUnit::default()
            });
        u.energy_uj = u.energy_uj.saturating_add(uj);
        if component == Component::Gpu.as_str() {
            u.gpu_energy_uj = u.gpu_energy_uj.saturating_add(uj);
        }
        if project_uj > 0.0 {
            let ug = (project_ug * uj as f64 / project_uj).round();
            if ug.is_finite() && ug > 0.0 {
                u.co2e_ug = u.co2e_ug.saturating_add(ug as u64);
            }
        }
    }
    Ok(out.into_values().collect())
}

/// A project's and model's all-time counts, checked.
pub(super) fn total(
    (project, model, r, i, c, o, uj): TotalsRow,
) -> Result<InferenceTotal, StoreError> {
    Ok(InferenceTotal {
        project,
        model,
        counts: Counts {
            requests: opt_quantity(r, "inference_totals.requests")?,
            input_tokens: opt_quantity(i, "inference_totals.input_tokens")?,
            cached_input_tokens: opt_quantity(c, "inference_totals.cached_input_tokens")?,
            output_tokens: opt_quantity(o, "inference_totals.output_tokens")?,
        },
        energy_uj: quantity(uj, "inference_totals.energy_uj")?,
    })
}
