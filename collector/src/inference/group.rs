//! What a group of pushes adds to the inference tables, summed per key: the same sums
//! for both engines (SQLite's writer folds groups of pushes; PostgreSQL writes one push's
//! group in its transaction).

use std::collections::BTreeMap;

use empreinte_shared::Component;

use super::{Counts, CountsDelta, InferenceParts};

/// What a group of pushes adds, summed per key.
#[derive(Default)]
pub struct InferenceGroup {
    /// `(host, hour_s, project, model)` → counts.
    pub counts: BTreeMap<(String, i64, String, String), CountsDelta>,
    /// `(host, hour_s, project, model, component)` → µJ.
    pub energy: BTreeMap<(String, i64, String, String, Component), u64>,
    /// `(project, model)` → counts and µJ added to the all-time totals.
    pub totals: BTreeMap<(String, String), (Counts, u64)>,
}

impl InferenceGroup {
    /// Adds a later group's sums.
    pub fn merge(&mut self, later: InferenceGroup) {
        for (k, c) in later.counts {
            match self.counts.entry(k) {
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(c);
                }
                std::collections::btree_map::Entry::Occupied(mut o) => {
                    let e = o.get_mut();
                    e.server_kinds |= c.server_kinds;
                    e.counts.add(&c.counts);
                    e.span_ms = e.span_ms.saturating_add(c.span_ms);
                    e.gap_ms = e.gap_ms.saturating_add(c.gap_ms);
                    e.resets = e.resets.saturating_add(c.resets);
                    e.allocated |= c.allocated;
                }
            }
        }
        for (k, uj) in later.energy {
            let e = self.energy.entry(k).or_default();
            *e = e.saturating_add(uj);
        }
        for (k, (c, uj)) in later.totals {
            let e = self.totals.entry(k).or_default();
            e.0.add(&c);
            e.1 = e.1.saturating_add(uj);
        }
    }

    /// Adds the parts of an accepted batch of `host`.
    pub fn add(&mut self, host: &str, parts: &InferenceParts) {
        for c in &parts.counts {
            let key = (
                host.to_string(),
                c.hour_s,
                c.project.clone(),
                c.model.clone(),
            );
            let e = self.counts.entry(key).or_insert_with(|| CountsDelta {
                hour_s: c.hour_s,
                project: c.project.clone(),
                model: c.model.clone(),
                ..CountsDelta::default()
            });
            e.server_kinds |= c.server_kinds;
            e.counts.add(&c.counts);
            e.span_ms = e.span_ms.saturating_add(c.span_ms);
            e.gap_ms = e.gap_ms.saturating_add(c.gap_ms);
            e.resets = e.resets.saturating_add(c.resets);
            e.allocated |= c.allocated;
            self.totals
                .entry((c.project.clone(), c.model.clone()))
                .or_default()
                .0
                .add(&c.counts);
        }
        for d in &parts.energy {
            let key = (
                host.to_string(),
                d.hour_s,
                d.project.clone(),
                d.model.clone(),
                d.component,
            );
            let e = self.energy.entry(key).or_default();
            *e = e.saturating_add(d.energy_uj);
            let t = self
                .totals
                .entry((d.project.clone(), d.model.clone()))
                .or_default();
            t.1 = t.1.saturating_add(d.energy_uj);
        }
    }
}
