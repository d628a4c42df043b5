//! The writer's in-memory state: what a group of pushes adds (summed per key), a run's
//! stored sequence numbers and counters, hourly rows as last written, and the checked
//! conversions to SQLite's integers.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use empreinte_shared::{Component, SourceKind};
use rusqlite::{OptionalExtension, params};

use super::super::super::runs::{self, RunCounters, RunSeqs};
use crate::footprint::HostPlan;

pub(super) fn to_i64(v: u64) -> rusqlite::Result<i64> {
    i64::try_from(v).map_err(|_| {
        rusqlite::Error::ToSqlConversionFailure(format!("{v} is past i64::MAX").into())
    })
}

pub(super) fn to_u64(v: i64) -> rusqlite::Result<u64> {
    u64::try_from(v).map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Integer,
            format!("a stored quantity is negative ({v})").into(),
        )
    })
}

pub(super) fn overflow(what: &str) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(format!("{what} would pass u64::MAX").into())
}

/// What a commit adds to one hourly row.
pub(super) struct HourAdd {
    pub(super) energy: u64,
    pub(super) embodied: u64,
    pub(super) plan: Arc<HostPlan>,
    pub(super) g_per_kwh: f64,
    pub(super) import_id: Option<i64>,
}

#[derive(Clone, Copy)]
pub(super) struct PlanCoefs {
    pub(super) pue: i64,
    pub(super) grid: i64,
    pub(super) market: Option<i64>,
    pub(super) embodied: Option<i64>,
}

pub(super) type HourKey = (i64, String, Component, SourceKind);

/// Everything a group of pushes adds, summed per key: one commit's pushes, or every push
/// logged since the last fold.
#[derive(Default)]
pub(super) struct Group {
    /// Per host: hourly rows.
    pub(super) hours: BTreeMap<(String, HourKey), HourAdd>,
    /// `(host, hour_s)` → energy stored after this group.
    pub(super) host_hours: HashMap<(String, i64), u64>,
    /// `(agent, run)` → the run after this group, with its stored energy and times.
    pub(super) runs: HashMap<(String, String), RunState>,
    pub(super) agents: BTreeMap<String, AgentRow>,
    /// Plans first used in this group, in the order of their pushes (their new
    /// coefficients are stored in that order).
    pub(super) plans: Vec<Arc<HostPlan>>,
    pub(super) inference: super::super::inference::InferenceGroup,
    /// The amortised hardware cost of the new batches (`crate::cost::hardware`).
    pub(super) hardware: crate::cost::hardware::HardwareDeltas,
}

impl Group {
    pub(super) fn is_empty(&self) -> bool {
        self.hours.is_empty() && self.runs.is_empty() && self.agents.is_empty()
    }

    /// Adds a later group: its sums to this one's, its runs, host hours and agents over
    /// this one's (they are the state after it).
    pub(super) fn merge(&mut self, later: Group) {
        for (k, add) in later.hours {
            match self.hours.entry(k) {
                std::collections::btree_map::Entry::Occupied(mut o) => {
                    let e = o.get_mut();
                    e.energy = e.energy.saturating_add(add.energy);
                    e.embodied = e.embodied.saturating_add(add.embodied);
                }
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(add);
                }
            }
        }
        self.host_hours.extend(later.host_hours);
        for (k, mut r) in later.runs {
            if let Some(before) = self.runs.get(&k) {
                r.holes_changed |= before.holes_changed;
            }
            self.runs.insert(k, r);
        }
        self.plans.extend(later.plans);
        self.inference.merge(later.inference);
        self.hardware.merge(later.hardware);
        for (k, mut a) in later.agents {
            if let Some(before) = self.agents.get(&k) {
                a.last_end_ms = a.last_end_ms.max(before.last_end_ms);
            }
            self.agents.insert(k, a);
        }
    }
}

#[derive(Clone, Debug)]
pub(super) struct RunState {
    pub(super) seqs: RunSeqs,
    pub(super) stored_uj: u64,
    pub(super) first_ms: u64,
    pub(super) last_ms: u64,
    pub(super) counters: RunCounters,
    pub(super) holes_changed: bool,
}

fn parse_counters(text: &str) -> rusqlite::Result<RunCounters> {
    runs::parse_counters(text).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            "runs.counters is not in its format".into(),
        )
    })
}

pub(super) struct AgentRow {
    pub(super) hostname: String,
    pub(super) version: String,
    pub(super) now_ms: u64,
    pub(super) last_end_ms: Option<u64>,
    pub(super) waiting: u64,
    pub(super) bytes: u64,
    pub(super) oldest_ms: Option<u64>,
    pub(super) dropped: u64,
}

/// An hourly row as the writer last wrote it (the writer is the only one to write
/// them, so a cached row is the stored row).
#[derive(Clone, Debug)]
pub(super) struct CachedRow {
    pub(super) energy: i64,
    pub(super) facility: i64,
    pub(super) location: i64,
    pub(super) market: Option<i64>,
    pub(super) embodied: i64,
    pub(super) pue: f64,
    pub(super) g: f64,
    pub(super) market_g: Option<f64>,
    pub(super) site: String,
    pub(super) zone: String,
    pub(super) emb_coef: Option<i64>,
}

pub(super) type RowCache = HashMap<(String, HourKey), CachedRow>;

/// The most hourly rows the writer keeps in memory (the current hours of a large fleet).
pub(super) const MAX_CACHED_ROWS: usize = 100_000;

pub(super) fn load_run(
    tx: &rusqlite::Connection,
    agent: &str,
    run: &str,
) -> rusqlite::Result<Option<RunState>> {
    let row = tx
        .prepare_cached(
            "SELECT hwm, stored_uj, first_ms, last_ms, counters FROM runs WHERE agent_id = ? AND run_id = ?",
        )?
        .query_row(params![agent, run], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, String>(4)?,
            ))
        })
        .optional()?;
    let Some((hwm, stored, first, last, counters)) = row else {
        return Ok(None);
    };
    let mut holes = Vec::new();
    let mut st = tx.prepare_cached(
        "SELECT from_seq, to_seq FROM run_holes WHERE agent_id = ? AND run_id = ? ORDER BY from_seq",
    )?;
    let mut rows = st.query(params![agent, run])?;
    while let Some(r) = rows.next()? {
        holes.push((to_u64(r.get(0)?)?, to_u64(r.get(1)?)?));
    }
    Ok(Some(RunState {
        seqs: RunSeqs {
            hwm: to_u64(hwm)?,
            holes,
        },
        stored_uj: to_u64(stored)?,
        first_ms: to_u64(first)?,
        last_ms: to_u64(last)?,
        counters: parse_counters(&counters)?,
        holes_changed: false,
    }))
}
