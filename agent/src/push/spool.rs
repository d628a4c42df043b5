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

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use empreinte_shared::wire::{Batch, SpoolStatus};

use super::batcher::batch_energy_uj;

const OPEN: &str = "open.json";
const CURSOR: &str = "acked";
const SEGMENT_EXT: &str = "jsonl";

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

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The spool's bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpoolLimits {
    /// Past this many bytes of unacknowledged batches, the oldest are dropped.
    pub max_bytes: u64,
    /// Batches that started longer ago than this are dropped.
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

/// A place in the spool: a segment, a byte offset in it, and the ordinal of the batch
/// that starts there (counted from the cursor at opening; good lines only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
    index: u64,
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
    pub dropped_batches_total: u64,
    pub dropped_energy_uj_total: u64,
    /// Lines that were not a batch: a torn write cut off, or garbage skipped.
    pub corrupt_lines_total: u64,
    /// Open batches of an earlier run sealed at opening: (run id, seq).
    pub recovered: Vec<(String, u64)>,
}

#[derive(Clone, Copy, Debug)]
struct Segment {
    number: u64,
    len: u64,
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
    counts: SpoolCounts,
    /// Name of the last batch appended, to recognise `open.json` already sealed.
    last_sealed: Option<(String, u64)>,
}

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
        let (mut cur_seg, mut cur_off) = match fs::read_to_string(&cursor_path) {
            Ok(text) => parse_cursor(&text).unwrap_or_else(|| {
                tracing::warn!(path = %cursor_path.display(), content = %text.trim(), "unreadable spool cursor; resending from the oldest segment (the collector ignores batches it already has)");
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
            counts: SpoolCounts::default(),
            last_sealed: None,
        };
        if numbers.first().is_some_and(|&first| first > cur_seg) {
            // The cursor's segment is gone (dropped or deleted): start at the oldest.
            cur_seg = numbers.first().copied().unwrap_or(0);
            cur_off = 0;
        }
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
            let from = from.min(scan.len);
            if n == cur_seg {
                cur_off = from;
            }
            spool.segments.push(Segment {
                number: n,
                len: scan.len,
            });
        }
        if spool.segments.is_empty() {
            cur_seg = 0;
            cur_off = 0;
        } else if spool.segments[0].number != cur_seg {
            cur_seg = spool.segments[0].number;
            cur_off = 0;
        }
        spool.cursor = Position {
            segment: cur_seg,
            offset: cur_off,
            index: 0,
        };
        if spool.counts.corrupt_lines_total > 0 {
            tracing::warn!(dir = %dir.display(), lines = spool.counts.corrupt_lines_total, "spool lines that were not batches were skipped (a write cut short by a crash?)");
        }
        spool.recover_open()?;
        spool.normalize()?;
        spool.refresh_oldest()?;
        spool.enforce_limits(now_unix_ms)?;
        Ok(spool)
    }

    fn segment_path(&self, n: u64) -> PathBuf {
        self.dir.join(format!("{n:020}.{SEGMENT_EXT}"))
    }

    fn recover_open(&mut self) -> Result<(), SpoolError> {
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

    /// Appends a sealed batch (written and synced before this returns).
    pub fn append(&mut self, batch: &Batch) -> Result<(), SpoolError> {
        let needs_new = self
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
        file.write_all(&line).map_err(io(&path))?;
        file.sync_data().map_err(io(&path))?;
        if needs_new {
            sync_dir(&self.dir);
        }
        if let Some(last) = self.segments.last_mut() {
            last.len += line.len() as u64;
        }
        if self.head_index == self.cursor.index {
            self.oldest_start = Some(batch.start_unix_ms);
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

    /// Moves the cursor to `end` (from [`Spool::read_pending`]) once the collector has
    /// stored everything before it, and deletes the segments left behind.
    pub fn ack(&mut self, end: Position) -> Result<(), SpoolError> {
        if end.index < self.cursor.index
            || (end.segment, end.offset) <= (self.cursor.segment, self.cursor.offset)
        {
            // Already behind the cursor (dropped meanwhile).
            return Ok(());
        }
        self.cursor = end;
        self.normalize()?;
        self.refresh_oldest()
    }

    /// Persists the cursor, then deletes segments wholly behind it.
    fn normalize(&mut self) -> Result<(), SpoolError> {
        // A cursor at the end of a segment that is not the last moves to the next one.
        while let [first, second, ..] = self.segments[..] {
            if first.number < self.cursor.segment
                || (first.number == self.cursor.segment && self.cursor.offset >= first.len)
            {
                if first.number == self.cursor.segment {
                    self.cursor.segment = second.number;
                    self.cursor.offset = 0;
                }
                self.persist_cursor()?;
                let path = self.segment_path(first.number);
                match fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(io(&path)(e));
                    }
                    _ => {}
                }
                self.segments.remove(0);
            } else {
                break;
            }
        }
        self.persist_cursor()
    }

    fn persist_cursor(&self) -> Result<(), SpoolError> {
        let text = format!("{} {}\n", self.cursor.segment, self.cursor.offset);
        let path = self.dir.join(CURSOR);
        if fs::read_to_string(&path).is_ok_and(|t| t == text) {
            return Ok(());
        }
        write_replace(&path, text.as_bytes(), false)
    }

    fn refresh_oldest(&mut self) -> Result<(), SpoolError> {
        self.oldest_start = self
            .read_pending(1)?
            .batches
            .first()
            .map(|b| b.start_unix_ms);
        Ok(())
    }

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
            let over_age = self.oldest_start.is_some_and(|s| s < too_old);
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

fn parse_cursor(text: &str) -> Option<(u64, u64)> {
    let mut parts = text.split_whitespace();
    let segment = parts.next()?.parse().ok()?;
    let offset = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((segment, offset))
}

struct Scan {
    len: u64,
    batches: u64,
    corrupt: u64,
    last: Option<(String, u64)>,
}

/// Reads a segment from `from`, counting good and bad lines; in the last segment a torn
/// final line (no newline) is cut off so that appends start on a line of their own.
fn scan_segment(path: &Path, from: u64, last_segment: bool) -> Result<Scan, SpoolError> {
    let len = fs::metadata(path).map_err(io(path))?.len();
    let mut reader = open_at(path, 0)?;
    let mut scan = Scan {
        len,
        batches: 0,
        corrupt: 0,
        last: None,
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
            // Torn: a crash in the middle of an append.
            scan.corrupt += 1;
            if last_segment {
                let file = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(io(path))?;
                file.set_len(offset).map_err(io(path))?;
                file.sync_data().map_err(io(path))?;
                scan.len = offset;
            }
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
    }
    Ok(scan)
}

fn open_at(path: &Path, offset: u64) -> Result<BufReader<File>, SpoolError> {
    let mut file = File::open(path).map_err(io(path))?;
    file.seek(SeekFrom::Start(offset)).map_err(io(path))?;
    Ok(BufReader::new(file))
}

/// Replaces `path` with `data` by writing a temporary file and renaming it.
fn write_replace(path: &Path, data: &[u8], sync: bool) -> Result<(), SpoolError> {
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
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use empreinte_shared::wire::{Counter, Record};
    use empreinte_shared::{Component, SourceKind};

    const RUN: &str = "00000000000000000000000000000001";
    const DAY: u64 = 86_400_000;
    const NOW: u64 = 1_800_000_000_000;

    fn batch(run: &str, seq: u64, start: u64, uj: u64) -> Batch {
        Batch {
            run_id: run.into(),
            seq,
            start_unix_ms: start,
            end_unix_ms: start + 15_000,
            records: vec![Record {
                project: "p".into(),
                component: Component::Cpu,
                source: SourceKind::Rapl,
                start_unix_ms: start,
                end_unix_ms: start + 15_000,
                energy_uj: uj,
            }],
            counters: vec![Counter {
                project: "p".into(),
                component: Component::Cpu,
                source: SourceKind::Rapl,
                total_uj: uj * seq,
            }],
        }
    }

    fn limits() -> SpoolLimits {
        SpoolLimits {
            max_bytes: 1 << 30,
            max_age_ms: 8 * DAY,
            segment_bytes: 2_000,
        }
    }

    fn segments(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".jsonl"))
            .collect();
        v.sort();
        v
    }

    fn seqs(p: &Pending) -> Vec<u64> {
        p.batches.iter().map(|b| b.seq).collect()
    }

    #[test]
    fn appended_batches_are_read_in_order_acknowledged_and_their_segments_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), limits(), NOW).unwrap();
        for seq in 1..=30 {
            s.append(&batch(RUN, seq, NOW + seq * 15_000, seq)).unwrap();
        }
        assert_eq!(s.batches(), 30);
        let n_segments = segments(dir.path()).len();
        assert!(n_segments >= 3, "rotation at 2 000 bytes: {n_segments}");
        assert_eq!(s.status().oldest_start_unix_ms, Some(NOW + 15_000));

        let first = s.read_pending(12).unwrap();
        assert_eq!(seqs(&first), (1..=12).collect::<Vec<_>>());
        // Reading does not consume.
        assert_eq!(seqs(&s.read_pending(12).unwrap()), seqs(&first));
        s.ack(first.end).unwrap();
        assert_eq!(s.batches(), 18);
        assert_eq!(s.status().oldest_start_unix_ms, Some(NOW + 13 * 15_000));
        assert!(
            segments(dir.path()).len() < n_segments,
            "acknowledged segments are deleted"
        );
        // An acknowledgement that arrives late changes nothing.
        s.ack(first.end).unwrap();
        assert_eq!(s.batches(), 18);

        let rest = s.read_pending(100).unwrap();
        assert_eq!(seqs(&rest), (13..=30).collect::<Vec<_>>());
        s.ack(rest.end).unwrap();
        assert_eq!(s.batches(), 0);
        assert_eq!(s.bytes(), 0);
        assert!(s.read_pending(10).unwrap().batches.is_empty());
        assert!(segments(dir.path()).len() <= 1);
    }

    #[test]
    fn a_restart_resumes_from_the_cursor() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = Spool::open(dir.path(), limits(), NOW).unwrap();
            for seq in 1..=20 {
                s.append(&batch(RUN, seq, NOW, 1)).unwrap();
            }
            let p = s.read_pending(7).unwrap();
            s.ack(p.end).unwrap();
        }
        let mut s = Spool::open(dir.path(), limits(), NOW).unwrap();
        assert_eq!(s.batches(), 13);
        let p = s.read_pending(100).unwrap();
        assert_eq!(seqs(&p), (8..=20).collect::<Vec<_>>());
        s.append(&batch(RUN, 21, NOW, 1)).unwrap();
        assert_eq!(seqs(&s.read_pending(100).unwrap()).last(), Some(&21));
    }

    #[test]
    fn the_open_batch_left_by_a_crash_is_sealed_with_its_old_name() {
        let dir = tempfile::tempdir().unwrap();
        let old = "0123456789abcdef0123456789abcdef";
        {
            let mut s = Spool::open(dir.path(), limits(), NOW).unwrap();
            s.append(&batch(old, 1, NOW, 5)).unwrap();
            s.write_open(Some(&batch(old, 2, NOW + 15_000, 7))).unwrap();
            // SIGKILL: nothing else runs.
        }
        let s = Spool::open(dir.path(), limits(), NOW).unwrap();
        assert_eq!(s.counts().recovered, vec![(old.to_string(), 2)]);
        let p = s.read_pending(10).unwrap();
        assert_eq!(
            p.batches,
            vec![batch(old, 1, NOW, 5), batch(old, 2, NOW + 15_000, 7)]
        );
        assert!(!dir.path().join(OPEN).exists());
        // Opening again does not seal it twice.
        drop(s);
        let s = Spool::open(dir.path(), limits(), NOW).unwrap();
        assert_eq!(s.batches(), 2);
    }

    #[test]
    fn an_open_batch_already_sealed_is_not_sealed_again() {
        // A crash between the append of a sealed batch and the rewrite of open.json.
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = Spool::open(dir.path(), limits(), NOW).unwrap();
            s.write_open(Some(&batch(RUN, 1, NOW, 5))).unwrap();
            s.append(&batch(RUN, 1, NOW, 5)).unwrap();
        }
        let s = Spool::open(dir.path(), limits(), NOW).unwrap();
        assert_eq!(s.batches(), 1);
        assert!(s.counts().recovered.is_empty());
    }

    #[test]
    fn a_torn_last_line_is_cut_off_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = Spool::open(dir.path(), limits(), NOW).unwrap();
            s.append(&batch(RUN, 1, NOW, 5)).unwrap();
            s.append(&batch(RUN, 2, NOW, 6)).unwrap();
        }
        let seg = dir.path().join(&segments(dir.path())[0]);
        let mut text = fs::read_to_string(&seg).unwrap();
        let whole = serde_json::to_string(&batch(RUN, 3, NOW, 7)).unwrap();
        text.push_str(&whole[..whole.len() / 2]);
        fs::write(&seg, &text).unwrap();

        let mut s = Spool::open(dir.path(), limits(), NOW).unwrap();
        assert_eq!(s.counts().corrupt_lines_total, 1);
        assert_eq!(s.batches(), 2);
        // New batches start on a line of their own.
        s.append(&batch(RUN, 3, NOW, 7)).unwrap();
        let p = s.read_pending(10).unwrap();
        assert_eq!(seqs(&p), [1, 2, 3]);
        assert_eq!(p.batches[2], batch(RUN, 3, NOW, 7));
    }

    #[test]
    fn garbage_lines_are_skipped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let line = |b: &Batch| serde_json::to_string(b).unwrap() + "\n";
        fs::write(
            dir.path().join(format!("{:020}.jsonl", 4)),
            line(&batch(RUN, 1, NOW, 5)) + "not json\n" + &line(&batch(RUN, 2, NOW, 6)),
        )
        .unwrap();
        let mut s = Spool::open(dir.path(), limits(), NOW).unwrap();
        assert_eq!(s.counts().corrupt_lines_total, 1);
        assert_eq!(s.batches(), 2);
        let p = s.read_pending(10).unwrap();
        assert_eq!(seqs(&p), [1, 2]);
        s.ack(p.end).unwrap();
        assert_eq!(s.batches(), 0);
    }

    #[test]
    fn over_the_size_limit_the_oldest_batches_are_dropped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let one = serde_json::to_vec(&batch(RUN, 10, NOW, 1_000))
            .unwrap()
            .len() as u64
            + 1;
        let lim = SpoolLimits {
            max_bytes: 10 * one,
            max_age_ms: 8 * DAY,
            segment_bytes: 3 * one,
        };
        let mut s = Spool::open(dir.path(), lim, NOW).unwrap();
        for seq in 10..=34 {
            s.append(&batch(RUN, seq, NOW, 1_000)).unwrap();
            s.enforce_limits(NOW).unwrap();
            assert!(s.bytes() <= lim.max_bytes);
        }
        assert_eq!(s.batches(), 10);
        assert_eq!(s.counts().dropped_batches_total, 15);
        assert_eq!(s.counts().dropped_energy_uj_total, 15_000);
        assert_eq!(s.status().dropped_batches_total, 15);
        let p = s.read_pending(100).unwrap();
        assert_eq!(seqs(&p), (25..=34).collect::<Vec<_>>());
        // The disk holds at most the limit and one segment's acknowledged head.
        let on_disk: u64 = segments(dir.path())
            .iter()
            .map(|n| fs::metadata(dir.path().join(n)).unwrap().len())
            .sum();
        assert!(on_disk <= lim.max_bytes + lim.segment_bytes, "{on_disk}");
    }

    #[test]
    fn past_the_age_limit_the_oldest_batches_are_dropped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = Spool::open(dir.path(), limits(), NOW).unwrap();
            for day in 0..10u64 {
                s.append(&batch(RUN, day + 1, NOW + day * DAY, 2)).unwrap();
            }
        }
        // Reopened 12 days after the first batch: days 0 to 3 are older than 8 days.
        let s = Spool::open(dir.path(), limits(), NOW + 12 * DAY).unwrap();
        assert_eq!(s.counts().dropped_batches_total, 4);
        assert_eq!(s.counts().dropped_energy_uj_total, 8);
        assert_eq!(s.status().oldest_start_unix_ms, Some(NOW + 4 * DAY));
        assert_eq!(
            seqs(&s.read_pending(100).unwrap()),
            (5..=10).collect::<Vec<_>>()
        );
    }
}
