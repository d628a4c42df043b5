//! The agent's configuration: a TOML file, then command-line overrides and the
//! environment, then one pure validation pass that reports every problem at once.
//!
//! This module is a leaf: it imports nothing from the agent's runtime modules, and the
//! runtime types (sources, the attributor, the pod cache, the push pipeline) take their
//! section of it as input. One file per section; every key has a default, and the
//! literal hardware paths appear only here, as defaults. Validation reads no file and
//! no environment variable and builds nothing: files (tokens, CA bundles, passwd) are
//! read when the runtime types are built, and `NODE_NAME` when the configuration is
//! loaded ([`AgentConfig::load`]).

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub mod attribution;
pub mod estimate;
mod example;
pub mod inference;
pub mod kubernetes;
pub mod nvml;
pub mod push;
pub mod rapl;

pub use attribution::{AttributionConfig, IdlePolicy, ProjectFrom, RuleConfig};
pub use estimate::{EstimateConfig, EstimateMode};
pub use inference::{InferenceEntry, InferenceScrapeConfig};
pub use kubernetes::{KubeMode, KubernetesConfig};
pub use nvml::{NvmlConfig, NvmlLibrary};
pub use push::{
    DEFAULT_SPOOL_DIR, MAX_BATCH_INTERVAL, MAX_BATCHES_PER_PUSH, MIN_BATCH_INTERVAL, MIN_SPOOL_AGE,
    MIN_SPOOL_BYTES, PushConfig, check_collector_url,
};
pub use rapl::{DEFAULT_POWERCAP_ROOT, RaplConfig};

/// Default address of the agent's `/metrics` endpoint.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:9810";
pub use nvml::DEFAULT_NVML_LIBRARY;
/// Default procfs root (processes for the attribution; CPU utilisation, CPU model and
/// memory size for the estimate).
pub const DEFAULT_PROCFS_ROOT: &str = "/proc";

/// Shortest and longest sampling interval accepted.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
pub const MAX_INTERVAL: Duration = Duration::from_secs(60);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Address of the HTTP server that serves `/metrics`.
    pub listen: SocketAddr,
    /// Sampling interval, on the agent's own schedule (never tied to scrapes).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Root of procfs: processes for the attribution, and `stat`, `cpuinfo`, `meminfo`
    /// for the estimate.
    pub procfs_root: PathBuf,
    pub rapl: RaplConfig,
    pub nvml: NvmlConfig,
    pub estimate: EstimateConfig,
    pub attribution: AttributionConfig,
    pub push: PushConfig,
    /// How inference servers are read.
    pub inference_scrape: InferenceScrapeConfig,
    /// Inference servers whose counters are read (`[[inference]]`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub inference: Vec<InferenceEntry>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 9810)),
            interval: Duration::from_secs(1),
            procfs_root: PathBuf::from(DEFAULT_PROCFS_ROOT),
            rapl: RaplConfig::default(),
            nvml: NvmlConfig::default(),
            estimate: EstimateConfig::default(),
            attribution: AttributionConfig::default(),
            push: PushConfig::default(),
            inference_scrape: InferenceScrapeConfig::default(),
            inference: Vec::new(),
        }
    }
}

/// One problem found in the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The key, dotted: `estimate.cpu_idle_fraction`, or the flag.
    pub key: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl ConfigProblem {
    pub fn new(key: &str, message: String) -> ConfigProblem {
        ConfigProblem {
            key: key.to_string(),
            message,
        }
    }
}

/// What the configuration takes from the process's environment, when it is loaded
/// (never during validation).
#[derive(Clone, Debug, Default)]
pub struct Environment {
    /// `NODE_NAME`: the node whose pods the API server lookup lists.
    pub node_name: Option<String>,
}

impl Environment {
    /// The process's environment.
    pub fn from_process() -> Environment {
        Environment {
            node_name: std::env::var(kubernetes::NODE_NAME_VAR)
                .ok()
                .filter(|s| !s.trim().is_empty()),
        }
    }
}

/// Every problem found, reported at once.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// Where the configuration came from (a file path, or "command line").
    pub origin: String,
    pub problems: Vec<ConfigProblem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "invalid configuration ({}): {n} problem{}",
            self.origin,
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(f, "\n  - {}: {}", p.key, p.message)?;
        }
        Ok(())
    }
}

/// Command-line values that override the file, `None` where not given.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub interval: Option<Duration>,
    pub powercap_root: Option<PathBuf>,
    pub nvml_library: Option<NvmlLibrary>,
    pub procfs_root: Option<PathBuf>,
    pub estimate: Option<EstimateMode>,
    pub collector: Option<String>,
    pub token_file: Option<PathBuf>,
    pub spool_dir: Option<PathBuf>,
    pub agent_id: Option<String>,
    pub collector_ca: Option<PathBuf>,
}

impl AgentConfig {
    /// Parses a TOML document. Syntax errors, unknown keys and wrong types are reported
    /// with the key and line; values are then checked by [`AgentConfig::validate`].
    pub fn from_toml(text: &str, origin: &str) -> Result<AgentConfig, ConfigError> {
        let config = parse_toml(text, origin)?;
        config.validate(origin)?;
        Ok(config)
    }

