//! The collector's configuration: a TOML file, then command-line overrides, then one
//! validation pass that reports every problem at once.
//!
//! The organisation's own coefficients live here (sites with their zone and PUE, the
//! contractual factors, the hardware inventory) and override the built-in defaults of
//! `collector/data/carbon.toml`; a coefficient that is not the organisation's own is
//! flagged as a default wherever it is used.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Default address of the collector's HTTP server.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:9820";
/// Default data directory (the SQLite database and the `up` tokens live there).
pub const DEFAULT_DATA_DIR: &str = "/var/lib/empreinte";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CollectorConfig {
    /// Address of the HTTP server (ingest, API, `/metrics`).
    pub listen: SocketAddr,
    /// Where the database lives.
    pub data_dir: PathBuf,
    /// PostgreSQL instead of the embedded SQLite in `data_dir`
    /// (`postgres://USER:PASSWORD@HOST/DATABASE`), shared by several collectors; see
    /// docs/postgresql.md. Never shown with its password.
    pub database_url: Option<crate::store::pg::DatabaseUrl>,
    pub organisation: Organisation,
    pub limits: LimitsConfig,
    /// The store: hourly retention, write queue.
    pub store: crate::store::StoreConfig,
    /// Where hosts that no site lists are counted.
    pub default_site: DefaultSite,
    /// Sites: a zone for the grid intensity, a PUE, the hosts they hold.
    #[serde(rename = "site")]
    pub sites: Vec<Site>,
    /// Manufacturing footprint of hosts and GPUs.
    #[serde(rename = "inventory")]
    pub inventory: Vec<InventoryItem>,
    /// Sobriety objectives.
    #[serde(rename = "objective")]
    pub objectives: Vec<Objective>,
    /// An organisation's own coefficients file (same format as the built-in
    /// `carbon.toml`), merged over the built-in one.
    pub coefficients_file: Option<PathBuf>,
    /// HTTPS: the certificate and key the collector serves (reloaded on SIGHUP).
    pub tls: TlsConfig,
    pub metrics: MetricsConfig,
}

/// HTTPS. Both files set: the collector serves TLS only; neither: plain HTTP.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// The certificate chain, PEM, leaf first.
    pub cert_file: Option<PathBuf>,
    /// Its private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// When set, clients must present a certificate issued by one of these CAs (PEM).
    pub client_ca_file: Option<PathBuf>,
}

impl TlsConfig {
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some() && self.key_file.is_some()
    }
}

