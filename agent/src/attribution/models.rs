//! The split of a serving process's energy between the models it serves.
//!
//! The inference reader gives, for each serving process, a weight per model for the
//! interval: output tokens, else requests, else equal weights (a model loaded and idle
//! gets the idle energy of its process, GPU included). The process's part of each
//! channel (its share of its project's CPU part by CPU time; its GPU part as the GPU
//! split gave it) is split by those weights with [`split_exact`], so a project's model
//! parts never exceed its energy and add up to the process's energy to the microjoule.
//! A process of several models has its parts flagged as allocated.
//!
//! Equal shares given while a server's first counts were awaited are provisional
//! ([`ProcessWeights::provisional`]): what they gave each model is kept per process and
//! channel, and the first cycle with real weights splits its own energy so that the
//! provisional cycles and it together follow those weights (as far as its energy allows;
//! a part is never negative). So an agent that starts, or a server that is first read,
//! in the middle of traffic does not leave the first cycles split equally.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use empreinte_shared::split::split_exact;
use empreinte_shared::{Component, MicroJoules, SourceKind};

use super::projects::ProjectId;
use super::state::ModelEnergy;

/// A model part's key and its energy (µJ) and allocation flag.
type Parts = BTreeMap<(ProjectId, Arc<str>, Component, SourceKind), (u64, bool)>;

/// A serving process's channel: what provisional shares are kept by.
type OwedKey = (u32, ProjectId, Component, SourceKind);

/// The weights of one serving process's models for a cycle.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessWeights {
    pub models: Vec<(Arc<str>, u64)>,
    /// Equal shares standing in for counts not read yet (see the module doc).
    pub provisional: bool,
}

/// Model weights of serving processes, and the last interval's model parts.
#[derive(Debug, Default)]
pub struct ModelSplit {
    weights: HashMap<u32, ProcessWeights>,
    parts: Parts,
    scratch: Vec<MicroJoules>,
    /// What provisional cycles gave each model, per process and channel.
    owed: HashMap<OwedKey, BTreeMap<Arc<str>, u64>>,
    /// `owed` as the last cycle that stood left it (a failed cycle goes back to it).
    owed_kept: HashMap<OwedKey, BTreeMap<Arc<str>, u64>>,
}

impl ModelSplit {
    /// The weights for the next interval, per serving process. Provisional shares of
    /// processes no longer serving are forgotten.
    pub fn set_weights(&mut self, weights: HashMap<u32, ProcessWeights>) {
        self.owed.retain(|k, _| weights.contains_key(&k.0));
        self.weights = weights;
    }

    /// True when `pid` serves models.
    pub fn serves(&self, pid: u32) -> bool {
        self.weights.contains_key(&pid)
    }

    pub fn is_empty(&self) -> bool {
        self.weights.is_empty()
    }

    /// A new interval: the last one stood, so its provisional shares are kept.
    pub fn begin_interval(&mut self) {
        self.parts.clear();
        self.owed_kept.clone_from(&self.owed);
    }

    /// The interval failed: its parts, and what it owed or settled, are forgotten.
    pub fn discard_interval(&mut self) {
        self.parts.clear();
        self.owed.clone_from(&self.owed_kept);
    }

    /// The CPU (or DRAM) channel was split between projects into `project_parts` by
    /// `project_weights` (CPU ticks); `serving` are the serving processes with their
    /// project and ticks. Each gets its share of its project's part, split by model.
    pub fn split_cpu(
        &mut self,
        component: Component,
        source: SourceKind,
        project_parts: &[MicroJoules],
        project_weights: &[u64],
        serving: &[(u32, ProjectId, u64)],
    ) {
        let mut by_project: BTreeMap<ProjectId, Vec<(u32, u64)>> = BTreeMap::new();
        for &(pid, project, ticks) in serving {
            by_project.entry(project).or_default().push((pid, ticks));
        }
        let mut shares = Vec::new();
        for (project, pids) in by_project {
            let (Some(&part), Some(&weight)) =
                (project_parts.get(project), project_weights.get(project))
            else {
                continue;
            };
            let mut w: Vec<u64> = pids.iter().map(|p| p.1).collect();
            let served: u64 = w.iter().fold(0u64, |a, b| a.saturating_add(*b));
            w.push(weight.saturating_sub(served));
            if !split_exact(part, &w, &mut shares) {
                continue;
            }
            for (&(pid, _), &e) in pids.iter().zip(&shares) {
                self.split_process(pid, project, component, source, e);
            }
        }
    }

    /// `pid` of `project` received `e` on a channel: split it by model.
    pub fn split_process(
        &mut self,
        pid: u32,
        project: ProjectId,
        component: Component,
        source: SourceKind,
        e: MicroJoules,
    ) {
        let Some(pw) = self.weights.get(&pid) else {
            return;
        };
        if e == MicroJoules::ZERO {
            return;
        }
        let key = (pid, project, component, source);
        // Real weights settle what provisional cycles gave on this channel, once.
        let owed = match pw.provisional {
            false => self.owed.remove(&key),
            true => None,
        };
        let w: Vec<u64> = match owed {
            Some(owed) => settling_weights(&pw.models, &owed, e),
            None => pw.models.iter().map(|m| m.1).collect(),
        };
        let mut scratch = std::mem::take(&mut self.scratch);
        if split_exact(e, &w, &mut scratch) {
            let allocated = pw.models.len() > 1;
            for ((model, _), part) in pw.models.iter().zip(&scratch) {
                if part.0 == 0 {
                    continue;
                }
                if pw.provisional {
                    let o = self
                        .owed
                        .entry(key)
                        .or_default()
                        .entry(model.clone())
                        .or_default();
                    *o = o.saturating_add(part.0);
                }
                let entry = self
                    .parts
                    .entry((project, model.clone(), component, source))
                    .or_insert((0, false));
                entry.0 = entry.0.saturating_add(part.0);
                entry.1 |= allocated;
            }
        }
        self.scratch = scratch;
    }

