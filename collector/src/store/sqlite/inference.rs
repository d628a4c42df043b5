//! Inference counts and model-tagged energy in SQLite (migration `0003_inference.sql`).
//!
//! Written by the store's writer in the transaction of the batches they came with
//! ([`InferenceGroup`], filled by `stage` for accepted batches only, written by
//! [`write`] before the commit), so a batch's counts are stored exactly once with it: a
//! replayed batch is a duplicate and adds nothing. Read through the pool
//! ([`units`], [`totals`]). [`InferenceGroup`] (`crate::inference::group`) is the
//! engines' common sum: PostgreSQL writes the same group (`store/pg/inference.rs`).

use std::collections::BTreeMap;

use empreinte_shared::Component;
use rusqlite::{Transaction, params};
use sqlx::SqlitePool;

use super::super::StoreError;
pub use crate::inference::group::InferenceGroup;
use crate::inference::{Counts, InferenceTotal, InferenceUnit};

/// A quantity as SQLite stores it: at most `i64::MAX` (sums saturate there).
fn db(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn db_opt(v: Option<u64>) -> Option<i64> {
    v.map(db)
}

/// A nullable count added on conflict: NULL + NULL stays NULL; the sum saturates at
/// `i64::MAX` (an overflowing sum is a float past it, and MIN gives the integer).
macro_rules! add_nullable {
    ($c:literal) => {
        concat!(
            $c,
            " = CASE WHEN excluded.",
            $c,
            " IS NULL THEN ",
            $c,
            " ELSE MIN(COALESCE(",
            $c,
            ", 0) + excluded.",
            $c,
            ", 9223372036854775807) END"
        )
    };
}

/// Writes `g` in `tx` (the writer's transaction, before its commit).
pub fn write(tx: &Transaction<'_>, g: &InferenceGroup) -> rusqlite::Result<()> {
    if !g.counts.is_empty() {
        let mut st = tx.prepare_cached(concat!(
            "INSERT INTO inference_hourly (hour_s, host, project, model, server_kinds, requests,
                input_tokens, cached_input_tokens, output_tokens, span_ms, gap_ms, resets, allocated)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (hour_s, host, project, model) DO UPDATE SET
                server_kinds = server_kinds | excluded.server_kinds, ",
            add_nullable!("requests"),
            ", ",
            add_nullable!("input_tokens"),
            ", ",
            add_nullable!("cached_input_tokens"),
            ", ",
            add_nullable!("output_tokens"),
            ",
                span_ms = MIN(span_ms + excluded.span_ms, 9223372036854775807),
                gap_ms = MIN(gap_ms + excluded.gap_ms, 9223372036854775807),
                resets = MIN(resets + excluded.resets, 9223372036854775807),
                allocated = MAX(allocated, excluded.allocated)"
        ))?;
        for ((host, hour_s, project, model), c) in &g.counts {
            st.execute(params![
                hour_s,
                host,
                project,
                model,
                i64::from(c.server_kinds),
                db_opt(c.counts.requests),
                db_opt(c.counts.input_tokens),
                db_opt(c.counts.cached_input_tokens),
                db_opt(c.counts.output_tokens),
                db(c.span_ms),
                db(c.gap_ms),
                db(c.resets),
                i64::from(c.allocated),
            ])?;
        }
    }
    if !g.energy.is_empty() {
        let mut st = tx.prepare_cached(
            "INSERT INTO model_energy_hourly (hour_s, host, project, model, component, energy_uj)
             VALUES (?, ?, ?, ?, ?, ?)
             ON CONFLICT (hour_s, host, project, model, component) DO UPDATE SET
                energy_uj = MIN(energy_uj + excluded.energy_uj, 9223372036854775807)",
        )?;
        for ((host, hour_s, project, model, component), uj) in &g.energy {
            st.execute(params![
                hour_s,
                host,
                project,
                model,
                component.as_str(),
                db(*uj)
            ])?;
        }
    }
    if !g.totals.is_empty() {
        let mut st = tx.prepare_cached(concat!(
            "INSERT INTO inference_totals (project, model, requests, input_tokens,
                cached_input_tokens, output_tokens, energy_uj) VALUES (?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (project, model) DO UPDATE SET
                energy_uj = MIN(energy_uj + excluded.energy_uj, 9223372036854775807), ",
            add_nullable!("requests"),
            ", ",
            add_nullable!("input_tokens"),
            ", ",
            add_nullable!("cached_input_tokens"),
            ", ",
            add_nullable!("output_tokens"),
        ))?;
        for ((project, model), (c, uj)) in &g.totals {
            st.execute(params![
                project,
                model,
                db_opt(c.requests),
                db_opt(c.input_tokens),
                db_opt(c.cached_input_tokens),
                db_opt(c.output_tokens),
                db(*uj),
            ])?;
        }
    }
    Ok(())
}