/// `/metrics`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// `false` (default): `/metrics` needs a read token, like the API that shows the same
    /// figures. `true`: anyone who reaches the port reads it.
    pub public: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Organisation {
    pub name: String,
    /// IANA time zone: months and days of the footprint follow it.
    pub timezone: String,
    /// `fr` or `en`: the language of reports and dashboards by default.
    pub language: String,
    /// The publisher whose grid factors are preferred (`ademe` for a French Bilan GES,
    /// `ember`...; `choice` in collector/data/carbon.toml); unset: each zone's default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grid_factor: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest push body accepted.
    pub max_body_bytes: usize,
    pub max_batches_per_push: usize,
    pub max_records_per_batch: usize,
    /// The most a host can draw, all components together: more is refused as an error.
    pub max_host_power_watts: f64,
    /// How far in the future a batch may end, by the collector's clock.
    #[serde(with = "humantime_serde")]
    pub max_clock_skew: Duration,
    /// The oldest data accepted.
    #[serde(with = "humantime_serde")]
    pub max_batch_age: Duration,
    /// Open connections at most (kept below the open-files limit); more wait in the
    /// kernel's accept queue.
    pub max_connections: usize,
    /// Pushes whose bodies are read and stored at the same time; more get 503.
    pub max_ingests_in_flight: usize,
    /// A request's headers must arrive within this time; it is also how long an idle
    /// connection stays open.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// A push's body must arrive within this time.
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// Chromium processes printing PDF reports at once.
    pub max_pdf_renders: usize,
    /// How long a PDF request waits for its turn before a 503.
    #[serde(with = "humantime_serde")]
    pub pdf_queue_timeout: Duration,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DefaultSite {
    pub name: String,
    pub zone: String,
    /// The facility's PUE; when absent the built-in default is used and flagged.
    pub pue: Option<f64>,
    pub pue_source: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Site {
    pub name: String,
    /// Grid zone: `FR`, `DE`, … `EU27`, `WORLD` (see `empreinte carbon factors`).
    pub zone: String,
    /// Power usage effectiveness of the facility (1.0 or more). When absent the
    /// built-in default is used and flagged as such.
    #[serde(default)]
    pub pue: Option<f64>,
    /// Where the PUE comes from (a measurement, a provider's statement), and its year.
    #[serde(default)]
    pub pue_source: Option<String>,
    /// Host names (agent ids) of the site; `*` and `?` globs allowed.
    pub hosts: Vec<String>,
    /// Market-based factor (GHG Protocol scope 2): the emission factor of the
    /// electricity contract, in gCO2e/kWh (e.g. with guarantees of origin).
    #[serde(default)]
    pub market_g_per_kwh: Option<f64>,
    /// The contract or certificate behind `market_g_per_kwh`, and its year.
    #[serde(default)]
    pub market_source: Option<String>,
}

/// A set of hosts of one kind with the manufacturing footprint of each.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InventoryItem {
    /// Host names (agent ids); globs allowed.
    pub hosts: Vec<String>,
    /// A built-in hardware id (`empreinte carbon factors`) for the server without GPUs…
    #[serde(default)]
    pub server: Option<String>,
    /// …or the organisation's own figure for it (kgCO2e), with its source.
    #[serde(default)]
    pub server_kgco2e: Option<f64>,
    #[serde(default)]
    pub server_lifetime_years: Option<f64>,
    #[serde(default)]
    pub server_source: Option<String>,
    /// GPUs in each host.
    #[serde(default)]
    pub gpus: Vec<GpuItem>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuItem {
    /// A built-in hardware id, e.g. `nvidia-h100`…
    #[serde(default)]
    pub model: Option<String>,
    /// …or the organisation's own figure (kgCO2e per card), with its source.
    #[serde(default)]
    pub kgco2e: Option<f64>,
    #[serde(default)]
    pub lifetime_years: Option<f64>,
    #[serde(default)]
    pub source: Option<String>,
    pub count: u32,
}

/// A monthly budget and/or a reduction target for a project, or for the whole
/// organisation with `project = "*"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Objective {
    pub project: String,
    #[serde(default)]
    pub monthly_energy_kwh: Option<f64>,
    #[serde(default)]
    pub monthly_co2e_kg: Option<f64>,
    /// Reduction against `baseline_month`, in percent: the month's budget becomes the
    /// baseline month's use less this share (for each kind of budget that is not set
    /// explicitly).
    #[serde(default)]
    pub reduction_percent: Option<f64>,
    /// `YYYY-MM`.
    #[serde(default)]
    pub baseline_month: Option<String>,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        CollectorConfig {
            listen: DEFAULT_LISTEN
                .parse()
                .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 9820))),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            database_url: None,
            organisation: Organisation::default(),
            limits: LimitsConfig::default(),
            store: crate::store::StoreConfig::default(),
            default_site: DefaultSite::default(),
            sites: Vec::new(),
            inventory: Vec::new(),
            objectives: Vec::new(),
            coefficients_file: None,
            tls: TlsConfig::default(),
            metrics: MetricsConfig::default(),
        }
    }
}

