//! Counter semantics for one server: differences of cumulative counters that never go
//! negative and are never counted twice.
//!
//! - A series is the server's process (its identity: PID and start time, the pod UID,
//!   or `process_start_time_seconds` where the server exports it) and, within it, one
//!   counter with all its labels.
//! - The first successful read is the baseline: what was counted before the agent
//!   watched is not in any span.
//! - A counter that goes down, or a new process identity, is a reset (a restart): the
//!   new value is what was counted since, and is counted; the reset is counted once
//!   per read.
//! - A failed read keeps the last values; the next success carries the whole
//!   difference. The time from the first failure to the next success (or to the end of
//!   the span) is the span's gap.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::kinds::{Extracted, Role};

/// Counts of one model since the last [`Tracker::take`], by [`Role::index`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModelCounts {
    pub counts: [u64; 4],
}

/// A weight per model: how a serving process's energy is split between its models.
pub type Weights = Vec<(Arc<str>, u64)>;

/// What a server counted since the last take.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Taken {
    /// Every model the server reported at its last good read, with its counts (zero when
    /// it served nothing).
    pub models: BTreeMap<Arc<str>, ModelCounts>,
    pub gap_ms: u64,
    pub resets: u32,
    /// The weights that split the serving process's energy for this span (see
    /// [`Tracker::take`]).
    pub weights: Weights,
    /// True while the weights are equal shares standing in for counts not read yet:
    /// the server has counted nothing since the agent's first read of it, which was
    /// less than the hold ago. The first counted span sets such spans right
    /// (`attribution::models`).
    pub provisional: bool,
}

/// The counters of one server, read after read.
#[derive(Debug, Default)]
pub struct Tracker {
    identity: Option<String>,
    baselined: bool,
    last: HashMap<String, u64>,
    pending: BTreeMap<Arc<str>, ModelCounts>,
    /// Models seen at the last good read.
    loaded: Vec<Arc<str>>,
    gap_ms: u64,
    resets: u32,
    down_since_ms: Option<u64>,
    /// Time of the last good read.
    read_at_ms: u64,
    /// Time of the first good read (the baseline).
    first_read_ms: Option<u64>,
    /// The last span's weights that came from counts, and the read that gave them.
    ratio: Option<(u64, Weights)>,
}

impl Tracker {
    /// A good read at `at_ms` of the server whose process is `identity` (if known).
    /// `default_model` names counters without a model label.
    pub fn observe(
        &mut self,
        at_ms: u64,
        identity: Option<&str>,
        read: &Extracted,
        default_model: &Arc<str>,
    ) {
        if let Some(down) = self.down_since_ms.take() {
            self.gap_ms = self.gap_ms.saturating_add(at_ms.saturating_sub(down));
        }
        let restarted = self.baselined
            && identity.is_some()
            && self.identity.is_some()
            && identity != self.identity.as_deref();
        if identity.is_some() {
            self.identity = identity.map(str::to_string);
        }
        let mut reset = restarted;
        let mut next = HashMap::with_capacity(read.readings.len());
        let mut loaded: Vec<Arc<str>> = Vec::new();
        for r in &read.readings {
            let model: Arc<str> = match &r.model {
                Some(m) => match loaded.iter().find(|l| ***l == **m) {
                    Some(l) => l.clone(),
                    None => Arc::from(m.as_str()),
                },
                None => default_model.clone(),
            };
            if !loaded.contains(&model) {
                loaded.push(model.clone());
            }
            let delta = match self.last.get(&r.series) {
                _ if !self.baselined => 0,
                _ if restarted => r.value,
                None => r.value, // a series that appeared: it started from 0
                Some(&prev) if r.value >= prev => r.value - prev,
                Some(_) => {
                    reset = true;
                    r.value
                }
            };
            next.insert(r.series.clone(), r.value);
            let counts = &mut self.pending.entry(model).or_default().counts;
            let slot = &mut counts[r.role.index()];
            *slot = slot.saturating_add(delta);
        }
        if reset {
            self.resets = self.resets.saturating_add(1);
        }
        loaded.sort();
        self.loaded = loaded;
        self.last = next;
        self.baselined = true;
        self.read_at_ms = at_ms;
        self.first_read_ms.get_or_insert(at_ms);
    }

    /// A failed read at `at_ms`: the last values stay, the gap starts.
    pub fn failed(&mut self, at_ms: u64) {
        if self.down_since_ms.is_none() {
            self.down_since_ms = Some(at_ms);
        }
    }

    /// True while the last read failed.
    pub fn is_down(&self) -> bool {
        self.down_since_ms.is_some()
    }

    /// The models of the last good read.
    pub fn loaded(&self) -> &[Arc<str>] {
        &self.loaded
    }

    /// Gap time a take's record could not hold, for the next take.
    pub fn carry_gap(&mut self, ms: u64) {
        self.gap_ms = self.gap_ms.saturating_add(ms);
    }

