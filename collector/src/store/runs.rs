//! Which batches of an agent run were stored, in O(runs + holes) instead of one name per
//! batch: the highest sequence number stored (`hwm`) and the holes below it (numbers
//! not stored: a batch that arrives out of order leaves a hole until it comes; a batch
//! the agent's spool dropped leaves one for good). Pure: the store loads and saves it.
//!
//! Architecture invariant: a batch `(agent, run, seq)` is new exactly when `seq > hwm` or
//! `seq` lies in a hole; storing it moves `hwm` or shrinks (or splits) its hole, in the
//! same transaction as its energy. So a batch is stored once, whatever the order and the
//! number of times it arrives.
//!
//! A run's counters ([`RunCounters`]: the latest reading of each of its energy counters,
//! what `/api/v1/agents` compares with the energy stored) are kept the same way by both
//! engines, in the same text column: their format, the rule that a later reading wins
//! and the overflow check are here, once for the SQLite writer and the PostgreSQL push.

use std::collections::BTreeMap;
use std::sync::Arc;

/// The most holes one run may have; a push that would make more is refused (an agent
/// leaves a hole only when its spool drops batches, or briefly when pushes cross).
pub const MAX_HOLES: usize = 1_000;

/// A run's stored sequence numbers: `1..=hwm` minus the holes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunSeqs {
    pub hwm: u64,
    /// Inclusive, sorted, disjoint, all below `hwm`.
    pub holes: Vec<(u64, u64)>,
}

impl RunSeqs {
    /// Was `seq` stored?
    pub fn contains(&self, seq: u64) -> bool {
        seq <= self.hwm && !self.holes.iter().any(|&(a, b)| a <= seq && seq <= b)
    }

    /// Marks `seq` (≥ 1) stored; false when it already was.
    pub fn insert(&mut self, seq: u64) -> bool {
        if seq > self.hwm {
            if seq > self.hwm + 1 {
                self.holes.push((self.hwm + 1, seq - 1));
            }
            self.hwm = seq;
            return true;
        }
        let Some(i) = self.holes.iter().position(|&(a, b)| a <= seq && seq <= b) else {
            return false;
        };
        let (a, b) = self.holes[i];
        match (seq == a, seq == b) {
            (true, true) => {
                self.holes.remove(i);
            }
            (true, false) => self.holes[i].0 = seq + 1,
            (false, true) => self.holes[i].1 = seq - 1,
            (false, false) => {
                self.holes[i].1 = seq - 1;
                self.holes.insert(i + 1, (seq + 1, b));
            }
        }
        true
    }
}

/// A run's latest counter readings, kept in `runs.counters` by both engines:
/// `project\tcomponent\tsource` → latest `(total_uj, at_ms)`.
///
/// The key is the three names joined by tabs (the stored text's own separator, which no
/// name holds), shared (`Arc<str>`): a run's state is copied for every push staged
/// against it, and a copy then costs a few tree nodes, not three strings per counter;
/// a reading finds its counter without building a key of three strings.
pub type RunCounters = BTreeMap<Arc<str>, (u64, u64)>;

/// `counters` as stored: a line `project\tcomponent\tsource\ttotal_uj\tat_ms` each.
pub fn counters_text(counters: &RunCounters) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for (key, (total, at)) in counters {
        if !out.is_empty() {
            out.push('\n');
        }
        let _ = write!(out, "{key}\t{total}\t{at}");
    }
    out
}

/// The counters stored as `text` ([`counters_text`]); `None` when it is not in that
/// format (each engine says so in its own error).
pub fn parse_counters(text: &str) -> Option<RunCounters> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let mut tail = line.rsplitn(3, '\t');
        let (at, total, key) = (tail.next()?, tail.next()?, tail.next()?);
        if key.split('\t').count() != 3 {
            return None;
        }
        out.insert(Arc::from(key), (total.parse().ok()?, at.parse().ok()?));
    }
    Some(out)
}

/// The energy the run's counters count: the sum of their latest totals.
pub fn counted_uj(counters: &RunCounters) -> u128 {
    counters.values().map(|(t, _)| u128::from(*t)).sum()
}

