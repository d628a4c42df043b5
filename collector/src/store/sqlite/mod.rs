//! The embedded store: one SQLite file in the data directory, in WAL mode with
//! `synchronous = FULL` (a commit survives a power cut, so an acknowledged batch is on
//! disk), schema migrations from `collector/migrations/`.
//!
//! Writes go through one lock: SQLite has one writer at a time anyway, and taking the
//! lock before `BEGIN` avoids a deferred transaction failing to upgrade.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use tokio::sync::Mutex;

use super::{
    AddedPart, AgentRecord, FootprintQuery, HourlyRow, ImportOutcome, IngestOutcome, IngestSet,
    IntensityImport, ProjectInfo, Store, StoreError, StoredCoefficient, Sums, TokenKind,
    TokenRecord,
};
use crate::footprint::{Coefficient, operational_ug};

/// The database file in the data directory.
pub const DB_FILE: &str = "empreinte.db";

pub struct SqliteStore {
    pool: SqlitePool,
    write: Mutex<()>,
    path: PathBuf,
}

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl SqliteStore {
    /// Opens (creating it if needed) the database in `data_dir` and migrates it.
    pub async fn open(data_dir: &Path) -> Result<SqliteStore, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let path = data_dir.join(DB_FILE);
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(SqliteStore {
            pool,
            write: Mutex::new(()),
            path,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Closes the pool (checkpoints the WAL).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

async fn coefficient_id_in(
    conn: &mut sqlx::SqliteConnection,
    c: &Coefficient,
) -> Result<i64, StoreError> {
    sqlx::query(
        "INSERT INTO coefficients (kind, subject, value, unit, source, year, is_default, detail)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
    )
    .bind(c.kind.as_str())
    .bind(&c.subject)
    .bind(c.value)
    .bind(c.unit)
    .bind(&c.source)
    .bind(c.year)
    .bind(c.is_default)
    .bind(&c.detail)
    .execute(&mut *conn)
    .await?;
    let id: i64 = sqlx::query_scalar(
        "SELECT id FROM coefficients WHERE kind = ? AND subject = ? AND value = ? AND unit = ?
         AND source = ? AND year IS ? AND is_default = ? AND detail = ?",
    )
    .bind(c.kind.as_str())
    .bind(&c.subject)
    .bind(c.value)
    .bind(c.unit)
    .bind(&c.source)
    .bind(c.year)
    .bind(c.is_default)
    .bind(&c.detail)
    .fetch_one(&mut *conn)
    .await?;
    Ok(id)
}

fn token_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<TokenRecord, StoreError> {
    let kind: String = row.try_get("kind")?;
    let kind = match kind.as_str() {
        "agent" => TokenKind::Agent,
        "read" => TokenKind::Read,
        other => return Err(StoreError::Invalid(format!("unknown token kind {other:?}"))),
    };
    Ok(TokenRecord {
        id: row.try_get("id")?,
        kind,
        agent_id: row.try_get("agent_id")?,
        secret_sha256: row.try_get("secret_sha256")?,
        note: row.try_get("note")?,
        created_ms: u(row.try_get("created_ms")?),
        revoked_ms: row.try_get::<Option<i64>, _>("revoked_ms")?.map(u),
    })
}

/// SQL for the sums of footprint rows.
const SUMS: &str = "COALESCE(SUM(energy_uj), 0) AS energy_uj,
    CAST(ROUND(COALESCE(SUM(energy_uj * pue), 0)) AS INTEGER) AS facility_energy_uj,
    COALESCE(SUM(CASE WHEN source = 'estimate' THEN 0 ELSE energy_uj END), 0) AS measured_uj,
    COALESCE(SUM(CASE WHEN source = 'estimate' THEN energy_uj ELSE 0 END), 0) AS estimated_uj,
    COALESCE(SUM(location_co2e_ug), 0) AS location_ug,
    COALESCE(SUM(COALESCE(market_co2e_ug, location_co2e_ug)), 0) AS market_ug,
    COALESCE(SUM(embodied_co2e_ug), 0) AS embodied_ug";

fn sums_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<Sums, StoreError> {
    Ok(Sums {
        energy_uj: u(row.try_get("energy_uj")?),
        facility_energy_uj: u(row.try_get("facility_energy_uj")?),
        measured_energy_uj: u(row.try_get("measured_uj")?),
        estimated_energy_uj: u(row.try_get("estimated_uj")?),
        location_co2e_ug: u(row.try_get("location_ug")?),
        market_co2e_ug: u(row.try_get("market_ug")?),
        embodied_co2e_ug: u(row.try_get("embodied_ug")?),
    })
}

#[async_trait]
impl Store for SqliteStore {
    async fn ingest(&self, set: &IngestSet<'_>) -> Result<IngestOutcome, StoreError> {
        let _write = self.write.lock().await;
        let mut tx = self.pool.begin().await?;
        let host = set.agent.agent_id.as_str();
        let plan = set.plan;
        let pue_coef = coefficient_id_in(&mut tx, &plan.pue).await?;
        let grid_coef = coefficient_id_in(&mut tx, &plan.grid_default).await?;
        let market_coef = match &plan.market {
            Some(m) => Some(coefficient_id_in(&mut tx, m).await?),
            None => None,
        };
        let embodied_coef = match &plan.embodied {
            Some(e) => Some(coefficient_id_in(&mut tx, &e.coefficient).await?),
            None => None,
        };
        let mut intensity: HashMap<i64, (f64, Option<i64>)> = HashMap::new();
        let mut outcome = IngestOutcome::default();
        let mut last_end: Option<u64> = None;
        // Batch names first: only new batches count. Their parts are then summed per
        // hourly row, so a backlog of many batches costs one upsert per row it touches.
        type RowKey<'k> = (
            i64,
            &'k str,
            empreinte_shared::Component,
            empreinte_shared::SourceKind,
        );
        let mut rows: std::collections::BTreeMap<RowKey<'_>, (u64, u64)> = Default::default();
        type CounterKey<'k> = (
            &'k str,
            &'k str,
            empreinte_shared::Component,
            empreinte_shared::SourceKind,
        );
        let mut counters: std::collections::BTreeMap<CounterKey<'_>, (u64, u64)> =
            Default::default();
        for (batch, deltas) in &set.batches {
            let energy: u64 = deltas.iter().map(|d| d.energy_uj).sum();
            let inserted = sqlx::query(
                "INSERT INTO batches (agent_id, run_id, seq, start_ms, end_ms, energy_uj, received_ms)
                 VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            )
            .bind(host)
            .bind(&batch.run_id)
            .bind(i(batch.seq))
            .bind(i(batch.start_unix_ms))
            .bind(i(batch.end_unix_ms))
            .bind(i(energy))
            .bind(i(set.now_ms))
            .execute(&mut *tx)
            .await?
            .rows_affected();
            last_end = Some(last_end.unwrap_or(0).max(batch.end_unix_ms));
            if inserted == 0 {
                outcome.ack.duplicates += 1;
                continue;
            }
            outcome.ack.accepted += 1;
            for d in deltas {
                let e = rows
                    .entry((d.hour_s, d.project.as_str(), d.component, d.source))
                    .or_default();
                e.0 += d.energy_uj;
                e.1 += d.embodied_ug;
            }
            for c in &batch.counters {
                let e = counters
                    .entry((
                        batch.run_id.as_str(),
                        c.project.as_str(),
                        c.component,
                        c.source,
                    ))
                    .or_default();
                if batch.end_unix_ms >= e.1 {
                    *e = (c.total_uj, batch.end_unix_ms);
                }
            }
        }
        for ((hour_s, project, component, source), (energy_uj, embodied_ug)) in rows {
            let (g_per_kwh, import_id) = match intensity.get(&hour_s) {
                Some(v) => *v,
                None => {
                    let row = sqlx::query(
                        "SELECT g_per_kwh, import_id FROM intensity_hourly WHERE zone = ? AND hour_s = ?",
                    )
                    .bind(&plan.zone)
                    .bind(hour_s)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let v = match row {
                        Some(row) => (row.try_get("g_per_kwh")?, Some(row.try_get("import_id")?)),
                        None => (plan.grid_default.value, None),
                    };
                    intensity.insert(hour_s, v);
                    v
                }
            };
            let location = operational_ug(energy_uj, plan.pue.value, g_per_kwh);
            let market = plan
                .market
                .as_ref()
                .map(|m| operational_ug(energy_uj, plan.pue.value, m.value));
            sqlx::query(
                "INSERT INTO footprint_hourly (hour_s, host, project, component, source, site, zone,
                    energy_uj, pue, pue_coef, intensity_g_per_kwh, intensity_coef, intensity_import,
                    location_co2e_ug, market_g_per_kwh, market_coef, market_co2e_ug,
                    embodied_co2e_ug, embodied_coef)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                 ON CONFLICT (hour_s, host, project, component, source) DO UPDATE SET
                    energy_uj = energy_uj + excluded.energy_uj,
                    embodied_co2e_ug = embodied_co2e_ug + excluded.embodied_co2e_ug,
                    embodied_coef = COALESCE(embodied_coef, excluded.embodied_coef),
                    location_co2e_ug = CAST(ROUND((energy_uj + excluded.energy_uj) * pue
                        * intensity_g_per_kwh / 3600000.0) AS INTEGER),
                    market_co2e_ug = CASE WHEN market_g_per_kwh IS NULL THEN NULL ELSE
                        CAST(ROUND((energy_uj + excluded.energy_uj) * pue * market_g_per_kwh
                        / 3600000.0) AS INTEGER) END",
            )
            .bind(hour_s)
            .bind(host)
            .bind(project)
            .bind(component.as_str())
            .bind(source.as_str())
            .bind(&plan.site)
            .bind(&plan.zone)
            .bind(i(energy_uj))
            .bind(plan.pue.value)
            .bind(pue_coef)
            .bind(g_per_kwh)
            .bind(if import_id.is_none() { Some(grid_coef) } else { None })
            .bind(import_id)
            .bind(i(location))
            .bind(plan.market.as_ref().map(|m| m.value))
            .bind(market_coef)
            .bind(market.map(i))
            .bind(i(embodied_ug))
            .bind(embodied_coef)
            .execute(&mut *tx)
            .await?;
            outcome.added.push(AddedPart {
                project: project.to_string(),
                component,
                energy_uj,
                location_ug: location,
                market_ug: market,
                embodied_ug,
            });
        }
        for ((run_id, project, component, source), (total_uj, at_ms)) in counters {
            sqlx::query(
                "INSERT INTO run_counters (agent_id, run_id, project, component, source, total_uj, at_ms)
                 VALUES (?, ?, ?, ?, ?, ?, ?)
                 ON CONFLICT (agent_id, run_id, project, component, source) DO UPDATE SET
                    total_uj = excluded.total_uj, at_ms = excluded.at_ms
                 WHERE excluded.at_ms >= at_ms",
            )
            .bind(host)
            .bind(run_id)
            .bind(project)
            .bind(component.as_str())
            .bind(source.as_str())
            .bind(i(total_uj))
            .bind(i(at_ms))
            .execute(&mut *tx)
            .await?;
        }
        // The agent's spool once this push is acknowledged: what it reported, less the
        // batches of this push.
        let waiting = set.spool.batches.saturating_sub(set.batches.len() as u64);
        sqlx::query(
            "INSERT INTO agents (agent_id, hostname, agent_version, first_push_ms, last_push_ms,
                last_batch_end_ms, spool_batches, spool_bytes, spool_oldest_ms, spool_dropped)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (agent_id) DO UPDATE SET hostname = excluded.hostname,
                agent_version = excluded.agent_version, last_push_ms = excluded.last_push_ms,
                last_batch_end_ms = MAX(COALESCE(last_batch_end_ms, 0), COALESCE(excluded.last_batch_end_ms, 0)),
                spool_batches = excluded.spool_batches, spool_bytes = excluded.spool_bytes,
                spool_oldest_ms = excluded.spool_oldest_ms, spool_dropped = excluded.spool_dropped",
        )
        .bind(host)
        .bind(&set.agent.hostname)
        .bind(&set.agent.agent_version)
        .bind(i(set.now_ms))
        .bind(i(set.now_ms))
        .bind(last_end.map(i))
        .bind(i(waiting))
        .bind(i(if waiting == 0 { 0 } else { set.spool.bytes }))
        .bind(if waiting == 0 {
            None
        } else {
            set.spool.oldest_start_unix_ms.map(i)
        })
        .bind(i(set.spool.dropped_batches_total))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(outcome)
    }

    async fn create_token(&self, t: &TokenRecord) -> Result<(), StoreError> {
        let _write = self.write.lock().await;
        sqlx::query(
            "INSERT INTO tokens (id, kind, agent_id, secret_sha256, note, created_ms, revoked_ms)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&t.id)
        .bind(t.kind.as_str())
        .bind(&t.agent_id)
        .bind(&t.secret_sha256)
        .bind(&t.note)
        .bind(i(t.created_ms))
        .bind(t.revoked_ms.map(i))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn find_token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM tokens WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(token_from_row).transpose()
    }

    async fn revoke_token(&self, id: &str, now_ms: u64) -> Result<bool, StoreError> {
        let _write = self.write.lock().await;
        let n = sqlx::query("UPDATE tokens SET revoked_ms = ? WHERE id = ? AND revoked_ms IS NULL")
            .bind(i(now_ms))
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM tokens ORDER BY created_ms, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(token_from_row).collect()
    }

    async fn import_intensity(
        &self,
        import: &IntensityImport,
    ) -> Result<ImportOutcome, StoreError> {
        let _write = self.write.lock().await;
        let mut tx = self.pool.begin().await?;
        let first = import.hours.iter().map(|h| h.0).min().unwrap_or(0);
        let last = import.hours.iter().map(|h| h.0).max().unwrap_or(0);
        let import_id: i64 = sqlx::query_scalar(
            "INSERT INTO intensity_imports (zone, source, kind, file, imported_ms, points, first_s, last_s)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(&import.zone)
        .bind(&import.source)
        .bind(&import.kind)
        .bind(&import.file)
        .bind(i(import.now_ms))
        .bind(i(import.hours.len() as u64))
        .bind(first)
        .bind(last)
        .fetch_one(&mut *tx)
        .await?;
        for (hour_s, g, covered) in &import.hours {
            sqlx::query(
                "INSERT INTO intensity_hourly (zone, hour_s, g_per_kwh, covered, import_id)
                 VALUES (?, ?, ?, ?, ?)
                 ON CONFLICT (zone, hour_s) DO UPDATE SET g_per_kwh = excluded.g_per_kwh,
                    covered = excluded.covered, import_id = excluded.import_id",
            )
            .bind(&import.zone)
            .bind(hour_s)
            .bind(g)
            .bind(covered)
            .bind(import_id)
            .execute(&mut *tx)
            .await?;
        }
        let updated = sqlx::query(
            "UPDATE footprint_hourly SET
                intensity_g_per_kwh = ih.g_per_kwh, intensity_import = ih.import_id,
                intensity_coef = NULL,
                location_co2e_ug = CAST(ROUND(energy_uj * pue * ih.g_per_kwh / 3600000.0) AS INTEGER)
             FROM intensity_hourly AS ih
             WHERE ih.zone = footprint_hourly.zone AND ih.hour_s = footprint_hourly.hour_s
               AND ih.import_id = ?",
        )
        .bind(import_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(ImportOutcome {
            import_id,
            hours: import.hours.len() as u64,
            rows_updated: updated,
        })
    }

    async fn intensity(&self, zone: &str, hour_s: i64) -> Result<Option<f64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT g_per_kwh FROM intensity_hourly WHERE zone = ? AND hour_s = ?",
        )
        .bind(zone)
        .bind(hour_s)
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn footprint(&self, q: &FootprintQuery) -> Result<Vec<(String, Sums)>, StoreError> {
        let col = q.group.column();
        let sql = format!(
            "SELECT {col} AS key, {SUMS} FROM footprint_hourly
             WHERE hour_s >= ? AND hour_s < ? AND (? IS NULL OR project = ?)
               AND (? IS NULL OR host = ?)
             GROUP BY key ORDER BY key"
        );
        let rows = sqlx::query(&sql)
            .bind(q.from_s)
            .bind(q.to_s)
            .bind(&q.project)
            .bind(&q.project)
            .bind(&q.host)
            .bind(&q.host)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("key")?, sums_from_row(row)?)))
            .collect()
    }

    async fn projects(&self) -> Result<Vec<ProjectInfo>, StoreError> {
        let rows = sqlx::query(
            "SELECT project, MIN(hour_s) AS first, MAX(hour_s) AS last, COUNT(DISTINCT host) AS hosts
             FROM footprint_hourly GROUP BY project ORDER BY project",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ProjectInfo {
                    project: row.try_get("project")?,
                    first_hour_s: row.try_get("first")?,
                    last_hour_s: row.try_get("last")?,
                    hosts: u(row.try_get("hosts")?),
                })
            })
            .collect()
    }

    async fn agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM agents ORDER BY agent_id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(AgentRecord {
                    agent_id: row.try_get("agent_id")?,
                    hostname: row.try_get("hostname")?,
                    agent_version: row.try_get("agent_version")?,
                    first_push_ms: u(row.try_get("first_push_ms")?),
                    last_push_ms: u(row.try_get("last_push_ms")?),
                    last_batch_end_ms: row.try_get::<Option<i64>, _>("last_batch_end_ms")?.map(u),
                    spool_batches: u(row.try_get("spool_batches")?),
                    spool_bytes: u(row.try_get("spool_bytes")?),
                    spool_oldest_ms: row.try_get::<Option<i64>, _>("spool_oldest_ms")?.map(u),
                    spool_dropped: u(row.try_get("spool_dropped")?),
                })
            })
            .collect()
    }

    async fn hourly_rows(&self, from_s: i64, to_s: i64) -> Result<Vec<HourlyRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM footprint_hourly WHERE hour_s >= ? AND hour_s < ?
             ORDER BY hour_s, host, project, component, source",
        )
        .bind(from_s)
        .bind(to_s)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(HourlyRow {
                    hour_s: row.try_get("hour_s")?,
                    host: row.try_get("host")?,
                    project: row.try_get("project")?,
                    component: row.try_get("component")?,
                    source: row.try_get("source")?,
                    site: row.try_get("site")?,
                    zone: row.try_get("zone")?,
                    energy_uj: u(row.try_get("energy_uj")?),
                    pue: row.try_get("pue")?,
                    pue_coef: row.try_get("pue_coef")?,
                    intensity_g_per_kwh: row.try_get("intensity_g_per_kwh")?,
                    intensity_coef: row.try_get("intensity_coef")?,
                    intensity_import: row.try_get("intensity_import")?,
                    location_co2e_ug: u(row.try_get("location_co2e_ug")?),
                    market_g_per_kwh: row.try_get("market_g_per_kwh")?,
                    market_coef: row.try_get("market_coef")?,
                    market_co2e_ug: row.try_get::<Option<i64>, _>("market_co2e_ug")?.map(u),
                    embodied_co2e_ug: u(row.try_get("embodied_co2e_ug")?),
                    embodied_coef: row.try_get("embodied_coef")?,
                })
            })
            .collect()
    }

    async fn coefficients_used(
        &self,
        from_s: i64,
        to_s: i64,
    ) -> Result<Vec<StoredCoefficient>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM coefficients WHERE id IN (
                SELECT pue_coef FROM footprint_hourly WHERE hour_s >= ?1 AND hour_s < ?2
                UNION SELECT intensity_coef FROM footprint_hourly WHERE hour_s >= ?1 AND hour_s < ?2
                UNION SELECT market_coef FROM footprint_hourly WHERE hour_s >= ?1 AND hour_s < ?2
                UNION SELECT embodied_coef FROM footprint_hourly WHERE hour_s >= ?1 AND hour_s < ?2)
             ORDER BY kind, subject, id",
        )
        .bind(from_s)
        .bind(to_s)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(StoredCoefficient {
                    id: row.try_get("id")?,
                    kind: row.try_get("kind")?,
                    subject: row.try_get("subject")?,
                    value: row.try_get("value")?,
                    unit: row.try_get("unit")?,
                    source: row.try_get("source")?,
                    year: row.try_get("year")?,
                    is_default: row.try_get("is_default")?,
                    detail: row.try_get("detail")?,
                })
            })
            .collect()
    }

    async fn agent_balance(&self, agent_id: &str) -> Result<(u64, u64), StoreError> {
        let counted: i64 = sqlx::query_scalar(
            "SELECT COALESCE(SUM(total_uj), 0) FROM run_counters WHERE agent_id = ?",
        )
        .bind(agent_id)
        .fetch_one(&self.pool)
        .await?;
        let stored: i64 = sqlx::query_scalar(
            "SELECT COALESCE(SUM(energy_uj), 0) FROM batches WHERE agent_id = ?",
        )
        .bind(agent_id)
        .fetch_one(&self.pool)
        .await?;
        Ok((u(counted), u(stored)))
    }
}
