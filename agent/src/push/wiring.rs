//! The push at run time: the spool lock, the pipeline fed by the sampling loop through a
//! queue, the writer thread that spools, the client task, and the shutdown.
//!
//! Sampling never waits on the disk or the network: a cycle copies its per-project
//! energy into the [`Feed`] (a short lock on a queue, never held across I/O) and goes on;
//! the writer thread folds it into batches and spools them (`fdatasync`), holding only
//! the pipeline's lock; the client task holds that lock to read from the spool and to
//! move the cursor, never across a request.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use anyhow::Context;

use super::client::{self, Client};
use super::lock::{DirLock, SPOOL_LOCK};
use super::{Pipeline, SharedPushMetrics};
use crate::attribution::engine::{ModelEnergy, ProjectEnergy};
use crate::clock::WallAnchor;
use crate::config::PushConfig;

/// How long the agent tries to deliver its spool when it stops.
pub const FINAL_PUSH_DEADLINE: Duration = Duration::from_secs(5);

/// Cycles queued for the writer beyond which the oldest two are merged (their energy
/// adds up; nothing is dropped), so a stalled disk costs bounded memory.
pub const MAX_QUEUED_CYCLES: usize = 64;

pub type SharedPipeline = Arc<Mutex<Pipeline>>;

/// One sampling cycle as the push needs it.
#[derive(Clone, Debug)]
pub struct CycleInput {
    /// The cycle's end, by the sampling clock anchored to the wall clock.
    pub end_unix_ms: u64,
    pub length: Duration,
    pub projects: Vec<ProjectEnergy>,
    /// The parts of the projects' energy that served each model.
    pub models: Vec<ModelEnergy>,
    /// What the inference servers counted over the cycle.
    pub inference: Vec<empreinte_shared::wire::InferenceRecord>,
}

impl CycleInput {
    /// `self` followed by `next`, as one cycle: energies add up per project.
    fn merge(self, next: CycleInput) -> CycleInput {
        let mut by_key: BTreeMap<_, ProjectEnergy> = BTreeMap::new();
        for p in self.projects.into_iter().chain(next.projects) {
            by_key
                .entry((p.project.clone(), p.component, p.source))
                .and_modify(|q| {
                    q.last_uj = q.last_uj.saturating_add(p.last_uj);
                    q.total_uj = q.total_uj.max(p.total_uj);
                })
                .or_insert(p);
        }
        let mut models: BTreeMap<_, ModelEnergy> = BTreeMap::new();
        for m in self.models.into_iter().chain(next.models) {
            models
                .entry((m.project.clone(), m.model.clone(), m.component, m.source))
                .and_modify(|n| {
                    n.last_uj = n.last_uj.saturating_add(m.last_uj);
                    n.allocated |= m.allocated;
                })
                .or_insert(m);
        }
        let mut inference = self.inference;
        inference.extend(next.inference);
        CycleInput {
            end_unix_ms: next.end_unix_ms.max(self.end_unix_ms),
            length: self.length + next.length,
            projects: by_key.into_values().collect(),
            models: models.into_values().collect(),
            inference,
        }
    }
}

#[derive(Default)]
struct Queue {
    cycles: VecDeque<CycleInput>,
    closed: bool,
}

/// The queue from the sampling loop to the writer thread.
#[derive(Clone, Default)]
pub struct Feed(Arc<(Mutex<Queue>, Condvar)>);

impl Feed {
    /// Hands one cycle to the writer; never waits on I/O.
    pub fn send(&self, input: CycleInput) {
        let (queue, ready) = &*self.0;
        let mut q = queue.lock().unwrap_or_else(|e| e.into_inner());
        q.cycles.push_back(input);
        if q.cycles.len() > MAX_QUEUED_CYCLES {
            if let (Some(a), Some(b)) = (q.cycles.pop_front(), q.cycles.pop_front()) {
                q.cycles.push_front(a.merge(b));
            }
        }
        ready.notify_one();
    }

    /// No more cycles: the writer drains the queue and ends.
    pub fn close(&self) {
        let (queue, ready) = &*self.0;
        queue.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
        ready.notify_all();
    }

