//! What rewrites rows of every host, under the store-wide lock held alone: opening
//! (migrations, the rollups' time zone), intensity imports, compaction; and the rollups'
//! differences every write adds.

use std::collections::{BTreeMap, BTreeSet};

use jiff::tz::TimeZone;
use sqlx::{PgPool, Postgres, Transaction};

use super::super::sqlite::writer::Calendar;
use super::super::{ImportOutcome, IntensityImport, StoreError, StoreOptions};
use super::{PgStore, STORE_LOCK, busy_or, retryable};
use crate::footprint::operational_ug;

/// `(period start, host, project, component, source, site, zone)`.
type RollupKey = (i64, [String; 6]);

/// Differences to add to the daily and monthly rollups, the coefficients used per day
/// and the zones' hours; written in key order (rows other agents also write are locked
/// in one order by every collector).
pub struct Rollups {
    cal: Calendar,
    /// `[energy, facility, location, market, embodied]`.
    daily: BTreeMap<RollupKey, [i64; 5]>,
    monthly: BTreeMap<RollupKey, [i64; 5]>,
    coef_use: BTreeMap<(i64, i64), i64>,
    zone_hours: BTreeSet<(String, i64)>,
    /// The facility energy priced per hour, site, project and tariff rate.
    pub costs: crate::store::sqlite::cost::CostDeltas,
}

impl Rollups {
    pub fn new(tz: &TimeZone) -> Rollups {
        Rollups {
            cal: Calendar::new(tz.clone()),
            daily: BTreeMap::new(),
            monthly: BTreeMap::new(),
            coef_use: BTreeMap::new(),
            zone_hours: BTreeSet::new(),
            costs: Default::default(),
        }
    }

    /// The local day of an hour.
    pub fn day(&mut self, hour_s: i64) -> i64 {
        self.cal.of(hour_s).0
    }

    /// Adds `d` to the day and month of `hour_s` for `[host, project, component, source,
    /// site, zone]`.
    pub fn add(&mut self, hour_s: i64, key: [&str; 6], d: [i64; 5]) {
        let (day, month) = self.cal.of(hour_s);
        let names = key.map(str::to_string);
        for (map, p) in [(&mut self.daily, day), (&mut self.monthly, month)] {
            let e = map.entry((p, names.clone())).or_default();
            for (a, b) in e.iter_mut().zip(d) {
                *a += b;
            }
        }
    }

    pub fn use_coef(&mut self, day: i64, coef: i64, rows: i64) {
        *self.coef_use.entry((day, coef)).or_default() += rows;
    }

    pub fn zone_hour(&mut self, zone: &str, hour_s: i64) {
        self.zone_hours.insert((zone.to_string(), hour_s));
    }

    pub async fn write(&self, tx: &mut Transaction<'_, Postgres>) -> Result<(), StoreError> {
        for (table, col, map) in [
            ("footprint_daily", "day_s", &self.daily),
            ("footprint_monthly", "month_s", &self.monthly),
        ] {
            if map.is_empty() {
                continue;
            }
            let mut cols: [Vec<String>; 6] = Default::default();
            let mut sums: [Vec<i64>; 5] = Default::default();
            let mut periods = Vec::with_capacity(map.len());
            for ((p, names), d) in map {
                periods.push(*p);
                for (c, n) in cols.iter_mut().zip(names) {
                    c.push(n.clone());
                }
                for (s, v) in sums.iter_mut().zip(d) {
                    s.push(*v);
                }
            }
            let [host, project, component, source, site, zone] = &cols;
            let [energy, facility, location, market, embodied] = &sums;
            sqlx::query(&format!(
                "INSERT INTO {table} ({col}, host, project, component, source, site, zone,
                    energy_uj, facility_uj, location_ug, market_ug, embodied_ug)
                 SELECT * FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::TEXT[], $4::TEXT[],
                    $5::TEXT[], $6::TEXT[], $7::TEXT[], $8::BIGINT[], $9::BIGINT[],
                    $10::BIGINT[], $11::BIGINT[], $12::BIGINT[])
                 ON CONFLICT ({col}, host, project, component, source, site, zone) DO UPDATE SET
                    energy_uj = {table}.energy_uj + EXCLUDED.energy_uj,
                    facility_uj = {table}.facility_uj + EXCLUDED.facility_uj,
                    location_ug = {table}.location_ug + EXCLUDED.location_ug,
                    market_ug = {table}.market_ug + EXCLUDED.market_ug,
                    embodied_ug = {table}.embodied_ug + EXCLUDED.embodied_ug"
            ))
            .bind(&periods)
            .bind(host)
            .bind(project)
            .bind(component)
            .bind(source)
            .bind(site)
            .bind(zone)
            .bind(energy)
            .bind(facility)
            .bind(location)
            .bind(market)
            .bind(embodied)
            .execute(&mut **tx)
            .await?;
        }
        if !self.coef_use.is_empty() {
            let mut days = Vec::new();
            let mut ids = Vec::new();
            let mut rows = Vec::new();
            for ((d, c), n) in &self.coef_use {
                days.push(*d);
                ids.push(*c);
                rows.push(*n);
            }
            sqlx::query(
                "INSERT INTO coefficient_use (day_s, coef_id, rows)
                 SELECT * FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::BIGINT[])
                 ON CONFLICT (day_s, coef_id) DO UPDATE SET rows = coefficient_use.rows + EXCLUDED.rows",
            )
            .bind(&days)
            .bind(&ids)
            .bind(&rows)
            .execute(&mut **tx)
            .await?;
        }
        if !self.zone_hours.is_empty() {
            let (zones, hours): (Vec<String>, Vec<i64>) = self.zone_hours.iter().cloned().unzip();
            sqlx::query(
                "INSERT INTO zone_hours (zone, hour_s)
                 SELECT * FROM UNNEST($1::TEXT[], $2::BIGINT[]) ON CONFLICT DO NOTHING",
            )
            .bind(&zones)
            .bind(&hours)
            .execute(&mut **tx)
            .await?;
        }
        super::costs::write(tx, &self.costs).await
    }
}

