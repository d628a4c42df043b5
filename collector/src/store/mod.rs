//! The store: one interface ([`Store`]) over the database that keeps the footprint.
//! SQLite ([`sqlite::SqliteStore`]) is the embedded default; PostgreSQL
//! ([`pg::PgStore`], `database_url`) implements the same trait with the same tables and
//! behaviour, for several collectors sharing one database. [`OpenStore`] opens either.
//!
//! Architecture invariant: a push is stored in one transaction, and a batch's name
//! `(agent_id, run_id, seq)` is stored in that transaction with its energy, so a batch is
//! counted once whatever the number of times it is received, and an acknowledgement is
//! only sent after the commit.

mod capability;
mod cost_rows;
mod inference_rows;
mod open;
pub mod pg;
mod reads;
mod rows;
pub mod runs;
pub mod sqlite;

pub use capability::{Capability, CostReads, Engine, InferenceReads};
pub use open::OpenStore;

use async_trait::async_trait;
use empreinte_shared::wire::{AgentInfo, Batch, PushAck, SpoolStatus, WireProblem};
use serde::Serialize;

use crate::footprint::{HostPlan, HourlyDelta};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the database failed: {0}")]
    Database(#[from] sqlx::Error),
    #[error("the database schema could not be brought up to date: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
    /// The writer's queue is full: the push was not stored; try again after the delay.
    /// The HTTP layer answers 503 with `Retry-After`.
    #[error(
        "the collector is busy storing other pushes; nothing of this one was stored, try again in {retry_after_s} s"
    )]
    Busy { retry_after_s: u64 },
    /// The push would break the store (a sum past `i64::MAX`, a host's energy in an hour
    /// past `max_host_power_watts`): refused whole, nothing stored. The HTTP layer answers
    /// 422 with the problems.
    #[error("the push has {} problem{}; nothing of it was stored", .0.len(), if .0.len() == 1 { "" } else { "s" })]
    Rejected(Vec<WireProblem>),
    /// A write failed (the writer's transaction rolled back).
    #[error("the database write failed: {0}")]
    Write(String),
    #[error("the database failed: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The database must not be used: damaged, or missing/empty after tokens were issued.
    #[error("{}: {message}", path.display())]
    Integrity {
        path: std::path::PathBuf,
        message: String,
    },
    /// A stored value is out of its range (a database edited or damaged by hand).
    #[error("a stored value is out of range: {0}")]
    Corrupt(String),
    /// The writer thread is gone (the store is closing).
    #[error("the store is closed")]
    Closed,
    /// The engine does not keep what was asked (see [`Capability`]); the API answers 501.
    #[error("the {engine} store does not keep {}; use an engine that does (docs/postgresql.md lists what each keeps)", .capability.what())]
    Unsupported {
        engine: Engine,
        capability: Capability,
    },
}

/// The `[store]` section of the collector's configuration.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Hourly rows older than this are compacted into the daily rollups (reports of old
    /// months unchanged; their CSV then has no hourly lines); `0s` keeps every hour.
    #[serde(with = "humantime_serde")]
    pub hourly_retention: std::time::Duration,
    /// The most batches waiting for the store's writer; beyond it a push gets 503 with
    /// `Retry-After` (memory bound: about 6 KB per queued batch of 40 records).
    pub max_queued_batches: usize,
    /// How often acknowledged pushes (in the ingest log) are folded into the footprint
    /// tables while pushes arrive; reads always see every acknowledged push.
    #[serde(with = "humantime_serde")]
    pub fold_interval: std::time::Duration,
    /// Hourly rows waiting for the fold at most (memory bound, about 250 bytes each);
    /// beyond it a push gets 503 with `Retry-After` until the fold catches up.
    pub max_unfolded_rows: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            hourly_retention: std::time::Duration::ZERO,
            max_queued_batches: StoreOptions::default().max_queued_batches,
            fold_interval: StoreOptions::default().fold_interval,
            max_unfolded_rows: StoreOptions::default().max_unfolded_rows,
        }
    }
}

