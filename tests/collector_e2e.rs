//! The real collector and three real agents, as separate processes, on fake powercap
//! hosts with real busy processes in several projects. The collector is killed while
//! every agent keeps a backlog in its spool, then killed with SIGKILL again right after
//! it starts ingesting that backlog (checked: batches were still waiting), then
//! restarted. At the end the stored totals equal, to the microjoule, the energy the
//! test gave each fake host, and per project what each agent measured: nothing lost,
//! nothing counted twice.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use empreinte_testkit::load::{Load, TWO_SOCKET_STEPS_UJ, given_uj, step};
use empreinte_testkit::powercap::FakePowercap;

fn agent_config(dir: &Path, host: &str, port: u16, token: &str) -> std::path::PathBuf {
    let token_file = dir.join(format!("{host}.token"));
    std::fs::write(&token_file, token).unwrap();
    let spool = dir.join(format!("{host}-spool"));
    let path = dir.join(format!("{host}.toml"));
    std::fs::write(
        &path,
        format!(
            "[push]\ncollector = \"http://127.0.0.1:{port}\"\ntoken_file = \"{}\"\nagent_id = \"{host}\"\nbatch_interval = \"1s\"\nspool_dir = \"{}\"\nmax_batches_per_push = 1\n",
            token_file.display(),
            spool.display()
        ),
    )
    .unwrap();
    path
}

/// Batches waiting in the agent's spool.
fn spooled(a: &Agent) -> u64 {
    value(&a.samples(), "empreinte_spool_batches", &[]).unwrap_or(0.0) as u64
}

fn pushes_stored(c: &Collector, reader: &str) -> f64 {
    value(
        &c.metrics(reader),
        "empreinte_collector_pushes_total",
        &[("outcome", "stored")],
    )
    .unwrap_or(0.0)
}

