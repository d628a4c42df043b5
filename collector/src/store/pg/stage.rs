//! Checking a push against the stored runs and host hours: the SQLite writer's `stage`,
//! for one push (the same problems, paths and messages refuse it).

use std::collections::{BTreeMap, HashMap};

use empreinte_shared::wire::{Batch, SpoolStatus, WireProblem};
use empreinte_shared::{Component, SourceKind};

use super::super::runs::{self, MAX_HOLES, RunCounters, RunSeqs};
use super::super::{IngestOutcome, IngestSet, StoreError};

/// A run as stored, and as this push leaves it.
#[derive(Clone, Debug)]
pub(super) struct RunState {
    pub(super) seqs: RunSeqs,
    pub(super) stored_uj: u64,
    pub(super) first_ms: u64,
    pub(super) last_ms: u64,
    pub(super) counters: RunCounters,
    pub(super) holes_changed: bool,
    pub(super) is_new: bool,
}

pub(super) fn parse_counters(text: &str) -> Result<RunCounters, StoreError> {
    runs::parse_counters(text)
        .ok_or_else(|| StoreError::Corrupt("runs.counters is not in its format".into()))
}

pub(super) fn q(v: i64, what: &str) -> Result<u64, StoreError> {
    super::super::rows::quantity(v, what)
}

pub(super) fn to_i64(v: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Write(format!("{what} ({v}) is past i64::MAX")))
}

/// What a push adds once checked: nothing of a refused push gets this far.
pub(super) struct Staged {
    pub(super) outcome: IngestOutcome,
    pub(super) runs: HashMap<String, RunState>,
    /// `hour_s` → the host's energy in that hour after this push.
    pub(super) host_hours: BTreeMap<i64, u64>,
    /// `(hour, project, component, source)` → (energy, embodied).
    pub(super) parts: BTreeMap<(i64, String, Component, SourceKind), (u64, u64)>,
    pub(super) last_end: Option<u64>,
    /// The amortised hardware cost of the new batches (`crate::cost::hardware`).
    pub(super) hardware: crate::cost::hardware::HardwareDeltas,
    /// The indices of the push's new batches (their inference counts are written).
    pub(super) new_batches: Vec<usize>,
}

/// The SQLite writer's `stage`, for one push: which batches are new, and every problem
/// that refuses the push (the same paths and messages).
pub(super) fn stage(
    set: &IngestSet<'_>,
    mut stored_runs: HashMap<String, RunState>,
    stored_hours: &HashMap<i64, u64>,
    max_hour_uj: u64,
) -> Result<Staged, StoreError> {
    let host = set.agent.agent_id.as_str();
    let mut problems: Vec<WireProblem> = Vec::new();
    let mut problem = |path: String, message: String| problems.push(WireProblem { path, message });
    let mut outcome = IngestOutcome::default();
    let mut runs: HashMap<String, RunState> = HashMap::new();
    let mut hour_sums: BTreeMap<i64, u64> = BTreeMap::new();
    let mut first_over: BTreeMap<i64, usize> = BTreeMap::new();
    let mut new_batches: Vec<usize> = Vec::new();
    check_spool(set.spool, &mut problem);
    for (i, (b, deltas)) in set.batches.iter().enumerate() {
        check_batch_fields(i, b, &mut problem);
        let run = runs.entry(b.run_id.clone()).or_insert_with(|| {
            stored_runs.remove(&b.run_id).unwrap_or(RunState {
                seqs: RunSeqs::default(),
                stored_uj: 0,
                first_ms: set.now_ms,
                last_ms: set.now_ms,
                counters: BTreeMap::new(),
                holes_changed: false,
                is_new: true,
            })
        });
        let holes_before = run.seqs.holes.len();
        if b.seq == 0 || !run.seqs.insert(b.seq) {
            outcome.ack.duplicates += 1;
            continue;
        }
        if run.seqs.holes.len() != holes_before || holes_before > 0 {
            run.holes_changed = true;
        }
        if run.seqs.holes.len() > MAX_HOLES {
            problem(
                format!("batches[{i}].seq"),
                format!(
                    "run {} would have more than {MAX_HOLES} missing sequence numbers",
                    b.run_id
                ),
            );
        }
        outcome.ack.accepted += 1;
        let energy: u128 = deltas.iter().map(|d| u128::from(d.energy_uj)).sum();
        match u64::try_from(u128::from(run.stored_uj) + energy)
            .ok()
            .filter(|&v| i64::try_from(v).is_ok())
        {
            Some(v) => run.stored_uj = v,
            None => problem(
                format!("batches[{i}].records"),
                format!("the run's stored energy would pass {} µJ", i64::MAX),
            ),
        }
        run.last_ms = run.last_ms.max(set.now_ms);
        add_counters(run, i, b, &mut problem);
        for d in deltas {
            let e = hour_sums.entry(d.hour_s).or_default();
            *e = e.saturating_add(d.energy_uj);
            let before = stored_hours.get(&d.hour_s).copied().unwrap_or(0);
            if before.saturating_add(*e) > max_hour_uj {
                first_over.entry(d.hour_s).or_insert(i);
            }
        }
        new_batches.push(i);
    }
    power_problems(
        host,
        &first_over,
        &hour_sums,
        stored_hours,
        max_hour_uj,
        &mut problem,
    );
    if !problems.is_empty() {
        return Err(StoreError::Rejected(problems));
    }
    let host_hours = hour_sums
        .iter()
        .map(|(h, e)| {
            let before = stored_hours.get(h).copied().unwrap_or(0);
            (*h, before.saturating_add(*e))
        })
        .collect();
    let parts = parts_of(set, &new_batches);
    let last_end = set.batches.iter().map(|(b, _)| b.end_unix_ms).max();
    let mut hardware = crate::cost::hardware::HardwareDeltas::default();
    for &i in &new_batches {
        let (b, deltas) = &set.batches[i];
        hardware.add_batch(host, set.plan, b.start_unix_ms, b.end_unix_ms, deltas);
    }
    Ok(Staged {
        outcome,
        runs,
        host_hours,
        parts,
        last_end,
        hardware,
        new_batches,
    })
}

