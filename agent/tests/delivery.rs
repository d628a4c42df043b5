//! Every joule delivered (issue 18): the push pipeline (batcher, spool, client) against a
//! fake collector, driven cycle by cycle, under the conditions that used to stop a host's
//! deliveries: a counter jump, a batch the collector refuses on its own, names measured
//! in characters, a backlog larger than the collector's body limit, a stepped wall clock,
//! a full disk and a damaged cursor. Each time: collector total + energy counted as set
//! aside or dropped = energy measured, to the microjoule.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use empreinte_agent::attribution::engine::ProjectEnergy;
use empreinte_agent::clock::{SampleTime, WallAnchor};
use empreinte_agent::config::PushConfig;
use empreinte_agent::push::client::{Client, Outcome};
use empreinte_agent::push::spool::{REJECTED_DIR, RejectedBatch, Spool, SpoolLimits};
use empreinte_agent::push::{Pipeline, PushMetrics};
use empreinte_shared::wire::Limits;
use empreinte_shared::{Component, SourceKind};
use empreinte_testkit::collector::{FakeCollector, Mode, test_agent};

const T0: u64 = 1_800_000_000_000;

fn config(dir: &Path, batch_interval: Duration) -> PushConfig {
    PushConfig {
        collector: None,
        batch_interval,
        spool_dir: dir.to_path_buf(),
        ..PushConfig::default()
    }
}

fn client(collector: &FakeCollector, max_batches: usize) -> Client {
    Client::new(
        &collector.url,
        None,
        test_agent("gpu-node-01"),
        Duration::from_secs(30),
        max_batches,
    )
}

fn run_id(n: u8) -> String {
    format!("{n:032x}")
}

fn project(name: &str, uj: u64) -> ProjectEnergy {
    ProjectEnergy {
        project: Arc::from(name),
        component: Component::Cpu,
        source: SourceKind::Rapl,
        total_uj: 0,
        last_uj: uj,
    }
}

/// Pushes until nothing waits; every outcome must be progress. Returns the outcomes.
fn drain(pipeline: &Mutex<Pipeline>, client: &Client) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    for _ in 0..5_000 {
        let o = client.push_once(pipeline);
        let done = matches!(o, Outcome::Idle);
        outcomes.push(o);
        if done {
            return outcomes;
        }
        assert!(
            matches!(
                outcomes.last(),
                Some(Outcome::Stored { .. } | Outcome::Halved { .. } | Outcome::SetAside { .. })
            ),
            "delivery stopped: {:?}",
            outcomes.last()
        );
    }
    panic!("the spool did not drain");
}

fn metrics(p: &Mutex<Pipeline>) -> PushMetrics {
    p.lock().unwrap().metrics().lock().clone()
}

fn rejected_files(dir: &Path) -> Vec<RejectedBatch> {
    let Ok(entries) = std::fs::read_dir(dir.join(REJECTED_DIR)) else {
        return vec![];
    };
    entries
        .map(|e| serde_json::from_slice(&std::fs::read(e.unwrap().path()).unwrap()).unwrap())
        .collect()
}

/// Feeds `cycles` of 1 s ending after `*now`; returns the energy fed.
fn feed(
    pipeline: &Mutex<Pipeline>,
    now: &mut u64,
    cycles: u64,
    mut energy: impl FnMut(u64) -> Vec<ProjectEnergy>,
) -> u64 {
    let mut fed = 0;
    for i in 0..cycles {
        *now += 1_000;
        let projects = energy(i);
        fed += projects.iter().map(|p| p.last_uj).sum::<u64>();
        let _ = pipeline
            .lock()
            .unwrap()
            .on_cycle(*now, Duration::from_secs(1), &projects);
    }
    fed
}

