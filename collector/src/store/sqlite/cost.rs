//! Costs in the SQLite store: what a writer transaction adds (the facility energy of
//! the hourly rows it wrote, per hour, site, project and tariff rate), written in the
//! same transaction as the energy, and the reads of the cost API and `/metrics`.
//! [`CostDeltas`] is the engines' common part: PostgreSQL (`store/pg/costs.rs`) sums a
//! push's additions with it too and writes them in its own dialect.

use std::collections::{BTreeMap, HashMap};

use rusqlite::{Transaction, params};
use sqlx::SqlitePool;

use super::super::cost_rows::{
    self, CostLineRow, HARDWARE_LINES_SQL, HARDWARE_TOTALS_SQL, HardwareRow, HardwareTotalRow,
    LINES_SQL, TOTALS_SQL, TotalRow,
};
use crate::cost::hardware::{HardwareDeltas, HardwareLine, HardwareRate};
use crate::cost::{CostLine, CostTotal, Rate, Tariff, cost_ueur};
use crate::store::StoreError;

/// A transaction's cost additions: `(hour_s, site, project)` → the hour's rate and the
/// facility energy added.
#[derive(Default)]
pub struct CostDeltas {
    map: BTreeMap<(i64, String, String), (Rate, i64)>,
}

impl CostDeltas {
    /// Counts `facility_uj` more of `project` at `site` in the hour `hour_s`, priced by
    /// `tariff` (nothing when the site has no tariff for that hour).
    pub fn add(
        &mut self,
        hour_s: i64,
        site: &str,
        project: &str,
        tariff: Option<&Tariff>,
        facility_uj: i64,
    ) {
        let Some(tariff) = tariff else { return };
        if facility_uj == 0 {
            return;
        }
        let key = (hour_s, site.to_string(), project.to_string());
        if let Some(e) = self.map.get_mut(&key) {
            e.1 += facility_uj;
            return;
        }
        if let Some(mut rate) = tariff.rate_at(hour_s) {
            // The row's own site (a host moved between sites keeps its rows').
            rate.site = site.to_string();
            self.map.insert(key, (rate, facility_uj));
        }
    }

    /// The additions in key order: `(hour_s, site, project)` → (rate, facility µJ).
    pub fn entries(&self) -> impl Iterator<Item = (&(i64, String, String), &(Rate, i64))> {
        self.map.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn write(&self, tx: &Transaction<'_>) -> rusqlite::Result<()> {
        if self.map.is_empty() {
            return Ok(());
        }
        let mut ids: HashMap<&Rate, i64> = HashMap::new();
        let mut insert_tariff = tx.prepare_cached(
            "INSERT INTO tariffs (site, price_ueur_per_kwh, band, valid_from, off_peak_hours, source)
             VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        )?;
        let mut find_tariff = tx.prepare_cached(
            "SELECT id FROM tariffs WHERE site = ? AND price_ueur_per_kwh = ? AND band = ?
                AND valid_from = ? AND off_peak_hours = ? AND source = ?",
        )?;
        let mut upsert = tx.prepare_cached(
            "INSERT INTO cost_hourly (hour_s, site, project, tariff_id, facility_uj, cost_ueur)
             VALUES (?, ?, ?, ?, ?, 0)
             ON CONFLICT DO UPDATE SET facility_uj = facility_uj + excluded.facility_uj
             RETURNING facility_uj",
        )?;
        let mut set_cost = tx.prepare_cached(
            "UPDATE cost_hourly SET cost_ueur = ?
             WHERE hour_s = ? AND site = ? AND project = ? AND tariff_id = ?",
        )?;
        let mut totals = tx.prepare_cached(
            "INSERT INTO cost_totals (site, project, facility_uj, cost_ueur) VALUES (?, ?, ?, ?)
             ON CONFLICT DO UPDATE SET facility_uj = facility_uj + excluded.facility_uj,
                cost_ueur = cost_ueur + excluded.cost_ueur",
        )?;
        for ((hour_s, site, project), (rate, delta)) in &self.map {
            let price = i64::try_from(rate.price_ueur_per_kwh).map_err(|_| overflow())?;
            let id = match ids.get(rate) {
                Some(id) => *id,
                None => {
                    let p = params![
                        rate.site,
                        price,
                        rate.band.as_str(),
                        rate.valid_from,
                        rate.off_peak_hours,
                        rate.source
                    ];
                    insert_tariff.execute(p)?;
                    let id: i64 = find_tariff.query_row(p, |r| r.get(0))?;
                    ids.insert(rate, id);
                    id
                }
            };
            let after: i64 =
                upsert.query_row(params![hour_s, site, project, id, delta], |r| r.get(0))?;
            let after_u = u64::try_from(after).map_err(|_| overflow())?;
            let before_u = u64::try_from(after - delta).map_err(|_| overflow())?;
            let (new, old) = (
                cost_ueur(after_u, rate.price_ueur_per_kwh),
                cost_ueur(before_u, rate.price_ueur_per_kwh),
            );
            let new_i = i64::try_from(new).map_err(|_| overflow())?;
            let old_i = i64::try_from(old).map_err(|_| overflow())?;
            set_cost.execute(params![new_i, hour_s, site, project, id])?;
            totals.execute(params![site, project, delta, new_i - old_i])?;
        }
        Ok(())
    }
}

fn overflow() -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure("a cost or an energy is past i64::MAX".into())
}

