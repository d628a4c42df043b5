//! The carbon coefficients: grid intensity per zone, PUE per facility kind and embodied
//! emissions per hardware model, each with its source and year.
//!
//! The built-in ones come from `collector/data/carbon.toml`, compiled in. An organisation's
//! own file, in the same format, is merged over them ([`Coefficients::from_toml_str`]):
//! its entries are marked `is_default = false`, the built-in ones `is_default = true`, so a
//! report can flag every figure that is a default rather than the organisation's own.

use serde::Deserialize;

use super::units::{FactorKind, GramsPerKwh, KgCo2e};

/// The built-in coefficients, as shipped.
const BUILT_IN_TOML: &str = include_str!("../../data/carbon.toml");

/// The highest grid intensity accepted (g/kWh); the dirtiest grids are below 1,000.
pub const MAX_G_PER_KWH: f64 = 2000.0;

/// Hours in a year, as Boavizta counts lifetimes (4 years = 35,040 h).
const HOURS_PER_YEAR: f64 = 8760.0;

/// Carbon intensity of a zone's electricity, over a year.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GridFactor {
    /// ISO 3166 alpha-2 code, or `EU27`, `WORLD` (upper case).
    pub zone: String,
    pub name_fr: String,
    pub name_en: String,
    pub g_per_kwh: GramsPerKwh,
    /// The year the figure describes.
    pub year: i16,
    /// Publisher, then document or dataset.
    pub source: String,
    #[serde(default)]
    pub url: Option<String>,
    pub kind: FactorKind,
    /// Short name of the publisher (`ember`, `ademe`, `rte`...), which an organisation
    /// can prefer for every zone (`[organisation] grid_factor`).
    #[serde(default)]
    pub choice: Option<String>,
    /// The entry [`Coefficients::grid`] returns for its zone (`default = true` in the file).
    #[serde(default)]
    pub default: bool,
    /// Caveats a reader of a report should see.
    #[serde(default)]
    pub note: Option<String>,
    /// Relative uncertainty (one standard deviation, %); the kind's documented default
    /// (`crate::uncertainty`) where absent.
    #[serde(default)]
    pub uncertainty_pct: Option<f64>,
    /// True for a built-in figure, false for the organisation's own. Not read from files.
    #[serde(skip)]
    pub is_default: bool,
}

/// A zone's residual mix (AIB European Residual Mixes): the market-based factor of
/// electricity bought without a contractual instrument (GHG Protocol scope 2). AIB counts
/// direct emissions only.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResidualMix {
    /// ISO 3166 alpha-2 code (upper case).
    pub zone: String,
    pub g_per_kwh: GramsPerKwh,
    /// The calendar year the residual mix describes.
    pub year: i16,
    pub source: String,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub note: Option<String>,
    /// Relative uncertainty (one standard deviation, %); `crate::uncertainty`'s
    /// contractual figure where absent.
    #[serde(default)]
    pub uncertainty_pct: Option<f64>,
    /// True for a built-in figure, false for the organisation's own. Not read from files.
    #[serde(skip)]
    pub is_default: bool,
}

/// The kind of facility a PUE default describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FacilityKind {
    Hyperscale,
    Colocation,
    /// Edge sites and small server rooms (a municipal server room).
    EdgeOrServerRoom,
    /// The average over all data centres.
    GlobalAverage,
}

/// A default power usage effectiveness (facility energy / IT energy, ≥ 1).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PueDefault {
    pub kind: FacilityKind,
    pub pue: f64,
    pub year: i16,
    pub source: String,
    #[serde(default)]
    pub url: Option<String>,
    /// The entry [`Coefficients::pue`] returns for its kind.
    #[serde(default)]
    pub default: bool,
    #[serde(default)]
    pub note: Option<String>,
    /// Relative uncertainty (one standard deviation, %); the kind's documented default
    /// (`crate::uncertainty`) where absent.
    #[serde(default)]
    pub uncertainty_pct: Option<f64>,
    /// True for a built-in figure, false for the organisation's own. Not read from files.
    #[serde(skip)]
    pub is_default: bool,
}

