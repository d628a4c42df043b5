#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Several stateless collectors on one PostgreSQL database, as the real binary runs
//! them: pushes spread over three collectors while one of them is SIGKILLed and
//! restarted again and again, the same push sent to all three at once, three
//! collectors started at once on an empty database. Ground truth is the energy the test
//! pushed, batch by batch; the store is read back with psql.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use common::*;
use empreinte_testkit::postgres::{fresh_database, psql};

fn now_ms() -> u64 {
    empreinte_collector::clock::now_unix_ms()
}

fn client() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .new_agent()
}

/// POSTs a push; `None` when the collector did not answer (killed, restarting).
fn post(c: &ureq::Agent, port: u16, token: &str, body: &str) -> Option<(u16, String)> {
    let mut resp = c
        .post(&format!("http://127.0.0.1:{port}/api/v1/ingest"))
        .header("Authorization", &format!("Bearer {token}"))
        .header("Content-Type", "application/json")
        .send(body)
        .ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.body_mut().read_to_string().unwrap_or_default()))
}

fn ack(body: &str) -> (u64, u64) {
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    (
        v["accepted"].as_u64().unwrap(),
        v["duplicates"].as_u64().unwrap(),
    )
}

/// The store's totals read with psql: hourly rows, monthly rollups, runs' stored energy.
fn stored_totals(url: &str) -> (u64, u64, u64) {
    let n = |sql: &str| psql(url, sql).parse::<u64>().unwrap();
    (
        n("SELECT COALESCE(SUM(energy_uj), 0) FROM footprint_hourly"),
        n("SELECT COALESCE(SUM(energy_uj), 0) FROM footprint_monthly"),
        n("SELECT COALESCE(SUM(stored_uj), 0) FROM runs"),
    )
}

