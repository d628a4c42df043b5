//! The embedded store: one SQLite file in the data directory, in WAL mode with
//! `synchronous = FULL` (a commit survives a power cut, so an acknowledged batch is on
//! disk), schema migrations from `collector/migrations/`.
//!
//! Every footprint write goes through one writer thread ([`writer`]) that owns its own
//! connection and commits many pushes at once; reads use a small pool of sqlx
//! connections (WAL lets them run beside the writer). Token writes, rare, take their
//! own short transactions.
//!
//! Kept whole on purpose: most of it is the one `impl Store for SqliteStore`, a thin
//! method per query that settles the ingest log and hands over to the engines' common
//! reads and rows (`store/reads.rs`, `store/rows.rs`), `cost`, `inference` or the
//! writer; splitting the impl would scatter the trait's one reading of "settle, then
//! read" over several files.

pub mod cost;
mod history;
mod inference;
mod readers;
mod startup;
pub mod writer;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use jiff::tz::TimeZone;
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use tokio::sync::{Mutex, Semaphore, mpsc, oneshot};

pub use startup::MARKER_FILE;
pub use writer::log::LOG_FILE;

use super::reads::{self, Level, PROJECTS_SQL, ProjectRow, SQLITE_SUMS, SeriesRow};
use super::rows::{AgentRow, CoefficientRow, HourlyDbRow, KeyedSums, SumsRow, TokenRow, stored};

use super::{
    AgentRecord, AggregateLine, FootprintQuery, HourlyRow, ImportOutcome, IngestOutcome, IngestSet,
    IntensityImport, ProjectInfo, RowKey, SeriesUse, Store, StoreError, StoreOptions,
    StoredCoefficient, Sums, TokenRecord,
};
use writer::{Job, PreparedPush};

/// The database file in the data directory.
pub const DB_FILE: &str = "empreinte.db";

pub struct SqliteStore {
    pool: SqlitePool,
    write: Mutex<()>,
    path: PathBuf,
    data_dir: PathBuf,
    jobs: mpsc::Sender<Job>,
    /// Batches queued for the writer (permits = `max_queued_batches`).
    queue: Arc<Semaphore>,
    queue_size: usize,
    /// Batches the writer stored per second, smoothed (for `Retry-After`).
    pace: Arc<AtomicU64>,
    tz: TimeZone,
    tz_name: String,
    /// Read-only rusqlite connections for the reads of many rows.
    readers: readers::Readers,
}

/// Rows that sqlx's connection thread may read ahead of the reader (see `open`).
const READ_ROW_CHANNEL: usize = 4096;

impl SqliteStore {
    /// Opens (creating it if needed) the database in `data_dir` and migrates it, for a
    /// command (token, report, import): the rollups keep the time zone they have, and
    /// the full integrity check is left to the collector's start.
    pub async fn open(data_dir: &Path) -> Result<SqliteStore, StoreError> {
        SqliteStore::open_with(
            data_dir,
            &StoreOptions {
                integrity_check: false,
                ingest_log: false,
                ..StoreOptions::default()
            },
        )
        .await
    }

