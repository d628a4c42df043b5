//! A push into PostgreSQL: one transaction, under the store-wide lock (shared) and the
//! agent's lock, so that whichever collector takes a push, the decision "is this batch
//! new?" is made by one transaction at a time for an agent and stored with the batch's
//! energy. The checks and the arithmetic are those of the SQLite writer
//! (`store/sqlite/writer.rs`): the same problems refuse a push, the same rows result;
//! `collector/tests/store_engines.rs` holds both engines to it.
//!
//! Lock order (no deadlock between collectors by construction): store lock, agent lock,
//! then rows of this agent's host; the only rows several agents share
//! (`coefficient_use`, `zone_hours`, `coefficients`) are written in key order, and a
//! deadlock or serialization failure that still happens is retried whole.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use empreinte_shared::wire::{Batch, WireProblem};
use empreinte_shared::{Component, SourceKind};
use sqlx::{Postgres, Transaction};

use super::super::runs::{MAX_HOLES, RunSeqs};
use super::super::sqlite::writer::facility_uj;
use super::super::{AddedPart, IngestOutcome, IngestSet, StoreError};
use super::{AGENT_LOCK_SPACE, PgStore, STORE_LOCK, busy_or, retryable};
use crate::footprint::{Coefficient, HostPlan, operational_ug};

/// How many times a push's transaction is tried when another collector's transaction
/// made it fail (deadlock, serialization failure).
const MAX_TRIES: u32 = 8;

