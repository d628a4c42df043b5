#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The ingest log (issue 12): a push is acknowledged once it is in the log, and folded
//! into the footprint tables later. A collector killed (SIGKILL) between the
//! acknowledgements and their fold loses nothing: at its next start it folds what the
//! log holds, once; the same batches sent again are duplicates.

mod common;

use std::path::Path;

use common::{Collector, create_token, free_port};

const RECORD_UJ: u64 = 1_234_567_891;
const PUSHES: u64 = 40;

/// Push `seq` of the agent: one 15 s batch two hours ago (plus 15 s per seq), two
/// projects on cpu.
fn push_body(agent: &str, seq: u64, now_ms: u64) -> String {
    let start = now_ms - now_ms % 15_000 - 2 * 3_600_000 + seq * 15_000;
    let end = start + 15_000;
    let records: Vec<String> = ["alpha", "beta"]
        .iter()
        .map(|p| {
            format!(
                r#"{{"project":"{p}","component":"cpu","source":"rapl","start_unix_ms":{start},"end_unix_ms":{end},"energy_uj":{RECORD_UJ}}}"#
            )
        })
        .collect();
    format!(
        r#"{{"version":1,"agent":{{"agent_id":"{agent}","hostname":"{agent}","agent_version":"test"}},"spool":{{"batches":1,"bytes":0,"oldest_start_unix_ms":null,"dropped_batches_total":0}},"batches":[{{"run_id":"0123456789abcdef0123456789abcdef","seq":{seq},"start_unix_ms":{start},"end_unix_ms":{end},"records":[{}],"counters":[]}}]}}"#,
        records.join(",")
    )
}

/// Posts a push; `(accepted, duplicates)` of its acknowledgement.
fn post(c: &Collector, token: &str, body: &str) -> (u64, u64) {
    let text = ureq::post(&format!("{}/api/v1/ingest", c.base))
        .header("Authorization", &format!("Bearer {token}"))
        .header("Content-Type", "application/json")
        .send(body)
        .unwrap_or_else(|e| panic!("push: {e}"))
        .body_mut()
        .read_to_string()
        .unwrap();
    let ack: serde_json::Value = serde_json::from_str(&text).unwrap();
    (
        ack["accepted"].as_u64().unwrap(),
        ack["duplicates"].as_u64().unwrap(),
    )
}

/// Energy in the footprint tables and the runs, read from the database file itself
/// (what was folded), without starting a collector.
fn folded_uj(data: &Path) -> (u64, u64) {
    let db = rusqlite::Connection::open(data.join("empreinte.db")).unwrap();
    let hourly: i64 = db
        .query_row(
            "SELECT COALESCE(SUM(energy_uj), 0) FROM footprint_hourly",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let runs: i64 = db
        .query_row("SELECT COALESCE(SUM(stored_uj), 0) FROM runs", [], |r| {
            r.get(0)
        })
        .unwrap();
    (hourly as u64, runs as u64)
}

fn stored_uj(c: &Collector, read: &str, agent: &str) -> u64 {
    let agents = c.get(read, "/api/v1/agents");
    agents["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["agent_id"] == agent)
        .map(|a| a["stored_uj"].as_u64().unwrap())
        .unwrap_or(0)
}

#[test]
fn a_collector_killed_between_acknowledgement_and_fold_loses_nothing_and_stores_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    // Fold only when a read asks for it: every acknowledged push stays in the log until
    // the kill.
    let config = dir.path().join("collector.toml");
    std::fs::write(&config, "[store]\nfold_interval = \"60s\"\n").unwrap();
    let agent = "host-crash";
    let token = create_token(&data, "agent", Some(agent));
    let read = create_token(&data, "read", None);
    let args = ["--config", config.to_str().unwrap()];
    let now_ms = empreinte_collector::clock::now_unix_ms();
    let bodies: Vec<String> = (1..=PUSHES).map(|s| push_body(agent, s, now_ms)).collect();
    let expected = PUSHES * 2 * RECORD_UJ;

    let c = Collector::spawn(&data, free_port(), &args);
    for body in &bodies {
        assert_eq!(post(&c, &token, body), (1, 0), "each push is new");
    }
    c.kill();
    let (hourly, runs) = folded_uj(&data);
    assert!(
        hourly < expected && runs < expected,
        "the kill came before the fold of every push (folded {hourly} µJ of {expected}), or this test proves nothing"
    );

    // Started again: the log is folded before anything is served.
    let c = Collector::spawn(&data, free_port(), &args);
    assert_eq!(
        stored_uj(&c, &read, agent),
        expected,
        "stored once, to the µJ"
    );
    for body in &bodies {
        assert_eq!(
            post(&c, &token, body),
            (0, 1),
            "a re-sent batch is a duplicate"
        );
    }
    assert_eq!(stored_uj(&c, &read, agent), expected);
    c.kill();
    // Whatever the reads folded is in the tables, once.
    let (hourly, runs) = folded_uj(&data);
    assert_eq!((hourly, runs), (expected, expected));
}
