//! `[attribution.kubernetes]`: where pod metadata (namespace, name, labels,
//! annotations) comes from.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigProblem;

/// The service account's token, as Kubernetes mounts it in a pod.
pub const DEFAULT_TOKEN_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
/// The cluster's CA bundle, as Kubernetes mounts it in a pod.
pub const DEFAULT_CA_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";
/// The API server's address from inside a pod.
pub const DEFAULT_API_URL: &str = "https://kubernetes.default.svc";
/// The environment variable the DaemonSet sets from the pod's `spec.nodeName`; read when
/// the configuration is loaded, never by validation.
pub const NODE_NAME_VAR: &str = "NODE_NAME";
/// Shortest and longest pause between two pod list requests.
pub const MIN_REFRESH: Duration = Duration::from_millis(100);
pub const MAX_REFRESH: Duration = Duration::from_secs(3600);

/// Where pod metadata comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KubeMode {
    /// No lookup: pod rules see no pod (the default outside Kubernetes).
    Off,
    /// The API server: `GET /api/v1/pods?fieldSelector=spec.nodeName=NODE`.
    Api,
    /// The node's kubelet: `GET /pods`.
    Kubelet,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubernetesConfig {
    pub mode: KubeMode,
    /// `https://kubernetes.default.svc` for the API server, `https://127.0.0.1:10250` for
    /// the kubelet; plain `http://` is accepted (tests, proxies).
    pub url: String,
    /// Bearer token (the service account's).
    pub token_file: Option<PathBuf>,
    /// CA bundle (PEM) to verify the server; the webpki roots when unset.
    pub ca_file: Option<PathBuf>,
    /// Skip certificate verification (kubelets with self-signed certificates).
    pub insecure_skip_tls_verify: bool,
    /// This node's name, for the API server's field selector (usually from the
    /// downward API, `NODE_NAME`, applied when the configuration is loaded).
    pub node_name: Option<String>,
    /// Shortest time between two pod list requests. Lookups run in the background,
    /// never on the sampling path.
    #[serde(with = "humantime_serde")]
    pub refresh: Duration,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        KubernetesConfig {
            mode: KubeMode::Off,
            url: DEFAULT_API_URL.into(),
            token_file: Some(PathBuf::from(DEFAULT_TOKEN_FILE)),
            ca_file: Some(PathBuf::from(DEFAULT_CA_FILE)),
            insecure_skip_tls_verify: false,
            node_name: None,
            refresh: Duration::from_secs(10),
        }
    }
}

impl KubernetesConfig {
    pub(super) fn check(&self, problems: &mut Vec<ConfigProblem>) {
        if self.mode == KubeMode::Off {
            return;
        }
        let mut bad = |k: &str, message: String| {
            problems.push(ConfigProblem::new(
                &format!("attribution.kubernetes.{k}"),
                message,
            ))
        };
        if self.mode == KubeMode::Api && self.node_name.as_deref().is_none_or(str::is_empty) {
            bad(
                "node_name",
                format!(
                    "not set (nor {NODE_NAME_VAR}): the API server lookup lists this node's pods"
                ),
            );
        }
        if let Err(m) = super::push::check_collector_url(&self.url) {
            bad("url", m);
        }
        if self.refresh < MIN_REFRESH || self.refresh > MAX_REFRESH {
            bad(
                "refresh",
                format!(
                    "{} is out of range: allowed from {} to {}",
                    humantime::format_duration(self.refresh),
                    humantime::format_duration(MIN_REFRESH),
                    humantime::format_duration(MAX_REFRESH)
                ),
            );
        }
    }
}
