//! The fold: a thread that owns the main database's write connection and brings the
//! footprint tables up to date from groups of pushes the writer staged (and, with the
//! ingest log, already made durable and acknowledged). Every write to the footprint
//! goes through it, in order: folds, intensity imports, compaction.
//!
//! One fold is one transaction: the group's hourly rows, rollups, host hours, runs and
//! agents, and the log's high-water mark (`store_meta.ingest_log_folded_through`).
//! A fold that fails is kept and tried again with the next one (merged), so nothing
//! logged is dropped; while it fails, reads that wait for the fold get the error.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rusqlite::{TransactionBehavior, params};
use tokio::sync::oneshot;

use super::super::super::{ImportOutcome, IntensityImport, StoreError};
use super::calendar::Calendar;
use super::coefs::CoefIds;
use super::rollups::Rollups;
use super::state::{Group, MAX_CACHED_ROWS, RowCache};

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

pub(super) enum FoldJob {
    /// Write `group`, whose pushes are in the log up to `through` (0: not logged; then a
    /// failed fold is dropped, not kept, and `done` says so).
    Fold {
        group: Box<Group>,
        through: i64,
        done: Option<std::sync::mpsc::Sender<Result<(), String>>>,
    },
    /// Answered once every fold sent before it is written (or failed).
    Barrier(Reply<()>),
    Import(Box<IntensityImport>, Reply<ImportOutcome>),
    Compact(i64, Reply<u64>),
    Recompute(
        Box<crate::history::RecomputeJob>,
        Reply<crate::history::Recomputation>,
    ),
    Close(std::sync::mpsc::Sender<()>),
}

/// What the writer reads of the fold's progress.
#[derive(Debug, Default)]
pub(super) struct Progress {
    /// Folds sent and not finished.
    pub(super) in_flight: usize,
    /// Hourly rows sent to the fold and not written yet (memory bound).
    pub(super) unfolded_rows: usize,
    /// The last log entry folded.
    pub(super) folded_through: i64,
    /// How long the last fold took, in seconds.
    pub(super) last_fold_s: f64,
}

pub(super) type SharedProgress = Arc<Mutex<Progress>>;

pub(super) struct Folder {
    pub(super) conn: rusqlite::Connection,
    pub(super) cal: Calendar,
    coef_ids: CoefIds,
    /// Hourly rows as last written.
    rows: RowCache,
    /// `PRAGMA data_version` when the caches were last known good.
    data_version: i64,
    /// Hourly rows kept for this many seconds; `None`: all.
    pub(super) retention_s: Option<i64>,
    pub(super) last_retention_s: i64,
    progress: SharedProgress,
    /// A logged group whose fold failed, its log position and the rows it counts.
    stuck: Option<(Box<Group>, i64, usize)>,
}