/// What a piece of hardware is, for embodied emissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HardwareKind {
    /// One accelerator card.
    Gpu,
    /// A server without its GPUs (add the cards separately).
    Server,
    /// A whole server, GPUs included.
    ServerWithGpus,
}

/// Manufacturing footprint of a piece of hardware and the lifetime it is amortised over.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbodiedDefault {
    /// Stable identifier, e.g. `nvidia-h100`.
    pub id: String,
    /// What it is, for people.
    pub name: String,
    pub kind: HardwareKind,
    pub kgco2e: KgCo2e,
    pub lifetime_years: f64,
    pub year: i16,
    pub source: String,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub note: Option<String>,
    /// Relative uncertainty (one standard deviation, %); the kind's documented default
    /// (`crate::uncertainty`) where absent.
    #[serde(default)]
    pub uncertainty_pct: Option<f64>,
    /// True for a built-in figure, false for the organisation's own. Not read from files.
    #[serde(skip)]
    pub is_default: bool,
}

impl EmbodiedDefault {
    /// The share of the footprint attributed to `used_s` seconds of use:
    /// `kgco2e × used / lifetime` (Boavizta's amortisation; a year is 8,760 h).
    pub fn amortised_kgco2e(&self, used_s: f64) -> KgCo2e {
        let lifetime_s = self.lifetime_years * HOURS_PER_YEAR * 3600.0;
        if lifetime_s <= 0.0 || !used_s.is_finite() || used_s <= 0.0 {
            return KgCo2e(0.0);
        }
        KgCo2e(self.kgco2e.0 * used_s / lifetime_s)
    }
}

/// The file format: the built-in data file and an organisation's own.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CoefficientsFile {
    #[serde(default)]
    grid: Vec<GridFactor>,
    #[serde(default)]
    pue: Vec<PueDefault>,
    #[serde(default)]
    embodied: Vec<EmbodiedDefault>,
    #[serde(default)]
    residual_mix: Vec<ResidualMix>,
}

/// Why a coefficients file was refused.
#[derive(Debug, thiserror::Error)]
pub enum CoefficientsError {
    #[error("{origin}: not a valid coefficients file: {source}")]
    Parse {
        origin: &'static str,
        #[source]
        source: toml::de::Error,
    },
    #[error("{origin}: {} problem(s): {}", problems.len(), problems.join("; "))]
    Invalid {
        origin: &'static str,
        problems: Vec<String>,
    },
}

/// All coefficients: built-in ones, with an organisation's own merged over them.
///
/// Lookups prefer the organisation's entries, then the one marked `default = true`, then
/// the most recent year.
#[derive(Debug, Clone, PartialEq)]
pub struct Coefficients {
    grid: Vec<GridFactor>,
    pue: Vec<PueDefault>,
    embodied: Vec<EmbodiedDefault>,
    residual_mix: Vec<ResidualMix>,
    /// The publisher whose grid factors are preferred (`[organisation] grid_factor`).
    grid_choice: Option<String>,
}

const BUILT_IN: &str = "built-in carbon.toml";
const ORGANISATION: &str = "organisation's coefficients";

impl Coefficients {
    /// The built-in coefficients alone.
    pub fn built_in() -> Result<Coefficients, CoefficientsError> {
        let file = parse_file(BUILT_IN_TOML, BUILT_IN, true)?;
        Ok(Coefficients {
            grid: file.grid,
            pue: file.pue,
            embodied: file.embodied,
            residual_mix: file.residual_mix,
            grid_choice: None,
        })
    }

