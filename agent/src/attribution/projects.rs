//! The attributor's projects: interned names and per-project totals, bounded by the
//! projects active in a recent window.
//!
//! A project is *active* while it received energy, or had a live process, within the
//! last `attribution.project_window` of sampled time. Past that it is *dormant*: its
//! name's slot is freed and its totals are parked in a compact map, so the attributor's
//! maps, the published state and `/metrics` hold the active projects only. A dormant
//! project that comes back resumes its counters from the parked totals. At most
//! `attribution.max_dormant_projects` are parked; past that the longest-dormant are
//! forgotten (counted), and such a project, if it ever returns, starts again from zero
//! (a counter reset, which Prometheus's `rate()` and `increase()` handle).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use empreinte_shared::{Component, MicroJoules, SourceKind};

/// An interned project name: an index into the table, reused after eviction.
pub type ProjectId = usize;

/// Energy since the start and in the last interval, per (project, component, source).
pub type Totals = HashMap<(ProjectId, Component, SourceKind), (MicroJoules, MicroJoules)>;

pub struct Projects {
    names: Vec<Arc<str>>,
    ids: HashMap<Arc<str>, ProjectId>,
    last_active: Vec<Duration>,
    free: Vec<ProjectId>,
    pub totals: Totals,
    dormant: HashMap<Arc<str>, Vec<(Component, SourceKind, MicroJoules)>>,
    /// Parking order, oldest first (may hold names that came back: skipped).
    dormant_order: VecDeque<Arc<str>>,
    window: Duration,
    max_dormant: usize,
    /// Sampled time since the start (sum of the intervals).
    now: Duration,
    pub forgotten_total: u64,
}

impl Projects {
    pub fn new(window: Duration, max_dormant: usize) -> Projects {
        Projects {
            names: Vec::new(),
            ids: HashMap::new(),
            last_active: Vec::new(),
            free: Vec::new(),
            totals: HashMap::new(),
            dormant: HashMap::new(),
            dormant_order: VecDeque::new(),
            window,
            max_dormant,
            now: Duration::ZERO,
            forgotten_total: 0,
        }
    }

    /// The id of `name`, allocated (and its parked totals restored) if it has none.
    pub fn intern(&mut self, name: &str) -> ProjectId {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let name: Arc<str> = Arc::from(name);
        let id = match self.free.pop() {
            Some(id) => {
                self.names[id] = name.clone();
                self.last_active[id] = self.now;
                id
            }
            None => {
                self.names.push(name.clone());
                self.last_active.push(self.now);
                self.names.len() - 1
            }
        };
        if let Some(parked) = self.dormant.remove(&name) {
            for (component, source, total) in parked {
                self.totals
                    .insert((id, component, source), (total, MicroJoules::ZERO));
            }
        }
        self.ids.insert(name, id);
        id
    }

    pub fn name(&self, id: ProjectId) -> &Arc<str> {
        &self.names[id]
    }

    /// One more than the largest id in use (the size of per-project vectors).
    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Projects with an id (active).
    pub fn active(&self) -> usize {
        self.ids.len()
    }

    /// Projects parked with their totals.
    pub fn dormant(&self) -> usize {
        self.dormant.len()
    }

    /// Adds `e` to a project's totals and marks it active.
    pub fn add(&mut self, id: ProjectId, component: Component, source: SourceKind, e: MicroJoules) {
        let entry = self.totals.entry((id, component, source)).or_default();
        entry.0 += e;
        entry.1 += e;
        self.last_active[id] = self.now;
    }

    pub fn touch(&mut self, id: ProjectId) {
        self.last_active[id] = self.now;
    }

    /// Moves sampled time on by one interval, then parks the projects inactive for longer
    /// than the window (`keep` says which must stay: live processes, idle, unassigned).
    pub fn advance(&mut self, dt: Duration, keep: impl Fn(ProjectId) -> bool) {
        self.now += dt;
        let Some(horizon) = self.now.checked_sub(self.window) else {
            return;
        };
        let stale: Vec<ProjectId> = self
            .ids
            .values()
            .copied()
            .filter(|&id| self.last_active[id] < horizon && !keep(id))
            .collect();
        if stale.is_empty() {
            return;
        }
        let mut parked: HashMap<ProjectId, Vec<(Component, SourceKind, MicroJoules)>> =
            HashMap::new();
        self.totals
            .retain(|&(id, component, source), &mut (total, _)| {
                if stale.contains(&id) {
                    parked
                        .entry(id)
                        .or_default()
                        .push((component, source, total));
                    false
                } else {
                    true
                }
            });
        for id in stale {
            let name = self.names[id].clone();
            self.ids.remove(&name);
            self.free.push(id);
            let totals = parked.remove(&id).unwrap_or_default();
            if !totals.is_empty() && self.max_dormant > 0 {
                self.dormant.insert(name.clone(), totals);
                self.dormant_order.push_back(name);
            }
        }
        while self.dormant.len() > self.max_dormant {
            let Some(oldest) = self.dormant_order.pop_front() else {
                break;
            };
            if self.dormant.remove(&oldest).is_some() {
                self.forgotten_total += 1;
            }
        }
        // Names that came back leave stale entries behind: keep the queue bounded.
        if self.dormant_order.len() > 2 * self.dormant.len() + 64 {
            let dormant = &self.dormant;
            self.dormant_order.retain(|n| dormant.contains_key(n));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn an_inactive_project_is_parked_and_resumes_its_counter() {
        let mut p = Projects::new(10 * MIN, 100);
        let a = p.intern("a");
        p.add(a, Component::Cpu, SourceKind::Rapl, MicroJoules(500));
        for _ in 0..10 {
            p.advance(MIN, |_| false);
        }
        assert_eq!(p.active(), 1, "still within the window");
        p.advance(MIN, |_| false);
        assert_eq!((p.active(), p.dormant()), (0, 1));
        assert!(p.totals.is_empty());
        let b = p.intern("b");
        assert_eq!(b, a, "the id is reused");
        let a = p.intern("a");
        assert_eq!(
            p.totals[&(a, Component::Cpu, SourceKind::Rapl)].0,
            MicroJoules(500)
        );
        p.add(a, Component::Cpu, SourceKind::Rapl, MicroJoules(7));
        assert_eq!(
            p.totals[&(a, Component::Cpu, SourceKind::Rapl)].0,
            MicroJoules(507)
        );
        assert_eq!(p.dormant(), 0);
    }

    #[test]
    fn kept_projects_stay_and_the_parked_ones_are_bounded() {
        let mut p = Projects::new(MIN, 3);
        let keep = p.intern("kept");
        for i in 0..10 {
            let id = p.intern(&format!("one-off-{i}"));
            p.add(id, Component::Gpu, SourceKind::Nvml, MicroJoules(1));
            p.advance(2 * MIN, |id| id == keep);
        }
        assert_eq!(p.active(), 1);
        assert_eq!(p.dormant(), 3);
        assert_eq!(p.forgotten_total, 7);
        assert_eq!(p.len(), 2, "ids are reused");
    }
}