    /// What was counted since the last take, up to `now_ms`, and starts again.
    ///
    /// The span's weights are its counts (see [`energy_weights`]). Reads and energy
    /// samples are not aligned: a busy server can show a span with no new counts (no
    /// read fell in it, or two reads fell between two of its steps). Such a span, within
    /// `hold_ms` of the read that last gave counts, keeps that read's ratio between the
    /// models still loaded; past it, the loaded models are idle and share equally. Before
    /// the server's first counts, within the hold of the first read, the equal shares are
    /// provisional ([`Taken::provisional`]): the first counts may simply not be read yet.
    pub fn take(&mut self, now_ms: u64, hold_ms: u64) -> Taken {
        if let Some(down) = self.down_since_ms {
            self.gap_ms = self.gap_ms.saturating_add(now_ms.saturating_sub(down));
            self.down_since_ms = Some(now_ms.max(down));
        }
        let mut models = std::mem::take(&mut self.pending);
        for m in &self.loaded {
            models.entry(m.clone()).or_default();
        }
        let mut taken = Taken {
            models,
            gap_ms: std::mem::take(&mut self.gap_ms),
            resets: std::mem::take(&mut self.resets),
            weights: Vec::new(),
            provisional: false,
        };
        taken.weights = match counted_weights(&taken) {
            Some(w) => {
                self.ratio = Some((self.read_at_ms, w.clone()));
                w
            }
            None => match self.held_ratio(now_ms, hold_ms) {
                Some(w) => w,
                None => {
                    taken.provisional = self.ratio.is_none()
                        && self
                            .first_read_ms
                            .is_some_and(|first| now_ms.saturating_sub(first) <= hold_ms);
                    energy_weights(&taken)
                }
            },
        };
        taken
    }

    /// The last counted ratio between the models loaded now, while within `hold_ms`.
    fn held_ratio(&self, now_ms: u64, hold_ms: u64) -> Option<Weights> {
        let (at, ratio) = self.ratio.as_ref()?;
        if now_ms.saturating_sub(*at) > hold_ms {
            return None;
        }
        let held: Weights = ratio
            .iter()
            .filter(|(m, _)| self.loaded.contains(m))
            .cloned()
            .collect();
        held.iter().any(|(_, w)| *w > 0).then_some(held)
    }

    /// The process identity last seen.
    pub fn identity(&self) -> Option<&str> {
        self.identity.as_deref()
    }
}

/// The weights that split a serving process's energy between its models for one span:
/// output tokens, else requests, else equal (a model loaded and idle gets the idle
/// energy). Empty when the server reported no model.
pub fn energy_weights(taken: &Taken) -> Weights {
    counted_weights(taken).unwrap_or_else(|| taken.models.keys().map(|m| (m.clone(), 1)).collect())
}