    /// The built-in coefficients with an organisation's own file (same format) merged over
    /// them. An organisation's entry replaces a built-in one with the same zone and source
    /// (grid), kind and source (PUE) or id (embodied); other entries are added.
    pub fn from_toml_str(organisation_toml: &str) -> Result<Coefficients, CoefficientsError> {
        let mut merged = Coefficients::built_in()?;
        let own = parse_file(organisation_toml, ORGANISATION, false)?;
        for g in own.grid {
            merged
                .grid
                .retain(|b| !(b.zone.eq_ignore_ascii_case(&g.zone) && b.source == g.source));
            merged.grid.push(g);
        }
        for p in own.pue {
            merged
                .pue
                .retain(|b| !(b.kind == p.kind && b.source == p.source));
            merged.pue.push(p);
        }
        for e in own.embodied {
            merged.embodied.retain(|b| b.id != e.id);
            merged.embodied.push(e);
        }
        for r in own.residual_mix {
            merged
                .residual_mix
                .retain(|b| !(b.zone.eq_ignore_ascii_case(&r.zone) && b.source == r.source));
            merged.residual_mix.push(r);
        }
        Ok(merged)
    }

    /// The factor to use for a zone: the organisation's own if it gives one, else the
    /// preferred publisher's ([`Coefficients::with_grid_choice`]), else the entry marked
    /// `default = true`, else the most recent year. Zone codes are matched without regard
    /// to case.
    pub fn grid(&self, zone: &str) -> Option<&GridFactor> {
        let preferred = |g: &GridFactor| {
            self.grid_choice.is_some() && g.choice.as_deref() == self.grid_choice.as_deref()
        };
        self.grid_all(zone)
            .into_iter()
            .max_by_key(|g| (!g.is_default, preferred(g), g.default, g.year))
    }

    /// Prefers the grid factors of one publisher (`ademe`, `ember`...) wherever the table
    /// has one for the zone. Refused, with the names known, when no factor has it.
    pub fn with_grid_choice(mut self, choice: &str) -> Result<Coefficients, String> {
        let mut known: Vec<&str> = self
            .grid
            .iter()
            .filter_map(|g| g.choice.as_deref())
            .collect();
        known.sort_unstable();
        known.dedup();
        if !known.contains(&choice) {
            return Err(format!(
                "grid_factor {choice:?} is not a publisher of the coefficients table; allowed: {}",
                known.join(", ")
            ));
        }
        self.grid_choice = Some(choice.to_string());
        Ok(self)
    }

    /// The preferred publisher of grid factors, if any.
    pub fn grid_choice(&self) -> Option<&str> {
        self.grid_choice.as_deref()
    }

    /// Every factor known for a zone, in file order (built-in first).
    pub fn grid_all(&self, zone: &str) -> Vec<&GridFactor> {
        self.grid
            .iter()
            .filter(|g| g.zone.eq_ignore_ascii_case(zone))
            .collect()
    }

    /// Every grid factor, every zone.
    pub fn grid_factors(&self) -> &[GridFactor] {
        &self.grid
    }

    /// The PUE to use for a kind of facility, chosen as [`Coefficients::grid`] chooses.
    pub fn pue(&self, kind: FacilityKind) -> Option<&PueDefault> {
        self.pue
            .iter()
            .filter(|p| p.kind == kind)
            .max_by_key(|p| (!p.is_default, p.default, p.year))
    }

    /// Every PUE entry.
    pub fn pue_all(&self) -> &[PueDefault] {
        &self.pue
    }

    /// The embodied emissions of a hardware model, by id.
    pub fn embodied(&self, id: &str) -> Option<&EmbodiedDefault> {
        self.embodied.iter().find(|e| e.id == id)
    }

    /// Every embodied entry.
    pub fn embodied_all(&self) -> &[EmbodiedDefault] {
        &self.embodied
    }

    /// The residual mix of a zone: the organisation's own if it gives one, else the most
    /// recent year. `None` where the table has none (the location-based figure then
    /// stands in for the market-based one).
    pub fn residual_mix(&self, zone: &str) -> Option<&ResidualMix> {
        self.residual_mix
            .iter()
            .filter(|r| r.zone.eq_ignore_ascii_case(zone))
            .max_by_key(|r| (!r.is_default, r.year))
    }