#[test]
fn a_counter_jump_is_set_aside_before_sealing_and_delivery_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let collector = FakeCollector::start();
    let p = Mutex::new(
        Pipeline::open(&config(dir.path(), Duration::from_secs(1)), run_id(1), T0).unwrap(),
    );
    let client = client(&collector, 500);
    let mut now = T0;
    // 150 W, then one cycle with a +200 kJ jump (200 kW over one second), then 150 W.
    let measured = feed(&p, &mut now, 60, |i| {
        let jump = if i == 20 { 200_000_000_000 } else { 0 };
        vec![
            project("chat", 100_000_000 + jump),
            project("train", 50_000_007),
        ]
    });
    p.lock().unwrap().seal(now).unwrap();
    drain(&p, &client);
    let m = metrics(&p);
    assert_eq!(collector.problems(), Vec::<String>::new());
    assert_eq!(m.rejected_batches_total, 1);
    assert_eq!(
        collector.total_uj() + m.rejected_energy_uj_total,
        measured,
        "collector + set aside = measured, to the µJ"
    );
    let rejected = rejected_files(dir.path());
    assert_eq!(rejected.len(), 1);
    assert!(
        rejected[0]
            .message
            .contains("more than the 50000 W a host can draw"),
        "{}",
        rejected[0].message
    );
    assert_eq!(rejected[0].status, None);
    // Batches after the jump were delivered.
    let last_seq = collector.stored().keys().map(|k| k.2).max().unwrap();
    assert!(last_seq > 50, "{last_seq}");
}

#[test]
fn names_of_100_e_are_cut_in_bytes_and_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let collector = FakeCollector::start();
    let p = Mutex::new(
        Pipeline::open(&config(dir.path(), Duration::from_secs(5)), run_id(2), T0).unwrap(),
    );
    let client = client(&collector, 500);
    let mut now = T0;
    let long = "é".repeat(100);
    let measured = feed(&p, &mut now, 30, |_| {
        vec![project(&long, 3_000_001), project("short", 5)]
    });
    p.lock().unwrap().seal(now).unwrap();
    drain(&p, &client);
    assert_eq!(collector.problems(), Vec::<String>::new());
    assert_eq!(collector.total_uj(), measured);
    assert_eq!(metrics(&p).rejected_batches_total, 0);
    let names: Vec<String> = collector.energy_uj().keys().map(|k| k.0.clone()).collect();
    assert!(names.contains(&"é".repeat(64)), "{names:?}");
}

#[test]
fn a_batch_refused_on_its_own_is_found_by_halving_and_set_aside() {
    let dir = tempfile::tempdir().unwrap();
    let collector = FakeCollector::start();
    // A collector stricter than the agent: 2 kW per host.
    collector.set_limits(Limits {
        max_host_power_watts: 2_000.0,
        ..Limits::default()
    });
    collector.set_mode(Mode::Down);
    let p = Mutex::new(
        Pipeline::open(&config(dir.path(), Duration::from_secs(1)), run_id(3), T0).unwrap(),
    );
    let client = client(&collector, 64);
    let mut now = T0;
    let measured = feed(&p, &mut now, 200, |i| {
        let spike = if i == 77 { 5_000_000_000 } else { 0 };
        vec![project("chat", 300_000_013 + spike)]
    });
    p.lock().unwrap().seal(now).unwrap();
    assert!(matches!(client.push_once(&p), Outcome::Failed { .. }));
    collector.set_mode(Mode::Healthy);
    let outcomes = drain(&p, &client);
    assert!(
        outcomes
            .iter()
            .any(|o| matches!(o, Outcome::Halved { status: 422, .. })),
        "{outcomes:?}"
    );
    let set_aside: Vec<_> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::SetAside { seq, status, .. } => Some((*seq, *status)),
            _ => None,
        })
        .collect();
    assert_eq!(set_aside, [(78, 422)]);
    let m = metrics(&p);
    assert_eq!(m.rejected_batches_total, 1);
    assert_eq!(collector.total_uj() + m.rejected_energy_uj_total, measured);
    let rejected = rejected_files(dir.path());
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].status, Some(422));
    assert!(
        rejected[0].message.contains("2000 W"),
        "{}",
        rejected[0].message
    );
    assert_eq!(p.lock().unwrap().spool().batches(), 0);
    // After the refusal, pushes grow back to full size.
    assert_eq!(client.push_size(), 64);
}

