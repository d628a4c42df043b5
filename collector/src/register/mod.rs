//! The register of the organisation's AI uses (`register.toml`): for each use, who owns
//! it (department, service, accountable role), what it is for (French and English),
//! which models it runs, where (on a site, or at an external provider), its status and
//! dates, its EU AI Act risk category, the kind of data it processes, the decision that
//! approved it, and the measured projects it spans.
//!
//! The file is parsed, then validated in one pass that reports every problem at once
//! (`problems.rs`), like the collector's configuration. A valid file becomes a
//! [`Register`]: typed uses and the map from project to use.
//!
//! Architecture invariant: a project belongs to at most one use (validation refuses a
//! project claimed twice), so grouping the footprint by use or by department is a
//! partition of the projects: the groups add up to the project sums exactly. A project
//! with energy and no use is an *undeclared use* ("usage non déclaré").

pub mod api;
pub mod external;
mod problems;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use problems::RegisterProblem;

/// What an undeclared project is called, French first.
pub const UNDECLARED_FR: &str = "usage non déclaré";
pub const UNDECLARED_EN: &str = "undeclared use";

/// A text in both languages the product speaks.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Bilingual {
    pub fr: String,
    pub en: String,
}

impl Bilingual {
    pub fn get(&self, lang: &str) -> &str {
        if lang == "en" { &self.en } else { &self.fr }
    }
}

/// `register.toml` as written.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegisterFile {
    #[serde(rename = "use")]
    pub uses: Vec<RawUse>,
}

/// One use as written: enumerations and dates are text here, checked by validation so
/// that every problem of the file is reported at once.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawUse {
    /// Stable identifier: lowercase letters, digits, `-` and `_`.
    pub id: String,
    pub name: Bilingual,
    pub purpose: Bilingual,
    pub department: String,
    pub service: String,
    /// The role accountable for the use (a function, not a person's name).
    pub accountable: String,
    pub models: Vec<String>,
    /// `pilot`, `production` or `retired`.
    pub status: String,
    /// `YYYY-MM-DD` dates of the status changes.
    pub pilot_from: Option<String>,
    pub production_from: Option<String>,
    pub retired_on: Option<String>,
    /// EU AI Act risk category: `minimal`, `limited`, `high` (or `unacceptable`, only
    /// for a retired use: such practices are prohibited).
    pub risk: String,
    /// Kinds of data processed: `personal`, `sensitive`, `public`.
    pub data: Vec<String>,
    /// The decision that approved the use (deliberation, order, committee minutes).
    pub decision: String,
    pub hosting: RawHosting,
    /// Measured projects (the agents' project labels) of the use.
    pub projects: Vec<String>,
    /// Declared monthly volumes of an external use.
    #[serde(rename = "volume")]
    pub volumes: Vec<RawVolume>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHosting {
    /// `on_site` or `external`.
    pub kind: String,
    /// On site: the collector's site (`[[site]] name`, or the default site).
    pub site: Option<String>,
    /// External: the provider and its service.
    pub provider: Option<String>,
    pub service: Option<String>,
}

/// A month of an external use's volume: typed by hand, or read from a CSV export of the
/// provider's usage (`csv`, relative to the register file).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawVolume {
    /// `YYYY-MM`; for a CSV, the month its rows are summed over.
    pub month: String,
    /// The per-token factor to apply (`collector/data/external_factors.toml`).
    pub factor: String,
    pub requests: Option<u64>,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub csv: Option<PathBuf>,
    /// Where the figure comes from (an invoice, the provider's console).
    pub source: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pilot,
    Production,
    Retired,
}

/// EU AI Act (Regulation 2024/1689) risk categories.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Risk {
    Minimal,
    Limited,
    High,
    Unacceptable,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataKind {
    Personal,
    Sensitive,
    Public,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Hosting {
    OnSite {
        site: String,
    },
    External {
        provider: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        service: Option<String>,
    },
}

/// A validated use.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Use {
    pub id: String,
    pub name: Bilingual,
    pub purpose: Bilingual,
    pub department: String,
    pub service: String,
    pub accountable: String,
    pub models: Vec<String>,
    pub status: Status,
    pub pilot_from: Option<jiff::civil::Date>,
    pub production_from: Option<jiff::civil::Date>,
    pub retired_on: Option<jiff::civil::Date>,
    pub risk: Risk,
    pub data: Vec<DataKind>,
    pub decision: String,
    pub hosting: Hosting,
    pub projects: Vec<String>,
    pub volumes: Vec<Volume>,
}

/// A validated month of declared external volume.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Volume {
    /// `YYYY-MM`.
    pub month: String,
    pub factor: String,
    pub requests: Option<u64>,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    /// `declared` or the CSV file it was read from.
    pub origin: String,
    pub source: Option<String>,
}

