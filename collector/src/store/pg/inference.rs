//! Inference counts and model-tagged energy in PostgreSQL (`migrations-pg/0003_inference.sql`):
//! the SQLite store's tables and sums (`store/sqlite/inference.rs`) in PostgreSQL's dialect.
//!
//! A push's counts are written by [`write`] in the push's own transaction, from the
//! batches `stage` found new, so they are stored exactly once with their batch, whichever
//! collector takes the push: a replay is a duplicate and adds nothing. The rows every
//! agent shares (`inference_totals`) are written in key order (no deadlock between two
//! pushes by construction; one that still happens is retried whole with the push).

use sqlx::{PgPool, Postgres, Transaction};

use super::super::inference_rows::{self, COUNTS_SQL, CountsRow, EnergyRow, TOTALS_SQL, TotalsRow};
use super::super::{IngestSet, StoreError};
use super::stage::to_i64;
use crate::inference::group::InferenceGroup;
use crate::inference::{InferenceTotal, InferenceUnit, batch_inference};

/// The sums of the new batches (`new`: their indices in the push) of `set`.
pub(super) fn group(set: &IngestSet<'_>, new: &[usize]) -> InferenceGroup {
    let mut g = InferenceGroup::default();
    for &i in new {
        if let Some((b, _)) = set.batches.get(i) {
            let parts = batch_inference(b);
            if !parts.is_empty() {
                g.add(&set.agent.agent_id, &parts);
            }
        }
    }
    g
}

fn opt(v: Option<u64>, what: &str) -> Result<Option<i64>, StoreError> {
    v.map(|v| to_i64(v, what)).transpose()
}

/// A nullable count added on conflict: NULL + NULL stays NULL; a sum past `i64::MAX`
/// saturates there (summed in `numeric`).
macro_rules! add_nullable {
    ($c:literal) => {
        concat!(
            $c,
            " = CASE WHEN EXCLUDED.",
            $c,
            " IS NULL THEN t.",
            $c,
            " ELSE LEAST(COALESCE(t.",
            $c,
            ", 0)::numeric + EXCLUDED.",
            $c,
            ", 9223372036854775807)::bigint END"
        )
    };
}

/// `t.col + EXCLUDED.col`, saturating at `i64::MAX`.
macro_rules! add_sat {
    ($c:literal) => {
        concat!(
            $c,
            " = LEAST(t.",
            $c,
            "::numeric + EXCLUDED.",
            $c,
            ", 9223372036854775807)::bigint"
        )
    };
}

/// Writes `g` in the push's transaction.
pub(super) async fn write(
    tx: &mut Transaction<'_, Postgres>,
    g: &InferenceGroup,
) -> Result<(), StoreError> {
    write_counts(tx, g).await?;
    write_energy(tx, g).await?;
    write_totals(tx, g).await
}

async fn write_counts(
    tx: &mut Transaction<'_, Postgres>,
    g: &InferenceGroup,
) -> Result<(), StoreError> {
    for ((host, hour_s, project, model), c) in &g.counts {
        sqlx::query(concat!(
            "INSERT INTO inference_hourly AS t (hour_s, host, project, model, server_kinds,
                requests, input_tokens, cached_input_tokens, output_tokens, span_ms, gap_ms,
                resets, allocated)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
             ON CONFLICT (hour_s, host, project, model) DO UPDATE SET
                server_kinds = t.server_kinds | EXCLUDED.server_kinds, ",
            add_nullable!("requests"),
            ", ",
            add_nullable!("input_tokens"),
            ", ",
            add_nullable!("cached_input_tokens"),
            ", ",
            add_nullable!("output_tokens"),
            ", ",
            add_sat!("span_ms"),
            ", ",
            add_sat!("gap_ms"),
            ", ",
            add_sat!("resets"),
            ", allocated = t.allocated OR EXCLUDED.allocated"
        ))
        .bind(hour_s)
        .bind(host)
        .bind(project)
        .bind(model)
        .bind(i64::from(c.server_kinds))
        .bind(opt(c.counts.requests, "a request count")?)
        .bind(opt(c.counts.input_tokens, "an input token count")?)
        .bind(opt(c.counts.cached_input_tokens, "a cached token count")?)
        .bind(opt(c.counts.output_tokens, "an output token count")?)
        .bind(to_i64(c.span_ms, "a span")?)
        .bind(to_i64(c.gap_ms, "a gap")?)
        .bind(to_i64(c.resets, "a reset count")?)
        .bind(c.allocated)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

async fn write_energy(
    tx: &mut Transaction<'_, Postgres>,
    g: &InferenceGroup,
) -> Result<(), StoreError> {
    for ((host, hour_s, project, model, component), uj) in &g.energy {
        sqlx::query(concat!(
            "INSERT INTO model_energy_hourly AS t (hour_s, host, project, model, component, energy_uj)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (hour_s, host, project, model, component) DO UPDATE SET ",
            add_sat!("energy_uj")
        ))
        .bind(hour_s)
        .bind(host)
        .bind(project)
        .bind(model)
        .bind(component.as_str())
        .bind(to_i64(*uj, "a model's energy")?)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

async fn write_totals(
    tx: &mut Transaction<'_, Postgres>,
    g: &InferenceGroup,
) -> Result<(), StoreError> {
    // Key order (the map's): rows shared with other agents' pushes are locked in one order.
    for ((project, model), (c, uj)) in &g.totals {
        sqlx::query(concat!(
            "INSERT INTO inference_totals AS t (project, model, requests, input_tokens,
                cached_input_tokens, output_tokens, energy_uj) VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (project, model) DO UPDATE SET ",
            add_sat!("energy_uj"),
            ", ",
            add_nullable!("requests"),
            ", ",
            add_nullable!("input_tokens"),
            ", ",
            add_nullable!("cached_input_tokens"),
            ", ",
            add_nullable!("output_tokens"),
        ))
        .bind(project)
        .bind(model)
        .bind(opt(c.requests, "a request count")?)
        .bind(opt(c.input_tokens, "an input token count")?)
        .bind(opt(c.cached_input_tokens, "a cached token count")?)
        .bind(opt(c.output_tokens, "an output token count")?)
        .bind(to_i64(*uj, "a model's energy")?)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// The SQLite store's `units` (the rows read back made into units by
/// `store/inference_rows.rs`, for both engines): every hour of `[from_s, to_s)` with counts or
/// model-tagged energy per host, project and model, each with its share of the project's
/// stored emissions of the same hour, host and component.
pub(super) async fn units(
    pool: &PgPool,
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
            COALESCE((SELECT SUM(f.energy_uj)::float8 FROM footprint_hourly f
                WHERE f.hour_s = m.hour_s AND f.host = m.host AND f.project = m.project
                AND f.component = m.component), 0),
            COALESCE((SELECT SUM(f.location_co2e_ug + f.embodied_co2e_ug)::float8
                FROM footprint_hourly f WHERE f.hour_s = m.hour_s AND f.host = m.host
                AND f.project = m.project AND f.component = m.component), 0)
         FROM model_energy_hourly m WHERE m.hour_s >= $1 AND m.hour_s < $2",
    )
    .bind(from_s)
    .bind(to_s)
    .fetch_all(pool)
    .await?;
    inference_rows::units(counted, energy)
}

/// All-time counts per project and model, ordered by them.
pub(super) async fn totals(pool: &PgPool) -> Result<Vec<InferenceTotal>, StoreError> {
    let rows: Vec<TotalsRow> = sqlx::query_as(TOTALS_SQL).fetch_all(pool).await?;
    rows.into_iter().map(inference_rows::total).collect()
}
