//! A collector at its bound answers 503 with `Retry-After` (issue 12): the agent keeps
//! every batch, reads the collector's delay and honours it without doubling its own
//! backoff, so a fleet catching up after an outage comes back when the collector said,
//! not in a retry storm; once the collector serves again, everything is stored once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use empreinte_agent::attribution::engine::ProjectEnergy;
use empreinte_agent::config::PushConfig;
use empreinte_agent::push::Pipeline;
use empreinte_agent::push::client::{Client, MAX_BACKOFF, Outcome, failed_wait};
use empreinte_shared::{Component, SourceKind};
use empreinte_testkit::collector::{FakeCollector, Mode, test_agent};

const T0: u64 = 1_800_000_000_000;

#[test]
fn a_busy_collectors_retry_after_is_honoured_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let collector = FakeCollector::start();
    collector.set_mode(Mode::Busy(7));
    let config = PushConfig {
        collector: None,
        batch_interval: Duration::from_secs(5),
        spool_dir: dir.path().to_path_buf(),
        ..PushConfig::default()
    };
    let pipeline = Mutex::new(Pipeline::open(&config, format!("{:032x}", 1), T0).unwrap());
    let client = Client::new(
        &collector.url,
        Some("secret-token".into()),
        test_agent("gpu-node-01"),
        Duration::from_secs(5),
        500,
    );
    let mut project = ProjectEnergy {
        project: Arc::from("chatbot"),
        component: Component::Gpu,
        source: SourceKind::Nvml,
        total_uj: 0,
        last_uj: 0,
    };
    let mut now = T0;
    for _ in 0..40 {
        now += 1_000;
        project.last_uj = 250_000_000;
        project.total_uj += project.last_uj;
        pipeline
            .lock()
            .unwrap()
            .on_cycle(now, Duration::from_secs(1), std::slice::from_ref(&project))
            .unwrap();
    }
    pipeline.lock().unwrap().seal(now).unwrap();
    let waiting = pipeline.lock().unwrap().spool().batches();
    assert!(waiting > 1, "{waiting} batches spooled");

    // Busy: the collector's delay is read, everything stays in the spool.
    let mut backoff = Duration::from_secs(4);
    for _ in 0..3 {
        let outcome = client.push_once(&pipeline);
        let Outcome::Failed { retry_after, .. } = outcome else {
            panic!("{outcome:?}");
        };
        assert_eq!(retry_after, Some(Duration::from_secs(7)));
        let wait = failed_wait(retry_after, &mut backoff);
        assert!(
            wait >= Duration::from_secs(7) && wait <= Duration::from_millis(8_750),
            "{wait:?}"
        );
        // Honoured as said, again and again: no doubling behind it.
        assert_eq!(backoff, Duration::from_secs(4));
        assert_eq!(pipeline.lock().unwrap().spool().batches(), waiting);
    }
    assert!(collector.stored().is_empty());
    assert_eq!(collector.statuses().get(&503), Some(&3));

    // A plain 503 (no Retry-After): the agent's own backoff, doubling.
    collector.set_mode(Mode::Down);
    let Outcome::Failed { retry_after, .. } = client.push_once(&pipeline) else {
        panic!("a 503 is a failure");
    };
    assert_eq!(retry_after, None);
    failed_wait(retry_after, &mut backoff);
    assert_eq!(backoff, Duration::from_secs(8));
    assert!(backoff <= MAX_BACKOFF);

    // Served again: every batch once, exactly the energy measured.
    collector.set_mode(Mode::Healthy);
    loop {
        match client.push_once(&pipeline) {
            Outcome::Idle => break,
            Outcome::Stored { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(collector.total_uj(), project.total_uj);
    assert_eq!(collector.duplicates(), 0);
}
