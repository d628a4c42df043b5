//! The spool's bounds: past its size or age limit, the oldest batches are dropped,
//! counted and logged with their energy.

use super::{Spool, SpoolError};
use crate::push::batcher::batch_energy_uj;

/// The spool's bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpoolLimits {
    /// Past this many bytes of unacknowledged batches, the oldest are dropped.
    pub max_bytes: u64,
    /// Batches sealed longer ago than this are dropped.
    pub max_age_ms: u64,
    /// A new segment starts when the current one is this large.
    pub segment_bytes: u64,
}

impl SpoolLimits {
    /// Limits for a spool of `max_bytes` and `max_age_ms`: segments of an eighth of the
    /// size limit, at most 1 MiB, so dropping old data drops little at a time.
    pub fn new(max_bytes: u64, max_age_ms: u64) -> SpoolLimits {
        SpoolLimits {
            max_bytes,
            max_age_ms,
            segment_bytes: (max_bytes / 8).clamp(4096, 1024 * 1024),
        }
    }
}

impl Spool {
    /// Drops the oldest batches while the spool is over its size limit or its oldest
    /// batch is over the age limit at `now_unix_ms`; each is counted and logged with its
    /// energy.
    pub fn enforce_limits(&mut self, now_unix_ms: u64) -> Result<(), SpoolError> {
        let too_old = now_unix_ms.saturating_sub(self.limits.max_age_ms);
        let mut dropped = 0u64;
        let mut dropped_uj = 0u64;
        let mut oldest_dropped = None;
        loop {
            let over_size = self.bytes() > self.limits.max_bytes;
            let over_age = self.oldest_sealed.is_some_and(|s| s < too_old);
            if !(over_size || over_age) {
                break;
            }
            let pending = self.read_pending(1)?;
            if pending.end == self.cursor {
                break;
            }
            for b in &pending.batches {
                dropped += 1;
                dropped_uj = dropped_uj.saturating_add(batch_energy_uj(b));
                oldest_dropped.get_or_insert(b.start_unix_ms);
            }
            self.cursor = pending.end;
            self.refresh_oldest()?;
        }
        if dropped > 0 {
            self.counts.dropped_batches_total += dropped;
            self.counts.dropped_energy_uj_total = self
                .counts
                .dropped_energy_uj_total
                .saturating_add(dropped_uj);
            tracing::warn!(
                dir = %self.dir.display(),
                batches = dropped,
                energy_joules = dropped_uj as f64 / 1e6,
                oldest_start_unix_ms = oldest_dropped.unwrap_or(0),
                max_bytes = self.limits.max_bytes,
                max_age_seconds = self.limits.max_age_ms / 1000,
                "spool over its limit: dropped the oldest batches, whose energy will not reach the collector"
            );
            self.normalize()?;
            self.refresh_oldest()?;
        }
        Ok(())
    }
}