/// The last log entry folded, as the main database says.
pub(super) fn folded_through(conn: &rusqlite::Connection) -> rusqlite::Result<i64> {
    use rusqlite::OptionalExtension;
    let v: Option<String> = conn
        .query_row(
            "SELECT value FROM store_meta WHERE key = 'ingest_log_folded_through'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    Ok(v.and_then(|v| v.parse().ok()).unwrap_or(0))
}

impl Folder {
    pub(super) fn new(
        conn: rusqlite::Connection,
        cal: Calendar,
        progress: SharedProgress,
    ) -> Folder {
        Folder {
            conn,
            cal,
            coef_ids: HashMap::new(),
            rows: HashMap::new(),
            data_version: -1,
            retention_s: None,
            last_retention_s: 0,
            progress,
            stuck: None,
        }
    }

    pub(super) fn forget(&mut self) {
        self.coef_ids.clear();
        self.rows.clear();
    }

    /// Takes jobs until told to close or the writer is gone.
    pub(super) fn run(mut self, rx: std::sync::mpsc::Receiver<FoldJob>) {
        let mut closed = None;
        while let Ok(job) = rx.recv() {
            match job {
                FoldJob::Fold {
                    group,
                    through,
                    done,
                } => self.fold_job(group, through, done),
                FoldJob::Barrier(reply) => {
                    let r = self.retry_stuck();
                    let _ = reply.send(r);
                }
                FoldJob::Import(import, reply) => {
                    let r = self.retry_stuck().and_then(|()| self.import(&import));
                    // The series changed rows' emissions.
                    self.forget();
                    let _ = reply.send(r);
                }
                FoldJob::Recompute(job, reply) => {
                    let r = self.retry_stuck().and_then(|()| self.recompute(&job));
                    self.forget();
                    let _ = reply.send(r);
                }
                FoldJob::Compact(before_s, reply) => {
                    let r = self
                        .retry_stuck()
                        .and_then(|()| self.compact(before_s, usize::MAX));
                    self.forget();
                    let _ = reply.send(r);
                }
                FoldJob::Close(done) => {
                    if let Err(e) = self.retry_stuck() {
                        tracing::error!(error = %e, "pushes in the ingest log could not be folded before closing; they will be at the next start");
                    }
                    closed = Some(done);
                    break;
                }
            }
        }
        drop(self);
        if let Some(done) = closed {
            let _ = done.send(());
        }
    }

    fn fold_job(
        &mut self,
        group: Box<Group>,
        through: i64,
        done: Option<std::sync::mpsc::Sender<Result<(), String>>>,
    ) {
        let rows = group.hours.len();
        let (group, through, rows) = match self.stuck.take() {
            Some((mut stuck, at, counted)) => {
                stuck.merge(*group);
                (stuck, at.max(through), counted + rows)
            }
            None => (group, through, rows),
        };
        let watch = crate::clock::Stopwatch::start();
        let result = self.fold(&group, through);
        let mut p = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        p.last_fold_s = watch.elapsed_seconds();
        p.in_flight = p.in_flight.saturating_sub(1);
        match &result {
            Ok(()) => {
                p.unfolded_rows = p.unfolded_rows.saturating_sub(rows);
                p.folded_through = p.folded_through.max(through);
            }
            Err(e) => {
                tracing::error!(error = %e, "pushes could not be folded into the footprint tables");
                if through > 0 {
                    // Logged and acknowledged: kept, tried again with the next fold.
                    self.stuck = Some((group, through, rows));
                } else {
                    p.unfolded_rows = p.unfolded_rows.saturating_sub(rows);
                }
            }
        }
        drop(p);
        if result.is_err() {
            self.forget();
        }
        if let Some(done) = done {
            let _ = done.send(result.map_err(|e| e.to_string()));
        }
        self.retain();
    }

    /// Folds a group kept after a failure, if any.
    fn retry_stuck(&mut self) -> Result<(), StoreError> {
        let Some((group, through, rows)) = self.stuck.take() else {
            return Ok(());
        };
        match self.fold(&group, through) {
            Ok(()) => {
                let mut p = self.progress.lock().unwrap_or_else(|e| e.into_inner());
                p.unfolded_rows = p.unfolded_rows.saturating_sub(rows);
                p.folded_through = p.folded_through.max(through);
                Ok(())
            }
            Err(e) => {
                self.forget();
                self.stuck = Some((group, through, rows));
                Err(StoreError::Write(format!(
                    "acknowledged pushes could not be written to the footprint tables yet (they are kept in the ingest log): {e}"
                )))
            }
        }
    }

    /// One transaction: the group's rows and the log's high-water mark.
    pub(super) fn fold(&mut self, g: &Group, through: i64) -> rusqlite::Result<()> {
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
            self.rows.clear();
        }
        let mut rollups = Rollups::default();
        let mut written = Vec::new();
        // Other tables fed by a push (added to the group in `stage::accept`) are written
        // here, in the same transaction as its batches.
        super::apply::apply(
            &tx,
            &mut self.cal,
            &mut rollups,
            g,
            &self.rows,
            &mut written,
            &mut self.coef_ids,
        )?;
        rollups.write(&tx)?;
        super::super::inference::write(&tx, &g.inference)?;
        super::super::cost::write_hardware(&tx, &g.hardware)?;
        if through > 0 {
            tx.execute(
                "INSERT INTO store_meta (key, value) VALUES ('ingest_log_folded_through', ?)
                 ON CONFLICT DO UPDATE SET value = excluded.value",
                params![through.to_string()],
            )?;
        }
        tx.commit()?;
        if self.rows.len() + written.len() > MAX_CACHED_ROWS {
            self.rows.clear();
        }
        self.rows.extend(written);
        Ok(())
    }
}