#[test]
fn a_two_hour_backlog_of_400_projects_over_the_body_limit_is_delivered_in_halves() {
    let dir = tempfile::tempdir().unwrap();
    let collector = FakeCollector::start();
    // A collector with a 4 MiB body limit (the default is 16 MiB: same mechanism, a
    // quarter of the data to build in a test).
    collector.set_max_body(4 * 1024 * 1024);
    collector.set_mode(Mode::Down);
    let p = Mutex::new(
        Pipeline::open(&config(dir.path(), Duration::from_secs(60)), run_id(4), T0).unwrap(),
    );
    let client = client(&collector, 500);
    let names: Vec<String> = (0..400).map(|i| format!("project-{i:03}")).collect();
    let mut now = T0;
    let mut measured = 0;
    // Two hours of 60 s cycles and batches, every project active.
    for i in 0..120u64 {
        now += 60_000;
        let projects: Vec<ProjectEnergy> = names
            .iter()
            .enumerate()
            .map(|(j, n)| project(n, 1_000_000 + (i * 7 + j as u64) % 1_000))
            .collect();
        measured += projects.iter().map(|p| p.last_uj).sum::<u64>();
        p.lock()
            .unwrap()
            .on_cycle(now, Duration::from_secs(60), &projects)
            .unwrap();
    }
    p.lock().unwrap().seal(now).unwrap();
    let waiting = p.lock().unwrap().spool().bytes();
    assert!(waiting > 8 * 1024 * 1024, "{waiting} bytes waiting");
    collector.set_mode(Mode::Healthy);
    drain(&p, &client);
    assert!(collector.statuses().get(&413).copied().unwrap_or(0) >= 1);
    assert_eq!(collector.problems(), Vec::<String>::new());
    assert_eq!(collector.total_uj(), measured);
    assert_eq!(metrics(&p).rejected_batches_total, 0);
}

#[test]
fn a_stepped_wall_clock_dates_no_batch_in_the_future_and_a_run_started_ahead_still_flows() {
    let dir = tempfile::tempdir().unwrap();
    let collector = FakeCollector::start();
    let client = client(&collector, 500);
    let ten_min = 600_000;
    // The wall clock reads 10 min ahead for 6 s, then is corrected. Batches are dated by
    // the sampling clock anchored once, at the start: the step changes nothing.
    let wall = |true_ms: u64, i: u64| {
        if (20..26).contains(&i) {
            true_ms + ten_min
        } else {
            true_ms
        }
    };
    let anchor = WallAnchor::new(wall(T0, 0));
    let p = Mutex::new(
        Pipeline::open(&config(dir.path(), Duration::from_secs(1)), run_id(5), T0).unwrap(),
    );
    let mut measured = 0;
    for i in 1..=60u64 {
        let at = SampleTime::from_monotonic(Duration::from_secs(i));
        let end = anchor.unix_ms(at);
        assert!(end <= wall(T0 + i * 1_000, 0), "never ahead of true time");
        let projects = vec![project("chat", 200_000_000)];
        measured += 200_000_000;
        p.lock()
            .unwrap()
            .on_cycle(end, Duration::from_secs(1), &projects)
            .unwrap();
        // The collector's clock is true time.
        collector.set_now(T0 + i * 1_000);
        let _ = client.push_once(&p);
    }
    p.lock()
        .unwrap()
        .seal(anchor.unix_ms(SampleTime::from_monotonic(Duration::from_secs(60))))
        .unwrap();
    drain(&p, &client);
    assert_eq!(collector.problems(), Vec::<String>::new());
    assert_eq!(collector.total_uj(), measured);

    // A run that started while the wall clock was 10 min ahead dates its batches 10 min
    // ahead; the collector refuses them one by one and delivery goes on: nothing is
    // stuck, everything is counted.
    let dir = tempfile::tempdir().unwrap();
    let collector = FakeCollector::start();
    let client = self::client(&collector, 500);
    let ahead = WallAnchor::new(T0 + ten_min);
    let p = Mutex::new(
        Pipeline::open(&config(dir.path(), Duration::from_secs(1)), run_id(6), T0).unwrap(),
    );
    for i in 1..=10u64 {
        let at = SampleTime::from_monotonic(Duration::from_secs(i));
        p.lock()
            .unwrap()
            .on_cycle(
                ahead.unix_ms(at),
                Duration::from_secs(1),
                &[project("chat", 7)],
            )
            .unwrap();
    }
    p.lock()
        .unwrap()
        .seal(ahead.unix_ms(SampleTime::from_monotonic(Duration::from_secs(10))))
        .unwrap();
    collector.set_now(T0 + 10_000);
    drain(&p, &client);
    let m = metrics(&p);
    assert_eq!(collector.total_uj() + m.rejected_energy_uj_total, 70);
    assert!(m.rejected_batches_total >= 9, "{m:?}");
    assert_eq!(p.lock().unwrap().spool().batches(), 0);
    // Age limits count from sealing: a future-dated batch found at opening ages from then.
}

