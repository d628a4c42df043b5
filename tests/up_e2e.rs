//! `empreinte up` on a fake powercap host: one process runs the collector and the agent,
//! prints where things are, and on SIGTERM delivers the agent's last batch before the
//! collector closes; the store then holds exactly the energy the host was given. A
//! second `up` on the same data directory exits 2 naming the first one's PID.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::Duration;

use common::*;
use empreinte_testkit::powercap::FakePowercap;

fn scrape(url: &str) -> Option<String> {
    ureq::get(url).call().ok()?.body_mut().read_to_string().ok()
}

fn measured(agent_base: &str) -> u64 {
    let text = scrape(&format!("{agent_base}/debug/attribution")).unwrap();
    let d: serde_json::Value = serde_json::from_str(&text).unwrap();
    d["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["total_uj"].as_u64().unwrap())
        .sum()
}

#[test]
fn up_runs_both_and_nothing_measured_is_lost_at_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut fp = FakePowercap::intel_two_socket();
    let (port, agent_port) = (free_port(), free_port());
    let mut child = Command::new(BIN)
        .args([
            "up",
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--agent-listen",
            &format!("127.0.0.1:{agent_port}"),
            "--powercap-root",
            fp.root().to_str().unwrap(),
            "--nvml-library",
            "off",
            "--interval",
            "200ms",
            "--batch-interval",
            "1s",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let agent_base = format!("http://127.0.0.1:{agent_port}");
    let mut cycles = 0.0;
    for _ in 0..200 {
        if let Some(text) = scrape(&format!("{agent_base}/metrics")) {
            cycles =
                value(&parse(&text), "empreinte_agent_sampling_cycles_total", &[]).unwrap_or(0.0);
            if cycles >= 2.0 {
                break;
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            panic!("up exited with {status}: {err}");
        }
        sleep(Duration::from_millis(50));
    }
    assert!(cycles >= 2.0, "the agent of up did not sample");
    // A second `up` on the same data directory (other ports) exits 2 and names the
    // first one's PID, touching nothing: the first one's totals below stay exact.
    let second = Command::new(BIN)
        .args([
            "up",
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--agent-listen",
            &format!("127.0.0.1:{}", free_port()),
            "--powercap-root",
            fp.root().to_str().unwrap(),
            "--nvml-library",
            "off",
        ])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let second_err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(2), "{second_err}");
    assert!(
        second_err.contains(&format!("PID {}", child.id())),
        "{second_err}"
    );
    let zones = [
        "intel-rapl:0",
        "intel-rapl:1",
        "intel-rapl:0:2",
        "intel-rapl:1:2",
    ];
    let truth =
        |fp: &FakePowercap| -> u64 { zones.iter().map(|z| fp.truth_uj(&fp.zone(z)) as u64).sum() };
    let start = truth(&fp);
    for i in 0..30u64 {
        for z in zones {
            let zone = fp.zone(z);
            fp.advance_uj(&zone, 1_000_003 + i);
        }
        sleep(Duration::from_millis(50));
    }
    let given = truth(&fp) - start;
    for _ in 0..200 {
        if measured(&agent_base) == given {
            break;
        }
        sleep(Duration::from_millis(50));
    }
    assert_eq!(measured(&agent_base), given);

    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        format!("http://127.0.0.1:{agent_port}/metrics"),
        format!("http://127.0.0.1:{port}/metrics"),
        format!("http://127.0.0.1:{port}/api/v1/"),
        "/api/v1/footprint?month=".to_string(),
        "so far:".to_string(),
    ] {
        assert!(stdout.contains(&needle), "{needle:?} not in:\n{stdout}");
    }

    // The store, read by a collector on the same data directory with up's read token.
    let reader = std::fs::read_to_string(data.join("up").join("read.token")).unwrap();
    let collector = Collector::spawn(&data, free_port(), &[]);
    let f = collector.get(
        reader.trim(),
        "/api/v1/footprint?from=2020-01-01&to=2100-01-01",
    );
    assert_eq!(
        f["total"]["exact"]["energy_uj"].as_u64().unwrap(),
        given,
        "{f}"
    );
}
