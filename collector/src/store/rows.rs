//! Rows as either engine gives them (`sqlx::FromRow`) and their checked conversions into
//! the store's types: a stored value out of its range is [`StoreError::Corrupt`], never a
//! panic, and a value to store past `i64::MAX` is [`StoreError::Invalid`].
//!
//! Shared by the SQLite (`store/sqlite`) and PostgreSQL (`store/pg`) stores: both keep
//! the same tables with the same column names, and every column read here decodes as the
//! same Rust type on both (`BIGINT`/`INTEGER` as `i64`, `DOUBLE PRECISION`/`REAL` as
//! `f64`, `TEXT` as `String`, `BYTEA`/`BLOB` as `Vec<u8>`, `BOOLEAN`/`INTEGER` as
//! `bool`). sqlx's derive is generic over the row type, so one struct reads a `PgRow` and
//! a `SqliteRow` alike, and one conversion gives both engines the same checks and the same
//! messages. The engines keep their own SQL; only what is read back is shared.

use super::{
    AgentRecord, AggregateLine, HourlyRow, StoreError, StoredCoefficient, Sums, TokenKind,
    TokenRecord,
};

/// A stored integer that must be a quantity (not negative).
pub(super) fn quantity(v: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("{what} is {v}, a negative quantity")))
}

/// A nullable stored integer that must be a quantity when present.
pub(super) fn opt_quantity(v: Option<i64>, what: &str) -> Result<Option<u64>, StoreError> {
    v.map(|v| quantity(v, what)).transpose()
}

/// A quantity to store: refused past `i64::MAX`.
pub(super) fn stored(v: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| {
        StoreError::Invalid(format!(
            "{what} is {v}, past the largest stored value ({})",
            i64::MAX
        ))
    })
}

#[derive(sqlx::FromRow)]
pub(super) struct TokenRow {
    id: String,
    kind: String,
    agent_id: Option<String>,
    secret_sha256: Vec<u8>,
    note: String,
    created_ms: i64,
    revoked_ms: Option<i64>,
}

impl TryFrom<TokenRow> for TokenRecord {
    type Error = StoreError;
    fn try_from(r: TokenRow) -> Result<TokenRecord, StoreError> {
        let kind = match r.kind.as_str() {
            "agent" => TokenKind::Agent,
            "read" => TokenKind::Read,
            other => return Err(StoreError::Corrupt(format!("unknown token kind {other:?}"))),
        };
        Ok(TokenRecord {
            id: r.id,
            kind,
            agent_id: r.agent_id,
            secret_sha256: r.secret_sha256,
            note: r.note,
            created_ms: quantity(r.created_ms, "tokens.created_ms")?,
            revoked_ms: opt_quantity(r.revoked_ms, "tokens.revoked_ms")?,
        })
    }
}

/// The sums of a period's footprint rows, as the engines' `sums` SQL names them
/// (`store/reads.rs`).
#[derive(sqlx::FromRow)]
pub(super) struct SumsRow {
    energy_uj: i64,
    facility_energy_uj: i64,
    measured_uj: i64,
    estimated_uj: i64,
    location_ug: i64,
    market_ug: i64,
    embodied_ug: i64,
}

