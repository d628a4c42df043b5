//! The uncertainty of every figure: pure code, no I/O.
//!
//! Each source of error carries a documented relative uncertainty (one standard
//! deviation, in %): the measurement of a host's component by one source (RAPL, NVML, the
//! estimate), a site's PUE, a zone's grid factor (or an imported series), an embodied
//! coefficient. A total is a sum of contributions (hourly rows); each contribution is the
//! product of the factors it depends on.
//!
//! **Method** (first-order propagation, GUM): an error source is fully correlated with
//! itself wherever it is used (a PUE that is 10 % high is 10 % high for every hour of the
//! site) and independent of every other error source. So each error source `f` adds
//! `r_f × S_f` to the total's standard uncertainty, `S_f` being the sum of the
//! contributions that depend on it, and the error sources add in quadrature:
//!
//! `u(total) = sqrt( Σ_f (r_f × S_f)² )`.
//!
//! A measurement error source is one (host, component, source): an estimate's bias
//! repeats every hour on the same host, and two hosts' errors are independent.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

/// RAPL energy counters: the counter's own error against an external meter of the same
/// package and memory (few percent in published comparisons); what RAPL does not see
/// (power supply, fans, board) is outside the perimeter and stated in the methodology.
pub const RAPL_PCT: f64 = 5.0;
/// NVML's cumulative energy counter (Volta and newer), board power accuracy of the order
/// of ±5 % as NVIDIA documents for its power readings. The collector cannot tell a GPU
/// read by its counter from one read by power integration, and applies this figure to
/// both; [`NVML_INTEGRATION_PCT`] is the agent's figure for integration.
pub const NVML_COUNTER_PCT: f64 = 5.0;
/// NVML power readings integrated over time: partial sampling on A100/H100 (Yang et al.,
/// SC24) under-measures bursts.
pub const NVML_INTEGRATION_PCT: f64 = 10.0;
/// The CPU estimate: the spread of the fitted CPU curve against published servers
/// (docs/validation.md: left-one-out RMS 18 % over 66 points, up to ±50 % at idle on one
/// host).
pub const ESTIMATE_CPU_PCT: f64 = 30.0;
/// The DRAM estimate: the spread between the published models it was fitted to.
pub const ESTIMATE_DRAM_PCT: f64 = 35.0;
/// A built-in yearly grid factor applied to one hour (hourly intensity varies around the
/// yearly mean, and lifecycle factors differ between publishers by about this much).
pub const GRID_FACTOR_PCT: f64 = 15.0;
/// An imported hourly intensity series (RTE eCO2mix, Electricity Maps).
pub const GRID_SERIES_PCT: f64 = 10.0;
/// A built-in default PUE (a facility kind's average, not the site's own).
pub const PUE_DEFAULT_PCT: f64 = 20.0;
/// A PUE the organisation configured for its site.
pub const PUE_OWN_PCT: f64 = 5.0;
/// An embodied (manufacturing) figure: the same card is 164 or 575 kgCO2e depending on
/// the publisher.
pub const EMBODIED_PCT: f64 = 50.0;
/// A contractual (market-based) factor from the organisation's own contract.
pub const MARKET_CONTRACT_PCT: f64 = 5.0;
/// A residual mix (AIB) without its own stated uncertainty: a yearly national figure
/// applied to hours, direct emissions only.
pub const RESIDUAL_MIX_PCT: f64 = 10.0;

/// The documented relative uncertainty (%) of energy from `source` for `component`.
pub fn source_pct(source: &str, component: &str) -> f64 {
    match (source, component) {
        ("rapl", _) => RAPL_PCT,
        ("nvml", _) => NVML_COUNTER_PCT,
        ("estimate", "cpu") => ESTIMATE_CPU_PCT,
        // DRAM, and anything else estimated: the least certain figure.
        _ => ESTIMATE_DRAM_PCT,
    }
}

/// A sum and its standard uncertainty.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Uncertain {
    pub value: f64,
    /// Standard uncertainty, in the value's unit.
    pub absolute: f64,
}

impl Uncertain {
    /// The relative uncertainty in % (0 for a zero value).
    pub fn relative_pct(&self) -> f64 {
        if self.value > 0.0 {
            self.absolute / self.value * 100.0
        } else {
            0.0
        }
    }
}

