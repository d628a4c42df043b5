//! Bounded by what is active (issue 18 item 7): 5,000 one-off project names over a run
//! (as `project_from = pod_name` makes) leave the batches, and the pipeline's memory, as
//! large as the projects active within the window; a project that comes back resumes its
//! cumulative counter. Prints the figures (batch sizes, keys in memory, RSS):
//! `cargo test -p empreinte-agent --test push_churn -- --nocapture`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use empreinte_agent::attribution::engine::ProjectEnergy;
use empreinte_agent::config::PushConfig;
use empreinte_agent::push::Pipeline;
use empreinte_agent::push::client::{Client, Outcome};
use empreinte_shared::wire::AgentInfo;
use empreinte_shared::{Component, SourceKind};
use empreinte_testkit::collector::FakeCollector;

const T0: u64 = 1_800_000_000_000;
const WINDOW_S: u64 = 60;

fn project(name: &str, uj: u64) -> ProjectEnergy {
    ProjectEnergy {
        project: Arc::from(name),
        component: Component::Gpu,
        source: SourceKind::Nvml,
        total_uj: 0,
        last_uj: uj,
    }
}

/// This test process's resident memory: the pipeline's, but also the fake collector's,
/// which keeps every batch it stored (so it grows with the run; the agent's part does
/// not: see the keys in memory).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn drain(p: &Mutex<Pipeline>, client: &Client) {
    for _ in 0..1_000 {
        match client.push_once(p) {
            Outcome::Idle => return,
            Outcome::Stored { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    panic!("did not drain");
}

#[test]
fn five_thousand_one_off_projects_leave_batches_and_memory_flat_after_the_window() {
    // The spool on a RAM filesystem where there is one: this test is about sizes, and
    // 5,000 fdatasync calls on a loaded disk only make it slow.
    let dir = tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .unwrap();
    let collector = FakeCollector::start();
    let client = Client::new(
        &collector.url,
        None,
        AgentInfo {
            agent_id: "churn".into(),
            hostname: "churn".into(),
            agent_version: "test".into(),
        },
        Duration::from_secs(10),
        500,
    );
    let cfg = PushConfig {
        batch_interval: Duration::from_secs(1),
        spool_dir: dir.path().to_path_buf(),
        ..PushConfig::default()
    };
    let p = Mutex::new(
        Pipeline::open(&cfg, format!("{:032x}", 1), T0)
            .unwrap()
            .with_active_window(Duration::from_secs(WINDOW_S)),
    );
    let mut now = T0;
    let mut measured = 0u64;
    let mut back_total = 0u64;
    let mut figures = Vec::new();
    for i in 0..5_000u64 {
        now += 1_000;
        // A steady project, a one-off one per cycle, and one that leaves and comes back.
        let mut projects = vec![
            project("steady", 50_000_000),
            project(&format!("pod-{i:05}"), 1_000_003 + i),
        ];
        if i < 10 || (4_000..4_010).contains(&i) {
            projects.push(project("back", 2_000_000));
            back_total += 2_000_000;
        }
        measured += projects.iter().map(|p| p.last_uj).sum::<u64>();
        p.lock()
            .unwrap()
            .on_cycle(now, Duration::from_secs(1), &projects)
            .unwrap();
        if i % 500 == 499 {
            drain(&p, &client);
            let keys = p.lock().unwrap().batcher().active_keys();
            figures.push((i + 1, keys, rss_kib()));
        }
    }
    p.lock().unwrap().seal(now).unwrap();
    drain(&p, &client);
    assert_eq!(collector.problems(), Vec::<String>::new());
    assert_eq!(collector.total_uj(), measured);

    let stored = collector.stored();
    let sizes: Vec<(u64, usize, usize)> = stored
        .iter()
        .map(|(k, b)| (k.2, serde_json::to_vec(b).unwrap().len(), b.counters.len()))
        .collect();
    let at = |seq: u64| sizes.iter().find(|s| s.0 == seq).unwrap();
    for (cycles, keys, rss) in &figures {
        let (_, bytes, counters) = at(*cycles);
        println!(
            "after {cycles:>5} one-off projects: batch {bytes:>5} bytes, {counters:>3} counters, {keys:>3} keys in memory, test process RSS {rss} KiB (fake collector included)"
        );
    }
    // Past the window, a batch carries the counters of the projects active within it
    // (the steady one, ~60 one-off ones, "back" while it is active), whatever the run
    // saw before.
    let after_window: Vec<_> = sizes.iter().filter(|s| s.0 > 2 * WINDOW_S).collect();
    let max_counters = after_window.iter().map(|s| s.2).max().unwrap();
    assert!(
        max_counters <= WINDOW_S as usize + 4,
        "{max_counters} counters"
    );
    let (min_b, max_b) = (
        after_window.iter().map(|s| s.1).min().unwrap(),
        after_window.iter().map(|s| s.1).max().unwrap(),
    );
    assert!(max_b < min_b + min_b / 5, "batch sizes {min_b}..{max_b}");
    for (_, keys, _) in &figures {
        assert!(*keys <= WINDOW_S as usize + 4, "{keys} keys in memory");
    }
    // "back" resumed its run total: its counter after its return is everything it had.
    let last_back = stored
        .values()
        .flat_map(|b| b.counters.iter())
        .filter(|c| c.project == "back")
        .map(|c| c.total_uj)
        .max()
        .unwrap();
    assert_eq!(last_back, back_total);
}
