//! Which coefficients turn a host's energy into emissions: the organisation's own
//! (configuration) first, the built-in defaults (`collector/data/carbon.toml`) otherwise,
//! flagged as defaults.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::config::{CollectorConfig, ConfigProblem};
use crate::footprint::{Coefficient, CoefficientKind, EmbodiedRate, HostPlan};

/// A built-in manufacturing footprint.
#[derive(Clone, Debug, PartialEq)]
pub struct EmbodiedFigure {
    pub kgco2e: f64,
    pub lifetime_years: f64,
    pub source: String,
    pub year: Option<i32>,
}

/// The built-in coefficients, as the planner needs them.
pub trait Defaults: Send + Sync {
    /// The zone's default yearly grid intensity.
    fn grid(&self, zone: &str) -> Option<Coefficient>;
    /// The PUE used when a site gives none.
    fn pue(&self) -> Coefficient;
    /// A piece of hardware by its id.
    fn embodied(&self, id: &str) -> Option<EmbodiedFigure>;
    /// The zone's residual mix: the market-based factor where the site has no contract.
    fn residual_mix(&self, _zone: &str) -> Option<Coefficient> {
        None
    }
}

/// Hours in a year of use (365 days, as Boavizta counts), to amortise over lifetimes.
pub const HOURS_PER_YEAR: f64 = 8_760.0;

/// Host plans from the configuration and the defaults, made once per host and period
/// of the configuration history (`crate::history`).
pub struct Planner {
    config: Arc<CollectorConfig>,
    defaults: Arc<dyn Defaults>,
    /// The configurations in force, oldest first: `(from_s, config)`; empty: the
    /// current configuration at every hour.
    history: Vec<(i64, Arc<CollectorConfig>)>,
    cache: RwLock<HashMap<(usize, String), Arc<HostPlan>>>,
}

impl Planner {
    pub fn new(config: Arc<CollectorConfig>, defaults: Arc<dyn Defaults>) -> Planner {
        Planner::with_history(config, defaults, Vec::new())
    }

    /// A planner that gives each hour the plan in force then.
    pub fn with_history(
        config: Arc<CollectorConfig>,
        defaults: Arc<dyn Defaults>,
        history: Vec<(i64, Arc<CollectorConfig>)>,
    ) -> Planner {
        Planner {
            config,
            defaults,
            history,
            cache: RwLock::new(HashMap::new()),
        }
    }

    /// The configurations in force, oldest first (`from_s`, configuration).
    pub fn history(&self) -> &[(i64, Arc<CollectorConfig>)] {
        &self.history
    }

    /// The plan of `host` in force at the hour of `at_s` (Unix second).
    pub fn host_at(&self, host: &str, at_s: i64) -> Arc<HostPlan> {
        let i = self.history.iter().rposition(|(from, _)| *from <= at_s);
        match i.or(if self.history.is_empty() {
            None
        } else {
            Some(0)
        }) {
            Some(i) => self.cached(i + 1, host, &self.history[i].1),
            None => self.host(host),
        }
    }

    pub fn config(&self) -> &CollectorConfig {
        &self.config
    }

    pub fn defaults(&self) -> &dyn Defaults {
        self.defaults.as_ref()
    }

