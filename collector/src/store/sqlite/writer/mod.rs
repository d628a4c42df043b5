//! The store's one writer: a thread that owns its own SQLite connection (rusqlite, no
//! hop to another thread per statement) and takes pushes from a bounded queue. It
//! stores every push waiting in the queue in one transaction, one commit and one
//! `fsync` (group commit), then answers each push: a push is acknowledged only after the
//! commit that holds it. Rows are summed in memory per key before they are written, so
//! a commit writes each hourly, daily and monthly row it touches once.
//!
//! A push that would break the store is refused whole, and nothing of it is written:
//! a value past `i64::MAX` (SQLite's integers), or a host's energy in an hour past
//! `max_host_power_watts` × 1 h across every batch stored for that hour.

//!
//! Modules by responsibility: [`stage`] checks one push against the store and adds it to
//! the group, [`apply`] writes a group's rows, [`rollups`] the daily and monthly sums,
//! [`maintenance`] compaction and intensity imports, [`state`] the in-memory state and
//! caches, [`calendar`] the rollups' days and months.

mod apply;
mod calendar;
mod maintenance;
mod rollups;
mod stage;
mod state;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use empreinte_shared::wire::{AgentInfo, Counter, SpoolStatus};
use jiff::tz::TimeZone;
use rusqlite::TransactionBehavior;
use tokio::sync::{mpsc, oneshot};

use super::super::{ImportOutcome, IngestOutcome, IngestSet, IntensityImport, StoreError};
use crate::footprint::{HostPlan, HourlyDelta};
pub use calendar::{Calendar, day_month, facility_uj};
use rollups::Rollups;
use state::{Group, MAX_CACHED_ROWS, RowCache, RunState};

/// The most pushes stored in one transaction.
const MAX_GROUP: usize = 512;

/// A push, owned, ready for the writer (parsed and split by hour off the writer).
pub struct PreparedPush {
    pub agent: AgentInfo,
    pub spool: SpoolStatus,
    pub plan: Arc<HostPlan>,
    pub now_ms: u64,
    pub batches: Vec<PreparedBatch>,
}

pub struct PreparedBatch {
    pub run_id: String,
    pub seq: u64,
    pub start_ms: u64,
    pub end_ms: u64,
    pub deltas: Vec<HourlyDelta>,
    pub counters: Vec<Counter>,
    /// Inference counts and model-tagged energy by hour (`super::inference`).
    pub inference: crate::inference::InferenceParts,
}

impl PreparedPush {
    pub fn from_set(set: &IngestSet<'_>) -> PreparedPush {
        PreparedPush {
            agent: set.agent.clone(),
            spool: set.spool.clone(),
            plan: Arc::new(set.plan.clone()),
            now_ms: set.now_ms,
            batches: set
                .batches
                .iter()
                .map(|(b, d)| PreparedBatch {
                    run_id: b.run_id.clone(),
                    seq: b.seq,
                    start_ms: b.start_unix_ms,
                    end_ms: b.end_unix_ms,
                    deltas: d.clone(),
                    counters: b.counters.clone(),
                    inference: crate::inference::batch_inference(b),
                })
                .collect(),
        }
    }
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

pub enum Job {
    Ingest(Box<PreparedPush>, Reply<IngestOutcome>),
    Import(Box<IntensityImport>, Reply<ImportOutcome>),
    /// Compact the hourly rows of the local days that end before this Unix second.
    Compact(i64, Reply<u64>),
    /// Stop: the connection is closed (the WAL checkpointed) before the answer.
    Close(oneshot::Sender<()>),
}

/// The writer's state besides its connection: caches of committed rows, cleared when
/// a commit fails.
pub struct Writer {
    conn: rusqlite::Connection,
    cal: Calendar,
    max_hour_uj: u64,
    coef_ids: HashMap<String, i64>,
    runs: HashMap<(String, String), RunState>,
    /// Batches stored per second, smoothed: how fast a full queue drains.
    pace: Arc<AtomicU64>,
    /// Hourly rows and host hours as last committed.
    rows: RowCache,
    host_hours: HashMap<(String, i64), u64>,
    /// `PRAGMA data_version` when the caches were last known good.
    data_version: i64,
    /// Hourly rows kept for this many seconds; `None`: all.
    retention_s: Option<i64>,
    last_retention_s: i64,
}

impl Writer {
    pub fn new(
        conn: rusqlite::Connection,
        tz: TimeZone,
        max_host_power_watts: f64,
        pace: Arc<AtomicU64>,
    ) -> Writer {
        let max = max_host_power_watts * 3.6e9;
        Writer {
            conn,
            cal: Calendar::new(tz),
            max_hour_uj: if max.is_finite() && max > 0.0 && max < 9.0e18 {
                max as u64
            } else {
                i64::MAX as u64
            },
            coef_ids: HashMap::new(),
            runs: HashMap::new(),
            pace,
            rows: HashMap::new(),
            host_hours: HashMap::new(),
            retention_s: None,
            last_retention_s: 0,
            data_version: -1,
        }
    }