impl StoreConfig {
    /// `(key, message)` for every value out of range.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if !(1..=1_000_000).contains(&self.max_queued_batches) {
            out.push((
                "store.max_queued_batches".to_string(),
                format!("{} is outside 1..=1000000", self.max_queued_batches),
            ));
        }
        if !(1_000..=10_000_000).contains(&self.max_unfolded_rows) {
            out.push((
                "store.max_unfolded_rows".to_string(),
                format!("{} is outside 1000..=10000000", self.max_unfolded_rows),
            ));
        }
        if self.fold_interval < std::time::Duration::from_millis(10)
            || self.fold_interval > std::time::Duration::from_secs(60)
        {
            out.push((
                "store.fold_interval".to_string(),
                "fold at least every 60s and at most every 10ms".to_string(),
            ));
        }
        if !self.hourly_retention.is_zero()
            && self.hourly_retention < std::time::Duration::from_secs(2 * 86_400)
        {
            out.push((
                "store.hourly_retention".to_string(),
                "keep at least 2 days of hourly rows (or 0s to keep them all)".to_string(),
            ));
        }
        out
    }

    /// The store's options for an organisation in `timezone` with hosts of at most
    /// `max_host_power_watts`.
    pub fn options(&self, timezone: &str, max_host_power_watts: f64) -> StoreOptions {
        StoreOptions {
            timezone: Some(timezone.to_string()),
            max_queued_batches: self.max_queued_batches,
            max_host_power_watts,
            hourly_retention: (!self.hourly_retention.is_zero()).then_some(self.hourly_retention),
            fold_interval: self.fold_interval,
            max_unfolded_rows: self.max_unfolded_rows,
            ..StoreOptions::default()
        }
    }
}

/// How the store is run (from the collector's configuration).
#[derive(Clone, Debug, PartialEq)]
pub struct StoreOptions {
    /// IANA time zone of the daily and monthly rollups (the organisation's); `None`
    /// keeps the one the database has (UTC for a new one).
    pub timezone: Option<String>,
    /// The most batches queued for the writer at once (memory bound); beyond it a push
    /// is refused with [`StoreError::Busy`]. At the writer's pace the queue drains in
    /// well under the agents' 10 s push timeout.
    pub max_queued_batches: usize,
    /// The most a host can draw: its energy in any hour, across batches, is bounded by
    /// this × 1 h.
    pub max_host_power_watts: f64,
    /// Hourly rows older than this are compacted: deleted once their whole local day is
    /// past the horizon, the daily and monthly rollups (and the coefficients and series
    /// used) staying as they were, so reports of old months are unchanged to the µJ;
    /// `None` keeps every hourly row. See `docs/operations.md` for the disk it saves.
    pub hourly_retention: Option<std::time::Duration>,
    /// Check the database (`PRAGMA quick_check`) before opening it: the collector does
    /// at start; a command that only reads (a report) does not.
    pub integrity_check: bool,
    /// The longest the integrity check at start may take.
    pub integrity_check_budget: std::time::Duration,
    /// Acknowledge pushes once they are in the ingest log (one small row each, group
    /// commit) and fold them into the footprint tables in the background (the
    /// collector); `false`: each group of pushes is written to the tables before it is
    /// acknowledged (commands, which must not fold a running collector's log).
    pub ingest_log: bool,
    /// With the ingest log: fold at least this often while pushes arrive.
    pub fold_interval: std::time::Duration,
    /// With the ingest log: hourly rows waiting for the fold at most (about 250 bytes
    /// each); beyond, pushes get [`StoreError::Busy`] until the fold catches up.
    pub max_unfolded_rows: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            timezone: None,
            max_queued_batches: 10_000,
            hourly_retention: None,
            max_host_power_watts: empreinte_shared::wire::Limits::default().max_host_power_watts,
            integrity_check: true,
            integrity_check_budget: std::time::Duration::from_secs(30),
            ingest_log: true,
            fold_interval: std::time::Duration::from_secs(1),
            max_unfolded_rows: 200_000,
        }
    }
}

