//! What the store checks and prepares before it serves: the database is the one whose
//! tokens were issued (not a missing or emptied file silently recreated), it is not
//! damaged (`PRAGMA quick_check`, bounded in time), and its rollups are in the time
//! zone asked for (rebuilt from the hourly rows otherwise).

use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::tz::TimeZone;
use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::super::StoreError;
use super::writer::{Calendar, facility_uj};

/// Written in the data directory when the first token is issued: from then on, a
/// missing or empty database is an accident to repair, not a first start.
pub const MARKER_FILE: &str = "empreinte.db.tokens-issued";

/// How to restore, for the messages that refuse to start.
fn restore_hint(db: &Path) -> String {
    format!(
        "to restore: stop the collector, copy the latest backup (made with `empreinte backup`) to {} and start it again",
        db.display()
    )
}

/// Refuses a database that disappeared or was emptied after tokens were issued.
pub fn check_not_lost(data_dir: &Path, db: &Path) -> Result<(), StoreError> {
    let marker = data_dir.join(MARKER_FILE);
    if !marker.exists() {
        return Ok(());
    }
    let size = std::fs::metadata(db).map(|m| m.len());
    let what = match size {
        Err(_) => "is missing",
        Ok(0) => "is empty",
        Ok(_) => return Ok(()),
    };
    Err(StoreError::Integrity {
        path: db.to_path_buf(),
        message: format!(
            "the database {what}, but tokens were issued from it ({} exists): it is not recreated, since every agent would then be refused; {}",
            marker.display(),
            restore_hint(db)
        ),
    })
}

/// Writes the marker (idempotent).
pub fn mark_tokens_issued(data_dir: &Path) -> Result<(), StoreError> {
    let marker = data_dir.join(MARKER_FILE);
    if marker.exists() {
        return Ok(());
    }
    std::fs::write(
        &marker,
        "Tokens were issued from empreinte.db in this directory: the collector refuses to start if that database goes missing or empty.\n",
    )
    .map_err(|source| StoreError::DataDir {
        path: marker,
        source,
    })
}

/// `PRAGMA quick_check`, given at most `budget`: a damaged database is refused; a check
/// that runs out of time is logged and the store opens.
pub fn quick_check(
    conn: &rusqlite::Connection,
    db: &Path,
    budget: Duration,
) -> Result<(), StoreError> {
    let watch = crate::clock::Stopwatch::start();
    let limit = budget.as_secs_f64();
    conn.progress_handler(10_000, Some(move || watch.elapsed_seconds() > limit));
    let result: rusqlite::Result<Vec<String>> = (|| {
        let mut st = conn.prepare("PRAGMA quick_check(20)")?;
        let rows = st.query_map([], |r| r.get::<_, String>(0))?;
        rows.collect()
    })();
    conn.progress_handler(0, None::<fn() -> bool>);
    let damaged = |message: String| StoreError::Integrity {
        path: db.to_path_buf(),
        message: format!("the database is damaged ({message}); {}", restore_hint(db)),
    };
    match result {
        Ok(lines) if lines == ["ok"] => Ok(()),
        Ok(lines) => Err(damaged(lines.join("; "))),
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::OperationInterrupted =>
        {
            tracing::warn!(database = %db.display(), budget_s = limit, "the integrity check did not finish in its time budget; the database was not fully checked");
            Ok(())
        }
        Err(e) => Err(damaged(e.to_string())),
    }
}

/// Maps an error of opening or migrating a database to "damaged" when SQLite says so.
pub fn damaged_or(db: &Path, e: StoreError) -> StoreError {
    let text = e.to_string();
    if text.contains("malformed") || text.contains("not a database") || text.contains("corrupt") {
        StoreError::Integrity {
            path: db.to_path_buf(),
            message: format!("the database is damaged ({text}); {}", restore_hint(db)),
        }
    } else {
        e
    }
}

/// Opens the writer's connection.
pub fn writer_connection(db: &PathBuf) -> Result<rusqlite::Connection, StoreError> {
    let conn = rusqlite::Connection::open(db)?;
    conn.busy_timeout(Duration::from_secs(30))?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;
         PRAGMA cache_size = -16000;",
    )?;
    Ok(conn)
}