#[test]
fn three_agents_through_an_outage_and_a_sigkill_store_exactly_what_they_measured() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("collector");
    std::fs::create_dir_all(&data).unwrap();
    let port = free_port();
    let hosts = ["host-a", "host-b", "host-c"];
    let reader = create_token(&data, "read", None);
    let tokens: Vec<String> = hosts
        .iter()
        .map(|h| create_token(&data, "agent", Some(h)))
        .collect();
    let mut collector = Collector::spawn(&data, port, &[]);

    let _busy = [
        Busy::spawn("alpha"),
        Busy::spawn("alpha"),
        Busy::spawn("beta"),
    ];
    let fakes: Vec<FakePowercap> = hosts
        .iter()
        .map(|_| FakePowercap::intel_two_socket())
        .collect();
    let agents: Vec<Agent> = hosts
        .iter()
        .zip(&tokens)
        .zip(&fakes)
        .map(|((h, t), fp)| {
            let cfg = agent_config(dir.path(), h, port, t);
            Agent::spawn(&[
                "--config",
                cfg.to_str().unwrap(),
                "--interval",
                "200ms",
                "--powercap-root",
                fp.root().to_str().unwrap(),
                "--nvml-library",
                "off",
            ])
        })
        .collect();
    for a in &agents {
        a.wait_cycles(2);
    }
    // Energy is counted from each agent's first sample: the ground truth starts now.
    let start: Vec<u64> = fakes
        .iter()
        .map(|fp| given_uj(fp, &TWO_SOCKET_STEPS_UJ))
        .collect();

    // Each host draws its own load (host i at (i + 1) times the base steps) until told to stop.
    let load = Load::start(fakes, Duration::from_millis(50), |fakes| {
        for (i, fp) in fakes.iter_mut().enumerate() {
            step(fp, &TWO_SOCKET_STEPS_UJ, i as u64 + 1);
        }
    });

    wait_for("every agent to deliver a batch", PATIENCE, || {
        pushes_stored(&collector, &reader) >= hosts.len() as f64
    });
    // The collector goes away: the agents keep measuring into their spools until each
    // has a backlog of several batches (one batch a push: several pushes to catch up).
    collector.kill();
    wait_for("a backlog of 3 batches in every spool", PATIENCE, || {
        agents.iter().all(|a| spooled(a) >= 3)
    });
    // Back, and killed with SIGKILL as soon as it stores pushes again, while the agents
    // are still sending their backlog; then back for good.
    collector = Collector::spawn(&data, port, &[]);
    wait_for(
        "the collector to store a push of the backlog",
        PATIENCE,
        || pushes_stored(&collector, &reader) >= 1.0,
    );
    collector.kill();
    let waiting: u64 = agents.iter().map(spooled).sum();
    assert!(
        waiting > 0,
        "the collector was killed after the backlog was delivered: the scenario did not happen"
    );
    collector = Collector::spawn(&data, port, &[]);
    wait_for("the agents to deliver their backlog", PATIENCE, || {
        agents.iter().all(|a| spooled(a) == 0)
    });

    let fakes = load.finish();
    let given: Vec<u64> = fakes
        .iter()
        .zip(&start)
        .map(|(fp, s)| given_uj(fp, &TWO_SOCKET_STEPS_UJ) - s)
        .collect();
    // Every agent has sampled the last counters…
    for (a, g) in agents.iter().zip(&given) {
        wait_for(
            &format!("the agent to measure the {g} µJ its host was given"),
            PATIENCE,
            || measured_uj(a) == *g,
        );
    }
    // …and what it measured per project is now fixed.
    let measured: Vec<_> = agents.iter().map(|a| projects_uj(&debug(a))).collect();
    for m in &measured {
        for p in ["alpha", "beta"] {
            assert!(m.get(p).copied().unwrap_or(0) > 0, "{p} has energy: {m:?}");
        }
        // With idle and unassigned time, several projects per host.
        assert!(m.len() >= 3, "{m:?}");
    }
    // SIGTERM: each agent seals its last batch and delivers what waits.
    for a in agents {
        let (status, err) = a.terminate();
        assert!(status.success(), "{status}: {err}");
    }

    for (i, host) in hosts.iter().enumerate() {
        let f = collector.get(
            &reader,
            &format!(
                "/api/v1/footprint?from=2020-01-01&to=2100-01-01&group_by=project&host={host}"
            ),
        );
        eprintln!(
            "{host}: given {} µJ, stored {} µJ, {} projects",
            given[i],
            f["total"]["exact"]["energy_uj"],
            f["rows"].as_array().unwrap().len()
        );
        assert_eq!(
            f["total"]["exact"]["energy_uj"].as_u64().unwrap(),
            given[i],
            "{host}: stored total against the energy the fake host was given"
        );
        let stored: std::collections::BTreeMap<String, u64> = f["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["key"].as_str().unwrap().to_string(),
                    r["exact"]["energy_uj"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            stored, measured[i],
            "{host}: per project, stored against measured"
        );
        assert_eq!(f["total"]["measured_share"], 1.0);
    }
    let agents = collector.get(&reader, "/api/v1/agents");
    for a in agents["agents"].as_array().unwrap() {
        assert_eq!(a["counted_uj"], a["stored_uj"], "{a}");
        assert_eq!(a["spool_batches"], 0, "{a}");
    }
    // The collector's own metrics: valid exposition, the stored energy, the intensity.
    let text = ureq::get(&format!("{}/metrics", collector.base))
        .header("Authorization", &format!("Bearer {reader}"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    if let Some(p) = promtool() {
        promtool_check(p, &text);
    }
    let samples = parse(&text);
    let counted: f64 = samples
        .iter()
        .filter(|s| s.metric == "empreinte_footprint_energy_joules_total")
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) => v,
            _ => 0.0,
        })
        .sum();
    // The last collector process stored at least the agents' final batches.
    assert!(counted > 0.0, "{text}");
    let fr = empreinte_collector::carbon::Coefficients::built_in()
        .unwrap()
        .grid("FR")
        .unwrap()
        .g_per_kwh
        .0;
    assert_eq!(
        value(
            &samples,
            "empreinte_grid_intensity_grams_per_kwh",
            &[("zone", "FR")]
        ),
        Some(fr)
    );
    let log = std::fs::read_to_string(data.join("collector.log")).unwrap();
    assert!(!log.contains("panicked"), "{log}");

    // The store this run filled moves to PostgreSQL (the test cluster: always there in
    // CI) with every total equal: `db migrate` checks every table and the footprint
    // itself, and a collector on the copy shows each host's given energy.
    collector.kill();
    if let Some(url) = empreinte_testkit::postgres::fresh_database() {
        db_migrate(&data, &url);
        let scratch = dir.path().join("on-postgresql");
        std::fs::create_dir_all(&scratch).unwrap();
        let on_pg = Collector::spawn(&scratch, free_port(), &["--database-url", &url]);
        for (host, given) in hosts.iter().zip(&given) {
            let f = on_pg.get(
                &reader,
                &format!(
                    "/api/v1/footprint?from=2020-01-01&to=2100-01-01&group_by=project&host={host}"
                ),
            );
            assert_eq!(
                f["total"]["exact"]["energy_uj"].as_u64().unwrap(),
                *given,
                "{host}: on PostgreSQL after db migrate"
            );
        }
    }
}
