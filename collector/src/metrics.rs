//! The collector's Prometheus exposition.
//!
//! Footprint counters are the store's totals (its monthly rollups), read at start and at
//! every scrape ([`Metrics::seed`]); between scrapes each stored push adds to them. A
//! restart, even after a SIGKILL, is therefore not a counter reset (the stored totals
//! only grow), and `increase()` over a month is right across crashes. Budget and intensity gauges
//! are refreshed from the store in the background.
//!
//! Just over 600 lines, kept whole on purpose: one `Metrics` value and the rendering of
//! every family it holds; the families are built by short functions grouped by subject
//! (footprint, costs, budgets, pushes, agents, connections, inference), and splitting
//! the file would separate each counter from the function that renders it.

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

/// One project's footprint counters on one site.
#[derive(Default)]
struct SiteCounts {
    /// component → µJ.
    energy: BTreeMap<&'static str, u64>,
    /// (scope, method) → µg.
    co2e: BTreeMap<(&'static str, &'static str), u64>,
}

impl SiteCounts {
    /// Adds energy and emissions (µg: location- and market-based operational, and
    /// embodied, which counts under both methods).
    fn add(
        &mut self,
        component: &'static str,
        energy_uj: u64,
        location: u64,
        market: u64,
        embodied: u64,
    ) {
        *self.energy.entry(component).or_default() += energy_uj;
        for (scope, method, ug) in [
            ("operational", "location", location),
            ("operational", "market", market),
            ("embodied", "location", embodied),
            ("embodied", "market", embodied),
        ] {
            *self.co2e.entry((scope, method)).or_default() += ug;
        }
    }
}

/// `map[key]`, created when missing. A present key is found without a copy of the name
/// (the entry API copies it every time: eight copies per part of every push).
fn slot<'m, V: Default>(map: &'m mut BTreeMap<String, V>, key: &str) -> Option<&'m mut V> {
    if !map.contains_key(key) {
        map.insert(key.to_owned(), V::default());
    }
    map.get_mut(key)
}

#[derive(Default)]
struct Counts {
    /// project → site → its energy (µJ) per component and emissions (µg) per scope and
    /// method.
    footprint: BTreeMap<String, BTreeMap<String, SiteCounts>>,
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
    /// project → when it last had energy stored (Unix ms), to bound the series.
    last_stored: BTreeMap<String, u64>,
    last_sweep_ms: u64,
    /// Projects whose series were forgotten (a fixed-size Bloom filter: bounded).
    forgotten: Forgotten,
    /// All-time inference counts per project and model, as the store has them (read at
    /// every scrape, like the footprint's totals).
    inference: Vec<crate::inference::InferenceTotal>,
    /// Projects back after their series were forgotten, waiting for their stored totals
    /// ([`reseed_returning`]); their new energy is in those totals.
    returning: std::collections::BTreeSet<String>,
}

/// Per-project series are kept while the project had energy stored within this window:
/// past it they leave `/metrics` (and memory), so the series are bounded by the projects
/// active in the last hour, not by every name ever pushed. A project that comes back
/// starts again from its stored totals (read from the store in the background), so the
/// counters stay the store's totals.
pub const ACTIVE_PROJECT_WINDOW_MS: u64 = 3_600_000;

/// Names of forgotten projects, as a Bloom filter of 128 KiB whatever their number; a
/// false positive only costs one read of the stored totals.
struct Forgotten(Vec<u64>);

impl Default for Forgotten {
    fn default() -> Self {
        Forgotten(vec![0; (1 << 20) / 64])
    }
}

impl Forgotten {
    fn bits(project: &str) -> [usize; 3] {
        use std::hash::{DefaultHasher, Hash, Hasher};
        let mut out = [0; 3];
        for (i, b) in out.iter_mut().enumerate() {
            let mut h = DefaultHasher::new();
            (i, project).hash(&mut h);
            *b = (h.finish() % (1 << 20)) as usize;
        }
        out
    }
    fn insert(&mut self, project: &str) {
        for b in Self::bits(project) {
            self.0[b / 64] |= 1 << (b % 64);
        }
    }
    fn may_contain(&self, project: &str) -> bool {
        Self::bits(project)
            .iter()
            .all(|b| self.0[b / 64] & (1 << (b % 64)) != 0)
    }
}

impl Counts {
    /// Drops the series of projects with no energy stored since `since` (Unix ms).
    fn forget_quiet(&mut self, since: u64) {
        let quiet: Vec<String> = self
            .last_stored
            .iter()
            .filter(|(p, at)| **at < since && !self.returning.contains(*p))
            .map(|(p, _)| p.clone())
            .collect();
        for p in &quiet {
            self.last_stored.remove(p);
            self.forgotten.insert(p);
        }
        let active = &self.last_stored;
        self.footprint.retain(|p, _| active.contains_key(p));
    }