async fn meta(conn: &PgPool, key: &str) -> Result<Option<String>, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT value FROM store_meta WHERE key = $1")
            .bind(key)
            .fetch_optional(conn)
            .await?,
    )
}

/// Under the open lock: migrations, then the rollups' time zone (rebuilt when it
/// changed, as the SQLite store does). Gives the time zone.
pub async fn prepare(conn: &PgPool, options: &StoreOptions) -> Result<String, StoreError> {
    sqlx::migrate!("./migrations-pg").run(conn).await?;
    let stored_tz = meta(conn, "rollup_timezone").await?;
    let tz_name = options
        .timezone
        .clone()
        .or(stored_tz.clone())
        .unwrap_or_else(|| "UTC".to_string());
    let tz = TimeZone::get(&tz_name)
        .map_err(|e| StoreError::Invalid(format!("time zone {tz_name:?}: {e}")))?;
    if stored_tz.as_deref() == Some(tz_name.as_str()) {
        return Ok(tz_name);
    }
    let compacted: Option<i64> = meta(conn, "hourly_compacted_before")
        .await?
        .and_then(|v| v.parse().ok());
    if let (Some(old), Some(before)) = (&stored_tz, compacted) {
        return Err(StoreError::Invalid(format!(
            "the time zone is now {tz_name} but the rollups are in {old}, and the hourly rows before {} were compacted into {old}'s days: they cannot be rebuilt; set organisation.timezone back to {old}",
            jiff::Timestamp::from_second(before)
                .map(|t| t.to_string())
                .unwrap_or_default()
        )));
    }
    let rows = rebuild_rollups(conn, &tz_name, &tz).await?;
    if stored_tz.is_some() {
        tracing::warn!(timezone = %tz_name, previous = ?stored_tz, rows, "daily and monthly rollups rebuilt for a new time zone");
    }
    Ok(tz_name)
}

