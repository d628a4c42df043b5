//! Inference servers: their request and token counters, read beside the energy.
//!
//! A thread of its own reads every server every `inference_scrape.interval` (HTTP with
//! `inference_scrape.timeout`), off the sampling path: a slow or dead server never
//! delays a sampling cycle. The cycle only takes what was counted since the last one
//! ([`Inference::take`], a short lock and no I/O), and turns it into
//! [`InferenceRecord`](empreinte_shared::wire::InferenceRecord)s and the weights that
//! split a serving process's energy between its models.
//!
//! Servers come from `[[inference]]` and, with `inference_scrape.discover`, from the
//! host's processes ([`discovery`]): a known server's command line and the ports it
//! listens on, probed once per process; and, where the Kubernetes pod lookup is on, from
//! the node's pods annotated `empreinte.io/inference: "<kind>:<port>"` ([`pods`]), read
//! at their pod IP.
//!
//! Counter semantics are in [`series`]; names per kind in [`kinds`] and
//! `docs/inference.md`.

pub mod discovery;
pub mod host;
pub mod kinds;
pub mod metrics;
pub mod pods;
pub mod records;
pub mod series;
pub mod text;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use empreinte_shared::wire::InferenceServerKind;

use crate::clock::MonotonicClock;
use crate::config::{AgentConfig, InferenceEntry, InferenceScrapeConfig};
use series::{Taken, Tracker};

/// The most bytes read from one answer.
pub const MAX_ANSWER_BYTES: u64 = 8 * 1024 * 1024;

/// How many rounds pass between two looks for the local process serving a configured
/// URL that no process was found to serve.
const LOCATE_EVERY: u64 = 12;

/// The model of a server that names none, when neither the configuration nor its info
/// endpoint gives one.
pub const UNKNOWN_MODEL: &str = "unknown";

/// How a server became known.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// An `[[inference]]` entry.
    Configured,
    /// A process on the host whose command line is a known server.
    Discovered,
    /// A pod of this node annotated `empreinte.io/inference`.
    Kubernetes,
}

/// The pod a server runs in, when it was found by its annotation.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PodRef {
    pub uid: String,
    pub namespace: String,
    pub name: String,
}

/// A server as the agent sees it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ServerInfo {
    pub kind: InferenceServerKind,
    pub url: String,
    pub origin: Origin,
    /// The configured project; otherwise the attribution's project of `pid`.
    pub project: Option<Arc<str>>,
    /// The configured model, or the info endpoint's, for a server whose counters name
    /// none.
    pub model: Option<Arc<str>>,
    /// The pod it runs in (annotated pods only).
    pub pod: Option<PodRef>,
    /// The serving process, when it runs on this host.
    pub pid: Option<u32>,
    pub start_ticks: Option<u64>,
    /// The models of the last good read.
    pub models: Vec<Arc<str>>,
    pub up: bool,
    pub last_error: Option<String>,
    pub scrapes_total: u64,
    pub scrape_errors_total: u64,
}

impl ServerInfo {
    fn default_model(&self) -> Arc<str> {
        self.model
            .clone()
            .unwrap_or_else(|| Arc::from(UNKNOWN_MODEL))
    }
}

struct Server {
    /// Unique within the run (servers come and go).
    id: u64,
    info: ServerInfo,
    tracker: Tracker,
    /// The info endpoint was asked (once).
    asked_info: bool,
    /// The process is gone: removed after its last counts are taken.
    gone: bool,
}

/// A known server process that answered no metrics on any port (probed once), or an
/// annotated pod that is not read (`pid` 0, `cmdline` naming the pod and annotation).
#[derive(Clone, Debug, serde::Serialize)]
pub struct Unread {
    pub pid: u32,
    pub kind: InferenceServerKind,
    pub cmdline: String,
    pub reason: String,
}

#[derive(Default)]
struct Servers {
    servers: Vec<Server>,
    next_id: u64,
    rounds: u64,
    probed: HashSet<(u32, u64)>,
    unread: Vec<Unread>,
}

/// What one server counted since the last take.
#[derive(Clone, Debug)]
pub struct ServerTake {
    /// The server, within the run (for [`Inference::carry_gaps`]).
    pub id: u64,
    pub info: ServerInfo,
    pub taken: Taken,
}