/// A push ready to be stored: its batches with their hourly parts.
pub struct IngestSet<'a> {
    pub agent: &'a AgentInfo,
    pub spool: &'a SpoolStatus,
    /// Shared with the planner: the writer keeps it without a copy.
    pub plan: &'a std::sync::Arc<HostPlan>,
    pub now_ms: u64,
    pub batches: Vec<(&'a Batch, Vec<HourlyDelta>)>,
}

/// What a stored push added (only its new batches), for the collector's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IngestOutcome {
    pub ack: PushAck,
    /// The new hourly parts, with the operational emissions they were given.
    pub added: Vec<AddedPart>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddedPart {
    pub project: String,
    pub component: empreinte_shared::Component,
    pub energy_uj: u64,
    pub location_ug: u64,
    pub market_ug: Option<u64>,
    pub embodied_ug: u64,
}

/// What a token can do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    /// Push the energy of one agent.
    Agent,
    /// Read the footprint through the API.
    Read,
}

impl TokenKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Agent => "agent",
            TokenKind::Read => "read",
        }
    }

    /// "an agent", "a read": for sentences.
    pub fn with_article(self) -> &'static str {
        match self {
            TokenKind::Agent => "an agent",
            TokenKind::Read => "a read",
        }
    }
}

/// A stored token (never the secret, only its hash).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TokenRecord {
    pub id: String,
    pub kind: TokenKind,
    pub agent_id: Option<String>,
    #[serde(skip)]
    pub secret_sha256: Vec<u8>,
    pub note: String,
    pub created_ms: u64,
    pub revoked_ms: Option<u64>,
}

/// How footprint rows are grouped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grouping {
    Project,
    Host,
    Site,
    Component,
    Source,
    /// By hour (Unix seconds as the key); days in the organisation's time zone are made
    /// from hours.
    Hour,
    /// By local day of the store's rollup time zone ([`Store::rollup_timezone`]; Unix
    /// seconds of the day's start as the key), from the daily rollups when the range is
    /// made of whole days, else by hour.
    Day,
}

impl Grouping {
    fn column(self) -> &'static str {
        match self {
            Grouping::Project => "project",
            Grouping::Host => "host",
            Grouping::Site => "site",
            Grouping::Component => "component",
            Grouping::Source => "source",
            Grouping::Hour => "CAST(hour_s AS TEXT)",
            Grouping::Day => "CAST(day_s AS TEXT)",
        }
    }
}

/// A footprint query: hours in `[from_s, to_s)`, optionally one project and one host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FootprintQuery {
    pub from_s: i64,
    pub to_s: i64,
    pub project: Option<String>,
    pub host: Option<String>,
    pub group: Grouping,
}

/// Sums over footprint rows.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Sums {
    /// Energy at the meter of the IT equipment.
    pub energy_uj: u64,
    /// Energy with the facility's overhead (× PUE).
    pub facility_energy_uj: u64,
    /// Of `energy_uj`: measured (RAPL, NVML).
    pub measured_energy_uj: u64,
    /// Of `energy_uj`: estimated.
    pub estimated_energy_uj: u64,
    /// Operational emissions, location-based.
    pub location_co2e_ug: u64,
    /// Operational emissions, market-based (the contractual factor where configured,
    /// the location-based figure elsewhere).
    pub market_co2e_ug: u64,
    pub embodied_co2e_ug: u64,
}

impl Sums {
    /// Adds `o` (saturating: stored values are bounded, see [`StoreOptions`], so a sum of
    /// them reaches `u64::MAX` only for a fleet far beyond any organisation's).
    pub fn add(&mut self, o: &Sums) {
        self.energy_uj = self.energy_uj.saturating_add(o.energy_uj);
        self.facility_energy_uj = self.facility_energy_uj.saturating_add(o.facility_energy_uj);
        self.measured_energy_uj = self.measured_energy_uj.saturating_add(o.measured_energy_uj);
        self.estimated_energy_uj = self
            .estimated_energy_uj
            .saturating_add(o.estimated_energy_uj);
        self.location_co2e_ug = self.location_co2e_ug.saturating_add(o.location_co2e_ug);
        self.market_co2e_ug = self.market_co2e_ug.saturating_add(o.market_co2e_ug);
        self.embodied_co2e_ug = self.embodied_co2e_ug.saturating_add(o.embodied_co2e_ug);
    }
}