    /// Loads `path`, or the defaults when `path` is `None`, applies `overrides`, and
    /// validates the result.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<AgentConfig, ConfigError> {
        let (mut config, origin) = match path {
            Some(p) => {
                let origin = p.display().to_string();
                let text = std::fs::read_to_string(p).map_err(|e| ConfigError {
                    origin: origin.clone(),
                    problems: vec![ConfigProblem {
                        key: "--config".into(),
                        message: format!("cannot read the file: {e}"),
                    }],
                })?;
                (parse_toml(&text, &origin)?, origin)
            }
            None => (
                AgentConfig::default(),
                "defaults and command line".to_string(),
            ),
        };
        config.apply(overrides);
        config.apply_environment(&Environment::from_process());
        config.validate(&origin)?;
        Ok(config)
    }

    pub fn apply(&mut self, o: &Overrides) {
        if let Some(v) = o.listen {
            self.listen = v;
        }
        if let Some(v) = o.interval {
            self.interval = v;
        }
        if let Some(v) = &o.powercap_root {
            self.rapl.root = v.clone();
        }
        if let Some(v) = &o.nvml_library {
            self.nvml.library = v.clone();
        }
        if let Some(v) = &o.procfs_root {
            self.procfs_root = v.clone();
        }
        if let Some(v) = o.estimate {
            self.estimate.mode = v;
        }
        if let Some(v) = &o.collector {
            self.push.collector = Some(v.clone());
        }
        if let Some(v) = &o.token_file {
            self.push.token_file = Some(v.clone());
        }
        if let Some(v) = &o.collector_ca {
            self.push.ca_file = Some(v.clone());
        }
        if let Some(v) = &o.spool_dir {
            self.push.spool_dir = v.clone();
        }
        if let Some(v) = &o.agent_id {
            self.push.agent_id = Some(v.clone());
        }
    }

    /// Fills what the configuration leaves unset from the environment: the node name of
    /// the Kubernetes lookup from `NODE_NAME`.
    pub fn apply_environment(&mut self, env: &Environment) {
        let k = &mut self.attribution.kubernetes;
        if k.node_name.is_none() {
            k.node_name.clone_from(&env.node_name);
        }
    }

    /// Checks every value and reports all problems at once. Pure: reads no file and no
    /// environment variable, builds nothing.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        if self.interval < MIN_INTERVAL || self.interval > MAX_INTERVAL {
            problems.push(ConfigProblem::new(
                "interval",
                format!(
                    "{} is out of range: allowed from {} to {} (RAPL counters can wrap within minutes at high power)",
                    humantime::format_duration(self.interval),
                    humantime::format_duration(MIN_INTERVAL),
                    humantime::format_duration(MAX_INTERVAL)
                ),
            ));
        }
        self.rapl.check(&mut problems);
        if self.procfs_root.as_os_str().is_empty() {
            problems.push(ConfigProblem::new(
                "procfs_root",
                format!("empty path: give the procfs root (default {DEFAULT_PROCFS_ROOT})"),
            ));
        }
        self.estimate.check(&mut problems);
        self.attribution.check(&mut problems);
        self.push.check(&mut problems);
        inference::check(&self.inference, &self.inference_scrape, &mut problems);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError {
                origin: origin.to_string(),
                problems,
            })
        }
    }
}

