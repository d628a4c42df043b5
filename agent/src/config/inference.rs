//! `[[inference]]`: inference servers whose request and token counters the agent reads,
//! and `[inference_scrape]`: how often, how patiently, and whether servers running on
//! the host are found without configuration.

use std::time::Duration;

use empreinte_shared::wire::{InferenceServerKind, check_name};
use serde::{Deserialize, Serialize};

use super::ConfigProblem;

/// One configured server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferenceEntry {
    /// `vllm`, `sglang`, `tgi`, `triton`, `llamacpp` or `litellm`.
    pub kind: String,
    /// The server's Prometheus metrics URL (`http://127.0.0.1:8000/metrics`).
    pub url: String,
    /// The project its counts and energy belong to; by default the one the attribution
    /// gives the process listening on the URL's port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// The model, for a server whose counters do not name it (TGI, llama.cpp); by
    /// default the server's labels, else its info endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

impl InferenceEntry {
    /// The kind, once validated.
    pub fn server_kind(&self) -> Option<InferenceServerKind> {
        InferenceServerKind::parse(&self.kind)
    }
}

/// How servers are read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InferenceScrapeConfig {
    /// Time between two reads of each server (off the sampling path).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// How long one read may take before it counts as failed.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Find servers running on the host (their command line and listening ports in
    /// procfs; pods annotated `empreinte.io/inference`).
    pub discover: bool,
    /// The most servers read at once (configured and found together).
    pub max_servers: usize,
}

impl Default for InferenceScrapeConfig {
    fn default() -> Self {
        InferenceScrapeConfig {
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            discover: true,
            max_servers: 64,
        }
    }
}

pub const MIN_SCRAPE_INTERVAL: Duration = Duration::from_millis(100);
pub const MAX_SCRAPE_INTERVAL: Duration = Duration::from_secs(300);

/// Every problem of the `[[inference]]` entries and `[inference_scrape]`.
pub(super) fn check(
    entries: &[InferenceEntry],
    scrape: &InferenceScrapeConfig,
    problems: &mut Vec<ConfigProblem>,
) {
    let kinds: Vec<&str> = InferenceServerKind::ALL
        .iter()
        .map(|k| k.as_str())
        .collect();
    for (i, e) in entries.iter().enumerate() {
        let key = |field: &str| format!("inference[{i}].{field}");
        if e.server_kind().is_none() {
            problems.push(ConfigProblem::new(
                &key("kind"),
                format!(
                    "{:?} is not a known server: allowed are {}",
                    e.kind,
                    kinds.join(", ")
                ),
            ));
        }
        if let Err(m) = check_metrics_url(&e.url) {
            problems.push(ConfigProblem::new(&key("url"), m));
        }
        if entries[..i].iter().any(|o| o.url == e.url) {
            problems.push(ConfigProblem::new(
                &key("url"),
                format!(
                    "{} is configured twice: its counts would be counted twice",
                    e.url
                ),
            ));
        }
        for (field, v) in [("project", &e.project), ("model", &e.model)] {
            if let Some(Err(m)) = v.as_deref().map(check_name) {
                problems.push(ConfigProblem::new(&key(field), format!("the name {m}")));
            }
        }
    }
    if scrape.interval < MIN_SCRAPE_INTERVAL || scrape.interval > MAX_SCRAPE_INTERVAL {
        problems.push(ConfigProblem::new(
            "inference_scrape.interval",
            format!(
                "{} is out of range: allowed from {} to {}",
                humantime::format_duration(scrape.interval),
                humantime::format_duration(MIN_SCRAPE_INTERVAL),
                humantime::format_duration(MAX_SCRAPE_INTERVAL)
            ),
        ));
    }
    if scrape.timeout.is_zero() || scrape.timeout > scrape.interval {
        problems.push(ConfigProblem::new(
            "inference_scrape.timeout",
            format!(
                "{} is not allowed: more than zero and at most inference_scrape.interval ({})",
                humantime::format_duration(scrape.timeout),
                humantime::format_duration(scrape.interval)
            ),
        ));
    }
    if scrape.max_servers == 0 || scrape.max_servers > 10_000 {
        problems.push(ConfigProblem::new(
            "inference_scrape.max_servers",
            format!(
                "{} is out of range: allowed from 1 to 10000",
                scrape.max_servers
            ),
        ));
    }
    if entries.len() > scrape.max_servers {
        problems.push(ConfigProblem::new(
            "inference",
            format!(
                "{} servers are configured; at most inference_scrape.max_servers = {} are read",
                entries.len(),
                scrape.max_servers
            ),
        ));
    }
}

/// An `http` or `https` URL with a host.
pub fn check_metrics_url(url: &str) -> Result<(), String> {
    match url::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        Ok(u) => Err(format!(
            "{url:?} has the scheme {:?}; an http:// or https:// URL with a host is expected (the server's metrics URL)",
            u.scheme()
        )),
        Err(e) => Err(format!(
            "{url:?} is not a URL ({e}); the server's metrics URL is expected, such as http://127.0.0.1:8000/metrics"
        )),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::AgentConfig;

    #[test]
    fn entries_are_read_and_every_problem_is_reported_at_once() {
        let c = AgentConfig::from_toml(
            "[[inference]]\nkind = \"vllm\"\nurl = \"http://127.0.0.1:8000/metrics\"\nproject = \"chatbot\"\n\n[[inference]]\nkind = \"tgi\"\nurl = \"http://10.0.0.2:3000/metrics\"\nmodel = \"mistral-7b\"\n",
            "t",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.inference.len(), 2);
        assert_eq!(c.inference[0].project.as_deref(), Some("chatbot"));
        assert_eq!(c.inference[1].model.as_deref(), Some("mistral-7b"));
        let e = AgentConfig::from_toml(
            "[inference_scrape]\ninterval = \"1s\"\ntimeout = \"5s\"\n\n[[inference]]\nkind = \"ollama\"\nurl = \"ftp://x/metrics\"\nproject = \"\"\n\n[[inference]]\nkind = \"vllm\"\nurl = \"http://h:1/metrics\"\n\n[[inference]]\nkind = \"sglang\"\nurl = \"http://h:1/metrics\"\nmodel = \"a\\u0007\"\n",
            "agent.toml",
        )
        .err()
        .unwrap_or_else(|| panic!("accepted"));
        let keys: Vec<&str> = e.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "inference[0].kind",
                "inference[0].url",
                "inference[0].project",
                "inference[2].url",
                "inference[2].model",
                "inference_scrape.timeout"
            ],
            "{e}"
        );
        assert!(
            e.to_string()
                .contains("vllm, sglang, tgi, triton, llamacpp, litellm"),
            "{e}"
        );
        let e = AgentConfig::from_toml(
            "[[inference]]\nkind = \"vllm\"\nurl = \"http://h/m\"\nport = 3\n",
            "t",
        )
        .err()
        .unwrap_or_else(|| panic!("accepted"));
        assert!(e.to_string().contains("port"), "{e}");
    }
}
