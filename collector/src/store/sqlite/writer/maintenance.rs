//! Upkeep outside ingest: compaction of old hourly rows into the daily rollups
//! (retention) and intensity imports (the covered hours' emissions and their rollups).

use rusqlite::{TransactionBehavior, params};

use super::super::super::{ImportOutcome, IntensityImport, StoreError};
use super::fold::Folder;
use super::rollups::{RollupDelta, Rollups};
use super::state::{to_i64, to_u64};
use crate::footprint::operational_ug;

impl Folder {
    /// Deletes the hourly rows of whole local days before `before_s`, at most
    /// `max_days` days; the rollups keep their sums. Gives the rows deleted.
    pub fn compact(&mut self, before_s: i64, max_days: usize) -> Result<u64, StoreError> {
        let cutoff = self.cal.of(before_s).0;
        let mut deleted = 0u64;
        for _ in 0..max_days {
            let first: Option<i64> =
                self.conn
                    .query_row("SELECT MIN(hour_s) FROM footprint_hourly", [], |r| r.get(0))?;
            let Some(first) = first.filter(|&f| f < cutoff) else {
                break;
            };
            let (day, _) = self.cal.of(first);
            let next = self.cal.of(day + 30 * 3600).0.min(cutoff);
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            let n = tx.execute(
                "DELETE FROM footprint_hourly WHERE hour_s < ?",
                params![next],
            )?;
            tx.execute(
                "INSERT INTO store_meta (key, value) VALUES ('hourly_compacted_before', ?)
                 ON CONFLICT DO UPDATE SET value = MAX(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER))",
                params![next.to_string()],
            )?;
            tx.commit()?;
            deleted += n as u64;
        }
        Ok(deleted)
    }

    /// A bounded step of retention after a commit, at most once an hour.
    pub(super) fn retain(&mut self) {
        let Some(keep_s) = self.retention_s else {
            return;
        };
        let now_s = i64::try_from(crate::clock::now_unix_ms() / 1000).unwrap_or(i64::MAX);
        if now_s - self.last_retention_s < 3600 {
            return;
        }
        self.last_retention_s = now_s;
        match self.compact(now_s.saturating_sub(keep_s), 7) {
            Ok(0) => {}
            Ok(rows) => tracing::info!(
                rows,
                "hourly rows past the retention horizon compacted into the daily rollups"
            ),
            Err(e) => tracing::warn!(error = %e, "cannot compact old hourly rows"),
        }
        self.forget();
    }

    pub(super) fn import(&mut self, import: &IntensityImport) -> Result<ImportOutcome, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let first = import.hours.iter().map(|h| h.0).min().unwrap_or(0);
        let last = import.hours.iter().map(|h| h.0).max().unwrap_or(0);
        tx.execute(
            "INSERT INTO intensity_imports (zone, source, kind, file, imported_ms, points, first_s, last_s)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            params![
                import.zone,
                import.source,
                import.kind,
                import.file,
                to_i64(import.now_ms)?,
                to_i64(import.hours.len() as u64)?,
                first,
                last
            ],
        )?;
        let import_id = tx.last_insert_rowid();
        {
            let mut st = tx.prepare_cached(
                "INSERT INTO intensity_hourly (zone, hour_s, g_per_kwh, covered, import_id)
                 VALUES (?, ?, ?, ?, ?)
                 ON CONFLICT (zone, hour_s) DO UPDATE SET g_per_kwh = excluded.g_per_kwh,
                    covered = excluded.covered, import_id = excluded.import_id",
            )?;
            for (hour_s, g, covered) in &import.hours {
                st.execute(params![import.zone, hour_s, g, covered, import_id])?;
            }
        }
        // The rows of the covered hours get the series' intensity; the rollups follow.
        let mut rollups = Rollups::default();
        let mut updated = 0u64;
        {
            let mut select = tx.prepare(
                "SELECT f.hour_s, f.host, f.project, f.component, f.source, f.site, f.zone,
                    f.energy_uj, f.pue, f.location_co2e_ug, f.market_co2e_ug, f.intensity_coef,
                    ih.g_per_kwh
                 FROM footprint_hourly AS f JOIN intensity_hourly AS ih
                   ON ih.zone = f.zone AND ih.hour_s = f.hour_s
                 WHERE ih.import_id = ?",
            )?;
            let mut update = tx.prepare_cached(
                "UPDATE footprint_hourly SET intensity_g_per_kwh = ?, intensity_import = ?,
                    intensity_coef = NULL, location_co2e_ug = ?
                 WHERE hour_s = ? AND host = ? AND project = ? AND component = ? AND source = ?",
            )?;
            let mut rows = select.query(params![import_id])?;
            while let Some(r) = rows.next()? {
                let hour_s: i64 = r.get(0)?;
                let (host, project, component, source, site, zone): (
                    String,
                    String,
                    String,
                    String,
                    String,
                    String,
                ) = (
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                );
                let energy = to_u64(r.get(7)?)?;
                let pue: f64 = r.get(8)?;
                let old_loc: i64 = r.get(9)?;
                let market: Option<i64> = r.get(10)?;
                let old_coef: Option<i64> = r.get(11)?;
                let g: f64 = r.get(12)?;
                let loc = to_i64(operational_ug(energy, pue, g))?;
                update.execute(params![
                    g, import_id, loc, hour_s, host, project, component, source
                ])?;
                updated += 1;
                let delta = RollupDelta {
                    location: loc - old_loc,
                    // Market-based follows the location figure where no contract is set.
                    market: if market.is_none() { loc - old_loc } else { 0 },
                    ..RollupDelta::default()
                };
                rollups.add(
                    &mut self.cal,
                    hour_s,
                    &host,
                    &project,
                    &component,
                    &source,
                    &site,
                    &zone,
                    delta,
                );
                if let Some(c) = old_coef {
                    let (day, _) = self.cal.of(hour_s);
                    *rollups.coef_use.entry((day, c)).or_default() -= 1;
                }
            }
        }
        rollups.write(&tx)?;
        tx.commit()?;
        Ok(ImportOutcome {
            import_id,
            hours: import.hours.len() as u64,
            rows_updated: updated,
        })
    }
}