/// Rebuilds the daily and monthly rollups and the coefficients used per day from the
/// hourly rows, in `tz`, in one transaction.
async fn rebuild_rollups(conn: &PgPool, tz_name: &str, tz: &TimeZone) -> Result<u64, StoreError> {
    let mut tx = conn.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(STORE_LOCK)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM footprint_daily")
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM footprint_monthly")
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM coefficient_use")
        .execute(&mut *tx)
        .await?;
    let hours: Vec<i64> = sqlx::query_scalar("SELECT DISTINCT hour_s FROM footprint_hourly")
        .fetch_all(&mut *tx)
        .await?;
    let mut cal = Calendar::new(tz.clone());
    let (mut days, mut months) = (Vec::new(), Vec::new());
    for h in &hours {
        let (d, m) = cal.of(*h);
        days.push(d);
        months.push(m);
    }
    let map = "JOIN UNNEST($1::BIGINT[], $2::BIGINT[], $3::BIGINT[]) AS m(hour_s, day_s, month_s)
        ON m.hour_s = f.hour_s";
    for (table, col) in [
        ("footprint_daily", "day_s"),
        ("footprint_monthly", "month_s"),
    ] {
        sqlx::query(&format!(
            "INSERT INTO {table} ({col}, host, project, component, source, site, zone,
                energy_uj, facility_uj, location_ug, market_ug, embodied_ug)
             SELECT m.{col}, f.host, f.project, f.component, f.source, f.site, f.zone,
                SUM(f.energy_uj), SUM(f.facility_uj), SUM(f.location_co2e_ug),
                SUM(COALESCE(f.market_co2e_ug, f.location_co2e_ug)), SUM(f.embodied_co2e_ug)
             FROM footprint_hourly f {map}
             GROUP BY 1, 2, 3, 4, 5, 6, 7"
        ))
        .bind(&hours)
        .bind(&days)
        .bind(&months)
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query(&format!(
        "INSERT INTO coefficient_use (day_s, coef_id, rows)
         SELECT m.day_s, c.id, COUNT(*) FROM footprint_hourly f {map}
         CROSS JOIN LATERAL (VALUES (f.pue_coef), (f.intensity_coef), (f.market_coef),
            (f.embodied_coef)) AS c(id)
         WHERE c.id IS NOT NULL GROUP BY 1, 2"
    ))
    .bind(&hours)
    .bind(&days)
    .bind(&months)
    .execute(&mut *tx)
    .await?;
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM footprint_hourly")
        .fetch_one(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO store_meta (key, value) VALUES ('rollup_timezone', $1)
         ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
    )
    .bind(tz_name)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(u64::try_from(rows).unwrap_or(0))
}