    /// Every residual mix entry.
    pub fn residual_mixes(&self) -> &[ResidualMix] {
        &self.residual_mix
    }
}

fn parse_file(
    text: &str,
    origin: &'static str,
    is_default: bool,
) -> Result<CoefficientsFile, CoefficientsError> {
    let mut file: CoefficientsFile =
        toml::from_str(text).map_err(|source| CoefficientsError::Parse { origin, source })?;
    let problems = validate(&file);
    if !problems.is_empty() {
        return Err(CoefficientsError::Invalid { origin, problems });
    }
    file.grid.iter_mut().for_each(|g| g.is_default = is_default);
    file.pue.iter_mut().for_each(|p| p.is_default = is_default);
    file.embodied
        .iter_mut()
        .for_each(|e| e.is_default = is_default);
    file.residual_mix
        .iter_mut()
        .for_each(|r| r.is_default = is_default);
    Ok(file)
}

/// Every problem in a file, so that all can be fixed at once.
fn validate(file: &CoefficientsFile) -> Vec<String> {
    let mut problems = Vec::new();
    validate_common(file, &mut problems);
    validate_grid(&file.grid, &mut problems);
    validate_pue(&file.pue, &mut problems);
    validate_embodied(&file.embodied, &mut problems);
    validate_residual(&file.residual_mix, &mut problems);
    problems
}

fn validate_residual(residual: &[ResidualMix], problems: &mut Vec<String>) {
    let mut seen: Vec<(String, &str)> = Vec::new();
    for r in residual {
        let what = format!("residual_mix zone {}", r.zone);
        if r.zone.len() != 2 || !r.zone.chars().all(|c| c.is_ascii_uppercase()) {
            problems.push(format!(
                "{what}: a residual mix's zone is an ISO 3166 alpha-2 code in upper case"
            ));
        }
        let v = r.g_per_kwh.0;
        if !(v.is_finite() && (0.0..=MAX_G_PER_KWH).contains(&v)) {
            problems.push(format!(
                "{what}: g_per_kwh {v} is outside [0, {MAX_G_PER_KWH}]"
            ));
        }
        let key = (r.zone.to_ascii_uppercase(), r.source.as_str());
        if seen.contains(&key) {
            problems.push(format!(
                "{what}: two entries with the source \"{}\"",
                r.source
            ));
        }
        seen.push(key);
    }
}

/// What every entry needs: a source, a plausible year, an uncertainty within bounds.
fn validate_common(file: &CoefficientsFile, problems: &mut Vec<String>) {
    let entries = file
        .grid
        .iter()
        .map(|g| {
            (
                format!("grid zone {}", g.zone),
                g.source.as_str(),
                g.year,
                g.uncertainty_pct,
            )
        })
        .chain(file.pue.iter().map(|p| {
            (
                format!("pue {:?}", p.kind),
                p.source.as_str(),
                p.year,
                p.uncertainty_pct,
            )
        }))
        .chain(file.embodied.iter().map(|e| {
            (
                format!("embodied {}", e.id),
                e.source.as_str(),
                e.year,
                e.uncertainty_pct,
            )
        }))
        .chain(file.residual_mix.iter().map(|r| {
            (
                format!("residual_mix zone {}", r.zone),
                r.source.as_str(),
                r.year,
                r.uncertainty_pct,
            )
        }));
    let mut late = Vec::new();
    for (what, source, year, u) in entries {
        if source.trim().is_empty() {
            problems.push(format!("{what}: `source` is empty"));
        }
        if !(1990..=2100).contains(&year) {
            problems.push(format!("{what}: year {year} is not plausible"));
        }
        if let Some(u) = u {
            if !(u.is_finite() && (0.0..=200.0).contains(&u)) {
                late.push(format!("{what}: uncertainty_pct {u} is outside [0, 200]"));
            }
        }
    }
    problems.extend(late);
}