/// The running reader of inference servers.
pub struct Inference {
    shared: Arc<Mutex<Servers>>,
    /// What the cycles counted, for `/metrics`.
    counted: Mutex<metrics::CountedTotals>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// How long a counted ratio between models holds (see [`series::Tracker::take`]).
    hold_ms: u64,
}

/// What the reading thread needs from the configuration.
#[derive(Clone)]
struct Settings {
    scrape: InferenceScrapeConfig,
    procfs_root: std::path::PathBuf,
    /// The node's annotated pods, where the pod lookup is on.
    pods: Option<crate::attribution::kube::AnnotatedPods>,
}

impl Inference {
    /// Starts reading the configured servers (and finding others, when
    /// `inference_scrape.discover`). `None` when there is nothing to read.
    pub fn start(config: &AgentConfig, clock: MonotonicClock) -> anyhow::Result<Option<Inference>> {
        Inference::start_with_pods(config, clock, None)
    }

    /// [`Inference::start`], also reading the annotated pods of `pods` (the attribution's
    /// pod lookup) when `inference_scrape.discover`.
    pub fn start_with_pods(
        config: &AgentConfig,
        clock: MonotonicClock,
        pods: Option<crate::attribution::kube::AnnotatedPods>,
    ) -> anyhow::Result<Option<Inference>> {
        if config.inference.is_empty() && !config.inference_scrape.discover {
            return Ok(None);
        }
        let shared = Arc::new(Mutex::new(Servers::configured(&config.inference)));
        let stop = Arc::new(AtomicBool::new(false));
        let settings = Settings {
            scrape: config.inference_scrape.clone(),
            procfs_root: config.procfs_root.clone(),
            pods: pods.filter(|_| config.inference_scrape.discover),
        };
        let thread = {
            let (shared, stop) = (shared.clone(), stop.clone());
            std::thread::Builder::new()
                .name("inference".into())
                .spawn(move || read_forever(&shared, &stop, &settings, clock))
                .map_err(|e| anyhow::anyhow!("cannot start the inference reader thread: {e}"))?
        };
        Ok(Some(Inference {
            shared,
            counted: Mutex::new(metrics::CountedTotals::new()),
            stop,
            thread: Some(thread),
            hold_ms: ratio_hold_ms(config.inference_scrape.interval),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, Servers> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What every server counted since the last take, up to `now_ms`; servers whose
    /// process is gone leave after this.
    pub fn take(&self, now_ms: u64) -> Vec<ServerTake> {
        let mut s = self.lock();
        let out = s
            .servers
            .iter_mut()
            .map(|srv| ServerTake {
                id: srv.id,
                info: srv.info.clone(),
                taken: srv.tracker.take(now_ms, self.hold_ms),
            })
            .collect();
        s.servers.retain(|srv| !srv.gone);
        out
    }

    /// Gives back the gap time a cycle's records could not hold (a record's gap is at
    /// most its span; see [`records::excess_gaps`]): the next take carries it, so the
    /// outage's whole length reaches the collector.
    pub fn carry_gaps(&self, excess: &[(u64, u64)]) {
        if excess.is_empty() {
            return;
        }
        let mut s = self.lock();
        for &(id, ms) in excess {
            if let Some(srv) = s.servers.iter_mut().find(|srv| srv.id == id) {
                srv.tracker.carry_gap(ms);
            }
        }
    }

    /// Adds a cycle's records to what `/metrics` shows.
    pub fn counted(&self, records: &[empreinte_shared::wire::InferenceRecord]) {
        let mut c = self.counted.lock().unwrap_or_else(|p| p.into_inner());
        metrics::count(&mut c, records);
    }

    /// The families of `/metrics`.
    pub fn families(&self) -> Vec<prometheus::proto::MetricFamily> {
        let servers = self.servers().0;
        let c = self.counted.lock().unwrap_or_else(|p| p.into_inner());
        metrics::families(&servers, &c)
    }

    /// The servers known now, and the server processes that answered no metrics.
    pub fn servers(&self) -> (Vec<ServerInfo>, Vec<Unread>) {
        let s = self.lock();
        (
            s.servers.iter().map(|srv| srv.info.clone()).collect(),
            s.unread.clone(),
        )
    }

    /// One round now, on the caller's thread (for `agent check`).
    pub fn read_once(
        config: &AgentConfig,
        clock: MonotonicClock,
    ) -> (Vec<ServerInfo>, Vec<Unread>) {
        let shared = Mutex::new(Servers::configured(&config.inference));
        // A pod lookup of its own, its first list awaited (a short wait, for a check).
        let cache = match config.inference_scrape.discover {
            true => crate::attribution::kube::PodCache::new(&config.attribution.kubernetes)
                .ok()
                .flatten(),
            false => None,
        };
        let pods = cache.as_ref().map(|c| c.annotated());
        if let Some(p) = &pods {
            p.wait_first_list(crate::attribution::kube::REQUEST_TIMEOUT + Duration::from_secs(1));
        }
        let settings = Settings {
            scrape: config.inference_scrape.clone(),
            procfs_root: config.procfs_root.clone(),
            pods,
        };
        round(&shared, &settings, clock);
        let s = shared.lock().unwrap_or_else(|p| p.into_inner());
        (
            s.servers.iter().map(|srv| srv.info.clone()).collect(),
            s.unread.clone(),
        )
    }
}

/// How long a counted ratio between models holds: three reads, and at least 5 s (a
/// read can be late on a busy host; a few seconds of idle energy split by the last
/// ratio instead of equally is the smaller error).
fn ratio_hold_ms(scrape_interval: Duration) -> u64 {
    let three = scrape_interval.saturating_mul(3).as_millis();
    u64::try_from(three).unwrap_or(u64::MAX).max(5_000)
}

/// The weights that split each serving process's energy between its models this cycle
/// (see [`series::Tracker::take`]), by PID: servers on this host only.
pub fn model_weights(
    takes: &[ServerTake],
) -> std::collections::HashMap<u32, crate::attribution::models::ProcessWeights> {
    takes
        .iter()
        .filter_map(|t| {
            let w = crate::attribution::models::ProcessWeights {
                models: t.taken.weights.clone(),
                provisional: t.taken.provisional,
            };
            Some((t.info.pid?, w)).filter(|(_, w)| !w.models.is_empty())
        })
        .collect()
}

impl Drop for Inference {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

impl Servers {
    fn configured(entries: &[InferenceEntry]) -> Servers {
        let servers: Vec<Server> = entries
            .iter()
            .zip(0u64..)
            .filter_map(|(e, id)| configured(e, id))
            .collect();
        Servers {
            next_id: servers.len() as u64,
            servers,
            ..Servers::default()
        }
    }
}

fn configured(e: &InferenceEntry, id: u64) -> Option<Server> {
    Some(Server {
        id,
        info: ServerInfo {
            kind: e.server_kind()?,
            url: e.url.clone(),
            origin: Origin::Configured,
            project: e.project.as_deref().map(Arc::from),
            model: e.model.as_deref().map(Arc::from),
            pod: None,
            pid: None,
            start_ticks: None,
            models: Vec::new(),
            up: false,
            last_error: None,
            scrapes_total: 0,
            scrape_errors_total: 0,
        },
        tracker: Tracker::default(),
        asked_info: e.model.is_some(),
        gone: false,
    })
}

fn read_forever(
    shared: &Mutex<Servers>,
    stop: &AtomicBool,
    settings: &Settings,
    clock: MonotonicClock,
) {
    while !stop.load(Ordering::SeqCst) {
        round(shared, settings, clock);
        // Woken early by `Drop`.
        std::thread::park_timeout(settings.scrape.interval);
    }
}

fn http_agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .build()
        .new_agent()
}

/// GETs `url`: the body of a 2xx answer, else what went wrong.
fn get(agent: &ureq::Agent, url: &str) -> Result<String, String> {
    let mut r = agent.get(url).call().map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    if !(200..300).contains(&status) {
        return Err(format!("HTTP status {status}"));
    }
    r.body_mut()
        .with_config()
        .limit(MAX_ANSWER_BYTES)
        .read_to_string()
        .map_err(|e| e.to_string())
}

/// Reads and extracts one server's counters.
fn read(
    agent: &ureq::Agent,
    kind: InferenceServerKind,
    url: &str,
) -> Result<kinds::Extracted, String> {
    let body = get(agent, url)?;
    let samples = text::parse(&body)?;
    let extracted = kinds::extract(kind, &samples)?;
    if extracted.readings.is_empty() {
        return Err(format!(
            "no {kind} counter in the answer (expected {})",
            kinds::sample_names(kind).join(", ")
        ));
    }
    Ok(extracted)
}

/// One server to read this round (copied out, so that no lock is held while reading).
struct Job {
    id: u64,
    kind: InferenceServerKind,
    url: String,
    asked_info: bool,
    pid: Option<u32>,
    start: Option<u64>,
    pod_uid: Option<String>,
}

/// One round: find new servers, then read each.
fn round(shared: &Mutex<Servers>, settings: &Settings, clock: MonotonicClock) {
    let agent = http_agent(settings.scrape.timeout);
    if let Some(p) = &settings.pods {
        pods::discover(
            shared,
            &settings.procfs_root,
            p,
            settings.scrape.max_servers,
        );
    }
    if settings.scrape.discover {
        host::discover(shared, settings, &agent);
    }
    host::locate_configured(shared, settings);
    let jobs: Vec<Job> = {
        let s = shared.lock().unwrap_or_else(|p| p.into_inner());
        s.servers
            .iter()
            .filter(|srv| !srv.gone)
            .map(|srv| Job {
                id: srv.id,
                kind: srv.info.kind,
                url: srv.info.url.clone(),
                asked_info: srv.asked_info,
                pid: srv.info.pid,
                start: srv.info.start_ticks,
                pod_uid: srv.info.pod.as_ref().map(|p| p.uid.clone()),
            })
            .collect()
    };
    for job in jobs {
        let result = read(&agent, job.kind, &job.url);
        let info_model = match kinds::info_path(job.kind) {
            Some(path) if !job.asked_info && result.is_ok() => url::Url::parse(&job.url)
                .ok()
                .and_then(|u| u.join(path).ok())
                .and_then(|u| get(&agent, u.as_str()).ok())
                .and_then(|b| kinds::model_from_info(&b)),
            _ => None,
        };
        let at_ms = clock.anchor().unix_ms(clock.now());
        let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(srv) = s.servers.iter_mut().find(|srv| srv.id == job.id) {
            apply(srv, &job, result, info_model, at_ms);
        }
    }
}

/// What one read of `srv` gave, at `at_ms`.
fn apply(
    srv: &mut Server,
    job: &Job,
    result: Result<kinds::Extracted, String>,
    info_model: Option<String>,
    at_ms: u64,
) {
    srv.info.scrapes_total += 1;
    if !job.asked_info && result.is_ok() {
        srv.asked_info = true;
        if let Some(m) = info_model {
            srv.info.model = Some(Arc::from(empreinte_shared::wire::fit_name(&m).as_ref()));
        }
    }
    let (url, kind) = (&job.url, job.kind);
    match result {
        Ok(read) => {
            let identity = identity(job.pid, job.start, read.process_start_ms)
                .map(|i| match &job.pod_uid {
                    Some(uid) => format!("pod {uid}/{i}"),
                    None => i,
                })
                .or_else(|| job.pod_uid.as_ref().map(|uid| format!("pod {uid}")));
            let default_model = srv.info.default_model();
            srv.tracker
                .observe(at_ms, identity.as_deref(), &read, &default_model);
            srv.info.models = srv.tracker.loaded().to_vec();
            if !srv.info.up {
                tracing::info!(server = %url, kind = %kind, models = srv.info.models.len(), "inference server read");
            }
            srv.info.up = true;
            srv.info.last_error = None;
        }
        Err(e) => {
            srv.tracker.failed(at_ms);
            srv.info.scrape_errors_total += 1;
            if srv.info.up || srv.info.last_error.is_none() {
                tracing::warn!(server = %url, kind = %kind, error = %e, "cannot read the inference server; its counts wait for the next good read and the time is recorded as a gap");
            }
            srv.info.up = false;
            srv.info.last_error = Some(e);
        }
    }
}

/// The serving process's identity: PID and start time where known, and the start time
/// the server exports.
fn identity(pid: Option<u32>, start: Option<u64>, exported_ms: Option<u64>) -> Option<String> {
    match (pid, start, exported_ms) {
        (None, _, None) => None,
        (pid, start, exported) => Some(format!("{pid:?}/{start:?}/{exported:?}")),
    }
}