    /// The cycles waiting, or `None` once closed and drained.
    fn take(&self) -> Option<Vec<CycleInput>> {
        let (queue, ready) = &*self.0;
        let mut q = queue.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if !q.cycles.is_empty() {
                return Some(q.cycles.drain(..).collect());
            }
            if q.closed {
                return None;
            }
            q = ready.wait(q).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Folds and spools what the feed brings, until it is closed.
pub fn write_forever(feed: &Feed, pipeline: &Mutex<Pipeline>) {
    let mut failing = false;
    while let Some(cycles) = feed.take() {
        for c in cycles {
            let result = pipeline
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .on_cycle_with(c.end_unix_ms, c.length, &c.projects, &c.models, c.inference);
            match result {
                Err(e) if !failing => {
                    failing = true;
                    tracing::error!(error = %e, "cannot write to the push spool; the energy stays in memory and is written again at every cycle");
                }
                Err(_) => {}
                Ok(_) if failing => {
                    failing = false;
                    tracing::info!("the push spool takes writes again");
                }
                Ok(_) => {}
            }
        }
    }
}

/// The push of a running agent.
pub struct PushRuntime {
    pipeline: SharedPipeline,
    client: Arc<Client>,
    feed: Feed,
    writer: Option<std::thread::JoinHandle<()>>,
    pusher: tokio::task::JoinHandle<()>,
    anchor: WallAnchor,
    _lock: DirLock,
}

impl PushRuntime {
    /// Locks and opens the spool, builds the client and starts the writer thread and the
    /// client task; errors say which setting to fix. `anchor` dates the batches.
    pub fn start(
        cfg: &PushConfig,
        collector: &str,
        anchor: WallAnchor,
        now_unix_ms: u64,
    ) -> anyhow::Result<PushRuntime> {
        let lock = DirLock::acquire(&cfg.spool_dir, SPOOL_LOCK, "the push spool")
            .context("another agent uses this spool (push.spool_dir, --spool-dir)")?;
        let token = read_token(cfg, collector)?;
        let hostname = super::hostname();
        let agent_id = cfg.agent_id.clone().unwrap_or_else(|| hostname.clone());
        empreinte_shared::wire::check_name(&agent_id).map_err(|m| {
            anyhow::anyhow!("the agent id {agent_id:?} (push.agent_id, else the host name) {m}")
        })?;
        let run_id = super::batcher::new_run_id().map_err(|e| {
            anyhow::anyhow!("cannot draw a run id from the system's random source: {e}")
        })?;
        let pipeline = Pipeline::open(cfg, run_id, now_unix_ms).with_context(|| {
            format!(
                "cannot open the push spool in {} (push.spool_dir, --spool-dir)",
                cfg.spool_dir.display()
            )
        })?;
        let client = Client::new(
            collector,
            token,
            empreinte_shared::wire::AgentInfo {
                agent_id: agent_id.clone(),
                hostname,
                agent_version: crate::metrics::VERSION.to_string(),
            },
            cfg.timeout,
            cfg.max_batches_per_push,
        )
        .with_tls(
            super::tls::client_config(cfg.ca_file.as_deref())
                .map_err(|e| anyhow::anyhow!("{e} (push.ca_file, --collector-ca)"))?,
        );
        tracing::info!(collector = %client.url(), agent_id, run_id = pipeline.run_id(), spool = %cfg.spool_dir.display(), batches_waiting = pipeline.spool().batches(), "pushing to the collector");
        let sealed = pipeline.sealed_notify();
        let pipeline = Arc::new(Mutex::new(pipeline));
        let client = Arc::new(client);
        let feed = Feed::default();
        let writer = {
            let (feed, pipeline) = (feed.clone(), pipeline.clone());
            std::thread::Builder::new()
                .name("spool-writer".into())
                .spawn(move || write_forever(&feed, &pipeline))
                .context("cannot start the spool writer thread")?
        };
        let pusher = tokio::spawn(client::push_forever(
            pipeline.clone(),
            client.clone(),
            cfg.batch_interval,
            sealed,
        ));
        Ok(PushRuntime {
            pipeline,
            client,
            feed,
            writer: Some(writer),
            pusher,
            anchor,
            _lock: lock,
        })
    }

    pub fn metrics(&self) -> SharedPushMetrics {
        self.pipeline
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .metrics()
    }

    /// Where the sampling loop hands its cycles.
    pub fn feed(&self) -> Feed {
        self.feed.clone()
    }

    /// After the last cycle was fed: lets the writer spool everything, seals the open
    /// batch, and tries to deliver what waits for [`FINAL_PUSH_DEADLINE`].
    pub async fn shutdown(mut self, now: crate::clock::SampleTime) {
        self.pusher.abort();
        self.feed.close();
        let writer = self.writer.take();
        let (pipeline, anchor) = (self.pipeline.clone(), self.anchor);
        let sealed = tokio::task::spawn_blocking(move || {
            if let Some(w) = writer {
                let _ = w.join();
            }
            let mut p = pipeline.lock().unwrap_or_else(|e| e.into_inner());
            let result = p.seal(anchor.unix_ms(now));
            p.abandon_unwritten();
            result
        })
        .await;
        match sealed {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "cannot seal the last batch"),
            Err(e) => tracing::error!(error = %e, "the spool writer panicked"),
        }
        match client::final_push(
            self.pipeline.clone(),
            self.client.clone(),
            FINAL_PUSH_DEADLINE,
        )
        .await
        {
            None | Some(client::Outcome::Idle) => {}
            Some(outcome) => {
                tracing::warn!(outcome = ?outcome, "not everything reached the collector before shutdown; it stays in the spool for the next start")
            }
        }
    }
}

fn read_token(cfg: &PushConfig, collector: &str) -> anyhow::Result<Option<String>> {
    let token = match &cfg.token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| {
                    format!(
                        "cannot read the agent token {} (push.token_file)",
                        path.display()
                    )
                })?
                .trim()
                .to_string(),
        ),
        None => std::env::var("EMPREINTE_AGENT_TOKEN")
            .ok()
            .map(|t| t.trim().to_string()),
    }
    .filter(|t| !t.is_empty());
    if token.is_none() {
        tracing::warn!(
            collector,
            "no agent token (push.token_file or EMPREINTE_AGENT_TOKEN): pushing without one"
        );
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use empreinte_shared::{Component, SourceKind};

    fn input(end: u64, projects: &[(&str, u64)]) -> CycleInput {
        CycleInput {
            end_unix_ms: end,
            length: Duration::from_secs(1),
            projects: projects
                .iter()
                .map(|(p, uj)| ProjectEnergy {
                    project: Arc::from(*p),
                    component: Component::Cpu,
                    source: SourceKind::Rapl,
                    total_uj: 0,
                    last_uj: *uj,
                })
                .collect(),
            models: vec![],
            inference: vec![],
        }
    }

    #[test]
    fn a_stalled_writer_costs_bounded_memory_and_no_energy() {
        // Nobody takes from the feed (the writer waits on a stalled disk): sending never
        // blocks, the queue stays bounded, and merged cycles keep every microjoule.
        let feed = Feed::default();
        let mut fed = 0;
        for i in 0..1_000u64 {
            let (a, b) = (1_000 + i, 7 * i);
            fed += a + b;
            feed.send(input(
                1_000 * (i + 1),
                &[("a", a), (if i % 2 == 0 { "b" } else { "c" }, b)],
            ));
        }
        feed.close();
        let cycles = feed.take().unwrap();
        assert!(cycles.len() <= MAX_QUEUED_CYCLES, "{}", cycles.len());
        let kept: u64 = cycles
            .iter()
            .flat_map(|c| c.projects.iter().map(|p| p.last_uj))
            .sum();
        assert_eq!(kept, fed);
        let span: Duration = cycles.iter().map(|c| c.length).sum();
        assert_eq!(span, Duration::from_secs(1_000), "time is kept too");
        assert_eq!(cycles.last().unwrap().end_unix_ms, 1_000_000);
        assert!(feed.take().is_none(), "closed and drained");
    }
}
