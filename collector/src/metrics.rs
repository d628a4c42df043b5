//! The collector's Prometheus exposition.
//!
//! Footprint counters count what this collector process has stored since it started
//! (integer µJ and µg, rendered at scrape time), so they only go up and `increase()`
//! works across restarts; long-term totals come from the API and the report. Budget
//! and intensity gauges are refreshed from the store in the background.

use std::collections::BTreeMap;
use std::sync::Mutex;

use empreinte_shared::exposition::Family;
use prometheus::core::Collector;
use prometheus::proto::{MetricFamily, MetricType};
use prometheus::{Encoder, Histogram, HistogramOpts, TextEncoder};

use crate::objectives::ObjectiveStatus;
use crate::store::{AddedPart, AgentRecord};

/// Version of this build.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Default)]
struct Counts {
    /// (project, site, component) → µJ.
    energy: BTreeMap<(String, String, &'static str), u64>,
    /// (project, site, scope, method) → µg.
    co2e: BTreeMap<(String, String, &'static str, &'static str), u64>,
    /// outcome → pushes.
    pushes: BTreeMap<&'static str, u64>,
    /// outcome → batches.
    batches: BTreeMap<&'static str, u64>,
    /// reason → refused pushes.
    refused: BTreeMap<&'static str, u64>,
    records: u64,
    /// project → when it last had energy stored (Unix ms), to bound the series.
    last_stored: BTreeMap<String, u64>,
    last_sweep_ms: u64,
    budgets: Vec<ObjectiveStatus>,
    intensity: BTreeMap<String, f64>,
}

/// Per-project series are kept while the project had energy stored within this window:
/// past it they leave `/metrics` (and memory), so the series are bounded by the projects
/// active in the last hour, not by every name ever pushed. A project that comes back
/// starts its series again from 0, which `rate()` and `increase()` read as a counter
/// reset; long-term totals come from the API and the report.
pub const ACTIVE_PROJECT_WINDOW_MS: u64 = 3_600_000;

impl Counts {
    /// Drops the series of projects with no energy stored since `since` (Unix ms).
    fn forget_quiet(&mut self, since: u64) {
        self.last_stored.retain(|_, at| *at >= since);
        let active = &self.last_stored;
        self.energy.retain(|k, _| active.contains_key(&k.0));
        self.co2e.retain(|k, _| active.contains_key(&k.0));
    }
}

/// The collector's metrics.
pub struct Metrics {
    counts: Mutex<Counts>,
    store_seconds: Option<Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let store_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "empreinte_collector_store_duration_seconds",
                "Time to store one push (validation excluded, commit included), in seconds.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
        )
        .ok();
        Metrics {
            counts: Mutex::new(Counts::default()),
            store_seconds,
        }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A push stored: its new parts and how many batches were new or replays.
    pub fn stored(
        &self,
        site: &str,
        added: &[AddedPart],
        accepted: u64,
        duplicates: u64,
        seconds: f64,
    ) {
        let mut c = self.counts();
        *c.pushes.entry("stored").or_default() += 1;
        *c.batches.entry("accepted").or_default() += accepted;
        *c.batches.entry("duplicate").or_default() += duplicates;
        c.records += added.len() as u64;
        let now = crate::clock::now_unix_ms();
        for p in added {
            c.last_stored.insert(p.project.clone(), now);
            *c.energy
                .entry((p.project.clone(), site.to_string(), p.component.as_str()))
                .or_default() += p.energy_uj;
            *c.co2e
                .entry((
                    p.project.clone(),
                    site.to_string(),
                    "operational",
                    "location",
                ))
                .or_default() += p.location_ug;
            *c.co2e
                .entry((p.project.clone(), site.to_string(), "operational", "market"))
                .or_default() += p.market_ug.unwrap_or(p.location_ug);
            for method in ["location", "market"] {
                *c.co2e
                    .entry((p.project.clone(), site.to_string(), "embodied", method))
                    .or_default() += p.embodied_ug;
            }
        }
        if now.saturating_sub(c.last_sweep_ms) >= 60_000 {
            c.last_sweep_ms = now;
            c.forget_quiet(now.saturating_sub(ACTIVE_PROJECT_WINDOW_MS));
        }
        drop(c);
        if let Some(h) = &self.store_seconds {
            h.observe(seconds);
        }
    }

    /// A push refused, with the reason's label.
    pub fn refused(&self, reason: &'static str) {
        let mut c = self.counts();
        *c.pushes.entry("refused").or_default() += 1;
        *c.refused.entry(reason).or_default() += 1;
    }

    pub fn set_budgets(&self, budgets: Vec<ObjectiveStatus>) {
        self.counts().budgets = budgets;
    }

    pub fn set_intensity(&self, intensity: BTreeMap<String, f64>) {
        self.counts().intensity = intensity;
    }