    /// Problems of the configuration that only the defaults can tell: unknown zones
    /// and hardware ids.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        let c = &self.config;
        let known = |zone: &str| self.defaults.grid(zone).is_some();
        if !known(&c.default_site.zone) {
            out.push(ConfigProblem {
                key: "default_site.zone".into(),
                message: format!(
                    "{:?} is not a zone of the built-in table (see `empreinte carbon factors`)",
                    c.default_site.zone
                ),
            });
        }
        for (i, s) in c.sites.iter().enumerate() {
            if !known(&s.zone) {
                out.push(ConfigProblem {
                    key: format!("site[{i}].zone"),
                    message: format!(
                        "{:?} is not a zone of the built-in table (see `empreinte carbon factors`)",
                        s.zone
                    ),
                });
            }
        }
        for (i, item) in c.inventory.iter().enumerate() {
            if let Some(id) = &item.server {
                if self.defaults.embodied(id).is_none() {
                    out.push(ConfigProblem {
                        key: format!("inventory[{i}].server"),
                        message: format!(
                            "{id:?} is not a built-in hardware id (see `empreinte carbon factors`)"
                        ),
                    });
                }
            }
            for (j, g) in item.gpus.iter().enumerate() {
                if let Some(id) = &g.model {
                    if self.defaults.embodied(id).is_none() {
                        out.push(ConfigProblem {
                            key: format!("inventory[{i}].gpus[{j}].model"),
                            message: format!("{id:?} is not a built-in hardware id (see `empreinte carbon factors`)"),
                        });
                    }
                }
            }
        }
        out
    }

    /// The plan of `host` under the current configuration.
    pub fn host(&self, host: &str) -> Arc<HostPlan> {
        let config = self.config.clone();
        self.cached(0, host, &config)
    }

    fn cached(&self, period: usize, host: &str, config: &CollectorConfig) -> Arc<HostPlan> {
        let key = (period, host.to_string());
        if let Ok(cache) = self.cache.read() {
            if let Some(p) = cache.get(&key) {
                return p.clone();
            }
        }
        let plan = Arc::new(self.make(config, host));
        if let Ok(mut cache) = self.cache.write() {
            // Bounded by hosts × periods; a fleet that renames hosts starts afresh.
            if cache.len() > 100_000 {
                cache.clear();
            }
            cache.insert(key, plan.clone());
        }
        plan
    }

    fn make(&self, config: &CollectorConfig, host: &str) -> HostPlan {
        let site = config.site_of(host);
        let pue = match site.pue {
            Some((value, source)) => Coefficient {
                kind: CoefficientKind::Pue,
                subject: site.name.to_string(),
                value,
                unit: "",
                source: source.unwrap_or("organisation's configuration").to_string(),
                year: None,
                is_default: false,
                detail: String::new(),
            },
            None => Coefficient {
                subject: site.name.to_string(),
                ..self.defaults.pue()
            },
        };
        let grid_default = self
            .defaults
            .grid(site.zone)
            .unwrap_or_else(|| Coefficient {
                // Unknown zones are refused at startup; this keeps the daemon up regardless.
                kind: CoefficientKind::GridIntensity,
                subject: site.zone.to_string(),
                value: 0.0,
                unit: "gCO2e/kWh",
                source: "unknown zone: no factor".into(),
                year: None,
                is_default: true,
                detail: String::new(),
            });
        let market = match site.market {
            Some((value, source)) => Some(Coefficient {
                kind: CoefficientKind::MarketFactor,
                subject: site.name.to_string(),
                value,
                unit: "gCO2e/kWh",
                source: source.to_string(),
                year: None,
                is_default: false,
                detail: String::new(),
            }),
            // No contract: the zone's residual mix where one is known (GHG Protocol scope
            // 2), else the location-based figure stands in.
            None => self.defaults.residual_mix(site.zone).map(|c| Coefficient {
                subject: site.name.to_string(),
                ..c
            }),
        };
        HostPlan {
            site: site.name.to_string(),
            zone: site.zone.to_string(),
            pue,
            grid_default,
            market,
            embodied: self.embodied(config, host),
            tariff: crate::cost::tariffs(config)
                .into_iter()
                .find(|t| t.site == site.name)
                .map(std::sync::Arc::new),
            hardware: self.hardware(config, host),
        }
    }

    fn hardware(
        &self,
        config: &CollectorConfig,
        host: &str,
    ) -> Option<std::sync::Arc<crate::cost::hardware::HardwareRate>> {
        let tz = jiff::tz::TimeZone::get(&config.organisation.timezone).ok()?;
        let item = config.inventory_of(host)?;
        crate::cost::hardware::rate_of(host, item, &tz).map(std::sync::Arc::new)
    }

    fn embodied(&self, config: &CollectorConfig, host: &str) -> Option<EmbodiedRate> {
        let item = config.inventory_of(host)?;
        let mut parts = Vec::new();
        let mut is_default = false;
        let mut server_g_per_hour = 0.0;
        let server = match (&item.server, item.server_kgco2e) {
            (Some(id), _) => self.defaults.embodied(id).map(|f| (id.clone(), f, true)),
            (None, Some(kg)) => Some((
                "server".to_string(),
                EmbodiedFigure {
                    kgco2e: kg,
                    lifetime_years: item.server_lifetime_years.unwrap_or(4.0),
                    source: item.server_source.clone().unwrap_or_default(),
                    year: None,
                },
                false,
            )),
            (None, None) => None,
        };
        if let Some((name, f, default)) = server {
            server_g_per_hour = f.kgco2e * 1000.0 / (f.lifetime_years * HOURS_PER_YEAR);
            is_default |= default;
            parts.push(format!(
                "{name}: {} kgCO2e over {} years ({}{})",
                f.kgco2e,
                f.lifetime_years,
                f.source,
                f.year.map(|y| format!(", {y}")).unwrap_or_default()
            ));
        }
        let mut gpu_g_per_hour = 0.0;
        for g in &item.gpus {
            let figure = match (&g.model, g.kgco2e) {
                (Some(id), _) => self.defaults.embodied(id).map(|f| (id.clone(), f, true)),
                (None, Some(kg)) => Some((
                    "gpu".to_string(),
                    EmbodiedFigure {
                        kgco2e: kg,
                        lifetime_years: g.lifetime_years.unwrap_or(4.0),
                        source: g.source.clone().unwrap_or_default(),
                        year: None,
                    },
                    false,
                )),
                (None, None) => None,
            };
            if let Some((name, f, default)) = figure {
                gpu_g_per_hour +=
                    f64::from(g.count) * f.kgco2e * 1000.0 / (f.lifetime_years * HOURS_PER_YEAR);
                is_default |= default;
                parts.push(format!(
                    "{} × {name}: {} kgCO2e over {} years ({}{})",
                    g.count,
                    f.kgco2e,
                    f.lifetime_years,
                    f.source,
                    f.year.map(|y| format!(", {y}")).unwrap_or_default()
                ));
            }
        }
        if parts.is_empty() {
            return None;
        }
        Some(EmbodiedRate {
            server_ug_per_hour: server_g_per_hour * 1e6,
            gpu_ug_per_hour: gpu_g_per_hour * 1e6,
            coefficient: Coefficient {
                kind: CoefficientKind::Embodied,
                subject: host.to_string(),
                value: server_g_per_hour + gpu_g_per_hour,
                unit: "gCO2e/h",
                source: if is_default {
                    "built-in hardware figures (see detail)".into()
                } else {
                    "organisation's inventory".into()
                },
                year: None,
                is_default,
                detail: parts.join("; "),
            },
        })
    }
}

