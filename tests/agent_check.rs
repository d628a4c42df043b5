//! `empreinte agent check` as a sysadmin reads it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;

#[test]
fn check_says_what_is_estimated_and_why_nothing_is_measured() {
    let proc = tempfile::tempdir().unwrap();
    fake_procfs(proc.path(), "Unknown CPU", 2, 1_000_000);
    let missing = proc.path().join("no-powercap");
    // A labelled process, resolved by the real /proc of this host.
    let mut labelled = std::process::Command::new("sleep")
        .arg("30")
        .env("EMPREINTE_PROJECT", "check-demo")
        .spawn()
        .unwrap();
    // The fake procfs (for the estimate) shows that one real process.
    std::os::unix::fs::symlink(
        format!("/proc/{}", labelled.id()),
        proc.path().join(labelled.id().to_string()),
    )
    .unwrap();
    let out = run_ok(&[
        "agent",
        "check",
        "--json",
        "--powercap-root",
        missing.to_str().unwrap(),
        "--nvml-library",
        proc.path().join("libnvidia-ml.so.1").to_str().unwrap(),
        "--procfs-root",
        proc.path().to_str().unwrap(),
    ]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let diagnoses = report["diagnoses"].as_array().unwrap();
    let by = |source: &'static str| diagnoses.iter().filter(move |d| d["source"] == source);
    assert!(by("rapl").all(|d| d["usable"] == false && d["problem"].as_str().unwrap().contains("no-powercap")));
    assert!(by("rapl").count() >= 1, "RAPL says why it is unusable");
    assert!(
        by("nvml").count() >= 1 && by("nvml").all(|d| d["usable"] == false),
        "NVML says why it is unusable"
    );
    assert_eq!(by("estimate").filter(|d| d["usable"] == true).count(), 2);
    let coverage = report["coverage"].as_array().unwrap();
    assert!(coverage.iter().all(|c| c["measured"] == false));
    let _ = labelled.kill();
    let _ = labelled.wait();
    let project = report["projects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["project"] == "check-demo");
    let project = project.expect("the labelled process resolves to its project");
    let example = &project["examples"][0];
    assert_eq!(example["pid"], labelled.id());
    assert!(
        example["reason"]
            .as_str()
            .unwrap()
            .contains("EMPREINTE_PROJECT=check-demo")
    );
}
