//! Batches refused on their own: set aside in `rejected/`, one file per batch with the
//! reason, so that delivery goes on and an operator can see (and resend) what was
//! refused. Their energy is counted, never silently lost.

use std::fs;
use std::io::Write;

use empreinte_shared::wire::Batch;

use super::segment::sync_dir;
use super::{Position, Spool, SpoolError, io};
use crate::push::batcher::batch_energy_uj;

/// The subdirectory of the spool where refused batches are kept.
pub const REJECTED_DIR: &str = "rejected";

/// What is written to `rejected/RUN-SEQ.json`.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RejectedBatch {
    /// The collector's HTTP status, or none when the agent itself found the batch
    /// unacceptable before sealing it.
    pub status: Option<u16>,
    /// The collector's message, or the problems the agent found.
    pub message: String,
    pub batch: Batch,
}

impl Spool {
    /// Sets aside a batch refused on its own: written (and synced) to `rejected/`,
    /// counted with its energy and logged. `end` (from [`Spool::read_pending`] of that one
    /// batch) moves the cursor past it, so the next batches go on; `None` for a batch that
    /// never entered a segment (refused before sealing).
    pub fn set_aside(
        &mut self,
        batch: &Batch,
        status: Option<u16>,
        message: &str,
        end: Option<Position>,
    ) -> Result<(), SpoolError> {
        let dir = self.dir.join(REJECTED_DIR);
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        let path = dir.join(format!("{}-{}.json", batch.run_id, batch.seq));
        let record = RejectedBatch {
            status,
            message: message.to_string(),
            batch: batch.clone(),
        };
        let text = serde_json::to_vec_pretty(&record).map_err(|source| SpoolError::Encode {
            path: path.clone(),
            source,
        })?;
        let written = fs::File::create(&path)
            .and_then(|mut f| f.write_all(&text).and_then(|()| f.sync_data()));
        if let Err(e) = written {
            let _ = fs::remove_file(&path);
            return Err(io(&path)(e));
        }
        sync_dir(&dir);
        let energy_uj = batch_energy_uj(batch);
        self.counts.rejected_batches_total += 1;
        self.counts.rejected_energy_uj_total = self
            .counts
            .rejected_energy_uj_total
            .saturating_add(energy_uj);
        tracing::error!(
            run_id = %batch.run_id,
            seq = batch.seq,
            energy_joules = energy_uj as f64 / 1e6,
            status,
            reason = %message,
            kept_in = %path.display(),
            "a batch was refused on its own: set aside, its energy will not reach the collector unless it is sent again by hand; delivery goes on"
        );
        if let Some(end) = end {
            self.ack(end)?;
        }
        Ok(())
    }

    /// Counts energy that is lost for good (a batch that could not be written to the
    /// disk, beyond what memory keeps), and logs it.
    pub fn count_lost(&mut self, batch: &Batch, reason: &str) {
        let energy_uj = batch_energy_uj(batch);
        self.counts.dropped_batches_total += 1;
        self.counts.dropped_energy_uj_total = self
            .counts
            .dropped_energy_uj_total
            .saturating_add(energy_uj);
        tracing::error!(
            run_id = %batch.run_id,
            seq = batch.seq,
            energy_joules = energy_uj as f64 / 1e6,
            reason,
            "a batch was dropped: its energy will not reach the collector"
        );
    }
}
