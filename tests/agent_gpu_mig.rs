//! A MIG GPU as a sysadmin meets it: `empreinte agent check` and `/debug/attribution` say
//! that MIG is on, how the GPU's energy is split, the driver and the persistence mode.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use empreinte_testkit::nvml::{FakeGpu, FakeInstance, FakeNvml, FakeProcess, Scenario};

fn mig_scenario() -> Scenario {
    let mut gpu = FakeGpu::new(0, "NVIDIA A100-SXM4-80GB");
    gpu.energy_mj = Some(1_000_000);
    gpu.power_mw = Some(150_000);
    gpu.mig = Some(true);
    gpu.persistence = Some(true);
    Scenario {
        gpus: vec![gpu],
        driver: Some("560.35.03".into()),
        processes: vec![FakeProcess::new(0, 4242, Some(5 << 30))],
        instances: vec![FakeInstance {
            pid: 4242,
            gpu_instance: 1,
            compute_instance: 0,
        }],
        ..Scenario::default()
    }
}

#[test]
fn check_and_the_debug_page_say_how_a_mig_gpu_is_split() {
    let nvml = FakeNvml::new(&mig_scenario());
    let proc = tempfile::tempdir().unwrap();
    fake_procfs(
        proc.path(),
        "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz",
        4,
        8_000_000,
    );
    let missing = proc.path().join("no-powercap");
    let out = run_ok(&[
        "agent",
        "check",
        "--json",
        "--powercap-root",
        missing.to_str().unwrap(),
        "--nvml-library",
        nvml.library().to_str().unwrap(),
        "--procfs-root",
        proc.path().to_str().unwrap(),
    ]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let gpu = report["diagnoses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["source"] == "nvml" && d["usable"] == true)
        .expect("the MIG GPU is usable");
    let measures = gpu["measures"].as_str().unwrap();
    assert!(
        measures.contains("driver 560.35.03")
            && measures.contains("persistence mode on")
            && measures.contains("MIG on"),
        "{measures}"
    );
    let problem = gpu["problem"].as_str().unwrap();
    assert!(
        problem.contains("MIG enabled") && problem.contains("GPU memory"),
        "{problem}"
    );

    let agent = Agent::spawn(&[
        "--interval",
        "100ms",
        "--powercap-root",
        missing.to_str().unwrap(),
        "--nvml-library",
        nvml.library().to_str().unwrap(),
        "--procfs-root",
        proc.path().to_str().unwrap(),
    ]);
    agent.wait_cycles(2);
    let d = debug(&agent);
    let gpu = d["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["component"] == "gpu")
        .expect("a GPU channel");
    assert_eq!(gpu["gpu"]["mig"], true, "{gpu}");
    assert_eq!(gpu["gpu"]["driver"], "560.35.03");
    assert!(
        gpu["gpu"]["split"].as_str().unwrap().contains("GPU memory"),
        "{gpu}"
    );
    agent.kill();
}
