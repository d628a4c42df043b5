//! The daily and monthly rollups, the coefficients used per day and the intensity
//! hours used: what a transaction adds to them, summed per key, then written once.

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::{Transaction, params};

use super::calendar::Calendar;

/// Sums of a rollup key (signed: an intensity import can lower emissions).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct RollupDelta {
    pub(super) energy: i64,
    pub(super) facility: i64,
    pub(super) location: i64,
    pub(super) market: i64,
    pub(super) embodied: i64,
}

impl RollupDelta {
    pub(super) fn add(&mut self, o: &RollupDelta) {
        self.energy += o.energy;
        self.facility += o.facility;
        self.location += o.location;
        self.market += o.market;
        self.embodied += o.embodied;
    }
}

/// `(period start, host, project, component, source, site, zone)`.
pub(super) type RollupKey = (i64, String, String, String, String, String, String);

#[derive(Default)]
pub(super) struct Rollups {
    pub(super) daily: BTreeMap<RollupKey, RollupDelta>,
    pub(super) monthly: BTreeMap<RollupKey, RollupDelta>,
    /// `(day_s, coef_id)` → rows added (or removed).
    pub(super) coef_use: BTreeMap<(i64, i64), i64>,
    pub(super) zone_hours: BTreeSet<(String, i64)>,
}

impl Rollups {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn add(
        &mut self,
        cal: &mut Calendar,
        hour_s: i64,
        host: &str,
        project: &str,
        component: &str,
        source: &str,
        site: &str,
        zone: &str,
        d: RollupDelta,
    ) {
        let (day, month) = cal.of(hour_s);
        let key = |p: i64| {
            (
                p,
                host.to_string(),
                project.to_string(),
                component.to_string(),
                source.to_string(),
                site.to_string(),
                zone.to_string(),
            )
        };
        self.daily.entry(key(day)).or_default().add(&d);
        self.monthly.entry(key(month)).or_default().add(&d);
    }

    pub(super) fn write(&self, tx: &Transaction<'_>) -> rusqlite::Result<()> {
        for (table, col, map) in [
            ("footprint_daily", "day_s", &self.daily),
            ("footprint_monthly", "month_s", &self.monthly),
        ] {
            let mut st = tx.prepare_cached(&format!(
                "INSERT INTO {table} ({col}, host, project, component, source, site, zone,
                    energy_uj, facility_uj, location_ug, market_ug, embodied_ug)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                 ON CONFLICT DO UPDATE SET energy_uj = energy_uj + excluded.energy_uj,
                    facility_uj = facility_uj + excluded.facility_uj,
                    location_ug = location_ug + excluded.location_ug,
                    market_ug = market_ug + excluded.market_ug,
                    embodied_ug = embodied_ug + excluded.embodied_ug"
            ))?;
            for ((p, host, project, component, source, site, zone), d) in map {
                st.execute(params![
                    p, host, project, component, source, site, zone, d.energy, d.facility,
                    d.location, d.market, d.embodied
                ])?;
            }
        }
        let mut st = tx.prepare_cached(
            "INSERT INTO coefficient_use (day_s, coef_id, rows) VALUES (?, ?, ?)
             ON CONFLICT DO UPDATE SET rows = rows + excluded.rows",
        )?;
        for ((day, coef), n) in &self.coef_use {
            st.execute(params![day, coef, n])?;
        }
        let mut st =
            tx.prepare_cached("INSERT OR IGNORE INTO zone_hours (zone, hour_s) VALUES (?, ?)")?;
        for (zone, hour) in &self.zone_hours {
            st.execute(params![zone, hour])?;
        }
        Ok(())
    }
}