/// Every cost line of `[from_s, to_s)` with its tariff rate, ordered by hour.
pub async fn lines(pool: &SqlitePool, from_s: i64, to_s: i64) -> Result<Vec<CostLine>, StoreError> {
    let rows: Vec<CostLineRow> = sqlx::query_as(LINES_SQL)
        .bind(from_s)
        .bind(to_s)
        .fetch_all(pool)
        .await?;
    rows.into_iter().map(CostLine::try_from).collect()
}

/// All-time costs per site and project.
pub async fn totals(pool: &SqlitePool) -> Result<Vec<CostTotal>, StoreError> {
    let rows: Vec<TotalRow> = sqlx::query_as(TOTALS_SQL).fetch_all(pool).await?;
    rows.into_iter().map(cost_rows::total).collect()
}

/// Writes the amortised hardware cost of a group of new batches (in its transaction).
pub fn write_hardware(tx: &Transaction<'_>, deltas: &HardwareDeltas) -> rusqlite::Result<()> {
    if deltas.is_empty() {
        return Ok(());
    }
    let mut insert_rate = tx.prepare_cached(
        "INSERT INTO hardware_rates (host, price_ueur, period_hours, purchased_on, source)
         VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
    )?;
    let mut find_rate = tx.prepare_cached(
        "SELECT id FROM hardware_rates WHERE host = ? AND price_ueur = ? AND period_hours = ?
            AND purchased_on = ? AND source = ?",
    )?;
    let mut hourly = tx.prepare_cached(
        "INSERT INTO hardware_cost_hourly (hour_s, host, project, rate_id, site, cost_ueur)
         VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT DO UPDATE SET cost_ueur = cost_ueur + excluded.cost_ueur",
    )?;
    let mut totals = tx.prepare_cached(
        "INSERT INTO hardware_cost_totals (site, project, cost_ueur) VALUES (?, ?, ?)
         ON CONFLICT DO UPDATE SET cost_ueur = cost_ueur + excluded.cost_ueur",
    )?;
    let mut ids: HashMap<&HardwareRate, i64> = HashMap::new();
    let mut sums: BTreeMap<(&str, &str), i64> = BTreeMap::new();
    for ((hour_s, host, project, rate), (site, ueur)) in deltas.entries() {
        let id = match ids.get(rate) {
            Some(id) => *id,
            None => {
                let p = params![
                    rate.host,
                    i64::try_from(rate.price_ueur).map_err(|_| overflow())?,
                    i64::try_from(rate.period_hours).map_err(|_| overflow())?,
                    rate.purchased_on,
                    rate.source
                ];
                insert_rate.execute(p)?;
                let id: i64 = find_rate.query_row(p, |r| r.get(0))?;
                ids.insert(rate, id);
                id
            }
        };
        let v = i64::try_from(*ueur).map_err(|_| overflow())?;
        hourly.execute(params![hour_s, host, project, id, site, v])?;
        *sums.entry((site, project)).or_default() += v;
    }
    for ((site, project), v) in sums {
        totals.execute(params![site, project, v])?;
    }
    Ok(())
}

/// Every hardware cost line of `[from_s, to_s)` with its rate, ordered by hour.
pub async fn hardware_lines(
    pool: &SqlitePool,
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
pub async fn hardware_totals(pool: &SqlitePool) -> Result<Vec<CostTotal>, StoreError> {
    let rows: Vec<HardwareTotalRow> = sqlx::query_as(HARDWARE_TOTALS_SQL).fetch_all(pool).await?;
    rows.into_iter().map(cost_rows::hardware_total).collect()
}
