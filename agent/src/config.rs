//! The agent's configuration: a TOML file, then command-line overrides, then one
//! validation pass that reports every problem at once.
//!
//! Every key has a default; the literal hardware paths appear only here, as defaults.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Default address of the agent's `/metrics` endpoint.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:9810";
/// Default powercap sysfs root.
pub const DEFAULT_POWERCAP_ROOT: &str = "/sys/class/powercap";
/// Default NVML library, as the NVIDIA driver installs it.
pub const DEFAULT_NVML_LIBRARY: &str = "libnvidia-ml.so.1";
/// Default procfs root (CPU utilisation, CPU model and memory size for the estimate).
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
    pub attribution: crate::attribution::rules::AttributionConfig,
    pub push: PushConfig,
}

/// Default directory of the push spool (systemd's `StateDirectory=empreinte`).
pub const DEFAULT_SPOOL_DIR: &str = "/var/lib/empreinte/spool";
/// Shortest and longest batch interval accepted.
pub const MIN_BATCH_INTERVAL: Duration = Duration::from_secs(1);
pub const MAX_BATCH_INTERVAL: Duration = Duration::from_secs(3600);
/// The smallest spool accepted.
pub const MIN_SPOOL_BYTES: u64 = 64 * 1024;
/// The shortest spool age limit accepted.
pub const MIN_SPOOL_AGE: Duration = Duration::from_secs(3600);
/// The most batches a collector accepts in one push (the wire's default limit).
pub const MAX_BATCHES_PER_PUSH: usize = 1_000;

/// Pushing per-project energy to a collector (issue 4). Off unless `collector` is set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PushConfig {
    /// The collector's base URL (`http://` or `https://`); unset: no push, no spool.
    pub collector: Option<String>,
    /// A file holding this agent's token; else the `EMPREINTE_AGENT_TOKEN` variable.
    pub token_file: Option<PathBuf>,
    /// The host's name in the footprint; by default the host name.
    pub agent_id: Option<String>,
    /// Batches are sealed at multiples of this interval of Unix time.
    #[serde(with = "humantime_serde")]
    pub batch_interval: Duration,
    /// Where sealed, unacknowledged batches wait.
    pub spool_dir: PathBuf,
    /// The spool's size limit: past it the oldest batches are dropped (and counted).
    pub spool_max_bytes: u64,
    /// The spool's age limit: older batches are dropped (and counted).
    #[serde(with = "humantime_serde")]
    pub spool_max_age: Duration,
    /// Timeout of one push request.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// The most batches sent in one request.
    pub max_batches_per_push: usize,
    /// A CA certificate file (PEM) trusted for an `https://` collector, in addition to
    /// the system's store (an internal CA, a self-signed collector).
    pub ca_file: Option<PathBuf>,
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig {
            collector: None,
            token_file: None,
            agent_id: None,
            batch_interval: Duration::from_secs(15),
            spool_dir: PathBuf::from(DEFAULT_SPOOL_DIR),
            spool_max_bytes: 256 * 1024 * 1024,
            spool_max_age: Duration::from_secs(8 * 86_400),
            timeout: Duration::from_secs(10),
            max_batches_per_push: 500,
            ca_file: None,
        }
    }
}

/// RAPL energy counters through Linux powercap sysfs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaplConfig {
    pub enabled: bool,
    /// Root of the powercap tree.
    pub root: PathBuf,
}

/// NVIDIA GPUs through NVML.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NvmlConfig {
    /// Path or name of `libnvidia-ml.so`, or `"off"`.
    pub library: NvmlLibrary,
}

/// Where to load NVML from, or not at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NvmlLibrary {
    Off,
    Path(PathBuf),
}

/// The model-based estimate for components that nothing measures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EstimateConfig {
    pub mode: EstimateMode,
    /// Thermal design power of one CPU socket in watts; overrides the built-in table.
    pub cpu_tdp_watts: Option<f64>,
    /// CPU power at zero utilisation as a fraction of its maximum.
    pub cpu_idle_fraction: f64,
    /// DRAM power per gigabyte (10^9 bytes) of installed memory, in watts.
    pub dram_watts_per_gb: f64,
}

/// When the estimate runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EstimateMode {
    /// Estimate each of CPU and DRAM that no source measures (the default).
    Fallback,
    /// Never estimate: unmeasured components are absent.
    Off,
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
            attribution: crate::attribution::rules::AttributionConfig::default(),
            push: PushConfig::default(),
        }
    }
}

