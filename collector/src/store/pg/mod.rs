//! The PostgreSQL store: the same tables and the same behaviour as the embedded SQLite
//! store, in a database that several collectors share (any collector takes any push).
//! Most of this file is the `Store` trait's impl, one short method per read; the
//! engine's parts (ingest, stage, hours, inference, copy, maintenance) are in files of
//! their own.
//!
//! - Migrations from `collector/migrations-pg/`, run under sqlx's advisory lock and our
//!   own ([`OPEN_LOCK`]), so collectors started at once make one schema.
//! - A push is one transaction ([`ingest`]) under two advisory transaction locks: the
//!   store-wide lock, shared (an intensity import or a compaction takes it alone), and
//!   the agent's lock, so two collectors never decide at once whether a batch of the same
//!   agent is new. A batch is stored once across all collectors; the acknowledgement is
//!   sent after the commit; serialization failures and deadlocks are retried.
//! - Reads are the SQLite store's queries: the same text where the dialects agree
//!   (`store/reads.rs`), PostgreSQL's own where they do not (sums cast back to
//!   `BIGINT`); names sort byte by byte (`COLLATE "C"`). The rows read back and their
//!   checks are the engines' common ones (`store/rows.rs`).
//!
//! Per-collector state: nothing but a cache of coefficient ids (rows never deleted or
//! changed once committed) and the time of the last retention step.
//!
//! Kept whole like the SQLite store's `mod.rs`, so the two engines' readings of each
//! query sit side by side file for file; the writes live in `ingest.rs`, `hours.rs`,
//! `maintain.rs` and the capability files.

pub mod copy;
mod costs;
mod history;
mod hours;
mod inference;
mod ingest;
mod maintain;
mod stage;

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

use async_trait::async_trait;
use jiff::tz::TimeZone;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};

use super::reads::{self, Level, PG_SUMS, PROJECTS_SQL, ProjectRow, SeriesRow};
use super::rows::{AgentRow, CoefficientRow, HourlyDbRow, KeyedSums, LineRow, TokenRow, stored};
use super::{
    AgentRecord, AggregateLine, FootprintQuery, HourlyRow, ImportOutcome, IngestOutcome, IngestSet,
    IntensityImport, ProjectInfo, RowKey, SeriesUse, Store, StoreError, StoreOptions,
    StoredCoefficient, Sums, TokenRecord,
};

/// Session advisory lock held while a collector opens the store (migrations, the rollups'
/// time zone): collectors started at once open one after the other.
const OPEN_LOCK: i64 = 0x656d_7072_0001;
/// Transaction advisory lock: shared by every push, exclusive for an intensity import or
/// a compaction (which rewrite rows of every host).
const STORE_LOCK: i64 = 0x656d_7072_0002;
/// The key space of the per-agent transaction locks (`pg_advisory_xact_lock(int, int)`).
const AGENT_LOCK_SPACE: i32 = 0x656d_7072;

/// The most connections one collector opens (each push holds one for its transaction).
pub const MAX_CONNECTIONS: u32 = 16;

pub struct PgStore {
    pool: PgPool,
    tz: TimeZone,
    tz_name: String,
    max_hour_uj: u64,
    /// Coefficient ids committed (a coefficient row is never changed nor deleted).
    coef_ids: std::sync::Mutex<HashMap<String, i64>>,
    retention_s: Option<i64>,
    last_retention_s: AtomicI64,
}

/// Is `url` a PostgreSQL URL (`postgres://` or `postgresql://`)?
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// `url` with its password replaced by `***`: what may be shown or logged.
pub fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "(a URL that does not parse)".to_string(),
    }
}

fn connect_options(url: &str) -> Result<PgConnectOptions, StoreError> {
    if !is_postgres_url(url) {
        return Err(StoreError::Invalid(format!(
            "{} is not a PostgreSQL URL: expected postgres://USER:PASSWORD@HOST/DATABASE",
            redacted(url)
        )));
    }
    // The parser's errors name the part that is wrong, never the password.
    let options = PgConnectOptions::from_str(url).map_err(|e| {
        StoreError::Invalid(format!(
            "the database URL {} is invalid: {e}",
            redacted(url)
        ))
    })?;
    Ok(options
        .application_name("empreinte-collector")
        .log_statements(tracing::log::LevelFilter::Trace)
        .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(5)))
}

