//! The real `empreinte agent` binary on fake hardware: a powercap tree and a fake NVML
//! library advanced at known powers while the agent samples on its own schedule.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use empreinte_testkit::nvml::{FakeGpu, FakeNvml, Scenario};
use empreinte_testkit::powercap::{FakePowercap, ZoneHandle};

#[test]
fn exported_joules_match_what_the_fake_hardware_consumed() {
    let mut fp = FakePowercap::intel_two_socket();
    // Start package-0 close to its wrap, so that it wraps during the run.
    let pkg0 = fp.zone("intel-rapl:0");
    let max = fp.max_energy_range_uj(&pkg0);
    fp.set_energy_uj(&pkg0, max - 3_000_000);
    let mut gpu = FakeGpu::new(0, "NVIDIA A100-SXM4-40GB");
    gpu.energy_mj = Some(50_000);
    // No power reading: the counter, advanced at the test's pace, is the ground truth (a
    // fixed power reading would contradict it on a slow machine, and the agent
    // cross-checks the two).
    gpu.power_mw = None;
    let mut scenario = Scenario {
        gpus: vec![gpu],
        ..Scenario::default()
    };
    let nvml = FakeNvml::new(&scenario);

    let proc = tempfile::tempdir().unwrap();
    fake_procfs(
        proc.path(),
        "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz",
        4,
        8_000_000,
    );
    let agent = Agent::spawn(&[
        "--interval",
        "100ms",
        "--powercap-root",
        fp.root().to_str().unwrap(),
        "--nvml-library",
        nvml.library().to_str().unwrap(),
        "--procfs-root",
        proc.path().to_str().unwrap(),
    ]);
    agent.wait_cycles(2);
    let start: Vec<(ZoneHandle, u128)> = fp
        .zones()
        .into_iter()
        .map(|z| (z.clone(), fp.truth_uj(&z)))
        .collect();
    let mut gpu_truth_mj = 0u64;

    // 40 steps of 25 ms: the agent samples every 100 ms, so it sees at most one wrap per
    // interval; powers differ per zone.
    let powers = [
        ("intel-rapl:0", 180.0),
        ("intel-rapl:0:2", 20.0),
        ("intel-rapl:1", 90.0),
        ("intel-rapl:1:2", 15.0),
    ];
    let overlapping = [
        ("intel-rapl:0:0", 100.0),
        ("intel-rapl:0:1", 30.0),
        ("intel-rapl:2", 400.0),
    ];
    for _ in 0..40 {
        for (id, w) in powers.iter().chain(&overlapping) {
            let z = fp.zone(id);
            fp.advance(&z, *w, Duration::from_millis(25));
        }
        gpu_truth_mj += 7_500; // 300 W × 25 ms
        scenario.gpus[0].energy_mj = Some(50_000 + gpu_truth_mj);
        nvml.play(&scenario);
        std::thread::sleep(Duration::from_millis(25));
    }
    agent.wait_cycles(3);
    let samples = agent.samples();
    let truth = |id: &str| {
        let (z, s) = start.iter().find(|(z, _)| z.id() == id).unwrap();
        (fp.truth_uj(z) - s) as f64 / 1e6
    };
    let exported = |component: &str, device: &str| {
        value(
            &samples,
            "empreinte_host_energy_joules_total",
            &[
                ("component", component),
                ("device", device),
                ("source", "rapl"),
            ],
        )
        .unwrap_or_else(|| panic!("no {component} {device} series"))
    };
    // The series also counts what happened between the agent's start and `start`: none,
    // since the test advanced nothing before.
    for (component, device, id) in [
        ("cpu", "package-0", "intel-rapl:0"),
        ("cpu", "package-1", "intel-rapl:1"),
        ("dram", "package-0", "intel-rapl:0:2"),
        ("dram", "package-1", "intel-rapl:1:2"),
    ] {
        let (e, t) = (exported(component, device), truth(id));
        assert!(
            (e - t).abs() <= t * 0.005,
            "{component} {device}: exported {e} J, truth {t} J"
        );
    }
    // Overlapping zones are raw only, never in the host series.
    assert_eq!(
        samples
            .iter()
            .filter(|s| s.metric == "empreinte_host_energy_joules_total")
            .count(),
        5
    );
    let psys = value(
        &samples,
        "empreinte_rapl_zone_energy_joules_total",
        &[("name", "psys")],
    )
    .unwrap();
    assert!((psys - truth("intel-rapl:2")).abs() <= truth("intel-rapl:2") * 0.005);
    assert_eq!(
        value(
            &samples,
            "empreinte_energy_reading_corrections_total",
            &[("device", "intel-rapl:0"), ("kind", "wrap")]
        ),
        Some(1.0)
    );

    let gpu = value(
        &samples,
        "empreinte_host_energy_joules_total",
        &[("component", "gpu"), ("source", "nvml")],
    )
    .unwrap();
    let gpu_truth = gpu_truth_mj as f64 / 1000.0;
    assert!(
        (gpu - gpu_truth).abs() <= gpu_truth * 0.005,
        "gpu: exported {gpu} J, truth {gpu_truth} J"
    );
    let gpu_series = samples
        .iter()
        .find(|s| {
            s.metric == "empreinte_host_energy_joules_total"
                && s.labels.get("component") == Some("gpu")
        })
        .unwrap();
    assert_eq!(gpu_series.labels.get("gpu"), Some("0"));
    assert_eq!(
        gpu_series.labels.get("model"),
        Some("NVIDIA A100-SXM4-40GB")
    );
    assert!(gpu_series.labels.get("uuid").unwrap().starts_with("GPU-"));
    assert_eq!(
        value(&samples, "empreinte_source_up", &[("source", "rapl")]),
        Some(1.0)
    );
    assert_eq!(
        value(&samples, "empreinte_source_up", &[("source", "nvml")]),
        Some(1.0)
    );
    assert!(
        samples
            .iter()
            .all(|s| s.labels.get("source") != Some("estimate")),
        "nothing estimated when measured"
    );
}

#[test]
fn counters_never_decrease_across_scrapes() {
    let mut fp = FakePowercap::amd();
    let agent = Agent::spawn(&[
        "--interval",
        "100ms",
        "--powercap-root",
        fp.root().to_str().unwrap(),
        "--nvml-library",
        "off",
    ]);
    let mut last: Vec<(String, f64)> = Vec::new();
    for round in 0..8 {
        for z in fp.zones() {
            fp.advance(&z, 50.0 + round as f64, Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(60));
        let now: Vec<(String, f64)> = agent
            .samples()
            .into_iter()
            .filter(|s| s.metric.ends_with("_total"))
            .map(|s| {
                let v = match s.value {
                    prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
                    _ => panic!("a _total series is a counter"),
                };
                (format!("{}{:?}", s.metric, s.labels), v)
            })
            .collect();
        for (k, v) in &now {
            if let Some((_, before)) = last.iter().find(|(k2, _)| k2 == k) {
                assert!(v >= before, "{k} went from {before} to {v}");
            }
        }
        last = now;
    }
    // AMD: packages are cpu, and DRAM (no RAPL zone) is estimated.
    let samples = agent.samples();
    assert_eq!(
        samples
            .iter()
            .filter(|s| s.metric == "empreinte_host_energy_joules_total"
                && s.labels.get("source") == Some("rapl"))
            .count(),
        2
    );
    assert_eq!(
        samples
            .iter()
            .filter(|s| s.metric == "empreinte_host_energy_joules_total"
                && s.labels.get("component") == Some("dram"))
            .map(|s| s.labels.get("source").unwrap().to_string())
            .collect::<Vec<_>>(),
        ["estimate"]
    );
}
