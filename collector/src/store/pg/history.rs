//! The configuration history on PostgreSQL (migration 0006): plans with their dates,
//! and `empreinte recompute`, which makes every hourly row from an instant on again with
//! the plan in force at its hour, alone under the store-wide lock, in one transaction
//! with the rollups' differences and the record of each month before and after.

use std::collections::HashMap;

use sqlx::{Postgres, Transaction};

use super::maintain::Rollups;
use super::{PgStore, STORE_LOCK, busy_or};
use crate::history::recompute::{
    Months, OldRow, check_not_compacted, coefficients_text, count_in_month, host_hour, new_sums,
    old_sums, set_costs,
};
use crate::history::{
    PLAN_HISTORY_SQL, PlanRecord, PlanRow, RECOMPUTATIONS_COLUMNS, Recomputation, RecomputeJob,
    RecomputedMonth, RecomputedRow, recomputations_of,
};
use crate::store::StoreError;
use crate::store::sqlite::cost::CostDeltas;
use crate::store::sqlite::writer::Calendar;

pub async fn plan_history(store: &PgStore) -> Result<Vec<PlanRecord>, StoreError> {
    let rows: Vec<PlanRow> = sqlx::query_as(PLAN_HISTORY_SQL)
        .fetch_all(&store.pool)
        .await?;
    Ok(rows.into_iter().map(PlanRecord::from).collect())
}

pub async fn record_plan(
    store: &PgStore,
    from_s: i64,
    plan: &str,
    now_ms: u64,
) -> Result<(), StoreError> {
    let now = i64::try_from(now_ms).unwrap_or(i64::MAX);
    let mut tx = store.pool.begin().await.map_err(busy_or)?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(STORE_LOCK)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "UPDATE plan_history SET replaced_ms = $1 WHERE from_s >= $2 AND replaced_ms IS NULL",
    )
    .bind(now)
    .bind(from_s)
    .execute(&mut *tx)
    .await?;
    sqlx::query("INSERT INTO plan_history (from_s, recorded_ms, plan) VALUES ($1, $2, $3)")
        .bind(from_s)
        .bind(now)
        .bind(plan)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

pub async fn recomputations(
    store: &PgStore,
    from_s: i64,
    to_s: i64,
) -> Result<Vec<Recomputation>, StoreError> {
    let rows: Vec<RecomputedRow> = sqlx::query_as(&format!(
        "SELECT {RECOMPUTATIONS_COLUMNS}
         FROM recomputations AS r JOIN recomputed_months AS m ON m.recomputation_id = r.id
         WHERE m.month_s >= $1 AND m.month_s < $2 ORDER BY r.id, m.month_s"
    ))
    .bind(from_s)
    .bind(to_s)
    .fetch_all(&store.pool)
    .await?;
    Ok(recomputations_of(rows))
}

#[derive(sqlx::FromRow)]
struct Stored {
    hour_s: i64,
    host: String,
    project: String,
    component: String,
    source: String,
    site: String,
    zone: String,
    energy_uj: i64,
    facility_uj: i64,
    location_co2e_ug: i64,
    market_co2e_ug: Option<i64>,
    embodied_co2e_ug: i64,
    pue_coef: i64,
    intensity_coef: Option<i64>,
    market_coef: Option<i64>,
    embodied_coef: Option<i64>,
    rate: Option<f64>,
}

