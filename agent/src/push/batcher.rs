//! Folds each sampling cycle's per-project energy into batches aligned to Unix time.
//! Pure: no I/O, no clock; the caller hands the cycle's end (Unix ms, from the sampling
//! clock anchored once to the wall clock) and length.
//!
//! A batch covers one *period*, `[k·interval, (k+1)·interval)` of Unix time, so batches
//! from every host line up and never span more than one batch interval. A cycle whose
//! interval crosses a period boundary (or several, after a pause) is split between the
//! periods in proportion to time, in integer microjoules with the remainder to the last
//! piece: the sum of the records over all batches equals the energy fed in, exactly.
//!
//! A batch is sealed by the first cycle that reaches a later (or an earlier) period, and
//! on shutdown. A batch without energy is not sealed and uses no sequence number.
//!
//! **Bounded by what is active.** The run's cumulative total per key (project,
//! component, source) stays in memory while the key had energy within the last
//! `active_window` (1 hour by default); past it, sealing hands the key and its total to
//! the caller ([`Batcher::take_evicted`]), which keeps it on disk, and a key that comes
//! back resumes from the total the caller gives back. A batch's counters are those of
//! the keys active within the window: what the collector needs to check that nothing of
//! a run is missing (it keeps the latest counter per key), without every key the run
//! ever saw.

use std::collections::BTreeMap;
use std::sync::Arc;

use empreinte_shared::wire::{Batch, Counter, InferenceRecord, Record, fit_name};
use empreinte_shared::{Component, SourceKind};

use crate::attribution::engine::ModelEnergy;
use crate::inference::records::{Merged, merge};

/// What a counter is kept by.
pub type Key = (Arc<str>, Component, SourceKind);

/// What a record is kept by: its counter's key and the model its energy served (`None`:
/// not tied to a model).
type RecordKey = (Key, Option<Arc<str>>);

/// How long a key stays in memory (and in every batch's counters) after its last
/// energy, by default.
pub const DEFAULT_ACTIVE_WINDOW_MS: u64 = 3_600_000;

#[derive(Clone, Debug)]
struct Span {
    start: u64,
    end: u64,
    energy_uj: u64,
}

impl Span {
    fn widen(&mut self, start: u64, end: u64) {
        self.start = self.start.min(start);
        self.end = self.end.max(end);
    }
}

#[derive(Clone, Debug)]
struct OpenBatch {
    period: u64,
    seq: u64,
    span: Span,
    records: BTreeMap<RecordKey, Span>,
    inference: Merged,
}

/// A key's cumulative energy in the run, and when it last had energy.
#[derive(Clone, Copy, Debug)]
struct Total {
    uj: u64,
    last_active_ms: u64,
}

/// Builds one run's batches.
#[derive(Clone, Debug)]
pub struct Batcher {
    interval_ms: u64,
    active_window_ms: u64,
    run_id: String,
    next_seq: u64,
    open: Option<OpenBatch>,
    /// The run's cumulative energy per key active within the window.
    totals: BTreeMap<Key, Total>,
    /// Keys that went quiet, with their totals, for the caller to keep.
    evicted: Vec<(Key, u64)>,
    pieces: Vec<(u64, u64)>,
}

impl Batcher {
    /// A batcher for the run `run_id` (see [`new_run_id`]) whose batches cover
    /// `interval_ms` of Unix time each (at least 1).
    pub fn new(run_id: String, interval_ms: u64) -> Batcher {
        Batcher {
            interval_ms: interval_ms.max(1),
            active_window_ms: DEFAULT_ACTIVE_WINDOW_MS,
            run_id,
            next_seq: 1,
            open: None,
            totals: BTreeMap::new(),
            evicted: Vec::new(),
            pieces: Vec::new(),
        }
    }

    /// Keys without energy for longer than `ms` leave memory and the batches' counters
    /// (at least one batch interval).
    pub fn with_active_window(mut self, ms: u64) -> Batcher {
        self.active_window_ms = ms.max(self.interval_ms);
        self
    }

    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Keys in memory: those active within the window.
    pub fn active_keys(&self) -> usize {
        self.totals.len()
    }

