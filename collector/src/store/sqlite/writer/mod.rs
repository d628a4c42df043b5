//! The store's writer: a thread that takes pushes from a bounded queue, checks each
//! against the store (stage), and makes every push waiting in the queue durable at once
//! (group commit), then answers each push: a push is acknowledged only after the commit
//! that holds it.
//!
//! With the ingest log (the collector), that commit is one append to the log
//! ([`log`]: one small row per push, one `fsync`), and the footprint tables are brought
//! up to date in the background by the fold thread ([`fold`]), from the pushes logged
//! since its last fold, summed per row: the more pushes arrive, the more each fold
//! sums. Reads first wait for the fold of everything acknowledged before them
//! (`Job::Settle`), so they see every acknowledged push. Without the log (commands), the
//! commit is the fold itself, as one transaction.
//!
//! A push that would break the store is refused whole, and nothing of it is written:
//! a value past `i64::MAX` (SQLite's integers), or a host's energy in an hour past
//! `max_host_power_watts` × 1 h across every batch stored for that hour.
//!
//! Modules by responsibility: [`stage`] checks one push and adds it to a [`Group`],
//! [`log`] the ingest log, [`fold`] the thread that writes groups, [`apply`] a group's
//! rows, [`coefs`] coefficient ids, [`rollups`] the daily and monthly sums,
//! [`maintenance`] compaction and intensity imports, [`state`] the in-memory state,
//! [`calendar`] the rollups' days and months, [`replay`] the log's replay at start.

mod apply;
mod calendar;
mod coefs;
mod fold;
pub mod log;
mod maintenance;
mod recompute;
mod replay;
mod rollups;
mod stage;
mod state;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::clock::Stopwatch;

use empreinte_shared::wire::{AgentInfo, Counter, SpoolStatus};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::super::{ImportOutcome, IngestOutcome, IngestSet, IntensityImport, StoreError};
use crate::footprint::{HostPlan, HourlyDelta};
pub use calendar::{Calendar, day_month, facility_uj};
use fold::{FoldJob, Folder, Progress, SharedProgress};
use log::IngestLog;
use state::{Group, MAX_CACHED_ROWS, RunState};

/// The fold thread's nice value (`setpriority`): below the threads that acknowledge
/// pushes, so that a fold of many rows does not hold a core they wait for (BENCHMARKS.md,
/// session 5: the p99 of the acknowledgements).
pub const FOLD_NICE: i32 = 5;

/// Lowers the calling thread to [`FOLD_NICE`] (on Linux a nice value is the thread's
/// own): for background work, so that the threads that answer pushes come first when the
/// cores are busy. Left as it is where it cannot be lowered (nothing depends on it).
pub(super) fn run_in_background() {
    let _ = rustix::process::setpriority_process(None, FOLD_NICE);
}

/// The most pushes stored in one transaction.
const MAX_GROUP: usize = 512;

/// A push, owned, ready for the writer (parsed and split by hour off the writer).
///
/// It is what the ingest log holds, written with postcard, which is not
/// self-describing: nothing it holds may skip a field when serialized
/// (`skip_serializing_if`), and the round trip test in `log.rs` must fill every field.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub struct PreparedPush {
    pub agent: AgentInfo,
    pub spool: SpoolStatus,
    pub plan: Arc<HostPlan>,
    pub now_ms: u64,
    pub batches: Vec<PreparedBatch>,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
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
            plan: Arc::clone(set.plan),
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
    /// Recompute the stored hours from an instant with the plan in force at each.
    Recompute(
        Box<crate::history::RecomputeJob>,
        Reply<crate::history::Recomputation>,
    ),
    /// Compact the hourly rows of the local days that end before this Unix second.
    Compact(i64, Reply<u64>),
    /// Answered once every push acknowledged before it is in the footprint tables.
    Settle(Reply<()>),
    /// Stop: everything is folded and the connections closed before the answer.
    Close(oneshot::Sender<()>),
}

/// How the writer runs (from [`super::super::StoreOptions`]).
#[derive(Clone, Debug)]
pub struct WriterOptions {
    pub max_host_power_watts: f64,
    /// Hourly rows kept for this long; `None`: all.
    pub hourly_retention: Option<Duration>,
    /// With the ingest log: fold at least this often while pushes arrive.
    pub fold_interval: Duration,
    /// With the ingest log: hourly rows waiting for the fold at most (memory bound);
    /// beyond, pushes get [`StoreError::Busy`] until the fold catches up.
    pub max_unfolded_rows: usize,
}

