//! Staging: one push checked against the store (values SQLite can hold, batches not
//! stored yet, a run's holes, a host's energy per hour) and, when accepted, added to the
//! group. Nothing of a refused push reaches the group.

use std::collections::{BTreeMap, HashMap, hash_map::Entry};

use empreinte_shared::wire::WireProblem;
use empreinte_shared::{Component, SourceKind};
use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, params};

use super::super::super::runs::{self, MAX_HOLES, RunSeqs};
use super::super::super::{AddedPart, IngestOutcome, StoreError};
use super::state::{AgentRow, Group, HourAdd, RunState, load_run, to_u64};
use super::{PreparedBatch, PreparedPush};
use crate::footprint::{HostPlan, operational_ug};

/// What staging reads besides the database: the state as last logged (or committed).
pub(super) struct Ctx<'a> {
    pub(super) runs: &'a HashMap<(String, String), RunState>,
    pub(super) host_hours: &'a HashMap<(String, i64), u64>,
    pub(super) max_hour_uj: u64,
    /// zone → hour → (g/kWh, import): looked up by `&str`, a zone's name is copied once.
    pub(super) intensity: HashMap<String, HashMap<i64, (f64, Option<i64>)>>,
    /// The plan each host was last staged with: a push with the same plan shares it.
    pub(super) plans: &'a mut HashMap<String, Arc<HostPlan>>,
    /// Replaying the log at start: these pushes were acknowledged, so they are stored
    /// whatever the checks say now (a limit lowered since is not applied to them).
    pub(super) replay: bool,
}

fn intensity_of(
    tx: &Connection,
    ctx: &mut Ctx<'_>,
    plan: &HostPlan,
    hour_s: i64,
) -> rusqlite::Result<(f64, Option<i64>)> {
    if let Some(v) = ctx
        .intensity
        .get(plan.zone.as_str())
        .and_then(|hours| hours.get(&hour_s))
    {
        return Ok(*v);
    }
    let v = tx
        .prepare_cached(
            "SELECT g_per_kwh, import_id FROM intensity_hourly WHERE zone = ? AND hour_s = ?",
        )?
        .query_row(params![plan.zone, hour_s], |r| {
            Ok((r.get(0)?, Some(r.get(1)?)))
        })
        .optional()?
        .unwrap_or((plan.grid_default.value, None));
    ctx.intensity
        .entry(plan.zone.clone())
        .or_default()
        .insert(hour_s, v);
    Ok(v)
}

/// One push while it is checked: its problems, its outcome, and its view of its runs and
/// host hours (merged into the group if it is accepted).
struct Check<'p> {
    host: &'p str,
    problems: Vec<WireProblem>,
    outcome: IngestOutcome,
    runs: HashMap<(String, String), RunState>,
    /// Energy this push adds per hour.
    hour_sums: BTreeMap<i64, u64>,
    /// Per hour over the host's bound, the first batch that brings energy to it.
    first_over: BTreeMap<i64, usize>,
    new_batches: Vec<&'p PreparedBatch>,
}

impl Check<'_> {
    fn problem(&mut self, path: String, message: String) {
        self.problems.push(WireProblem { path, message });
    }
}

fn past_max(v: u64) -> String {
    format!("{v} is larger than the largest value stored ({})", i64::MAX)
}

/// Checks one push against the store and adds it to the group; nothing of a refused
/// push reaches the group.
pub(super) fn stage(
    tx: &Connection,
    ctx: &mut Ctx<'_>,
    g: &mut Group,
    p: &PreparedPush,
) -> rusqlite::Result<Result<IngestOutcome, StoreError>> {
    let mut c = Check {
        host: p.agent.agent_id.as_str(),
        problems: Vec::new(),
        outcome: IngestOutcome::default(),
        runs: HashMap::new(),
        hour_sums: BTreeMap::new(),
        first_over: BTreeMap::new(),
        new_batches: Vec::new(),
    };
    spool_problems(p, &mut c);
    for (i, b) in p.batches.iter().enumerate() {
        batch_value_problems(i, b, &mut c);
        admit(tx, ctx, g, p.now_ms, i, b, &mut c)?;
    }
    hour_problems(g, ctx.max_hour_uj, &mut c);
    if !c.problems.is_empty() {
        if !ctx.replay {
            return Ok(Err(StoreError::Rejected(c.problems)));
        }
        tracing::warn!(agent = c.host, problems = ?c.problems, "a logged push fails today's checks; it was acknowledged, so it is stored");
    }
    accept(tx, ctx, g, p, c).map(Ok)
}

fn spool_problems(p: &PreparedPush, c: &mut Check<'_>) {
    for (field, v) in [
        ("spool.batches", Some(p.spool.batches)),
        ("spool.bytes", Some(p.spool.bytes)),
        ("spool.oldest_start_unix_ms", p.spool.oldest_start_unix_ms),
        (
            "spool.dropped_batches_total",
            Some(p.spool.dropped_batches_total),
        ),
    ] {
        if let Some(v) = v.filter(|&v| i64::try_from(v).is_err()) {
            c.problem(field.to_string(), past_max(v));
        }
    }
}

