//! Writing a group: each hourly row it touches (read or taken from the cache, summed,
//! written once), the rollups' differences, the host hours, the runs with their holes
//! and counters, and the agents' rows.

use std::collections::{BTreeMap, HashMap};

use rusqlite::{CachedStatement, OptionalExtension, Transaction, params};

use super::super::super::runs;
use super::calendar::{Calendar, facility_uj};
use super::coefs::{CoefIds, plan_coefs};
use super::rollups::{RollupDelta, Rollups};
use super::state::{
    CachedRow, Group, HourAdd, HourKey, PlanCoefs, RowCache, overflow, to_i64, to_u64,
};
use crate::footprint::operational_ug;

/// Writes a group: hourly rows and the rollups' deltas, host hours, runs, agents.
/// `written` gets every hourly row as written (for the writer's cache).
pub(super) fn apply(
    tx: &Transaction<'_>,
    cal: &mut Calendar,
    rollups: &mut Rollups,
    g: &Group,
    cache: &RowCache,
    written: &mut Vec<((String, HourKey), CachedRow)>,
    coef_ids: &mut CoefIds,
) -> rusqlite::Result<()> {
    write_hours(tx, cal, rollups, g, (cache, coef_ids), written)?;
    write_host_hours(tx, g)?;
    write_runs(tx, g)?;
    write_agents(tx, g)
}

fn write_hours(
    tx: &Transaction<'_>,
    cal: &mut Calendar,
    rollups: &mut Rollups,
    g: &Group,
    (cache, coef_ids): (&RowCache, &mut CoefIds),
    written: &mut Vec<((String, HourKey), CachedRow)>,
) -> rusqlite::Result<()> {
    let mut select = tx.prepare_cached(
        "SELECT energy_uj, facility_uj, location_co2e_ug, market_co2e_ug, embodied_co2e_ug,
            pue, intensity_g_per_kwh, market_g_per_kwh, site, zone, embodied_coef
         FROM footprint_hourly
         WHERE hour_s = ? AND host = ? AND project = ? AND component = ? AND source = ?",
    )?;
    let mut update = tx.prepare_cached(
        "UPDATE footprint_hourly SET energy_uj = ?, facility_uj = ?, location_co2e_ug = ?,
            market_co2e_ug = ?, embodied_co2e_ug = ?, embodied_coef = ?
         WHERE hour_s = ? AND host = ? AND project = ? AND component = ? AND source = ?",
    )?;
    let mut insert = tx.prepare_cached(
        "INSERT INTO footprint_hourly (hour_s, host, project, component, source, site, zone,
            energy_uj, facility_uj, pue, pue_coef, intensity_g_per_kwh, intensity_coef,
            intensity_import, location_co2e_ug, market_g_per_kwh, market_coef, market_co2e_ug,
            embodied_co2e_ug, embodied_coef)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )?;
    // Pushes of a host with the same plan share it: its coefficients are resolved once.
    let mut plans: HashMap<*const crate::footprint::HostPlan, PlanCoefs> = HashMap::new();
    for plan in &g.plans {
        let c = plan_coefs(tx, coef_ids, plan)?;
        plans.insert(std::sync::Arc::as_ptr(plan), c);
    }
    for (row_key, add) in &g.hours {
        let (host, (hour_s, project, component, source)) = row_key;
        let coefs = match plans.get(&std::sync::Arc::as_ptr(&add.plan)) {
            Some(c) => *c,
            None => {
                let c = plan_coefs(tx, coef_ids, &add.plan)?;
                plans.insert(std::sync::Arc::as_ptr(&add.plan), c);
                c
            }
        };
        let old = match cache.get(row_key) {
            Some(r) => Some(r.clone()),
            None => read_row(&mut select, row_key)?,
        };
        let (day, _) = cal.of(*hour_s);
        let (row, delta) = match old {
            Some(old) => add_to_row(
                &mut update,
                &mut rollups.coef_use,
                day,
                row_key,
                (add, coefs),
                old,
            )?,
            None => insert_row(&mut insert, rollups, day, row_key, (add, coefs))?,
        };
        rollups.add(
            cal,
            *hour_s,
            host,
            project,
            component.as_str(),
            source.as_str(),
            &row.site,
            &row.zone,
            delta,
        );
        let tariff = add.plan.tariff.as_deref();
        rollups
            .costs
            .add(*hour_s, &row.site, project, tariff, delta.facility);
        written.push((row_key.clone(), row));
    }
    Ok(())
}