impl Default for Organisation {
    fn default() -> Self {
        Organisation {
            name: "Organisation".into(),
            timezone: "Europe/Paris".into(),
            language: "fr".into(),
            grid_factor: None,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let wire = empreinte_shared::wire::Limits::default();
        LimitsConfig {
            max_body_bytes: 16 * 1024 * 1024,
            max_batches_per_push: wire.max_batches_per_push,
            max_records_per_batch: wire.max_records_per_batch,
            max_host_power_watts: wire.max_host_power_watts,
            max_clock_skew: Duration::from_millis(wire.max_clock_skew_ms),
            max_batch_age: Duration::from_millis(wire.max_age_ms),
            max_connections: 512,
            max_ingests_in_flight: 4,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_pdf_renders: 1,
            pdf_queue_timeout: Duration::from_secs(60),
        }
    }
}

impl Default for DefaultSite {
    fn default() -> Self {
        DefaultSite {
            name: "default".into(),
            zone: "FR".into(),
            pue: None,
            pue_source: None,
        }
    }
}

impl LimitsConfig {
    pub fn wire(&self) -> empreinte_shared::wire::Limits {
        empreinte_shared::wire::Limits {
            max_batches_per_push: self.max_batches_per_push,
            max_records_per_batch: self.max_records_per_batch,
            max_host_power_watts: self.max_host_power_watts,
            max_batch_span_ms: empreinte_shared::wire::Limits::default().max_batch_span_ms,
            max_clock_skew_ms: u64::try_from(self.max_clock_skew.as_millis()).unwrap_or(u64::MAX),
            max_age_ms: u64::try_from(self.max_batch_age.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// One thing wrong with a configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigProblem {
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the collector configuration {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the collector configuration {path} is not valid TOML for this version: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("the collector configuration has {} problem{}:\n{}", .0.len(), if .0.len() == 1 { "" } else { "s" }, .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<ConfigProblem>),
}

/// Command-line values that replace the file's.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<crate::store::pg::DatabaseUrl>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

/// Checks that `pattern` is a usable host glob.
fn check_glob(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() {
        Err("an empty host pattern matches nothing".into())
    } else {
        Ok(())
    }
}

/// True when `name` matches the glob `pattern` (`*` any run of characters, `?` one).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    fn go(p: &[char], n: &[char]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some('*'), _) => go(&p[1..], n) || (!n.is_empty() && go(p, &n[1..])),
            (Some('?'), Some(_)) => go(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &n[1..]),
            _ => false,
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    go(&p, &n)
}

/// Parses `YYYY-MM`.
pub fn parse_month(text: &str) -> Result<(i16, i8), String> {
    let bad = || format!("{text:?} is not a month: YYYY-MM is expected, e.g. 2026-01");
    let (y, m) = text.split_once('-').ok_or_else(bad)?;
    let year: i16 = y.parse().map_err(|_| bad())?;
    let month: i8 = m.parse().map_err(|_| bad())?;
    if y.len() != 4 || m.len() != 2 || !(1..=12).contains(&month) || !(2000..=2200).contains(&year)
    {
        return Err(bad());
    }
    Ok((year, month))
}

impl CollectorConfig {
    /// Reads `path` (or the defaults when `None`), applies `overrides`, validates.
    pub fn load(
        path: Option<&Path>,
        overrides: &Overrides,
    ) -> Result<CollectorConfig, ConfigError> {
        let mut config = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                Self::from_toml(&text).map_err(|message| ConfigError::Parse {
                    path: path.to_path_buf(),
                    message,
                })?
            }
            None => CollectorConfig::default(),
        };
        if let Some(listen) = overrides.listen {
            config.listen = listen;
        }
        if let Some(dir) = &overrides.data_dir {
            config.data_dir = dir.clone();
        }
        if let Some(url) = &overrides.database_url {
            config.database_url = Some(url.clone());
        }
        if let Some(f) = &overrides.tls_cert {
            config.tls.cert_file = Some(f.clone());
        }
        if let Some(f) = &overrides.tls_key {
            config.tls.key_file = Some(f.clone());
        }
        let problems = config.problems();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    pub fn from_toml(text: &str) -> Result<CollectorConfig, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Every problem of this configuration.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        let mut problem = |key: String, message: String| out.push(ConfigProblem { key, message });
        if jiff::tz::TimeZone::get(&self.organisation.timezone).is_err() {
            problem(
                "organisation.timezone".into(),
                format!(
                    "{:?} is not a known IANA time zone (e.g. Europe/Paris, America/Cayenne, Indian/Reunion)",
                    self.organisation.timezone
                ),
            );
        }
        if !matches!(self.organisation.language.as_str(), "fr" | "en") {
            problem(
                "organisation.language".into(),
                format!(
                    "{:?}: allowed are \"fr\" and \"en\"",
                    self.organisation.language
                ),
            );
        }
        for (key, message) in self.store.problems() {
            problem(key, message);
        }
        let l = &self.limits;
        if !(1024..=1024 * 1024 * 1024).contains(&l.max_body_bytes) {
            problem(
                "limits.max_body_bytes".into(),
                format!("{} is outside 1024..=1073741824", l.max_body_bytes),
            );
        }
        if l.max_batches_per_push == 0 {
            problem(
                "limits.max_batches_per_push".into(),
                "must be at least 1".into(),
            );
        }
        if l.max_records_per_batch == 0 {
            problem(
                "limits.max_records_per_batch".into(),
                "must be at least 1".into(),
            );
        }
        if !(l.max_host_power_watts.is_finite() && l.max_host_power_watts > 0.0) {
            problem(
                "limits.max_host_power_watts".into(),
                format!(
                    "{} must be a positive number of watts",
                    l.max_host_power_watts
                ),
            );
        }
        if !(1..=1_000_000).contains(&l.max_connections) {
            problem(
                "limits.max_connections".into(),
                format!("{} is outside 1..=1000000", l.max_connections),
            );
        }
        if !(1..=1024).contains(&l.max_ingests_in_flight) {
            problem(
                "limits.max_ingests_in_flight".into(),
                format!("{} is outside 1..=1024", l.max_ingests_in_flight),
            );
        }
        if !(1..=64).contains(&l.max_pdf_renders) {
            problem(
                "limits.max_pdf_renders".into(),
                format!("{} is outside 1..=64", l.max_pdf_renders),
            );
        }
        for (key, d) in [
            ("limits.header_timeout", l.header_timeout),
            ("limits.body_timeout", l.body_timeout),
            ("limits.pdf_queue_timeout", l.pdf_queue_timeout),
        ] {
            if d.is_zero() || d > Duration::from_secs(3600) {
                problem(
                    key.into(),
                    format!(
                        "{} is outside 1ms..=1h",
                        humantime_serde::re::humantime::format_duration(d)
                    ),
                );
            }
        }
        match (&self.tls.cert_file, &self.tls.key_file) {
            (Some(_), None) => problem(
                "tls.key_file".into(),
                "a certificate needs its private key (tls.key_file or --tls-key)".into(),
            ),
            (None, Some(_)) => problem(
                "tls.cert_file".into(),
                "a private key needs its certificate (tls.cert_file or --tls-cert)".into(),
            ),
            _ => {}
        }
        if self.tls.client_ca_file.is_some() && !self.tls.enabled() {
            problem(
                "tls.client_ca_file".into(),
                "client certificates need TLS: set tls.cert_file and tls.key_file".into(),
            );
        }
        check_pue(&mut problem, "default_site.pue", self.default_site.pue);
        if self.default_site.zone.trim().is_empty() {
            problem(
                "default_site.zone".into(),
                "must name a grid zone such as FR".into(),
            );
        }
        let mut names = std::collections::BTreeSet::new();
        names.insert(self.default_site.name.clone());
        for (i, site) in self.sites.iter().enumerate() {
            let key = |k: &str| format!("site[{i}].{k}");
            if site.name.trim().is_empty() {
                problem(key("name"), "must not be empty".into());
            } else if !names.insert(site.name.clone()) {
                problem(key("name"), format!("{:?} is used by two sites", site.name));
            }
            if site.zone.trim().is_empty() {
                problem(key("zone"), "must name a grid zone such as FR".into());
            }
            check_pue(&mut problem, &key("pue"), site.pue);
            if let Some(f) = site.market_g_per_kwh {
                if !(f.is_finite() && (0.0..=2000.0).contains(&f)) {
                    problem(
                        key("market_g_per_kwh"),
                        format!("{f} is outside 0..=2000 gCO2e/kWh"),
                    );
                }
                if site
                    .market_source
                    .as_deref()
                    .is_none_or(|s| s.trim().is_empty())
                {
                    problem(
                        key("market_source"),
                        "a market-based factor needs its source (contract, certificates, year)"
                            .into(),
                    );
                }
            }
            if site.hosts.is_empty() {
                problem(
                    key("hosts"),
                    "list at least one host name or pattern".into(),
                );
            }
            for (j, h) in site.hosts.iter().enumerate() {
                if let Err(m) = check_glob(h) {
                    problem(format!("site[{i}].hosts[{j}]"), m);
                }
            }
        }
        for (i, item) in self.inventory.iter().enumerate() {
            let key = |k: &str| format!("inventory[{i}].{k}");
            if item.hosts.is_empty() {
                problem(
                    key("hosts"),
                    "list at least one host name or pattern".into(),
                );
            }
            if item.server.is_some() && item.server_kgco2e.is_some() {
                problem(
                    key("server"),
                    "give either a built-in `server` id or your own `server_kgco2e`, not both"
                        .into(),
                );
            }
            if let Some(kg) = item.server_kgco2e {
                check_positive(&mut problem, &key("server_kgco2e"), kg);
                if item.server_lifetime_years.is_none() {
                    problem(
                        key("server_lifetime_years"),
                        "needed with server_kgco2e".into(),
                    );
                }
                if item.server_source.is_none() {
                    problem(key("server_source"), "needed with server_kgco2e".into());
                }
            }
            if let Some(y) = item.server_lifetime_years {
                check_lifetime(&mut problem, &key("server_lifetime_years"), y);
            }
            for (j, g) in item.gpus.iter().enumerate() {
                let key = |k: &str| format!("inventory[{i}].gpus[{j}].{k}");
                match (&g.model, g.kgco2e) {
                    (Some(_), Some(_)) => problem(
                        key("model"),
                        "give either a built-in `model` id or your own `kgco2e`, not both".into(),
                    ),
                    (None, None) => problem(
                        key("model"),
                        "give a built-in `model` id or your own `kgco2e` with `lifetime_years` and `source`".into(),
                    ),
                    (None, Some(kg)) => {
                        check_positive(&mut problem, &key("kgco2e"), kg);
                        if g.lifetime_years.is_none() {
                            problem(key("lifetime_years"), "needed with kgco2e".into());
                        }
                        if g.source.is_none() {
                            problem(key("source"), "needed with kgco2e".into());
                        }
                    }
                    (Some(_), None) => {}
                }
                if let Some(y) = g.lifetime_years {
                    check_lifetime(&mut problem, &key("lifetime_years"), y);
                }
                if g.count == 0 {
                    problem(key("count"), "must be at least 1".into());
                }
            }
        }
        for (i, o) in self.objectives.iter().enumerate() {
            let key = |k: &str| format!("objective[{i}].{k}");
            if o.project.trim().is_empty() {
                problem(
                    key("project"),
                    "name a project, or \"*\" for the organisation".into(),
                );
            }
            if o.monthly_energy_kwh.is_none()
                && o.monthly_co2e_kg.is_none()
                && o.reduction_percent.is_none()
            {
                problem(
                    key("project"),
                    "an objective needs monthly_energy_kwh, monthly_co2e_kg or reduction_percent"
                        .into(),
                );
            }
            if let Some(v) = o.monthly_energy_kwh {
                check_positive(&mut problem, &key("monthly_energy_kwh"), v);
            }
            if let Some(v) = o.monthly_co2e_kg {
                check_positive(&mut problem, &key("monthly_co2e_kg"), v);
            }
            match (o.reduction_percent, &o.baseline_month) {
                (Some(p), Some(m)) => {
                    if !(p.is_finite() && (0.0..100.0).contains(&p)) {
                        problem(key("reduction_percent"), format!("{p} is outside 0..100"));
                    }
                    if let Err(e) = parse_month(m) {
                        problem(key("baseline_month"), e);
                    }
                }
                (Some(_), None) => problem(
                    key("baseline_month"),
                    "a reduction target needs the baseline month it is measured against (YYYY-MM)"
                        .into(),
                ),
                (None, Some(_)) => problem(
                    key("reduction_percent"),
                    "a baseline month is only used with reduction_percent".into(),
                ),
                (None, None) => {}
            }
        }
        out
    }

    /// The site a host belongs to: the first site listing it, else the default site.
    pub fn site_of(&self, host: &str) -> SiteRef<'_> {
        for site in &self.sites {
            if site.hosts.iter().any(|p| glob_match(p, host)) {
                return SiteRef {
                    name: &site.name,
                    zone: &site.zone,
                    pue: site.pue.map(|v| (v, site.pue_source.as_deref())),
                    market: site
                        .market_g_per_kwh
                        .map(|v| (v, site.market_source.as_deref().unwrap_or_default())),
                };
            }
        }
        let d = &self.default_site;
        SiteRef {
            name: &d.name,
            zone: &d.zone,
            pue: d.pue.map(|v| (v, d.pue_source.as_deref())),
            market: None,
        }
    }

