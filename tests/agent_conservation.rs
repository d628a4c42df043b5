//! Conservation whatever the attribution reads: with no `/proc/stat` under the procfs
//! root, or garbage `cpu` lines in it, the real agent pushes all the energy the fake
//! hardware was given, under `unassigned`, and counts the failed intervals.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use empreinte_testkit::collector::FakeCollector;
use empreinte_testkit::powercap::FakePowercap;
use empreinte_testkit::wait::wait_until;

const ZONES: [&str; 4] = [
    "intel-rapl:0",
    "intel-rapl:1",
    "intel-rapl:0:2",
    "intel-rapl:1:2",
];

fn truth(fp: &FakePowercap) -> u64 {
    ZONES.iter().map(|z| fp.truth_uj(&fp.zone(z)) as u64).sum()
}

/// Runs the agent on `procfs`, gives the fake hardware energy, stops the agent and
/// checks the collector got all of it, under `unassigned`.
fn everything_reaches_the_collector(procfs: &Path) {
    let mut fp = FakePowercap::intel_two_socket();
    let root = fp.root().to_str().unwrap().to_string();
    let collector = FakeCollector::start();
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("agent.token");
    std::fs::write(&token, "e2e-token\n").unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, "[push]\nbatch_interval = \"1s\"\n").unwrap();
    let spool = dir.path().join("spool");
    let agent = Agent::spawn(&[
        "--config",
        config.to_str().unwrap(),
        "--interval",
        "100ms",
        "--powercap-root",
        &root,
        "--procfs-root",
        procfs.to_str().unwrap(),
        "--nvml-library",
        "off",
        "--estimate",
        "off",
        "--collector",
        &collector.url,
        "--token-file",
        token.to_str().unwrap(),
        "--spool-dir",
        spool.to_str().unwrap(),
    ]);
    agent.wait_cycles(2);
    for i in 0..30u64 {
        for z in ZONES {
            let zone = fp.zone(z);
            fp.advance_uj(&zone, 3_000_000 + i * 7);
        }
        agent.wait_cycles(1);
    }
    let given = truth(&fp);
    wait_until(
        "the agent measures all the energy",
        Duration::from_secs(20),
        || (measured_uj(&agent) == given).then_some(()),
    );
    agent.wait_cycles(2);
    let samples = agent.samples();
    assert!(
        value(&samples, "empreinte_attribution_errors_total", &[]).unwrap() > 0.0,
        "the failed intervals are counted"
    );
    let (status, stderr) = agent.terminate();
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(collector.problems(), Vec::<String>::new());
    let by_project = collector.energy_uj();
    let total: u64 = by_project.values().sum();
    assert!(total > 0);
    assert_eq!(total, given, "the collector holds all the measured energy");
    assert!(
        by_project.keys().all(|k| k.0 == "unassigned"),
        "nothing else is known: {by_project:?}"
    );
}

#[test]
fn without_proc_stat_the_energy_goes_to_unassigned_and_is_pushed() {
    let procfs = tempfile::tempdir().unwrap();
    everything_reaches_the_collector(procfs.path());
}

#[test]
fn with_garbage_cpu_lines_the_energy_goes_to_unassigned_and_is_pushed() {
    let procfs = tempfile::tempdir().unwrap();
    let garbage = [
        "cpu",
        "cpu  x y z",
        "cpu  1 2 3",
        "cpu  -1 0 0 0 0 0 0",
        "cpu  1.5 0 0 0 0 0 0",
        "cpu  0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 99999999999999999999999",
        "cpu0 1 2 3 4 5 6 7",
        "cpu  \u{fffd}\u{fffd}",
        "cpu  1 1 1 1 1 1",
        "cpu  one two three four five six seven",
        "cpu  0x10 0 0 0 0 0 0",
        "cpu  +1 0 0 0 0 0 0",
        "cpu  1e3 0 0 0 0 0 0",
        "cpu  NaN 0 0 0 0 0 0",
    ];
    std::fs::write(procfs.path().join("stat"), garbage.join("\n") + "\n").unwrap();
    everything_reaches_the_collector(procfs.path());
}
