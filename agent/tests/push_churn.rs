//! Bounded by what is active (issue 18 item 7): 5,000 one-off project names over a run
//! (as `project_from = pod_name` makes) leave the batches, and the push's memory, as
//! large as the projects active within the window; a project that comes back resumes its
//! cumulative counter. Prints the figures (batch size, counters, keys in memory, the
//! process's RSS; the fake collector keeps only batch names):
//! `cargo test -p empreinte-agent --test push_churn -- --nocapture`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use empreinte_agent::attribution::engine::ProjectEnergy;
use empreinte_agent::config::PushConfig;
use empreinte_agent::push::Pipeline;
use empreinte_agent::push::client::{Client, Outcome};
use empreinte_shared::{Component, SourceKind};
use empreinte_testkit::collector::{FakeCollector, test_agent};

const T0: u64 = 1_800_000_000_000;
const WINDOW_S: u64 = 60;
const NAMES: u64 = 5_000;

fn project(name: &str, uj: u64) -> ProjectEnergy {
    ProjectEnergy {
        project: Arc::from(name),
        component: Component::Gpu,
        source: SourceKind::Nvml,
        total_uj: 0,
        last_uj: uj,
    }
}

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

/// One figure, every 500 names.
#[derive(Debug)]
struct Figure {
    names: u64,
    batch_bytes: usize,
    counters: usize,
    keys: usize,
    rss_kib: u64,
}

/// A run of `NAMES` one-off projects (one new per 1 s cycle, a steady one, and "back",
/// which leaves for over an hour of cycles and comes back), with keys kept in memory
/// while active within `window`. Returns the figures, and the last counter of "back"
/// against its measured total.
fn run(window: Duration) -> (Vec<Figure>, u64, u64) {
    // The spool on a RAM filesystem where there is one: this is about sizes, and
    // thousands of fdatasync calls on a loaded disk only make it slow.
    let dir = tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .unwrap();
    let collector = FakeCollector::start();
    collector.keep_names_only();
    let client = Client::new(
        &collector.url,
        None,
        test_agent("churn"),
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
            .with_active_window(window),
    );
    let mut now = T0;
    let mut measured = 0u64;
    let mut back_total = 0u64;
    let mut last_back_counter = 0u64;
    let mut figures = Vec::new();
    for i in 0..NAMES {
        now += 1_000;
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
        if i % 100 == 99 {
            // What waits in the spool is what goes on the wire.
            let pending = p.lock().unwrap().spool().read_pending(1_000).unwrap();
            for b in &pending.batches {
                for c in b.counters.iter().filter(|c| c.project == "back") {
                    last_back_counter = last_back_counter.max(c.total_uj);
                }
            }
            if (i + 1) % 500 == 0 {
                let last = pending.batches.last().unwrap();
                figures.push(Figure {
                    names: i + 1,
                    batch_bytes: serde_json::to_vec(last).unwrap().len(),
                    counters: last.counters.len(),
                    keys: p.lock().unwrap().batcher().active_keys(),
                    rss_kib: rss_kib(),
                });
            }
            drain(&p, &client);
        }
    }
    p.lock().unwrap().seal(now).unwrap();
    drain(&p, &client);
    assert_eq!(collector.problems(), Vec::<String>::new());
    assert_eq!(collector.total_uj(), measured);
    (figures, last_back_counter, back_total)
}

#[test]
fn five_thousand_one_off_projects_leave_batches_and_memory_flat_after_the_window() {
    let (bounded, back_counter, back_total) = run(Duration::from_secs(WINDOW_S));
    println!("one-off projects | window {WINDOW_S} s: batch bytes, counters, keys, RSS KiB");
    for a in &bounded {
        println!(
            "{:>5} | {:>7} {:>5} {:>5} {:>6}",
            a.names, a.batch_bytes, a.counters, a.keys, a.rss_kib
        );
    }
    // With the window: a batch carries the counters of the projects active within it
    // (the steady one, ~60 one-off ones, "back" while active), whatever the run saw.
    for f in &bounded {
        assert!(f.counters <= WINDOW_S as usize + 4, "{f:?}");
        assert!(f.keys <= WINDOW_S as usize + 4, "{f:?}");
    }
    let bytes: Vec<usize> = bounded.iter().map(|f| f.batch_bytes).collect();
    let (min_b, max_b) = (*bytes.iter().min().unwrap(), *bytes.iter().max().unwrap());
    assert!(max_b < min_b + min_b / 5, "batch sizes {bytes:?}");
    // "back" resumed its run total: its counter after its return is all it had.
    assert_eq!(back_counter, back_total);
}