/// Syntax errors, unknown keys and wrong types, with the line, the key and (for unknown
/// keys) the keys allowed, as the TOML parser words them.
fn parse_toml(text: &str, origin: &str) -> Result<AgentConfig, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let (key, message) = match e.span() {
            Some(span) => {
                let start = span.start.min(text.len());
                let line = text[..start].matches('\n').count() + 1;
                let source_line = text.lines().nth(line - 1).unwrap_or("").trim();
                (
                    format!("line {line}"),
                    format!("`{source_line}`: {}", e.message().trim()),
                )
            }
            None => ("file".to_string(), e.message().trim().to_string()),
        };
        ConfigError {
            origin: origin.to_string(),
            problems: vec![ConfigProblem { key, message }],
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_parses_to_the_defaults() {
        let parsed = AgentConfig::from_toml(&AgentConfig::example_toml(), "example").unwrap();
        assert_eq!(parsed, AgentConfig::default());
    }

    #[test]
    fn an_empty_file_gives_the_defaults() {
        assert_eq!(
            AgentConfig::from_toml("", "empty").unwrap(),
            AgentConfig::default()
        );
    }

    #[test]
    fn values_and_durations_are_read() {
        let c = AgentConfig::from_toml(
            "listen = \"127.0.0.1:1234\"\ninterval = \"250ms\"\n[nvml]\nlibrary = \"off\"\n[estimate]\ncpu_tdp_watts = 150\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.listen, "127.0.0.1:1234".parse().unwrap());
        assert_eq!(c.interval, Duration::from_millis(250));
        assert_eq!(c.nvml.library, NvmlLibrary::Off);
        assert_eq!(c.estimate.cpu_tdp_watts, Some(150.0));
    }

    #[test]
    fn an_unknown_key_is_named() {
        let e = AgentConfig::from_toml("[rapl]\nrooot = \"/x\"\n", "agent.toml").unwrap_err();
        let text = e.to_string();
        assert!(text.contains("rooot"), "{text}");
        assert!(text.contains("root"), "the allowed keys are listed: {text}");
    }

    #[test]
    fn a_malformed_duration_is_named() {
        let e = AgentConfig::from_toml("interval = \"fast\"\n", "agent.toml").unwrap_err();
        assert!(e.to_string().contains("interval"), "{e}");
    }

    #[test]
    fn every_bad_value_is_reported_at_once() {
        let e = AgentConfig::from_toml(
            "interval = \"10ms\"\n[estimate]\ncpu_idle_fraction = 1.5\ndram_watts_per_gb = -1\ncpu_tdp_watts = 0\n",
            "agent.toml",
        )
        .unwrap_err();
        let keys: Vec<&str> = e.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "interval",
                "estimate.cpu_tdp_watts",
                "estimate.cpu_idle_fraction",
                "estimate.dram_watts_per_gb"
            ]
        );
        assert!(e.to_string().contains("4 problems"), "{e}");
        assert!(e.to_string().contains("allowed from 100ms to 1m"), "{e}");
    }

    #[test]
    fn overrides_win_over_the_file_and_are_validated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, "interval = \"2s\"\n[rapl]\nroot = \"/a\"\n").unwrap();
        let o = Overrides {
            powercap_root: Some("/b".into()),
            nvml_library: Some(NvmlLibrary::Off),
            ..Overrides::default()
        };
        let c = AgentConfig::load(Some(&path), &o).unwrap();
        assert_eq!(c.rapl.root, PathBuf::from("/b"));
        assert_eq!(c.interval, Duration::from_secs(2));
        assert_eq!(c.nvml.library, NvmlLibrary::Off);

        let o = Overrides {
            interval: Some(Duration::from_secs(600)),
            ..Overrides::default()
        };
        let e = AgentConfig::load(Some(&path), &o).unwrap_err();
        assert_eq!(e.problems[0].key, "interval");
    }

    #[test]
    fn push_is_off_by_default_and_its_values_are_checked_at_once() {
        assert_eq!(AgentConfig::default().push.collector, None);
        let c = AgentConfig::from_toml(
            "[push]\ncollector = \"https://c.example:8443\"\nbatch_interval = \"1m\"\nspool_max_age = \"7d\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.push.collector.as_deref(), Some("https://c.example:8443"));
        assert_eq!(c.push.batch_interval, Duration::from_secs(60));
        assert_eq!(c.push.spool_max_age, Duration::from_secs(7 * 86_400));
        let e = AgentConfig::from_toml(
            "[push]\ncollector = \"ftp://x\"\nagent_id = \"\"\nbatch_interval = \"2h\"\nspool_max_bytes = 10\nspool_max_age = \"5m\"\ntimeout = \"0s\"\nmax_batches_per_push = 5000\n",
            "agent.toml",
        )
        .unwrap_err();
        let keys: Vec<&str> = e.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "push.collector",
                "push.agent_id",
                "push.batch_interval",
                "push.spool_max_bytes",
                "push.spool_max_age",
                "push.timeout",
                "push.max_batches_per_push"
            ],
            "{e}"
        );
        let e = AgentConfig::from_toml("[push]\ncolector = \"http://x\"\n", "t").unwrap_err();
        assert!(e.to_string().contains("colector"), "{e}");
    }

    #[test]
    fn validation_reads_no_file_and_the_environment_only_when_loading() {
        let dir = tempfile::tempdir().unwrap();
        let bad_ca = dir.path().join("ca.crt");
        std::fs::write(&bad_ca, "not a certificate").unwrap();
        let mut c = AgentConfig::default();
        c.attribution.kubernetes = KubernetesConfig {
            mode: KubeMode::Api,
            token_file: Some(dir.path().join("missing-token")),
            ca_file: Some(bad_ca),
            node_name: None,
            ..KubernetesConfig::default()
        };
        let e = c.validate("t").unwrap_err();
        let keys: Vec<&str> = e.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["attribution.kubernetes.node_name"], "{e}");
        assert!(e.to_string().contains("NODE_NAME"), "{e}");
        c.apply_environment(&Environment {
            node_name: Some("worker-1".into()),
        });
        assert_eq!(
            c.validate("t"),
            Ok(()),
            "the files are read when the lookup starts"
        );
        c.attribution.kubernetes.url = "kubernetes.default.svc".into();
        c.attribution.kubernetes.refresh = Duration::ZERO;
        let e = c.validate("t").unwrap_err();
        let keys: Vec<&str> = e.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "attribution.kubernetes.url",
                "attribution.kubernetes.refresh"
            ]
        );
    }
}