/// Deletes the hourly rows of whole local days before `before_s`, at most `max_days`
/// days (one transaction each); the rollups keep their sums.
pub async fn compact(store: &PgStore, before_s: i64, max_days: usize) -> Result<u64, StoreError> {
    let mut cal = Calendar::new(store.tz.clone());
    let cutoff = cal.of(before_s).0;
    let mut deleted = 0u64;
    for _ in 0..max_days {
        let mut tx = store.pool.begin().await.map_err(busy_or)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(STORE_LOCK)
            .execute(&mut *tx)
            .await?;
        let first: Option<i64> = sqlx::query_scalar("SELECT MIN(hour_s) FROM footprint_hourly")
            .fetch_one(&mut *tx)
            .await?;
        let Some(first) = first.filter(|&f| f < cutoff) else {
            break;
        };
        let (day, _) = cal.of(first);
        let next = cal.of(day + 30 * 3600).0.min(cutoff);
        let n = sqlx::query("DELETE FROM footprint_hourly WHERE hour_s < $1")
            .bind(next)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query(
            "INSERT INTO store_meta (key, value) VALUES ('hourly_compacted_before', $1)
             ON CONFLICT (key) DO UPDATE SET
                value = GREATEST(store_meta.value::BIGINT, EXCLUDED.value::BIGINT)::TEXT",
        )
        .bind(next.to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        deleted += n;
    }
    Ok(deleted)
}

/// Stores an intensity series and gives the rows of the hours it covers its intensity
/// (the rollups follow), alone (the store-wide lock, exclusive).
pub async fn import(
    store: &PgStore,
    import: &IntensityImport,
) -> Result<ImportOutcome, StoreError> {
    let mut tries = 0;
    loop {
        tries += 1;
        match import_once(store, import).await {
            Err(e) if retryable(&e) && tries < 8 => {
                tokio::time::sleep(std::time::Duration::from_millis(10 << tries)).await;
            }
            r => return r,
        }
    }
}

#[derive(sqlx::FromRow)]
struct Covered {
    hour_s: i64,
    host: String,
    project: String,
    component: String,
    source: String,
    site: String,
    zone: String,
    energy_uj: i64,
    pue: f64,
    location_co2e_ug: i64,
    market_co2e_ug: Option<i64>,
    intensity_coef: Option<i64>,
    g_per_kwh: f64,
}

async fn import_once(
    store: &PgStore,
    import: &IntensityImport,
) -> Result<ImportOutcome, StoreError> {
    let to_i64 =
        |v: u64| i64::try_from(v).map_err(|_| StoreError::Invalid(format!("{v} is past i64::MAX")));
    let mut tx = store.pool.begin().await.map_err(busy_or)?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(STORE_LOCK)
        .execute(&mut *tx)
        .await?;
    let first = import.hours.iter().map(|h| h.0).min().unwrap_or(0);
    let last = import.hours.iter().map(|h| h.0).max().unwrap_or(0);
    let import_id: i64 = sqlx::query_scalar(
        "INSERT INTO intensity_imports (zone, source, kind, file, imported_ms, points, first_s, last_s)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
    )
    .bind(&import.zone)
    .bind(&import.source)
    .bind(&import.kind)
    .bind(&import.file)
    .bind(to_i64(import.now_ms)?)
    .bind(to_i64(import.hours.len() as u64)?)
    .bind(first)
    .bind(last)
    .fetch_one(&mut *tx)
    .await?;
    let mut hours = BTreeMap::new();
    for (h, g, c) in &import.hours {
        hours.insert(*h, (*g, *c));
    }
    let (h, (g, c)): (Vec<i64>, (Vec<f64>, Vec<f64>)) = hours.into_iter().unzip();
    sqlx::query(
        "INSERT INTO intensity_hourly (zone, hour_s, g_per_kwh, covered, import_id)
         SELECT $1, u.h, u.g, u.c, $2 FROM UNNEST($3::BIGINT[], $4::FLOAT8[], $5::FLOAT8[]) AS u(h, g, c)
         ON CONFLICT (zone, hour_s) DO UPDATE SET g_per_kwh = EXCLUDED.g_per_kwh,
            covered = EXCLUDED.covered, import_id = EXCLUDED.import_id",
    )
    .bind(&import.zone)
    .bind(import_id)
    .bind(&h)
    .bind(&g)
    .bind(&c)
    .execute(&mut *tx)
    .await?;
    let rows: Vec<Covered> = sqlx::query_as(
        "SELECT f.hour_s, f.host, f.project, f.component, f.source, f.site, f.zone,
            f.energy_uj, f.pue, f.location_co2e_ug, f.market_co2e_ug, f.intensity_coef,
            ih.g_per_kwh
         FROM footprint_hourly AS f JOIN intensity_hourly AS ih
           ON ih.zone = f.zone AND ih.hour_s = f.hour_s
         WHERE ih.import_id = $1",
    )
    .bind(import_id)
    .fetch_all(&mut *tx)
    .await?;
    let mut rollups = Rollups::new(&store.tz);
    let mut upd: (Vec<i64>, [Vec<String>; 4]) = Default::default();
    let (mut gs, mut locs) = (Vec::new(), Vec::new());
    for r in &rows {
        let energy = super::super::rows::quantity(r.energy_uj, "footprint_hourly.energy_uj")?;
        let loc = to_i64(operational_ug(energy, r.pue, r.g_per_kwh))?;
        upd.0.push(r.hour_s);
        for (col, v) in upd
            .1
            .iter_mut()
            .zip([&r.host, &r.project, &r.component, &r.source])
        {
            col.push(v.clone());
        }
        gs.push(r.g_per_kwh);
        locs.push(loc);
        let d = loc - r.location_co2e_ug;
        // Market-based follows the location figure where no contract is set.
        let market = if r.market_co2e_ug.is_none() { d } else { 0 };
        rollups.add(
            r.hour_s,
            [
                &r.host,
                &r.project,
                &r.component,
                &r.source,
                &r.site,
                &r.zone,
            ],
            [0, 0, d, market, 0],
        );
        if let Some(c) = r.intensity_coef {
            let day = rollups.day(r.hour_s);
            rollups.use_coef(day, c, -1);
        }
    }
    if !rows.is_empty() {
        sqlx::query(
            "UPDATE footprint_hourly AS f SET intensity_g_per_kwh = u.g, intensity_import = $1,
                intensity_coef = NULL, location_co2e_ug = u.loc
             FROM UNNEST($2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], $6::TEXT[],
                $7::FLOAT8[], $8::BIGINT[]) AS u(hour_s, host, project, component, source, g, loc)
             WHERE f.hour_s = u.hour_s AND f.host = u.host AND f.project = u.project
               AND f.component = u.component AND f.source = u.source",
        )
        .bind(import_id)
        .bind(&upd.0)
        .bind(&upd.1[0])
        .bind(&upd.1[1])
        .bind(&upd.1[2])
        .bind(&upd.1[3])
        .bind(&gs)
        .bind(&locs)
        .execute(&mut *tx)
        .await?;
    }
    rollups.write(&mut tx).await?;
    tx.commit().await?;
    Ok(ImportOutcome {
        import_id,
        hours: import.hours.len() as u64,
        rows_updated: rows.len() as u64,
    })
}