/// The register: validated uses, and which use each project belongs to.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Register {
    pub uses: Vec<Use>,
    /// Where it was read from (`None`: no register configured).
    pub path: Option<PathBuf>,
    by_project: BTreeMap<String, usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("cannot read the register {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the register {path} is not valid TOML for this version: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("the register {path} has {} problem{}:\n{}", .problems.len(), if .problems.len() == 1 { "" } else { "s" }, .problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        path: PathBuf,
        problems: Vec<RegisterProblem>,
    },
}

/// What validation checks the register against: the collector's sites, when known.
#[derive(Clone, Debug, Default)]
pub struct Context {
    /// Site names of the collector's configuration (`None`: not checked).
    pub sites: Option<Vec<String>>,
}

impl Context {
    pub fn of(config: &crate::config::CollectorConfig) -> Context {
        let mut sites: Vec<String> = config.sites.iter().map(|s| s.name.clone()).collect();
        sites.push(config.default_site.name.clone());
        Context { sites: Some(sites) }
    }
}

impl Register {
    /// No register: every project is undeclared.
    pub fn empty() -> Register {
        Register::default()
    }

    /// Reads and validates `path`.
    pub fn load(path: &Path, cx: &Context) -> Result<Register, RegisterError> {
        let text = std::fs::read_to_string(path).map_err(|source| RegisterError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let file: RegisterFile = toml::from_str(&text).map_err(|e| RegisterError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut register =
            problems::validate(&file, cx, base).map_err(|problems| RegisterError::Invalid {
                path: path.to_path_buf(),
                problems,
            })?;
        register.path = Some(path.to_path_buf());
        Ok(register)
    }

    /// Validates a register given as text (CSV volumes relative to `base`).
    pub fn from_toml(text: &str, cx: &Context, base: &Path) -> Result<Register, RegisterError> {
        let file: RegisterFile = toml::from_str(text).map_err(|e| RegisterError::Parse {
            path: PathBuf::from("register.toml"),
            message: e.to_string(),
        })?;
        problems::validate(&file, cx, base).map_err(|problems| RegisterError::Invalid {
            path: PathBuf::from("register.toml"),
            problems,
        })
    }

    fn new(uses: Vec<Use>) -> Register {
        let mut by_project = BTreeMap::new();
        for (i, u) in uses.iter().enumerate() {
            for p in &u.projects {
                by_project.insert(p.clone(), i);
            }
        }
        Register {
            uses,
            path: None,
            by_project,
        }
    }

    /// The use a measured project belongs to.
    pub fn use_of(&self, project: &str) -> Option<&Use> {
        self.by_project.get(project).and_then(|&i| self.uses.get(i))
    }

    pub fn get(&self, id: &str) -> Option<&Use> {
        self.uses.iter().find(|u| u.id == id)
    }

    /// The departments, sorted, each once.
    pub fn departments(&self) -> Vec<&str> {
        let mut d: Vec<&str> = self.uses.iter().map(|u| u.department.as_str()).collect();
        d.sort_unstable();
        d.dedup();
        d
    }
}

/// The register in use, replaced whole when it is reloaded (SIGHUP).
#[derive(Debug, Default)]
pub struct Live {
    current: std::sync::RwLock<std::sync::Arc<Register>>,
}

impl Live {
    pub fn new(register: Register) -> Live {
        Live {
            current: std::sync::RwLock::new(std::sync::Arc::new(register)),
        }
    }

    /// Loads the configured register (`register_file`), or none.
    pub fn open(config: &crate::config::CollectorConfig) -> Result<Live, RegisterError> {
        Ok(Live::new(load_configured(config)?))
    }

    pub fn get(&self) -> std::sync::Arc<Register> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn replace(&self, register: Register) {
        match self.current.write() {
            Ok(mut g) => *g = std::sync::Arc::new(register),
            Err(poisoned) => *poisoned.into_inner() = std::sync::Arc::new(register),
        }
    }

    /// Reads the register again on every SIGHUP; a file with problems is refused (the
    /// previous register stays) and the problems are logged.
    pub async fn reload_on_sighup(
        self: std::sync::Arc<Self>,
        config: std::sync::Arc<crate::config::CollectorConfig>,
    ) {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP: the register is not reloaded");
            return;
        };
        while hup.recv().await.is_some() {
            match load_configured(&config) {
                Ok(r) => {
                    tracing::info!(uses = r.uses.len(), "register reloaded");
                    self.replace(r);
                }
                Err(e) => {
                    tracing::error!(error = %e, "the register was not reloaded; the previous one stays");
                }
            }
        }
    }
}

/// The register named by `register_file`, or an empty one.
pub fn load_configured(config: &crate::config::CollectorConfig) -> Result<Register, RegisterError> {
    match &config.register_file {
        Some(path) => Register::load(path, &Context::of(config)),
        None => Ok(Register::empty()),
    }
}

#[cfg(test)]
mod tests;