/// The sums of one `(host, project, component, source, site, zone)` over a period: what
/// a report's breakdowns are made of (a month has thousands, not millions, of them).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AggregateLine {
    pub host: String,
    pub project: String,
    pub component: String,
    pub source: String,
    pub site: String,
    pub zone: String,
    #[serde(flatten)]
    pub sums: Sums,
}

/// An imported intensity series as used by the rows of a period.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SeriesUse {
    pub zone: String,
    pub import_id: i64,
    /// Hours of the period in which the zone has rows and the series gave the intensity.
    pub hours: u64,
    pub min_g_per_kwh: f64,
    pub max_g_per_kwh: f64,
}

/// A project as the store knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProjectInfo {
    pub project: String,
    pub first_hour_s: i64,
    pub last_hour_s: i64,
    pub hosts: u64,
}

/// An agent as the store knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AgentRecord {
    pub agent_id: String,
    pub hostname: String,
    pub agent_version: String,
    pub first_push_ms: u64,
    pub last_push_ms: u64,
    pub last_batch_end_ms: Option<u64>,
    pub spool_batches: u64,
    pub spool_bytes: u64,
    pub spool_oldest_ms: Option<u64>,
    pub spool_dropped: u64,
}

/// One stored footprint row with its coefficients, for explanations and exports.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HourlyRow {
    pub hour_s: i64,
    pub host: String,
    pub project: String,
    pub component: String,
    pub source: String,
    pub site: String,
    pub zone: String,
    pub energy_uj: u64,
    pub pue: f64,
    pub pue_coef: i64,
    pub intensity_g_per_kwh: f64,
    pub intensity_coef: Option<i64>,
    pub intensity_import: Option<i64>,
    pub location_co2e_ug: u64,
    pub market_g_per_kwh: Option<f64>,
    pub market_coef: Option<i64>,
    pub market_co2e_ug: Option<u64>,
    pub embodied_co2e_ug: u64,
    pub embodied_coef: Option<i64>,
}

/// Where an hourly row sorts: `(hour_s, host, project, component, source)`.
pub type RowKey = (i64, String, String, String, String);

impl HourlyRow {
    pub fn key(&self) -> RowKey {
        (
            self.hour_s,
            self.host.clone(),
            self.project.clone(),
            self.component.clone(),
            self.source.clone(),
        )
    }
}

/// A stored coefficient.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StoredCoefficient {
    pub id: i64,
    pub kind: String,
    pub subject: String,
    pub value: f64,
    pub unit: String,
    pub source: String,
    pub year: Option<i64>,
    pub is_default: bool,
    pub detail: String,
}

/// An intensity time series, as hourly means, to store.
#[derive(Clone, Debug, PartialEq)]
pub struct IntensityImport {
    pub zone: String,
    pub source: String,
    /// `lifecycle` or `direct`.
    pub kind: String,
    pub file: String,
    pub now_ms: u64,
    /// `(hour_s, g_per_kwh, covered share of the hour)`.
    pub hours: Vec<(i64, f64, f64)>,
}

/// What an import changed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ImportOutcome {
    pub import_id: i64,
    pub hours: u64,
    /// Footprint rows whose location-based emissions were recomputed with the series.
    pub rows_updated: u64,
}

