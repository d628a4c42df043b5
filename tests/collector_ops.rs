#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Operating the collector (issue 10, items 4 and 6): one process per data directory,
//! private files whatever the umask, a backup taken while agents push that restores to
//! the API's totals, and footprint counters that survive a SIGKILL.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::sleep;
use std::time::Duration;

use common::{Agent, BIN, CollectorCmd, create_token, free_port, output_ok};
use empreinte_testkit::powercap::FakePowercap;

/// A collector started by `sh -c 'umask 000 && exec empreinte collector …'`.
struct Running(common::Collector);

impl Running {
    fn start(data: &Path, port: u16) -> Running {
        let cmd = CollectorCmd::new(data, port)
            .shell_prefix("umask 000")
            .log(&data.with_extension(format!("{port}.log")));
        Running(common::Collector::start(cmd, data, port))
    }

    fn get(&self, token: &str, path: &str) -> String {
        ureq::get(&format!("{}{path}", self.0.base))
            .header("Authorization", &format!("Bearer {token}"))
            .call()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
            .body_mut()
            .read_to_string()
            .unwrap()
    }

    /// Every `empreinte_footprint_*_total` series, by its labels.
    fn footprint_counters(&self, token: &str) -> BTreeMap<String, f64> {
        common::parse(&self.get(token, "/metrics"))
            .into_iter()
            .filter(|s| {
                s.metric.starts_with("empreinte_footprint_") && s.metric.ends_with("_total")
            })
            .map(|s| {
                let v = match s.value {
                    prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
                    other => panic!("{other:?}"),
                };
                let labels: BTreeMap<_, _> = s.labels.iter().collect();
                (format!("{}{labels:?}", s.metric), v)
            })
            .collect()
    }

    fn total_uj(&self, token: &str) -> u64 {
        let v: serde_json::Value = serde_json::from_str(
            &self.get(token, "/api/v1/footprint?from=2020-01-01&to=2100-01-01"),
        )
        .unwrap();
        v["total"]["exact"]["energy_uj"].as_u64().unwrap()
    }

    fn sigkill(self) {
        self.0.kill();
    }
}

fn wait_for(what: &str, cond: impl FnMut() -> bool) {
    empreinte_testkit::wait::wait_for(what, empreinte_testkit::wait::PATIENCE, cond);
}

/// An agent pushing every second to `port` while its fake host draws power.
struct Pushing {
    agent: Option<Agent>,
    stop: Arc<AtomicBool>,
    load: Option<std::thread::JoinHandle<FakePowercap>>,
}

impl Pushing {
    fn start(dir: &Path, port: u16, token: &str) -> Pushing {
        let mut fp = FakePowercap::intel_two_socket();
        let root = fp.root().to_path_buf();
        let token_file = dir.join("agent.token");
        std::fs::write(&token_file, token).unwrap();
        let config = dir.join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "[push]\ncollector = \"http://127.0.0.1:{port}\"\ntoken_file = \"{}\"\nagent_id = \"ops-host\"\nbatch_interval = \"1s\"\nspool_dir = \"{}\"\n",
                token_file.display(),
                dir.join("spool").display()
            ),
        )
        .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let load = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let zone = fp.zone("intel-rapl:0");
                    fp.advance_uj(&zone, 5_000_000);
                    sleep(Duration::from_millis(50));
                }
                fp
            })
        };
        let agent = Agent::spawn(&[
            "--config",
            config.to_str().unwrap(),
            "--interval",
            "200ms",
            "--powercap-root",
            root.to_str().unwrap(),
            "--nvml-library",
            "off",
        ]);
        Pushing {
            agent: Some(agent),
            stop,
            load: Some(load),
        }
    }
}

impl Drop for Pushing {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(l) = self.load.take() {
            let _ = l.join();
        }
        drop(self.agent.take());
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn one_collector_per_data_dir_private_files_and_a_backup_that_restores_to_the_api_totals() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("collector");
    let reader = create_token(&data, "read", None);
    let token = create_token(&data, "agent", Some("ops-host"));
    let port = free_port();
    let collector = Running::start(&data, port);
    let pushing = Pushing::start(dir.path(), port, &token);
    wait_for("some energy stored", || collector.total_uj(&reader) > 0);

