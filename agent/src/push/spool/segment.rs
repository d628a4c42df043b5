//! The segment format: sealed batches as JSON lines in numbered files
//! (`NNNNNNNNNNNNNNNNNNNN.jsonl`), appended and synced, scanned when the spool opens.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use empreinte_shared::wire::Batch;

use super::{Pending, Position, Spool, SpoolError, io};

pub(super) const SEGMENT_EXT: &str = "jsonl";

#[derive(Clone, Copy, Debug)]
pub(super) struct Segment {
    pub(super) number: u64,
    pub(super) len: u64,
}

impl Spool {
    pub(super) fn segment_path(&self, n: u64) -> PathBuf {
        self.dir.join(format!("{n:020}.{SEGMENT_EXT}"))
    }

    /// Appends a sealed batch (written and synced before this returns). When the write or
    /// the sync fails (a full disk), the segment is cut back to its last good line, so no
    /// torn line is left for the next batch to be glued to, and the error is returned:
    /// the caller keeps the batch and appends it again later.
    pub fn append(&mut self, batch: &Batch) -> Result<(), SpoolError> {
        let needs_new = self.torn_tail
            || self
                .segments
                .last()
                .is_none_or(|s| s.len >= self.limits.segment_bytes);
        if needs_new {
            let number = self.segments.last().map_or(0, |s| s.number + 1);
            if self.segments.is_empty() {
                self.cursor = Position {
                    segment: number,
                    offset: 0,
                    index: self.cursor.index,
                };
            }
            self.segments.push(Segment { number, len: 0 });
        }
        let Some(seg) = self.segments.last().copied() else {
            return Ok(());
        };
        let path = self.segment_path(seg.number);
        let mut line = serde_json::to_vec(batch).map_err(|source| SpoolError::Encode {
            path: path.clone(),
            source,
        })?;
        line.push(b'\n');
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        self.torn_tail = false;
        if let Err(e) = file.write_all(&line).and_then(|()| file.sync_data()) {
            if let Err(cut) = file.set_len(seg.len).and_then(|()| file.sync_data()) {
                // The torn tail stays past the segment's good length, where nothing reads;
                // the next batch goes to a new segment, and the next start cuts it off.
                tracing::error!(path = %path.display(), error = %cut, "cannot cut a failed append back; the next batch starts a new segment");
                self.torn_tail = true;
            }
            return Err(io(&path)(e));
        }
        if needs_new {
            sync_dir(&self.dir);
        }
        if let Some(last) = self.segments.last_mut() {
            last.len += line.len() as u64;
        }
        if self.head_index == self.cursor.index {
            self.oldest_start = Some(batch.start_unix_ms);
            self.oldest_sealed = Some(batch.end_unix_ms);
        }
        self.head_index += 1;
        self.last_sealed = Some((batch.run_id.clone(), batch.seq));
        Ok(())
    }

    /// Up to `max` unacknowledged batches, oldest first, read from disk.
    pub fn read_pending(&self, max: usize) -> Result<Pending, SpoolError> {
        let mut batches = Vec::new();
        let mut end = self.cursor;
        for seg in self
            .segments
            .iter()
            .filter(|s| s.number >= self.cursor.segment)
        {
            if batches.len() >= max {
                break;
            }
            let from = if seg.number == self.cursor.segment {
                self.cursor.offset
            } else {
                0
            };
            if from >= seg.len {
                continue;
            }
            let path = self.segment_path(seg.number);
            let mut reader = open_at(&path, from)?;
            let mut offset = from;
            let mut line = Vec::new();
            while batches.len() < max && offset < seg.len {
                line.clear();
                let n = reader.read_until(b'\n', &mut line).map_err(io(&path))?;
                if n == 0 || line.last() != Some(&b'\n') {
                    break;
                }
                offset += n as u64;
                end = Position {
                    segment: seg.number,
                    offset,
                    index: end.index,
                };
                match serde_json::from_slice::<Batch>(&line) {
                    Ok(b) => {
                        batches.push(b);
                        end.index += 1;
                    }
                    // Counted when the spool was opened.
                    Err(_) => continue,
                }
            }
        }
        Ok(Pending { batches, end })
    }
}

pub(super) struct Scan {
    pub(super) len: u64,
    pub(super) batches: u64,
    pub(super) corrupt: u64,
    pub(super) last: Option<(String, u64)>,
    /// Whether `from` is where a line starts (or the end of the good lines).
    pub(super) from_is_line_start: bool,
}

/// Reads a segment from `from`, counting good and bad lines; in the last segment a torn
/// final line (no newline) is cut off so that appends start on a line of their own.
pub(super) fn scan_segment(path: &Path, from: u64, last_segment: bool) -> Result<Scan, SpoolError> {
    let len = fs::metadata(path).map_err(io(path))?.len();
    let mut reader = open_at(path, 0)?;
    let mut scan = Scan {
        len,
        batches: 0,
        corrupt: 0,
        last: None,
        from_is_line_start: from == 0,
    };
    let mut offset = 0u64;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).map_err(io(path))?;
        if n == 0 {
            break;
        }
        if line.last() != Some(&b'\n') {
            scan.from_is_line_start |= offset == from;
            // Torn: a crash in the middle of an append.
            scan.corrupt += 1;
            if last_segment {
                let file = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(io(path))?;
                file.set_len(offset).map_err(io(path))?;
                file.sync_data().map_err(io(path))?;
            }
            scan.len = offset;
            break;
        }
        let parsed = serde_json::from_slice::<Batch>(&line);
        match parsed {
            Ok(b) => {
                if offset >= from {
                    scan.batches += 1;
                }
                scan.last = Some((b.run_id, b.seq));
            }
            Err(_) if offset >= from => scan.corrupt += 1,
            Err(_) => {}
        }
        offset += n as u64;
        scan.from_is_line_start |= offset == from;
    }
    Ok(scan)
}

pub(super) fn open_at(path: &Path, offset: u64) -> Result<BufReader<File>, SpoolError> {
    let mut file = File::open(path).map_err(io(path))?;
    file.seek(SeekFrom::Start(offset)).map_err(io(path))?;
    Ok(BufReader::new(file))
}

/// Replaces `path` with `data` by writing a temporary file and renaming it.
pub(super) fn write_replace(path: &Path, data: &[u8], sync: bool) -> Result<(), SpoolError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = File::create(&tmp).map_err(io(&tmp))?;
    file.write_all(data).map_err(io(&tmp))?;
    if sync {
        file.sync_data().map_err(io(&tmp))?;
    }
    fs::rename(&tmp, path).map_err(io(path))
}

/// Syncs a directory so a new file's name survives a power loss; best effort.
pub(super) fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}