impl SumsRow {
    /// The sums in `row`'s columns from `first` on, in the sums SQL's order, as rusqlite
    /// reads them (`store/sqlite/readers.rs`).
    pub(super) fn from_columns(row: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<SumsRow> {
        Ok(SumsRow {
            energy_uj: row.get(first)?,
            facility_energy_uj: row.get(first + 1)?,
            measured_uj: row.get(first + 2)?,
            estimated_uj: row.get(first + 3)?,
            location_ug: row.get(first + 4)?,
            market_ug: row.get(first + 5)?,
            embodied_ug: row.get(first + 6)?,
        })
    }
}

impl TryFrom<SumsRow> for Sums {
    type Error = StoreError;
    fn try_from(r: SumsRow) -> Result<Sums, StoreError> {
        Ok(Sums {
            energy_uj: quantity(r.energy_uj, "energy_uj")?,
            facility_energy_uj: quantity(r.facility_energy_uj, "facility energy")?,
            measured_energy_uj: quantity(r.measured_uj, "measured energy")?,
            estimated_energy_uj: quantity(r.estimated_uj, "estimated energy")?,
            location_co2e_ug: quantity(r.location_ug, "location-based emissions")?,
            market_co2e_ug: quantity(r.market_ug, "market-based emissions")?,
            embodied_co2e_ug: quantity(r.embodied_ug, "embodied emissions")?,
        })
    }
}

/// The sums of one group (`key`: the grouping column as text).
#[derive(sqlx::FromRow)]
pub(super) struct KeyedSums {
    key: String,
    #[sqlx(flatten)]
    sums: SumsRow,
}

impl KeyedSums {
    /// `(key, sums)`, checked.
    pub(super) fn checked(self) -> Result<(String, Sums), StoreError> {
        Ok((self.key, Sums::try_from(self.sums)?))
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct LineRow {
    host: String,
    project: String,
    component: String,
    source: String,
    site: String,
    zone: String,
    #[sqlx(flatten)]
    sums: SumsRow,
}

impl TryFrom<LineRow> for AggregateLine {
    type Error = StoreError;
    fn try_from(r: LineRow) -> Result<AggregateLine, StoreError> {
        Ok(AggregateLine {
            host: r.host,
            project: r.project,
            component: r.component,
            source: r.source,
            site: r.site,
            zone: r.zone,
            sums: Sums::try_from(r.sums)?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct AgentRow {
    agent_id: String,
    hostname: String,
    agent_version: String,
    first_push_ms: i64,
    last_push_ms: i64,
    last_batch_end_ms: Option<i64>,
    spool_batches: i64,
    spool_bytes: i64,
    spool_oldest_ms: Option<i64>,
    spool_dropped: i64,
}

impl TryFrom<AgentRow> for AgentRecord {
    type Error = StoreError;
    fn try_from(r: AgentRow) -> Result<AgentRecord, StoreError> {
        Ok(AgentRecord {
            first_push_ms: quantity(r.first_push_ms, "agents.first_push_ms")?,
            last_push_ms: quantity(r.last_push_ms, "agents.last_push_ms")?,
            last_batch_end_ms: opt_quantity(r.last_batch_end_ms, "agents.last_batch_end_ms")?,
            spool_batches: quantity(r.spool_batches, "agents.spool_batches")?,
            spool_bytes: quantity(r.spool_bytes, "agents.spool_bytes")?,
            spool_oldest_ms: opt_quantity(r.spool_oldest_ms, "agents.spool_oldest_ms")?,
            spool_dropped: quantity(r.spool_dropped, "agents.spool_dropped")?,
            agent_id: r.agent_id,
            hostname: r.hostname,
            agent_version: r.agent_version,
        })
    }
}

/// A `footprint_hourly` row as stored (`SELECT *`).
#[derive(sqlx::FromRow)]
pub(super) struct HourlyDbRow {
    hour_s: i64,
    host: String,
    project: String,
    component: String,
    source: String,
    site: String,
    zone: String,
    energy_uj: i64,
    pue: f64,
    pue_coef: i64,
    intensity_g_per_kwh: f64,
    intensity_coef: Option<i64>,
    intensity_import: Option<i64>,
    location_co2e_ug: i64,
    market_g_per_kwh: Option<f64>,
    market_coef: Option<i64>,
    market_co2e_ug: Option<i64>,
    embodied_co2e_ug: i64,
    embodied_coef: Option<i64>,
}

impl TryFrom<HourlyDbRow> for HourlyRow {
    type Error = StoreError;
    fn try_from(r: HourlyDbRow) -> Result<HourlyRow, StoreError> {
        Ok(HourlyRow {
            energy_uj: quantity(r.energy_uj, "footprint_hourly.energy_uj")?,
            location_co2e_ug: quantity(r.location_co2e_ug, "footprint_hourly.location_co2e_ug")?,
            market_co2e_ug: opt_quantity(r.market_co2e_ug, "footprint_hourly.market_co2e_ug")?,
            embodied_co2e_ug: quantity(r.embodied_co2e_ug, "footprint_hourly.embodied_co2e_ug")?,
            hour_s: r.hour_s,
            host: r.host,
            project: r.project,
            component: r.component,
            source: r.source,
            site: r.site,
            zone: r.zone,
            pue: r.pue,
            pue_coef: r.pue_coef,
            intensity_g_per_kwh: r.intensity_g_per_kwh,
            intensity_coef: r.intensity_coef,
            intensity_import: r.intensity_import,
            market_g_per_kwh: r.market_g_per_kwh,
            market_coef: r.market_coef,
            embodied_coef: r.embodied_coef,
        })
    }
}

/// A `coefficients` row as stored (`SELECT *`).
#[derive(sqlx::FromRow)]
pub(super) struct CoefficientRow {
    id: i64,
    kind: String,
    subject: String,
    value: f64,
    unit: String,
    source: String,
    year: Option<i64>,
    is_default: bool,
    detail: String,
}

impl From<CoefficientRow> for StoredCoefficient {
    fn from(r: CoefficientRow) -> StoredCoefficient {
        StoredCoefficient {
            id: r.id,
            kind: r.kind,
            subject: r.subject,
            value: r.value,
            unit: r.unit,
            source: r.source,
            year: r.year,
            is_default: r.is_default,
            detail: r.detail,
        }
    }
}