impl PgStore {
    /// Connects to the database at `url`, brings its schema up to date (one collector at
    /// a time) and rebuilds the rollups if their time zone changed.
    pub async fn open(url: &str, options: &StoreOptions) -> Result<PgStore, StoreError> {
        let connect = connect_options(url)?;
        let tz_name = {
            // One session (a pool of one connection) holds the open lock while the
            // schema is brought up to date; closing it releases the lock, also when
            // preparing failed.
            let session = PgPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(Duration::from_secs(600))
                .connect_with(connect.clone())
                .await?;
            let r = async {
                sqlx::query("SELECT pg_advisory_lock($1)")
                    .bind(OPEN_LOCK)
                    .execute(&session)
                    .await?;
                maintain::prepare(&session, options).await
            }
            .await;
            session.close().await;
            r?
        };
        let tz = TimeZone::get(&tz_name)
            .map_err(|e| StoreError::Invalid(format!("time zone {tz_name:?}: {e}")))?;
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(connect)
            .await?;
        let max = options.max_host_power_watts * 3.6e9;
        Ok(PgStore {
            pool,
            tz,
            tz_name,
            max_hour_uj: if max.is_finite() && max > 0.0 && max < 9.0e18 {
                max as u64
            } else {
                i64::MAX as u64
            },
            coef_ids: std::sync::Mutex::new(HashMap::new()),
            retention_s: options
                .hourly_retention
                .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
            last_retention_s: AtomicI64::new(0),
        })
    }

    /// The connection pool (for `empreinte db migrate`).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Compacts the hourly rows of the local days before `before_s` (see
    /// [`StoreOptions::hourly_retention`]); gives the rows deleted.
    pub async fn compact_hourly(&self, before_s: i64) -> Result<u64, StoreError> {
        maintain::compact(self, before_s, usize::MAX).await
    }

    fn level(&self, from_s: i64, to_s: i64) -> Level {
        Level::of(&self.tz, from_s, to_s)
    }
}

/// A database error worth trying the whole transaction again for: a serialization
/// failure or a deadlock (another collector's transaction won).
fn retryable(e: &StoreError) -> bool {
    match e {
        StoreError::Database(sqlx::Error::Database(d)) => {
            matches!(d.code().as_deref(), Some("40001") | Some("40P01"))
        }
        _ => false,
    }
}

/// A pool that had no free connection for its timeout: the database is busy.
fn busy_or(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::PoolTimedOut => StoreError::Busy { retry_after_s: 1 },
        e => StoreError::Database(e),
    }
}

#[async_trait]
impl Store for PgStore {
    async fn ingest(&self, set: &IngestSet<'_>) -> Result<IngestOutcome, StoreError> {
        ingest::ingest(self, set).await
    }

    async fn create_token(&self, t: &TokenRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO tokens (id, kind, agent_id, secret_sha256, note, created_ms, revoked_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&t.id)
        .bind(t.kind.as_str())
        .bind(&t.agent_id)
        .bind(&t.secret_sha256)
        .bind(&t.note)
        .bind(stored(t.created_ms, "created_ms")?)
        .bind(t.revoked_ms.map(|v| stored(v, "revoked_ms")).transpose()?)
        .execute(&self.pool)
        .await
        .map_err(busy_or)?;
        Ok(())
    }

    async fn find_token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        let row: Option<TokenRow> = sqlx::query_as("SELECT * FROM tokens WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(busy_or)?;
        row.map(TokenRecord::try_from).transpose()
    }

    async fn revoke_token(&self, id: &str, now_ms: u64) -> Result<bool, StoreError> {
        let n =
            sqlx::query("UPDATE tokens SET revoked_ms = $1 WHERE id = $2 AND revoked_ms IS NULL")
                .bind(stored(now_ms, "revoked_ms")?)
                .bind(id)
                .execute(&self.pool)
                .await
                .map_err(busy_or)?
                .rows_affected();
        Ok(n > 0)
    }

