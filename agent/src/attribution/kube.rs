//! Kubernetes pod metadata (namespace, name, labels, annotations) by pod UID, from the
//! API server (pods of this node) or the kubelet (`/pods`), cached.
//!
//! Lookups never block sampling: the pod list is fetched by a background thread of its
//! own, at start and then on a cache miss at most every `refresh`. A lookup reads the
//! cache under a short lock and, on a miss, only asks the thread for a refresh; the
//! process stays provisional (its energy goes to its provisional project) until its pod
//! is known, then it is resolved again. A slow or stalled API server delays pod names,
//! never a sampling cycle.
//!
//! The same list gives the pods annotated `empreinte.io/inference: "<kind>:<port>"`
//! ([`AnnotatedPods`]), which the inference reader reads at their pod IP.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
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
    #[serde(default)]
    status: Option<PodStatus>,
}

#[derive(Deserialize)]
struct PodStatus {
    #[serde(default, rename = "podIP")]
    pod_ip: Option<String>,
}

/// The annotation that names a pod's inference server: `"<kind>:<port>"`.
pub const INFERENCE_ANNOTATION: &str = "empreinte.io/inference";

/// A pod of this node annotated with [`INFERENCE_ANNOTATION`] (read by
/// `crate::inference`, which parses the value).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnnotatedPod {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    /// `status.podIP`: none while the pod is pending.
    pub ip: Option<String>,
    /// The annotation's value, as written.
    pub value: String,
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

/// Timeout of one pod list request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// The largest pod list accepted (a node runs at most a few hundred pods).
pub const MAX_LIST_BYTES: u64 = 64 * 1024 * 1024;

/// What the background thread publishes.
#[derive(Default)]
struct Shared {
    pods: HashMap<String, Arc<PodMeta>>,
    /// The pods annotated as inference servers, from the same list.
    annotated: Vec<AnnotatedPod>,
    /// A list (good or not) has been tried since the start.
    tried: bool,
    refreshes_total: u64,
    errors_total: u64,
}

type SharedPods = Arc<(Mutex<Shared>, Condvar)>;

fn lock(shared: &SharedPods) -> MutexGuard<'_, Shared> {
    shared.0.lock().unwrap_or_else(|p| p.into_inner())
}

/// Pod metadata by UID, cached and refreshed by a background thread.
pub struct PodCache {
    shared: SharedPods,
    wake: SyncSender<()>,
}

/// The HTTP side, owned by the background thread.
struct Lister {
    agent: ureq::Agent,
    url: String,
    token: Option<String>,
}

impl PodCache {
    /// Builds the client (reading the token and CA files) and starts the background
    /// thread, which lists the pods at once; `None` when the mode is `off`. Errors name
    /// the file or setting.
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
            .timeout_global(Some(REQUEST_TIMEOUT))
            .tls_config(tls.build())
            .build()
            .new_agent();
        let lister = Lister { agent, url, token };
        let shared: SharedPods = Arc::default();
        // One pending request at most: misses while a list is under way coalesce.
        let (wake, requests) = std::sync::mpsc::sync_channel(1);
        let refresh = cfg.refresh;
        let worker_shared = shared.clone();
        std::thread::Builder::new()
            .name("empreinte-pods".into())
            .spawn(move || lister.run(&worker_shared, &requests, refresh))
            .map_err(|e| format!("cannot start the pod lookup thread: {e}"))?;
        Ok(Some(PodCache { shared, wake }))
    }

    /// The pod with this UID from the cache, at once. On a miss, asks the background
    /// thread for a refresh (at most one every `refresh`) and returns `None`: the caller
    /// tries again on a later cycle.
    pub fn pod(&mut self, uid: &str) -> Option<Arc<PodMeta>> {
        if let Some(p) = lock(&self.shared).pods.get(uid) {
            return Some(p.clone());
        }
        match self.wake.try_send(()) {
            Ok(()) | Err(TrySendError::Full(())) => {}
            Err(TrySendError::Disconnected(())) => {
                tracing::warn!("the pod lookup thread is gone: pod rules see no new pod");
            }
        }
        None
    }

    /// Waits until the first pod list was tried (answered or failed), at most `timeout`.
    /// For `empreinte agent check`, never for sampling.
    pub fn wait_first_list(&self, timeout: Duration) {
        let (m, cv) = &*self.shared;
        let guard = m.lock().unwrap_or_else(|p| p.into_inner());
        let _ = cv.wait_timeout_while(guard, timeout, |s| !s.tried);
    }

    /// A handle on the annotated pods of the latest list, for the inference reader's
    /// thread.
    pub fn annotated(&self) -> AnnotatedPods {
        AnnotatedPods {
            shared: self.shared.clone(),
            wake: self.wake.clone(),
        }
    }

    /// Pod list requests made, and those that failed.
    pub fn stats(&self) -> (u64, u64) {
        let s = lock(&self.shared);
        (s.refreshes_total, s.errors_total)
    }
}

