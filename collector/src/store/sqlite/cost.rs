//! Costs in the SQLite store: what a writer transaction adds (the facility energy of
//! the hourly rows it wrote, per hour, site, project and tariff rate), written in the
//! same transaction as the energy, and the reads of the cost API and `/metrics`.
//! [`CostDeltas`] is the engines' common part: PostgreSQL (`store/pg/costs.rs`) sums a
//! push's additions with it too and writes them in its own dialect.

use std::collections::{BTreeMap, HashMap};

use rusqlite::{Transaction, params};
use sqlx::SqlitePool;

use crate::cost::hardware::{HardwareDeltas, HardwareLine, HardwareRate, StoredRate};
use crate::cost::{Band, CostLine, CostTotal, Rate, StoredTariff, Tariff, cost_ueur};
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

type LineRow = (
    i64,
    String,
    String,
    i64,
    i64,
    i64,
    String,
    i64,
    String,
    String,
    String,
);

/// Every cost line of `[from_s, to_s)` with its tariff rate, ordered by hour.
pub async fn lines(pool: &SqlitePool, from_s: i64, to_s: i64) -> Result<Vec<CostLine>, StoreError> {
    let rows: Vec<LineRow> = sqlx::query_as(
        "SELECT c.hour_s, c.site, c.project, c.facility_uj, c.cost_ueur,
                t.id, t.site, t.price_ueur_per_kwh, t.band, t.valid_from,
                t.off_peak_hours || char(9) || t.source
         FROM cost_hourly c JOIN tariffs t ON t.id = c.tariff_id
         WHERE c.hour_s >= ? AND c.hour_s < ?
         ORDER BY c.hour_s, c.site, c.project, t.id",
    )
    .bind(from_s)
    .bind(to_s)
    .fetch_all(pool)
    .await?;
    let u = |v: i64, what: &str| {
        u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("{what} {v} is negative")))
    };
    let mut out = Vec::with_capacity(rows.len());
    for (hour_s, site, project, f, c, id, tsite, price, band, from, rest) in rows {
        let (hours, source) = rest.split_once('\t').unwrap_or((&rest, ""));
        out.push(CostLine {
            hour_s,
            site,
            project,
            facility_uj: u(f, "a cost's facility energy")?,
            cost_ueur: u(c, "a cost")?,
            tariff: StoredTariff {
                id,
                site: tsite,
                price_ueur_per_kwh: u(price, "a price")?,
                band: match band.as_str() {
                    "peak" => Band::Peak,
                    "off_peak" => Band::OffPeak,
                    _ => Band::Flat,
                },
                valid_from: from,
                off_peak_hours: hours.to_string(),
                source: source.to_string(),
            },
        });
    }
    Ok(out)
}

/// All-time costs per site and project.
pub async fn totals(pool: &SqlitePool) -> Result<Vec<CostTotal>, StoreError> {
    let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(
        "SELECT site, project, facility_uj, cost_ueur FROM cost_totals ORDER BY site, project",
    )
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|(site, project, f, c)| {
            Ok(CostTotal {
                site,
                project,
                facility_uj: u64::try_from(f)
                    .map_err(|_| StoreError::Corrupt(format!("facility energy {f}")))?,
                cost_ueur: u64::try_from(c)
                    .map_err(|_| StoreError::Corrupt(format!("cost {c}")))?,
            })
        })
        .collect()
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

type HardwareRow = (
    i64,
    String,
    String,
    String,
    i64,
    i64,
    String,
    i64,
    i64,
    String,
);

/// Every hardware cost line of `[from_s, to_s)` with its rate, ordered by hour.
pub async fn hardware_lines(
    pool: &SqlitePool,
    from_s: i64,
    to_s: i64,
) -> Result<Vec<HardwareLine>, StoreError> {
    let rows: Vec<HardwareRow> = sqlx::query_as(
        "SELECT c.hour_s, c.site, c.host, c.project, c.cost_ueur,
                r.id, r.host, r.price_ueur, r.period_hours, r.purchased_on || char(9) || r.source
         FROM hardware_cost_hourly c JOIN hardware_rates r ON r.id = c.rate_id
         WHERE c.hour_s >= ? AND c.hour_s < ?
         ORDER BY c.hour_s, c.host, c.project, r.id",
    )
    .bind(from_s)
    .bind(to_s)
    .fetch_all(pool)
    .await?;
    let u = |v: i64, what: &str| {
        u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("{what} {v} is negative")))
    };
    let mut out = Vec::with_capacity(rows.len());
    for (hour_s, site, host, project, c, id, rhost, price, hours, rest) in rows {
        let (purchased_on, source) = rest.split_once('\t').unwrap_or((&rest, ""));
        out.push(HardwareLine {
            hour_s,
            site,
            host,
            project,
            cost_ueur: u(c, "a hardware cost")?,
            rate: StoredRate {
                id,
                host: rhost,
                price_ueur: u(price, "a purchase price")?,
                period_hours: u(hours, "an amortisation period")?,
                purchased_on: purchased_on.to_string(),
                source: source.to_string(),
            },
        });
    }
    Ok(out)
}

/// All-time amortised hardware costs per site and project.
pub async fn hardware_totals(pool: &SqlitePool) -> Result<Vec<CostTotal>, StoreError> {
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT site, project, cost_ueur FROM hardware_cost_totals ORDER BY site, project",
    )
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|(site, project, c)| {
            Ok(CostTotal {
                site,
                project,
                facility_uj: 0,
                cost_ueur: u64::try_from(c)
                    .map_err(|_| StoreError::Corrupt(format!("hardware cost {c}")))?,
            })
        })
        .collect()
}