/// A tmpfs of 64 KiB, unmounted when dropped. Needs root (`mount`), as the CI has.
struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    fn mount() -> SmallFs {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("mount(8) is needed for the full-disk test");
        assert!(
            out.status.success(),
            "cannot mount a 64 KiB tmpfs (the full-disk test runs as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallFs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

/// Fills the filesystem of `dir` with a file until it refuses more.
fn fill(dir: &Path) -> std::path::PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 1024];
    while f.write_all(&chunk).and_then(|()| f.sync_all()).is_ok() {}
    let mut byte = [0u8; 1];
    while f.write_all(&byte).and_then(|()| f.sync_all()).is_ok() {
        byte[0] = 1;
    }
    path
}

#[test]
fn a_full_disk_loses_nothing_silently_and_leaves_no_glued_line() {
    let fs = SmallFs::mount();
    let spool_dir = fs.path().join("spool");
    let collector = FakeCollector::start();
    let client = client(&collector, 500);
    let cfg = PushConfig {
        spool_max_bytes: 1024 * 1024,
        ..config(&spool_dir, Duration::from_secs(1))
    };
    let p = Mutex::new(Pipeline::open(&cfg, run_id(7), T0).unwrap());
    let mut now = T0;
    let energy = |i: u64| {
        vec![
            project("chat", 100_000_000 + i),
            project(&format!("job-{}", i % 3), 7_000_001),
        ]
    };
    let mut measured = feed(&p, &mut now, 10, energy);
    drain(&p, &client);
    // The disk fills up for 10 s: appends fail half-way, open.json cannot be rewritten.
    let filler = fill(fs.path());
    measured += feed(&p, &mut now, 10, energy);
    let _ = client.push_once(&p);
    let m = metrics(&p);
    assert!(m.spool_errors_total >= 5, "{m:?}");
    assert!(
        m.unwritten_batches >= 5,
        "the energy waits in memory: {m:?}"
    );
    // Space comes back.
    std::fs::remove_file(filler).unwrap();
    measured += feed(&p, &mut now, 10, energy);
    p.lock().unwrap().seal(now).unwrap();
    drain(&p, &client);
    let m = metrics(&p);
    assert_eq!(m.unwritten_batches, 0);
    assert_eq!(collector.problems(), Vec::<String>::new());
    assert_eq!(
        collector.total_uj() + m.dropped_energy_uj_total,
        measured,
        "collector + counted dropped = measured, to the µJ"
    );
    assert_eq!(m.dropped_energy_uj_total, 0, "nothing had to be dropped");
    // No torn or glued line is left: the spool reopens without a corrupt line, and its
    // sequence numbers have no gaps.
    drop(p);
    let spool = Spool::open(&spool_dir, SpoolLimits::new(1 << 20, 86_400_000), now).unwrap();
    assert_eq!(spool.counts().corrupt_lines_total, 0);
    let seqs: Vec<u64> = collector.stored().keys().map(|k| k.2).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
}

