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
}

/// Hours in a year (365.25 days), to amortise over lifetimes in years.
pub const HOURS_PER_YEAR: f64 = 8_766.0;

/// Host plans from the configuration and the defaults, made once per host.
pub struct Planner {
    config: Arc<CollectorConfig>,
    defaults: Arc<dyn Defaults>,
    cache: RwLock<HashMap<String, Arc<HostPlan>>>,
}

impl Planner {
    pub fn new(config: Arc<CollectorConfig>, defaults: Arc<dyn Defaults>) -> Planner {
        Planner {
            config,
            defaults,
            cache: RwLock::new(HashMap::new()),
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

    /// The plan of `host`.
    pub fn host(&self, host: &str) -> Arc<HostPlan> {
        if let Ok(cache) = self.cache.read() {
            if let Some(p) = cache.get(host) {
                return p.clone();
            }
        }
        let plan = Arc::new(self.make(host));
        if let Ok(mut cache) = self.cache.write() {
            cache.insert(host.to_string(), plan.clone());
        }
        plan
    }

    fn make(&self, host: &str) -> HostPlan {
        let site = self.config.site_of(host);
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
        let market = site.market.map(|(value, source)| Coefficient {
            kind: CoefficientKind::MarketFactor,
            subject: site.name.to_string(),
            value,
            unit: "gCO2e/kWh",
            source: source.to_string(),
            year: None,
            is_default: false,
            detail: String::new(),
        });
        HostPlan {
            site: site.name.to_string(),
            zone: site.zone.to_string(),
            pue,
            grid_default,
            market,
            embodied: self.embodied(host),
        }
    }

    fn embodied(&self, host: &str) -> Option<EmbodiedRate> {
        let item = self.config.inventory_of(host)?;
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
