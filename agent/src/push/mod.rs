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
pub mod lock;
pub mod metrics;
pub mod spool;
pub mod tls;
pub mod totals;
pub mod wiring;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use empreinte_shared::wire::{Batch, Limits, SpoolStatus};

use crate::attribution::engine::ProjectEnergy;
use crate::config::PushConfig;
use batcher::Batcher;
use spool::{Spool, SpoolError, SpoolLimits};
use totals::QuietTotals;

/// Sealed batches kept in memory while the disk refuses them (a full disk); past this,
/// the oldest is dropped and counted.
pub const MAX_UNWRITTEN_BATCHES: usize = 1_024;

/// What `/metrics` shows of the push; published by the pipeline and the client.
#[derive(Clone, Debug, Default)]
pub struct PushMetrics {
    pub accepted_total: u64,
    pub duplicate_total: u64,
    pub refused_total: u64,
    pub failed_total: u64,
    /// Batches of pushes refused whole and sent again in smaller pushes.
    pub halved_total: u64,
    /// Batches refused on their own and set aside.
    pub set_aside_total: u64,
    pub last_success_unix_ms: Option<u64>,
    pub spool: SpoolStatus,
    pub spool_errors_total: u64,
    pub dropped_energy_uj_total: u64,
    pub rejected_batches_total: u64,
    pub rejected_energy_uj_total: u64,
    /// Sealed batches waiting in memory for the disk to take them.
    pub unwritten_batches: u64,
    /// Keys (project, component, source) in memory: those active within the window.
    pub active_keys: u64,
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
    quiet: QuietTotals,
    /// Sealed batches the disk has not taken yet, oldest first.
    unwritten: VecDeque<Batch>,
    limits: Limits,
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
        let quiet = QuietTotals::open(&config.spool_dir, &run_id);
        let pipeline = Pipeline {
            batcher: Batcher::new(run_id, interval_ms),
            spool,
            quiet,
            unwritten: VecDeque::new(),
            limits: Limits::default(),
            metrics: SharedPushMetrics::default(),
            sealed: Arc::new(tokio::sync::Notify::new()),
        };
        pipeline.publish();
        Ok(pipeline)
    }

    /// Keys without energy for longer than `window` leave memory and the batches'
    /// counters (1 hour by default).
    pub fn with_active_window(mut self, window: Duration) -> Pipeline {
        let ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        self.batcher = self.batcher.with_active_window(ms);
        self
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

    pub fn batcher(&self) -> &Batcher {
        &self.batcher
    }

    /// Folds one sampling cycle that ended at `end_unix_ms` (the sampling clock's Unix
    /// time) and lasted `length`, with the attribution's per-project state after it;
    /// spools what sealed and the open batch. Returns how many batches sealed.
    pub fn on_cycle(
        &mut self,
        end_unix_ms: u64,
        length: Duration,
        projects: &[ProjectEnergy],
    ) -> Result<usize, SpoolError> {
        self.on_cycle_with(end_unix_ms, length, projects, &[], Vec::new())
    }

    /// [`Pipeline::on_cycle`] with the parts of the projects' energy that served each
    /// model and the cycle's inference records.
    pub fn on_cycle_with(
        &mut self,
        end_unix_ms: u64,
        length: Duration,
        projects: &[ProjectEnergy],
        models: &[crate::attribution::engine::ModelEnergy],
        inference: Vec<empreinte_shared::wire::InferenceRecord>,
    ) -> Result<usize, SpoolError> {
        let length_ms = u64::try_from(length.as_millis()).unwrap_or(u64::MAX);
        let quiet = &mut self.quiet;
        let sealed = self.batcher.fold_all(
            end_unix_ms,
            length_ms,
            projects
                .iter()
                .map(|p| (&p.project, p.component, p.source, p.last_uj)),
            models,
            inference,
            &mut |key| quiet.take(key),
        );
        let n = sealed.len();
        let result = self.store(sealed, end_unix_ms);
        self.after(result, n > 0)?;
        Ok(n)
    }

    /// Seals the open batch (on shutdown) and spools it.
    pub fn seal(&mut self, now_unix_ms: u64) -> Result<bool, SpoolError> {
        let sealed: Vec<_> = self.batcher.seal().into_iter().collect();
        let any = !sealed.is_empty();
        let result = self.store(sealed, now_unix_ms);
        self.after(result, any)?;
        Ok(any)
    }

    /// Checks each sealed batch as a collector of this version would (a batch it would
    /// refuse is set aside at once, counted), queues the others for the disk, then
    /// appends what waits, rewrites the open batch and applies the limits. A batch the
    /// disk refuses stays queued (and its energy with it) and is appended again at the
    /// next cycle.
    fn store(&mut self, sealed: Vec<Batch>, now_unix_ms: u64) -> Result<(), SpoolError> {
        self.quiet.put(self.batcher.take_evicted());
        for b in sealed {
            let problems = b.problems(&self.limits);
            if problems.is_empty() {
                self.unwritten.push_back(b);
                continue;
            }
            let message: Vec<String> = problems.iter().map(ToString::to_string).collect();
            let message = format!(
                "refused by the agent before sealing, as a collector would: {}",
                message.join("; ")
            );
            if let Err(e) = self.spool.set_aside(&b, None, &message, None) {
                tracing::error!(error = %e, "cannot set aside a batch the collector would refuse");
                self.spool.count_lost(
                    &b,
                    "a batch the collector would refuse could not be set aside",
                );
            }
        }
        while self.unwritten.len() > MAX_UNWRITTEN_BATCHES {
            if let Some(b) = self.unwritten.pop_front() {
                self.spool.count_lost(
                    &b,
                    "the disk refused it for longer than memory keeps batches",
                );
            }
        }
        let mut first_error = None;
        while let Some(b) = self.unwritten.front() {
            match self.spool.append(b) {
                Ok(()) => {
                    self.unwritten.pop_front();
                }
                Err(e) => {
                    first_error = Some(e);
                    break;
                }
            }
        }
        let open = self.spool.write_open(self.batcher.open_batch().as_ref());
        let limits = self.spool.enforce_limits(now_unix_ms);
        match first_error {
            Some(e) => Err(e),
            None => open.and(limits),
        }
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
        let counts = self.spool.counts();
        let mut m = self.metrics.lock();
        m.spool = status;
        m.dropped_energy_uj_total = counts.dropped_energy_uj_total;
        m.rejected_batches_total = counts.rejected_batches_total;
        m.rejected_energy_uj_total = counts.rejected_energy_uj_total;
        m.unwritten_batches = self.unwritten.len() as u64;
        m.active_keys = self.batcher.active_keys() as u64;
    }

    /// On shutdown: sealed batches the disk never took are lost; counted and logged.
    pub fn abandon_unwritten(&mut self) {
        while let Some(b) = self.unwritten.pop_front() {
            self.spool
                .count_lost(&b, "the disk refused it until the agent stopped");
        }
        self.publish();
    }

    /// Batches sealed but not yet on disk.
    pub fn unwritten_batches(&self) -> usize {
        self.unwritten.len()
    }
}

/// The operating system's host name (the default agent id).
pub fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}
