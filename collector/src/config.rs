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

mod problems;
mod tariff;

pub use tariff::{TariffChange, TariffView};

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
    /// The register of AI uses (`register.toml`; see `empreinte register check`):
    /// projects map to uses, departments and services. Unset: every project with energy
    /// is flagged as an undeclared use.
    pub register_file: Option<PathBuf>,
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
    /// Upstream emissions of electricity (extraction, transport, losses), gCO2e per kWh
    /// of facility energy, for the yearly statement's BEGES line (e.g. from ADEME's Base
    /// Empreinte); unset: that line says it is not computed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_g_per_kwh: Option<f64>,
    /// Where `upstream_g_per_kwh` comes from (database, identifier, year).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_source: Option<String>,
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
    /// Bytes of push bodies read and stored at the same time (each push counts its
    /// `Content-Length`, or `max_body_bytes` without one); more get 503. The memory
    /// bound for small pushes, which group commit wants many of at once.
    pub max_ingest_bytes_in_flight: usize,
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
    /// Electricity price, euros per kWh (the peak price when an off-peak one is given),
    /// applied to the facility energy (PUE included) of every hour.
    #[serde(default)]
    pub tariff_eur_per_kwh: Option<f64>,
    #[serde(default)]
    pub tariff_off_peak_eur_per_kwh: Option<f64>,
    /// Local hours of the off-peak price, e.g. `["22-06"]`.
    #[serde(default)]
    pub tariff_off_peak_hours: Vec<String>,
    /// The contract or price list behind the tariff, and its date.
    #[serde(default)]
    pub tariff_source: Option<String>,
    /// Later tariffs, each from a local day on.
    #[serde(default, rename = "tariff_change")]
    pub tariff_changes: Vec<TariffChange>,
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
    /// Electricity price, euros per kWh (the peak price when an off-peak one is given),
    /// applied to the facility energy (PUE included) of every hour.
    #[serde(default)]
    pub tariff_eur_per_kwh: Option<f64>,
    #[serde(default)]
    pub tariff_off_peak_eur_per_kwh: Option<f64>,
    /// Local hours of the off-peak price, e.g. `["22-06"]`.
    #[serde(default)]
    pub tariff_off_peak_hours: Vec<String>,
    /// The contract or price list behind the tariff, and its date.
    #[serde(default)]
    pub tariff_source: Option<String>,
    /// Later tariffs, each from a local day on.
    #[serde(default, rename = "tariff_change")]
    pub tariff_changes: Vec<TariffChange>,
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
    /// Optional amortised hardware cost (`crate::cost::hardware`): the purchase price of
    /// one host, everything included, in euros…
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purchase_price_eur: Option<f64>,
    /// …spread evenly over this many years…
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amortisation_years: Option<f64>,
    /// …from this local day on (`YYYY-MM-DD`; nothing charged before it nor after the
    /// period); without it every hour is charged…
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purchased_on: Option<String>,
    /// …with its source (the order, the invoice, the public contract).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purchase_source: Option<String>,
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
    /// A project, or `*` for the organisation; empty with `use` or `department`.
    #[serde(default)]
    pub project: String,
    /// An objective for a use of the register (all its projects)…
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub use_id: Option<String>,
    /// …or for a department (all the projects of its uses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
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
            register_file: None,
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
            upstream_g_per_kwh: None,
            upstream_source: None,
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
            max_ingests_in_flight: 1024,
            max_ingest_bytes_in_flight: 64 * 1024 * 1024,
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
            tariff_eur_per_kwh: None,
            tariff_off_peak_eur_per_kwh: None,
            tariff_off_peak_hours: Vec::new(),
            tariff_source: None,
            tariff_changes: Vec::new(),
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