    /// Opens the store: refuses a database lost or emptied after tokens were issued and
    /// a damaged one; migrates; rebuilds the rollups if their time zone changed; starts
    /// the writer.
    pub async fn open_with(
        data_dir: &Path,
        options: &StoreOptions,
    ) -> Result<SqliteStore, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let path = data_dir.join(DB_FILE);
        startup::check_not_lost(data_dir, &path)?;
        if options.integrity_check && path.exists() {
            let conn =
                startup::writer_connection(&path).map_err(|e| startup::damaged_or(&path, e))?;
            startup::quick_check(&conn, &path, options.integrity_check_budget)?;
        }
        let connect = SqliteConnectOptions::from_str("sqlite://")?
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true)
            // sqlx's connection thread hands rows over through a channel of this many;
            // its default (50) costs a thread hand-off every 50 rows of the reads still
            // made through sqlx (the hourly pages of the CSV among them).
            .row_buffer_size(READ_ROW_CHANNEL);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(connect)
            .await
            .map_err(|e| startup::damaged_or(&path, e.into()))?;
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(|e| startup::damaged_or(&path, e.into()))?;
        let mut conn = startup::writer_connection(&path)?;
        let stored_tz = startup::rollup_timezone(&conn)?;
        let tz_name = options
            .timezone
            .clone()
            .or(stored_tz.clone())
            .unwrap_or_else(|| "UTC".to_string());
        let tz = TimeZone::get(&tz_name)
            .map_err(|e| StoreError::Invalid(format!("time zone {tz_name:?}: {e}")))?;
        if stored_tz.as_deref() != Some(tz_name.as_str()) {
            if let (Some(old), Some(before)) = (&stored_tz, startup::compacted_before(&conn)?) {
                return Err(StoreError::Invalid(format!(
                    "the time zone is now {tz_name} but the rollups are in {old}, and the hourly rows before {} were compacted into {old}'s days: they cannot be rebuilt; set organisation.timezone back to {old}",
                    jiff::Timestamp::from_second(before)
                        .map(|t| t.to_string())
                        .unwrap_or_default()
                )));
            }
            let (name, zone) = (tz_name.clone(), tz.clone());
            let (back, rows) = tokio::task::spawn_blocking(move || {
                let rows = startup::rebuild_rollups(&mut conn, &name, &zone);
                (conn, rows)
            })
            .await
            .map_err(|e| StoreError::Write(format!("the rollup rebuild failed: {e}")))?;
            conn = back;
            let rows = rows?;
            if stored_tz.is_some() {
                tracing::warn!(timezone = %tz_name, previous = ?stored_tz, rows, "daily and monthly rollups rebuilt for a new time zone");
            }
        }
        let (jobs, rx) = mpsc::channel(options.max_queued_batches.max(1));
        let pace = Arc::new(AtomicU64::new(0));
        let read = startup::writer_connection(&path)?;
        let log = if options.ingest_log {
            Some(writer::log::IngestLog::open(data_dir).map_err(|e| {
                startup::damaged_or(&data_dir.join(writer::log::LOG_FILE), e.into())
            })?)
        } else {
            None
        };
        let writer_options = writer::WriterOptions {
            max_host_power_watts: options.max_host_power_watts,
            hourly_retention: options.hourly_retention,
            fold_interval: options.fold_interval,
            max_unfolded_rows: options.max_unfolded_rows,
        };
        let (cal, writer_pace) = (writer::Calendar::new(tz.clone()), pace.clone());
        // Replays the ingest log first, if the collector stopped before folding it.
        let w = tokio::task::spawn_blocking(move || {
            writer::Writer::start(conn, read, log, cal, &writer_options, writer_pace)
        })
        .await
        .map_err(|e| StoreError::Write(format!("the writer did not start: {e}")))??;
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || w.run(rx))
            .map_err(|e| StoreError::Write(format!("cannot start the writer thread: {e}")))?;
        Ok(SqliteStore {
            readers: readers::Readers::new(&path),
            pool,
            write: Mutex::new(()),
            path,
            data_dir: data_dir.to_path_buf(),
            jobs,
            queue: Arc::new(Semaphore::new(options.max_queued_batches.max(1))),
            queue_size: options.max_queued_batches.max(1),
            pace,
            tz,
            tz_name,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Compacts the hourly rows of the local days before `before_s` (see
    /// [`StoreOptions::hourly_retention`]); gives the rows deleted.
    pub async fn compact_hourly(&self, before_s: i64) -> Result<u64, StoreError> {
        self.send(|reply| Job::Compact(before_s, reply)).await
    }

    /// Batches waiting for the writer or being written now.
    pub fn queued_batches(&self) -> usize {
        self.queue_size - self.queue.available_permits()
    }

    /// The time zone of the daily and monthly rollups.
    pub fn timezone(&self) -> &str {
        &self.tz_name
    }

    /// Stops the writer (after the jobs queued before) and closes every connection
    /// (the WAL is checkpointed).
    pub async fn close(&self) {
        let (done, wait) = oneshot::channel();
        if self.jobs.send(Job::Close(done)).await.is_ok() {
            let _ = wait.await;
        }
        // The writer has stopped: copy the WAL into the database file now, rather than
        // rely on the last connection's close doing it (sqlx closes its connections on
        // their own threads, so that can come after this function returns).
        match sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(&self.pool)
            .await
        {
            Ok((0, _, _)) => {}
            Ok((_, log, done)) => tracing::warn!(
                wal_frames = log,
                checkpointed = done,
                "the write-ahead log could not be wholly checkpointed at close (a reader was still open); the next start reads it"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "the write-ahead log could not be checkpointed at close; the next start reads it")
            }
        }
        self.pool.close().await;
    }

    /// Writes a consistent copy of the database to `dest` (SQLite's `VACUUM INTO`: one
    /// read transaction, so pushes stored meanwhile are wholly in it or wholly not).
    /// `dest` must not exist.
    pub async fn backup_into(&self, dest: &Path) -> Result<(), StoreError> {
        sqlx::query("VACUUM INTO ?")
            .bind(dest.to_string_lossy().into_owned())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Which table answers `[from_s, to_s)`: whole months, whole days, or hours.
    fn level(&self, from_s: i64, to_s: i64) -> Level {
        Level::of(&self.tz, from_s, to_s)
    }

    /// Waits until every push acknowledged before is in the footprint tables.
    async fn settle(&self) -> Result<(), StoreError> {
        self.send(Job::Settle).await
    }

    async fn send<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Job,
    ) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send(make(tx))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ingest(&self, set: &IngestSet<'_>) -> Result<IngestOutcome, StoreError> {
        // A place in the writer's queue, counted in batches, or 503 at once: memory is
        // bounded by the queue, and a full queue drains in well under the agents' timeout.
        let n = u32::try_from(set.batches.len().clamp(1, self.queue_size)).unwrap_or(u32::MAX);
        let Ok(_permit) = self.queue.clone().try_acquire_many_owned(n) else {
            let queued = self.queue_size - self.queue.available_permits();
            let pace = self.pace.load(Ordering::Relaxed).max(100);
            return Err(StoreError::Busy {
                retry_after_s: (queued as u64 / pace).clamp(1, 60),
            });
        };
        let push = Box::new(PreparedPush::from_set(set));
        self.send(|reply| Job::Ingest(push, reply)).await
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
        .bind(stored(t.created_ms, "created_ms")?)
        .bind(t.revoked_ms.map(|v| stored(v, "revoked_ms")).transpose()?)
        .execute(&self.pool)
        .await?;
        startup::mark_tokens_issued(&self.data_dir)?;
        Ok(())
    }

    async fn find_token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        let row: Option<TokenRow> = sqlx::query_as("SELECT * FROM tokens WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(TokenRecord::try_from).transpose()
    }

    async fn revoke_token(&self, id: &str, now_ms: u64) -> Result<bool, StoreError> {
        let _write = self.write.lock().await;
        let n = sqlx::query("UPDATE tokens SET revoked_ms = ? WHERE id = ? AND revoked_ms IS NULL")
            .bind(stored(now_ms, "revoked_ms")?)
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let rows: Vec<TokenRow> = sqlx::query_as("SELECT * FROM tokens ORDER BY created_ms, id")
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(TokenRecord::try_from).collect()
    }

    async fn import_intensity(
        &self,
        import: &IntensityImport,
    ) -> Result<ImportOutcome, StoreError> {
        let import = Box::new(import.clone());
        self.send(|reply| Job::Import(import, reply)).await
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

    fn rollup_timezone(&self) -> &str {
        &self.tz_name
    }

    async fn footprint(&self, q: &FootprintQuery) -> Result<Vec<(String, Sums)>, StoreError> {
        self.settle().await?;
        let (col, level) = Level::for_group(q.group, self.level(q.from_s, q.to_s));
        let (table, period, sums) = level.sql(&SQLITE_SUMS);
        let sql = format!(
            "SELECT {col} AS key, {sums} FROM {table}
             WHERE {period} >= ? AND {period} < ? AND (? IS NULL OR project = ?)
               AND (? IS NULL OR host = ?)
             GROUP BY key ORDER BY key"
        );
        let rows: Vec<KeyedSums> = sqlx::query_as(&sql)
            .bind(q.from_s)
            .bind(q.to_s)
            .bind(&q.project)
            .bind(&q.project)
            .bind(&q.host)
            .bind(&q.host)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(KeyedSums::checked).collect()
    }

    async fn projects(&self) -> Result<Vec<ProjectInfo>, StoreError> {
        self.settle().await?;
        // Projects and hosts from the monthly rollups; first and last hours from the
        // hourly rows through their (project, hour_s) index.
        let rows: Vec<ProjectRow> = sqlx::query_as(PROJECTS_SQL).fetch_all(&self.pool).await?;
        rows.into_iter().map(reads::project_info).collect()
    }

    async fn agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        self.settle().await?;
        let rows: Vec<AgentRow> = sqlx::query_as("SELECT * FROM agents ORDER BY agent_id")
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(AgentRecord::try_from).collect()
    }

    async fn hourly_rows(&self, from_s: i64, to_s: i64) -> Result<Vec<HourlyRow>, StoreError> {
        self.settle().await?;
        let rows: Vec<HourlyDbRow> = sqlx::query_as(reads::HOURLY_ROWS_SQL)
            .bind(from_s)
            .bind(to_s)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(HourlyRow::try_from).collect()
    }

    async fn hourly_rows_after(
        &self,
        from_s: i64,
        to_s: i64,
        after: Option<&RowKey>,
        limit: u32,
    ) -> Result<Vec<HourlyRow>, StoreError> {
        self.settle().await?;
        // Keyset pagination on the primary key's order.
        let rows: Vec<HourlyDbRow> = match after {
            None => {
                sqlx::query_as(reads::HOURLY_FIRST_PAGE_SQL)
                    .bind(from_s)
                    .bind(to_s)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?
            }
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
                    .await?
            }
        };
        rows.into_iter().map(HourlyRow::try_from).collect()
    }

    async fn coefficients_used(
        &self,
        from_s: i64,
        to_s: i64,
    ) -> Result<Vec<StoredCoefficient>, StoreError> {
        self.settle().await?;
        let sql = reads::coefficients_sql(self.level(from_s, to_s));
        let rows: Vec<CoefficientRow> = sqlx::query_as(sql)
            .bind(from_s)
            .bind(to_s)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(StoredCoefficient::from).collect())
    }

    async fn lines(&self, from_s: i64, to_s: i64) -> Result<Vec<AggregateLine>, StoreError> {
        self.settle().await?;
        let (table, period, sums) = self.level(from_s, to_s).sql(&SQLITE_SUMS);
        let sql = format!(
            "SELECT host, project, component, source, site, zone, {sums} FROM {table}
             WHERE {period} >= ?1 AND {period} < ?2
             GROUP BY host, project, component, source, site, zone
             ORDER BY host, project, component, source, site, zone"
        );
        // Many rows: read by rusqlite in place (`readers`), not copied value by value.
        self.readers
            .read(move |conn| {
                let mut st = conn.prepare(&sql)?;
                let mut rows = st.query(rusqlite::params![from_s, to_s])?;
                let mut lines = Vec::new();
                while let Some(r) = rows.next()? {
                    lines.push(AggregateLine {
                        host: r.get(0)?,
                        project: r.get(1)?,
                        component: r.get(2)?,
                        source: r.get(3)?,
                        site: r.get(4)?,
                        zone: r.get(5)?,
                        sums: Sums::try_from(SumsRow::from_columns(r, 6)?)?,
                    });
                }
                Ok(lines)
            })
            .await
    }

    async fn energy_by_day(
        &self,
        from_s: i64,
        to_s: i64,
        timezone: &str,
    ) -> Result<Vec<(i64, String, u64)>, StoreError> {
        self.settle().await?;
        let daily = timezone == self.tz_name && self.level(from_s, to_s) != Level::Hourly;
        let (table, period) = reads::energy_table(daily);
        self.readers
            .read(move |conn| readers::energy_by_period(conn, table, period, from_s, to_s))
            .await
    }

    async fn series_used(&self, from_s: i64, to_s: i64) -> Result<Vec<SeriesUse>, StoreError> {
        self.settle().await?;
        let rows: Vec<SeriesRow> = sqlx::query_as(reads::SERIES_USED_SQL)
            .bind(from_s)
            .bind(to_s)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(reads::series_use).collect()
    }

    fn engine(&self) -> super::Engine {
        super::Engine::Sqlite
    }

    async fn plan_history(&self) -> Result<Vec<crate::history::PlanRecord>, StoreError> {
        history::plan_history(&self.pool).await
    }

    async fn record_plan(&self, from_s: i64, plan: &str, now_ms: u64) -> Result<(), StoreError> {
        let _write = self.write.lock().await;
        history::record_plan(&self.pool, from_s, plan, now_ms).await
    }

    async fn recompute(
        &self,
        job: &crate::history::RecomputeJob,
    ) -> Result<crate::history::Recomputation, StoreError> {
        let job = Box::new(job.clone());
        self.send(|reply| Job::Recompute(job, reply)).await
    }

    async fn recomputations(
        &self,
        from_s: i64,
        to_s: i64,
    ) -> Result<Vec<crate::history::Recomputation>, StoreError> {
        history::recomputations(&self.pool, from_s, to_s).await
    }

    fn cost_reads(&self) -> Option<&dyn super::CostReads> {
        Some(self)
    }

    fn inference_reads(&self) -> Option<&dyn super::InferenceReads> {
        Some(self)
    }

    async fn agent_balance(&self, agent_id: &str) -> Result<(u64, u64), StoreError> {
        self.settle().await?;
        // Summed in u128 by `agent_balance`: many runs' counters may pass SQLite's integers.
        let rows: Vec<(i64, i64)> =
            sqlx::query_as("SELECT counted_uj, stored_uj FROM runs WHERE agent_id = ?")
                .bind(agent_id)
                .fetch_all(&self.pool)
                .await?;
        reads::agent_balance(rows)
    }
}