fn read_row(
    select: &mut CachedStatement<'_>,
    (host, (hour_s, project, component, source)): &(String, HourKey),
) -> rusqlite::Result<Option<CachedRow>> {
    select
        .query_row(
            params![hour_s, host, project, component.as_str(), source.as_str()],
            |r| {
                Ok(CachedRow {
                    energy: r.get(0)?,
                    facility: r.get(1)?,
                    location: r.get(2)?,
                    market: r.get(3)?,
                    embodied: r.get(4)?,
                    pue: r.get(5)?,
                    g: r.get(6)?,
                    market_g: r.get(7)?,
                    site: r.get(8)?,
                    zone: r.get(9)?,
                    emb_coef: r.get(10)?,
                })
            },
        )
        .optional()
}

/// Adds to a stored row: its figures are recomputed from its summed energy with its own
/// coefficients; gives the row as written and its difference for the rollups.
fn add_to_row(
    update: &mut CachedStatement<'_>,
    coef_use: &mut BTreeMap<(i64, i64), i64>,
    day: i64,
    (host, (hour_s, project, component, source)): &(String, HourKey),
    (add, coefs): (&HourAdd, PlanCoefs),
    old: CachedRow,
) -> rusqlite::Result<(CachedRow, RollupDelta)> {
    let (pue, g, mg) = (old.pue, old.g, old.market_g);
    let energy = to_u64(old.energy)?
        .checked_add(add.energy)
        .ok_or_else(|| overflow("an hourly row's energy"))?;
    let facility = to_i64(facility_uj(energy, pue))?;
    let location = to_i64(operational_ug(energy, pue, g))?;
    let market = mg
        .map(|m| to_i64(operational_ug(energy, pue, m)))
        .transpose()?;
    let embodied = to_i64(
        to_u64(old.embodied)?
            .checked_add(add.embodied)
            .ok_or_else(|| overflow("an hourly row's embodied emissions"))?,
    )?;
    let coef = old.emb_coef.or(coefs.embodied);
    if old.emb_coef.is_none() {
        if let Some(c) = coefs.embodied {
            *coef_use.entry((day, c)).or_default() += 1;
        }
    }
    update.execute(params![
        to_i64(energy)?,
        facility,
        location,
        market,
        embodied,
        coef,
        hour_s,
        host,
        project,
        component.as_str(),
        source.as_str()
    ])?;
    let delta = RollupDelta {
        energy: to_i64(add.energy)?,
        facility: facility - old.facility,
        location: location - old.location,
        market: market.unwrap_or(location) - old.market.unwrap_or(old.location),
        embodied: embodied - old.embodied,
    };
    let row = CachedRow {
        energy: to_i64(energy)?,
        facility,
        location,
        market,
        embodied,
        emb_coef: coef,
        ..old
    };
    Ok((row, delta))
}

/// A new row with the push's plan: its coefficients are counted as used that day, its
/// zone's hour as used; gives the row as written and its sums for the rollups.
fn insert_row(
    insert: &mut CachedStatement<'_>,
    rollups: &mut Rollups,
    day: i64,
    (host, (hour_s, project, component, source)): &(String, HourKey),
    (add, coefs): (&HourAdd, PlanCoefs),
) -> rusqlite::Result<(CachedRow, RollupDelta)> {
    let plan = &add.plan;
    let pue = plan.pue.value;
    let facility = to_i64(facility_uj(add.energy, pue))?;
    let location = to_i64(operational_ug(add.energy, pue, add.g_per_kwh))?;
    let market_g = plan.market.as_ref().map(|m| m.value);
    let market = market_g
        .map(|m| to_i64(operational_ug(add.energy, pue, m)))
        .transpose()?;
    let grid_coef = if add.import_id.is_none() {
        Some(coefs.grid)
    } else {
        None
    };
    insert.execute(params![
        hour_s,
        host,
        project,
        component.as_str(),
        source.as_str(),
        plan.site,
        plan.zone,
        to_i64(add.energy)?,
        facility,
        pue,
        coefs.pue,
        add.g_per_kwh,
        grid_coef,
        add.import_id,
        location,
        market_g,
        coefs.market,
        market,
        to_i64(add.embodied)?,
        coefs.embodied,
    ])?;
    for c in [Some(coefs.pue), grid_coef, coefs.market, coefs.embodied]
        .into_iter()
        .flatten()
    {
        *rollups.coef_use.entry((day, c)).or_default() += 1;
    }
    rollups.zone_hours.insert((plan.zone.clone(), *hour_s));
    let delta = RollupDelta {
        energy: to_i64(add.energy)?,
        facility,
        location,
        market: market.unwrap_or(location),
        embodied: to_i64(add.embodied)?,
    };
    let row = CachedRow {
        energy: to_i64(add.energy)?,
        facility,
        location,
        market,
        embodied: to_i64(add.embodied)?,
        pue,
        g: add.g_per_kwh,
        market_g,
        site: plan.site.clone(),
        zone: plan.zone.clone(),
        emb_coef: coefs.embodied,
    };
    Ok((row, delta))
}

