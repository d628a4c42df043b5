//! Inference counts and model-tagged energy in SQLite (migration `0003_inference.sql`).
//!
//! Written by the store's writer in the transaction of the batches they came with
//! ([`InferenceGroup`], filled by `stage` for accepted batches only, written by
//! [`write`] before the commit), so a batch's counts are stored exactly once with it: a
//! replayed batch is a duplicate and adds nothing. Read through the pool
//! ([`units`], [`totals`]). [`InferenceGroup`] (`crate::inference::group`) is the
//! engines' common sum: PostgreSQL writes the same group (`store/pg/inference.rs`).

use rusqlite::{Transaction, params};
use sqlx::SqlitePool;

use super::super::StoreError;
use super::super::inference_rows::{self, COUNTS_SQL, CountsRow, EnergyRow, TOTALS_SQL, TotalsRow};
pub use crate::inference::group::InferenceGroup;
use crate::inference::{InferenceTotal, InferenceUnit};

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

/// Every hour of `[from_s, to_s)` with counts or model-tagged energy, per host, project
/// and model, ordered by those keys. A unit's emissions are the project's stored
/// emissions (location-based operational with PUE, and embodied) of the same hour,
/// host and component in proportion to the model's share of its energy.
pub async fn units(
    pool: &SqlitePool,
    from_s: i64,
    to_s: i64,
) -> Result<Vec<InferenceUnit>, StoreError> {
    let counted: Vec<CountsRow> = sqlx::query_as(COUNTS_SQL)
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
    inference_rows::units(counted, energy)
}

/// All-time counts per project and model.
pub async fn totals(pool: &SqlitePool) -> Result<Vec<InferenceTotal>, StoreError> {
    let rows: Vec<TotalsRow> = sqlx::query_as(TOTALS_SQL).fetch_all(pool).await?;
    rows.into_iter().map(inference_rows::total).collect()
}
