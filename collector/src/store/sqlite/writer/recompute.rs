//! `empreinte recompute` on SQLite: every hourly row from an hour on is made again with
//! the plan in force at its hour (`crate::history::recompute`), in one transaction with
//! the rollups' differences, the coefficients used, the costs and the record of what
//! each month was before and after.

use std::collections::HashMap;

use rusqlite::{OptionalExtension, Transaction, TransactionBehavior, params};

use super::coefs::{CoefIds, coefficient_id};
use super::fold::Folder;
use super::rollups::{RollupDelta, Rollups};
use crate::history::recompute::{
    Months, OldRow, check_not_compacted, coefficients_text, count_in_month, host_hour, new_sums,
    old_sums, set_costs,
};
use crate::history::{Recomputation, RecomputeJob, RecomputedMonth};
use crate::store::StoreError;

fn delta(s: [i64; 5], sign: i64) -> RollupDelta {
    RollupDelta {
        energy: sign * s[0],
        facility: sign * s[1],
        location: sign * s[2],
        market: sign * s[3],
        embodied: sign * s[4],
    }
}

impl Folder {
    pub(super) fn recompute(&mut self, job: &RecomputeJob) -> Result<Recomputation, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let compacted: Option<String> = tx
            .query_row(
                "SELECT value FROM store_meta WHERE key = 'hourly_compacted_before'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        check_not_compacted(compacted.as_deref(), job.from_s)?;
        let mut months = Months::new();
        let cost_before = cost_by_month(&tx, &mut self.cal, job.from_s)?;
        tx.execute(
            "UPDATE cost_totals SET facility_uj = facility_uj - s.f, cost_ueur = cost_ueur - s.c
             FROM (SELECT site, project, SUM(facility_uj) AS f, SUM(cost_ueur) AS c
                   FROM cost_hourly WHERE hour_s >= ?1 GROUP BY site, project) AS s
             WHERE cost_totals.site = s.site AND cost_totals.project = s.project",
            params![job.from_s],
        )?;
        tx.execute(
            "DELETE FROM cost_hourly WHERE hour_s >= ?",
            params![job.from_s],
        )?;
        let last: Option<i64> = tx.query_row(
            "SELECT MAX(hour_s) FROM footprint_hourly WHERE hour_s >= ?",
            params![job.from_s],
            |r| r.get(0),
        )?;
        let mut rollups = Rollups::default();
        let mut coef_ids = CoefIds::new();
        let mut rows = 0u64;
        let mut from = job.from_s;
        // A day at a time: memory is bounded by one day of rows.
        while let Some(last) = last.filter(|l| *l >= from) {
            let to = from + 86_400;
            let day = read_rows(&tx, from, to)?;
            rows += rewrite(
                &tx,
                &mut self.cal,
                job,
                &day,
                (&mut rollups, &mut coef_ids, &mut months),
            )?;
            from = to;
            if from > last {
                break;
            }
        }
        rollups.write(&tx)?;
        tx.execute_batch(
            "DELETE FROM footprint_daily WHERE energy_uj = 0 AND facility_uj = 0
                AND location_ug = 0 AND market_ug = 0 AND embodied_ug = 0;
             DELETE FROM footprint_monthly WHERE energy_uj = 0 AND facility_uj = 0
                AND location_ug = 0 AND market_ug = 0 AND embodied_ug = 0;
             DELETE FROM coefficient_use WHERE rows <= 0;",
        )?;
        let cost_after = cost_by_month(&tx, &mut self.cal, job.from_s)?;
        set_costs(&mut months, &cost_before, &cost_after);
        let out = record(&tx, job, rows, months)?;
        tx.commit()?;
        self.forget();
        Ok(out)
    }
}