/// One hourly row as the propagation needs it. Every key borrows from the rows: the
/// propagation allocates once per error source, not once per row.
#[derive(Clone, Debug)]
pub struct RowTerms<'a> {
    pub host: &'a str,
    pub component: &'a str,
    pub source: &'a str,
    pub energy_uj: u64,
    pub facility_energy_uj: u64,
    pub location_co2e_ug: u64,
    pub market_co2e_ug: u64,
    pub embodied_co2e_ug: u64,
    /// The PUE's key (its site) and relative uncertainty (%).
    pub pue: (&'a str, f64),
    /// The grid intensity's key (its zone) and relative uncertainty (%).
    pub grid: (&'a str, f64),
    /// The market factor's key and uncertainty, where a contract or a residual mix gives
    /// one (else the location-based figure stands in, with the grid's uncertainty).
    pub market: Option<(MarketKey<'a>, f64)>,
    /// The embodied coefficient's key and uncertainty.
    pub embodied: Option<(&'a str, f64)>,
}

/// What a row's market-based factor is, as an error source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MarketKey<'a> {
    /// The site's own contract.
    Contract(&'a str),
    /// The zone's residual mix.
    Residual(&'a str),
}

/// One error source (see the module's method): what it is, borrowed from the rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum SourceKey<'a> {
    /// A host's component as one source measured it.
    Measure(&'a str, &'a str, &'a str),
    Pue(&'a str),
    Grid(&'a str),
    Market(MarketKey<'a>),
    Embodied(&'a str),
    EmbodiedUnknown,
}

/// The error sources met so far, numbered in the order they were first met (so that the
/// quadrature sums in an order fixed by the rows', and the result does not depend on a
/// hash), each with its relative uncertainty (%): a key always carries the same one.
#[derive(Default)]
struct SourceIndex<'a> {
    index: std::collections::HashMap<SourceKey<'a>, usize>,
    pct: Vec<f64>,
}

impl<'a> SourceIndex<'a> {
    fn id(&mut self, key: SourceKey<'a>, pct: f64) -> usize {
        let next = self.pct.len();
        let id = *self.index.entry(key).or_insert(next);
        if id == next {
            self.pct.push(pct);
        }
        id
    }
}

/// One figure's total and, per error source (by its number), the sum of the
/// contributions that depend on it.
#[derive(Default)]
struct FigureSums {
    value: f64,
    by_source: Vec<f64>,
}

impl FigureSums {
    fn add(&mut self, value: f64, sources: &[usize]) {
        if !value.is_finite() {
            return;
        }
        self.value += value;
        for &id in sources {
            if self.by_source.len() <= id {
                self.by_source.resize(id + 1, 0.0);
            }
            self.by_source[id] += value;
        }
    }

    fn result(&self, pct: &[f64]) -> Uncertain {
        let variance: f64 = self
            .by_source
            .iter()
            .zip(pct)
            .map(|(sum, pct)| (pct / 100.0 * sum).powi(2))
            .sum();
        Uncertain {
            value: self.value,
            absolute: variance.sqrt(),
        }
    }
}

/// The uncertainty of each figure of a total.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct FigureUncertainty {
    /// IT energy, kWh.
    pub energy_kwh: Uncertain,
    /// Facility energy (× PUE), kWh.
    pub facility_energy_kwh: Uncertain,
    pub co2e_kg_location: Uncertain,
    pub co2e_kg_market: Uncertain,
    pub co2e_kg_embodied: Uncertain,
}

impl FigureUncertainty {
    /// The same relative uncertainties applied to the figures of `sums` (a part of the
    /// total whose own lines are not known, such as one day of a period).
    pub fn scaled_to(&self, sums: &crate::store::Sums) -> FigureUncertainty {
        let scale = |u: &Uncertain, value: f64| Uncertain {
            value,
            absolute: value * u.relative_pct() / 100.0,
        };
        FigureUncertainty {
            energy_kwh: scale(&self.energy_kwh, sums.energy_uj as f64 / 3.6e12),
            facility_energy_kwh: scale(
                &self.facility_energy_kwh,
                sums.facility_energy_uj as f64 / 3.6e12,
            ),
            co2e_kg_location: scale(&self.co2e_kg_location, sums.location_co2e_ug as f64 / 1e9),
            co2e_kg_market: scale(&self.co2e_kg_market, sums.market_co2e_ug as f64 / 1e9),
            co2e_kg_embodied: scale(&self.co2e_kg_embodied, sums.embodied_co2e_ug as f64 / 1e9),
        }
    }
}

/// Propagates the uncertainties of `rows` to their totals.
pub fn totals<'a>(rows: impl IntoIterator<Item = RowTerms<'a>>) -> FigureUncertainty {
    let mut sources = SourceIndex::default();
    let (mut energy, mut facility, mut location, mut market, mut embodied) = (
        FigureSums::default(),
        FigureSums::default(),
        FigureSums::default(),
        FigureSums::default(),
        FigureSums::default(),
    );
    for r in rows {
        let measure = sources.id(
            SourceKey::Measure(r.host, r.component, r.source),
            source_pct(r.source, r.component),
        );
        let pue = sources.id(SourceKey::Pue(r.pue.0), r.pue.1);
        let grid = sources.id(SourceKey::Grid(r.grid.0), r.grid.1);
        energy.add(r.energy_uj as f64 / 3.6e12, &[measure]);
        facility.add(r.facility_energy_uj as f64 / 3.6e12, &[measure, pue]);
        location.add(r.location_co2e_ug as f64 / 1e9, &[measure, pue, grid]);
        let contract = match r.market {
            Some((key, pct)) => sources.id(SourceKey::Market(key), pct),
            None => grid,
        };
        market.add(r.market_co2e_ug as f64 / 1e9, &[measure, pue, contract]);
        let hardware = match r.embodied {
            Some((key, pct)) => sources.id(SourceKey::Embodied(key), pct),
            None => sources.id(SourceKey::EmbodiedUnknown, EMBODIED_PCT),
        };
        embodied.add(r.embodied_co2e_ug as f64 / 1e9, &[hardware]);
    }
    FigureUncertainty {
        energy_kwh: energy.result(&sources.pct),
        facility_energy_kwh: facility.result(&sources.pct),
        co2e_kg_location: location.result(&sources.pct),
        co2e_kg_market: market.result(&sources.pct),
        co2e_kg_embodied: embodied.result(&sources.pct),
    }
}

#[derive(PartialEq)]
struct CacheKey {
    file: Option<std::path::PathBuf>,
    text: Option<String>,
    grid_factor: Option<String>,
}

struct Cached {
    key: CacheKey,
    pcts: Arc<CoefficientPcts>,
}

/// The relative uncertainties (%) of the coefficients a collector uses: each coefficient's
/// own `uncertainty_pct` from the coefficients table (built-in `carbon.toml` merged with
/// the organisation's file), else the documented figure of its kind.
#[derive(Clone, Debug, PartialEq)]
pub struct CoefficientPcts {
    /// Per zone (upper case): the uncertainty of the grid factor the zone uses.
    grid: BTreeMap<String, f64>,
    /// The default PUE's (a site without its own PUE).
    pue_default: f64,
    /// Per embodied id.
    embodied: BTreeMap<String, f64>,
    /// Per zone (upper case) that has a residual mix: its uncertainty.
    residual: BTreeMap<String, f64>,
}

impl Default for CoefficientPcts {
    /// The documented figures of each kind, no coefficient's own.
    fn default() -> CoefficientPcts {
        CoefficientPcts {
            grid: BTreeMap::new(),
            pue_default: PUE_DEFAULT_PCT,
            embodied: BTreeMap::new(),
            residual: BTreeMap::new(),
        }
    }
}

impl CoefficientPcts {
    /// The uncertainties of `coefficients`' chosen entries.
    pub fn of(coefficients: &crate::carbon::Coefficients) -> CoefficientPcts {
        let mut grid = BTreeMap::new();
        for g in coefficients.grid_factors() {
            let zone = g.zone.to_ascii_uppercase();
            if grid.contains_key(&zone) {
                continue;
            }
            if let Some(chosen) = coefficients.grid(&zone) {
                grid.insert(zone, chosen.uncertainty_pct.unwrap_or(GRID_FACTOR_PCT));
            }
        }
        let pue_default = coefficients
            .pue(crate::carbon::FacilityKind::GlobalAverage)
            .and_then(|p| p.uncertainty_pct)
            .unwrap_or(PUE_DEFAULT_PCT);
        let embodied = coefficients
            .embodied_all()
            .iter()
            .map(|e| (e.id.clone(), e.uncertainty_pct.unwrap_or(EMBODIED_PCT)))
            .collect();
        let mut residual = BTreeMap::new();
        for r in coefficients.residual_mixes() {
            let zone = r.zone.to_ascii_uppercase();
            if let Some(chosen) = coefficients.residual_mix(&zone) {
                residual.insert(zone, chosen.uncertainty_pct.unwrap_or(RESIDUAL_MIX_PCT));
            }
        }
        CoefficientPcts {
            grid,
            pue_default,
            embodied,
            residual,
        }
    }

    /// The coefficients `config` names (its `coefficients_file`, its `grid_factor`),
    /// loaded once per file version and kept; the built-in table where they cannot be
    /// read (the collector refuses to start on such a file, so only a file changed under
    /// a running collector gets here).
    pub fn for_config(config: &crate::config::CollectorConfig) -> Arc<CoefficientPcts> {
        static CACHE: OnceLock<Mutex<Option<Cached>>> = OnceLock::new();
        // The file's text is part of the key: an edited file is read again.
        let key = CacheKey {
            file: config.coefficients_file.clone(),
            text: config
                .coefficients_file
                .as_ref()
                .and_then(|p| std::fs::read_to_string(p).ok()),
            grid_factor: config.organisation.grid_factor.clone(),
        };
        let cache = CACHE.get_or_init(|| Mutex::new(None));
        let mut guard = cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(cached) = guard.as_ref() {
            if cached.key == key {
                return cached.pcts.clone();
            }
        }
        let pcts = Arc::new(
            crate::plan::load_coefficients(config)
                .ok()
                .or_else(|| crate::carbon::Coefficients::built_in().ok())
                .map(|c| CoefficientPcts::of(&c))
                .unwrap_or_default(),
        );
        *guard = Some(Cached {
            key,
            pcts: pcts.clone(),
        });
        pcts
    }

    /// The grid factor's uncertainty for `zone`.
    pub fn grid_pct(&self, zone: &str) -> f64 {
        upper_get(&self.grid, zone)
            .copied()
            .unwrap_or(GRID_FACTOR_PCT)
    }

    /// The embodied uncertainty of hardware `id` (the kind's figure for an unknown id or
    /// an organisation's own figure).
    pub fn embodied_pct(&self, id: &str) -> f64 {
        self.embodied.get(id).copied().unwrap_or(EMBODIED_PCT)
    }
}

/// `map`'s entry for `key` in upper case (`map`'s keys are), without a copy of `key`
/// where it is in upper case already.
fn upper_get<'m, V>(map: &'m BTreeMap<String, V>, key: &str) -> Option<&'m V> {
    if key.bytes().any(|b| b.is_ascii_lowercase()) {
        map.get(&key.to_ascii_uppercase())
    } else {
        map.get(key)
    }
}

/// The uncertainty of the totals of a period's aggregate lines (one per host, project,
/// component, source and site), with the configuration saying which sites have their own
/// PUE and a contract, and the coefficients table giving each coefficient's own
/// uncertainty ([`CoefficientPcts::for_config`]). A line does not say whether its hours
/// used an imported series or the yearly factor: the yearly factor's uncertainty is
/// applied. A line's market-based figure used its zone's residual mix where it differs
/// from its location-based one and the site has no contract (where none applied, the
/// location-based figure stands in, to the microgram). Embodied figures are one error source (the same publishers' figures for every
/// host), with the largest uncertainty among the figures the inventory uses.
pub fn of_lines<'a>(
    lines: impl IntoIterator<Item = &'a crate::store::AggregateLine>,
    config: &crate::config::CollectorConfig,
) -> FigureUncertainty {
    of_lines_with(lines, config, &CoefficientPcts::for_config(config))
}

/// [`of_lines`] with the coefficients' uncertainties given.
pub fn of_lines_with<'a>(
    lines: impl IntoIterator<Item = &'a crate::store::AggregateLine>,
    config: &crate::config::CollectorConfig,
    pcts: &CoefficientPcts,
) -> FigureUncertainty {
    let site_config = |name: &str| -> (bool, bool) {
        match config.sites.iter().find(|s| s.name == name) {
            Some(s) => (s.pue.is_some(), s.market_g_per_kwh.is_some()),
            None => (config.default_site.pue.is_some(), false),
        }
    };
    let embodied_pct = config
        .inventory
        .iter()
        .flat_map(|item| {
            item.server
                .iter()
                .chain(item.gpus.iter().filter_map(|g| g.model.as_ref()))
                .map(|id| pcts.embodied_pct(id))
        })
        .fold(None, |acc: Option<f64>, p| {
            Some(acc.map_or(p, |a| a.max(p)))
        })
        .unwrap_or(EMBODIED_PCT);
    let rows = lines.into_iter().map(|l| {
        let (own_pue, contract) = site_config(&l.site);
        RowTerms {
            host: &l.host,
            component: &l.component,
            source: &l.source,
            energy_uj: l.sums.energy_uj,
            facility_energy_uj: l.sums.facility_energy_uj,
            location_co2e_ug: l.sums.location_co2e_ug,
            market_co2e_ug: l.sums.market_co2e_ug,
            embodied_co2e_ug: l.sums.embodied_co2e_ug,
            pue: (
                l.site.as_str(),
                if own_pue {
                    PUE_OWN_PCT
                } else {
                    pcts.pue_default
                },
            ),
            grid: (l.zone.as_str(), pcts.grid_pct(&l.zone)),
            market: if contract {
                Some((MarketKey::Contract(&l.site), MARKET_CONTRACT_PCT))
            } else if l.sums.market_co2e_ug != l.sums.location_co2e_ug {
                // A residual mix was applied when the rows were stored (the
                // location-based figure stands in, equal to the microgram, where none was).
                upper_get(&pcts.residual, &l.zone).map(|pct| (MarketKey::Residual(&l.zone), *pct))
            } else {
                None
            },
            embodied: Some(("hardware", embodied_pct)),
        }
    });
    totals(rows)
}

/// One hourly row's relative uncertainties (%), each from the row's own source and
/// coefficients: the CSV's `*_uncertainty_pct` columns.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RowPct {
    /// The source's (RAPL, NVML counter or integration, estimate).
    pub energy: f64,
    /// Source, PUE and grid intensity in quadrature.
    pub location: f64,
    /// Source, PUE and the market factor (contract, residual mix, or the grid's where
    /// neither exists) in quadrature.
    pub market: f64,
    /// The embodied figures' (the largest among the hardware the row's coefficient names).
    pub embodied: f64,
}