#[test]
fn three_collectors_store_every_push_once_while_one_is_killed_every_few_seconds() {
    let Some(url) = fresh_database() else { return };
    let agents = ["pg-a", "pg-b", "pg-c", "pg-d"];
    // The first command creates the schema; tokens are shared by every collector.
    let tokens: Vec<String> = agents
        .iter()
        .map(|a| create_token_in(["--database-url", &url], "agent", Some(a)))
        .collect();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let spawn = |i: usize| Collector::spawn(dirs[i].path(), ports[i], &["--database-url", &url]);
    let collectors: Arc<Mutex<Vec<Option<Collector>>>> =
        Arc::new(Mutex::new((0..3).map(|i| Some(spawn(i))).collect()));
    let start_ms = now_ms() - 3 * 3_600_000;
    let stop = Arc::new(AtomicBool::new(false));
    let kills = Arc::new(AtomicU64::new(0));
    // Four agents: each pushes its run's batches, 1 to 3 per push, to the next
    // collector in turn; a push that gets no answer (or a 5xx) is sent again, as an
    // agent's spool does, to the next collector.
    let pushers: Vec<_> = agents
        .iter()
        .zip(&tokens)
        .enumerate()
        .map(|(a, (agent, tok))| {
            let (agent, tok, ports, stop) =
                (agent.to_string(), tok.clone(), ports.clone(), stop.clone());
            std::thread::spawn(move || {
                let c = client();
                let mut seq = 0u64;
                let mut given = 0u64;
                let mut next = a;
                let mut accepted = 0u64;
                // One-second batches from 3 h ago: at most 10,000 stay in the past.
                while (!stop.load(Ordering::Relaxed) || seq < 60) && seq < 10_000 {
                    let n = 1 + seq % 3;
                    let batches: Vec<_> = (seq + 1..=seq + n)
                        .map(|s| (s, start_ms + s * 1_000, 1_000_003 * (a as u64 + 1) + s))
                        .collect();
                    let body = gpu_push_body(&agent, &batches);
                    loop {
                        next += 1;
                        match post(&c, ports[next % 3], &tok, &body) {
                            Some((200, b)) => {
                                accepted += ack(&b).0;
                                break;
                            }
                            Some((s, b)) if s < 500 && s != 429 => panic!("{agent}: {s} {b}"),
                            _ => {}
                        }
                    }
                    seq += n;
                    given += batches.iter().map(|b| b.2).sum::<u64>();
                }
                (agent, seq, given, accepted)
            })
        })
        .collect();
    // The chaos: every 1.5 s, the next collector is SIGKILLed and started again.
    for k in 0..6usize {
        std::thread::sleep(Duration::from_millis(1500)); // the chaos' pace, not a wait
        let i = k % 3;
        let old = collectors.lock().unwrap()[i].take();
        old.unwrap().kill();
        kills.fetch_add(1, Ordering::Relaxed);
        let fresh = spawn(i);
        collectors.lock().unwrap()[i] = Some(fresh);
    }
    stop.store(true, Ordering::Relaxed);
    let mut given_total = 0u64;
    let mut last_seq_a = 0;
    for p in pushers {
        let (agent, seq, given, accepted) = p.join().unwrap();
        assert!(seq >= 60, "{agent} pushed {seq} batches");
        // Batches acknowledged by a collector that was killed before answering were
        // stored; their resend counts as a duplicate, so accepted ≤ pushed.
        assert!(accepted <= seq, "{agent}: {accepted} accepted of {seq}");
        let hwm = psql(
            &url,
            &format!("SELECT hwm FROM runs WHERE agent_id = '{agent}'"),
        );
        assert_eq!(hwm, seq.to_string(), "{agent}: highest stored batch");
        let holes = psql(
            &url,
            &format!("SELECT COUNT(*) FROM run_holes WHERE agent_id = '{agent}'"),
        );
        assert_eq!(holes, "0", "{agent}: every batch stored");
        given_total += given;
        if agent == "pg-a" {
            last_seq_a = seq;
        }
    }
    assert_eq!(kills.load(Ordering::Relaxed), 6);
    assert_eq!(
        stored_totals(&url),
        (given_total, given_total, given_total),
        "stored energy (hourly, monthly, runs) against what the agents pushed, to the µJ"
    );

    // Every replica's footprint counters are the database's totals.
    let read = create_token_in(["--database-url", &url], "read", None);
    for &port in &ports {
        let joules = footprint_joules(port, &read);
        assert!(
            (joules * 1e6 - given_total as f64).abs() < 1.0,
            "collector on {port}: {joules} J, pushed {given_total} µJ"
        );
    }

    // The same push sent to the three collectors at once: one stores it.
    let seq = last_seq_a + 1;
    let body = Arc::new(gpu_push_body("pg-a", &[(seq, start_ms + seq * 1_000, 777)]));
    let barrier = Arc::new(Barrier::new(3));
    let sends: Vec<_> = ports
        .iter()
        .map(|&port| {
            let (body, barrier, tok) = (body.clone(), barrier.clone(), tokens[0].clone());
            std::thread::spawn(move || {
                let c = client();
                barrier.wait();
                let (status, b) = post(&c, port, &tok, &body).expect("an answer");
                assert_eq!(status, 200, "{b}");
                ack(&b)
            })
        })
        .collect();
    let acks: Vec<(u64, u64)> = sends.into_iter().map(|s| s.join().unwrap()).collect();
    assert_eq!(
        acks.iter().fold((0, 0), |s, a| (s.0 + a.0, s.1 + a.1)),
        (1, 2),
        "accepted and duplicates over the three collectors: {acks:?}"
    );
    assert_eq!(stored_totals(&url).0, given_total + 777);
}

/// The sum of a collector's `empreinte_footprint_energy_joules_total` series.
fn footprint_joules(port: u16, read: &str) -> f64 {
    let text = ureq::get(&format!("http://127.0.0.1:{port}/metrics"))
        .header("Authorization", &format!("Bearer {read}"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    parse(&text)
        .iter()
        .filter(|s| s.metric == "empreinte_footprint_energy_joules_total")
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
            ref other => panic!("{other:?}"),
        })
        .sum()
}