pub async fn recompute(store: &PgStore, job: &RecomputeJob) -> Result<Recomputation, StoreError> {
    let mut tx = store.pool.begin().await.map_err(busy_or)?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(STORE_LOCK)
        .execute(&mut *tx)
        .await?;
    let compacted: Option<String> =
        sqlx::query_scalar("SELECT value FROM store_meta WHERE key = 'hourly_compacted_before'")
            .fetch_optional(&mut *tx)
            .await?;
    check_not_compacted(compacted.as_deref(), job.from_s)?;
    let last: Option<i64> =
        sqlx::query_scalar("SELECT MAX(hour_s) FROM footprint_hourly WHERE hour_s >= $1")
            .bind(job.from_s)
            .fetch_one(&mut *tx)
            .await?;
    let mut rollups = Rollups::new(&store.tz);
    let mut cal = Calendar::new(store.tz.clone());
    let mut months = Months::new();
    // Costs: the hours' old ones go (out of the totals too), new ones come from the rows.
    let cost_before = cost_by_month(&mut tx, &mut cal, job.from_s).await?;
    sqlx::query(
        "UPDATE cost_totals AS t SET facility_uj = t.facility_uj - s.f, cost_ueur = t.cost_ueur - s.c
         FROM (SELECT site, project, SUM(facility_uj)::BIGINT AS f, SUM(cost_ueur)::BIGINT AS c
               FROM cost_hourly WHERE hour_s >= $1 GROUP BY site, project) AS s
         WHERE t.site = s.site AND t.project = s.project",
    )
    .bind(job.from_s)
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM cost_hourly WHERE hour_s >= $1")
        .bind(job.from_s)
        .execute(&mut *tx)
        .await?;
    let mut costs = CostDeltas::default();
    let mut committed = Vec::new();
    let mut rows = 0u64;
    let mut from = job.from_s;
    // A day at a time: memory is bounded by one day of rows.
    while let Some(last) = last.filter(|l| *l >= from) {
        let day = read_day(&mut tx, from, from + 86_400).await?;
        for group in day.chunk_by(|a, b| a.hour_s == b.hour_s && a.host == b.host) {
            rows += rewrite(
                store,
                &mut tx,
                job,
                group,
                (&mut rollups, &mut cal, &mut committed, &mut costs),
                &mut months,
            )
            .await?;
        }
        from += 86_400;
        if from > last {
            break;
        }
    }
    rollups.write(&mut tx).await?;
    super::costs::write(&mut tx, &costs).await?;
    for table in ["footprint_daily", "footprint_monthly"] {
        sqlx::query(&format!(
            "DELETE FROM {table} WHERE energy_uj = 0 AND facility_uj = 0 AND location_ug = 0
                AND market_ug = 0 AND embodied_ug = 0"
        ))
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query("DELETE FROM coefficient_use WHERE rows <= 0")
        .execute(&mut *tx)
        .await?;
    let cost_after = cost_by_month(&mut tx, &mut cal, job.from_s).await?;
    set_costs(&mut months, &cost_before, &cost_after);
    let out = record(&mut tx, job, rows, months).await?;
    tx.commit().await?;
    Ok(out)
}

async fn read_day(
    tx: &mut Transaction<'_, Postgres>,
    from_s: i64,
    to_s: i64,
) -> Result<Vec<OldRow>, StoreError> {
    let stored: Vec<Stored> = sqlx::query_as(
        "SELECT f.hour_s, f.host, f.project, f.component, f.source, f.site, f.zone, f.energy_uj,
            f.facility_uj, f.location_co2e_ug, f.market_co2e_ug, f.embodied_co2e_ug, f.pue_coef,
            f.intensity_coef, f.market_coef, f.embodied_coef, c.value AS rate
         FROM footprint_hourly AS f LEFT JOIN coefficients AS c ON c.id = f.embodied_coef
         WHERE f.hour_s >= $1 AND f.hour_s < $2
         ORDER BY f.hour_s, f.host, f.project, f.component, f.source
         FOR UPDATE OF f",
    )
    .bind(from_s)
    .bind(to_s)
    .fetch_all(&mut **tx)
    .await?;
    Ok(stored
        .into_iter()
        .map(|s| OldRow {
            hour_s: s.hour_s,
            host: s.host,
            project: s.project,
            component: s.component,
            source: s.source,
            site: s.site,
            zone: s.zone,
            energy_uj: s.energy_uj,
            facility_uj: s.facility_uj,
            location_ug: s.location_co2e_ug,
            market_ug: s.market_co2e_ug,
            embodied_ug: s.embodied_co2e_ug,
            pue_coef: s.pue_coef,
            grid_coef: s.intensity_coef,
            market_coef: s.market_coef,
            embodied_coef: s.embodied_coef,
            embodied_g_per_hour: s.rate,
        })
        .collect())
}

type Acc<'a> = (
    &'a mut Rollups,
    &'a mut Calendar,
    &'a mut Vec<(String, i64)>,
    &'a mut CostDeltas,
);

/// The costs of the hours from `from_s` per local month.
async fn cost_by_month(
    tx: &mut Transaction<'_, Postgres>,
    cal: &mut Calendar,
    from_s: i64,
) -> Result<HashMap<i64, i64>, StoreError> {
    let rows: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT hour_s, SUM(cost_ueur)::BIGINT FROM cost_hourly WHERE hour_s >= $1 GROUP BY hour_s",
    )
    .bind(from_s)
    .fetch_all(&mut **tx)
    .await?;
    let mut out: HashMap<i64, i64> = HashMap::new();
    for (h, c) in rows {
        *out.entry(cal.of(h).1).or_default() += c;
    }
    Ok(out)
}

