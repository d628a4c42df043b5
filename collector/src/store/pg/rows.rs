//! Rows as PostgreSQL gives them, and their checked conversion into the store's types
//! (a stored value out of its range is [`StoreError::Corrupt`], never a panic).

use super::super::{
    AgentRecord, HourlyRow, StoreError, StoredCoefficient, Sums, TokenKind, TokenRecord,
};

/// A stored integer that must be a quantity (not negative).
pub fn quantity(v: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("{what} is {v}, a negative quantity")))
}

/// A quantity to store: refused past `i64::MAX`.
pub fn stored(v: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| {
        StoreError::Invalid(format!(
            "{what} is {v}, past the largest stored value ({})",
            i64::MAX
        ))
    })
}

#[derive(sqlx::FromRow)]
pub struct TokenRow {
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
            revoked_ms: r
                .revoked_ms
                .map(|v| quantity(v, "tokens.revoked_ms"))
                .transpose()?,
        })
    }
}

/// SQL for the sums of hourly rows (PostgreSQL's `SUM` of `BIGINT` is `NUMERIC`: cast
/// back; the stored values are bounded so that a period's sum fits).
pub const SUMS: &str = "COALESCE(SUM(energy_uj), 0)::BIGINT AS energy_uj,
    COALESCE(SUM(facility_uj), 0)::BIGINT AS facility_energy_uj,
    COALESCE(SUM(CASE WHEN source = 'estimate' THEN 0 ELSE energy_uj END), 0)::BIGINT AS measured_uj,
    COALESCE(SUM(CASE WHEN source = 'estimate' THEN energy_uj ELSE 0 END), 0)::BIGINT AS estimated_uj,
    COALESCE(SUM(location_co2e_ug), 0)::BIGINT AS location_ug,
    COALESCE(SUM(COALESCE(market_co2e_ug, location_co2e_ug)), 0)::BIGINT AS market_ug,
    COALESCE(SUM(embodied_co2e_ug), 0)::BIGINT AS embodied_ug";

/// SQL for the sums of rollup rows.
pub const ROLLUP_SUMS: &str = "COALESCE(SUM(energy_uj), 0)::BIGINT AS energy_uj,
    COALESCE(SUM(facility_uj), 0)::BIGINT AS facility_energy_uj,
    COALESCE(SUM(CASE WHEN source = 'estimate' THEN 0 ELSE energy_uj END), 0)::BIGINT AS measured_uj,
    COALESCE(SUM(CASE WHEN source = 'estimate' THEN energy_uj ELSE 0 END), 0)::BIGINT AS estimated_uj,
    COALESCE(SUM(location_ug), 0)::BIGINT AS location_ug,
    COALESCE(SUM(market_ug), 0)::BIGINT AS market_ug,
    COALESCE(SUM(embodied_ug), 0)::BIGINT AS embodied_ug";

#[derive(sqlx::FromRow)]
pub struct SumsRow {
    energy_uj: i64,
    facility_energy_uj: i64,
    measured_uj: i64,
    estimated_uj: i64,
    location_ug: i64,
    market_ug: i64,
    embodied_ug: i64,
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

#[derive(sqlx::FromRow)]
pub struct KeyedSums {
    pub key: String,
    #[sqlx(flatten)]
    pub sums: SumsRow,
}

#[derive(sqlx::FromRow)]
pub struct LineRow {
    pub host: String,
    pub project: String,
    pub component: String,
    pub source: String,
    pub site: String,
    pub zone: String,
    #[sqlx(flatten)]
    pub sums: SumsRow,
}

#[derive(sqlx::FromRow)]
pub struct AgentRow {
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
        let opt = |v: Option<i64>, what: &str| v.map(|v| quantity(v, what)).transpose();
        Ok(AgentRecord {
            first_push_ms: quantity(r.first_push_ms, "agents.first_push_ms")?,
            last_push_ms: quantity(r.last_push_ms, "agents.last_push_ms")?,
            last_batch_end_ms: opt(r.last_batch_end_ms, "agents.last_batch_end_ms")?,
            spool_batches: quantity(r.spool_batches, "agents.spool_batches")?,
            spool_bytes: quantity(r.spool_bytes, "agents.spool_bytes")?,
            spool_oldest_ms: opt(r.spool_oldest_ms, "agents.spool_oldest_ms")?,
            spool_dropped: quantity(r.spool_dropped, "agents.spool_dropped")?,
            agent_id: r.agent_id,
            hostname: r.hostname,
            agent_version: r.agent_version,
        })
    }
}

#[derive(sqlx::FromRow)]
pub struct HourlyDbRow {
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
            market_co2e_ug: r
                .market_co2e_ug
                .map(|v| quantity(v, "footprint_hourly.market_co2e_ug"))
                .transpose()?,
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

#[derive(sqlx::FromRow)]
pub struct CoefficientRow {
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