/// The pods annotated as inference servers, as the latest list gave them (shared with
/// the [`PodCache`] that lists them).
#[derive(Clone)]
pub struct AnnotatedPods {
    shared: SharedPods,
    wake: SyncSender<()>,
}

impl AnnotatedPods {
    /// The annotated pods of the latest list, by UID; `None` until a list was tried.
    pub fn list(&self) -> Option<Vec<AnnotatedPod>> {
        let s = lock(&self.shared);
        s.tried.then(|| s.annotated.clone())
    }

    /// Asks for a new list (at most one every `refresh`, coalesced with the misses).
    pub fn refresh(&self) {
        let _ = self.wake.try_send(());
    }

    /// Waits until the first pod list was tried, at most `timeout` (for `agent check`).
    pub fn wait_first_list(&self, timeout: Duration) {
        let (m, cv) = &*self.shared;
        let guard = m.lock().unwrap_or_else(|p| p.into_inner());
        let _ = cv.wait_timeout_while(guard, timeout, |s| !s.tried);
    }
}

/// A pod list: metadata by UID, and the pods annotated as inference servers.
type Listed = (HashMap<String, Arc<PodMeta>>, Vec<AnnotatedPod>);

impl Lister {
    /// Lists at once, then on every request, at most every `refresh`; ends when the
    /// cache is dropped.
    fn run(self, shared: &SharedPods, requests: &Receiver<()>, refresh: Duration) {
        loop {
            let watch = Stopwatch::start();
            let list = self.list();
            {
                let mut s = lock(shared);
                s.refreshes_total += 1;
                s.tried = true;
                match list {
                    Ok((pods, annotated)) => {
                        s.pods = pods;
                        s.annotated = annotated;
                    }
                    Err(e) => {
                        s.errors_total += 1;
                        tracing::warn!(url = %self.url, error = %e, "cannot list pods; pod rules wait for the next refresh");
                    }
                }
            }
            shared.1.notify_all();
            if requests.recv().is_err() {
                return;
            }
            if let Some(left) = refresh.checked_sub(watch.elapsed()) {
                std::thread::sleep(left);
            }
            // Misses that arrived meanwhile are served by this one list.
            while requests.try_recv().is_ok() {}
        }
    }

    fn list(&self) -> Result<Listed, String> {
        let mut req = self
            .agent
            .get(&self.url)
            .header("Accept", "application/json");
        if let Some(t) = &self.token {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        let text = req.call().map_err(|e| e.to_string()).and_then(|mut r| {
            r.body_mut()
                .with_config()
                .limit(MAX_LIST_BYTES)
                .read_to_string()
                .map_err(|e| e.to_string())
        })?;
        let list =
            serde_json::from_str::<PodList>(&text).map_err(|e| format!("not a pod list: {e}"))?;
        let mut annotated = Vec::new();
        let pods = list
            .items
            .into_iter()
            .map(|p| {
                let m = p.metadata;
                if let Some(value) = m.annotations.get(INFERENCE_ANNOTATION) {
                    annotated.push(AnnotatedPod {
                        uid: m.uid.clone(),
                        namespace: m.namespace.clone(),
                        name: m.name.clone(),
                        ip: p.status.and_then(|s| s.pod_ip).filter(|ip| !ip.is_empty()),
                        value: value.clone(),
                    });
                }
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
        annotated.sort_by(|a, b| a.uid.cmp(&b.uid));
        Ok((pods, annotated))
    }
}