fn rewrite(
    tx: &Transaction<'_>,
    cal: &mut super::calendar::Calendar,
    job: &RecomputeJob,
    day: &[OldRow],
    (rollups, coef_ids, months): (&mut Rollups, &mut CoefIds, &mut Months),
) -> Result<u64, StoreError> {
    let mut update = tx.prepare_cached(
        "UPDATE footprint_hourly SET site = ?, zone = ?, facility_uj = ?, pue = ?, pue_coef = ?,
                intensity_g_per_kwh = ?, intensity_coef = ?, intensity_import = ?,
                location_co2e_ug = ?, market_g_per_kwh = ?, market_coef = ?, market_co2e_ug = ?,
                embodied_co2e_ug = ?, embodied_coef = ?
             WHERE hour_s = ? AND host = ? AND project = ? AND component = ? AND source = ?",
    )?;
    let mut intensity = tx.prepare_cached(
        "SELECT g_per_kwh, import_id FROM intensity_hourly WHERE zone = ? AND hour_s = ?",
    )?;
    let mut n = 0u64;
    for group in day.chunk_by(|a, b| a.hour_s == b.hour_s && a.host == b.host) {
        let (hour_s, host) = (group[0].hour_s, group[0].host.as_str());
        let plan = job.plans.plan_at(host, hour_s);
        let imported: Option<(f64, i64)> = intensity
            .query_row(params![plan.zone, hour_s], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let pue = coefficient_id(tx, coef_ids, &plan.pue)?;
        let grid = match imported {
            Some(_) => None,
            None => Some(coefficient_id(tx, coef_ids, &plan.grid_default)?),
        };
        let market = match &plan.market {
            Some(m) => Some(coefficient_id(tx, coef_ids, m)?),
            None => None,
        };
        let embodied = match &plan.embodied {
            Some(e) => Some(coefficient_id(tx, coef_ids, &e.coefficient)?),
            None => None,
        };
        let (day_s, month_s) = cal.of(hour_s);
        for (old, new) in group.iter().zip(host_hour(group, &plan, imported)) {
            update.execute(params![
                new.site,
                new.zone,
                new.facility_uj,
                new.pue,
                pue,
                new.g_per_kwh,
                grid,
                new.import,
                new.location_ug,
                new.market_g_per_kwh,
                market,
                new.market_ug,
                new.embodied_ug,
                embodied,
                old.hour_s,
                old.host,
                old.project,
                old.component,
                old.source
            ])?;
            let (o, s) = (old_sums(old), new_sums(old.energy_uj, &new));
            let keys = [&old.project, &old.component, &old.source];
            rollups.add(
                cal,
                hour_s,
                host,
                keys[0],
                keys[1],
                keys[2],
                &old.site,
                &old.zone,
                delta(o, -1),
            );
            rollups.add(
                cal,
                hour_s,
                host,
                keys[0],
                keys[1],
                keys[2],
                &new.site,
                &new.zone,
                delta(s, 1),
            );
            for c in old.coefs() {
                *rollups.coef_use.entry((day_s, c)).or_default() -= 1;
            }
            for c in [Some(pue), grid, market, embodied].into_iter().flatten() {
                *rollups.coef_use.entry((day_s, c)).or_default() += 1;
            }
            rollups.zone_hours.insert((new.zone.clone(), hour_s));
            rollups.costs.add(
                hour_s,
                &new.site,
                &old.project,
                plan.tariff.as_deref(),
                new.facility_uj,
            );
            count_in_month(months, month_s, old, o, s);
            n += 1;
        }
    }
    Ok(n)
}

fn read_rows(tx: &Transaction<'_>, from_s: i64, to_s: i64) -> Result<Vec<OldRow>, StoreError> {
    let mut st = tx.prepare_cached(
        "SELECT f.hour_s, f.host, f.project, f.component, f.source, f.site, f.zone, f.energy_uj,
            f.facility_uj, f.location_co2e_ug, f.market_co2e_ug, f.embodied_co2e_ug, f.pue_coef,
            f.intensity_coef, f.market_coef, f.embodied_coef, c.value
         FROM footprint_hourly AS f LEFT JOIN coefficients AS c ON c.id = f.embodied_coef
         WHERE f.hour_s >= ? AND f.hour_s < ?
         ORDER BY f.hour_s, f.host, f.project, f.component, f.source",
    )?;
    let rows = st
        .query_map(params![from_s, to_s], |r| {
            Ok(OldRow {
                hour_s: r.get(0)?,
                host: r.get(1)?,
                project: r.get(2)?,
                component: r.get(3)?,
                source: r.get(4)?,
                site: r.get(5)?,
                zone: r.get(6)?,
                energy_uj: r.get(7)?,
                facility_uj: r.get(8)?,
                location_ug: r.get(9)?,
                market_ug: r.get(10)?,
                embodied_ug: r.get(11)?,
                pue_coef: r.get(12)?,
                grid_coef: r.get(13)?,
                market_coef: r.get(14)?,
                embodied_coef: r.get(15)?,
                embodied_g_per_hour: r.get(16)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

fn cost_by_month(
    tx: &Transaction<'_>,
    cal: &mut super::calendar::Calendar,
    from_s: i64,
) -> Result<HashMap<i64, i64>, StoreError> {
    let mut st = tx.prepare_cached(
        "SELECT hour_s, SUM(cost_ueur) FROM cost_hourly WHERE hour_s >= ? GROUP BY hour_s",
    )?;
    let mut out: HashMap<i64, i64> = HashMap::new();
    let rows = st.query_map(params![from_s], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
    })?;
    for r in rows {
        let (h, c) = r?;
        *out.entry(cal.of(h).1).or_default() += c;
    }
    Ok(out)
}

fn record(
    tx: &Transaction<'_>,
    job: &RecomputeJob,
    rows: u64,
    months: Months,
) -> Result<Recomputation, StoreError> {
    let int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    tx.execute(
        "INSERT INTO recomputations (at_ms, from_s, rows) VALUES (?, ?, ?)",
        params![int(job.now_ms), job.from_s, int(rows)],
    )?;
    let id = tx.last_insert_rowid();
    let mut out = Vec::new();
    let mut st = tx.prepare_cached(
        "INSERT INTO recomputed_months (recomputation_id, month_s, rows, before_facility_uj,
            before_location_ug, before_market_ug, before_embodied_ug, before_cost_ueur,
            after_facility_uj, after_location_ug, after_market_ug, after_embodied_ug,
            after_cost_ueur, coefficients_before)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )?;
    for (month_s, (n, before, after, coefs)) in months {
        let ids: Vec<i64> = coefs.into_iter().collect();
        let text = coefficients_text(&ids);
        st.execute(params![
            id,
            month_s,
            int(n),
            before.facility_uj,
            before.location_ug,
            before.market_ug,
            before.embodied_ug,
            before.cost_ueur,
            after.facility_uj,
            after.location_ug,
            after.market_ug,
            after.embodied_ug,
            after.cost_ueur,
            text
        ])?;
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