    async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let rows: Vec<TokenRow> = sqlx::query_as("SELECT * FROM tokens ORDER BY created_ms, id")
            .fetch_all(&self.pool)
            .await
            .map_err(busy_or)?;
        rows.into_iter().map(TokenRecord::try_from).collect()
    }

    async fn import_intensity(
        &self,
        import: &IntensityImport,
    ) -> Result<ImportOutcome, StoreError> {
        maintain::import(self, import).await
    }

    async fn intensity(&self, zone: &str, hour_s: i64) -> Result<Option<f64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT g_per_kwh FROM intensity_hourly WHERE zone = $1 AND hour_s = $2",
        )
        .bind(zone)
        .bind(hour_s)
        .fetch_optional(&self.pool)
        .await
        .map_err(busy_or)?)
    }

    fn rollup_timezone(&self) -> &str {
        &self.tz_name
    }

    async fn footprint(&self, q: &FootprintQuery) -> Result<Vec<(String, Sums)>, StoreError> {
        let (col, level) = Level::for_group(q.group, self.level(q.from_s, q.to_s));
        let (table, period, sums) = level.sql(&PG_SUMS);
        let sql = format!(
            "SELECT {col} AS key, {sums} FROM {table}
             WHERE {period} >= $1 AND {period} < $2 AND ($3::TEXT IS NULL OR project = $3)
               AND ($4::TEXT IS NULL OR host = $4)
             GROUP BY 1 ORDER BY 1"
        );
        let rows: Vec<KeyedSums> = sqlx::query_as(&sql)
            .bind(q.from_s)
            .bind(q.to_s)
            .bind(&q.project)
            .bind(&q.host)
            .fetch_all(&self.pool)
            .await
            .map_err(busy_or)?;
        rows.into_iter().map(KeyedSums::checked).collect()
    }

    async fn projects(&self) -> Result<Vec<ProjectInfo>, StoreError> {
        let rows: Vec<ProjectRow> = sqlx::query_as(PROJECTS_SQL)
            .fetch_all(&self.pool)
            .await
            .map_err(busy_or)?;
        rows.into_iter().map(reads::project_info).collect()
    }

    async fn agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        let rows: Vec<AgentRow> = sqlx::query_as("SELECT * FROM agents ORDER BY agent_id")
            .fetch_all(&self.pool)
            .await
            .map_err(busy_or)?;
        rows.into_iter().map(AgentRecord::try_from).collect()
    }

    async fn hourly_rows(&self, from_s: i64, to_s: i64) -> Result<Vec<HourlyRow>, StoreError> {
        let rows: Vec<HourlyDbRow> = sqlx::query_as(reads::HOURLY_ROWS_SQL)
            .bind(from_s)
            .bind(to_s)
            .fetch_all(&self.pool)
            .await
            .map_err(busy_or)?;
        rows.into_iter().map(HourlyRow::try_from).collect()
    }

    async fn hourly_rows_after(
        &self,
        from_s: i64,
        to_s: i64,
        after: Option<&RowKey>,
        limit: u32,
    ) -> Result<Vec<HourlyRow>, StoreError> {
        // Keyset pagination on the primary key's order (byte order: COLLATE "C").
        let rows: Vec<HourlyDbRow> = match after {
            None => sqlx::query_as(reads::HOURLY_FIRST_PAGE_SQL)
                .bind(from_s)
                .bind(to_s)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
                .map_err(busy_or)?,
            Some((h, host, project, component, source)) => {
                sqlx::query_as(reads::HOURLY_NEXT_PAGE_SQL)
                    .bind(h)
                    .bind(host)
                    .bind(project)
                    .bind(component)
                    .bind(source)
                    .bind(from_s)
                    .bind(to_s)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(busy_or)?
            }
        };
        rows.into_iter().map(HourlyRow::try_from).collect()
    }

    async fn coefficients_used(
        &self,
        from_s: i64,
        to_s: i64,
    ) -> Result<Vec<StoredCoefficient>, StoreError> {
        let sql = reads::coefficients_sql(self.level(from_s, to_s));
        let rows: Vec<CoefficientRow> = sqlx::query_as(sql)
            .bind(from_s)
            .bind(to_s)
            .fetch_all(&self.pool)
            .await
            .map_err(busy_or)?;
        Ok(rows.into_iter().map(StoredCoefficient::from).collect())
    }

    async fn lines(&self, from_s: i64, to_s: i64) -> Result<Vec<AggregateLine>, StoreError> {
        let (table, period, sums) = self.level(from_s, to_s).sql(&PG_SUMS);
        let sql = format!(
            "SELECT host, project, component, source, site, zone, {sums} FROM {table}
             WHERE {period} >= $1 AND {period} < $2
             GROUP BY host, project, component, source, site, zone
             ORDER BY host, project, component, source, site, zone"
        );
        let rows: Vec<LineRow> = sqlx::query_as(&sql)
            .bind(from_s)
            .bind(to_s)
            .fetch_all(&self.pool)
            .await
            .map_err(busy_or)?;
        rows.into_iter().map(AggregateLine::try_from).collect()
    }

    async fn energy_by_day(
        &self,
        from_s: i64,
        to_s: i64,
        timezone: &str,
    ) -> Result<Vec<(i64, String, u64)>, StoreError> {
        let daily = timezone == self.tz_name && self.level(from_s, to_s) != Level::Hourly;
        let (table, period) = reads::energy_table(daily);
        let rows: Vec<(i64, String, i64)> = sqlx::query_as(&format!(
            "SELECT {period}, project, SUM(energy_uj)::BIGINT FROM {table}
             WHERE {period} >= $1 AND {period} < $2 GROUP BY {period}, project ORDER BY {period}, project"
        ))
        .bind(from_s)
        .bind(to_s)
        .fetch_all(&self.pool)
        .await
        .map_err(busy_or)?;
        reads::energy_by_day(rows)
    }

    async fn series_used(&self, from_s: i64, to_s: i64) -> Result<Vec<SeriesUse>, StoreError> {
        let rows: Vec<SeriesRow> = sqlx::query_as(reads::SERIES_USED_SQL)
            .bind(from_s)
            .bind(to_s)
            .fetch_all(&self.pool)
            .await
            .map_err(busy_or)?;
        rows.into_iter().map(reads::series_use).collect()
    }

    async fn plan_history(&self) -> Result<Vec<crate::history::PlanRecord>, StoreError> {
        history::plan_history(self).await
    }

    async fn record_plan(&self, from_s: i64, plan: &str, now_ms: u64) -> Result<(), StoreError> {
        history::record_plan(self, from_s, plan, now_ms).await
    }

    async fn recompute(
        &self,
        job: &crate::history::RecomputeJob,
    ) -> Result<crate::history::Recomputation, StoreError> {
        history::recompute(self, job).await
    }

    async fn recomputations(
        &self,
        from_s: i64,
        to_s: i64,
    ) -> Result<Vec<crate::history::Recomputation>, StoreError> {
        history::recomputations(self, from_s, to_s).await
    }

    async fn agent_balance(&self, agent_id: &str) -> Result<(u64, u64), StoreError> {
        let rows: Vec<(i64, i64)> =
            sqlx::query_as("SELECT counted_uj, stored_uj FROM runs WHERE agent_id = $1")
                .bind(agent_id)
                .fetch_all(&self.pool)
                .await
                .map_err(busy_or)?;
        reads::agent_balance(rows)
    }

    fn engine(&self) -> super::Engine {
        super::Engine::Postgresql
    }

    fn cost_reads(&self) -> Option<&dyn super::CostReads> {
        Some(self)
    }

    fn inference_reads(&self) -> Option<&dyn super::InferenceReads> {
        Some(self)
    }
}

