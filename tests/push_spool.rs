//! The real agent on a fake powercap host, pushing to a fake collector: through lost
//! acknowledgements, a SIGKILL and a restart on the same spool, the collector ends up
//! with exactly the energy the fake hardware was given, each batch once. A second agent
//! on the same spool exits 2 naming the first one's PID.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::thread::sleep;
use std::time::Duration;

use common::*;
use empreinte_shared::Component;
use empreinte_shared::wire::Batch;
use empreinte_testkit::collector::{FakeCollector, Mode};
use empreinte_testkit::powercap::FakePowercap;

const PACKAGES: [&str; 2] = ["intel-rapl:0", "intel-rapl:1"];
const DRAM: [&str; 2] = ["intel-rapl:0:2", "intel-rapl:1:2"];

fn truth(fp: &FakePowercap, zones: &[&str]) -> u64 {
    zones.iter().map(|z| fp.truth_uj(&fp.zone(z)) as u64).sum()
}

/// Gives every zone energy in small steps, as a loaded host would.
fn run_load(fp: &mut FakePowercap, steps: u32) {
    for i in 0..steps {
        for z in PACKAGES {
            let zone = fp.zone(z);
            fp.advance_uj(&zone, 4_000_000 + u64::from(i) * 1_013);
        }
        for z in DRAM {
            let zone = fp.zone(z);
            fp.advance_uj(&zone, 300_007);
        }
        sleep(Duration::from_millis(40));
    }
}

/// Waits until the agent has measured `uj`, then a few more cycles, so that the spool's
/// open batch holds it.
fn wait_measured(agent: &Agent, uj: u64) {
    for _ in 0..400 {
        let got = measured_uj(agent);
        assert!(got <= uj, "measured {got} µJ, more than the {uj} µJ given");
        if got == uj {
            agent.wait_cycles(3);
            return;
        }
        sleep(Duration::from_millis(25));
    }
    panic!("the agent did not measure {uj} µJ in 10 s");
}

#[test]
fn a_killed_agent_resends_its_spool_and_nothing_is_lost_or_counted_twice() {
    let mut fp = FakePowercap::intel_two_socket();
    let root = fp.root().to_str().unwrap().to_string();
    let collector = FakeCollector::start();
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let token = dir.path().join("agent.token");
    std::fs::write(&token, "e2e-token\n").unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, "[push]\nbatch_interval = \"1s\"\n").unwrap();
    let args = [
        "--config",
        config.to_str().unwrap(),
        "--interval",
        "100ms",
        "--powercap-root",
        &root,
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
        "--agent-id",
        "e2e-host",
    ];

    // Run 1: the collector stores but its answers never arrive; then SIGKILL.
    collector.set_mode(Mode::LoseAcks);
    let agent = Agent::spawn(&args);
    agent.wait_cycles(2);
    run_load(&mut fp, 60);
    for _ in 0..200 {
        if !collector.stored().is_empty() {
            break;
        }
        sleep(Duration::from_millis(50));
    }
    assert!(!collector.stored().is_empty(), "run 1 pushed something");
    let samples = agent.samples();
    assert!(
        value(
            &samples,
            "empreinte_push_batches_total",
            &[("outcome", "failed")]
        )
        .unwrap()
            > 0.0
    );
    assert!(value(&samples, "empreinte_spool_batches", &[]).unwrap() > 0.0);
    // Kill it while its open batch holds energy: freeze it once it has measured
    // everything, and look at the spool; if a seal came first, give more and retry.
    let open_path = spool.join("open.json");
    let mut open_batch = None;
    for _ in 0..20 {
        run_load(&mut fp, 3);
        wait_measured(&agent, truth(&fp, &PACKAGES) + truth(&fp, &DRAM));
        agent.signal("STOP");
        if let Ok(text) = std::fs::read_to_string(&open_path) {
            let batch: Batch = serde_json::from_str(&text).unwrap();
            // Frozen between the append of the sealed batch and the rewrite of
            // open.json, the file still names a batch already sealed: not open.
            if !batch.records.is_empty() && !sealed(&spool, &batch) {
                open_batch = Some(batch);
                break;
            }
        }
        agent.signal("CONT");
    }
    let open_batch = open_batch.expect("an open batch with energy when the agent is killed");
    let run1_uj = truth(&fp, &PACKAGES) + truth(&fp, &DRAM);
    agent.kill();
    let stored_by_run1 = collector.stored().len() as u64;
    let duplicates_in_run1 = collector.duplicates();

    // Run 2 on the same spool; the collector answers again.
    collector.set_mode(Mode::Healthy);
    let agent = Agent::spawn(&args);
    agent.wait_cycles(2);
    // A second agent on the same spool exits 2, naming the live one's PID (from the
    // lock file it holds), and touches nothing: the totals below stay exact.
    let holder = std::fs::read_to_string(spool.join("agent.lock")).unwrap();
    let second = std::process::Command::new(BIN)
        .arg("agent")
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let second_err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(2), "{second_err}");
    assert!(
        second_err.contains(&format!("PID {}", holder.trim())),
        "{second_err}"
    );
    let (cpu_before, dram_before) = (truth(&fp, &PACKAGES), truth(&fp, &DRAM));
    run_load(&mut fp, 40);
    let run2_uj = truth(&fp, &PACKAGES) + truth(&fp, &DRAM) - cpu_before - dram_before;
    wait_measured(&agent, run2_uj);
    let (status, stderr) = agent.terminate();
    assert!(status.success(), "{status}: {stderr}");

    assert_eq!(collector.problems(), Vec::<String>::new());
    assert_eq!(
        collector.total_uj(),
        run1_uj + run2_uj,
        "the collector holds exactly the energy given to the fake hardware"
    );
    let by_component = |c: Component| -> u64 {
        collector
            .energy_uj()
            .iter()
            .filter(|(k, _)| k.1 == c)
            .map(|(_, v)| v)
            .sum()
    };
    assert_eq!(by_component(Component::Cpu), truth(&fp, &PACKAGES));
    assert_eq!(by_component(Component::Dram), truth(&fp, &DRAM));
    assert!(
        collector.duplicates() - duplicates_in_run1 >= stored_by_run1,
        "run 1's stored batches were sent again under their names and ignored"
    );
    let stored = collector.stored();
    let mut runs: Vec<&str> = stored.keys().map(|k| k.1.as_str()).collect();
    runs.dedup();
    assert_eq!(runs.len(), 2, "two runs: {runs:?}");
    for run in runs {
        let seqs: Vec<u64> = stored.keys().filter(|k| k.1 == run).map(|k| k.2).collect();
        assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "{run}");
    }
    assert!(stored.keys().all(|k| k.0 == "e2e-host"));
    let recovered = &stored[&(
        "e2e-host".to_string(),
        open_batch.run_id.clone(),
        open_batch.seq,
    )];
    assert_eq!(
        recovered, &open_batch,
        "the batch open at the SIGKILL arrived under its name, as it was"
    );
    assert!(
        collector
            .authorizations()
            .iter()
            .all(|a| a.as_deref() == Some("Bearer e2e-token"))
    );
}

/// Whether the spool's segments already hold a batch of this name (run id, sequence).
fn sealed(spool: &std::path::Path, batch: &Batch) -> bool {
    std::fs::read_dir(spool)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .unwrap_or_default()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter_map(|line| serde_json::from_str::<Batch>(&line).ok())
        .any(|b| b.run_id == batch.run_id && b.seq == batch.seq)
}