/// Keeps a batch's reading `total_uj` of the counter `(project, component, source)` at
/// `at_ms` (its end) as the latest, unless a later one is kept.
pub fn keep_reading(
    counters: &mut RunCounters,
    (project, component, source): (&str, &str, &str),
    total_uj: u64,
    at_ms: u64,
) {
    thread_local! {
        static KEY: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
    }
    KEY.with_borrow_mut(|key| {
        key.clear();
        key.push_str(project);
        key.push('\t');
        key.push_str(component);
        key.push('\t');
        key.push_str(source);
        match counters.get_mut(key.as_str()) {
            Some(e) => {
                if at_ms >= e.1 {
                    *e = (total_uj, at_ms);
                }
            }
            None => {
                counters.insert(Arc::from(key.as_str()), (total_uj, at_ms));
            }
        }
    });
}

/// The problem (path, message) of a batch `i` after which the run's counters add up past
/// `i64::MAX`, the largest value stored.
pub fn counters_overflow(i: usize, counters: &RunCounters) -> Option<(String, String)> {
    i64::try_from(counted_uj(counters)).is_err().then(|| {
        (
            format!("batches[{i}].counters"),
            format!(
                "the run's counters would add up past the largest value stored ({} µJ)",
                i64::MAX
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn counters_keep_the_latest_reading_and_survive_their_text() {
        let mut c = RunCounters::new();
        keep_reading(&mut c, ("ab", "cpu", "rapl"), 10, 1_000);
        keep_reading(&mut c, ("ab-c", "gpu", "nvml"), 7, 1_000);
        keep_reading(&mut c, ("ab", "cpu", "rapl"), 25, 2_000);
        // An older reading (a batch delivered late) does not replace a newer one.
        keep_reading(&mut c, ("ab", "cpu", "rapl"), 15, 1_500);
        assert_eq!(c.len(), 2);
        assert_eq!(c.get("ab\tcpu\trapl"), Some(&(25, 2_000)));
        assert_eq!(counted_uj(&c), 32);
        // Ordered as the names are (a name that is a prefix of another first).
        let text = counters_text(&c);
        assert_eq!(text, "ab\tcpu\trapl\t25\t2000\nab-c\tgpu\tnvml\t7\t1000");
        assert_eq!(parse_counters(&text), Some(c));
        assert_eq!(parse_counters(""), Some(RunCounters::new()));
        for bad in [
            "ab\tcpu\t25\t2000",
            "ab\tcpu\trapl\tx\t2000",
            "ab\tcpu\trapl\t1",
        ] {
            assert_eq!(parse_counters(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn in_order_keeps_no_hole() {
        let mut r = RunSeqs::default();
        for s in 1..=100 {
            assert!(r.insert(s));
        }
        assert!(!r.insert(50));
        assert_eq!(
            r,
            RunSeqs {
                hwm: 100,
                holes: vec![]
            }
        );
    }

    #[test]
    fn a_late_batch_fills_its_hole_once() {
        let mut r = RunSeqs::default();
        assert!(r.insert(1));
        assert!(r.insert(5));
        assert_eq!(r.holes, vec![(2, 4)]);
        assert!(r.insert(3));
        assert_eq!(r.holes, vec![(2, 2), (4, 4)]);
        assert!(!r.insert(3));
        assert!(r.insert(2));
        assert!(r.insert(4));
        assert!(r.holes.is_empty());
        assert!(!r.insert(4));
    }

    proptest! {
        /// Against a set of every name: same answers, whatever the order and replays.
        #[test]
        fn same_answers_as_a_set_of_names(seqs in proptest::collection::vec(1u64..60, 0..300)) {
            let mut r = RunSeqs::default();
            let mut set = BTreeSet::new();
            for s in seqs {
                prop_assert_eq!(r.contains(s), set.contains(&s));
                prop_assert_eq!(r.insert(s), set.insert(s));
                prop_assert!(r.holes.windows(2).all(|w| w[0].1 + 1 < w[1].0));
                prop_assert!(r.holes.iter().all(|&(a, b)| a <= b && b < r.hwm));
            }
            for s in 1..70 {
                prop_assert_eq!(r.contains(s), set.contains(&s));
            }
        }
    }
}
