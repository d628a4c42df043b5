//! What the two engines' reads of the [`Store`](super::Store) trait have in common: which
//! table answers a period ([`Level`]), the sums' SQL in each dialect (one template), the
//! queries with nothing engine-specific in them, and the pure steps from the rows read
//! back to the trait's answers.
//!
//! Shared by the SQLite (`store/sqlite/mod.rs`) and PostgreSQL (`store/pg/mod.rs`)
//! stores, which keep the same tables and must answer alike: each engine runs its own
//! SQL (placeholders, casts, locks differ) and hands the rows to these functions, so the
//! checks, the choices and the messages are written once.

use jiff::tz::TimeZone;

use super::rows::quantity;
use super::sqlite::writer::day_month;
use super::{Grouping, ProjectInfo, SeriesUse, StoreError};

/// The sums of footprint rows that [`SumsRow`](super::rows::SumsRow) reads: `$cast` turns
/// an engine's `SUM` back into an integer, `$location`, `$market` and `$embodied` are
/// the expressions summed for the emissions (hourly columns, or a rollup's own sums).
macro_rules! sums_sql {
    ($cast:literal, $location:literal, $market:literal, $embodied:literal) => {
        concat!(
            "COALESCE(SUM(energy_uj), 0)",
            $cast,
            " AS energy_uj,
    COALESCE(SUM(facility_uj), 0)",
            $cast,
            " AS facility_energy_uj,
    COALESCE(SUM(CASE WHEN source = 'estimate' THEN 0 ELSE energy_uj END), 0)",
            $cast,
            " AS measured_uj,
    COALESCE(SUM(CASE WHEN source = 'estimate' THEN energy_uj ELSE 0 END), 0)",
            $cast,
            " AS estimated_uj,
    COALESCE(SUM(",
            $location,
            "), 0)",
            $cast,
            " AS location_ug,
    COALESCE(SUM(",
            $market,
            "), 0)",
            $cast,
            " AS market_ug,
    COALESCE(SUM(",
            $embodied,
            "), 0)",
            $cast,
            " AS embodied_ug"
        )
    };
}

/// An engine's SQL for the sums of hourly rows and of rollup rows.
pub(super) struct SumsSql {
    hourly: &'static str,
    rollup: &'static str,
}

/// SQLite: `SUM` of integers is an integer.
pub(super) const SQLITE_SUMS: SumsSql = SumsSql {
    hourly: sums_sql!(
        "",
        "location_co2e_ug",
        "COALESCE(market_co2e_ug, location_co2e_ug)",
        "embodied_co2e_ug"
    ),
    rollup: sums_sql!("", "location_ug", "market_ug", "embodied_ug"),
};

/// PostgreSQL: `SUM` of `BIGINT` is `NUMERIC`, cast back (the stored values are bounded
/// so that a period's sum fits).
pub(super) const PG_SUMS: SumsSql = SumsSql {
    hourly: sums_sql!(
        "::BIGINT",
        "location_co2e_ug",
        "COALESCE(market_co2e_ug, location_co2e_ug)",
        "embodied_co2e_ug"
    ),
    rollup: sums_sql!("::BIGINT", "location_ug", "market_ug", "embodied_ug"),
};

/// Which table answers a period: whole months, whole days, or hours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Level {
    Monthly,
    Daily,
    Hourly,
}

impl Level {
    /// The table that answers `[from_s, to_s)` with rollups kept in `tz`.
    pub(super) fn of(tz: &TimeZone, from_s: i64, to_s: i64) -> Level {
        let (fd, fm) = day_month(tz, from_s);
        let (td, tm) = day_month(tz, to_s);
        if fm == from_s && tm == to_s {
            Level::Monthly
        } else if fd == from_s && td == to_s {
            Level::Daily
        } else {
            Level::Hourly
        }
    }

    /// `(table, period column, sums)` in the dialect of `sums`.
    pub(super) fn sql(self, sums: &SumsSql) -> (&'static str, &'static str, &'static str) {
        match self {
            Level::Monthly => ("footprint_monthly", "month_s", sums.rollup),
            Level::Daily => ("footprint_daily", "day_s", sums.rollup),
            Level::Hourly => ("footprint_hourly", "hour_s", sums.hourly),
        }
    }

    /// The key column and the level of a footprint grouped by `group` over a period the
    /// level `period` answers: hours come from the hourly rows; days from the daily
    /// rollups, or from the hours (keyed by hour) when the period is not whole days.
    pub(super) fn for_group(group: Grouping, period: Level) -> (&'static str, Level) {
        match group {
            Grouping::Hour => (group.column(), Level::Hourly),
            Grouping::Day => match period {
                Level::Hourly => (Grouping::Hour.column(), Level::Hourly),
                _ => (group.column(), Level::Daily),
            },
            _ => (group.column(), period),
        }
    }
}

// The queries below are the same on both engines: their `$n` placeholders are
// PostgreSQL's, and sqlx binds them by number on SQLite too.

/// A period's hourly rows in the primary key's order.
pub(super) const HOURLY_ROWS_SQL: &str =
    "SELECT * FROM footprint_hourly WHERE hour_s >= $1 AND hour_s < $2
             ORDER BY hour_s, host, project, component, source";

/// The first page (`$3` rows) of a period's hourly rows in the primary key's order.
pub(super) const HOURLY_FIRST_PAGE_SQL: &str =
    "SELECT * FROM footprint_hourly WHERE hour_s >= $1 AND hour_s < $2
                 ORDER BY hour_s, host, project, component, source LIMIT $3";

/// The next page (`$8` rows) of a period's hourly rows after the key `($1 … $5)`:
/// keyset pagination on the primary key's order (byte order on both engines).
pub(super) const HOURLY_NEXT_PAGE_SQL: &str = "SELECT * FROM footprint_hourly
                 WHERE (hour_s, host, project, component, source) > ($1, $2, $3, $4, $5)
                   AND hour_s >= $6 AND hour_s < $7
                 ORDER BY hour_s, host, project, component, source LIMIT $8";

/// The coefficients used by the rows of `[$1, $2)`: read from the hourly rows when the
/// period is not whole days, else from the daily counts of `coefficient_use`.
pub(super) fn coefficients_sql(level: Level) -> &'static str {
    if level == Level::Hourly {
        "SELECT * FROM coefficients WHERE id IN (
                SELECT pue_coef FROM footprint_hourly WHERE hour_s >= $1 AND hour_s < $2
                UNION SELECT intensity_coef FROM footprint_hourly WHERE hour_s >= $1 AND hour_s < $2
                UNION SELECT market_coef FROM footprint_hourly WHERE hour_s >= $1 AND hour_s < $2
                UNION SELECT embodied_coef FROM footprint_hourly WHERE hour_s >= $1 AND hour_s < $2)
             ORDER BY kind, subject, id"
    } else {
        "SELECT * FROM coefficients WHERE id IN (
                SELECT coef_id FROM coefficient_use WHERE day_s >= $1 AND day_s < $2
                GROUP BY coef_id HAVING SUM(rows) > 0)
             ORDER BY kind, subject, id"
    }
}

/// The imported intensity series used by the zone hours of `[$1, $2)` ([`SeriesRow`]).
pub(super) const SERIES_USED_SQL: &str =
    "SELECT ih.zone, ih.import_id, COUNT(*), MIN(ih.g_per_kwh), MAX(ih.g_per_kwh)
             FROM intensity_hourly ih JOIN zone_hours z ON z.zone = ih.zone AND z.hour_s = ih.hour_s
             WHERE ih.hour_s >= $1 AND ih.hour_s < $2
             GROUP BY ih.zone, ih.import_id ORDER BY ih.zone, ih.import_id";

/// Every project with its first and last hours and its hosts. First and last hours come
/// from the hourly rows, except where those were compacted
/// (`store_meta.hourly_compacted_before`, a local day's start): there, the start of the
/// project's first day in the daily rollups, or of its last day when none of its hours
/// are left. The same SQL on both engines.
pub(super) const PROJECTS_SQL: &str = "SELECT m.project,
                COALESCE(
                    (SELECT MIN(d.day_s) FROM footprint_daily d WHERE d.project = m.project
                       AND d.day_s < (SELECT CAST(value AS BIGINT) FROM store_meta
                                      WHERE key = 'hourly_compacted_before')),
                    (SELECT MIN(hour_s) FROM footprint_hourly f WHERE f.project = m.project)),
                COALESCE(
                    (SELECT MAX(hour_s) FROM footprint_hourly f WHERE f.project = m.project),
                    (SELECT MAX(d.day_s) FROM footprint_daily d WHERE d.project = m.project)),
                COUNT(DISTINCT m.host)
             FROM footprint_monthly m GROUP BY m.project ORDER BY m.project";

/// A row of [`PROJECTS_SQL`]: project, first hour, last hour, hosts.
pub(super) type ProjectRow = (String, Option<i64>, Option<i64>, i64);

/// A project's row, checked: a project in the monthly rollups has rows below them.
pub(super) fn project_info(
    (project, first, last, hosts): ProjectRow,
) -> Result<ProjectInfo, StoreError> {
    let (Some(first), Some(last)) = (first, last) else {
        return Err(StoreError::Corrupt(format!(
            "project {project:?} has monthly rollups but no daily or hourly rows"
        )));
    };
    Ok(ProjectInfo {
        project,
        first_hour_s: first,
        last_hour_s: last,
        hosts: quantity(hosts, "hosts")?,
    })
}

/// The table and period column of the energy per day: the daily rollups when they are
/// in the time zone asked and the period is whole days, else the hourly rows.
pub(super) fn energy_table(daily: bool) -> (&'static str, &'static str) {
    if daily {
        ("footprint_daily", "day_s")
    } else {
        ("footprint_hourly", "hour_s")
    }
}

/// `(period start, project, energy)` rows, checked.
pub(super) fn energy_by_day(
    rows: Vec<(i64, String, i64)>,
) -> Result<Vec<(i64, String, u64)>, StoreError> {
    rows.into_iter()
        .map(|(s, p, e)| Ok((s, p, quantity(e, "energy_uj")?)))
        .collect()
}

/// A row of the series used: zone, import, hours, lowest and highest intensity.
pub(super) type SeriesRow = (String, i64, i64, f64, f64);

/// An imported series' use, checked.
pub(super) fn series_use(
    (zone, import_id, hours, min, max): SeriesRow,
) -> Result<SeriesUse, StoreError> {
    Ok(SeriesUse {
        zone,
        import_id,
        hours: quantity(hours, "hours")?,
        min_g_per_kwh: min,
        max_g_per_kwh: max,
    })
}

/// An agent's `(counted, stored)` energy from its runs' `(counted_uj, stored_uj)`:
/// summed here, in `u128` (many runs' counters may add up past the engines' integers),
/// and given as `u64::MAX` past it.
pub(super) fn agent_balance(rows: Vec<(i64, i64)>) -> Result<(u64, u64), StoreError> {
    let (counters, runs): (Vec<i64>, Vec<i64>) = rows.into_iter().unzip();
    let sum = |v: Vec<i64>, what: &str| -> Result<u64, StoreError> {
        let mut total: u128 = 0;
        for x in v {
            total += u128::from(quantity(x, what)?);
        }
        Ok(u64::try_from(total).unwrap_or(u64::MAX))
    };
    Ok((
        sum(counters, "runs.counted_uj")?,
        sum(runs, "runs.stored_uj")?,
    ))
}