    /// The run's cumulative energy of a key in memory, in µJ.
    pub fn total_uj(&self, key: &Key) -> Option<u64> {
        self.totals.get(key).map(|t| t.uj)
    }

    /// Keys that left memory at the last seals, with their totals: the caller keeps them
    /// and gives a total back through `resume` when the key comes back.
    pub fn take_evicted(&mut self) -> Vec<(Key, u64)> {
        std::mem::take(&mut self.evicted)
    }

    /// Folds one cycle without evicted totals to resume (see [`Batcher::fold_resuming`]).
    pub fn fold<'a>(
        &mut self,
        end_unix_ms: u64,
        length_ms: u64,
        deltas: impl IntoIterator<Item = (&'a Arc<str>, Component, SourceKind, u64)>,
    ) -> Vec<Batch> {
        self.fold_resuming(end_unix_ms, length_ms, deltas, &mut |_| 0)
    }

    /// Folds one cycle: it ended at `end_unix_ms` and lasted `length_ms` (monotonic, so a
    /// wall-clock step does not stretch it; at least 1 ms), and `deltas` is each key's
    /// energy over it. A project name a collector would refuse is fitted to the wire
    /// ([`fit_name`]). A key not in memory starts from `resume(key)`, its total when it
    /// left memory (0 when new). Returns the batches this sealed, oldest first.
    pub fn fold_resuming<'a>(
        &mut self,
        end_unix_ms: u64,
        length_ms: u64,
        deltas: impl IntoIterator<Item = (&'a Arc<str>, Component, SourceKind, u64)>,
        resume: &mut dyn FnMut(&Key) -> u64,
    ) -> Vec<Batch> {
        self.fold_all(end_unix_ms, length_ms, deltas, &[], Vec::new(), resume)
    }

    /// [`Batcher::fold_resuming`] with the parts of the projects' energy that served
    /// each model (`models`, inside `deltas`: such a part becomes a record of its own
    /// with its model, the rest of the project's energy a record without) and the
    /// inference records of the cycle (added to the batch the cycle ends in, their
    /// span cut to it).
    pub fn fold_all<'a>(
        &mut self,
        end_unix_ms: u64,
        length_ms: u64,
        deltas: impl IntoIterator<Item = (&'a Arc<str>, Component, SourceKind, u64)>,
        models: &[ModelEnergy],
        inference: Vec<InferenceRecord>,
        resume: &mut dyn FnMut(&Key) -> u64,
    ) -> Vec<Batch> {
        let length_ms = length_ms.max(1);
        let end = end_unix_ms.max(length_ms);
        let start = end - length_ms;
        // Cut [start, end] at period boundaries.
        self.pieces.clear();
        let mut at = start;
        while at < end {
            let period_end = (at / self.interval_ms + 1).saturating_mul(self.interval_ms);
            let piece_end = period_end.min(end);
            self.pieces.push((at, piece_end));
            at = piece_end;
        }
        let fit = |p: &Arc<str>| -> Arc<str> {
            match fit_name(p) {
                std::borrow::Cow::Borrowed(_) => p.clone(),
                std::borrow::Cow::Owned(n) => Arc::from(n),
            }
        };
        let mut merged: BTreeMap<RecordKey, u64> = BTreeMap::new();
        for (p, c, s, uj) in deltas {
            if uj == 0 {
                continue;
            }
            let e = merged.entry(((fit(p), c, s), None)).or_insert(0);
            *e = e.saturating_add(uj);
        }
        for m in models {
            let key = (fit(&m.project), m.component, m.source);
            // A model's part comes out of its project's energy, never more than it.
            let Some(rest) = merged.get_mut(&(key.clone(), None)) else {
                continue;
            };
            let part = m.last_uj.min(*rest);
            *rest -= part;
            let e = merged.entry((key, Some(fit(&m.model)))).or_insert(0);
            *e = e.saturating_add(part);
        }
        let deltas: Vec<(RecordKey, u64)> = merged.into_iter().filter(|(_, uj)| *uj > 0).collect();
        for ((key, _), _) in &deltas {
            if !self.totals.contains_key(key) {
                let uj = resume(key);
                self.totals.insert(
                    key.clone(),
                    Total {
                        uj,
                        last_active_ms: end,
                    },
                );
            }
        }
        let mut sealed = Vec::new();
        let pieces = std::mem::take(&mut self.pieces);
        for &(piece_start, piece_end) in &pieces {
            let period = piece_start / self.interval_ms * self.interval_ms;
            if self.open.as_ref().is_some_and(|o| o.period != period) {
                sealed.extend(self.seal());
            }
            let seq = self.next_seq;
            let open = self.open.get_or_insert_with(|| OpenBatch {
                period,
                seq,
                span: Span {
                    start: piece_start,
                    end: piece_end,
                    energy_uj: 0,
                },
                records: BTreeMap::new(),
                inference: Merged::new(),
            });
            open.span.widen(piece_start, piece_end);
            // This piece's share of each delta: the difference of the cumulative shares
            // at its end and at its start, so the shares add up to the delta exactly.
            let share = |uj: u64, at: u64| -> u64 {
                let part = u128::from(uj) * u128::from(at - start) / u128::from(length_ms);
                u64::try_from(part).unwrap_or(uj)
            };
            for (key, uj) in &deltas {
                let e = share(*uj, piece_end) - share(*uj, piece_start);
                if e == 0 {
                    continue;
                }
                open.span.energy_uj = open.span.energy_uj.saturating_add(e);
                open.records
                    .entry(key.clone())
                    .and_modify(|r| {
                        r.widen(piece_start, piece_end);
                        r.energy_uj = r.energy_uj.saturating_add(e);
                    })
                    .or_insert(Span {
                        start: piece_start,
                        end: piece_end,
                        energy_uj: e,
                    });
                if let Some(total) = self.totals.get_mut(&key.0) {
                    total.uj = total.uj.saturating_add(e);
                    total.last_active_ms = total.last_active_ms.max(piece_end);
                }
            }
        }
        self.pieces = pieces;
        if let Some(open) = self.open.as_mut() {
            for rec in inference {
                merge(&mut open.inference, rec, open.span.start, open.span.end);
            }
        }
        sealed
    }