    /// Adds a line of stored sums (`seed`, `reseed_projects`).
    fn add_line(&mut self, l: &crate::store::AggregateLine) {
        let Some(component) = component_label(&l.component) else {
            return;
        };
        if let Some(counts) = slot(&mut self.footprint, &l.project).and_then(|s| slot(s, &l.site)) {
            counts.add(
                component,
                l.sums.energy_uj,
                l.sums.location_co2e_ug,
                l.sums.market_co2e_ug,
                l.sums.embodied_co2e_ug,
            );
        }
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

    /// Starts the footprint counters from the stored totals (`lines` over all time).
    pub fn seed(&self, lines: &[crate::store::AggregateLine]) {
        let mut c = self.counts();
        c.footprint.clear();
        let now = crate::clock::now_unix_ms();
        for l in lines {
            c.last_stored.insert(l.project.clone(), now);
            c.add_line(l);
        }
    }

    /// Sets the inference counters to the stored all-time totals.
    pub fn seed_inference(&self, totals: Vec<crate::inference::InferenceTotal>) {
        self.counts().inference = totals;
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
            if !c.last_stored.contains_key(&p.project) && c.forgotten.may_contain(&p.project) {
                // Back after its series were forgotten: its totals (this push included)
                // come from the store (`reseed_returning`).
                c.returning.insert(p.project.clone());
            }
            match c.last_stored.get_mut(&p.project) {
                Some(at) => *at = now,
                None => {
                    c.last_stored.insert(p.project.clone(), now);
                }
            }
            if c.returning.contains(&p.project) {
                continue;
            }
            if let Some(counts) = slot(&mut c.footprint, &p.project).and_then(|s| slot(s, site)) {
                counts.add(
                    p.component.as_str(),
                    p.energy_uj,
                    p.location_ug,
                    p.market_ug.unwrap_or(p.location_ug),
                    p.embodied_ug,
                );
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

    /// Projects back after their series were forgotten, whose totals are to be read from
    /// the store.
    pub fn returning(&self) -> Vec<String> {
        self.counts().returning.iter().cloned().collect()
    }

    /// Sets the counters of `projects` to their stored totals (`lines` over all time).
    pub fn reseed_projects(&self, projects: &[String], lines: &[crate::store::AggregateLine]) {
        let mut c = self.counts();
        let wanted: std::collections::BTreeSet<&str> =
            projects.iter().map(String::as_str).collect();
        c.footprint.retain(|p, _| !wanted.contains(p.as_str()));
        for l in lines.iter().filter(|l| wanted.contains(l.project.as_str())) {
            c.add_line(l);
        }
        for p in projects {
            c.returning.remove(p);
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
        let c = self.counts();
        let mut families = footprint_families(&c);
        families.extend(inference_families(&c));
        families.extend(budget_families(&c));
        families.extend(push_families(&c));
        families.extend(agent_families(agents, now_ms));
        families.extend(connection_families(&c));
        drop(c);
        let mut families: Vec<MetricFamily> = families
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

/// The footprint counters: energy and emissions per project and site.
fn footprint_families(c: &Counts) -> Vec<Family> {
    use MetricType::COUNTER;
    let mut energy = Family::new(
        "empreinte_footprint_energy_joules_total",
        "IT energy stored by this collector (all time: the database's totals), per project, site and component, in joules (at the meter, without PUE).",
        COUNTER,
    );
    let sites = || {
        c.footprint
            .iter()
            .flat_map(|(project, sites)| sites.iter().map(move |(site, s)| (project, site, s)))
    };
    for (project, site, counts) in sites() {
        for (component, uj) in &counts.energy {
            energy.push(
                &[
                    ("project", project),
                    ("site", site),
                    ("component", component),
                ],
                *uj as f64 / 1e6,
            );
        }
    }
    let mut co2e = Family::new(
        "empreinte_footprint_co2e_grams_total",
        "Emissions stored by this collector (all time: the database's totals), per project and site, in grams CO2e: scope operational (energy × PUE × grid intensity) or embodied (manufacturing, amortised); method location (grid average) or market (contractual factor where configured, grid average elsewhere).",
        COUNTER,
    );
    for (project, site, counts) in sites() {
        for ((scope, method), ug) in &counts.co2e {
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
    }
    vec![energy, co2e]
}

/// Requests and tokens per project and model (the store's all-time totals), for the
/// projects whose series are kept; a count the servers do not keep has no series.
fn inference_families(c: &Counts) -> Vec<Family> {
    let mut requests = Family::new(
        "empreinte_inference_requests_total",
        "Requests the inference servers completed (all time: the database's totals), per project and model, as counted by the servers (vLLM, SGLang, TGI, Triton, llama.cpp, LiteLLM) and pushed by the agents.",
        MetricType::COUNTER,
    );
    let mut tokens = Family::new(
        "empreinte_inference_tokens_total",
        "Tokens the inference servers processed (all time: the database's totals), per project, model and kind: input (prompt tokens, cached ones included), cached_input (of them, served from the prefix cache) or output (generated).",
        MetricType::COUNTER,
    );
    let mut energy = Family::new(
        "empreinte_inference_energy_joules_total",
        "IT energy the agents tagged with a model (all time: the database's totals), per project and model, in joules (at the meter, without PUE): the energy of the processes serving it, their GPUs' idle time with the model loaded included; divided by the requests or tokens above, it gives the energy per request or per token.",
        MetricType::COUNTER,
    );
    for t in c
        .inference
        .iter()
        .filter(|t| c.last_stored.contains_key(&t.project))
    {
        let labels = [("project", t.project.as_str()), ("model", t.model.as_str())];
        if t.energy_uj > 0 {
            energy.push(&labels, t.energy_uj as f64 / 1e6);
        }
        if let Some(n) = t.counts.requests {
            requests.push(&labels, n as f64);
        }
        for (kind, n) in [
            ("input", t.counts.input_tokens),
            ("cached_input", t.counts.cached_input_tokens),
            ("output", t.counts.output_tokens),
        ] {
            if let Some(n) = n {
                tokens.push(
                    &[
                        ("project", t.project.as_str()),
                        ("model", t.model.as_str()),
                        ("kind", kind),
                    ],
                    n as f64,
                );
            }
        }
    }
    vec![requests, tokens, energy]
}

/// The objectives' budgets and the grid intensity in use.
fn budget_families(c: &Counts) -> Vec<Family> {
    use MetricType::GAUGE;
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
    vec![used, projected, intensity]
}

/// Pushes, batches and hourly parts received.
fn push_families(c: &Counts) -> Vec<Family> {
    use MetricType::COUNTER;
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
    vec![pushes, batches, refused, records]
}

/// The agents' state as the store has it at `now_ms`.
fn agent_families(agents: &[AgentRecord], now_ms: u64) -> Vec<Family> {
    use MetricType::{COUNTER, GAUGE};
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
    vec![lag, last_push, spool, spool_age, dropped]
}

/// Connections, limits and the build.
fn connection_families(c: &Counts) -> Vec<Family> {
    use MetricType::{COUNTER, GAUGE};
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
    vec![open, limit, closed, saturated, accept_errors, build]
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

/// Reads the stored totals of the projects back after their series were forgotten, and
/// starts their counters from them (in the background after a push; a push stored
/// between the read and the update is not counted until the project's next push).
pub async fn reseed_returning(state: &crate::server::AppState) -> Result<(), String> {
    let projects = state.metrics.returning();
    if projects.is_empty() {
        return Ok(());
    }
    let from = crate::period::month(&state.tz, 1970, 1)?.from_s;
    let to = crate::period::month(&state.tz, 2200, 1)?.from_s;
    let lines = state
        .store
        .lines(from, to)
        .await
        .map_err(|e| e.to_string())?;
    state.metrics.reseed_projects(&projects, &lines);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_of_quiet_projects_are_forgotten_and_a_returning_one_restarts_from_the_store() {
        let mut c = Counts::default();
        for (project, at) in [("old", 1_000u64), ("live", 5_000_000)] {
            c.last_stored.insert(project.into(), at);
            let site = slot(&mut c.footprint, project)
                .and_then(|s| slot(s, "site"))
                .unwrap();
            site.energy.insert("cpu", 7);
            site.co2e.insert(("operational", "location"), 3);
        }
        c.forget_quiet(5_000_000 - ACTIVE_PROJECT_WINDOW_MS);
        let projects: Vec<&str> = c.footprint.keys().map(String::as_str).collect();
        assert_eq!(projects, ["live"]);
        assert_eq!(c.footprint["live"]["site"].co2e.len(), 1);
        assert_eq!(c.last_stored.len(), 1);
        assert!(c.forgotten.may_contain("old"));
        assert!(!c.forgotten.may_contain("never-seen"));
        // "old" comes back: its push is not added, its totals come from the store.
        let m = Metrics::new();
        *m.counts() = c;
        m.stored(
            "site",
            &[AddedPart {
                project: "old".into(),
                component: empreinte_shared::Component::Cpu,
                energy_uj: 5,
                location_ug: 1,
                market_ug: None,
                embodied_ug: 0,
            }],
            1,
            0,
            0.0,
        );
        assert_eq!(m.returning(), ["old"]);
        let line = crate::store::AggregateLine {
            host: "h".into(),
            project: "old".into(),
            component: "cpu".into(),
            source: "rapl".into(),
            site: "site".into(),
            zone: "FR".into(),
            sums: crate::store::Sums {
                energy_uj: 12,
                ..crate::store::Sums::default()
            },
        };
        m.reseed_projects(&["old".to_string()], &[line]);
        assert!(m.returning().is_empty());
        assert_eq!(m.counts().footprint["old"]["site"].energy["cpu"], 12);
    }
}