fn quantity(v: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("{what} is {v}, a negative quantity")))
}

fn count(v: Option<i64>, what: &str) -> Result<Option<u64>, StoreError> {
    v.map(|v| quantity(v, what)).transpose()
}

type CountsRow = (
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
    i64,
);

type EnergyRow = (i64, String, String, String, String, i64, f64, f64);

/// Every hour of `[from_s, to_s)` with counts or model-tagged energy, per host, project
/// and model, ordered by those keys. A unit's emissions are the project's stored
/// emissions (location-based operational with PUE, and embodied) of the same hour,
/// host and component in proportion to the model's share of its energy.
pub async fn units(
    pool: &SqlitePool,
    from_s: i64,
    to_s: i64,
) -> Result<Vec<InferenceUnit>, StoreError> {
    let counted: Vec<CountsRow> = sqlx::query_as(
        "SELECT hour_s, host, project, model, server_kinds, requests, input_tokens,
                cached_input_tokens, output_tokens, span_ms, gap_ms, resets, allocated
         FROM inference_hourly WHERE hour_s >= ? AND hour_s < ?",
    )
    .bind(from_s)
    .bind(to_s)
    .fetch_all(pool)
    .await?;
    let energy: Vec<EnergyRow> = sqlx::query_as(
        "SELECT m.hour_s, m.host, m.project, m.model, m.component, m.energy_uj,
            (SELECT TOTAL(f.energy_uj) FROM footprint_hourly f WHERE f.hour_s = m.hour_s
                AND f.host = m.host AND f.project = m.project AND f.component = m.component),
            (SELECT TOTAL(f.location_co2e_ug + f.embodied_co2e_ug) FROM footprint_hourly f
                WHERE f.hour_s = m.hour_s AND f.host = m.host AND f.project = m.project
                AND f.component = m.component)
         FROM model_energy_hourly m WHERE m.hour_s >= ? AND m.hour_s < ?",
    )
    .bind(from_s)
    .bind(to_s)
    .fetch_all(pool)
    .await?;
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
                requests: count(r.5, "inference_hourly.requests")?,
                input_tokens: count(r.6, "inference_hourly.input_tokens")?,
                cached_input_tokens: count(r.7, "inference_hourly.cached_input_tokens")?,
                output_tokens: count(r.8, "inference_hourly.output_tokens")?,
            },
            span_ms: quantity(r.9, "inference_hourly.span_ms")?,
            gap_ms: quantity(r.10, "inference_hourly.gap_ms")?,
            resets: quantity(r.11, "inference_hourly.resets")?,
            allocated: r.12 != 0,
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

/// All-time counts per project and model.
pub async fn totals(pool: &SqlitePool) -> Result<Vec<InferenceTotal>, StoreError> {
    type Row = (
        String,
        String,
        Option<i64>,
        Option<i64>,
        Option<i64>,
        Option<i64>,
        i64,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT project, model, requests, input_tokens, cached_input_tokens, output_tokens,
                energy_uj
         FROM inference_totals ORDER BY project, model",
    )
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|(project, model, r, i, c, o, uj)| {
            Ok(InferenceTotal {
                project,
                model,
                counts: Counts {
                    requests: count(r, "inference_totals.requests")?,
                    input_tokens: count(i, "inference_totals.input_tokens")?,
                    cached_input_tokens: count(c, "inference_totals.cached_input_tokens")?,
                    output_tokens: count(o, "inference_totals.output_tokens")?,
                },
                energy_uj: quantity(uj, "inference_totals.energy_uj")?,
            })
        })
        .collect()
}