    /// The open batch as it stands (what the spool keeps in `open.json`); `None` when
    /// there is none or it holds no energy. Its counters are those of the keys active
    /// within the window before its end.
    pub fn open_batch(&self) -> Option<Batch> {
        let open = self.open.as_ref()?;
        if open.records.is_empty() && open.inference.is_empty() {
            return None;
        }
        let since = open.span.end.saturating_sub(self.active_window_ms);
        Some(Batch {
            run_id: self.run_id.clone(),
            seq: open.seq,
            start_unix_ms: open.span.start,
            end_unix_ms: open.span.end,
            records: open
                .records
                .iter()
                .map(|(((project, component, source), model), r)| Record {
                    project: project.to_string(),
                    component: *component,
                    source: *source,
                    start_unix_ms: r.start,
                    end_unix_ms: r.end,
                    energy_uj: r.energy_uj,
                    model: model.as_deref().map(str::to_string),
                })
                .collect(),
            counters: self
                .totals
                .iter()
                .filter(|(key, t)| {
                    // The first record at or after (key, no model) is the key's, if any.
                    t.last_active_ms >= since
                        || open
                            .records
                            .range(((*key).clone(), None)..)
                            .next()
                            .is_some_and(|((k, _), _)| k == *key)
                })
                .map(|((project, component, source), total)| Counter {
                    project: project.to_string(),
                    component: *component,
                    source: *source,
                    total_uj: total.uj,
                })
                .collect(),
            inference: open.inference.values().cloned().collect(),
        })
    }

    /// Seals the open batch (shutdown, or a cycle in a later period). `None` when there
    /// is none or it holds no energy; then no sequence number is used. Keys quiet for
    /// longer than the window leave memory (see [`Batcher::take_evicted`]).
    pub fn seal(&mut self) -> Option<Batch> {
        let batch = self.open_batch();
        let end = self.open.as_ref().map(|o| o.span.end);
        self.open = None;
        if batch.is_some() {
            self.next_seq += 1;
        }
        if let Some(end) = end {
            let since = end.saturating_sub(self.active_window_ms);
            let quiet: Vec<Key> = self
                .totals
                .iter()
                .filter(|(_, t)| t.last_active_ms < since)
                .map(|(k, _)| k.clone())
                .collect();
            for key in quiet {
                if let Some(t) = self.totals.remove(&key) {
                    self.evicted.push((key, t.uj));
                }
            }
        }
        batch
    }
}

