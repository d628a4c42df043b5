//! Per-request and per-token figures of a period, grouped by project, model, host, day
//! or (for the report) project and model.
//!
//! A group's `energy_uj` is the model-tagged energy of its hours that have counts; the
//! per-request figure divides the energy of the hours that counted requests by the
//! requests, the per-token figure the energy of the hours that counted output tokens by
//! those tokens, so an hour the server could not count never inflates a figure. The
//! group's total energy (what `covered_share` is a share of) is, for a model, all the
//! energy tagged with it; for a project, a host or a day, the energy of the projects
//! that served inference in the period.

use std::collections::{BTreeMap, BTreeSet};

use jiff::tz::TimeZone;

use super::{Counts, InferenceUnit};
use crate::store::{Store, StoreError};

/// How inference figures are grouped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupBy {
    Project,
    Model,
    Host,
    /// Local day of the organisation's time zone (`YYYY-MM-DD`).
    Day,
    /// Project and model (the report's lines).
    ProjectModel,
}

impl GroupBy {
    /// The API's `group_by` values.
    pub const API: &'static str = "project, model, host, day";

    pub fn parse(text: &str) -> Result<GroupBy, String> {
        match text {
            "project" => Ok(GroupBy::Project),
            "model" => Ok(GroupBy::Model),
            "host" => Ok(GroupBy::Host),
            "day" => Ok(GroupBy::Day),
            other => Err(format!(
                "group_by={other:?} is not allowed; allowed are {}",
                GroupBy::API
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            GroupBy::Project => "project",
            GroupBy::Model => "model",
            GroupBy::Host => "host",
            GroupBy::Day => "day",
            GroupBy::ProjectModel => "project_model",
        }
    }
}

/// The key of a group: `(key, "")`, or `(project, model)` for [`GroupBy::ProjectModel`].
pub type GroupKey = (String, String);

/// One group's sums and figures.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GroupFigures {
    pub key: GroupKey,
    pub counts: Counts,
    /// Model-tagged energy of the hours with counts, µJ (at the meter).
    pub energy_uj: u64,
    /// The group's energy (see the module's documentation), µJ.
    pub energy_total_uj: u64,
    /// Emissions (operational location-based with PUE, and embodied) of `energy_uj`, µg.
    pub co2e_ug: u64,
    /// Of `energy_uj`: GPU energy.
    pub gpu_energy_uj: u64,
    energy_requests_uj: u64,
    co2e_requests_ug: u64,
    energy_output_uj: u64,
    /// Time the counts cover, and of it the time the server could not be scraped.
    pub span_ms: u64,
    pub gap_ms: u64,
    pub resets: u64,
    /// Some of the energy was split from a process serving several models.
    pub allocated: bool,
    pub server_kinds: u32,
    pub hosts: BTreeSet<String>,
}

fn ratio(num: f64, den: Option<u64>) -> Option<f64> {
    den.filter(|&d| d > 0).map(|d| num / d as f64)
}

impl GroupFigures {
    /// Joules per request (energy at the meter of the hours that counted requests).
    pub fn joules_per_request(&self) -> Option<f64> {
        if self.energy_requests_uj == 0 {
            return None;
        }
        ratio(self.energy_requests_uj as f64 / 1e6, self.counts.requests)
    }

    /// Watt-hours per 1,000 output tokens.
    pub fn wh_per_1k_output_tokens(&self) -> Option<f64> {
        if self.energy_output_uj == 0 {
            return None;
        }
        ratio(
            self.energy_output_uj as f64 / 3.6e9 * 1000.0,
            self.counts.output_tokens,
        )
    }

    /// Grams CO2e per request (operational with PUE, location-based, and embodied).
    pub fn co2e_g_per_request(&self) -> Option<f64> {
        if self.energy_requests_uj == 0 {
            return None;
        }
        ratio(self.co2e_requests_ug as f64 / 1e6, self.counts.requests)
    }

    /// Share of the group's energy in hours with counts.
    pub fn covered_share(&self) -> Option<f64> {
        (self.energy_total_uj > 0)
            .then(|| (self.energy_uj as f64 / self.energy_total_uj as f64).min(1.0))
    }

    /// Share of `energy_uj` drawn by GPUs.
    pub fn gpu_share(&self) -> Option<f64> {
        (self.energy_uj > 0).then(|| self.gpu_energy_uj as f64 / self.energy_uj as f64)
    }