impl crate::history::Replan for Planner {
    fn plan_at(&self, host: &str, hour_s: i64) -> Arc<HostPlan> {
        self.host_at(host, hour_s)
    }
}

/// The built-in table (with an organisation's own file merged over it) as defaults.
impl Defaults for crate::carbon::Coefficients {
    fn grid(&self, zone: &str) -> Option<Coefficient> {
        let g = crate::carbon::Coefficients::grid(self, zone)?;
        Some(Coefficient {
            kind: CoefficientKind::GridIntensity,
            subject: g.zone.clone(),
            value: g.g_per_kwh.0,
            unit: "gCO2e/kWh",
            source: g.source.clone(),
            year: Some(i32::from(g.year)),
            is_default: g.is_default,
            detail: format!("{} factor", g.kind.as_str()),
        })
    }

    fn pue(&self) -> Coefficient {
        let chosen =
            crate::carbon::Coefficients::pue(self, crate::carbon::FacilityKind::GlobalAverage);
        match chosen {
            Some(p) => Coefficient {
                kind: CoefficientKind::Pue,
                subject: String::new(),
                value: p.pue,
                unit: "",
                source: p.source.clone(),
                year: Some(i32::from(p.year)),
                is_default: p.is_default,
                detail: "global average: the site gives no PUE of its own".into(),
            },
            None => Coefficient {
                kind: CoefficientKind::Pue,
                subject: String::new(),
                value: 1.0,
                unit: "",
                source: "no PUE known: IT energy only".into(),
                year: None,
                is_default: true,
                detail: String::new(),
            },
        }
    }

    fn residual_mix(&self, zone: &str) -> Option<Coefficient> {
        let r = crate::carbon::Coefficients::residual_mix(self, zone)?;
        Some(Coefficient {
            kind: CoefficientKind::MarketFactor,
            subject: r.zone.clone(),
            value: r.g_per_kwh.0,
            unit: "gCO2e/kWh",
            source: r.source.clone(),
            year: Some(i32::from(r.year)),
            is_default: r.is_default,
            detail: format!(
                "residual mix of {} (no contract configured for the site; direct CO2 only)",
                r.zone
            ),
        })
    }