/// Output tokens, else requests; `None` when the span counted neither.
fn counted_weights(taken: &Taken) -> Option<Weights> {
    for role in [Role::OutputTokens, Role::Requests] {
        let w: Weights = taken
            .models
            .iter()
            .map(|(m, c)| (m.clone(), c.counts[role.index()]))
            .collect();
        if w.iter().any(|(_, w)| *w > 0) {
            return Some(w);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inference::kinds::Reading;

    fn read(values: &[(&str, u64)]) -> Extracted {
        Extracted {
            readings: values
                .iter()
                .map(|(model, v)| Reading {
                    role: Role::OutputTokens,
                    model: Some(model.to_string()),
                    series: format!("out{{model={model:?}}}"),
                    value: *v,
                })
                .collect(),
            process_start_ms: None,
        }
    }

    fn out(t: &Taken, model: &str) -> u64 {
        t.models
            .get(model)
            .map_or(u64::MAX, |c| c.counts[Role::OutputTokens.index()])
    }

    #[test]
    fn gap_time_a_record_cannot_hold_is_carried_to_the_next_take() {
        let d: Arc<str> = Arc::from("default");
        let mut t = Tracker::default();
        t.observe(1_000, None, &read(&[("a", 1)]), &d);
        t.failed(1_000);
        // A take 1.5 s later, whose record spans 1 s: 500 ms carried.
        let x = t.take(2_500, 0);
        assert_eq!(x.gap_ms, 1_500);
        t.carry_gap(x.gap_ms - 1_000);
        t.observe(3_000, None, &read(&[("a", 2)]), &d);
        let y = t.take(3_000, 0);
        // 500 ms carried + 500 ms since the last take: the outage's 2 s in all.
        assert_eq!((1_000 + y.gap_ms, out(&y, "a")), (2_000, 1));
    }

    #[test]
    fn baseline_then_differences_resets_and_gaps() {
        let d: Arc<str> = Arc::from("default");
        let mut t = Tracker::default();
        t.observe(1_000, Some("pid 7 start 1"), &read(&[("a", 500)]), &d);
        assert_eq!(
            out(&t.take(1_000, 0), "a"),
            0,
            "the baseline is not counted"
        );
        t.observe(2_000, Some("pid 7 start 1"), &read(&[("a", 530)]), &d);
        let x = t.take(2_500, 0);
        assert_eq!((out(&x, "a"), x.resets, x.gap_ms), (30, 0, 0));
        // A decrease: a restart; the new value is counted.
        t.observe(3_000, Some("pid 7 start 1"), &read(&[("a", 4)]), &d);
        let x = t.take(3_000, 0);
        assert_eq!((out(&x, "a"), x.resets), (4, 1));
        // A new process that already counted more than before: still a restart.
        t.observe(4_000, Some("pid 9 start 5"), &read(&[("a", 90)]), &d);
        let x = t.take(4_000, 0);
        assert_eq!((out(&x, "a"), x.resets), (90, 1));
        // Down from 5 s to 8 s, across a take: the gap is split, counts carried.
        t.failed(5_000);
        t.failed(6_000);
        let x = t.take(6_500, 0);
        assert_eq!((out(&x, "a"), x.gap_ms), (0, 1_500));
        t.observe(
            8_000,
            Some("pid 9 start 5"),
            &read(&[("a", 100), ("b", 3)]),
            &d,
        );
        let x = t.take(8_000, 0);
        assert_eq!((out(&x, "a"), out(&x, "b"), x.gap_ms), (10, 3, 1_500));
        assert_eq!(
            energy_weights(&x),
            vec![(Arc::from("a"), 10), (Arc::from("b"), 3)]
        );
        // Nothing served: both loaded models share the idle energy equally.
        let x = t.take(9_000, 0);
        assert_eq!((out(&x, "a"), out(&x, "b")), (0, 0));
        assert_eq!(
            energy_weights(&x),
            vec![(Arc::from("a"), 1), (Arc::from("b"), 1)]
        );
        assert_eq!(x.weights, energy_weights(&x));
    }

    #[test]
    fn a_span_without_new_counts_keeps_the_last_ratio_within_the_hold() {
        let d: Arc<str> = Arc::from("default");
        let mut t = Tracker::default();
        t.observe(1_000, None, &read(&[("a", 0), ("b", 0)]), &d);
        t.take(1_000, 2_000);
        t.observe(2_000, None, &read(&[("a", 120), ("b", 30)]), &d);
        let ratio = vec![(Arc::from("a"), 120), (Arc::from("b"), 30)];
        assert_eq!(t.take(2_100, 2_000).weights, ratio);
        // No read in the span: the ratio holds.
        assert_eq!(t.take(2_200, 2_000).weights, ratio);
        // A read with nothing new, within the hold of the read that counted: still.
        t.observe(2_300, None, &read(&[("a", 120), ("b", 30)]), &d);
        assert_eq!(t.take(2_300, 2_000).weights, ratio);
        // A model unloaded meanwhile gets nothing.
        t.observe(2_400, None, &read(&[("a", 120)]), &d);
        assert_eq!(t.take(2_400, 2_000).weights, vec![(Arc::from("a"), 120)]);
        // Past the hold, the loaded models are idle: equal shares.
        t.observe(4_500, None, &read(&[("a", 120)]), &d);
        assert_eq!(t.take(4_500, 2_000).weights, vec![(Arc::from("a"), 1)]);
        // New counts set a new ratio (b's series came back: counted from 0).
        t.observe(5_000, None, &read(&[("a", 130), ("b", 40)]), &d);
        let x = t.take(5_000, 2_000);
        assert_eq!(x.weights, vec![(Arc::from("a"), 10), (Arc::from("b"), 40)]);
        t.observe(5_100, None, &read(&[("a", 130), ("b", 40)]), &d);
        assert_eq!(t.take(5_100, 2_000).weights, x.weights);
    }

    #[test]
    fn equal_shares_before_the_first_counts_are_provisional_within_the_hold() {
        let d: Arc<str> = Arc::from("default");
        let mut t = Tracker::default();
        assert!(
            !t.take(500, 2_000).provisional,
            "no server read yet: nothing to set right"
        );
        t.observe(1_000, None, &read(&[("a", 0), ("b", 0)]), &d);
        let x = t.take(1_200, 2_000);
        assert!(x.provisional && x.weights == vec![(Arc::from("a"), 1), (Arc::from("b"), 1)]);
        let x = t.take(2_900, 2_000);
        assert!(x.provisional);
        // Past the hold of the first read, nothing counted: idle, equal shares that stand.
        assert!(!t.take(3_100, 2_000).provisional);
        // Once counted, equal shares after the hold are never provisional again.
        let mut t = Tracker::default();
        t.observe(1_000, None, &read(&[("a", 0), ("b", 0)]), &d);
        t.observe(1_100, None, &read(&[("a", 5), ("b", 1)]), &d);
        let x = t.take(1_200, 2_000);
        assert!(!x.provisional && x.weights == vec![(Arc::from("a"), 5), (Arc::from("b"), 1)]);
        assert!(!t.take(9_000, 2_000).provisional);
    }
}