    fn add_unit(&mut self, u: &InferenceUnit) {
        self.hosts.insert(u.host.clone());
        if !u.counts.any() {
            return;
        }
        self.counts.add(&u.counts);
        self.energy_uj = self.energy_uj.saturating_add(u.energy_uj);
        self.co2e_ug = self.co2e_ug.saturating_add(u.co2e_ug);
        self.gpu_energy_uj = self.gpu_energy_uj.saturating_add(u.gpu_energy_uj);
        if u.counts.requests.is_some() {
            self.energy_requests_uj = self.energy_requests_uj.saturating_add(u.energy_uj);
            self.co2e_requests_ug = self.co2e_requests_ug.saturating_add(u.co2e_ug);
        }
        if u.counts.output_tokens.is_some() {
            self.energy_output_uj = self.energy_output_uj.saturating_add(u.energy_uj);
        }
        self.span_ms = self.span_ms.saturating_add(u.span_ms);
        self.gap_ms = self.gap_ms.saturating_add(u.gap_ms);
        self.resets = self.resets.saturating_add(u.resets);
        self.allocated |= u.allocated;
        self.server_kinds |= u.server_kinds;
    }

    /// Adds another group's sums (for a total).
    pub fn merge(&mut self, o: &GroupFigures) {
        self.counts.add(&o.counts);
        self.energy_uj = self.energy_uj.saturating_add(o.energy_uj);
        self.energy_total_uj = self.energy_total_uj.saturating_add(o.energy_total_uj);
        self.co2e_ug = self.co2e_ug.saturating_add(o.co2e_ug);
        self.gpu_energy_uj = self.gpu_energy_uj.saturating_add(o.gpu_energy_uj);
        self.energy_requests_uj = self.energy_requests_uj.saturating_add(o.energy_requests_uj);
        self.co2e_requests_ug = self.co2e_requests_ug.saturating_add(o.co2e_requests_ug);
        self.energy_output_uj = self.energy_output_uj.saturating_add(o.energy_output_uj);
        self.span_ms = self.span_ms.saturating_add(o.span_ms);
        self.gap_ms = self.gap_ms.saturating_add(o.gap_ms);
        self.resets = self.resets.saturating_add(o.resets);
        self.allocated |= o.allocated;
        self.server_kinds |= o.server_kinds;
        self.hosts.extend(o.hosts.iter().cloned());
    }
}

/// The key of `u` in a grouping.
fn key_of(u: &InferenceUnit, by: GroupBy, tz: &TimeZone) -> GroupKey {
    match by {
        GroupBy::Project => (u.project.clone(), String::new()),
        GroupBy::Model => (u.model.clone(), String::new()),
        GroupBy::Host => (u.host.clone(), String::new()),
        GroupBy::Day => (crate::period::local_day(tz, u.hour_s), String::new()),
        GroupBy::ProjectModel => (u.project.clone(), u.model.clone()),
    }
}

/// Groups `units`. `totals` gives the energy of each group for [`GroupBy::Project`],
/// [`GroupBy::Host`] and [`GroupBy::Day`] ([`project_energy`]); a model's total is
/// the energy tagged with it, in `units`. Groups with neither counts nor energy are
/// left out; ordered by key.
pub fn group(
    units: &[InferenceUnit],
    by: GroupBy,
    tz: &TimeZone,
    totals: &BTreeMap<String, u64>,
) -> Vec<GroupFigures> {
    let mut out: BTreeMap<GroupKey, GroupFigures> = BTreeMap::new();
    for u in units {
        let key = key_of(u, by, tz);
        let g = out.entry(key.clone()).or_insert_with(|| GroupFigures {
            key,
            ..GroupFigures::default()
        });
        g.add_unit(u);
        if matches!(by, GroupBy::Model | GroupBy::ProjectModel) {
            g.energy_total_uj = g.energy_total_uj.saturating_add(u.energy_uj);
        }
    }
    for g in out.values_mut() {
        if !matches!(by, GroupBy::Model | GroupBy::ProjectModel) {
            g.energy_total_uj = totals.get(&g.key.0).copied().unwrap_or(0);
        }
    }
    out.into_values()
        .filter(|g| g.counts.any() || g.energy_total_uj > 0)
        .collect()
}

/// The energy of `[from_s, to_s)` of the projects that served inference in `units`,
/// per group key of `by` (project, host or local day of `tz`); empty for the groupings
/// whose totals come from the units themselves.
pub async fn project_energy(
    store: &dyn Store,
    units: &[InferenceUnit],
    by: GroupBy,
    (from_s, to_s): (i64, i64),
    tz: &TimeZone,
) -> Result<BTreeMap<String, u64>, StoreError> {
    let projects: BTreeSet<&str> = units.iter().map(|u| u.project.as_str()).collect();
    let mut out: BTreeMap<String, u64> = BTreeMap::new();
    match by {
        GroupBy::Project | GroupBy::Host => {
            for l in store.lines(from_s, to_s).await? {
                if projects.contains(l.project.as_str()) {
                    let key = if by == GroupBy::Project {
                        l.project
                    } else {
                        l.host
                    };
                    let e = out.entry(key).or_default();
                    *e = e.saturating_add(l.sums.energy_uj);
                }
            }
        }
        GroupBy::Day => {
            let tz_name = tz.iana_name().unwrap_or("UTC");
            for (start_s, project, uj) in store.energy_by_day(from_s, to_s, tz_name).await? {
                if projects.contains(project.as_str()) {
                    let e = out
                        .entry(crate::period::local_day(tz, start_s))
                        .or_default();
                    *e = e.saturating_add(uj);
                }
            }
        }
        GroupBy::Model | GroupBy::ProjectModel => {}
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(
        hour: i64,
        project: &str,
        model: &str,
        requests: Option<u64>,
        uj: u64,
    ) -> InferenceUnit {
        InferenceUnit {
            hour_s: hour * 3600,
            host: "h1".into(),
            project: project.into(),
            model: model.into(),
            counts: Counts {
                requests,
                output_tokens: requests.map(|r| r * 100),
                ..Counts::default()
            },
            energy_uj: uj,
            gpu_energy_uj: uj / 2,
            co2e_ug: uj / 1000,
            ..InferenceUnit::default()
        }
    }

    #[test]
    fn figures_divide_the_energy_of_the_hours_that_counted() {
        let units = [
            // 3,600 J for 1,000 requests and 100,000 output tokens.
            unit(1, "chat", "m", Some(1_000), 3_600_000_000),
            // Not counted (a scrape gap of a whole hour): energy outside the figures.
            unit(2, "chat", "m", None, 400_000_000),
        ];
        let g = group(&units, GroupBy::Model, &TimeZone::UTC, &BTreeMap::new());
        assert_eq!(g.len(), 1);
        let g = &g[0];
        assert_eq!(g.counts.requests, Some(1_000));
        assert_eq!(g.counts.input_tokens, None);
        assert_eq!(g.energy_uj, 3_600_000_000);
        assert_eq!(g.energy_total_uj, 4_000_000_000);
        assert_eq!(g.joules_per_request(), Some(3.6));
        // 1 Wh for 100 k tokens: 0.01 Wh per 1,000.
        assert!((g.wh_per_1k_output_tokens().unwrap() - 0.01).abs() < 1e-12);
        // 3,600,000 µg for 1,000 requests.
        assert_eq!(g.co2e_g_per_request(), Some(3.6e6 / 1e6 / 1000.0));
        assert_eq!(g.covered_share(), Some(0.9));
        assert_eq!(g.gpu_share(), Some(0.5));
    }

    #[test]
    fn a_project_share_is_of_its_whole_energy_and_nothing_counted_gives_no_figure() {
        let units = [unit(1, "chat", "m", Some(10), 1_000_000)];
        let totals = BTreeMap::from([("chat".to_string(), 4_000_000u64)]);
        let g = group(&units, GroupBy::Project, &TimeZone::UTC, &totals);
        assert_eq!(g[0].covered_share(), Some(0.25));
        let none = group(
            &[unit(1, "chat", "m", None, 1_000_000)],
            GroupBy::Project,
            &TimeZone::UTC,
            &totals,
        );
        assert_eq!(none[0].counts.requests, None);
        assert_eq!(none[0].joules_per_request(), None);
        assert_eq!(none[0].covered_share(), Some(0.0));
        assert!(
            GroupBy::parse("site")
                .unwrap_err()
                .contains("project, model, host, day")
        );
    }
}
