//! The agent's push pipeline (batcher, spool, client) against a fake collector, driven
//! cycle by cycle: after an outage, lost acknowledgements and a crash, the collector
//! holds exactly the energy the agent measured, once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use empreinte_agent::attribution::engine::ProjectEnergy;
use empreinte_agent::config::PushConfig;
use empreinte_agent::push::Pipeline;
use empreinte_agent::push::client::{Client, Outcome};
use empreinte_shared::{Component, SourceKind};
use empreinte_testkit::collector::{FakeCollector, Mode, test_agent};

const T0: u64 = 1_800_000_000_000;

/// Per-project energy as the attribution would hand it, with cumulative totals.
struct Host {
    projects: Vec<ProjectEnergy>,
    x: u64,
}

impl Host {
    fn new() -> Host {
        let mk = |name: &str, component, source| ProjectEnergy {
            project: Arc::from(name),
            component,
            source,
            total_uj: 0,
            last_uj: 0,
        };
        Host {
            projects: vec![
                mk("chatbot", Component::Gpu, SourceKind::Nvml),
                mk("chatbot", Component::Cpu, SourceKind::Rapl),
                mk("idle", Component::Cpu, SourceKind::Rapl),
                mk("training", Component::Dram, SourceKind::Rapl),
            ],
            x: 7,
        }
    }

    /// One interval's energy: irregular, sometimes zero for a project.
    fn step(&mut self) -> &[ProjectEnergy] {
        for p in &mut self.projects {
            self.x = self
                .x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            p.last_uj = if self.x % 5 == 0 {
                0
            } else {
                (self.x >> 20) % 400_000_000
            };
            p.total_uj += p.last_uj;
        }
        &self.projects
    }

    fn totals(&self) -> BTreeMap<(String, Component, SourceKind), u64> {
        let mut out = BTreeMap::new();
        for p in &self.projects {
            if p.total_uj > 0 {
                out.insert((p.project.to_string(), p.component, p.source), p.total_uj);
            }
        }
        out
    }
}

fn config(dir: &std::path::Path) -> PushConfig {
    PushConfig {
        collector: None,
        batch_interval: Duration::from_secs(5),
        spool_dir: dir.to_path_buf(),
        ..PushConfig::default()
    }
}

fn client(collector: &FakeCollector, max_batches: usize) -> Client {
    Client::new(
        &collector.url,
        Some("secret-token".into()),
        test_agent("gpu-node-01"),
        Duration::from_secs(5),
        max_batches,
    )
}

fn run_id(n: u8) -> String {
    format!("{n:032x}")
}

/// Pushes until nothing waits; panics after 1 000 pushes.
fn drain(pipeline: &Mutex<Pipeline>, client: &Client) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    for _ in 0..1_000 {
        let o = client.push_once(pipeline);
        let done = matches!(o, Outcome::Idle);
        outcomes.push(o);
        if done {
            return outcomes;
        }
        assert!(
            matches!(outcomes.last(), Some(Outcome::Stored { .. })),
            "{outcomes:?}"
        );
    }
    panic!("the spool did not drain");
}

#[test]
fn after_an_outage_the_collector_holds_exactly_the_energy_measured() {
    let dir = tempfile::tempdir().unwrap();
    let collector = FakeCollector::start();
    collector.set_mode(Mode::Down);
    let pipeline = Mutex::new(Pipeline::open(&config(dir.path()), run_id(1), T0).unwrap());
    let client = client(&collector, 7);
    let mut host = Host::new();
    let mut now = T0;
    for i in 0..600u64 {
        now += 900 + i % 250;
        let sealed = pipeline
            .lock()
            .unwrap()
            .on_cycle(now, Duration::from_millis(900 + i % 250), host.step())
            .unwrap();
        if sealed > 0 && i % 40 == 0 {
            // The collector is down: the push fails and everything stays.
            let waiting = pipeline.lock().unwrap().spool().batches();
            assert!(matches!(
                client.push_once(&pipeline),
                Outcome::Failed { .. }
            ));
            assert_eq!(pipeline.lock().unwrap().spool().batches(), waiting);
        }
    }
    assert!(collector.stored().is_empty());
    let waiting = pipeline.lock().unwrap().spool().batches();
    assert!(waiting > 100, "{waiting} batches spooled");
    let metrics = pipeline.lock().unwrap().metrics().lock().clone();
    assert!(metrics.failed_total > 0);
    assert_eq!(metrics.spool.batches, waiting);

    collector.set_mode(Mode::Healthy);
    pipeline.lock().unwrap().seal(now).unwrap();
    let outcomes = drain(&pipeline, &client);
    // 7 batches at most per push: the backlog goes in several pushes, oldest first.
    assert!(outcomes.len() > 10, "{}", outcomes.len());
    assert_eq!(pipeline.lock().unwrap().spool().batches(), 0);
    assert_eq!(collector.problems(), Vec::<String>::new());
    assert_eq!(collector.energy_uj(), host.totals(), "exactly, per project");
    // Sequence numbers 1..=n without gaps, and the last counters are the run's totals.
    let stored = collector.stored();
    let seqs: Vec<u64> = stored.keys().map(|k| k.2).collect();
    assert_eq!(seqs, (1..=stored.len() as u64).collect::<Vec<_>>());
    let last = stored.values().last().unwrap();
    let counters: BTreeMap<_, _> = last
        .counters
        .iter()
        .map(|c| ((c.project.clone(), c.component, c.source), c.total_uj))
        .collect();
    assert_eq!(counters, host.totals());
    assert!(
        collector
            .authorizations()
            .iter()
            .all(|a| a.as_deref() == Some("Bearer secret-token"))
    );
    let metrics = pipeline.lock().unwrap().metrics().lock().clone();
    assert_eq!(metrics.accepted_total, stored.len() as u64);
    assert!(metrics.last_success_unix_ms.is_some());
}