fn batch_value_problems(i: usize, b: &PreparedBatch, c: &mut Check<'_>) {
    for (field, v) in [
        ("seq", b.seq),
        ("start_unix_ms", b.start_ms),
        ("end_unix_ms", b.end_ms),
    ] {
        if i64::try_from(v).is_err() {
            c.problem(format!("batches[{i}].{field}"), past_max(v));
        }
    }
    for (k, counter) in b.counters.iter().enumerate() {
        if i64::try_from(counter.total_uj).is_err() {
            c.problem(
                format!("batches[{i}].counters[{k}].total_uj"),
                format!(
                    "{} µJ is larger than the largest value stored ({} µJ)",
                    counter.total_uj,
                    i64::MAX
                ),
            );
        }
    }
}

/// A run as this group last left it, as last committed, as stored, or new.
fn run_state(
    tx: &Connection,
    ctx: &Ctx<'_>,
    g: &Group,
    key: &(String, String),
    now_ms: u64,
) -> rusqlite::Result<RunState> {
    if let Some(s) = g.runs.get(key).or_else(|| ctx.runs.get(key)) {
        return Ok(s.clone());
    }
    Ok(load_run(tx, &key.0, &key.1)?.unwrap_or(RunState {
        seqs: RunSeqs::default(),
        stored_uj: 0,
        first_ms: now_ms,
        last_ms: now_ms,
        counters: BTreeMap::new(),
        holes_changed: false,
    }))
}

/// One batch: a duplicate is counted and skipped; a new one moves its run (sequence
/// numbers, stored energy, latest counters) and its host's hours.
fn admit<'p>(
    tx: &Connection,
    ctx: &Ctx<'_>,
    g: &mut Group,
    now_ms: u64,
    i: usize,
    b: &'p PreparedBatch,
    c: &mut Check<'p>,
) -> rusqlite::Result<()> {
    let key = (c.host.to_string(), b.run_id.clone());
    let run = match c.runs.entry(key.clone()) {
        Entry::Occupied(o) => o.into_mut(),
        Entry::Vacant(v) => v.insert(run_state(tx, ctx, g, &key, now_ms)?),
    };
    let holes_before = run.seqs.holes.len();
    if b.seq == 0 || !run.seqs.insert(b.seq) {
        c.outcome.ack.duplicates += 1;
        return Ok(());
    }
    if run.seqs.holes.len() != holes_before || holes_before > 0 {
        run.holes_changed = true;
    }
    let mut problems = Vec::new();
    if run.seqs.holes.len() > MAX_HOLES {
        problems.push((
            format!("batches[{i}].seq"),
            format!(
                "run {} would have more than {MAX_HOLES} missing sequence numbers",
                b.run_id
            ),
        ));
    }
    c.outcome.ack.accepted += 1;
    let energy: u128 = b.deltas.iter().map(|d| u128::from(d.energy_uj)).sum();
    match u64::try_from(u128::from(run.stored_uj) + energy)
        .ok()
        .filter(|&v| i64::try_from(v).is_ok())
    {
        Some(v) => run.stored_uj = v,
        None => problems.push((
            format!("batches[{i}].records"),
            format!("the run's stored energy would pass {} µJ", i64::MAX),
        )),
    }
    run.last_ms = run.last_ms.max(now_ms);
    for k in &b.counters {
        let key = (k.project.as_str(), k.component.as_str(), k.source.as_str());
        runs::keep_reading(&mut run.counters, key, k.total_uj, b.end_ms);
    }
    if !b.counters.is_empty() {
        problems.extend(runs::counters_overflow(i, &run.counters));
    }
    for (path, message) in problems {
        c.problem(path, message);
    }
    host_hours(tx, ctx, g, i, b, c)?;
    c.new_batches.push(b);
    Ok(())
}

/// Adds a new batch's energy to its host's hours, noting hours past the host's bound.
fn host_hours(
    tx: &Connection,
    ctx: &Ctx<'_>,
    g: &mut Group,
    i: usize,
    b: &PreparedBatch,
    c: &mut Check<'_>,
) -> rusqlite::Result<()> {
    // A batch's parts (a project and component each) fall in one hour or two: summed per
    // hour first, each hour is looked up once.
    let mut hours: Vec<(i64, u64)> = Vec::with_capacity(2);
    for d in &b.deltas {
        match hours.iter_mut().find(|(h, _)| *h == d.hour_s) {
            Some((_, uj)) => *uj = uj.saturating_add(d.energy_uj),
            None => hours.push((d.hour_s, d.energy_uj)),
        }
    }
    for (hour_s, uj) in hours {
        let e = c.hour_sums.entry(hour_s).or_default();
        *e = e.saturating_add(uj);
        let hk = (c.host.to_string(), hour_s);
        let before = match g.host_hours.get(&hk).or_else(|| ctx.host_hours.get(&hk)) {
            Some(v) => *v,
            None => tx
                .prepare_cached("SELECT energy_uj FROM host_hours WHERE host = ? AND hour_s = ?")?
                .query_row(params![c.host, hour_s], |r| r.get::<_, i64>(0))
                .optional()?
                .map(to_u64)
                .transpose()?
                .unwrap_or(0),
        };
        g.host_hours.entry(hk).or_insert(before);
        if before.saturating_add(*e) > ctx.max_hour_uj {
            c.first_over.entry(hour_s).or_insert(i);
        }
    }
    Ok(())
}