    /// Keeps hourly rows for `keep` only (see [`Writer::compact`]).
    pub fn with_retention(mut self, keep: Option<std::time::Duration>) -> Writer {
        self.retention_s = keep.map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        self
    }

    /// Takes jobs until told to close or every sender is gone.
    pub fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        let mut pending: Option<Job> = None;
        let closed = loop {
            let first = match pending.take() {
                Some(j) => j,
                None => match rx.blocking_recv() {
                    Some(j) => j,
                    None => break None,
                },
            };
            match first {
                Job::Close(done) => break Some(done),
                Job::Compact(before_s, reply) => {
                    let r = self.compact(before_s, usize::MAX);
                    self.forget();
                    let _ = reply.send(r);
                }
                Job::Import(import, reply) => {
                    let r = self.import(&import);
                    // The series changed rows' emissions.
                    self.forget();
                    let _ = reply.send(r);
                }
                Job::Ingest(push, reply) => {
                    let mut group = vec![(push, reply)];
                    while group.len() < MAX_GROUP {
                        match rx.try_recv() {
                            Ok(Job::Ingest(p, r)) => group.push((p, r)),
                            Ok(other) => {
                                pending = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.ingest_group(group);
                    self.retain();
                }
            }
        };
        drop(self);
        if let Some(done) = closed {
            let _ = done.send(());
        }
    }

    fn forget(&mut self) {
        self.coef_ids.clear();
        self.runs.clear();
        self.rows.clear();
        self.host_hours.clear();
    }

    fn ingest_group(&mut self, group: Vec<(Box<PreparedPush>, Reply<IngestOutcome>)>) {
        let watch = crate::clock::Stopwatch::start();
        let result = self.store_group(&group);
        let batches: usize = group.iter().map(|(p, _)| p.batches.len()).sum();
        let secs = watch.elapsed_seconds();
        if secs > 0.0 {
            let now = batches as f64 / secs;
            let before = self.pace.load(Ordering::Relaxed) as f64;
            let smoothed = if before == 0.0 {
                now
            } else {
                0.8 * before + 0.2 * now
            };
            self.pace.store(smoothed as u64, Ordering::Relaxed);
        }
        match result {
            Ok(outcomes) => {
                for ((_, reply), outcome) in group.into_iter().zip(outcomes) {
                    let _ = reply.send(outcome);
                }
            }
            Err(e) => {
                self.forget();
                tracing::error!(error = %e, pushes = group.len(), "a group of pushes could not be stored");
                let message = e.to_string();
                for (_, reply) in group {
                    let _ = reply.send(Err(StoreError::Write(message.clone())));
                }
            }
        }
    }

    #[allow(clippy::type_complexity)]
    fn store_group(
        &mut self,
        group: &[(Box<PreparedPush>, Reply<IngestOutcome>)],
    ) -> rusqlite::Result<Vec<Result<IngestOutcome, StoreError>>> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Another connection (a command such as `empreinte carbon import`, or a token
        // written by the read pool) committed since our last look: the caches may be
        // stale. Under the write lock, nobody else can commit until we do.
        let version: i64 = tx.query_row("PRAGMA data_version", [], |r| r.get(0))?;
        if version != self.data_version {
            self.data_version = version;
            self.coef_ids.clear();
            self.runs.clear();
            self.rows.clear();
            self.host_hours.clear();
        }
        let mut g = Group::default();
        let mut outcomes = Vec::with_capacity(group.len());
        let mut ctx = stage::Ctx {
            coef_ids: &mut self.coef_ids,
            runs: &self.runs,
            host_hours: &self.host_hours,
            max_hour_uj: self.max_hour_uj,
            intensity: HashMap::new(),
        };
        for (push, _) in group {
            outcomes.push(stage::stage(&tx, &mut ctx, &mut g, push)?);
        }
        let mut rollups = Rollups::default();
        let mut written = Vec::new();
        // Other tables fed by a push (added to the group in `stage::accept`) are written
        // here, in the same transaction as its batches.
        apply::apply(
            &tx,
            &mut self.cal,
            &mut rollups,
            &g,
            &self.rows,
            &mut written,
        )?;
        rollups.write(&tx)?;
        super::inference::write(&tx, &g.inference)?;
        tx.commit()?;
        if self.rows.len() + written.len() > MAX_CACHED_ROWS {
            self.rows.clear();
        }
        self.rows.extend(written);
        if self.host_hours.len() + g.host_hours.len() > MAX_CACHED_ROWS {
            self.host_hours.clear();
        }
        self.host_hours
            .extend(g.host_hours.iter().map(|(k, v)| (k.clone(), *v)));
        for (k, mut r) in g.runs {
            r.holes_changed = false;
            r.is_new = false;
            self.runs.insert(k, r);
        }
        if self.runs.len() > 200_000 {
            self.runs.clear();
        }
        Ok(outcomes)
    }
}