    /// The inventory item describing a host, if any.
    pub fn inventory_of(&self, host: &str) -> Option<&InventoryItem> {
        self.inventory
            .iter()
            .find(|item| item.hosts.iter().any(|p| glob_match(p, host)))
    }

    /// The configuration as TOML, with every default written out.
    pub fn example_toml() -> String {
        EXAMPLE.to_string()
    }
}

/// A host's site as the configuration says.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SiteRef<'a> {
    pub name: &'a str,
    pub zone: &'a str,
    /// The organisation's PUE and its source, if it gave one.
    pub pue: Option<(f64, Option<&'a str>)>,
    /// The market-based factor and its source, if any.
    pub market: Option<(f64, &'a str)>,
}

fn check_pue(problem: &mut impl FnMut(String, String), key: &str, pue: Option<f64>) {
    if let Some(p) = pue {
        if !(p.is_finite() && (1.0..=4.0).contains(&p)) {
            problem(
                key.into(),
                format!("{p} is not a PUE: a facility's PUE is between 1.0 and 4.0"),
            );
        }
    }
}

fn check_positive(problem: &mut impl FnMut(String, String), key: &str, v: f64) {
    if !(v.is_finite() && v > 0.0) {
        problem(key.into(), format!("{v} must be a positive number"));
    }
}

fn check_lifetime(problem: &mut impl FnMut(String, String), key: &str, years: f64) {
    if !(years.is_finite() && (0.5..=20.0).contains(&years)) {
        problem(key.into(), format!("{years} is outside 0.5..=20 years"));
    }
}

/// The example configuration shipped as `deploy/collector.toml`; a test checks that it
/// parses to the defaults plus the commented examples.
const EXAMPLE: &str = include_str!("../../deploy/collector.toml");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_parses_and_is_valid() {
        let c = CollectorConfig::from_toml(EXAMPLE).unwrap();
        assert_eq!(c.problems(), vec![]);
        assert_eq!(c.listen, CollectorConfig::default().listen);
        assert_eq!(c.limits, LimitsConfig::default());
    }

    #[test]
    fn every_problem_is_reported_at_once_with_its_key() {
        let text = r#"
            [organisation]
            timezone = "Mars/Olympus"
            language = "de"
            [[site]]
            name = "a"
            zone = "FR"
            pue = 0.7
            hosts = []
            market_g_per_kwh = 5.0
            [[objective]]
            project = "chat"
            reduction_percent = 10.0
        "#;
        let c = CollectorConfig::from_toml(text).unwrap();
        let keys: Vec<String> = c.problems().into_iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            [
                "organisation.timezone",
                "organisation.language",
                "site[0].pue",
                "site[0].market_source",
                "site[0].hosts",
                "objective[0].baseline_month"
            ]
        );
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let e = CollectorConfig::from_toml("[[site]]\nname='a'\nzone='FR'\nhosts=['x']\npeu=1.2\n")
            .unwrap_err();
        assert!(e.contains("peu"), "{e}");
    }

    #[test]
    fn hosts_find_their_site_by_glob_and_others_the_default() {
        let c = CollectorConfig::from_toml(
            "[[site]]\nname='dc'\nzone='DE'\npue=1.3\nhosts=['gpu-*','web-0?']\n",
        )
        .unwrap();
        assert_eq!(c.site_of("gpu-12").name, "dc");
        assert_eq!(c.site_of("web-01").zone, "DE");
        assert_eq!(c.site_of("web-011").name, "default");
        assert_eq!(c.site_of("other").zone, "FR");
    }

    #[test]
    fn months_are_checked() {
        assert_eq!(parse_month("2026-02"), Ok((2026, 2)));
        for bad in ["2026-13", "26-01", "2026/01", "2026-1", ""] {
            assert!(parse_month(bad).is_err(), "{bad}");
        }
    }
}