/// Log lines written while `f` runs, at warning level and above.
fn logs_of<T>(f: impl FnOnce() -> T) -> (T, String) {
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let out = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    (out, text)
}

#[test]
fn a_damaged_cursor_falls_back_to_the_oldest_batch_with_a_warning() {
    for damage in ["0 99999999", "99 0"] {
        let dir = tempfile::tempdir().unwrap();
        let collector = FakeCollector::start();
        let client = client(&collector, 500);
        let cfg = config(dir.path(), Duration::from_secs(1));
        let mut now = T0;
        // Run 1: 7 batches (and more, over several segments), none delivered.
        let measured = {
            let p = Mutex::new(Pipeline::open(&cfg, run_id(8), now).unwrap());
            let fed = feed(&p, &mut now, 300, |i| vec![project("chat", 1_000_000 + i)]);
            p.lock().unwrap().seal(now).unwrap();
            fed
        };
        std::fs::write(dir.path().join("acked"), format!("{damage}\n")).unwrap();
        let (p, logs) = logs_of(|| Pipeline::open(&cfg, run_id(9), now).unwrap());
        assert!(
            logs.contains("spool cursor") && logs.contains("oldest batch"),
            "{damage}: {logs}"
        );
        assert!(p.spool().counts().cursor_reset, "{damage}");
        let p = Mutex::new(p);
        drain(&p, &client);
        assert_eq!(collector.total_uj(), measured, "{damage}: nothing lost");
    }
}

#[test]
fn a_disk_full_for_longer_than_memory_keeps_batches_counts_what_it_drops() {
    use empreinte_agent::push::MAX_UNWRITTEN_BATCHES;
    let fs = SmallFs::mount();
    let spool_dir = fs.path().join("spool");
    let collector = FakeCollector::start();
    let client = client(&collector, 500);
    // A spool limit below the filesystem's size, with small segments.
    let cfg = PushConfig {
        spool_max_bytes: 32 * 1024,
        ..config(&spool_dir, Duration::from_secs(1))
    };
    let p = Mutex::new(Pipeline::open(&cfg, run_id(10), T0).unwrap());
    let mut now = T0;
    let mut measured = feed(&p, &mut now, 5, |i| vec![project("chat", 1_000 + i)]);
    let filler = fill(fs.path());
    let full_cycles = MAX_UNWRITTEN_BATCHES as u64 + 40;
    measured += feed(&p, &mut now, full_cycles, |i| {
        vec![project("chat", 2_000 + i)]
    });
    let m = metrics(&p);
    assert_eq!(m.unwritten_batches, MAX_UNWRITTEN_BATCHES as u64);
    assert!(m.spool.dropped_batches_total >= 30, "{m:?}");
    assert!(m.dropped_energy_uj_total > 0);
    std::fs::remove_file(filler).unwrap();
    // Space is back: each cycle appends what the limits let in, each push frees
    // segments, until memory holds nothing.
    for i in 0..200 {
        measured += feed(&p, &mut now, 1, |_| vec![project("chat", 3_000 + i)]);
        drain(&p, &client);
        if metrics(&p).unwritten_batches == 0 {
            break;
        }
    }
    assert_eq!(metrics(&p).unwritten_batches, 0);
    p.lock().unwrap().seal(now).unwrap();
    drain(&p, &client);
    let m = metrics(&p);
    assert_eq!(collector.problems(), Vec::<String>::new());
    assert_eq!(
        collector.total_uj() + m.dropped_energy_uj_total,
        measured,
        "collector + counted dropped = measured, to the µJ"
    );
}