/// The spool figures a collector stores must fit in an `i64`.
fn check_spool(sp: &SpoolStatus, problem: &mut impl FnMut(String, String)) {
    for (field, v) in [
        ("spool.batches", Some(sp.batches)),
        ("spool.bytes", Some(sp.bytes)),
        ("spool.oldest_start_unix_ms", sp.oldest_start_unix_ms),
        (
            "spool.dropped_batches_total",
            Some(sp.dropped_batches_total),
        ),
    ] {
        if let Some(v) = v.filter(|&v| i64::try_from(v).is_err()) {
            problem(
                field.to_string(),
                format!("{v} is larger than the largest value stored ({})", i64::MAX),
            );
        }
    }
}

/// The batch's counters kept as the run's latest, and refused past `i64::MAX` in total.
fn add_counters(run: &mut RunState, i: usize, b: &Batch, problem: &mut impl FnMut(String, String)) {
    for c in &b.counters {
        let key = (c.project.as_str(), c.component.as_str(), c.source.as_str());
        runs::keep_reading(&mut run.counters, key, c.total_uj, b.end_unix_ms);
    }
    if b.counters.is_empty() {
        return;
    }
    if let Some((path, message)) = runs::counters_overflow(i, &run.counters) {
        problem(path, message);
    }
}

/// One problem per hour where the host would draw more than it can.
fn power_problems(
    host: &str,
    first_over: &BTreeMap<i64, usize>,
    hour_sums: &BTreeMap<i64, u64>,
    stored_hours: &HashMap<i64, u64>,
    max_hour_uj: u64,
    problem: &mut impl FnMut(String, String),
) {
    for (hour_s, i) in first_over {
        let before = stored_hours.get(hour_s).copied().unwrap_or(0);
        problem(
            format!("batches[{i}].records"),
            format!(
                "host {host} would have {} µJ in the hour starting at {}, more than max_host_power_watts for one hour ({} µJ): batches overlap or a counter is wrong",
                before.saturating_add(hour_sums.get(hour_s).copied().unwrap_or(0)),
                jiff::Timestamp::from_second(*hour_s)
                    .map(|t| t.to_string())
                    .unwrap_or_default(),
                max_hour_uj
            ),
        );
    }
}

/// The new batches' energy and embodied emissions per (hour, project, component, source).
fn parts_of(
    set: &IngestSet<'_>,
    new_batches: &[usize],
) -> BTreeMap<(i64, String, Component, SourceKind), (u64, u64)> {
    let mut parts: BTreeMap<(i64, String, Component, SourceKind), (u64, u64)> = BTreeMap::new();
    for &i in new_batches {
        for d in &set.batches[i].1 {
            let e = parts
                .entry((d.hour_s, d.project.clone(), d.component, d.source))
                .or_default();
            e.0 += d.energy_uj;
            e.1 += d.embodied_ug;
        }
    }
    parts
}

fn check_batch_fields(i: usize, b: &Batch, problem: &mut impl FnMut(String, String)) {
    for (field, v) in [
        ("seq", b.seq),
        ("start_unix_ms", b.start_unix_ms),
        ("end_unix_ms", b.end_unix_ms),
    ] {
        if i64::try_from(v).is_err() {
            problem(
                format!("batches[{i}].{field}"),
                format!("{v} is larger than the largest value stored ({})", i64::MAX),
            );
        }
    }
    for (c, counter) in b.counters.iter().enumerate() {
        if i64::try_from(counter.total_uj).is_err() {
            problem(
                format!("batches[{i}].counters[{c}].total_uj"),
                format!(
                    "{} µJ is larger than the largest value stored ({} µJ)",
                    counter.total_uj,
                    i64::MAX
                ),
            );
        }
    }
}
