//! Costs in the PostgreSQL store, as the SQLite store keeps them (`store/sqlite/cost.rs`,
//! the same tables from migration `0005_costs.sql`): a push's facility energy per hour,
//! site, project and tariff rate, written in the push's transaction, and the reads of the
//! cost API and `/metrics`.
//!
//! Several collectors price the same `(hour, site, project)` when agents of one project
//! push at once: each statement takes its rows' locks in key order (the additions are a
//! `BTreeMap`), tariffs first, then `cost_hourly`, then `cost_totals`; a row's cost is
//! recomputed from its whole facility energy under the row lock its upsert holds, so the
//! amount is `facility_uj × price` rounded once whatever the order of the pushes.

use std::collections::{BTreeMap, HashMap};

use sqlx::{PgPool, Postgres, Transaction};

use super::super::cost_rows::{
    self, CostLineRow, HARDWARE_LINES_SQL, HARDWARE_TOTALS_SQL, HardwareRow, HardwareTotalRow,
    LINES_SQL, TOTALS_SQL, TotalRow,
};
use super::stage::{q, to_i64};
use crate::cost::hardware::{HardwareDeltas, HardwareLine, HardwareRate};
use crate::cost::{CostLine, CostTotal, Rate, cost_ueur};
use crate::store::StoreError;
use crate::store::sqlite::cost::CostDeltas;

/// `(hour_s, site, project, tariff_id, facility_uj)` as arrays, for `UNNEST`.
type Columns = (Vec<i64>, Vec<String>, Vec<String>, Vec<i64>, Vec<i64>);