/// The footprint's database.
#[async_trait]
pub trait Store: Send + Sync {
    /// Stores the new batches of a push in one transaction and says which were new.
    async fn ingest(&self, set: &IngestSet<'_>) -> Result<IngestOutcome, StoreError>;

    async fn create_token(&self, token: &TokenRecord) -> Result<(), StoreError>;
    async fn find_token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError>;
    /// Revokes a token; false when no active token has that id.
    async fn revoke_token(&self, id: &str, now_ms: u64) -> Result<bool, StoreError>;
    async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError>;

    /// Stores an intensity series and recomputes the emissions of the hours it covers.
    async fn import_intensity(&self, import: &IntensityImport)
    -> Result<ImportOutcome, StoreError>;
    /// The imported hourly intensity of a zone, if a series covers that hour.
    async fn intensity(&self, zone: &str, hour_s: i64) -> Result<Option<f64>, StoreError>;

    async fn footprint(&self, q: &FootprintQuery) -> Result<Vec<(String, Sums)>, StoreError>;
    /// The time zone of the daily and monthly rollups.
    fn rollup_timezone(&self) -> &str;
    async fn projects(&self) -> Result<Vec<ProjectInfo>, StoreError>;
    async fn agents(&self) -> Result<Vec<AgentRecord>, StoreError>;
    /// Every footprint row of `[from_s, to_s)`, ordered by hour, host, project.
    async fn hourly_rows(&self, from_s: i64, to_s: i64) -> Result<Vec<HourlyRow>, StoreError>;
    /// At most `limit` footprint rows of `[from_s, to_s)` after `after` in the same
    /// order (a page: an export reads a month page by page, in bounded memory).
    async fn hourly_rows_after(
        &self,
        from_s: i64,
        to_s: i64,
        after: Option<&RowKey>,
        limit: u32,
    ) -> Result<Vec<HourlyRow>, StoreError>;
    /// The coefficients used by the rows of `[from_s, to_s)`.
    async fn coefficients_used(
        &self,
        from_s: i64,
        to_s: i64,
    ) -> Result<Vec<StoredCoefficient>, StoreError>;
    /// The sums of `[from_s, to_s)` per host, project, component, source, site and zone
    /// (from the monthly or daily rollups when the range is made of whole months or days
    /// of the store's time zone), ordered by those keys.
    async fn lines(&self, from_s: i64, to_s: i64) -> Result<Vec<AggregateLine>, StoreError>;
    /// IT energy of `[from_s, to_s)` per period start and project: local days of
    /// `timezone` when the store's rollups are in it, else hours; every start lies in
    /// exactly one local day of `timezone`.
    async fn energy_by_day(
        &self,
        from_s: i64,
        to_s: i64,
        timezone: &str,
    ) -> Result<Vec<(i64, String, u64)>, StoreError>;
    /// The imported intensity series the rows of `[from_s, to_s)` used.
    async fn series_used(&self, from_s: i64, to_s: i64) -> Result<Vec<SeriesUse>, StoreError>;
    /// The sum of the latest cumulative counters of every run of an agent (what the
    /// agent says it measured), and the sum stored from its batches.
    async fn agent_balance(&self, agent_id: &str) -> Result<(u64, u64), StoreError>;
    /// Which engine this is (messages name it: "the PostgreSQL store does not keep …").
    fn engine(&self) -> Engine;
    /// The reads of stored costs, when this engine keeps them (declared by each engine;
    /// see [`Capability`]).
    fn cost_reads(&self) -> Option<&dyn CostReads>;
    /// The reads of stored inference counts, when this engine keeps them.
    fn inference_reads(&self) -> Option<&dyn InferenceReads>;
    /// The configuration history: the plans still in force (not replaced), oldest first.
    async fn plan_history(&self) -> Result<Vec<crate::history::PlanRecord>, StoreError>;
    /// Records `plan` as in force from `from_s`; the plans from that instant on are
    /// marked replaced (kept).
    async fn record_plan(&self, from_s: i64, plan: &str, now_ms: u64) -> Result<(), StoreError>;
    /// Recomputes every stored hour from `job.from_s` with the plan in force at it.
    async fn recompute(
        &self,
        job: &crate::history::RecomputeJob,
    ) -> Result<crate::history::Recomputation, StoreError>;
    /// The recomputations that changed a month starting in `[from_s, to_s)`, oldest
    /// first, with only those months.
    async fn recomputations(
        &self,
        from_s: i64,
        to_s: i64,
    ) -> Result<Vec<crate::history::Recomputation>, StoreError>;
}
