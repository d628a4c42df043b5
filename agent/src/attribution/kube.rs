//! Kubernetes pod metadata (namespace, name, labels, annotations) by pod UID, from the
//! API server (pods of this node) or the kubelet (`/pods`), cached and refreshed at most
//! every `refresh` on a miss.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::rules::PodMeta;
use crate::clock::Stopwatch;
use crate::config::kubernetes::{KubeMode, KubernetesConfig};

#[derive(Deserialize)]
struct PodList {
    #[serde(default)]
    items: Vec<Pod>,
}

#[derive(Deserialize)]
struct Pod {
    metadata: PodMetadata,
}

#[derive(Deserialize)]
struct PodMetadata {
    uid: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
}

/// Pod metadata by UID, cached.
pub struct PodCache {
    agent: ureq::Agent,
    url: String,
    token: Option<String>,
    refresh: Duration,
    pods: HashMap<String, Arc<PodMeta>>,
    last_refresh: Option<Stopwatch>,
    pub refreshes_total: u64,
    pub errors_total: u64,
}

impl PodCache {
    /// Builds the client; `None` when the mode is `off`. Errors name the file or setting.
    pub fn new(cfg: &KubernetesConfig) -> Result<Option<PodCache>, String> {
        let url = match cfg.mode {
            KubeMode::Off => return Ok(None),
            KubeMode::Kubelet => format!("{}/pods", cfg.url.trim_end_matches('/')),
            KubeMode::Api => {
                let node = cfg.node_name.clone().ok_or(
                    "attribution.kubernetes.node_name is not set (nor NODE_NAME): the API server lookup lists this node's pods",
                )?;
                format!(
                    "{}/api/v1/pods?fieldSelector=spec.nodeName%3D{node}",
                    cfg.url.trim_end_matches('/')
                )
            }
        };
        let token = match &cfg.token_file {
            Some(p) if p.exists() => Some(
                std::fs::read_to_string(p)
                    .map_err(|e| format!("cannot read the Kubernetes token {}: {e}", p.display()))?
                    .trim()
                    .to_string(),
            ),
            _ => None,
        };
        let mut tls =
            ureq::tls::TlsConfig::builder().disable_verification(cfg.insecure_skip_tls_verify);
        if let Some(ca) = cfg.ca_file.as_ref().filter(|p| p.exists()) {
            let pem = std::fs::read(ca)
                .map_err(|e| format!("cannot read the CA bundle {}: {e}", ca.display()))?;
            let certs: Vec<_> = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                return Err(format!("no certificate in the CA bundle {}", ca.display()));
            }
            tls = tls.root_certs(ureq::tls::RootCerts::Specific(Arc::new(certs)));
        }
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(3)))
            .tls_config(tls.build())
            .build()
            .new_agent();
        Ok(Some(PodCache {
            agent,
            url,
            token,
            refresh: cfg.refresh,
            pods: HashMap::new(),
            last_refresh: None,
            refreshes_total: 0,
            errors_total: 0,
        }))
    }

    /// The pod with this UID: from the cache, else after a refresh if none happened in
    /// the last `refresh`. `None` when unknown (yet).
    pub fn pod(&mut self, uid: &str) -> Option<Arc<PodMeta>> {
        if let Some(p) = self.pods.get(uid) {
            return Some(p.clone());
        }
        if self
            .last_refresh
            .as_ref()
            .is_none_or(|w| w.elapsed() >= self.refresh)
        {
            self.refresh_now();
        }
        self.pods.get(uid).cloned()
    }

    fn refresh_now(&mut self) {
        self.last_refresh = Some(Stopwatch::start());
        self.refreshes_total += 1;
        let mut req = self
            .agent
            .get(&self.url)
            .header("Accept", "application/json");
        if let Some(t) = &self.token {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        let list: Result<PodList, String> = req
            .call()
            .map_err(|e| e.to_string())
            .and_then(|mut r| {
                r.body_mut()
                    .with_config()
                    .limit(256 * 1024 * 1024)
                    .read_to_string()
                    .map_err(|e| e.to_string())
            })
            .and_then(|text| {
                serde_json::from_str::<PodList>(&text).map_err(|e| format!("not a pod list: {e}"))
            });
        match list {
            Ok(list) => {
                self.pods = list
                    .items
                    .into_iter()
                    .map(|p| {
                        let m = p.metadata;
                        (
                            m.uid,
                            Arc::new(PodMeta {
                                namespace: m.namespace,
                                name: m.name,
                                labels: m.labels,
                                annotations: m.annotations,
                            }),
                        )
                    })
                    .collect();
            }
            Err(e) => {
                self.errors_total += 1;
                tracing::warn!(url = %self.url, error = %e, "cannot list pods; pod rules wait for the next refresh");
            }
        }
    }
}