#[async_trait]
impl super::CostReads for SqliteStore {
    async fn costs(
        &self,
        from_s: i64,
        to_s: i64,
    ) -> Result<Vec<crate::cost::CostLine>, StoreError> {
        self.settle().await?;
        cost::lines(&self.pool, from_s, to_s).await
    }

    async fn cost_totals(&self) -> Result<Vec<crate::cost::CostTotal>, StoreError> {
        self.settle().await?;
        cost::totals(&self.pool).await
    }

    async fn hardware_costs(
        &self,
        from_s: i64,
        to_s: i64,
    ) -> Result<Vec<crate::cost::hardware::HardwareLine>, StoreError> {
        self.settle().await?;
        cost::hardware_lines(&self.pool, from_s, to_s).await
    }

    async fn hardware_cost_totals(&self) -> Result<Vec<crate::cost::CostTotal>, StoreError> {
        self.settle().await?;
        cost::hardware_totals(&self.pool).await
    }
}

#[async_trait]
impl super::InferenceReads for SqliteStore {
    async fn inference_units(
        &self,
        from_s: i64,
        to_s: i64,
    ) -> Result<Vec<crate::inference::InferenceUnit>, StoreError> {
        self.settle().await?;
        inference::units(&self.pool, from_s, to_s).await
    }

    async fn inference_totals(&self) -> Result<Vec<crate::inference::InferenceTotal>, StoreError> {
        self.settle().await?;
        inference::totals(&self.pool).await
    }
}