    /// The text exposition, with the agents' state as the store has it at `now_ms`.
    pub fn render(&self, agents: &[AgentRecord], now_ms: u64) -> String {
        use MetricType::{COUNTER, GAUGE};
        let c = self.counts();
        let mut energy = Family::new(
            "empreinte_footprint_energy_joules_total",
            "IT energy stored by this collector since it started, per project, site and component, in joules (at the meter, without PUE).",
            COUNTER,
        );
        for ((project, site, component), uj) in &c.energy {
            energy.push(
                &[
                    ("project", project),
                    ("site", site),
                    ("component", component),
                ],
                *uj as f64 / 1e6,
            );
        }
        let mut co2e = Family::new(
            "empreinte_footprint_co2e_grams_total",
            "Emissions stored by this collector since it started, per project and site, in grams CO2e: scope operational (energy × PUE × grid intensity) or embodied (manufacturing, amortised); method location (grid average) or market (contractual factor where configured, grid average elsewhere).",
            COUNTER,
        );
        for ((project, site, scope, method), ug) in &c.co2e {
            co2e.push(
                &[
                    ("project", project),
                    ("site", site),
                    ("scope", scope),
                    ("method", method),
                ],
                *ug as f64 / 1e6,
            );
        }
        let mut used = Family::new(
            "empreinte_budget_used_ratio",
            "Month-to-date use of a sobriety objective's monthly budget (1 = the whole budget); project * is the whole organisation; kind energy (kWh) or co2e (kgCO2e).",
            GAUGE,
        );
        let mut projected = Family::new(
            "empreinte_budget_projected_ratio",
            "Projected end-of-month use of a monthly budget at the month-to-date pace (above 1: the objective will be missed).",
            GAUGE,
        );
        for b in &c.budgets {
            if let Some(r) = b.used_ratio {
                used.push(&[("project", &b.project), ("kind", b.kind.as_str())], r);
            }
            if let Some(r) = b.projected_ratio {
                projected.push(&[("project", &b.project), ("kind", b.kind.as_str())], r);
            }
        }
        let mut intensity = Family::new(
            "empreinte_grid_intensity_grams_per_kwh",
            "Grid carbon intensity used for the current hour in a zone, in gCO2e/kWh (an imported series where one covers the hour, else the zone's yearly factor).",
            GAUGE,
        );
        for (zone, g) in &c.intensity {
            intensity.push(&[("zone", zone)], *g);
        }
        let mut pushes = Family::new(
            "empreinte_collector_pushes_total",
            "Agent pushes received, by outcome: stored or refused.",
            COUNTER,
        );
        for (outcome, n) in &c.pushes {
            pushes.push(&[("outcome", outcome)], *n as f64);
        }
        let mut batches = Family::new(
            "empreinte_collector_batches_total",
            "Batches received in stored pushes, by outcome: accepted (new) or duplicate (already stored, ignored).",
            COUNTER,
        );
        for (outcome, n) in &c.batches {
            batches.push(&[("outcome", outcome)], *n as f64);
        }
        let mut refused = Family::new(
            "empreinte_collector_refused_pushes_total",
            "Pushes refused, by reason (unauthenticated, forbidden, malformed, too_large, invalid, store_error): nothing of them was stored.",
            COUNTER,
        );
        for (reason, n) in &c.refused {
            refused.push(&[("reason", reason)], *n as f64);
        }
        let mut records = Family::new(
            "empreinte_collector_hourly_parts_total",
            "Hourly footprint parts (hour, project, component, source) added by stored batches.",
            COUNTER,
        );
        records.push(&[], c.records as f64);
        let mut lag = Family::new(
            "empreinte_collector_agent_lag_seconds",
            "Time since the end of the latest batch stored from an agent, in seconds: how far behind the collector's view of that host is.",
            GAUGE,
        );
        let mut last_push = Family::new(
            "empreinte_collector_agent_last_push_timestamp_seconds",
            "Unix time of an agent's latest stored push.",
            GAUGE,
        );
        let mut spool = Family::new(
            "empreinte_collector_agent_spool_batches",
            "Batches waiting in an agent's spool once its latest push was stored (0: it is up to date).",
            GAUGE,
        );
        let mut spool_age = Family::new(
            "empreinte_collector_agent_spool_oldest_age_seconds",
            "Age of the oldest batch in an agent's spool at its latest push, in seconds (0 when empty).",
            GAUGE,
        );
        let mut dropped = Family::new(
            "empreinte_collector_agent_spool_dropped_batches_total",
            "Batches an agent dropped from its spool (size or age limit) since it started, as it reported: energy lost.",
            COUNTER,
        );
        for a in agents {
            let labels = [("agent", a.agent_id.as_str())];
            if let Some(end) = a.last_batch_end_ms {
                lag.push(&labels, now_ms.saturating_sub(end) as f64 / 1e3);
            }
            last_push.push(&labels, a.last_push_ms as f64 / 1e3);
            spool.push(&labels, a.spool_batches as f64);
            spool_age.push(
                &labels,
                a.spool_oldest_ms
                    .map(|o| now_ms.saturating_sub(o) as f64 / 1e3)
                    .unwrap_or(0.0),
            );
            dropped.push(&labels, a.spool_dropped as f64);
        }
        let mut build = Family::new(
            "empreinte_collector_build_info",
            "The collector's version.",
            GAUGE,
        );
        build.push(&[("version", VERSION)], 1.0);
        drop(c);
        let mut families: Vec<MetricFamily> = [
            energy, co2e, used, projected, intensity, pushes, batches, refused, records, lag,
            last_push, spool, spool_age, dropped, build,
        ]
        .into_iter()
        .map(|f| f.0)
        .filter(|f| !f.get_metric().is_empty())
        .collect();
        if let Some(h) = &self.store_seconds {
            families.extend(h.collect());
        }
        let mut out = Vec::new();
        if TextEncoder::new().encode(&families, &mut out).is_err() {
            return String::new();
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_of_projects_quiet_past_the_window_are_forgotten() {
        let mut c = Counts::default();
        for (project, at) in [("old", 1_000u64), ("live", 5_000_000)] {
            c.last_stored.insert(project.into(), at);
            c.energy.insert((project.into(), "site".into(), "cpu"), 7);
            c.co2e.insert(
                (project.into(), "site".into(), "operational", "location"),
                3,
            );
        }
        c.forget_quiet(5_000_000 - ACTIVE_PROJECT_WINDOW_MS);
        let projects: Vec<&str> = c.energy.keys().map(|k| k.0.as_str()).collect();
        assert_eq!(projects, ["live"]);
        assert_eq!(c.co2e.len(), 1);
        assert_eq!(c.last_stored.len(), 1);
    }
}