/// Writes a push's cost additions in its transaction.
pub async fn write(
    tx: &mut Transaction<'_, Postgres>,
    deltas: &CostDeltas,
) -> Result<(), StoreError> {
    if deltas.is_empty() {
        return Ok(());
    }
    let mut ids: BTreeMap<&Rate, i64> = BTreeMap::new();
    for (_, (rate, _)) in deltas.entries() {
        ids.insert(rate, 0);
    }
    for (rate, id) in ids.iter_mut() {
        *id = tariff_id(tx, rate).await?;
    }
    let mut cols: Columns = Default::default();
    for ((hour_s, site, project), (rate, delta)) in deltas.entries() {
        cols.0.push(*hour_s);
        cols.1.push(site.clone());
        cols.2.push(project.clone());
        cols.3.push(ids.get(rate).copied().unwrap_or_default());
        cols.4.push(*delta);
    }
    // The rows' facility energy after the additions, each under its row lock.
    let after: Vec<(i64, String, String, i64, i64)> = sqlx::query_as(
        "INSERT INTO cost_hourly (hour_s, site, project, tariff_id, facility_uj, cost_ueur)
         SELECT u.h, u.s, u.p, u.t, u.f, 0
         FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::TEXT[], $4::BIGINT[], $5::BIGINT[])
           AS u(h, s, p, t, f)
         ON CONFLICT (hour_s, site, project, tariff_id) DO UPDATE
            SET facility_uj = cost_hourly.facility_uj + EXCLUDED.facility_uj
         RETURNING hour_s, site, project, tariff_id, facility_uj",
    )
    .bind(&cols.0)
    .bind(&cols.1)
    .bind(&cols.2)
    .bind(&cols.3)
    .bind(&cols.4)
    .fetch_all(&mut **tx)
    .await?;
    let after: HashMap<(i64, &str, &str, i64), i64> = after
        .iter()
        .map(|(h, s, p, t, f)| ((*h, s.as_str(), p.as_str(), *t), *f))
        .collect();
    let mut costs = Vec::with_capacity(cols.0.len());
    let mut totals: BTreeMap<(&str, &str), (i64, i64)> = BTreeMap::new();
    for (i, ((_, site, project), (rate, delta))) in deltas.entries().enumerate() {
        let key = (cols.0[i], site.as_str(), project.as_str(), cols.3[i]);
        let now = after.get(&key).copied().ok_or_else(|| {
            StoreError::Write(format!(
                "the cost row of {project} at {site} was not written"
            ))
        })?;
        let new = cost_ueur(q(now, "cost_hourly.facility_uj")?, rate.price_ueur_per_kwh);
        let old = cost_ueur(
            q(now - delta, "cost_hourly.facility_uj")?,
            rate.price_ueur_per_kwh,
        );
        let new = to_i64(new, "a cost")?;
        costs.push(new);
        let t = totals.entry((site, project)).or_default();
        t.0 += delta;
        t.1 += new - to_i64(old, "a cost")?;
    }
    sqlx::query(
        "UPDATE cost_hourly AS c SET cost_ueur = u.c
         FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::TEXT[], $4::BIGINT[], $5::BIGINT[])
           AS u(h, s, p, t, c)
         WHERE c.hour_s = u.h AND c.site = u.s AND c.project = u.p AND c.tariff_id = u.t",
    )
    .bind(&cols.0)
    .bind(&cols.1)
    .bind(&cols.2)
    .bind(&cols.3)
    .bind(&costs)
    .execute(&mut **tx)
    .await?;
    let mut t: (Vec<&str>, Vec<&str>, Vec<i64>, Vec<i64>) = Default::default();
    for ((site, project), (f, c)) in &totals {
        t.0.push(site);
        t.1.push(project);
        t.2.push(*f);
        t.3.push(*c);
    }
    sqlx::query(
        "INSERT INTO cost_totals (site, project, facility_uj, cost_ueur)
         SELECT * FROM UNNEST($1::TEXT[], $2::TEXT[], $3::BIGINT[], $4::BIGINT[])
         ON CONFLICT (site, project) DO UPDATE
            SET facility_uj = cost_totals.facility_uj + EXCLUDED.facility_uj,
                cost_ueur = cost_totals.cost_ueur + EXCLUDED.cost_ueur",
    )
    .bind(&t.0)
    .bind(&t.1)
    .bind(&t.2)
    .bind(&t.3)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The id of a tariff rate, stored once across collectors (another collector may insert
/// the same one meanwhile: ours then does nothing, and the lookup finds its row).
async fn tariff_id(tx: &mut Transaction<'_, Postgres>, rate: &Rate) -> Result<i64, StoreError> {
    let price = to_i64(rate.price_ueur_per_kwh, "a price")?;
    macro_rules! bind_all {
        ($q:expr) => {
            $q.bind(&rate.site)
                .bind(price)
                .bind(rate.band.as_str())
                .bind(&rate.valid_from)
                .bind(&rate.off_peak_hours)
                .bind(&rate.source)
        };
    }
    let inserted: Option<i64> = bind_all!(sqlx::query_scalar(
        "INSERT INTO tariffs (site, price_ueur_per_kwh, band, valid_from, off_peak_hours, source)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING RETURNING id"
    ))
    .fetch_optional(&mut **tx)
    .await?;
    match inserted {
        Some(id) => Ok(id),
        None => Ok(bind_all!(sqlx::query_scalar(
            "SELECT id FROM tariffs WHERE site = $1 AND price_ueur_per_kwh = $2 AND band = $3
                AND valid_from = $4 AND off_peak_hours = $5 AND source = $6"
        ))
        .fetch_one(&mut **tx)
        .await?),
    }
}

/// Every cost line of `[from_s, to_s)` with its tariff rate, in the SQLite store's order.
pub async fn lines(pool: &PgPool, from_s: i64, to_s: i64) -> Result<Vec<CostLine>, StoreError> {
    let rows: Vec<CostLineRow> = sqlx::query_as(LINES_SQL)
        .bind(from_s)
        .bind(to_s)
        .fetch_all(pool)
        .await?;
    rows.into_iter().map(CostLine::try_from).collect()
}

/// All-time costs per site and project.
pub async fn totals(pool: &PgPool) -> Result<Vec<CostTotal>, StoreError> {
    let rows: Vec<TotalRow> = sqlx::query_as(TOTALS_SQL).fetch_all(pool).await?;
    rows.into_iter().map(cost_rows::total).collect()
}

/// `(hour_s, host, project, rate_id, site, cost_ueur)` as arrays, for `UNNEST`.
type HardwareColumns<'a> = (
    Vec<i64>,
    Vec<&'a str>,
    Vec<&'a str>,
    Vec<i64>,
    Vec<&'a str>,
    Vec<i64>,
);