fn hour_problems(g: &Group, max_hour_uj: u64, c: &mut Check<'_>) {
    let host = c.host;
    let over: Vec<(i64, usize)> = c.first_over.iter().map(|(h, i)| (*h, *i)).collect();
    for (hour_s, i) in over {
        let before = g
            .host_hours
            .get(&(host.to_string(), hour_s))
            .copied()
            .unwrap_or(0);
        let total = before.saturating_add(c.hour_sums.get(&hour_s).copied().unwrap_or(0));
        c.problem(
            format!("batches[{i}].records"),
            format!(
                "host {host} would have {total} µJ in the hour starting at {}, more than max_host_power_watts for one hour ({max_hour_uj} µJ): batches overlap or a counter is wrong",
                jiff::Timestamp::from_second(hour_s)
                    .map(|t| t.to_string())
                    .unwrap_or_default(),
            ),
        );
    }
}

/// An accepted push into the group: its runs and host hours, its new batches' energy
/// summed per hourly row, its agent's row. Gives its outcome.
fn accept(
    tx: &Connection,
    ctx: &mut Ctx<'_>,
    g: &mut Group,
    p: &PreparedPush,
    c: Check<'_>,
) -> rusqlite::Result<IngestOutcome> {
    let Check {
        host,
        mut outcome,
        runs,
        hour_sums,
        new_batches,
        ..
    } = c;
    let plan = match ctx.plans.get(host) {
        Some(shared) if Arc::ptr_eq(shared, &p.plan) || **shared == *p.plan => shared.clone(),
        _ => {
            ctx.plans.insert(host.to_string(), p.plan.clone());
            g.plans.push(p.plan.clone());
            p.plan.clone()
        }
    };
    let plan = &plan;
    for (hour_s, e) in hour_sums {
        if let Some(v) = g.host_hours.get_mut(&(host.to_string(), hour_s)) {
            *v = v.saturating_add(e);
        }
    }
    g.runs.extend(runs);
    let mut parts: BTreeMap<(i64, &str, Component, SourceKind), (u64, u64)> = BTreeMap::new();
    for b in &new_batches {
        g.inference.add(host, &b.inference);
        g.hardware
            .add_batch(host, plan, b.start_ms, b.end_ms, &b.deltas);
        for d in &b.deltas {
            let e = parts
                .entry((d.hour_s, d.project.as_str(), d.component, d.source))
                .or_default();
            e.0 += d.energy_uj;
            e.1 += d.embodied_ug;
        }
    }
    for ((hour_s, project, component, source), (energy, embodied)) in parts {
        let (g_per_kwh, import_id) = intensity_of(tx, ctx, plan, hour_s)?;
        outcome.added.push(AddedPart {
            project: project.to_string(),
            component,
            energy_uj: energy,
            location_ug: operational_ug(energy, plan.pue.value, g_per_kwh),
            market_ug: plan
                .market
                .as_ref()
                .map(|m| operational_ug(energy, plan.pue.value, m.value)),
            embodied_ug: embodied,
        });
        let add = g
            .hours
            .entry((
                host.to_string(),
                (hour_s, project.to_string(), component, source),
            ))
            .or_insert_with(|| HourAdd {
                energy: 0,
                embodied: 0,
                plan: plan.clone(),
                g_per_kwh,
                import_id,
            });
        add.energy += energy;
        add.embodied += embodied;
    }
    let row = agent_row(g, host, p);
    g.agents.insert(host.to_string(), row);
    Ok(outcome)
}

/// The agent's row after this push: what it last pushed and its spool's state.
fn agent_row(g: &Group, host: &str, p: &PreparedPush) -> AgentRow {
    let last_end = p.batches.iter().map(|b| b.end_ms).max();
    let waiting = p.spool.batches.saturating_sub(p.batches.len() as u64);
    AgentRow {
        hostname: p.agent.hostname.clone(),
        version: p.agent.agent_version.clone(),
        now_ms: p.now_ms,
        last_end_ms: match (g.agents.get(host).and_then(|a| a.last_end_ms), last_end) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        },
        waiting,
        bytes: if waiting == 0 { 0 } else { p.spool.bytes },
        oldest_ms: if waiting == 0 {
            None
        } else {
            p.spool.oldest_start_unix_ms
        },
        dropped: p.spool.dropped_batches_total,
    }
}