pub async fn ingest(store: &PgStore, set: &IngestSet<'_>) -> Result<IngestOutcome, StoreError> {
    let mut tries = 0;
    loop {
        tries += 1;
        let mut committed_coefs = Vec::new();
        match once(store, set, &mut committed_coefs).await {
            Ok(outcome) => {
                if let Ok(mut ids) = store.coef_ids.lock() {
                    ids.extend(committed_coefs);
                }
                maybe_retain(store).await;
                return Ok(outcome);
            }
            Err(e) if retryable(&e) && tries < MAX_TRIES => {
                tracing::debug!(error = %e, tries, "a push's transaction is tried again");
                tokio::time::sleep(std::time::Duration::from_millis(5 << tries.min(6))).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// A step of retention, at most once an hour per collector (any collector may do it:
/// it takes the store-wide lock alone).
async fn maybe_retain(store: &PgStore) {
    use std::sync::atomic::Ordering;
    let Some(keep_s) = store.retention_s else {
        return;
    };
    let now_s = i64::try_from(crate::clock::now_unix_ms() / 1000).unwrap_or(i64::MAX);
    let last = store.last_retention_s.load(Ordering::Relaxed);
    if now_s - last < 3600
        || store
            .last_retention_s
            .compare_exchange(last, now_s, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        return;
    }
    match super::maintain::compact(store, now_s.saturating_sub(keep_s), 7).await {
        Ok(0) => {}
        Ok(rows) => tracing::info!(
            rows,
            "hourly rows past the retention horizon compacted into the daily rollups"
        ),
        Err(e) => tracing::warn!(error = %e, "cannot compact old hourly rows"),
    }
}

/// A run as stored, and as this push leaves it.
#[derive(Clone, Debug)]
struct RunState {
    seqs: RunSeqs,
    stored_uj: u64,
    first_ms: u64,
    last_ms: u64,
    counters: RunCounters,
    holes_changed: bool,
    is_new: bool,
}

impl RunState {
    fn counters_text(&self) -> String {
        let mut out = String::new();
        for ((p, c, s), (total, at)) in &self.counters {
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(&format!("{p}\t{c}\t{s}\t{total}\t{at}"));
        }
        out
    }

    fn counted_uj(&self) -> u128 {
        self.counters.values().map(|(t, _)| u128::from(*t)).sum()
    }
}

/// `(project, component, source)` → latest `(total_uj, at_ms)`.
type RunCounters = BTreeMap<(String, String, String), (u64, u64)>;

fn parse_counters(text: &str) -> Result<RunCounters, StoreError> {
    let bad = || StoreError::Corrupt("runs.counters is not in its format".into());
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let f: Vec<&str> = line.split('\t').collect();
        let [p, c, s, t, a] = f.as_slice() else {
            return Err(bad());
        };
        out.insert(
            (p.to_string(), c.to_string(), s.to_string()),
            (t.parse().map_err(|_| bad())?, a.parse().map_err(|_| bad())?),
        );
    }
    Ok(out)
}

fn q(v: i64, what: &str) -> Result<u64, StoreError> {
    super::rows::quantity(v, what)
}

fn to_i64(v: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Write(format!("{what} ({v}) is past i64::MAX")))
}

async fn load_runs(
    tx: &mut Transaction<'_, Postgres>,
    agent: &str,
    run_ids: &[String],
) -> Result<HashMap<String, RunState>, StoreError> {
    let rows: Vec<(String, i64, i64, i64, i64, String)> = sqlx::query_as(
        "SELECT run_id, hwm, stored_uj, first_ms, last_ms, counters FROM runs
         WHERE agent_id = $1 AND run_id = ANY($2)",
    )
    .bind(agent)
    .bind(run_ids)
    .fetch_all(&mut **tx)
    .await?;
    let mut out = HashMap::new();
    for (run, hwm, stored, first, last, counters) in rows {
        out.insert(
            run,
            RunState {
                seqs: RunSeqs {
                    hwm: q(hwm, "runs.hwm")?,
                    holes: Vec::new(),
                },
                stored_uj: q(stored, "runs.stored_uj")?,
                first_ms: q(first, "runs.first_ms")?,
                last_ms: q(last, "runs.last_ms")?,
                counters: parse_counters(&counters)?,
                holes_changed: false,
                is_new: false,
            },
        );
    }
    let holes: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT run_id, from_seq, to_seq FROM run_holes WHERE agent_id = $1 AND run_id = ANY($2)
         ORDER BY run_id, from_seq",
    )
    .bind(agent)
    .bind(run_ids)
    .fetch_all(&mut **tx)
    .await?;
    for (run, a, b) in holes {
        if let Some(r) = out.get_mut(&run) {
            r.seqs
                .holes
                .push((q(a, "run_holes.from_seq")?, q(b, "run_holes.to_seq")?));
        }
    }
    Ok(out)
}

/// What a push adds once checked: nothing of a refused push gets this far.
struct Staged {
    outcome: IngestOutcome,
    runs: HashMap<String, RunState>,
    /// `hour_s` → the host's energy in that hour after this push.
    host_hours: BTreeMap<i64, u64>,
    /// `(hour, project, component, source)` → (energy, embodied).
    parts: BTreeMap<(i64, String, Component, SourceKind), (u64, u64)>,
    last_end: Option<u64>,
}

/// The SQLite writer's `stage`, for one push: which batches are new, and every problem
/// that refuses the push (the same paths and messages).
fn stage(
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
    let sp = set.spool;
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
        for c in &b.counters {
            let e = run
                .counters
                .entry((
                    c.project.clone(),
                    c.component.as_str().to_string(),
                    c.source.as_str().to_string(),
                ))
                .or_default();
            if b.end_unix_ms >= e.1 {
                *e = (c.total_uj, b.end_unix_ms);
            }
        }
        if !b.counters.is_empty() && i64::try_from(run.counted_uj()).is_err() {
            problem(
                format!("batches[{i}].counters"),
                format!(
                    "the run's counters would add up past the largest value stored ({} µJ)",
                    i64::MAX
                ),
            );
        }
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
    for (hour_s, i) in &first_over {
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
    let mut parts: BTreeMap<(i64, String, Component, SourceKind), (u64, u64)> = BTreeMap::new();
    for &i in &new_batches {
        for d in &set.batches[i].1 {
            let e = parts
                .entry((d.hour_s, d.project.clone(), d.component, d.source))
                .or_default();
            e.0 += d.energy_uj;
            e.1 += d.embodied_ug;
        }
    }
    let last_end = set.batches.iter().map(|(b, _)| b.end_unix_ms).max();
    Ok(Staged {
        outcome,
        runs,
        host_hours,
        parts,
        last_end,
    })
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

/// One transaction: lock, load, check, write, commit.
async fn once(
    store: &PgStore,
    set: &IngestSet<'_>,
    committed_coefs: &mut Vec<(String, i64)>,
) -> Result<IngestOutcome, StoreError> {
    let host = set.agent.agent_id.as_str();
    let mut tx = store.pool.begin().await.map_err(busy_or)?;
    sqlx::query("SELECT pg_advisory_xact_lock_shared($1)")
        .bind(STORE_LOCK)
        .execute(&mut *tx)
        .await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
        .bind(AGENT_LOCK_SPACE)
        .bind(host)
        .execute(&mut *tx)
        .await?;
    let run_ids: Vec<String> = set
        .batches
        .iter()
        .map(|(b, _)| b.run_id.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let runs = load_runs(&mut tx, host, &run_ids).await?;
    let hours: Vec<i64> = set
        .batches
        .iter()
        .flat_map(|(_, d)| d.iter().map(|d| d.hour_s))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let stored_hours: HashMap<i64, u64> = {
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT hour_s, energy_uj FROM host_hours WHERE host = $1 AND hour_s = ANY($2)",
        )
        .bind(host)
        .bind(&hours)
        .fetch_all(&mut *tx)
        .await?;
        rows.into_iter()
            .map(|(h, e)| Ok((h, q(e, "host_hours.energy_uj")?)))
            .collect::<Result<_, StoreError>>()?
    };
    let staged = stage(set, runs, &stored_hours, store.max_hour_uj)?;
    let plan = set.plan;
    let coefs = PlanCoefs {
        pue: coefficient_id(&mut tx, store, committed_coefs, &plan.pue).await?,
        grid: coefficient_id(&mut tx, store, committed_coefs, &plan.grid_default).await?,
        market: match &plan.market {
            Some(m) => Some(coefficient_id(&mut tx, store, committed_coefs, m).await?),
            None => None,
        },
        embodied: match &plan.embodied {
            Some(e) => Some(coefficient_id(&mut tx, store, committed_coefs, &e.coefficient).await?),
            None => None,
        },
    };
    let mut outcome = staged.outcome.clone();
    let mut rollups = super::maintain::Rollups::new(&store.tz);
    write_hours(
        &mut tx,
        host,
        plan,
        coefs,
        &staged,
        &mut rollups,
        &mut outcome,
    )
    .await?;
    rollups.write(&mut tx).await?;
    write_state(&mut tx, set, &staged).await?;
    tx.commit().await?;
    Ok(outcome)
}

#[derive(Clone, Copy)]
struct PlanCoefs {
    pue: i64,
    grid: i64,
    market: Option<i64>,
    embodied: Option<i64>,
}

fn coefficient_key(c: &Coefficient) -> String {
    format!(
        "{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{:?}\u{1f}{}\u{1f}{}",
        c.kind.as_str(),
        c.subject,
        c.value.to_bits(),
        c.unit,
        c.source,
        c.year,
        c.is_default,
        c.detail
    )
}

/// The id of a coefficient, stored once across collectors (`UNIQUE NULLS NOT DISTINCT`).
pub(super) async fn coefficient_id(
    tx: &mut Transaction<'_, Postgres>,
    store: &PgStore,
    committed: &mut Vec<(String, i64)>,
    c: &Coefficient,
) -> Result<i64, StoreError> {
    let key = coefficient_key(c);
    if let Some(id) = store
        .coef_ids
        .lock()
        .ok()
        .and_then(|m| m.get(&key).copied())
    {
        return Ok(id);
    }
    if let Some((_, id)) = committed.iter().find(|(k, _)| *k == key) {
        return Ok(*id);
    }
    let year = c.year.map(i64::from);
    let select = "SELECT id FROM coefficients WHERE kind = $1 AND subject = $2 AND value = $3
        AND unit = $4 AND source = $5 AND year IS NOT DISTINCT FROM $6 AND is_default = $7
        AND detail = $8 ORDER BY id LIMIT 1";
    macro_rules! bind_all {
        ($q:expr) => {
            $q.bind(c.kind.as_str())
                .bind(&c.subject)
                .bind(c.value)
                .bind(c.unit)
                .bind(&c.source)
                .bind(year)
                .bind(c.is_default)
                .bind(&c.detail)
        };
    }
    let mut id: Option<i64> = bind_all!(sqlx::query_scalar(select))
        .fetch_optional(&mut **tx)
        .await?;
    if id.is_none() {
        // Another collector may insert the same one meanwhile: ours then does nothing
        // (after waiting for its commit) and the lookup below finds its row.
        id = bind_all!(sqlx::query_scalar(
            "INSERT INTO coefficients (kind, subject, value, unit, source, year, is_default, detail)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING RETURNING id"
        ))
        .fetch_optional(&mut **tx)
        .await?;
    }
    let id = match id {
        Some(id) => id,
        None => {
            bind_all!(sqlx::query_scalar(select))
                .fetch_one(&mut **tx)
                .await?
        }
    };
    committed.push((key, id));
    Ok(id)
}

/// An hourly row as stored.
#[derive(sqlx::FromRow)]
struct OldRow {
    hour_s: i64,
    project: String,
    component: String,
    source: String,
    energy_uj: i64,
    facility_uj: i64,
    location_co2e_ug: i64,
    market_co2e_ug: Option<i64>,
    embodied_co2e_ug: i64,
    pue: f64,
    intensity_g_per_kwh: f64,
    market_g_per_kwh: Option<f64>,
    site: String,
    zone: String,
    embodied_coef: Option<i64>,
}

/// Columns of rows to write with one statement (`UNNEST` of arrays).
#[derive(Default)]
struct NewRows {
    hour: Vec<i64>,
    project: Vec<String>,
    component: Vec<String>,
    source: Vec<String>,
    energy: Vec<i64>,
    facility: Vec<i64>,
    pue_coef: Vec<i64>,
    g: Vec<f64>,
    grid_coef: Vec<Option<i64>>,
    import: Vec<Option<i64>>,
    location: Vec<i64>,
    market: Vec<Option<i64>>,
    embodied: Vec<i64>,
    emb_coef: Vec<Option<i64>>,
}

/// The hourly rows of a push: added to the rows stored (emissions recomputed from the
/// row's whole energy, as the SQLite writer does), with the rollups' differences.
#[allow(clippy::too_many_lines)]
async fn write_hours(
    tx: &mut Transaction<'_, Postgres>,
    host: &str,
    plan: &HostPlan,
    coefs: PlanCoefs,
    staged: &Staged,
    rollups: &mut super::maintain::Rollups,
    outcome: &mut IngestOutcome,
) -> Result<(), StoreError> {
    if staged.parts.is_empty() {
        return Ok(());
    }
    let hours: Vec<i64> = staged
        .parts
        .keys()
        .map(|k| k.0)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let intensity: HashMap<i64, (f64, Option<i64>)> = {
        let rows: Vec<(i64, f64, i64)> = sqlx::query_as(
            "SELECT hour_s, g_per_kwh, import_id FROM intensity_hourly
             WHERE zone = $1 AND hour_s = ANY($2)",
        )
        .bind(&plan.zone)
        .bind(&hours)
        .fetch_all(&mut **tx)
        .await?;
        rows.into_iter()
            .map(|(h, g, i)| (h, (g, Some(i))))
            .collect()
    };
    let old: HashMap<(i64, String, String, String), OldRow> = {
        let rows: Vec<OldRow> = sqlx::query_as(
            "SELECT hour_s, project, component, source, energy_uj, facility_uj,
                location_co2e_ug, market_co2e_ug, embodied_co2e_ug, pue, intensity_g_per_kwh,
                market_g_per_kwh, site, zone, embodied_coef
             FROM footprint_hourly WHERE host = $1 AND hour_s = ANY($2)",
        )
        .bind(host)
        .bind(&hours)
        .fetch_all(&mut **tx)
        .await?;
        rows.into_iter()
            .map(|r| {
                (
                    (
                        r.hour_s,
                        r.project.clone(),
                        r.component.clone(),
                        r.source.clone(),
                    ),
                    r,
                )
            })
            .collect()
    };
    let mut ins = NewRows::default();
    let mut upd = NewRows::default();
    for ((hour_s, project, component, source), (energy, embodied)) in &staged.parts {
        let (hour_s, energy, embodied) = (*hour_s, *energy, *embodied);
        let (g_per_kwh, import_id) = intensity
            .get(&hour_s)
            .copied()
            .unwrap_or((plan.grid_default.value, None));
        outcome.added.push(AddedPart {
            project: project.clone(),
            component: *component,
            energy_uj: energy,
            location_ug: operational_ug(energy, plan.pue.value, g_per_kwh),
            market_ug: plan
                .market
                .as_ref()
                .map(|m| operational_ug(energy, plan.pue.value, m.value)),
            embodied_ug: embodied,
        });
        let (component, source) = (component.as_str(), source.as_str());
        let day = rollups.day(hour_s);
        let key = (
            hour_s,
            project.clone(),
            component.to_string(),
            source.to_string(),
        );
        match old.get(&key) {
            Some(o) => {
                let total = q(o.energy_uj, "footprint_hourly.energy_uj")?
                    .checked_add(energy)
                    .ok_or_else(|| {
                        StoreError::Write("an hourly row's energy would pass u64::MAX".into())
                    })?;
                let facility = to_i64(facility_uj(total, o.pue), "facility energy")?;
                let location = to_i64(
                    operational_ug(total, o.pue, o.intensity_g_per_kwh),
                    "emissions",
                )?;
                let market = o
                    .market_g_per_kwh
                    .map(|m| to_i64(operational_ug(total, o.pue, m), "emissions"))
                    .transpose()?;
                let emb = to_i64(
                    q(o.embodied_co2e_ug, "footprint_hourly.embodied_co2e_ug")?
                        .checked_add(embodied)
                        .ok_or_else(|| {
                            StoreError::Write(
                                "an hourly row's embodied emissions would pass u64::MAX".into(),
                            )
                        })?,
                    "embodied emissions",
                )?;
                let coef = o.embodied_coef.or(coefs.embodied);
                if o.embodied_coef.is_none() {
                    if let Some(c) = coefs.embodied {
                        rollups.use_coef(day, c, 1);
                    }
                }
                rollups.add(
                    hour_s,
                    [host, project, component, source, &o.site, &o.zone],
                    [
                        to_i64(energy, "energy")?,
                        facility - o.facility_uj,
                        location - o.location_co2e_ug,
                        market.unwrap_or(location) - o.market_co2e_ug.unwrap_or(o.location_co2e_ug),
                        emb - o.embodied_co2e_ug,
                    ],
                );
                upd.hour.push(hour_s);
                upd.project.push(project.clone());
                upd.component.push(component.to_string());
                upd.source.push(source.to_string());
                upd.energy.push(to_i64(total, "energy")?);
                upd.facility.push(facility);
                upd.location.push(location);
                upd.market.push(market);
                upd.embodied.push(emb);
                upd.emb_coef.push(coef);
            }
            None => {
                let pue = plan.pue.value;
                let facility = to_i64(facility_uj(energy, pue), "facility energy")?;
                let location = to_i64(operational_ug(energy, pue, g_per_kwh), "emissions")?;
                let market = plan
                    .market
                    .as_ref()
                    .map(|m| to_i64(operational_ug(energy, pue, m.value), "emissions"))
                    .transpose()?;
                let grid_coef = import_id.is_none().then_some(coefs.grid);
                for c in [Some(coefs.pue), grid_coef, coefs.market, coefs.embodied]
                    .into_iter()
                    .flatten()
                {
                    rollups.use_coef(day, c, 1);
                }
                rollups.zone_hour(&plan.zone, hour_s);
                let e = to_i64(energy, "energy")?;
                let emb = to_i64(embodied, "embodied emissions")?;
                rollups.add(
                    hour_s,
                    [host, project, component, source, &plan.site, &plan.zone],
                    [e, facility, location, market.unwrap_or(location), emb],
                );
                ins.hour.push(hour_s);
                ins.project.push(project.clone());
                ins.component.push(component.to_string());
                ins.source.push(source.to_string());
                ins.energy.push(e);
                ins.facility.push(facility);
                ins.pue_coef.push(coefs.pue);
                ins.g.push(g_per_kwh);
                ins.grid_coef.push(grid_coef);
                ins.import.push(import_id);
                ins.location.push(location);
                ins.market.push(market);
                ins.embodied.push(emb);
                ins.emb_coef.push(coefs.embodied);
            }
        }
    }
    if !ins.hour.is_empty() {
        let market_g = plan.market.as_ref().map(|m| m.value);
        sqlx::query(
            "INSERT INTO footprint_hourly (hour_s, host, project, component, source, site, zone,
                energy_uj, facility_uj, pue, pue_coef, intensity_g_per_kwh, intensity_coef,
                intensity_import, location_co2e_ug, market_g_per_kwh, market_coef, market_co2e_ug,
                embodied_co2e_ug, embodied_coef)
             SELECT u.hour_s, $1, u.project, u.component, u.source, $2, $3, u.energy, u.facility,
                $4, u.pue_coef, u.g, u.grid_coef, u.import, u.location, $5, $6, u.market,
                u.embodied, u.emb_coef
             FROM UNNEST($7::BIGINT[], $8::TEXT[], $9::TEXT[], $10::TEXT[], $11::BIGINT[],
                $12::BIGINT[], $13::BIGINT[], $14::FLOAT8[], $15::BIGINT[], $16::BIGINT[],
                $17::BIGINT[], $18::BIGINT[], $19::BIGINT[], $20::BIGINT[])
               AS u(hour_s, project, component, source, energy, facility, pue_coef, g,
                grid_coef, import, location, market, embodied, emb_coef)",
        )
        .bind(host)
        .bind(&plan.site)
        .bind(&plan.zone)
        .bind(plan.pue.value)
        .bind(market_g)
        .bind(coefs.market)
        .bind(&ins.hour)
        .bind(&ins.project)
        .bind(&ins.component)
        .bind(&ins.source)
        .bind(&ins.energy)
        .bind(&ins.facility)
        .bind(&ins.pue_coef)
        .bind(&ins.g)
        .bind(&ins.grid_coef)
        .bind(&ins.import)
        .bind(&ins.location)
        .bind(&ins.market)
        .bind(&ins.embodied)
        .bind(&ins.emb_coef)
        .execute(&mut **tx)
        .await?;
    }
    if !upd.hour.is_empty() {
        sqlx::query(
            "UPDATE footprint_hourly AS f SET energy_uj = u.energy, facility_uj = u.facility,
                location_co2e_ug = u.location, market_co2e_ug = u.market,
                embodied_co2e_ug = u.embodied, embodied_coef = u.emb_coef
             FROM UNNEST($2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], $6::BIGINT[],
                $7::BIGINT[], $8::BIGINT[], $9::BIGINT[], $10::BIGINT[], $11::BIGINT[])
               AS u(hour_s, project, component, source, energy, facility, location, market,
                embodied, emb_coef)
             WHERE f.hour_s = u.hour_s AND f.host = $1 AND f.project = u.project
               AND f.component = u.component AND f.source = u.source",
        )
        .bind(host)
        .bind(&upd.hour)
        .bind(&upd.project)
        .bind(&upd.component)
        .bind(&upd.source)
        .bind(&upd.energy)
        .bind(&upd.facility)
        .bind(&upd.location)
        .bind(&upd.market)
        .bind(&upd.embodied)
        .bind(&upd.emb_coef)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// The host's hours, the runs (with their holes and counters) and the agent's row.
async fn write_state(
    tx: &mut Transaction<'_, Postgres>,
    set: &IngestSet<'_>,
    staged: &Staged,
) -> Result<(), StoreError> {
    let host = set.agent.agent_id.as_str();
    if !staged.host_hours.is_empty() {
        let (hours, energy): (Vec<i64>, Vec<i64>) = staged
            .host_hours
            .iter()
            .map(|(h, e)| Ok((*h, to_i64(*e, "a host's hour")?)))
            .collect::<Result<Vec<_>, StoreError>>()?
            .into_iter()
            .unzip();
        sqlx::query(
            "INSERT INTO host_hours (host, hour_s, energy_uj)
             SELECT $1, u.h, u.e FROM UNNEST($2::BIGINT[], $3::BIGINT[]) AS u(h, e)
             ON CONFLICT (host, hour_s) DO UPDATE SET energy_uj = EXCLUDED.energy_uj",
        )
        .bind(host)
        .bind(&hours)
        .bind(&energy)
        .execute(&mut **tx)
        .await?;
    }
    let mut runs: Vec<(&String, &RunState)> = staged.runs.iter().collect();
    runs.sort_by(|a, b| a.0.cmp(b.0));
    for (run, r) in runs {
        sqlx::query(
            "INSERT INTO runs (agent_id, run_id, hwm, stored_uj, first_ms, last_ms, counters, counted_uj)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (agent_id, run_id) DO UPDATE SET hwm = EXCLUDED.hwm,
                stored_uj = EXCLUDED.stored_uj, last_ms = EXCLUDED.last_ms,
                counters = EXCLUDED.counters, counted_uj = EXCLUDED.counted_uj",
        )
        .bind(host)
        .bind(run)
        .bind(to_i64(r.seqs.hwm, "a run's sequence")?)
        .bind(to_i64(r.stored_uj, "a run's energy")?)
        .bind(to_i64(r.first_ms, "a time")?)
        .bind(to_i64(r.last_ms, "a time")?)
        .bind(r.counters_text())
        .bind(
            i64::try_from(r.counted_uj())
                .map_err(|_| StoreError::Write("a run's counters would pass i64::MAX".into()))?,
        )
        .execute(&mut **tx)
        .await?;
        if r.holes_changed {
            if !r.is_new {
                sqlx::query("DELETE FROM run_holes WHERE agent_id = $1 AND run_id = $2")
                    .bind(host)
                    .bind(run)
                    .execute(&mut **tx)
                    .await?;
            }
            let (from, to): (Vec<i64>, Vec<i64>) = r
                .seqs
                .holes
                .iter()
                .map(|(a, b)| Ok((to_i64(*a, "a sequence")?, to_i64(*b, "a sequence")?)))
                .collect::<Result<Vec<_>, StoreError>>()?
                .into_iter()
                .unzip();
            sqlx::query(
                "INSERT INTO run_holes (agent_id, run_id, from_seq, to_seq)
                 SELECT $1, $2, u.a, u.b FROM UNNEST($3::BIGINT[], $4::BIGINT[]) AS u(a, b)",
            )
            .bind(host)
            .bind(run)
            .bind(&from)
            .bind(&to)
            .execute(&mut **tx)
            .await?;
        }
    }
    write_agent(tx, set, staged.last_end).await
}

async fn write_agent(
    tx: &mut Transaction<'_, Postgres>,
    set: &IngestSet<'_>,
    last_end: Option<u64>,
) -> Result<(), StoreError> {
    let waiting = set.spool.batches.saturating_sub(set.batches.len() as u64);
    let opt = |v: Option<u64>| v.map(|v| to_i64(v, "a time")).transpose();
    sqlx::query(
        "INSERT INTO agents (agent_id, hostname, agent_version, first_push_ms, last_push_ms,
            last_batch_end_ms, spool_batches, spool_bytes, spool_oldest_ms, spool_dropped)
         VALUES ($1, $2, $3, $4, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (agent_id) DO UPDATE SET hostname = EXCLUDED.hostname,
            agent_version = EXCLUDED.agent_version, last_push_ms = EXCLUDED.last_push_ms,
            last_batch_end_ms = GREATEST(COALESCE(agents.last_batch_end_ms, 0),
                COALESCE(EXCLUDED.last_batch_end_ms, 0)),
            spool_batches = EXCLUDED.spool_batches, spool_bytes = EXCLUDED.spool_bytes,
            spool_oldest_ms = EXCLUDED.spool_oldest_ms, spool_dropped = EXCLUDED.spool_dropped",
    )
    .bind(&set.agent.agent_id)
    .bind(&set.agent.hostname)
    .bind(&set.agent.agent_version)
    .bind(to_i64(set.now_ms, "a time")?)
    .bind(opt(last_end)?)
    .bind(to_i64(waiting, "spool.batches")?)
    .bind(to_i64(
        if waiting == 0 { 0 } else { set.spool.bytes },
        "spool.bytes",
    )?)
    .bind(opt(if waiting == 0 {
        None
    } else {
        set.spool.oldest_start_unix_ms
    })?)
    .bind(to_i64(
        set.spool.dropped_batches_total,
        "spool.dropped_batches_total",
    )?)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