/// Writes the amortised hardware cost of a push's new batches in its transaction (the
/// hourly rows are the agent's own, under its lock; the totals, shared, in key order).
pub async fn write_hardware(
    tx: &mut Transaction<'_, Postgres>,
    deltas: &HardwareDeltas,
) -> Result<(), StoreError> {
    if deltas.is_empty() {
        return Ok(());
    }
    let mut ids: BTreeMap<&HardwareRate, i64> = BTreeMap::new();
    for ((_, _, _, rate), _) in deltas.entries() {
        ids.insert(rate, 0);
    }
    for (rate, id) in ids.iter_mut() {
        *id = hardware_rate_id(tx, rate).await?;
    }
    let mut cols: HardwareColumns<'_> = Default::default();
    let mut totals: BTreeMap<(&str, &str), i64> = BTreeMap::new();
    for ((hour_s, host, project, rate), (site, ueur)) in deltas.entries() {
        let v = to_i64(*ueur, "a hardware cost")?;
        cols.0.push(*hour_s);
        cols.1.push(host);
        cols.2.push(project);
        cols.3.push(ids.get(rate).copied().unwrap_or_default());
        cols.4.push(site);
        cols.5.push(v);
        *totals.entry((site, project)).or_default() += v;
    }
    sqlx::query(
        "INSERT INTO hardware_cost_hourly (hour_s, host, project, rate_id, site, cost_ueur)
         SELECT * FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::TEXT[], $4::BIGINT[], $5::TEXT[],
            $6::BIGINT[])
         ON CONFLICT (hour_s, host, project, rate_id) DO UPDATE
            SET cost_ueur = hardware_cost_hourly.cost_ueur + EXCLUDED.cost_ueur",
    )
    .bind(&cols.0)
    .bind(&cols.1)
    .bind(&cols.2)
    .bind(&cols.3)
    .bind(&cols.4)
    .bind(&cols.5)
    .execute(&mut **tx)
    .await?;
    let (mut sites, mut projects, mut sums) = (Vec::new(), Vec::new(), Vec::new());
    for ((site, project), v) in totals {
        sites.push(site);
        projects.push(project);
        sums.push(v);
    }
    sqlx::query(
        "INSERT INTO hardware_cost_totals (site, project, cost_ueur)
         SELECT * FROM UNNEST($1::TEXT[], $2::TEXT[], $3::BIGINT[])
         ON CONFLICT (site, project) DO UPDATE
            SET cost_ueur = hardware_cost_totals.cost_ueur + EXCLUDED.cost_ueur",
    )
    .bind(&sites)
    .bind(&projects)
    .bind(&sums)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn hardware_rate_id(
    tx: &mut Transaction<'_, Postgres>,
    rate: &HardwareRate,
) -> Result<i64, StoreError> {
    let price = to_i64(rate.price_ueur, "a purchase price")?;
    let hours = to_i64(rate.period_hours, "an amortisation period")?;
    macro_rules! bind_all {
        ($q:expr) => {
            $q.bind(&rate.host)
                .bind(price)
                .bind(hours)
                .bind(&rate.purchased_on)
                .bind(&rate.source)
        };
    }
    let inserted: Option<i64> = bind_all!(sqlx::query_scalar(
        "INSERT INTO hardware_rates (host, price_ueur, period_hours, purchased_on, source)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING id"
    ))
    .fetch_optional(&mut **tx)
    .await?;
    match inserted {
        Some(id) => Ok(id),
        None => Ok(bind_all!(sqlx::query_scalar(
            "SELECT id FROM hardware_rates WHERE host = $1 AND price_ueur = $2
                AND period_hours = $3 AND purchased_on = $4 AND source = $5"
        ))
        .fetch_one(&mut **tx)
        .await?),
    }
}

/// Every hardware cost line of `[from_s, to_s)` with its rate, in the SQLite store's
/// order.
pub async fn hardware_lines(
    pool: &PgPool,
    from_s: i64,
    to_s: i64,
) -> Result<Vec<HardwareLine>, StoreError> {
    let rows: Vec<HardwareRow> = sqlx::query_as(HARDWARE_LINES_SQL)
        .bind(from_s)
        .bind(to_s)
        .fetch_all(pool)
        .await?;
    rows.into_iter().map(HardwareLine::try_from).collect()
}

/// All-time amortised hardware costs per site and project.
pub async fn hardware_totals(pool: &PgPool) -> Result<Vec<CostTotal>, StoreError> {
    let rows: Vec<HardwareTotalRow> = sqlx::query_as(HARDWARE_TOTALS_SQL).fetch_all(pool).await?;
    rows.into_iter().map(cost_rows::hardware_total).collect()
}