#[async_trait]
impl super::CostReads for PgStore {
    async fn costs(
        &self,
        from_s: i64,
        to_s: i64,
    ) -> Result<Vec<crate::cost::CostLine>, StoreError> {
        costs::lines(&self.pool, from_s, to_s).await
    }

    async fn cost_totals(&self) -> Result<Vec<crate::cost::CostTotal>, StoreError> {
        costs::totals(&self.pool).await
    }

    async fn hardware_costs(
        &self,
        from_s: i64,
        to_s: i64,
    ) -> Result<Vec<crate::cost::hardware::HardwareLine>, StoreError> {
        costs::hardware_lines(&self.pool, from_s, to_s).await
    }

    async fn hardware_cost_totals(&self) -> Result<Vec<crate::cost::CostTotal>, StoreError> {
        costs::hardware_totals(&self.pool).await
    }
}

#[async_trait]
impl super::InferenceReads for PgStore {
    async fn inference_units(
        &self,
        from_s: i64,
        to_s: i64,
    ) -> Result<Vec<crate::inference::InferenceUnit>, StoreError> {
        inference::units(&self.pool, from_s, to_s).await
    }

    async fn inference_totals(&self) -> Result<Vec<crate::inference::InferenceTotal>, StoreError> {
        inference::totals(&self.pool).await
    }
}

/// A PostgreSQL URL from the configuration or the command line: its password is never
/// shown (`Debug`, `Display` and serialization give it as `***`).
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// The URL, password included: only for connecting.
    pub fn secret(&self) -> &str {
        &self.0
    }
}

impl FromStr for DatabaseUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<DatabaseUrl, String> {
        if !is_postgres_url(s) {
            return Err(format!(
                "{} is not a PostgreSQL URL: expected postgres://USER:PASSWORD@HOST[:PORT]/DATABASE (SQLite, the default, needs no URL)",
                redacted(s)
            ));
        }
        PgConnectOptions::from_str(s)
            .map_err(|e| format!("the database URL {} is invalid: {e}", redacted(s)))?;
        Ok(DatabaseUrl(s.to_string()))
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DatabaseUrl({})", redacted(&self.0))
    }
}

impl std::fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redacted(&self.0))
    }
}

impl serde::Serialize for DatabaseUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&redacted(&self.0))
    }
}

impl<'de> serde::Deserialize<'de> for DatabaseUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<DatabaseUrl, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