fn validate_grid(grid: &[GridFactor], problems: &mut Vec<String>) {
    let mut seen_grid: Vec<(String, &str)> = Vec::new();
    let mut defaults_per_zone: Vec<String> = Vec::new();
    for g in grid {
        let what = format!("grid zone {}", g.zone);
        let zone_ok = !g.zone.is_empty()
            && g.zone
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-');
        if !zone_ok {
            problems.push(format!(
                "{what}: a zone is an upper-case code (ISO 3166 alpha-2, EU27, WORLD or an Electricity Maps zone id)"
            ));
        }
        let v = g.g_per_kwh.0;
        if !(v.is_finite() && v > 0.0 && v <= MAX_G_PER_KWH) {
            problems.push(format!(
                "{what}: g_per_kwh {v} is outside (0, {MAX_G_PER_KWH}]"
            ));
        }
        if g.name_fr.trim().is_empty() || g.name_en.trim().is_empty() {
            problems.push(format!("{what}: name_fr and name_en are required"));
        }
        let key = (g.zone.to_ascii_uppercase(), g.source.as_str());
        if seen_grid.contains(&key) {
            problems.push(format!(
                "{what}: two entries with the source \"{}\"",
                g.source
            ));
        }
        seen_grid.push(key);
        if g.default {
            if defaults_per_zone.contains(&g.zone) {
                problems.push(format!("{what}: more than one entry has `default = true`"));
            }
            defaults_per_zone.push(g.zone.clone());
        }
    }
}

fn validate_pue(pue: &[PueDefault], problems: &mut Vec<String>) {
    let mut seen_pue: Vec<(FacilityKind, &str)> = Vec::new();
    let mut pue_defaults: Vec<FacilityKind> = Vec::new();
    for p in pue {
        let what = format!("pue {:?}", p.kind);
        if !(p.pue.is_finite() && (1.0..=4.0).contains(&p.pue)) {
            problems.push(format!("{what}: pue {} is outside [1, 4]", p.pue));
        }
        if seen_pue.contains(&(p.kind, p.source.as_str())) {
            problems.push(format!(
                "{what}: two entries with the source \"{}\"",
                p.source
            ));
        }
        seen_pue.push((p.kind, p.source.as_str()));
        if p.default {
            if pue_defaults.contains(&p.kind) {
                problems.push(format!("{what}: more than one entry has `default = true`"));
            }
            pue_defaults.push(p.kind);
        }
    }
}

