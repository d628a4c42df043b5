//! Opening a spool: the segments and cursor an earlier run left, its torn last line,
//! its open batch.

use std::fs;
use std::path::Path;

use empreinte_shared::wire::Batch;

use super::cursor::{CURSOR, parse_cursor};
use super::segment::{Segment, scan_segment};
use super::{OPEN, Position, Spool, SpoolCounts, SpoolError, SpoolLimits, io};
use crate::push::batcher::batch_energy_uj;

impl Spool {
    /// Opens (creating it if needed) the spool in `dir`: reads the cursor, checks every
    /// segment after it, seals a leftover `open.json`, then applies the limits at
    /// `now_unix_ms`.
    pub fn open(dir: &Path, limits: SpoolLimits, now_unix_ms: u64) -> Result<Spool, SpoolError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let mut numbers = Vec::new();
        for entry in fs::read_dir(dir).map_err(io(dir))? {
            let entry = entry.map_err(io(dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(n) = name
                .strip_suffix(".jsonl")
                .filter(|n| n.len() == 20)
                .and_then(|n| n.parse::<u64>().ok())
            {
                numbers.push(n);
            }
        }
        numbers.sort_unstable();
        let cursor_path = dir.join(CURSOR);
        let mut unreadable = false;
        let (cur_seg, cur_off) = match fs::read_to_string(&cursor_path) {
            Ok(text) => parse_cursor(&text).unwrap_or_else(|| {
                tracing::warn!(path = %cursor_path.display(), content = %text.trim(), "unreadable spool cursor; resending from the oldest batch (the collector ignores batches it already has)");
                unreadable = true;
                (0, 0)
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (0, 0),
            Err(e) => return Err(io(&cursor_path)(e)),
        };
        let mut spool = Spool {
            dir: dir.to_path_buf(),
            limits,
            segments: Vec::new(),
            cursor: Position {
                segment: 0,
                offset: 0,
                index: 0,
            },
            head_index: 0,
            oldest_start: None,
            oldest_sealed: None,
            counts: SpoolCounts::default(),
            last_sealed: None,
            torn_tail: false,
            opened_unix_ms: now_unix_ms,
            index_at_open: 0,
        };
        let (cur_seg, cur_off) = spool.checked_cursor(&numbers, cur_seg, cur_off, &cursor_path)?;
        spool.counts.cursor_reset |= unreadable;
        let last_number = numbers.last().copied();
        for n in numbers {
            let path = spool.segment_path(n);
            if n < cur_seg {
                // Wholly acknowledged; its deletion was interrupted.
                fs::remove_file(&path).map_err(io(&path))?;
                continue;
            }
            let from = if n == cur_seg { cur_off } else { 0 };
            let scan = scan_segment(&path, from, Some(n) == last_number)?;
            spool.counts.corrupt_lines_total += scan.corrupt;
            spool.head_index += scan.batches;
            if scan.last.is_some() {
                spool.last_sealed = scan.last;
            }
            spool.segments.push(Segment {
                number: n,
                len: scan.len,
            });
        }
        let (cur_seg, cur_off) = match spool.segments.first() {
            None => (0, 0),
            Some(first) if first.number != cur_seg => (first.number, 0),
            Some(first) => (cur_seg, cur_off.min(first.len)),
        };
        spool.cursor = Position {
            segment: cur_seg,
            offset: cur_off,
            index: 0,
        };
        if spool.counts.corrupt_lines_total > 0 {
            tracing::warn!(dir = %dir.display(), lines = spool.counts.corrupt_lines_total, "spool lines that were not batches were skipped (a write cut short by a crash?)");
        }
        spool.recover_open()?;
        spool.index_at_open = spool.head_index;
        spool.normalize()?;
        spool.refresh_oldest()?;
        spool.enforce_limits(now_unix_ms)?;
        Ok(spool)
    }

    /// The cursor `(segment, offset)` read from `acked` if it points where a batch starts
    /// in a segment present (or before the oldest one: acknowledged segments whose
    /// deletion was interrupted); otherwise, with a warning, the oldest batch present.
    /// Nothing is lost by falling back: the collector stores a batch's name once.
    fn checked_cursor(
        &mut self,
        numbers: &[u64],
        segment: u64,
        offset: u64,
        cursor_path: &Path,
    ) -> Result<(u64, u64), SpoolError> {
        let (Some(&first), Some(&last)) = (numbers.first(), numbers.last()) else {
            return Ok((0, 0));
        };
        if segment < first {
            return Ok((first, 0));
        }
        let valid = numbers.binary_search(&segment).is_ok() && {
            let path = self.segment_path(segment);
            let len = fs::metadata(&path).map_err(io(&path))?.len();
            offset <= len && scan_segment(&path, offset, false)?.from_is_line_start
        };
        if !valid {
            tracing::warn!(
                path = %cursor_path.display(),
                segment,
                offset,
                oldest_segment = first,
                newest_segment = last,
                "the spool cursor does not point at a batch in the segments present; resending from the oldest batch (the collector ignores batches it already has)"
            );
            self.counts.cursor_reset = true;
            return Ok((first, 0));
        }
        Ok((segment, offset))
    }

    pub(super) fn recover_open(&mut self) -> Result<(), SpoolError> {
        let path = self.dir.join(OPEN);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io(&path)(e)),
        };
        match serde_json::from_str::<Batch>(&text) {
            Ok(batch) => {
                let name = (batch.run_id.clone(), batch.seq);
                if self.last_sealed.as_ref() != Some(&name) && !batch.records.is_empty() {
                    tracing::info!(run_id = %batch.run_id, seq = batch.seq, energy_uj = batch_energy_uj(&batch), "sealed the open batch an earlier run left");
                    self.append(&batch)?;
                    self.counts.recovered.push(name);
                }
            }
            Err(e) => {
                self.counts.corrupt_lines_total += 1;
                tracing::warn!(path = %path.display(), error = %e, "the open batch an earlier run left is unreadable; its energy is lost");
            }
        }
        fs::remove_file(&path).map_err(io(&path))
    }
}
