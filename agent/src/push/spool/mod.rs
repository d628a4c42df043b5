//! The on-disk spool: batches wait here until the collector acknowledges them.
//!
//! Layout of the spool directory:
//! - `open.json`: the open batch as the last cycle left it (name, records, counters),
//!   rewritten after every cycle by writing `open.json.tmp` and renaming it, so an agent
//!   killed with SIGKILL loses at most the cycle in flight.
//! - `NNNNNNNNNNNNNNNNNNNN.jsonl`: sealed batches, one JSON line each, in numbered
//!   segments (20 digits, increasing); a new segment starts past `segment_bytes`.
//! - `acked`: the cursor, `SEGMENT OFFSET`, where the first batch neither acknowledged nor
//!   dropped starts. Written by temp file and rename; segments wholly behind it are
//!   deleted.
//!
//! On opening, a segment's torn last line (a crash mid-append) is cut off, unparsable
//! lines are counted and skipped, and `open.json` is sealed as it was, with its old run
//! id and sequence number, unless it is the last batch already sealed: a batch's name
//! is on disk before it is sent, and a replay carries the same name.
//!
//! Only the cursor's position and per-segment sizes are kept in memory; batches are read
//! from disk when pushed.
//!
//! Files by responsibility: [`segment`] (the line format of a segment: append, scan,
//! read), [`cursor`] (the `acked` cursor and the deletion of what is behind it),
//! [`limits`] (size and age limits), [`recovery`] (opening: what an earlier run left),
//! [`rejected`] (batches refused on their own, set aside).

mod cursor;
mod limits;
mod recovery;
mod rejected;
mod segment;

use std::fs;
use std::path::{Path, PathBuf};

use empreinte_shared::wire::{Batch, SpoolStatus};

pub use cursor::Position;
pub use limits::SpoolLimits;
pub use rejected::{REJECTED_DIR, RejectedBatch};
use segment::{Segment, write_replace};

const OPEN: &str = "open.json";

/// A spool failure, with the file concerned.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("spool {path}: cannot encode a batch: {source}")]
    Encode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

pub(super) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Batches read for a push, and where the spool's cursor goes once they are acknowledged.
#[derive(Debug)]
pub struct Pending {
    pub batches: Vec<Batch>,
    pub end: Position,
}

/// What the spool went through since it was opened (besides its current contents).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpoolCounts {
    /// Batches lost: over the size or age limit, or not writable to the disk.
    pub dropped_batches_total: u64,
    pub dropped_energy_uj_total: u64,
    /// Batches refused on their own and set aside in `rejected/`.
    pub rejected_batches_total: u64,
    pub rejected_energy_uj_total: u64,
    /// Lines that were not a batch: a torn write cut off, or garbage skipped.
    pub corrupt_lines_total: u64,
    /// The `acked` cursor did not point at a batch present and was reset to the oldest.
    pub cursor_reset: bool,
    /// Open batches of an earlier run sealed at opening: (run id, seq).
    pub recovered: Vec<(String, u64)>,
}

/// A spool directory, opened.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    limits: SpoolLimits,
    /// Every segment file, oldest first; the last one takes appends.
    segments: Vec<Segment>,
    cursor: Position,
    /// Ordinal of the next batch appended.
    head_index: u64,
    /// Start of the batch at the cursor, when known.
    oldest_start: Option<u64>,
    /// When the batch at the cursor was sealed, as far as this run knows: its end, or
    /// the opening of the spool for a batch found there then, whichever is earlier (a
    /// batch dated in the future by a stepped clock still ages).
    oldest_sealed: Option<u64>,
    /// A failed append could not be cut back: the next one starts a new segment.
    torn_tail: bool,
    opened_unix_ms: u64,
    /// Batches found (or recovered) at opening have ordinals below this.
    index_at_open: u64,
    counts: SpoolCounts,
    /// Name of the last batch appended, to recognise `open.json` already sealed.
    last_sealed: Option<(String, u64)>,
}

impl Spool {
    /// Writes the open batch (`None`: there is none) so that a crash loses at most the
    /// cycle in flight.
    pub fn write_open(&mut self, batch: Option<&Batch>) -> Result<(), SpoolError> {
        let path = self.dir.join(OPEN);
        match batch {
            None => match fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&path)(e)),
                _ => Ok(()),
            },
            Some(batch) => {
                let text = serde_json::to_vec(batch).map_err(|source| SpoolError::Encode {
                    path: path.clone(),
                    source,
                })?;
                write_replace(&path, &text, false)
            }
        }
    }

    pub(super) fn refresh_oldest(&mut self) -> Result<(), SpoolError> {
        let pending = self.read_pending(1)?;
        let oldest = pending.batches.first();
        self.oldest_start = oldest.map(|b| b.start_unix_ms);
        self.oldest_sealed = oldest.map(|b| {
            if self.cursor.index < self.index_at_open {
                b.end_unix_ms.min(self.opened_unix_ms)
            } else {
                b.end_unix_ms
            }
        });
        Ok(())
    }

    /// Where the first batch neither acknowledged nor dropped starts.
    pub fn cursor(&self) -> Position {
        self.cursor
    }

    /// Bytes of batches neither acknowledged nor dropped.
    pub fn bytes(&self) -> u64 {
        self.segments
            .iter()
            .map(|s| {
                if s.number == self.cursor.segment {
                    s.len.saturating_sub(self.cursor.offset)
                } else if s.number > self.cursor.segment {
                    s.len
                } else {
                    0
                }
            })
            .sum()
    }

    /// Batches neither acknowledged nor dropped.
    pub fn batches(&self) -> u64 {
        self.head_index.saturating_sub(self.cursor.index)
    }

    pub fn counts(&self) -> &SpoolCounts {
        &self.counts
    }

    /// The spool as the wire reports it.
    pub fn status(&self) -> SpoolStatus {
        SpoolStatus {
            batches: self.batches(),
            bytes: self.bytes(),
            oldest_start_unix_ms: self.oldest_start,
            dropped_batches_total: self.counts.dropped_batches_total,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests;