/// The relative uncertainties of one hourly `row`, from the coefficients it names
/// (`coefficients`: those stored for the period, with their ids) and each coefficient's
/// own uncertainty in the table (`pcts`): the PUE coefficient the row used (the site's own
/// or the default), the grid factor of its zone (or an imported series), its market factor
/// (a contract, the zone's residual mix, or none) and its embodied coefficient's hardware.
pub fn row_pct(
    row: &crate::report::ReportRow,
    coefficients: &[crate::store::StoredCoefficient],
    pcts: &CoefficientPcts,
) -> RowPct {
    let find = |id: i64| coefficients.iter().find(|c| c.id == id);
    let energy = source_pct(&row.source, &row.component);
    let pue = match find(row.pue_coef) {
        Some(c) if !c.is_default => PUE_OWN_PCT,
        _ => pcts.pue_default,
    };
    let grid = if row.intensity_from.starts_with("import:") {
        GRID_SERIES_PCT
    } else {
        pcts.grid_pct(&row.zone)
    };
    let quadrature = |third: f64| (energy * energy + pue * pue + third * third).sqrt();
    let market = match row.market_coef.and_then(find) {
        Some(c) if !c.is_default => MARKET_CONTRACT_PCT,
        Some(_) => pcts
            .residual
            .get(&row.zone.to_ascii_uppercase())
            .copied()
            .unwrap_or(RESIDUAL_MIX_PCT),
        None => grid,
    };
    let embodied = match row.embodied_coef.and_then(find) {
        Some(c) => embodied_parts(&c.detail)
            .map(|id| pcts.embodied_pct(id))
            .fold(None, |acc: Option<f64>, p| {
                Some(acc.map_or(p, |a| a.max(p)))
            })
            .unwrap_or(EMBODIED_PCT),
        None => EMBODIED_PCT,
    };
    RowPct {
        energy,
        location: quadrature(grid),
        market: quadrature(market),
        embodied,
    }
}

