//! The collector's Prometheus exposition.
//!
//! Footprint counters are the store's totals (its monthly rollups), read at start and at
//! every scrape ([`Metrics::seed`]); between scrapes each stored push adds to them. A
//! restart, even after a SIGKILL, is therefore not a counter reset (the stored totals
//! only grow), and `increase()` over a month is right across crashes. Budget and intensity gauges
//! are refreshed from the store in the background.

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
    /// reason → connections closed (done, header_timeout, tls_handshake, error).
    closed: BTreeMap<&'static str, u64>,
    /// limit → times it was reached (connections, ingests, pdf).
    saturated: BTreeMap<&'static str, u64>,
    accept_errors: u64,
    open_connections: u64,
    connection_limit: u64,
    budgets: Vec<ObjectiveStatus>,
    intensity: BTreeMap<String, f64>,
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

    /// Starts the footprint counters from the stored totals (`lines` over all time).
    pub fn seed(&self, lines: &[crate::store::AggregateLine]) {
        let mut c = self.counts();
        c.energy.clear();
        c.co2e.clear();
        for l in lines {
            let Some(component) = component_label(&l.component) else {
                continue;
            };
            *c.energy
                .entry((l.project.clone(), l.site.clone(), component))
                .or_default() += l.sums.energy_uj;
            for (scope, method, ug) in [
                ("operational", "location", l.sums.location_co2e_ug),
                ("operational", "market", l.sums.market_co2e_ug),
                ("embodied", "location", l.sums.embodied_co2e_ug),
                ("embodied", "market", l.sums.embodied_co2e_ug),
            ] {
                *c.co2e
                    .entry((l.project.clone(), l.site.clone(), scope, method))
                    .or_default() += ug;
            }
        }
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
        for p in added {
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

    /// A connection accepted.
    pub fn connection_opened(&self) {
        self.counts().open_connections += 1;
    }

    /// A connection closed, with why.
    pub fn connection_closed(&self, reason: &'static str) {
        let mut c = self.counts();
        c.open_connections = c.open_connections.saturating_sub(1);
        *c.closed.entry(reason).or_default() += 1;
    }

    /// `accept` failed (out of file descriptors, most often).
    pub fn accept_error(&self) {
        self.counts().accept_errors += 1;
    }

    /// A limit was reached: `connections`, `ingests` or `pdf`.
    pub fn saturated(&self, limit: &'static str) {
        *self.counts().saturated.entry(limit).or_default() += 1;
    }

    pub fn set_connection_limit(&self, limit: usize) {
        self.counts().connection_limit = limit as u64;
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
            "IT energy stored by this collector (all time: the database's totals), per project, site and component, in joules (at the meter, without PUE).",
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
            "Emissions stored by this collector (all time: the database's totals), per project and site, in grams CO2e: scope operational (energy × PUE × grid intensity) or embodied (manufacturing, amortised); method location (grid average) or market (contractual factor where configured, grid average elsewhere).",
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
        let mut open = Family::new(
            "empreinte_collector_open_connections",
            "Client connections open now.",
            GAUGE,
        );
        open.push(&[], c.open_connections as f64);
        let mut limit = Family::new(
            "empreinte_collector_connection_limit",
            "The most connections served at once (limits.max_connections, kept below the open-files limit); more wait in the kernel's queue.",
            GAUGE,
        );
        limit.push(&[], c.connection_limit as f64);
        let mut closed = Family::new(
            "empreinte_collector_connections_closed_total",
            "Client connections closed, by reason: done (the client or an idle timeout closed it), header_timeout (headers not sent in time), tls_handshake (failed or too slow), error.",
            COUNTER,
        );
        for (reason, n) in &c.closed {
            closed.push(&[("reason", reason)], *n as f64);
        }
        let mut saturated = Family::new(
            "empreinte_collector_saturated_total",
            "Times a limit was reached, by limit: connections (new ones wait in the kernel's queue), ingests (a push got 503), pdf (a PDF request waited past its queue timeout and got 503).",
            COUNTER,
        );
        for (what, n) in &c.saturated {
            saturated.push(&[("limit", what)], *n as f64);
        }
        let mut accept_errors = Family::new(
            "empreinte_collector_accept_errors_total",
            "Connections the collector could not accept (most often: out of file descriptors).",
            COUNTER,
        );
        accept_errors.push(&[], c.accept_errors as f64);
        let mut build = Family::new(
            "empreinte_collector_build_info",
            "The collector's version.",
            GAUGE,
        );
        build.push(&[("version", VERSION)], 1.0);
        drop(c);
        let mut families: Vec<MetricFamily> = [
            energy,
            co2e,
            used,
            projected,
            intensity,
            pushes,
            batches,
            refused,
            records,
            lag,
            last_push,
            spool,
            spool_age,
            dropped,
            open,
            limit,
            closed,
            saturated,
            accept_errors,
            build,
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

/// The `component` label of a stored component name.
fn component_label(name: &str) -> Option<&'static str> {
    [
        empreinte_shared::Component::Cpu,
        empreinte_shared::Component::Dram,
        empreinte_shared::Component::Gpu,
    ]
    .into_iter()
    .map(|c| c.as_str())
    .find(|c| *c == name)
}