fn validate_embodied(embodied: &[EmbodiedDefault], problems: &mut Vec<String>) {
    let mut seen_ids: Vec<&str> = Vec::new();
    for e in embodied {
        let what = format!("embodied {}", e.id);
        if e.id.trim().is_empty() {
            problems.push("embodied: an entry has an empty id".to_owned());
        }
        if seen_ids.contains(&e.id.as_str()) {
            problems.push(format!("{what}: the id appears twice"));
        }
        seen_ids.push(&e.id);
        if !(e.kgco2e.0.is_finite() && e.kgco2e.0 > 0.0) {
            problems.push(format!("{what}: kgco2e {} is not positive", e.kgco2e.0));
        }
        if !(e.lifetime_years.is_finite() && e.lifetime_years > 0.0 && e.lifetime_years <= 30.0) {
            problems.push(format!(
                "{what}: lifetime_years {} is outside (0, 30]",
                e.lifetime_years
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn built_in() -> Coefficients {
        Coefficients::built_in().unwrap()
    }

    #[test]
    fn every_built_in_entry_has_a_source_a_plausible_year_and_a_positive_value() {
        let c = built_in();
        for g in c.grid_factors() {
            assert!(!g.source.trim().is_empty(), "{}: empty source", g.zone);
            assert!(
                (2015..=2026).contains(&g.year),
                "{}: year {}",
                g.zone,
                g.year
            );
            assert!(g.g_per_kwh.0 > 0.0 && g.g_per_kwh.0 <= MAX_G_PER_KWH);
            assert!(g.is_default, "{}: built-in entries are defaults", g.zone);
        }
        for p in c.pue_all() {
            assert!(!p.source.trim().is_empty());
            assert!((2015..=2026).contains(&p.year));
            assert!(p.pue >= 1.0);
            assert!(p.is_default);
        }
        for e in c.embodied_all() {
            assert!(!e.source.trim().is_empty(), "{}", e.id);
            assert!((2015..=2026).contains(&e.year), "{}", e.id);
            assert!(e.kgco2e.0 > 0.0 && e.lifetime_years > 0.0, "{}", e.id);
            assert!(e.is_default);
        }
    }

    /// The year the built-in file was last reviewed, and how old a figure may be without a
    /// note saying why it is kept (documented at the top of carbon.toml).
    const REVIEWED: i16 = 2026;
    const MAX_AGE_YEARS: i16 = 5;

    #[test]
    fn every_coefficient_has_a_source_a_year_a_unit_and_a_recent_year_or_a_note() {
        // Read the raw file, so that a missing field is seen even where serde has a default.
        let raw: toml::Table = toml::from_str(BUILT_IN_TOML).unwrap();
        let mut problems = Vec::new();
        for (section, unit_keys) in [
            ("grid", &["g_per_kwh"][..]),
            ("pue", &["pue"][..]),
            ("embodied", &["kgco2e", "lifetime_years"][..]),
            ("residual_mix", &["g_per_kwh"][..]),
        ] {
            let entries = raw[section].as_array().unwrap();
            assert!(!entries.is_empty(), "{section}");
            for (i, e) in entries.iter().enumerate() {
                let e = e.as_table().unwrap();
                let what = format!(
                    "{section}[{i}] {:?}",
                    e.get("zone").or(e.get("id")).or(e.get("kind"))
                );
                if e.get("source")
                    .and_then(|v| v.as_str())
                    .is_none_or(|s| s.trim().is_empty())
                {
                    problems.push(format!("{what}: no source"));
                }
                for k in unit_keys {
                    if e.get(*k)
                        .and_then(|v| v.as_float().or(v.as_integer().map(|i| i as f64)))
                        .is_none()
                    {
                        problems.push(format!("{what}: no {k} (the unit is in the name)"));
                    }
                }
                // A residual mix says in its note what it was checked against.
                if section == "residual_mix" && !e.contains_key("note") {
                    problems.push(format!("{what}: no note saying what was checked"));
                }
                match e.get("year").and_then(|v| v.as_integer()) {
                    None => problems.push(format!("{what}: no year")),
                    Some(y) if (y as i16) < REVIEWED - MAX_AGE_YEARS && !e.contains_key("note") => {
                        problems.push(format!(
                            "{what}: year {y} is older than {MAX_AGE_YEARS} years and has no note"
                        ));
                    }
                    Some(_) => {}
                }
            }
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    #[test]
    fn the_corrections_of_issue_11_hold() {
        let c = built_in();
        // The France 44.2 figure is Our World in Data's, not ADEME's.
        let fr = c.grid_all("FR");
        let owid = fr
            .iter()
            .find(|g| (g.g_per_kwh.0 - 44.2).abs() < 1e-9)
            .unwrap();
        assert!(owid.source.contains("Our World in Data") && !owid.source.contains("ADEME"));
        // Boavizta's GPU lifetime is 3 years.
        assert_eq!(
            c.embodied("nvidia-h100-boavizta").unwrap().lifetime_years,
            3.0
        );
        // EU27 and World default to Ember's latest year (2024), lifecycle, as checked
        // against the co2.js mirror of Ember's data (213.02 and 472.94 g/kWh).
        for (zone, checked) in [("EU27", 213.02), ("WORLD", 472.94)] {
            let g = c.grid(zone).unwrap();
            assert_eq!(g.year, 2024, "{zone}");
            assert_eq!(g.kind, FactorKind::Lifecycle, "{zone}");
            assert!((g.g_per_kwh.0 - checked).abs() < 0.5, "{zone}: {g:?}");
        }
        // Embodied figures from Boavizta's model as run (boaviztapi 2.5.0), the two-socket
        // servers, and the GPU cards the issue names.
        for (id, kg) in [
            ("nvidia-h100-boavizta", 575.0),
            ("nvidia-h200-boavizta", 1067.0),
            ("nvidia-a100-sxm4-80gb-boavizta", 567.7),
            ("nvidia-a100-pcie-80gb-boavizta", 569.4),
            ("nvidia-a100-pcie-40gb-boavizta", 321.6),
            ("nvidia-l40s-boavizta", 277.1),
            ("nvidia-l4-boavizta", 123.5),
            ("server-2s-2u-boavizta", 1200.0),
            ("server-2s-generic-boavizta", 900.0),
            ("server-2s-1u-ccf", 1433.0),
        ] {
            let e = c.embodied(id).unwrap_or_else(|| panic!("{id}"));
            assert!((e.kgco2e.0 - kg).abs() < 0.5, "{id}: {}", e.kgco2e.0);
        }
        for id in [
            "nvidia-a100-sxm4-80gb-boavizta",
            "nvidia-l40s-boavizta",
            "nvidia-l4-boavizta",
        ] {
            assert_eq!(c.embodied(id).unwrap().lifetime_years, 3.0, "{id}");
        }
    }

    #[test]
    fn an_organisation_can_prefer_ademes_french_factor() {
        let c = built_in();
        assert!(c.grid("FR").unwrap().source.contains("Ember"));
        let ademe = built_in().with_grid_choice("ademe").unwrap();
        let fr = ademe.grid("FR").unwrap();
        assert!(fr.source.contains("ADEME Base Empreinte"), "{fr:?}");
        assert_eq!(fr.kind, FactorKind::Lifecycle);
        // Zones without an ADEME factor keep their default.
        assert!(ademe.grid("DE").unwrap().source.contains("Ember"));
        let err = built_in().with_grid_choice("nope").unwrap_err();
        assert!(err.contains("ademe") && err.contains("ember"), "{err}");
    }

    #[test]
    fn zone_and_source_pairs_are_unique() {
        let c = built_in();
        let mut pairs: Vec<(&str, &str)> = c
            .grid_factors()
            .iter()
            .map(|g| (g.zone.as_str(), g.source.as_str()))
            .collect();
        let n = pairs.len();
        pairs.sort_unstable();
        pairs.dedup();
        assert_eq!(pairs.len(), n);
    }

    #[test]
    fn the_zones_the_issue_names_are_all_there() {
        let c = built_in();
        for zone in [
            "FR", "DE", "PL", "ES", "IT", "GB", "SE", "NO", "US", "CN", "IN", "EU27", "WORLD",
        ] {
            assert!(c.grid(zone).is_some(), "{zone} missing");
        }
        for kind in [
            FacilityKind::Hyperscale,
            FacilityKind::Colocation,
            FacilityKind::EdgeOrServerRoom,
            FacilityKind::GlobalAverage,
        ] {
            assert!(c.pue(kind).is_some(), "{kind:?} missing");
        }
    }

    #[test]
    fn france_defaults_to_the_lifecycle_factor_and_keeps_the_others() {
        let c = built_in();
        let fr = c.grid("fr").unwrap();
        assert_eq!(fr.g_per_kwh, GramsPerKwh(56.0));
        assert_eq!(fr.kind, FactorKind::Lifecycle);
        let all: Vec<f64> = c.grid_all("FR").iter().map(|g| g.g_per_kwh.0).collect();
        assert_eq!(all, vec![56.0, 44.2, 58.0, 21.7]);
        let rte = c.grid_all("FR")[3];
        assert_eq!(rte.kind, FactorKind::Direct);
    }

    #[test]
    fn without_a_default_mark_the_most_recent_year_wins() {
        let c = built_in();
        // Two Uptime figures, 2024 marked default; an organisation file without marks:
        let c2 = Coefficients::from_toml_str(
            r#"
            [[grid]]
            zone = "XK"
            name_fr = "Test"
            name_en = "Test"
            g_per_kwh = 100.0
            year = 2020
            kind = "direct"
            source = "A"
            [[grid]]
            zone = "XK"
            name_fr = "Test"
            name_en = "Test"
            g_per_kwh = 90.0
            year = 2023
            kind = "direct"
            source = "B"
            "#,
        )
        .unwrap();
        assert_eq!(c2.grid("XK").unwrap().g_per_kwh, GramsPerKwh(90.0));
        assert_eq!(c.pue(FacilityKind::GlobalAverage).unwrap().pue, 1.56);
    }

    #[test]
    fn an_organisations_figures_win_and_are_not_flagged_as_defaults() {
        let c = Coefficients::from_toml_str(
            r#"
            [[grid]]
            zone = "FR"
            name_fr = "France"
            name_en = "France"
            g_per_kwh = 52.0
            year = 2025
            kind = "lifecycle"
            source = "ADEME, Base Empreinte, mix moyen consommation"

            [[pue]]
            kind = "edge_or_server_room"
            pue = 1.8
            year = 2025
            source = "Mairie, relevé du compteur de la salle serveur"

            [[embodied]]
            id = "nvidia-h100"
            name = "H100, our supplier's declaration"
            kind = "gpu"
            kgco2e = 200.0
            lifetime_years = 5.0
            year = 2025
            source = "Supplier"
            "#,
        )
        .unwrap();
        let fr = c.grid("FR").unwrap();
        assert_eq!(fr.g_per_kwh, GramsPerKwh(52.0));
        assert!(!fr.is_default);
        assert_eq!(c.grid_all("FR").len(), 5);
        assert!(c.grid("DE").unwrap().is_default);
        let pue = c.pue(FacilityKind::EdgeOrServerRoom).unwrap();
        assert_eq!((pue.pue, pue.is_default), (1.8, false));
        let h100 = c.embodied("nvidia-h100").unwrap();
        assert_eq!((h100.kgco2e, h100.is_default), (KgCo2e(200.0), false));
        assert_eq!(c.embodied_all().len(), built_in().embodied_all().len());
    }

    #[test]
    fn bad_organisation_files_are_refused_with_every_problem() {
        let cases: &[(&str, &[&str])] = &[
            (
                "[[grid]]\nzone = \"FR\"\nis_default = false",
                &["is_default"],
            ),
            ("[[nonsense]]\nx = 1", &["nonsense"]),
            (
                r#"[[grid]]
                zone = "fr"
                name_fr = "France"
                name_en = "France"
                g_per_kwh = -3.0
                year = 1850
                kind = "lifecycle"
                source = " ""#,
                &[
                    "upper-case",
                    "g_per_kwh -3",
                    "year 1850",
                    "`source` is empty",
                ],
            ),
            (
                r#"[[embodied]]
                id = "x"
                name = "x"
                kind = "gpu"
                kgco2e = 0.0
                lifetime_years = 0.0
                year = 2024
                source = "s""#,
                &["kgco2e 0 is not positive", "lifetime_years 0"],
            ),
        ];
        for (text, expected) in cases {
            let message = Coefficients::from_toml_str(text).unwrap_err().to_string();
            assert!(message.starts_with(ORGANISATION), "{message}");
            for e in *expected {
                assert!(message.contains(e), "{message:?} should mention {e:?}");
            }
        }
    }

    #[test]
    fn amortisation_follows_the_lifetime() {
        let c = built_in();
        let h100 = c.embodied("nvidia-h100").unwrap();
        // One year of a 3-year, 164 kg card: a third.
        let one_year_s = 8760.0 * 3600.0;
        let share = h100.amortised_kgco2e(one_year_s).0;
        assert!((share - 164.0 / 3.0).abs() < 1e-9);
        assert_eq!(
            c.embodied("nvidia-h100-boavizta").unwrap().kgco2e,
            KgCo2e(575.0)
        );
        assert_eq!(
            c.embodied("gpu-server-8gpu-base").unwrap().kind,
            HardwareKind::Server
        );
    }
}