    fn embodied(&self, id: &str) -> Option<EmbodiedFigure> {
        let e = crate::carbon::Coefficients::embodied(self, id)?;
        Some(EmbodiedFigure {
            kgco2e: e.kgco2e.0,
            lifetime_years: e.lifetime_years,
            source: e.source.clone(),
            year: Some(i32::from(e.year)),
        })
    }
}

/// The coefficients for `config`: the built-in table, with the organisation's
/// `coefficients_file` merged over it.
pub fn load_coefficients(config: &CollectorConfig) -> anyhow::Result<crate::carbon::Coefficients> {
    let coefficients = load_table(config)?;
    match &config.organisation.grid_factor {
        Some(choice) => coefficients
            .with_grid_choice(choice)
            .map_err(|e| anyhow::anyhow!("organisation.grid_factor: {e}")),
        None => Ok(coefficients),
    }
}

fn load_table(config: &CollectorConfig) -> anyhow::Result<crate::carbon::Coefficients> {
    use anyhow::Context;
    match &config.coefficients_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read coefficients_file {}", path.display()))?;
            crate::carbon::Coefficients::from_toml_str(&text)
                .with_context(|| format!("in coefficients_file {}", path.display()))
        }
        None => {
            crate::carbon::Coefficients::built_in().context("the built-in carbon.toml is invalid")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_defaults_give_france_and_flag_themselves() {
        let c = crate::carbon::Coefficients::built_in().unwrap();
        let fr = Defaults::grid(&c, "FR").unwrap();
        assert!(
            fr.is_default && fr.value > 10.0 && fr.year.is_some(),
            "{fr:?}"
        );
        let pue = Defaults::pue(&c);
        assert!(pue.is_default && pue.value > 1.0, "{pue:?}");
        let config = CollectorConfig::from_toml(
            "[[inventory]]\nhosts=['gpu-*']\nserver='gpu-server-8gpu-base'\ngpus=[{model='nvidia-h100', count=8}]\n",
        )
        .unwrap();
        let planner = Planner::new(Arc::new(config), Arc::new(c));
        assert_eq!(planner.problems(), vec![]);
        let e = planner.host("gpu-01").embodied.clone().unwrap();
        // 5,700 kg over 3 years + 8 × 164 kg over 3 years, per hour.
        let expected = (5_700.0 + 8.0 * 164.0) * 1000.0 / (3.0 * HOURS_PER_YEAR);
        assert!((e.coefficient.value - expected).abs() < 1e-9, "{e:?}");
        assert!(e.coefficient.is_default);
        assert!(planner.host("web-01").embodied.is_none());
    }

    #[test]
    fn unknown_zones_and_hardware_are_named() {
        let c = crate::carbon::Coefficients::built_in().unwrap();
        let config = CollectorConfig::from_toml(
            "[[site]]\nname='x'\nzone='ATLANTIS'\nhosts=['a']\n[[inventory]]\nhosts=['a']\ngpus=[{model='nvidia-h999', count=1}]\n",
        )
        .unwrap();
        let planner = Planner::new(Arc::new(config), Arc::new(c));
        let keys: Vec<String> = planner.problems().into_iter().map(|p| p.key).collect();
        assert_eq!(keys, ["site[0].zone", "inventory[0].gpus[0].model"]);
    }

    #[test]
    fn an_organisation_chooses_ademes_grid_factor_in_its_config() {
        let config = CollectorConfig::from_toml("[organisation]\ngrid_factor = 'ademe'\n").unwrap();
        let c = load_coefficients(&config).unwrap();
        let fr = Defaults::grid(&c, "FR").unwrap();
        assert!(fr.source.contains("ADEME Base Empreinte"), "{fr:?}");
        assert!((fr.value - 58.0).abs() < 1e-9);
        let bad = CollectorConfig::from_toml("[organisation]\ngrid_factor = 'acme'\n").unwrap();
        let err = load_coefficients(&bad).unwrap_err().to_string();
        assert!(
            err.contains("organisation.grid_factor") && err.contains("ademe"),
            "{err}"
        );
    }
}