/// The hardware ids an embodied coefficient's detail names: its parts are `ID: …` or
/// `N × ID: …`, separated by `; ` (`crate::plan`).
fn embodied_parts(detail: &str) -> impl Iterator<Item = &str> {
    detail.split("; ").filter_map(|part| {
        let name = part.split(": ").next()?;
        let id = name.rsplit(" × ").next().unwrap_or(name).trim();
        (!id.is_empty()).then_some(id)
    })
}

/// `± 4 %`: a relative uncertainty rounded for reading (one decimal under 1 %).
pub fn format_pct(rel_pct: f64) -> String {
    if !rel_pct.is_finite() || rel_pct <= 0.0 {
        "± 0 %".to_string()
    } else if rel_pct < 1.0 {
        format!("± {rel_pct:.1} %")
    } else {
        format!("± {rel_pct:.0} %")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KWH_UJ: u64 = 3_600_000_000_000;

    fn row<'a>(host: &'a str, component: &'a str, source: &'a str, kwh: u64) -> RowTerms<'a> {
        // PUE 1.5 (default), grid 50 g/kWh (built-in factor), no contract.
        let facility = kwh * KWH_UJ * 3 / 2;
        let co2e_ug = (kwh as f64 * 1.5 * 50.0 * 1e6) as u64;
        RowTerms {
            host,
            component,
            source,
            energy_uj: kwh * KWH_UJ,
            facility_energy_uj: facility,
            location_co2e_ug: co2e_ug,
            market_co2e_ug: co2e_ug,
            embodied_co2e_ug: 0,
            pue: ("1", PUE_DEFAULT_PCT),
            grid: ("coefficient:7", GRID_FACTOR_PCT),
            market: None,
            embodied: None,
        }
    }

    /// A month by hand: one host, CPU by RAPL 300 kWh, GPU by NVML 800 kWh, DRAM by the
    /// estimate 36 kWh, split over two hourly rows each (correlated within a source).
    ///   u(E) = sqrt((5 % × 300)² + (5 % × 800)² + (35 % × 36)²)
    ///        = sqrt(15² + 40² + 12.6²) = sqrt(1983.76) = 44.54 kWh, 3.92 % of 1,136 kWh.
    ///   u(CO2e location) adds the PUE (20 %) and the grid factor (15 %), each correlated
    ///   over the whole total: relative sqrt(3.92² + 20² + 15²) = 25.3 %.
    #[test]
    fn a_hand_computed_month_matches() {
        let mut rows = Vec::new();
        for (component, source, kwh) in [
            ("cpu", "rapl", 300),
            ("gpu", "nvml", 800),
            ("dram", "estimate", 36),
        ] {
            rows.push(row("h1", component, source, kwh / 2));
            rows.push(row("h1", component, source, kwh - kwh / 2));
        }
        let u = totals(rows);
        assert!((u.energy_kwh.value - 1136.0).abs() < 1e-9);
        assert!(
            (u.energy_kwh.absolute - 1983.76f64.sqrt()).abs() < 1e-9,
            "{u:?}"
        );
        assert_eq!(format_pct(u.energy_kwh.relative_pct()), "± 4 %");
        let expected =
            ((1983.76f64.sqrt() / 1136.0 * 100.0).powi(2) + 20f64.powi(2) + 15f64.powi(2)).sqrt();
        assert!(
            (u.co2e_kg_location.relative_pct() - expected).abs() < 1e-6,
            "{u:?}"
        );
        assert!(
            (u.facility_energy_kwh.relative_pct()
                - ((1983.76f64.sqrt() / 1136.0 * 100.0).powi(2) + 400.0).sqrt())
            .abs()
                < 1e-6
        );
    }

    #[test]
    fn independent_hosts_add_in_quadrature_and_one_host_adds_linearly() {
        // Two hosts, each 100 kWh estimated CPU: independent, so 30 % / sqrt(2).
        let u = totals([
            row("a", "cpu", "estimate", 100),
            row("b", "cpu", "estimate", 100),
        ]);
        assert!((u.energy_kwh.relative_pct() - 30.0 / 2f64.sqrt()).abs() < 1e-9);
        // The same 200 kWh on one host: correlated, 30 %.
        let u = totals([
            row("a", "cpu", "estimate", 100),
            row("a", "cpu", "estimate", 100),
        ]);
        assert!((u.energy_kwh.relative_pct() - 30.0).abs() < 1e-9);
    }

    #[test]
    fn empty_and_odd_inputs_are_zero() {
        let u = totals(Vec::<RowTerms>::new());
        assert_eq!(u.energy_kwh.relative_pct(), 0.0);
        assert_eq!(format_pct(0.0), "± 0 %");
        assert_eq!(format_pct(0.44), "± 0.4 %");
        assert_eq!(format_pct(f64::NAN), "± 0 %");
        let mut f = FigureSums::default();
        f.add(f64::INFINITY, &[0]);
        assert_eq!(f.result(&[5.0]), Uncertain::default());
    }
}