fn spawn_raw(dir: &std::path::Path, port: u16, url: &str) -> Child {
    let log = std::fs::File::create(dir.join("collector.log")).unwrap();
    Command::new(BIN)
        .args(["collector", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--data-dir", dir.to_str().unwrap()])
        .env("EMPREINTE_DATABASE_URL", url)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

#[test]
fn three_collectors_started_at_once_on_an_empty_database_make_one_schema() {
    let Some(url) = fresh_database() else { return };
    // A password in the URL (the test cluster trusts its socket and ignores it): no log
    // and no message may show it.
    const SECRET: &str = "s3cret-Pa55word";
    let url = url.replacen(
        "postgres://empreinte@",
        &format!("postgres://empreinte:{SECRET}@"),
        1,
    );
    assert!(url.contains(SECRET));
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut children: Vec<Child> = (0..3)
        .map(|i| spawn_raw(dirs[i].path(), ports[i], &url))
        .collect();
    for (i, child) in children.iter_mut().enumerate() {
        wait_for(&format!("collector {i} to answer"), PATIENCE, || {
            if let Some(status) = child.try_wait().unwrap() {
                let log = std::fs::read_to_string(dirs[i].path().join("collector.log")).unwrap();
                panic!("collector {i} exited with {status}: {log}");
            }
            ureq::get(&format!("http://127.0.0.1:{}/healthz", ports[i]))
                .call()
                .is_ok()
        });
    }
    let migrations = std::fs::read_dir(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/collector/migrations-pg"
    ))
    .unwrap()
    .count();
    assert_eq!(
        psql(&url, "SELECT COUNT(*) FROM _sqlx_migrations WHERE success"),
        migrations.to_string(),
        "each migration applied once"
    );
    assert_eq!(
        psql(
            &url,
            "SELECT COUNT(*) FROM pg_tables WHERE tablename = 'footprint_hourly'"
        ),
        "1"
    );
    for (i, d) in dirs.iter().enumerate() {
        let log = std::fs::read_to_string(d.path().join("collector.log")).unwrap();
        // Any warning or error fails the test (what the engine does not keep is a
        // declared capability, said at start at info level).
        let unexpected = log
            .lines()
            .filter(|l| l.contains("ERROR") || l.contains("WARN"))
            .count();
        assert_eq!(unexpected, 0, "collector {i}: {log}");
        // The URL names no password here, but the log never shows the URL's secret part.
        assert!(log.contains("store open"), "collector {i}: {log}");
    }
    for mut c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
}

#[test]
fn db_migrate_copies_a_filled_sqlite_store_with_every_total_equal() {
    let Some(url) = fresh_database() else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let tokens = [
        create_token(data, "agent", Some("mig-a")),
        create_token(data, "agent", Some("mig-b")),
    ];
    create_token(data, "read", None);
    let collector = Collector::spawn(data, free_port(), &[]);
    // Two agents, 3 hours of one-second batches in pushes of 40, some sent twice.
    let start_ms = now_ms() - 3 * 3_600_000;
    let c = client();
    let mut given = 0u64;
    for (a, (agent, tok)) in ["mig-a", "mig-b"].iter().zip(&tokens).enumerate() {
        for p in 0..20u64 {
            let batches: Vec<_> = (p * 40 + 1..=p * 40 + 40)
                .map(|s| (s, start_ms + s * 250, 3_000_017 * (a as u64 + 1) + s))
                .collect();
            let body = gpu_push_body(agent, &batches);
            for _ in 0..(1 + p % 2) {
                let (status, b) = post(&c, collector.port, tok, &body).unwrap();
                assert_eq!(status, 200, "{b}");
            }
            given += batches.iter().map(|b| b.2).sum::<u64>();
        }
    }
    collector.kill();
    let stderr = db_migrate(data, &url);
    assert_eq!(stored_totals(&url), (given, given, given), "{stderr}");
    assert_eq!(psql(&url, "SELECT COUNT(*) FROM tokens"), "3");
    // The same month's report from either store, byte for byte.
    let tz = jiff::tz::TimeZone::get("Europe/Paris").unwrap();
    let month = jiff::Timestamp::from_millisecond(start_ms as i64)
        .unwrap()
        .to_zoned(tz)
        .strftime("%Y-%m")
        .to_string();
    let report = |source: [&str; 2]| {
        let out = run_ok(&[
            "report", "--month", &month, "--format", "json", source[0], source[1],
        ]);
        out.stdout
    };
    // When each report was generated (the clock, a second apart at most) is left out.
    let figures = |bytes: Vec<u8>| {
        fn strip(v: &mut serde_json::Value) -> usize {
            match v {
                serde_json::Value::Object(o) => {
                    let n = ["generated_at", "generated_s"]
                        .iter()
                        .filter(|k| o.remove(**k).is_some())
                        .count();
                    n + o.values_mut().map(strip).sum::<usize>()
                }
                serde_json::Value::Array(a) => a.iter_mut().map(strip).sum(),
                _ => 0,
            }
        }
        let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert!(strip(&mut v) >= 1, "the report says when it was generated");
        serde_json::to_string_pretty(&v).unwrap()
    };
    let from_sqlite = figures(report(["--data-dir", data.to_str().unwrap()]));
    let from_pg = figures(report(["--database-url", &url]));
    assert!(from_pg.contains("mig-b"));
    assert_eq!(from_sqlite, from_pg);
    // A second copy into the same database is refused, and changes nothing.
    let again = run(&[
        "db",
        "migrate",
        "--from",
        data.to_str().unwrap(),
        "--to",
        &url,
    ]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already holds a store"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(stored_totals(&url).0, given);
}