impl Default for RaplConfig {
    fn default() -> Self {
        RaplConfig {
            enabled: true,
            root: PathBuf::from(DEFAULT_POWERCAP_ROOT),
        }
    }
}

impl Default for NvmlConfig {
    fn default() -> Self {
        NvmlConfig {
            library: NvmlLibrary::Path(PathBuf::from(DEFAULT_NVML_LIBRARY)),
        }
    }
}

impl Default for EstimateConfig {
    fn default() -> Self {
        EstimateConfig {
            mode: EstimateMode::Fallback,
            cpu_tdp_watts: None,
            cpu_idle_fraction: crate::sources::estimate::DEFAULT_CPU_IDLE_FRACTION,
            dram_watts_per_gb: crate::sources::estimate::DEFAULT_DRAM_WATTS_PER_GB,
        }
    }
}

impl FromStr for NvmlLibrary {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "" => Err("expected a path to libnvidia-ml.so, or \"off\"; got an empty string".into()),
            "off" => Ok(NvmlLibrary::Off),
            path => Ok(NvmlLibrary::Path(PathBuf::from(path))),
        }
    }
}

impl fmt::Display for NvmlLibrary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NvmlLibrary::Off => f.write_str("off"),
            NvmlLibrary::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

impl Serialize for NvmlLibrary {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for NvmlLibrary {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
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
        if let Some(v) = &o.collector_ca {
            self.push.ca_file = Some(v.clone());
        }
        if let Some(v) = &o.token_file {
            self.push.token_file = Some(v.clone());
        }
        if let Some(v) = &o.spool_dir {
            self.push.spool_dir = v.clone();
        }
        if let Some(v) = &o.agent_id {
            self.push.agent_id = Some(v.clone());
        }
    }

