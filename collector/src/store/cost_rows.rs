//! Cost rows as either engine reads them back (`sqlx::FromRow`) and their checked
//! conversions into the cost API's types: a negative stored amount is
//! [`StoreError::Corrupt`].
//!
//! Shared by the SQLite (`store/sqlite/cost.rs`) and PostgreSQL (`store/pg/costs.rs`)
//! stores: both keep the cost tables of their migration `0005_costs.sql` with the same
//! columns, read as the same Rust types, so the reads of the cost API and `/metrics`
//! give the same lines and the same errors on both. The SQL that selects the rows is
//! each engine's (placeholders differ), but both select the columns named here.

use super::StoreError;
use super::rows::quantity;
use crate::cost::hardware::{HardwareLine, StoredRate};
use crate::cost::{Band, CostLine, CostTotal, StoredTariff};

/// Every cost line of `[$1, $2)` with its tariff ([`CostLineRow`]), the same SQL on both
/// engines (sqlx binds `$n` by number on SQLite too).
pub(super) const LINES_SQL: &str = "SELECT c.hour_s, c.site, c.project, c.facility_uj, c.cost_ueur,
                t.id, t.site AS tariff_site, t.price_ueur_per_kwh, t.band, t.valid_from,
                t.off_peak_hours, t.source
         FROM cost_hourly c JOIN tariffs t ON t.id = c.tariff_id
         WHERE c.hour_s >= $1 AND c.hour_s < $2
         ORDER BY c.hour_s, c.site, c.project, t.id";

/// A `cost_hourly` row joined with its tariff (`t`): the tariff's site as `tariff_site`.
#[derive(sqlx::FromRow)]
pub(super) struct CostLineRow {
    hour_s: i64,
    site: String,
    project: String,
    facility_uj: i64,
    cost_ueur: i64,
    id: i64,
    tariff_site: String,
    price_ueur_per_kwh: i64,
    band: String,
    valid_from: String,
    off_peak_hours: String,
    source: String,
}

impl TryFrom<CostLineRow> for CostLine {
    type Error = StoreError;
    fn try_from(r: CostLineRow) -> Result<CostLine, StoreError> {
        Ok(CostLine {
            hour_s: r.hour_s,
            site: r.site,
            project: r.project,
            facility_uj: quantity(r.facility_uj, "cost_hourly.facility_uj")?,
            cost_ueur: quantity(r.cost_ueur, "cost_hourly.cost_ueur")?,
            tariff: StoredTariff {
                id: r.id,
                site: r.tariff_site,
                price_ueur_per_kwh: quantity(r.price_ueur_per_kwh, "tariffs.price_ueur_per_kwh")?,
                band: match r.band.as_str() {
                    "peak" => Band::Peak,
                    "off_peak" => Band::OffPeak,
                    _ => Band::Flat,
                },
                valid_from: r.valid_from,
                off_peak_hours: r.off_peak_hours,
                source: r.source,
            },
        })
    }
}

/// The all-time costs per site and project; the same SQL on both engines.
pub(super) const TOTALS_SQL: &str =
    "SELECT site, project, facility_uj, cost_ueur FROM cost_totals ORDER BY site, project";

/// A row of [`TOTALS_SQL`]: site, project, facility energy, cost.
pub(super) type TotalRow = (String, String, i64, i64);

/// A site's and project's all-time cost, checked.
pub(super) fn total((site, project, f, c): TotalRow) -> Result<CostTotal, StoreError> {
    Ok(CostTotal {
        site,
        project,
        facility_uj: quantity(f, "cost_totals.facility_uj")?,
        cost_ueur: quantity(c, "cost_totals.cost_ueur")?,
    })
}

/// Every hardware cost line of `[$1, $2)` with its rate ([`HardwareRow`]), the same SQL
/// on both engines.
pub(super) const HARDWARE_LINES_SQL: &str =
    "SELECT c.hour_s, c.site, c.host, c.project, c.cost_ueur, r.id, r.host AS rate_host,
                r.price_ueur, r.period_hours, r.purchased_on, r.source
         FROM hardware_cost_hourly c JOIN hardware_rates r ON r.id = c.rate_id
         WHERE c.hour_s >= $1 AND c.hour_s < $2
         ORDER BY c.hour_s, c.host, c.project, r.id";

/// A `hardware_cost_hourly` row joined with its rate (`r`): the rate's host as
/// `rate_host`.
#[derive(sqlx::FromRow)]
pub(super) struct HardwareRow {
    hour_s: i64,
    site: String,
    host: String,
    project: String,
    cost_ueur: i64,
    id: i64,
    rate_host: String,
    price_ueur: i64,
    period_hours: i64,
    purchased_on: String,
    source: String,
}

impl TryFrom<HardwareRow> for HardwareLine {
    type Error = StoreError;
    fn try_from(r: HardwareRow) -> Result<HardwareLine, StoreError> {
        Ok(HardwareLine {
            hour_s: r.hour_s,
            site: r.site,
            host: r.host,
            project: r.project,
            cost_ueur: quantity(r.cost_ueur, "hardware_cost_hourly.cost_ueur")?,
            rate: StoredRate {
                id: r.id,
                host: r.rate_host,
                price_ueur: quantity(r.price_ueur, "hardware_rates.price_ueur")?,
                period_hours: quantity(r.period_hours, "hardware_rates.period_hours")?,
                purchased_on: r.purchased_on,
                source: r.source,
            },
        })
    }
}

/// The all-time amortised hardware costs per site and project; the same SQL on both
/// engines.
pub(super) const HARDWARE_TOTALS_SQL: &str =
    "SELECT site, project, cost_ueur FROM hardware_cost_totals ORDER BY site, project";

/// A row of [`HARDWARE_TOTALS_SQL`]: site, project, cost.
pub(super) type HardwareTotalRow = (String, String, i64);

/// A site's and project's all-time hardware cost, checked (no facility energy).
pub(super) fn hardware_total(
    (site, project, c): HardwareTotalRow,
) -> Result<CostTotal, StoreError> {
    Ok(CostTotal {
        site,
        project,
        facility_uj: 0,
        cost_ueur: quantity(c, "hardware_cost_totals.cost_ueur")?,
    })
}
