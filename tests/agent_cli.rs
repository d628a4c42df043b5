//! The `empreinte agent` command as a sysadmin meets it: the estimate on a host with
//! nothing to measure, configuration errors, the check, the example config.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;

#[test]
fn a_host_with_nothing_measurable_runs_on_the_labelled_estimate() {
    let proc = tempfile::tempdir().unwrap();
    // Intel Xeon Gold 6338: 205 W for 64 threads; this host sees 8 of them.
    fake_procfs(
        proc.path(),
        "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz",
        8,
        32_000_000,
    );
    let empty = tempfile::tempdir().unwrap();
    let agent = Agent::spawn(&[
        "--interval",
        "100ms",
        "--powercap-root",
        empty.path().to_str().unwrap(),
        "--nvml-library",
        "off",
        "--procfs-root",
        proc.path().to_str().unwrap(),
    ]);
    // Fully busy from now on: busy ticks grow, idle ticks do not, while the agent samples.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ticker = {
        let (stop, dir) = (stop.clone(), proc.path().to_path_buf());
        std::thread::spawn(move || {
            let mut busy = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                busy += 10;
                set_proc_stat(&dir, busy, 0);
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        })
    };
    agent.wait_cycles(3);
    let samples = agent.samples();
    let energy: Vec<_> = samples
        .iter()
        .filter(|s| s.metric == "empreinte_host_energy_joules_total")
        .collect();
    assert_eq!(energy.len(), 2, "cpu and dram, estimated");
    assert!(
        energy
            .iter()
            .all(|s| s.labels.get("source") == Some("estimate"))
    );
    // At full load the CPU power is the threads' share of the TDP, 205 / 64 × 8 W, times
    // the curve's 1.004 at 100 % (agent/data/estimate.toml).
    let cpu_power = value(
        &samples,
        "empreinte_host_power_watts",
        &[("component", "cpu")],
    )
    .unwrap();
    assert!(
        (cpu_power - 205.0 / 64.0 * 8.0 * 1.004).abs() < 0.01,
        "cpu power {cpu_power}"
    );
    // DRAM: MemTotal 32e6 KiB, assumed 8 × 4 GiB modules (no EDAC in the test's
    // machine): 8 × 2 W + 34.36 GB × 0.065 W/GB.
    let dram_power = value(
        &samples,
        "empreinte_host_power_watts",
        &[("component", "dram")],
    )
    .unwrap();
    assert!(
        (dram_power - (16.0 + 32.0 * 1.073_741_824 * 0.065)).abs() < 0.01,
        "dram power {dram_power}"
    );
    assert_eq!(
        value(&samples, "empreinte_source_up", &[("source", "estimate")]),
        Some(1.0)
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    ticker.join().unwrap();
}

#[test]
fn metrics_pass_promtool_lint() {
    let Some(promtool) = promtool() else { return };
    let proc = tempfile::tempdir().unwrap();
    fake_procfs(proc.path(), "Unknown CPU", 2, 1_000_000);
    let agent = Agent::spawn(&[
        "--interval",
        "100ms",
        "--nvml-library",
        "off",
        "--procfs-root",
        proc.path().to_str().unwrap(),
    ]);
    agent.wait_cycles(2);
    promtool_check(promtool, &agent.scrape());
}

#[test]
fn a_malformed_config_gives_one_clear_message_per_problem_and_no_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(
        &path,
        "interval = \"5ms\"\n[estimate]\ncpu_idle_fraction = 2.0\n",
    )
    .unwrap();
    let out = run(&["agent", "--config", path.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("2 problems"), "{err}");
    assert!(err.contains("interval: 5ms is out of range"), "{err}");
    assert!(
        err.contains("estimate.cpu_idle_fraction: 2 is not allowed"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");

    std::fs::write(&path, "[rapl]\nroot = 3\n").unwrap();
    let out = run(&["agent", "check", "--config", path.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("line 2") && err.contains("root = 3"), "{err}");
}

#[test]
fn a_bad_flag_value_says_what_is_allowed() {
    let out = run(&["agent", "--interval", "soon"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("--interval") && err.contains("\"500ms\""),
        "{err}"
    );
    let out = run(&["agent", "check", "--estimate", "sometimes"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("expected \"fallback\" or \"off\""), "{err}");
}

#[test]
fn the_deployed_example_config_is_what_the_binary_generates() {
    let out = run(&["agent", "default-config"]);
    assert!(out.status.success());
    let generated = String::from_utf8(out.stdout).unwrap();
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/agent.toml")).unwrap();
    assert_eq!(
        shipped, generated,
        "deploy/agent.toml differs from `empreinte agent default-config`: regenerate it with `cargo run -- agent default-config > deploy/agent.toml`"
    );
}
