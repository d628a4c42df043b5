//! The run's totals of keys that went quiet (see [`super::batcher`]): kept on disk in
//! `totals-RUN.jsonl` in the spool directory, so that memory holds only the keys active
//! within the window, and a key that comes back resumes its cumulative counter.
//!
//! A fixed-size filter (a Bloom filter of [`FILTER_BITS`] bits) says which keys may be in
//! the file, so that a new key costs no read; a key it names is looked up by reading
//! the file (the last line of that key wins). The file is not synced: it matters only
//! to this run, whose next batches carry the counters. A line that cannot be written
//! stays in memory and is written again at the next eviction.

use std::fs::{self, File, OpenOptions};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use empreinte_shared::{Component, SourceKind};

use super::batcher::Key;

/// Bits of the filter: 128 KiB, whatever the number of keys.
pub const FILTER_BITS: usize = 1 << 20;
const HASHES: u64 = 3;

#[derive(serde::Serialize, serde::Deserialize)]
struct Line {
    project: String,
    component: Component,
    source: SourceKind,
    total_uj: u64,
}

/// Quiet keys' totals of one run.
#[derive(Debug)]
pub struct QuietTotals {
    path: PathBuf,
    filter: Vec<u64>,
    unwritten: Vec<(Key, u64)>,
    written_keys: u64,
}

impl QuietTotals {
    /// The store of run `run_id` in `dir`; other runs' files are deleted (their
    /// counters went with their batches).
    pub fn open(dir: &Path, run_id: &str) -> QuietTotals {
        if let Ok(entries) = fs::read_dir(dir) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name.starts_with("totals-") && name.ends_with(".jsonl") {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        QuietTotals {
            path: dir.join(format!("totals-{run_id}.jsonl")),
            filter: vec![0; FILTER_BITS / 64],
            unwritten: Vec::new(),
            written_keys: 0,
        }
    }

    fn bits(key: &Key) -> [usize; HASHES as usize] {
        let mut out = [0; HASHES as usize];
        for (i, slot) in out.iter_mut().enumerate() {
            let mut h = DefaultHasher::new();
            (i as u64).hash(&mut h);
            key.0.hash(&mut h);
            key.1.as_str().hash(&mut h);
            key.2.as_str().hash(&mut h);
            *slot = (h.finish() % FILTER_BITS as u64) as usize;
        }
        out
    }

    /// Keeps the totals of keys leaving memory.
    pub fn put(&mut self, evicted: Vec<(Key, u64)>) {
        if evicted.is_empty() && self.unwritten.is_empty() {
            return;
        }
        for (key, _) in &evicted {
            for b in Self::bits(key) {
                self.filter[b / 64] |= 1 << (b % 64);
            }
        }
        self.unwritten.extend(evicted);
        let mut text = Vec::new();
        for (key, total_uj) in &self.unwritten {
            let line = Line {
                project: key.0.to_string(),
                component: key.1,
                source: key.2,
                total_uj: *total_uj,
            };
            if serde_json::to_writer(&mut text, &line).is_ok() {
                text.push(b'\n');
            }
        }
        let written = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut f| f.write_all(&text));
        match written {
            Ok(()) => {
                self.written_keys += self.unwritten.len() as u64;
                self.unwritten.clear();
            }
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, keys = self.unwritten.len(), "cannot write the totals of quiet projects; they stay in memory");
            }
        }
    }

    /// The total a key had when it left memory; 0 for a key never seen.
    pub fn take(&mut self, key: &Key) -> u64 {
        if let Some(i) = self.unwritten.iter().rposition(|(k, _)| k == key) {
            return self.unwritten[i].1;
        }
        let maybe = Self::bits(key)
            .iter()
            .all(|b| self.filter[b / 64] & (1 << (b % 64)) != 0);
        if !maybe {
            return 0;
        }
        let Ok(file) = File::open(&self.path) else {
            return 0;
        };
        let mut found = 0;
        for line in BufReader::new(file).lines() {
            let Ok(line) = line else { break };
            if let Ok(l) = serde_json::from_str::<Line>(&line) {
                if *l.project == *key.0 && l.component == key.1 && l.source == key.2 {
                    found = l.total_uj;
                }
            }
        }
        found
    }

    /// Keys written to disk so far.
    pub fn written_keys(&self) -> u64 {
        self.written_keys
    }
}