    // A second collector on the same data directory exits 2 and names the first.
    let out = Command::new(BIN)
        .args([
            "collector",
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--data-dir",
        ])
        .arg(&data)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("PID {}", collector.0.id())) && err.contains("in use"),
        "{err}"
    );

    // Everything the collector made under `umask 000` is private.
    assert_eq!(mode(&data), 0o700, "the data directory");
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            assert_eq!(mode(&path), 0o600, "{}", path.display());
        }
    }

    // The agent's spool too (its process sets the umask itself).
    let spool = dir.path().join("spool");
    assert_eq!(mode(&spool), 0o700, "the spool directory");
    for entry in std::fs::read_dir(&spool).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            assert_eq!(mode(&path), 0o600, "{}", path.display());
        }
    }

    // A backup while the agent pushes: its totals lie between the API's just before and
    // just after, and equal the API's once restored.
    let before = collector.total_uj(&reader);
    let backup = dir.path().join("backup.db");
    output_ok(
        Command::new(BIN)
            .args(["backup", "--data-dir"])
            .arg(&data)
            .arg("-o")
            .arg(&backup),
    );
    let after = collector.total_uj(&reader);
    assert_eq!(mode(&backup), 0o600, "the backup file");
    // Never over an existing file.
    let again = Command::new(BIN)
        .args(["backup", "--data-dir"])
        .arg(&data)
        .arg("-o")
        .arg(&backup)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2));
    drop(pushing);
    // Restore as docs/operations.md says: the file becomes empreinte.db of a data
    // directory (no -wal or -shm beside it).
    let restored = dir.path().join("restored");
    std::fs::create_dir_all(&restored).unwrap();
    std::fs::copy(&backup, restored.join("empreinte.db")).unwrap();
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md"))
        .unwrap();
    assert!(
        docs.contains("empreinte backup") && docs.contains("empreinte.db"),
        "docs/operations.md"
    );
    let copy = Running::start(&restored, free_port());
    let got = copy.total_uj(&reader);
    assert!(
        got > 0 && (before..=after).contains(&got),
        "{before} ≤ {got} ≤ {after}"
    );
    // Its agent balance is whole: the counters and the batches were copied together.
    let agents: serde_json::Value =
        serde_json::from_str(&copy.get(&reader, "/api/v1/agents")).unwrap();
    let a = &agents["agents"][0];
    assert_eq!(a["agent_id"], "ops-host", "{agents}");
    assert_eq!(a["counted_uj"], a["stored_uj"], "{a}");
    drop(copy);
    drop(collector);
}

#[test]
fn footprint_counters_never_go_back_across_a_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("collector");
    let reader = create_token(&data, "read", None);
    let token = create_token(&data, "agent", Some("ops-host"));
    let port = free_port();
    let collector = Running::start(&data, port);
    let _pushing = Pushing::start(dir.path(), port, &token);
    wait_for("three pushes stored", || {
        collector.total_uj(&reader) > 0
            && common::value(
                &common::parse(&collector.get(&reader, "/metrics")),
                "empreinte_collector_pushes_total",
                &[("outcome", "stored")],
            )
            .unwrap_or(0.0)
                >= 3.0
    });
    let before = collector.footprint_counters(&reader);
    assert!(!before.is_empty());
    collector.sigkill();
    let collector = Running::start(&data, port);
    let after = collector.footprint_counters(&reader);
    for (series, was) in &before {
        let now = after.get(series).copied().unwrap_or(0.0);
        assert!(
            now >= *was,
            "{series}: {was} before the SIGKILL, {now} after"
        );
    }
    // And they still count what is stored after the restart.
    let energy = |m: &BTreeMap<String, f64>| -> f64 {
        m.iter()
            .filter(|(k, _)| k.starts_with("empreinte_footprint_energy_joules_total"))
            .map(|(_, v)| v)
            .sum()
    };
    let at_restart = energy(&after);
    wait_for("more energy counted after the restart", || {
        energy(&collector.footprint_counters(&reader)) > at_restart
    });
    // The counters equal the API's total.
    wait_for("the counters equal the stored total", || {
        let counted = energy(&collector.footprint_counters(&reader));
        let stored = collector.total_uj(&reader) as f64 / 1e6;
        (counted - stored).abs() < 1e-6
    });
}
