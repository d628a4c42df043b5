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

use std::collections::{BTreeSet, HashMap};

use sqlx::{Postgres, Transaction};

use super::super::runs::{self, RunSeqs};
use super::super::{IngestOutcome, IngestSet, StoreError};
use super::hours::write_hours;
use super::stage::{RunState, Staged, parse_counters, q, stage, to_i64};
use super::{AGENT_LOCK_SPACE, PgStore, STORE_LOCK, busy_or, retryable};
use crate::footprint::Coefficient;

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
    super::costs::write_hardware(&mut tx, &staged.hardware).await?;
    super::inference::write(&mut tx, &super::inference::group(set, &staged.new_batches)).await?;
    write_state(&mut tx, set, &staged).await?;
    tx.commit().await?;
    Ok(outcome)
}

#[derive(Clone, Copy)]
pub(super) struct PlanCoefs {
    pub(super) pue: i64,
    pub(super) grid: i64,
    pub(super) market: Option<i64>,
    pub(super) embodied: Option<i64>,
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
        .bind(runs::counters_text(&r.counters))
        .bind(
            i64::try_from(runs::counted_uj(&r.counters))
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