    /// Checks every value and reports all problems at once.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let mut bad = |key: &str, message: String| {
            problems.push(ConfigProblem {
                key: key.into(),
                message,
            })
        };
        if self.interval < MIN_INTERVAL || self.interval > MAX_INTERVAL {
            bad(
                "interval",
                format!(
                    "{} is out of range: allowed from {} to {} (RAPL counters can wrap within minutes at high power)",
                    humantime::format_duration(self.interval),
                    humantime::format_duration(MIN_INTERVAL),
                    humantime::format_duration(MAX_INTERVAL)
                ),
            );
        }
        if self.rapl.enabled && self.rapl.root.as_os_str().is_empty() {
            bad(
                "rapl.root",
                "empty path: give the powercap root (default /sys/class/powercap)".into(),
            );
        }
        if self.procfs_root.as_os_str().is_empty() {
            bad(
                "procfs_root",
                "empty path: give the procfs root (default /proc)".into(),
            );
        }
        if let Some(tdp) = self.estimate.cpu_tdp_watts {
            if !(tdp.is_finite() && tdp > 0.0 && tdp <= 1000.0) {
                bad(
                    "estimate.cpu_tdp_watts",
                    format!("{tdp} is not allowed: a power per socket above 0 and at most 1000 W"),
                );
            }
        }
        let idle = self.estimate.cpu_idle_fraction;
        if !(idle.is_finite() && (0.0..1.0).contains(&idle)) {
            bad(
                "estimate.cpu_idle_fraction",
                format!("{idle} is not allowed: a fraction from 0 (included) to 1 (excluded)"),
            );
        }
        let dram = self.estimate.dram_watts_per_gb;
        if !(dram.is_finite() && (0.0..=5.0).contains(&dram)) {
            bad(
                "estimate.dram_watts_per_gb",
                format!("{dram} is not allowed: watts per GB from 0 to 5"),
            );
        }
        if let Err(rule_problems) = crate::attribution::rules::Resolver::new(&self.attribution) {
            problems.extend(rule_problems);
        }
        if let Err(e) = crate::attribution::kube::PodCache::new(&self.attribution.kubernetes) {
            problems.push(ConfigProblem {
                key: "attribution.kubernetes".into(),
                message: e,
            });
        }
        self.push.check(&mut problems);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError {
                origin: origin.to_string(),
                problems,
            })
        }
    }

    /// The default configuration as a commented TOML document (`empreinte agent
    /// default-config`); deploy/agent.toml is kept identical to it by a test.
    pub fn example_toml() -> String {
        let d = AgentConfig::default();
        format!(
            r#"# Empreinte agent configuration. Every key is optional; shown here with its default.
# Command-line flags (--listen, --interval, --powercap-root, --nvml-library,
# --procfs-root, --estimate, --collector, --token-file, --spool-dir, --agent-id)
# override these values.

# Address of the HTTP server that serves Prometheus metrics on /metrics.
listen = "{listen}"
# Sampling interval, from {min} to {max}. The agent samples on its own schedule,
# whatever the scrape interval.
interval = "{interval}"
# Root of procfs: processes for the attribution, CPU use and memory for the estimate.
procfs_root = "{procfs}"

[rapl]
# Read CPU package and DRAM energy from RAPL counters through Linux powercap.
enabled = {rapl_enabled}
root = "{rapl_root}"

[nvml]
# NVIDIA Management Library: a path or library name, or "off".
library = "{nvml}"

[estimate]
# "fallback": estimate CPU and DRAM power where no source measures them, labelled
# source="estimate"; "off": leave unmeasured components out.
mode = "fallback"
# Thermal design power of one CPU socket, in watts, when the CPU model is not in the
# built-in table (agent/data/cpu_tdp.toml). Unset by default.
# cpu_tdp_watts = 205.0
# CPU power at zero utilisation, as a fraction of its maximum.
cpu_idle_fraction = {idle}
# DRAM power per GB of installed memory, in watts.
dram_watts_per_gb = {dram}

[attribution]
# Where the energy of idle CPU time goes: "separate" (to the project named by
# idle_project) or "proportional" (shared by the active projects).
idle_policy = "separate"
idle_project = "idle"
# Processes that no rule matches.
unassigned_project = "unassigned"
passwd_file = "/etc/passwd"
# Show whole command lines in /debug/attribution and `check`; by default only the
# program name, since arguments can hold secrets.
debug_full_cmdline = false
# Docker's data root: container names and labels for container rules.
docker_root = "/var/lib/docker"
# Ordered rules, first match wins; giving any replaces the defaults, which are:
# the EMPREINTE_PROJECT environment variable, then a pod's empreinte.io/project label,
# then a pod's namespace. Matchers (all given must match): env, env_value (regex),
# systemd_unit (glob), container (glob on the id or Docker name), container_label,
# pod_namespace (glob), pod_label, pod_annotation, user, cmdline (regex). Project:
# project = "name", or project_from = "env" | "systemd_unit" | "container_name" |
# "container_label" | "pod_namespace" | "pod_name" | "pod_label" | "pod_annotation" |
# "user".
#
# [[attribution.rules]]
# systemd_unit = "vllm-*.service"
# project = "chatbot"

[attribution.kubernetes]
# Pod metadata for pod rules: "off", "api" (pods of node_name from the API server) or
# "kubelet" (the node's /pods).
mode = "off"
url = "https://kubernetes.default.svc"
token_file = "/var/run/secrets/kubernetes.io/serviceaccount/token"
ca_file = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
insecure_skip_tls_verify = false
# node_name = "worker-1"
refresh = "10s"

[push]
# Push per-project energy to an Empreinte collector, in batches, over HTTP(S). Off
# while collector is unset: no push and no spool.
# collector = "https://empreinte.example.org"
# This agent's token, from a file (else the EMPREINTE_AGENT_TOKEN variable).
# token_file = "/etc/empreinte/agent.token"
# An https:// collector's certificate is checked against the system's CA store; an
# internal or self-signed CA is added here (PEM), or with --collector-ca FILE.
# ca_file = "/etc/empreinte/collector-ca.pem"
# The host's name in the footprint; by default the host name.
# agent_id = "gpu-node-01"
# Batches end at multiples of this interval of Unix time (from {min_batch} to {max_batch}).
batch_interval = "{batch_interval}"
# Batches the collector has not acknowledged wait here, and are sent again when it is
# back. Past either limit the oldest are dropped (empreinte_spool_dropped_batches_total).
spool_dir = "{spool_dir}"
spool_max_bytes = {spool_max_bytes}
spool_max_age = "{spool_max_age}"
# Timeout of one push request; the most batches in one request.
timeout = "{push_timeout}"
max_batches_per_push = {max_batches}
"#,
            listen = d.listen,
            min = humantime::format_duration(MIN_INTERVAL),
            max = humantime::format_duration(MAX_INTERVAL),
            interval = humantime::format_duration(d.interval),
            rapl_enabled = d.rapl.enabled,
            rapl_root = d.rapl.root.display(),
            nvml = d.nvml.library,
            procfs = d.procfs_root.display(),
            idle = d.estimate.cpu_idle_fraction,
            dram = d.estimate.dram_watts_per_gb,
            min_batch = humantime::format_duration(MIN_BATCH_INTERVAL),
            max_batch = humantime::format_duration(MAX_BATCH_INTERVAL),
            batch_interval = humantime::format_duration(d.push.batch_interval),
            spool_dir = d.push.spool_dir.display(),
            spool_max_bytes = d.push.spool_max_bytes,
            spool_max_age = humantime::format_duration(d.push.spool_max_age),
            push_timeout = humantime::format_duration(d.push.timeout),
            max_batches = d.push.max_batches_per_push,
        )
    }
}

