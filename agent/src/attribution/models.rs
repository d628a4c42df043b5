//! The split of a serving process's energy between the models it serves.
//!
//! The inference reader gives, for each serving process, a weight per model for the
//! interval: output tokens, else requests, else equal weights (a model loaded and idle
//! gets the idle energy of its process, GPU included). The process's part of each
//! channel (its share of its project's CPU part by CPU time; its GPU part as the GPU
//! split gave it) is split by those weights with [`split_exact`], so a project's model
//! parts never exceed its energy and add up to the process's energy to the microjoule.
//! A process of several models has its parts flagged as allocated.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use empreinte_shared::split::split_exact;
use empreinte_shared::{Component, MicroJoules, SourceKind};

use super::projects::ProjectId;
use super::state::ModelEnergy;

/// A model part's key and its energy (µJ) and allocation flag.
type Parts = BTreeMap<(ProjectId, Arc<str>, Component, SourceKind), (u64, bool)>;

/// Model weights of serving processes, and the last interval's model parts.
#[derive(Debug, Default)]
pub struct ModelSplit {
    weights: HashMap<u32, Vec<(Arc<str>, u64)>>,
    parts: Parts,
    scratch: Vec<MicroJoules>,
}

impl ModelSplit {
    /// The weights for the next interval, per serving process.
    pub fn set_weights(&mut self, weights: HashMap<u32, Vec<(Arc<str>, u64)>>) {
        self.weights = weights;
    }

    /// True when `pid` serves models.
    pub fn serves(&self, pid: u32) -> bool {
        self.weights.contains_key(&pid)
    }

    pub fn is_empty(&self) -> bool {
        self.weights.is_empty()
    }

    /// Forgets the interval's parts (a new interval, or a failed one).
    pub fn clear_parts(&mut self) {
        self.parts.clear();
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
        let Some(models) = self.weights.get(&pid) else {
            return;
        };
        if e == MicroJoules::ZERO {
            return;
        }
        let w: Vec<u64> = models.iter().map(|m| m.1).collect();
        let mut scratch = std::mem::take(&mut self.scratch);
        if split_exact(e, &w, &mut scratch) {
            let allocated = models.len() > 1;
            for ((model, _), part) in models.iter().zip(&scratch) {
                if part.0 == 0 {
                    continue;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_part_is_split_by_model_exactly_and_flagged() {
        let mut m = ModelSplit::default();
        m.set_weights(HashMap::from([
            (10, vec![(Arc::from("a"), 2), (Arc::from("b"), 1)]),
            (11, vec![(Arc::from("c"), 0)]),
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
        m.clear_parts();
        m.split_process(11, 0, Component::Gpu, SourceKind::Nvml, MicroJoules(9));
        assert!(m.publish(|_| Arc::from("x")).is_empty());
    }
}