fn write_host_hours(tx: &Transaction<'_>, g: &Group) -> rusqlite::Result<()> {
    let mut st = tx.prepare_cached(
        "INSERT INTO host_hours (host, hour_s, energy_uj) VALUES (?, ?, ?)
         ON CONFLICT DO UPDATE SET energy_uj = excluded.energy_uj",
    )?;
    for ((host, hour_s), e) in &g.host_hours {
        st.execute(params![host, hour_s, to_i64(*e)?])?;
    }
    Ok(())
}

/// Each run's row (high-water mark, stored energy, latest counters) and, when they
/// changed, its holes.
fn write_runs(tx: &Transaction<'_>, g: &Group) -> rusqlite::Result<()> {
    let mut st = tx.prepare_cached(
        "INSERT INTO runs (agent_id, run_id, hwm, stored_uj, first_ms, last_ms, counters, counted_uj)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT DO UPDATE SET hwm = excluded.hwm, stored_uj = excluded.stored_uj,
            last_ms = excluded.last_ms, counters = excluded.counters,
            counted_uj = excluded.counted_uj",
    )?;
    let mut del = tx.prepare_cached("DELETE FROM run_holes WHERE agent_id = ? AND run_id = ?")?;
    let mut hole = tx.prepare_cached(
        "INSERT INTO run_holes (agent_id, run_id, from_seq, to_seq) VALUES (?, ?, ?, ?)",
    )?;
    for ((agent, run), r) in &g.runs {
        st.execute(params![
            agent,
            run,
            to_i64(r.seqs.hwm)?,
            to_i64(r.stored_uj)?,
            to_i64(r.first_ms)?,
            to_i64(r.last_ms)?,
            runs::counters_text(&r.counters),
            i64::try_from(runs::counted_uj(&r.counters))
                .map_err(|_| overflow("a run's counters"))?
        ])?;
        if r.holes_changed {
            del.execute(params![agent, run])?;
            for (a, b) in &r.seqs.holes {
                hole.execute(params![agent, run, to_i64(*a)?, to_i64(*b)?])?;
            }
        }
    }
    Ok(())
}

fn write_agents(tx: &Transaction<'_>, g: &Group) -> rusqlite::Result<()> {
    let mut st = tx.prepare_cached(
        "INSERT INTO agents (agent_id, hostname, agent_version, first_push_ms, last_push_ms,
            last_batch_end_ms, spool_batches, spool_bytes, spool_oldest_ms, spool_dropped)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (agent_id) DO UPDATE SET hostname = excluded.hostname,
            agent_version = excluded.agent_version, last_push_ms = excluded.last_push_ms,
            last_batch_end_ms = MAX(COALESCE(last_batch_end_ms, 0), COALESCE(excluded.last_batch_end_ms, 0)),
            spool_batches = excluded.spool_batches, spool_bytes = excluded.spool_bytes,
            spool_oldest_ms = excluded.spool_oldest_ms, spool_dropped = excluded.spool_dropped",
    )?;
    for (agent, a) in &g.agents {
        st.execute(params![
            agent,
            a.hostname,
            a.version,
            to_i64(a.now_ms)?,
            to_i64(a.now_ms)?,
            a.last_end_ms.map(to_i64).transpose()?,
            to_i64(a.waiting)?,
            to_i64(a.bytes)?,
            a.oldest_ms.map(to_i64).transpose()?,
            to_i64(a.dropped)?
        ])?;
    }
    Ok(())
}