/// The writer's state: the log, the group logged since the last fold, and the state of
/// runs and host hours as last logged (what the next push is checked against).
pub struct Writer {
    /// The main database, read to check pushes against what is stored.
    read: rusqlite::Connection,
    log: Option<IngestLog>,
    folder: std::sync::mpsc::Sender<FoldJob>,
    progress: SharedProgress,
    max_hour_uj: u64,
    runs: HashMap<(String, String), RunState>,
    host_hours: HashMap<(String, i64), u64>,
    plans: HashMap<String, Arc<HostPlan>>,
    /// Logged, not sent to the fold yet.
    current: Group,
    current_since: Stopwatch,
    last_logged: i64,
    fold_interval: Duration,
    max_unfolded_rows: usize,
    /// Batches stored per second, smoothed: how fast a full queue drains.
    pace: Arc<AtomicU64>,
}

fn max_hour_uj(max_host_power_watts: f64) -> u64 {
    let max = max_host_power_watts * 3.6e9;
    if max.is_finite() && max > 0.0 && max < 9.0e18 {
        max as u64
    } else {
        i64::MAX as u64
    }
}

impl Writer {
    /// Starts the fold thread on `conn` (after replaying what the log holds beyond the
    /// last fold) and gives the writer, to run on a thread of its own.
    pub fn start(
        conn: rusqlite::Connection,
        read: rusqlite::Connection,
        log: Option<IngestLog>,
        cal: Calendar,
        options: &WriterOptions,
        pace: Arc<AtomicU64>,
    ) -> Result<Writer, StoreError> {
        let progress: SharedProgress = Arc::new(Mutex::new(Progress::default()));
        let mut folder = Folder::new(conn, cal, progress.clone());
        folder.retention_s = options
            .hourly_retention
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let max_hour_uj = max_hour_uj(options.max_host_power_watts);
        let mut log = log;
        if let Some(log) = log.as_mut() {
            let through = replay::replay(&mut folder, log, max_hour_uj)?;
            progress
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .folded_through = through;
        }
        let (folder_tx, folder_rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("store-fold".into())
            .spawn(move || {
                run_in_background();
                folder.run(folder_rx)
            })
            .map_err(|e| StoreError::Write(format!("cannot start the fold thread: {e}")))?;
        Ok(Writer {
            read,
            log,
            folder: folder_tx,
            progress,
            max_hour_uj,
            runs: HashMap::new(),
            host_hours: HashMap::new(),
            plans: HashMap::new(),
            current: Group::default(),
            current_since: Stopwatch::start(),
            last_logged: 0,
            fold_interval: options.fold_interval,
            max_unfolded_rows: options.max_unfolded_rows.max(1),
            pace,
        })
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
                    self.send_current();
                    self.forget();
                    self.to_folder(FoldJob::Compact(before_s, reply));
                }
                Job::Import(import, reply) => {
                    self.send_current();
                    // Pushes staged after the import must see its series: wait for it.
                    let (tx, wait) = oneshot::channel();
                    self.to_folder(FoldJob::Import(import, tx));
                    let r = wait.blocking_recv().unwrap_or(Err(StoreError::Closed));
                    let _ = reply.send(r);
                }
                Job::Recompute(job, reply) => {
                    self.send_current();
                    self.forget();
                    let (tx, wait) = oneshot::channel();
                    self.to_folder(FoldJob::Recompute(job, tx));
                    let r = wait.blocking_recv().unwrap_or(Err(StoreError::Closed));
                    let _ = reply.send(r);
                }
                Job::Settle(reply) => {
                    self.send_current();
                    self.to_folder(FoldJob::Barrier(reply));
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
                    self.maybe_fold();
                }
            }
        };
        self.send_current();
        let (tx, wait) = std::sync::mpsc::channel();
        self.to_folder(FoldJob::Close(tx));
        let _ = wait.recv();
        if let Some(log) = self.log.as_mut() {
            let through = self
                .progress
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .folded_through;
            log.folded_through(through);
            if let Err(e) = log.prune() {
                tracing::warn!(error = %e, "cannot delete folded entries from the ingest log");
            }
        }
        drop(self);
        if let Some(done) = closed {
            let _ = done.send(());
        }
    }

    fn to_folder(&self, job: FoldJob) {
        if self.folder.send(job).is_err() {
            tracing::error!("the fold thread is gone");
        }
    }

    /// Sends the group logged since the last fold to the fold thread.
    fn send_current(&mut self) {
        if self.current.is_empty() {
            return;
        }
        let group = std::mem::take(&mut self.current);
        {
            let mut p = self.progress.lock().unwrap_or_else(|e| e.into_inner());
            p.in_flight += 1;
            p.unfolded_rows += group.hours.len();
        }
        // The runs it holds are written with their holes: later groups start clean.
        for k in group.runs.keys() {
            if let Some(r) = self.runs.get_mut(k) {
                r.holes_changed = false;
            }
        }
        self.current_since = Stopwatch::start();
        self.to_folder(FoldJob::Fold {
            group: Box::new(group),
            through: self.last_logged,
            done: None,
        });
    }

    /// Starts a fold when none is running and the group is old or large enough; with
    /// nothing unfolded, drops cached state that grew past its bound.
    fn maybe_fold(&mut self) {
        let (in_flight, folded, last_fold_s) = {
            let p = self.progress.lock().unwrap_or_else(|e| e.into_inner());
            (p.in_flight, p.folded_through, p.last_fold_s)
        };
        if let Some(log) = self.log.as_mut() {
            log.folded_through(folded);
        }
        if in_flight > 0 {
            return;
        }
        if self.runs.len() > 200_000 || self.host_hours.len() > MAX_CACHED_ROWS {
            // Nothing in flight: what is not in the current group is stored as cached.
            let current = &self.current;
            self.runs.retain(|k, _| current.runs.contains_key(k));
            self.host_hours
                .retain(|k, _| current.host_hours.contains_key(k));
        }
        // Folding takes at most about a fifth of the time: under load, folds come less
        // often and sum more pushes each (their cost is per row, not per push).
        let interval = self.fold_interval.as_secs_f64().max(4.0 * last_fold_s);
        if !self.current.is_empty()
            && (self.current_since.elapsed_seconds() >= interval
                || self.current.hours.len() >= self.max_unfolded_rows / 2)
        {
            self.send_current();
        }
    }

    fn forget(&mut self) {
        self.runs.clear();
        self.host_hours.clear();
        self.plans.clear();
    }

    fn ingest_group(&mut self, group: Vec<(Box<PreparedPush>, Reply<IngestOutcome>)>) {
        let unfolded = self
            .progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .unfolded_rows;
        if self.log.is_some() && unfolded + self.current.hours.len() >= self.max_unfolded_rows {
            // The fold is behind: refuse until it catches up (memory bound).
            let pace = self.pace.load(Ordering::Relaxed).max(100);
            let retry_after_s = (unfolded as u64 / pace).clamp(1, 60);
            for (_, reply) in group {
                let _ = reply.send(Err(StoreError::Busy { retry_after_s }));
            }
            return;
        }
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
                for (_, reply) in group {
                    let _ = reply.send(Err(StoreError::Write(e.clone())));
                }
            }
        }
    }

    /// Stages every push, makes the accepted ones durable (the log's append, or the fold
    /// itself without a log), then takes their state as the one to check against.
    #[allow(clippy::type_complexity)]
    fn store_group(
        &mut self,
        group: &[(Box<PreparedPush>, Reply<IngestOutcome>)],
    ) -> Result<Vec<Result<IngestOutcome, StoreError>>, String> {
        let mut g = Group::default();
        let mut outcomes = Vec::with_capacity(group.len());
        let mut entries: Vec<Vec<u8>> = Vec::new();
        {
            let mut ctx = stage::Ctx {
                runs: &self.runs,
                host_hours: &self.host_hours,
                max_hour_uj: self.max_hour_uj,
                intensity: HashMap::new(),
                plans: &mut self.plans,
                replay: false,
            };
            for (push, _) in group {
                let outcome =
                    stage::stage(&self.read, &mut ctx, &mut g, push).map_err(|e| e.to_string())?;
                if outcome.is_ok() && self.log.is_some() {
                    entries.push(log::encode(push)?);
                }
                outcomes.push(outcome);
            }
        }
        match self.log.as_mut() {
            Some(log) => {
                if !entries.is_empty() {
                    let refs: Vec<&[u8]> = entries.iter().map(Vec::as_slice).collect();
                    self.last_logged = log.append(&refs).map_err(|e| e.to_string())?;
                }
            }
            None => {
                // The commit is the fold: wait for it.
                let (tx, wait) = std::sync::mpsc::channel();
                {
                    let mut p = self.progress.lock().unwrap_or_else(|e| e.into_inner());
                    p.in_flight += 1;
                    p.unfolded_rows += g.hours.len();
                }
                let hours = std::mem::take(&mut g.hours);
                let folded = Group {
                    hours,
                    host_hours: g.host_hours.clone(),
                    runs: g.runs.clone(),
                    agents: std::mem::take(&mut g.agents),
                    plans: std::mem::take(&mut g.plans),
                    inference: std::mem::take(&mut g.inference),
                    hardware: std::mem::take(&mut g.hardware),
                };
                self.to_folder(FoldJob::Fold {
                    group: Box::new(folded),
                    through: 0,
                    done: Some(tx),
                });
                wait.recv()
                    .map_err(|_| "the fold thread is gone".to_string())??;
            }
        }
        self.host_hours
            .extend(g.host_hours.iter().map(|(k, v)| (k.clone(), *v)));
        for (k, r) in &g.runs {
            let mut r = r.clone();
            if self.log.is_none() {
                r.holes_changed = false;
            }
            self.runs.insert(k.clone(), r);
        }
        if self.log.is_some() {
            self.current.merge(g);
        }
        Ok(outcomes)
    }
}