async fn rewrite(
    store: &PgStore,
    tx: &mut Transaction<'_, Postgres>,
    job: &RecomputeJob,
    group: &[OldRow],
    (rollups, cal, committed, costs): Acc<'_>,
    months: &mut Months,
) -> Result<u64, StoreError> {
    use super::ingest::coefficient_id;
    let (hour_s, host) = (group[0].hour_s, group[0].host.as_str());
    let plan = job.plans.plan_at(host, hour_s);
    let imported: Option<(f64, i64)> = sqlx::query_as(
        "SELECT g_per_kwh, import_id FROM intensity_hourly WHERE zone = $1 AND hour_s = $2",
    )
    .bind(&plan.zone)
    .bind(hour_s)
    .fetch_optional(&mut **tx)
    .await?;
    let pue = coefficient_id(tx, store, committed, &plan.pue).await?;
    let grid = match imported {
        Some(_) => None,
        None => Some(coefficient_id(tx, store, committed, &plan.grid_default).await?),
    };
    let market = match &plan.market {
        Some(m) => Some(coefficient_id(tx, store, committed, m).await?),
        None => None,
    };
    let embodied = match &plan.embodied {
        Some(e) => Some(coefficient_id(tx, store, committed, &e.coefficient).await?),
        None => None,
    };
    let (day_s, month_s) = cal.of(hour_s);
    let mut n = 0;
    for (old, new) in group.iter().zip(host_hour(group, &plan, imported)) {
        sqlx::query(
            "UPDATE footprint_hourly SET site = $1, zone = $2, facility_uj = $3, pue = $4,
                pue_coef = $5, intensity_g_per_kwh = $6, intensity_coef = $7,
                intensity_import = $8, location_co2e_ug = $9, market_g_per_kwh = $10,
                market_coef = $11, market_co2e_ug = $12, embodied_co2e_ug = $13,
                embodied_coef = $14
             WHERE hour_s = $15 AND host = $16 AND project = $17 AND component = $18
                AND source = $19",
        )
        .bind(&new.site)
        .bind(&new.zone)
        .bind(new.facility_uj)
        .bind(new.pue)
        .bind(pue)
        .bind(new.g_per_kwh)
        .bind(grid)
        .bind(new.import)
        .bind(new.location_ug)
        .bind(new.market_g_per_kwh)
        .bind(market)
        .bind(new.market_ug)
        .bind(new.embodied_ug)
        .bind(embodied)
        .bind(old.hour_s)
        .bind(&old.host)
        .bind(&old.project)
        .bind(&old.component)
        .bind(&old.source)
        .execute(&mut **tx)
        .await?;
        let (o, s) = (old_sums(old), new_sums(old.energy_uj, &new));
        let key = |site, zone| {
            [
                host,
                old.project.as_str(),
                old.component.as_str(),
                old.source.as_str(),
                site,
                zone,
            ]
        };
        rollups.add(
            hour_s,
            key(old.site.as_str(), old.zone.as_str()),
            o.map(|v| -v),
        );
        rollups.add(hour_s, key(new.site.as_str(), new.zone.as_str()), s);
        for c in old.coefs() {
            rollups.use_coef(day_s, c, -1);
        }
        for c in [Some(pue), grid, market, embodied].into_iter().flatten() {
            rollups.use_coef(day_s, c, 1);
        }
        rollups.zone_hour(&new.zone, hour_s);
        costs.add(
            hour_s,
            &new.site,
            &old.project,
            plan.tariff.as_deref(),
            new.facility_uj,
        );
        count_in_month(months, month_s, old, o, s);
        n += 1;
    }
    Ok(n)
}

async fn record(
    tx: &mut Transaction<'_, Postgres>,
    job: &RecomputeJob,
    rows: u64,
    months: Months,
) -> Result<Recomputation, StoreError> {
    let int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO recomputations (at_ms, from_s, rows) VALUES ($1, $2, $3) RETURNING id",
    )
    .bind(int(job.now_ms))
    .bind(job.from_s)
    .bind(int(rows))
    .fetch_one(&mut **tx)
    .await?;
    let mut out = Vec::new();
    for (month_s, (n, before, after, coefs)) in months {
        let ids: Vec<i64> = coefs.into_iter().collect();
        let text = coefficients_text(&ids);
        sqlx::query(
            "INSERT INTO recomputed_months (recomputation_id, month_s, rows, before_facility_uj,
                before_location_ug, before_market_ug, before_embodied_ug, before_cost_ueur,
                after_facility_uj, after_location_ug, after_market_ug, after_embodied_ug,
                after_cost_ueur, coefficients_before)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(id)
        .bind(month_s)
        .bind(int(n))
        .bind(before.facility_uj)
        .bind(before.location_ug)
        .bind(before.market_ug)
        .bind(before.embodied_ug)
        .bind(before.cost_ueur)
        .bind(after.facility_uj)
        .bind(after.location_ug)
        .bind(after.market_ug)
        .bind(after.embodied_ug)
        .bind(after.cost_ueur)
        .bind(&text)
        .execute(&mut **tx)
        .await?;
        out.push(RecomputedMonth {
            month_s,
            rows: n,
            before,
            after,
            coefficients_before: ids,
        });
    }
    Ok(Recomputation {
        id,
        at_ms: job.now_ms,
        from_s: job.from_s,
        rows,
        months: out,
    })
}
