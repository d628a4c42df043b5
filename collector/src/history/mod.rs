//! Configuration history (issue 16, item 4): the plan in force (sites, zones, PUE,
//! market factors, tariffs, inventory) is stored with the instant it applies from, every
//! hour's figures are made with the plan in force at that hour, and `empreinte
//! recompute` rewrites stored hours after a correction, keeping what they were.
//!
//! - A configuration whose plan differs from the stored one applies from the start of
//!   the next UTC hour when the collector starts (never to an hour already begun, so an
//!   hour is never made of two plans), unless `recompute --from` states an earlier
//!   instant: then the stored hours from that instant are recomputed with it.
//! - Entries that a later, earlier-starting plan replaces are kept, marked `replaced_ms`.
//! - A recomputation records, per local month, the figures before and after, and the
//!   rows keep pointing at coefficients: the old coefficient rows stay in `coefficients`.

pub mod recompute;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::{CollectorConfig, DefaultSite, InventoryItem, Site};
use crate::footprint::HostPlan;

/// What of the configuration makes a host's plan: stored as JSON with its dates.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanConfig {
    pub default_site: DefaultSite,
    #[serde(default)]
    pub sites: Vec<Site>,
    #[serde(default)]
    pub inventory: Vec<InventoryItem>,
}

impl PlanConfig {
    pub fn of(config: &CollectorConfig) -> PlanConfig {
        PlanConfig {
            default_site: config.default_site.clone(),
            sites: config.sites.clone(),
            inventory: config.inventory.clone(),
        }
    }

    /// The stored text (JSON, fields in a fixed order: equal plans give equal texts).
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_text(text: &str) -> Result<PlanConfig, String> {
        serde_json::from_str(text).map_err(|e| format!("a stored plan cannot be read: {e}"))
    }

    /// `base` with this plan's sections.
    pub fn apply_to(&self, base: &CollectorConfig) -> CollectorConfig {
        CollectorConfig {
            default_site: self.default_site.clone(),
            sites: self.sites.clone(),
            inventory: self.inventory.clone(),
            ..base.clone()
        }
    }
}

/// One stored plan and the instant it applies from.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PlanRecord {
    pub id: i64,
    /// Unix second from which the plan applies (until the next entry's).
    pub from_s: i64,
    pub recorded_ms: u64,
    /// [`PlanConfig`] as JSON.
    pub plan: String,
    /// When a plan starting earlier replaced it (it applies to nothing since).
    pub replaced_ms: Option<u64>,
}

/// The plans in force, as both engines read them ([`PlanRow`]): the same SQL on both.
pub const PLAN_HISTORY_SQL: &str =
    "SELECT id, from_s, recorded_ms, plan, replaced_ms FROM plan_history
         WHERE replaced_ms IS NULL ORDER BY from_s, id";

/// A row of [`PLAN_HISTORY_SQL`].
#[derive(sqlx::FromRow)]
pub struct PlanRow {
    id: i64,
    from_s: i64,
    recorded_ms: i64,
    plan: String,
    replaced_ms: Option<i64>,
}

impl From<PlanRow> for PlanRecord {
    fn from(r: PlanRow) -> PlanRecord {
        PlanRecord {
            id: r.id,
            from_s: r.from_s,
            recorded_ms: u64::try_from(r.recorded_ms).unwrap_or(0),
            plan: r.plan,
            replaced_ms: r.replaced_ms.and_then(|v| u64::try_from(v).ok()),
        }
    }
}

/// The figures of a local month, before or after a recomputation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MonthFigures {
    pub facility_uj: i64,
    pub location_ug: i64,
    pub market_ug: i64,
    pub embodied_ug: i64,
    pub cost_ueur: i64,
}

impl MonthFigures {
    pub fn add(&mut self, o: &MonthFigures) {
        self.facility_uj += o.facility_uj;
        self.location_ug += o.location_ug;
        self.market_ug += o.market_ug;
        self.embodied_ug += o.embodied_ug;
        self.cost_ueur += o.cost_ueur;
    }
}

/// A month a recomputation changed.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RecomputedMonth {
    /// Unix second where the local month (store's time zone) starts.
    pub month_s: i64,
    pub rows: u64,
    pub before: MonthFigures,
    pub after: MonthFigures,
    /// Ids (in `coefficients`) of the coefficients the rows had before.
    pub coefficients_before: Vec<i64>,
}

/// One run of `empreinte recompute`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Recomputation {
    pub id: i64,
    pub at_ms: u64,
    /// First hour recomputed (Unix second).
    pub from_s: i64,
    pub rows: u64,
    pub months: Vec<RecomputedMonth>,
}

/// The plan of a host at an hour: what a recomputation asks.
pub trait Replan: Send + Sync {
    fn plan_at(&self, host: &str, hour_s: i64) -> Arc<HostPlan>;
}

/// What the store is asked to recompute.
#[derive(Clone)]
pub struct RecomputeJob {
    /// First hour (Unix second, on the hour) whose rows are recomputed; every later row
    /// is too.
    pub from_s: i64,
    pub now_ms: u64,
    pub plans: Arc<dyn Replan>,
}