    /// The interval's parts, with project names.
    pub fn publish(&self, name: impl Fn(ProjectId) -> Arc<str>) -> Vec<ModelEnergy> {
        self.parts
            .iter()
            .map(
                |((project, model, component, source), &(last_uj, allocated))| ModelEnergy {
                    project: name(*project),
                    model: model.clone(),
                    component: *component,
                    source: *source,
                    last_uj,
                    allocated,
                },
            )
            .collect()
    }
}

/// Weights for `e` such that what provisional cycles gave (`owed`) and `e` together
/// follow `models`' weights: each model's target share of the whole, less what it was
/// given, never below zero. Models no longer loaded keep what they were given.
fn settling_weights(
    models: &[(Arc<str>, u64)],
    owed: &BTreeMap<Arc<str>, u64>,
    e: MicroJoules,
) -> Vec<u64> {
    let given = |m: &Arc<str>| u128::from(owed.get(m).copied().unwrap_or(0));
    let w_total: u128 = models.iter().map(|m| u128::from(m.1)).sum();
    let whole: u128 = models.iter().map(|m| given(&m.0)).sum::<u128>() + u128::from(e.0);
    let settle: Vec<u64> = models
        .iter()
        .map(|(m, w)| {
            let target = whole * u128::from(*w) / w_total.max(1);
            u64::try_from(target.saturating_sub(given(m))).unwrap_or(u64::MAX)
        })
        .collect();
    if settle.iter().all(|w| *w == 0) {
        return models.iter().map(|m| m.1).collect();
    }
    settle
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_part_is_split_by_model_exactly_and_flagged() {
        let mut m = ModelSplit::default();
        m.set_weights(HashMap::from([
            (10, counted(&[("a", 2), ("b", 1)])),
            (11, counted(&[("c", 0)])),
        ]));
        // Project 1 got 1,000,001 µJ for 30 ticks, of which pid 10 used 20.
        m.split_cpu(
            Component::Cpu,
            SourceKind::Rapl,
            &[MicroJoules(5), MicroJoules(1_000_001)],
            &[1, 30],
            &[(10, 1, 20)],
        );
        let parts = m.publish(|p| Arc::from(format!("p{p}").as_str()));
        let got: Vec<(&str, u64, bool)> = parts
            .iter()
            .map(|p| (&*p.model, p.last_uj, p.allocated))
            .collect();
        // pid 10: 666,667 µJ of the 1,000,001 (its 20 ticks of 30), then 2:1.
        assert_eq!(got, [("a", 444_445, true), ("b", 222_222, true)]);
        assert_eq!(444_445 + 222_222, 666_667);
        // A process whose only model has weight 0 splits nothing (the caller gives
        // weights of 1 to an idle model).
        m.begin_interval();
        m.split_process(11, 0, Component::Gpu, SourceKind::Nvml, MicroJoules(9));
        assert!(m.publish(|_| Arc::from("x")).is_empty());
    }

    fn counted(w: &[(&str, u64)]) -> ProcessWeights {
        ProcessWeights {
            models: w.iter().map(|(m, w)| (Arc::from(*m), *w)).collect(),
            provisional: false,
        }
    }

    fn parts(m: &ModelSplit) -> Vec<(String, u64)> {
        m.publish(|_| Arc::from("p"))
            .iter()
            .map(|p| (p.model.to_string(), p.last_uj))
            .collect()
    }

    #[test]
    fn provisional_equal_shares_are_set_right_by_the_first_counted_cycle() {
        let mut m = ModelSplit::default();
        let gpu = |m: &mut ModelSplit, e| {
            m.split_process(7, 0, Component::Gpu, SourceKind::Nvml, MicroJoules(e))
        };
        // Two cycles before the server's first counts were read: equal shares.
        let provisional = ProcessWeights {
            provisional: true,
            ..counted(&[("a", 1), ("b", 1)])
        };
        for _ in 0..2 {
            m.begin_interval();
            m.set_weights(HashMap::from([(7, provisional.clone())]));
            gpu(&mut m, 1_000);
            assert_eq!(parts(&m), [("a".into(), 500), ("b".into(), 500)]);
        }
        // A failed cycle's provisional shares are forgotten with it.
        m.begin_interval();
        gpu(&mut m, 1_000);
        m.discard_interval();
        // The first counts say 4:1: the three cycles' 3,000 µJ should be a 2,400, b 600.
        // a was given 1,000 and b 1,000: all of this cycle's 1,000 go to a.
        m.begin_interval();
        m.set_weights(HashMap::from([(7, counted(&[("a", 4), ("b", 1)]))]));
        gpu(&mut m, 1_000);
        assert_eq!(parts(&m), [("a".into(), 1_000)]);
        // Not enough to settle at once (a wanted 1,400): the rest is not carried; the next
        // cycle follows the counts alone.
        m.begin_interval();
        gpu(&mut m, 1_000);
        assert_eq!(parts(&m), [("a".into(), 800), ("b".into(), 200)]);
        // With enough energy the whole is settled exactly.
        let mut m = ModelSplit::default();
        m.begin_interval();
        m.set_weights(HashMap::from([(7, provisional)]));
        gpu(&mut m, 1_000);
        m.begin_interval();
        m.set_weights(HashMap::from([(7, counted(&[("a", 4), ("b", 1)]))]));
        gpu(&mut m, 4_000);
        // 5,000 in all at 4:1 = 4,000 and 1,000; given 500 and 500: now 3,500 and 500.
        assert_eq!(parts(&m), [("a".into(), 3_500), ("b".into(), 500)]);
    }
}