impl PushConfig {
    fn check(&self, problems: &mut Vec<ConfigProblem>) {
        let mut bad = |key: &str, message: String| {
            problems.push(ConfigProblem {
                key: format!("push.{key}"),
                message,
            })
        };
        if let Some(url) = &self.collector {
            if let Err(m) = check_collector_url(url) {
                bad("collector", m);
            }
        }
        if let Some(id) = &self.agent_id {
            if let Err(m) = empreinte_shared::wire::check_name(id) {
                bad("agent_id", format!("{id:?} {m}"));
            }
        }
        let fmt = humantime::format_duration;
        if self.batch_interval < MIN_BATCH_INTERVAL || self.batch_interval > MAX_BATCH_INTERVAL {
            bad(
                "batch_interval",
                format!(
                    "{} is out of range: allowed from {} to {}",
                    fmt(self.batch_interval),
                    fmt(MIN_BATCH_INTERVAL),
                    fmt(MAX_BATCH_INTERVAL)
                ),
            );
        }
        if self.spool_dir.as_os_str().is_empty() {
            bad(
                "spool_dir",
                format!("empty path: give the spool directory (default {DEFAULT_SPOOL_DIR})"),
            );
        }
        if self.spool_max_bytes < MIN_SPOOL_BYTES {
            bad(
                "spool_max_bytes",
                format!(
                    "{} bytes is too small: at least {MIN_SPOOL_BYTES} bytes",
                    self.spool_max_bytes
                ),
            );
        }
        if self.spool_max_age < MIN_SPOOL_AGE {
            bad(
                "spool_max_age",
                format!(
                    "{} is too short: at least {} (the default, 8 days, covers a long weekend of collector outage)",
                    fmt(self.spool_max_age),
                    fmt(MIN_SPOOL_AGE)
                ),
            );
        }
        if self.timeout.is_zero() || self.timeout > Duration::from_secs(300) {
            bad(
                "timeout",
                format!(
                    "{} is out of range: allowed above 0 and up to 5m",
                    fmt(self.timeout)
                ),
            );
        }
        if !(1..=MAX_BATCHES_PER_PUSH).contains(&self.max_batches_per_push) {
            bad(
                "max_batches_per_push",
                format!(
                    "{} is out of range: allowed from 1 to {MAX_BATCHES_PER_PUSH} (the collector's limit)",
                    self.max_batches_per_push
                ),
            );
        }
    }
}

/// Checks a collector URL: `http://` or `https://`, then a host.
pub fn check_collector_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("{url:?} is not an http:// or https:// URL"))?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() || host.chars().any(char::is_whitespace) {
        return Err(format!("{url:?} has no host"));
    }
    if rest.contains(['?', '#']) {
        return Err(format!(
            "{url:?}: give the collector's base URL, without query or fragment"
        ));
    }
    Ok(())
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
    fn collector_urls() {
        assert_eq!(check_collector_url("http://127.0.0.1:9811"), Ok(()));
        assert_eq!(check_collector_url("https://c.example/prefix/"), Ok(()));
        assert!(check_collector_url("c.example").is_err());
        assert!(check_collector_url("https://").is_err());
        assert!(check_collector_url("https://c.example/?a=b").is_err());
    }

    #[test]
    fn nvml_library_parsing() {
        assert_eq!("off".parse::<NvmlLibrary>(), Ok(NvmlLibrary::Off));
        assert_eq!(
            "/x/lib.so".parse::<NvmlLibrary>(),
            Ok(NvmlLibrary::Path("/x/lib.so".into()))
        );
        assert!("".parse::<NvmlLibrary>().is_err());
    }
}