/// The time zone of the rollups, if they were built.
pub fn rollup_timezone(conn: &rusqlite::Connection) -> Result<Option<String>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT value FROM store_meta WHERE key = 'rollup_timezone'",
            [],
            |r| r.get(0),
        )
        .optional()?)
}

/// Rebuilds the daily and monthly rollups (and each hourly row's facility energy) from
/// the hourly rows, in `tz`, in one transaction.
pub fn rebuild_rollups(
    conn: &mut rusqlite::Connection,
    tz_name: &str,
    tz: &TimeZone,
) -> Result<u64, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(
        "DELETE FROM footprint_daily; DELETE FROM footprint_monthly; DELETE FROM coefficient_use;",
    )?;
    let mut cal = Calendar::new(tz.clone());
    let mut rows = 0u64;
    {
        let mut select = tx.prepare(
            "SELECT hour_s, host, project, component, source, site, zone, energy_uj, pue,
                location_co2e_ug, COALESCE(market_co2e_ug, location_co2e_ug), embodied_co2e_ug,
                pue_coef, intensity_coef, market_coef, embodied_coef, facility_uj
             FROM footprint_hourly",
        )?;
        let mut fix = tx.prepare(
            "UPDATE footprint_hourly SET facility_uj = ?
             WHERE hour_s = ? AND host = ? AND project = ? AND component = ? AND source = ?",
        )?;
        let mut daily = tx.prepare(
            "INSERT INTO footprint_daily (day_s, host, project, component, source, site, zone,
                energy_uj, facility_uj, location_ug, market_ug, embodied_ug)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT DO UPDATE SET energy_uj = energy_uj + excluded.energy_uj,
                facility_uj = facility_uj + excluded.facility_uj,
                location_ug = location_ug + excluded.location_ug,
                market_ug = market_ug + excluded.market_ug,
                embodied_ug = embodied_ug + excluded.embodied_ug",
        )?;
        let mut monthly = tx.prepare(
            "INSERT INTO footprint_monthly (month_s, host, project, component, source, site, zone,
                energy_uj, facility_uj, location_ug, market_ug, embodied_ug)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT DO UPDATE SET energy_uj = energy_uj + excluded.energy_uj,
                facility_uj = facility_uj + excluded.facility_uj,
                location_ug = location_ug + excluded.location_ug,
                market_ug = market_ug + excluded.market_ug,
                embodied_ug = embodied_ug + excluded.embodied_ug",
        )?;
        let mut uses = tx.prepare(
            "INSERT INTO coefficient_use (day_s, coef_id, rows) VALUES (?, ?, 1)
             ON CONFLICT DO UPDATE SET rows = rows + 1",
        )?;
        let mut q = select.query([])?;
        while let Some(r) = q.next()? {
            let hour_s: i64 = r.get(0)?;
            let key: [String; 6] = [
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
            ];
            let energy: i64 = r.get(7)?;
            let pue: f64 = r.get(8)?;
            let facility = i64::try_from(facility_uj(u64::try_from(energy).unwrap_or(0), pue))
                .map_err(|_| {
                    StoreError::Corrupt("a row's facility energy is past i64::MAX".into())
                })?;
            if facility != r.get::<_, i64>(16)? {
                fix.execute(params![facility, hour_s, key[0], key[1], key[2], key[3]])?;
            }
            let (day, month) = cal.of(hour_s);
            let sums: [i64; 4] = [r.get(9)?, r.get(10)?, r.get(11)?, 0];
            for (st, p) in [(&mut daily, day), (&mut monthly, month)] {
                st.execute(params![
                    p, key[0], key[1], key[2], key[3], key[4], key[5], energy, facility, sums[0],
                    sums[1], sums[2]
                ])?;
            }
            for c in [12, 13, 14, 15] {
                if let Some(id) = r.get::<_, Option<i64>>(c)? {
                    uses.execute(params![day, id])?;
                }
            }
            rows += 1;
        }
    }
    tx.execute(
        "INSERT INTO store_meta (key, value) VALUES ('rollup_timezone', ?)
         ON CONFLICT DO UPDATE SET value = excluded.value",
        params![tz_name],
    )?;
    tx.commit()?;
    Ok(rows)
}
