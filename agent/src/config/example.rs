//! The default configuration as a commented TOML document: what `empreinte agent
//! default-config` prints and `deploy/agent.toml` holds (a golden test keeps them equal).

use super::push::{MAX_BATCH_INTERVAL, MIN_BATCH_INTERVAL};
use super::{AgentConfig, MAX_INTERVAL, MIN_INTERVAL};

impl AgentConfig {
    /// The default configuration as a commented TOML document (`empreinte agent
    /// default-config`); deploy/agent.toml is kept identical to it by a test. One
    /// function per part, in the file's order.
    pub fn example_toml() -> String {
        let d = AgentConfig::default();
        [general(&d), measurement(&d), attribution(&d), push(&d)].concat()
    }
}

/// The top-level keys.
fn general(d: &AgentConfig) -> String {
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

"#,
        listen = d.listen,
        min = humantime::format_duration(MIN_INTERVAL),
        max = humantime::format_duration(MAX_INTERVAL),
        interval = humantime::format_duration(d.interval),
        procfs = d.procfs_root.display(),
    )
}

/// The energy sources: `[rapl]`, `[nvml]`, `[estimate]`.
fn measurement(d: &AgentConfig) -> String {
    format!(
        r#"[rapl]
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
# built-in table (agent/data/cpu_models.toml). Unset by default.
# cpu_tdp_watts = 205.0
# CPU power at zero utilisation, as a fraction of TDP (Teads/Boavizta profile).
cpu_idle_fraction = {idle}
# DRAM power per GB of installed memory, in watts, on top of 2 W per module.
dram_watts_per_gb = {dram}
# Where the EDAC driver lists the memory modules (readable without root).
edac_root = "{edac}"

"#,
        rapl_enabled = d.rapl.enabled,
        rapl_root = d.rapl.root.display(),
        nvml = d.nvml.library,
        idle = d.estimate.cpu_idle_fraction,
        dram = d.estimate.dram_watts_per_gb,
        edac = d.estimate.edac_root.display(),
    )
}

/// `[attribution]` and `[attribution.kubernetes]`.
fn attribution(d: &AgentConfig) -> String {
    format!(
        r#"[attribution]
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
# A project with no energy and no live process for this long leaves memory and
# /metrics; its totals are parked (up to max_dormant_projects, then the longest-dormant
# are forgotten) and resumed if it comes back.
project_window = "{project_window}"
max_dormant_projects = {max_dormant}
# Ordered rules, first match wins; giving any replaces the defaults, which are:
# the EMPREINTE_PROJECT environment variable, then a pod's empreinte.io/project label,
# then a pod's namespace, then the systemd service (vllm.service: project "vllm"). An
# unprivileged agent (the shipped unit) cannot read other users' environment: their
# processes fall to the later rules (docs/attribution.md). Matchers (all given must match): env, env_value (regex),
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

"#,
        project_window = humantime::format_duration(d.attribution.project_window),
        max_dormant = d.attribution.max_dormant_projects,
    )
}

/// `[push]`.
fn push(d: &AgentConfig) -> String {
    format!(
        r#"[push]
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