/// A new run id: 32 lowercase hexadecimal digits from the operating system's random
/// source.
pub fn new_run_id() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The energy of a batch's records, in µJ.
pub fn batch_energy_uj(batch: &Batch) -> u64 {
    batch
        .records
        .iter()
        .fold(0u64, |acc, r| acc.saturating_add(r.energy_uj))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUN: &str = "0123456789abcdef0123456789abcdef";

    fn p(name: &str) -> Arc<str> {
        Arc::from(name)
    }

    fn sum_records(batches: &[Batch]) -> BTreeMap<(String, Component), u64> {
        let mut out = BTreeMap::new();
        for b in batches {
            for r in &b.records {
                *out.entry((r.project.clone(), r.component)).or_insert(0) += r.energy_uj;
            }
        }
        out
    }

    #[test]
    fn batches_are_aligned_to_unix_time_and_sealed_by_the_next_period() {
        let mut b = Batcher::new(RUN.into(), 15_000);
        let chat = p("chat");
        let mut sealed = Vec::new();
        // Cycles of 1 s ending at 1_000_001_000 … 1_000_030_000 (periods start at
        // multiples of 15 000 ms: 999_990_000, 1_000_005_000, 1_000_020_000).
        for i in 1..=30u64 {
            sealed.extend(b.fold(
                1_000_000_000 + i * 1_000,
                1_000,
                [(&chat, Component::Cpu, SourceKind::Rapl, 1_000_000)],
            ));
        }
        assert_eq!(sealed.len(), 2, "{sealed:#?}");
        assert_eq!(
            (
                sealed[0].seq,
                sealed[0].start_unix_ms,
                sealed[0].end_unix_ms
            ),
            (1, 1_000_000_000, 1_000_005_000)
        );
        assert_eq!(
            (
                sealed[1].seq,
                sealed[1].start_unix_ms,
                sealed[1].end_unix_ms
            ),
            (2, 1_000_005_000, 1_000_020_000)
        );
        assert_eq!(sealed[0].records[0].energy_uj, 5_000_000);
        assert_eq!(sealed[1].records[0].energy_uj, 15_000_000);
        let open = b.seal().unwrap();
        assert_eq!(open.seq, 3);
        assert_eq!(
            (open.start_unix_ms, open.end_unix_ms),
            (1_000_020_000, 1_000_030_000)
        );
        for batch in sealed.iter().chain([&open]) {
            assert_eq!(batch.run_id, RUN);
            for r in &batch.records {
                assert!(
                    r.start_unix_ms >= batch.start_unix_ms && r.end_unix_ms <= batch.end_unix_ms
                );
            }
            assert!(batch.end_unix_ms - batch.start_unix_ms <= 15_000);
        }
    }

    #[test]
    fn a_cycle_across_boundaries_is_split_exactly_and_counters_are_run_totals() {
        let mut b = Batcher::new(RUN.into(), 1_000);
        let (a, z) = (p("a"), p("z"));
        // 3 333 ms ending at 10 500: pieces of 833, 1000, 1000, 500 ms.
        let sealed = b.fold(
            10_500,
            3_333,
            [
                (&a, Component::Cpu, SourceKind::Rapl, 1_000_003),
                (&z, Component::Gpu, SourceKind::Nvml, 7),
            ],
        );
        assert_eq!(sealed.len(), 3);
        assert_eq!(sealed.iter().map(|s| s.seq).collect::<Vec<_>>(), [1, 2, 3]);
        let open = b.open_batch().unwrap();
        assert_eq!((open.start_unix_ms, open.end_unix_ms), (10_000, 10_500));
        let all: Vec<Batch> = sealed.iter().cloned().chain([open.clone()]).collect();
        let sums = sum_records(&all);
        assert_eq!(sums[&("a".to_string(), Component::Cpu)], 1_000_003);
        assert_eq!(sums[&("z".to_string(), Component::Gpu)], 7);
        // Shares follow time: 833/3333 of 1 000 003 µJ in the first slot.
        assert_eq!(sealed[0].records[0].energy_uj, 1_000_003 * 833 / 3_333);
        // Counters are cumulative at each batch's end.
        let counter = |batch: &Batch, project: &str| {
            batch
                .counters
                .iter()
                .find(|c| c.project == project)
                .map(|c| c.total_uj)
        };
        assert_eq!(
            counter(&sealed[0], "a"),
            Some(sealed[0].records[0].energy_uj)
        );
        assert_eq!(counter(&open, "a"), Some(1_000_003));
        assert_eq!(counter(&open, "z"), Some(7));
    }

    #[test]
    fn the_sum_over_sealed_batches_equals_the_energy_fed_in() {
        // Irregular cycles and energies, several projects, an idle stretch.
        let mut b = Batcher::new(RUN.into(), 7_000);
        let names = [p("a"), p("b"), p("c")];
        let mut fed: BTreeMap<(String, Component), u64> = BTreeMap::new();
        let mut batches = Vec::new();
        let mut now = 1_700_000_000_123u64;
        let mut x = 12_345u64;
        for i in 0..2_000u64 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let length = 50 + x % 4_000;
            now += length;
            let mut deltas = Vec::new();
            for (j, n) in names.iter().enumerate() {
                let uj = if i % 97 < 10 {
                    0
                } else {
                    (x >> (8 * j)) % 50_000_000
                };
                *fed.entry((n.to_string(), Component::Cpu)).or_insert(0) += uj;
                deltas.push((n, Component::Cpu, SourceKind::Rapl, uj));
            }
            batches.extend(b.fold(now, length, deltas));
        }
        batches.extend(b.seal());
        fed.retain(|_, v| *v > 0);
        assert_eq!(sum_records(&batches), fed);
        // Sequence numbers have no gaps and counters end at the run's totals.
        for (i, batch) in batches.iter().enumerate() {
            assert_eq!(batch.seq, i as u64 + 1);
            assert!(batch.end_unix_ms > batch.start_unix_ms);
        }
        let last = batches.last().unwrap();
        for c in &last.counters {
            assert_eq!(fed[&(c.project.clone(), c.component)], c.total_uj);
        }
    }

    #[test]
    fn an_empty_batch_is_not_sealed_and_uses_no_sequence_number() {
        let mut b = Batcher::new(RUN.into(), 1_000);
        let a = p("a");
        assert!(
            b.fold(1_500, 500, [(&a, Component::Cpu, SourceKind::Rapl, 0)])
                .is_empty()
        );
        assert!(
            b.fold(2_500, 1_000, [(&a, Component::Cpu, SourceKind::Rapl, 0)])
                .is_empty()
        );
        assert!(b.open_batch().is_none());
        let sealed = b.fold(4_000, 1_500, [(&a, Component::Cpu, SourceKind::Rapl, 3)]);
        assert_eq!(sealed.len(), 1);
        assert_eq!(sealed[0].seq, 1);
        assert_eq!(b.seal().map(|s| s.seq), Some(2));
        assert_eq!(b.seal(), None);
    }

    #[test]
    fn a_wall_clock_step_back_seals_the_open_batch() {
        let mut b = Batcher::new(RUN.into(), 10_000);
        let a = p("a");
        assert!(
            b.fold(55_000, 1_000, [(&a, Component::Cpu, SourceKind::Rapl, 5)])
                .is_empty()
        );
        let sealed = b.fold(31_000, 1_000, [(&a, Component::Cpu, SourceKind::Rapl, 6)]);
        assert_eq!(sealed.len(), 1);
        assert_eq!(sealed[0].start_unix_ms, 54_000);
        let open = b.seal().unwrap();
        assert_eq!(
            (open.seq, open.start_unix_ms, open.end_unix_ms),
            (2, 30_000, 31_000)
        );
    }

    #[test]
    fn run_ids_are_32_lowercase_hex_digits_and_differ() {
        let a = new_run_id().unwrap();
        let b = new_run_id().unwrap();
        assert_eq!(empreinte_shared::wire::check_run_id(&a), Ok(()));
        assert_ne!(a, b);
    }
}