#[test]
fn lost_acknowledgements_and_a_crash_never_count_twice() {
    let dir = tempfile::tempdir().unwrap();
    let collector = FakeCollector::start();
    let client = client(&collector, 50);
    let mut measured: BTreeMap<(String, Component, SourceKind), u64> = BTreeMap::new();
    let mut now = T0;

    // Run 1: the collector stores but its answers are lost; then the agent is killed
    // (dropped without sealing: open.json holds the open batch).
    {
        let pipeline = Mutex::new(Pipeline::open(&config(dir.path()), run_id(1), now).unwrap());
        let mut host = Host::new();
        collector.set_mode(Mode::LoseAcks);
        for _ in 0..200 {
            now += 1_000;
            let sealed = pipeline
                .lock()
                .unwrap()
                .on_cycle(now, Duration::from_secs(1), host.step())
                .unwrap();
            if sealed > 0 {
                assert!(matches!(
                    client.push_once(&pipeline),
                    Outcome::Failed { .. }
                ));
            }
        }
        assert!(
            !collector.stored().is_empty(),
            "stored, though not acknowledged"
        );
        measured.extend(host.totals());
        // SIGKILL: no seal, no final push.
    }
    let stored_before = collector.stored().len() as u64;
    let duplicates_before = collector.duplicates();
    assert!(
        duplicates_before > 0,
        "run 1 sent its batches again after lost answers"
    );

    // Run 2: a new run id; the spool still holds run 1's batches under their names.
    collector.set_mode(Mode::Healthy);
    let pipeline = Mutex::new(Pipeline::open(&config(dir.path()), run_id(2), now).unwrap());
    assert_eq!(
        pipeline.lock().unwrap().spool().counts().recovered.len(),
        1,
        "run 1's open batch is sealed with its old name"
    );
    let mut host = Host::new();
    for _ in 0..50 {
        now += 1_000;
        pipeline
            .lock()
            .unwrap()
            .on_cycle(now, Duration::from_secs(1), host.step())
            .unwrap();
    }
    pipeline.lock().unwrap().seal(now).unwrap();
    drain(&pipeline, &client);

    assert_eq!(collector.problems(), Vec::<String>::new());
    assert_eq!(
        collector.duplicates() - duplicates_before,
        stored_before,
        "every batch stored in run 1 came back once, with the same name, and was ignored"
    );
    let stored = collector.stored();
    let runs: Vec<&str> = stored.keys().map(|k| k.1.as_str()).collect();
    assert!(runs.contains(&run_id(1).as_str()) && runs.contains(&run_id(2).as_str()));
    for (key, uj) in host.totals() {
        *measured.entry(key).or_insert(0) += uj;
    }
    assert_eq!(collector.energy_uj(), measured);
    // Run 1's batches are 1..=n without gaps: the crash lost nothing it had spooled.
    let run1: Vec<u64> = stored
        .keys()
        .filter(|k| k.1 == run_id(1))
        .map(|k| k.2)
        .collect();
    assert_eq!(run1, (1..=run1.len() as u64).collect::<Vec<_>>());
}

#[test]
fn a_refused_push_keeps_its_batches() {
    let dir = tempfile::tempdir().unwrap();
    let collector = FakeCollector::start();
    collector.set_mode(Mode::Refuse);
    let pipeline = Mutex::new(Pipeline::open(&config(dir.path()), run_id(3), T0).unwrap());
    let client = client(&collector, 50);
    let mut host = Host::new();
    let mut now = T0;
    for _ in 0..20 {
        now += 1_000;
        pipeline
            .lock()
            .unwrap()
            .on_cycle(now, Duration::from_secs(1), host.step())
            .unwrap();
    }
    pipeline.lock().unwrap().seal(now).unwrap();
    let waiting = pipeline.lock().unwrap().spool().batches();
    match client.push_once(&pipeline) {
        Outcome::Refused {
            status, message, ..
        } => {
            assert_eq!(status, 401);
            assert!(message.contains("unknown agent token"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(pipeline.lock().unwrap().spool().batches(), waiting);
    assert_eq!(
        pipeline.lock().unwrap().metrics().lock().refused_total,
        waiting
    );
    collector.set_mode(Mode::Healthy);
    drain(&pipeline, &client);
    assert_eq!(collector.energy_uj(), host.totals());
}
