//! Pushing per-project energy to a collector (issue 4), through a bounded on-disk spool.
//!
//! After every sampling cycle the [`Pipeline`] folds the cycle's per-project energy into
//! the open batch ([`batcher`]), appends the batches that sealed to the [`spool`] and
//! rewrites the open one there; the [`client`] task sends what the collector has not
//! acknowledged, oldest first, and moves the spool's cursor past what it acknowledged.
//!
//! Architecture invariant: a batch's name `(agent, run, seq)` is written to disk with it
//! before it is sent; a replay carries the same name, so the collector stores it once.

pub mod batcher;
pub mod client;
pub mod spool;
pub mod tls;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use empreinte_shared::wire::SpoolStatus;

use crate::attribution::engine::ProjectEnergy;
use crate::config::PushConfig;
use batcher::Batcher;
use spool::{Spool, SpoolError, SpoolLimits};

/// What `/metrics` shows of the push; published by the pipeline and the client.
#[derive(Clone, Debug, Default)]
pub struct PushMetrics {
    pub accepted_total: u64,
    pub duplicate_total: u64,
    pub refused_total: u64,
    pub failed_total: u64,
    pub last_success_unix_ms: Option<u64>,
    pub spool: SpoolStatus,
    pub spool_errors_total: u64,
    pub dropped_energy_uj_total: u64,
}

/// Shared handle to [`PushMetrics`]; its lock is held only to copy plain numbers.
#[derive(Clone, Debug, Default)]
pub struct SharedPushMetrics(Arc<Mutex<PushMetrics>>);

impl SharedPushMetrics {
    pub fn lock(&self) -> MutexGuard<'_, PushMetrics> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The batcher and the spool of one agent run.
pub struct Pipeline {
    batcher: Batcher,
    spool: Spool,
    metrics: SharedPushMetrics,
    /// Woken when a batch is sealed, so the client sends it without waiting.
    sealed: Arc<tokio::sync::Notify>,
}

impl Pipeline {
    /// Opens the spool of `config` (recovering what an earlier run left) for a new run
    /// `run_id`.
    pub fn open(
        config: &PushConfig,
        run_id: String,
        now_unix_ms: u64,
    ) -> Result<Pipeline, SpoolError> {
        let limits = SpoolLimits::new(
            config.spool_max_bytes,
            u64::try_from(config.spool_max_age.as_millis()).unwrap_or(u64::MAX),
        );
        let spool = Spool::open(&config.spool_dir, limits, now_unix_ms)?;
        let interval_ms = u64::try_from(config.batch_interval.as_millis()).unwrap_or(u64::MAX);
        let pipeline = Pipeline {
            batcher: Batcher::new(run_id, interval_ms),
            spool,
            metrics: SharedPushMetrics::default(),
            sealed: Arc::new(tokio::sync::Notify::new()),
        };
        pipeline.publish();
        Ok(pipeline)
    }

    pub fn metrics(&self) -> SharedPushMetrics {
        self.metrics.clone()
    }

    pub fn sealed_notify(&self) -> Arc<tokio::sync::Notify> {
        self.sealed.clone()
    }

    pub fn run_id(&self) -> &str {
        self.batcher.run_id()
    }

    pub fn spool(&self) -> &Spool {
        &self.spool
    }

    pub fn spool_mut(&mut self) -> &mut Spool {
        &mut self.spool
    }

    /// Folds one sampling cycle that ended at `end_unix_ms` and lasted `length`, with the
    /// attribution's per-project state after it; spools what sealed and the open batch.
    /// Returns how many batches sealed.
    pub fn on_cycle(
        &mut self,
        end_unix_ms: u64,
        length: Duration,
        projects: &[ProjectEnergy],
    ) -> Result<usize, SpoolError> {
        let length_ms = u64::try_from(length.as_millis()).unwrap_or(u64::MAX);
        let sealed = self.batcher.fold(
            end_unix_ms,
            length_ms,
            projects
                .iter()
                .map(|p| (&p.project, p.component, p.source, p.last_uj)),
        );
        let result = self.store(&sealed, end_unix_ms);
        self.after(result, !sealed.is_empty())?;
        Ok(sealed.len())
    }

    /// Seals the open batch (on shutdown) and spools it.
    pub fn seal(&mut self, now_unix_ms: u64) -> Result<bool, SpoolError> {
        let sealed: Vec<_> = self.batcher.seal().into_iter().collect();
        let result = self.store(&sealed, now_unix_ms);
        self.after(result, !sealed.is_empty())?;
        Ok(!sealed.is_empty())
    }

    fn store(
        &mut self,
        sealed: &[empreinte_shared::wire::Batch],
        now_unix_ms: u64,
    ) -> Result<(), SpoolError> {
        for b in sealed {
            self.spool.append(b)?;
        }
        self.spool.write_open(self.batcher.open_batch().as_ref())?;
        self.spool.enforce_limits(now_unix_ms)
    }

    fn after(&mut self, result: Result<(), SpoolError>, sealed: bool) -> Result<(), SpoolError> {
        if result.is_err() {
            self.metrics.lock().spool_errors_total += 1;
        }
        self.publish();
        if sealed {
            self.sealed.notify_one();
        }
        result
    }

    /// Copies the spool's state to the metrics.
    pub fn publish(&self) {
        let status = self.spool.status();
        let dropped_uj = self.spool.counts().dropped_energy_uj_total;
        let mut m = self.metrics.lock();
        m.spool = status;
        m.dropped_energy_uj_total = dropped_uj;
    }
}

/// The operating system's host name (the default agent id).
pub fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}