/// The start of the UTC hour after `now_ms`.
pub fn next_hour_s(now_ms: u64) -> i64 {
    i64::try_from(now_ms / 3_600_000 + 1).unwrap_or(i64::MAX / 3600) * 3600
}

/// Records the configuration's plan if it is not the one in force: from `from_s` when
/// given, else from the next hour (the very first plan applies from the beginning).
/// Gives the active history (oldest first).
pub async fn record(
    store: &dyn crate::store::Store,
    config: &CollectorConfig,
    from_s: Option<i64>,
    now_ms: u64,
) -> Result<Vec<PlanRecord>, crate::store::StoreError> {
    let text = PlanConfig::of(config).to_text();
    let history = store.plan_history().await?;
    let latest = history.last();
    let from = match (from_s, latest) {
        (Some(f), _) => f,
        (None, None) => 0,
        (None, Some(l)) if l.plan == text => return Ok(history),
        (None, Some(l)) => next_hour_s(now_ms).max(l.from_s + 3600),
    };
    // The same plan already in force from that instant, and nothing after it.
    let in_force = history.iter().rev().find(|r| r.from_s <= from);
    if in_force.is_some_and(|r| r.plan == text) && latest.is_some_and(|l| l.from_s <= from) {
        return Ok(history);
    }
    store.record_plan(from, &text, now_ms).await?;
    if let Some(l) = latest {
        tracing::info!(
            from = %crate::history::instant(from),
            previous_from = %crate::history::instant(l.from_s),
            "the configuration's plan (sites, PUE, factors, tariffs, inventory) changed: recorded, it applies from the stated instant"
        );
    }
    store.plan_history().await
}

/// An instant for people: `2025-10-15T00:00:00Z`.
pub fn instant(s: i64) -> String {
    jiff::Timestamp::from_second(s)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| s.to_string())
}

/// Configurations in force, oldest first, from the active history and the current
/// configuration (whose own entry is in the history).
pub fn configs(
    history: &[PlanRecord],
    current: &CollectorConfig,
) -> Result<Vec<(i64, Arc<CollectorConfig>)>, String> {
    let text = PlanConfig::of(current).to_text();
    history
        .iter()
        .map(|r| {
            if r.plan == text {
                return Ok((r.from_s, Arc::new(current.clone())));
            }
            let p = PlanConfig::from_text(&r.plan)?;
            Ok((r.from_s, Arc::new(p.apply_to(current))))
        })
        .collect()
}

/// A row of `recomputations` joined with one of `recomputed_months`, as both engines
/// read it ([`RECOMPUTATIONS_COLUMNS`]).
#[derive(sqlx::FromRow)]
pub struct RecomputedRow {
    id: i64,
    at_ms: i64,
    from_s: i64,
    rows: i64,
    month_s: i64,
    month_rows: i64,
    before_facility_uj: i64,
    before_location_ug: i64,
    before_market_ug: i64,
    before_embodied_ug: i64,
    before_cost_ueur: i64,
    after_facility_uj: i64,
    after_location_ug: i64,
    after_market_ug: i64,
    after_embodied_ug: i64,
    after_cost_ueur: i64,
    coefficients_before: String,
}

/// The columns both engines select for [`RecomputedRow`] (`r`: recomputations, `m`:
/// recomputed_months).
pub const RECOMPUTATIONS_COLUMNS: &str = "r.id, r.at_ms, r.from_s, r.rows, m.month_s,
    m.rows AS month_rows, m.before_facility_uj, m.before_location_ug, m.before_market_ug,
    m.before_embodied_ug, m.before_cost_ueur, m.after_facility_uj, m.after_location_ug,
    m.after_market_ug, m.after_embodied_ug, m.after_cost_ueur, m.coefficients_before";

/// Recomputations from their rows (ordered by id, then month).
pub fn recomputations_of(rows: Vec<RecomputedRow>) -> Vec<Recomputation> {
    let mut out: Vec<Recomputation> = Vec::new();
    for r in rows {
        let month = RecomputedMonth {
            month_s: r.month_s,
            rows: u64::try_from(r.month_rows).unwrap_or(0),
            before: MonthFigures {
                facility_uj: r.before_facility_uj,
                location_ug: r.before_location_ug,
                market_ug: r.before_market_ug,
                embodied_ug: r.before_embodied_ug,
                cost_ueur: r.before_cost_ueur,
            },
            after: MonthFigures {
                facility_uj: r.after_facility_uj,
                location_ug: r.after_location_ug,
                market_ug: r.after_market_ug,
                embodied_ug: r.after_embodied_ug,
                cost_ueur: r.after_cost_ueur,
            },
            coefficients_before: r
                .coefficients_before
                .split(',')
                .filter_map(|c| c.parse().ok())
                .collect(),
        };
        match out.last_mut() {
            Some(last) if last.id == r.id => last.months.push(month),
            _ => out.push(Recomputation {
                id: r.id,
                at_ms: u64::try_from(r.at_ms).unwrap_or(0),
                from_s: r.from_s,
                rows: u64::try_from(r.rows).unwrap_or(0),
                months: vec![month],
            }),
        }
    }
    out
}
