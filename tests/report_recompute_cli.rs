#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `empreinte recompute` end to end: a collector stores two hours of October 2025 with
//! PUE 1.3 and is killed (its last pushes acknowledged, perhaps not folded); the
//! configuration is corrected to PUE 1.1; `recompute --from 2025-10-15` refuses to run
//! while a collector holds the data directory, then recomputes the hour after the 15th
//! only, and the month's report (JSON) has each PUE over its own period and says the
//! month was recomputed.

mod common;

use common::*;

fn config(pue: f64) -> String {
    format!(
        r#"
[organisation]
name = "Ville de Test"
timezone = "Europe/Paris"

[limits]
max_batch_age = "36500days"

[[site]]
name = "mairie"
zone = "FR"
pue = {pue}
hosts = ["srv-*"]
"#
    )
}

const KWH: u64 = 3_600_000_000_000;

fn hour(seq: u64, start_s: u64) -> serde_json::Value {
    let (s, e) = (start_s * 1000, start_s * 1000 + 3_600_000);
    serde_json::json!({
        "run_id": format!("{:032x}", 1), "seq": seq, "start_unix_ms": s, "end_unix_ms": e,
        "records": [{ "project": "chat", "component": "cpu", "source": "rapl",
            "start_unix_ms": s, "end_unix_ms": e, "energy_uj": KWH }],
        "counters": [],
    })
}

#[test]
fn recompute_applies_the_corrected_pue_from_the_stated_day_and_the_report_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let cfg = dir.path().join("collector.toml");
    std::fs::write(&cfg, config(1.3)).unwrap();
    let cfg_s = cfg.to_str().unwrap();
    let token = create_token(&data, "agent", Some("srv-1"));
    let collector = Collector::spawn(&data, free_port(), &["--config", cfg_s]);
    // 2025-10-10T10:00Z and 2025-10-20T10:00Z.
    let body = serde_json::json!({
        "version": 1,
        "agent": { "agent_id": "srv-1", "hostname": "srv-1", "agent_version": "test" },
        "spool": { "batches": 0, "bytes": 0, "oldest_start_unix_ms": null, "dropped_batches_total": 0 },
        "batches": [hour(1, 1_760_090_400), hour(2, 1_760_954_400)],
    });
    let mut r = ureq::post(&format!("{}/api/v1/ingest", collector.base))
        .header("Authorization", &format!("Bearer {token}"))
        .header("Content-Type", "application/json")
        .send(serde_json::to_vec(&body).unwrap().as_slice())
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        200,
        "{}",
        r.body_mut().read_to_string().unwrap()
    );

    std::fs::write(&cfg, config(1.1)).unwrap();
    let args = [
        "recompute",
        "--config",
        cfg_s,
        "--data-dir",
        data.to_str().unwrap(),
        "--from",
        "2025-10-15",
    ];
    // Not while the collector runs.
    let out = run(&args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("stop the collector"),
        "{err}"
    );
    drop(collector); // SIGKILL

    let out = run(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_success(&out);
    assert!(
        stdout.contains("Recomputed 1 hourly rows from 2025-10-15 00:00 CEST")
            && stdout.contains("2025-10: 1 rows"),
        "{stdout}"
    );

    let out = run_ok(&[
        "report",
        "--config",
        cfg_s,
        "--data-dir",
        data.to_str().unwrap(),
        "--month",
        "2025-10",
        "--format",
        "json",
    ]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // 1 kWh × 1.3 before the 15th, 1 kWh × 1.1 after: 2.4 kWh with PUE.
    assert_eq!(
        json["totals"]["exact"]["facility_energy_uj"]
            .as_u64()
            .unwrap(),
        KWH * 24 / 10
    );
    let rec = &json["configuration"]["recomputations"];
    assert_eq!(rec.as_array().unwrap().len(), 1, "{rec}");
    assert_eq!(rec[0]["months"][0]["rows"], 1);
    let plans = json["configuration"]["plans"].as_array().unwrap();
    assert_eq!(plans.len(), 2, "{plans:?}");
    assert_eq!(plans[0]["sites"][1]["pue"], 1.3);
    assert_eq!(plans[1]["sites"][1]["pue"], 1.1);
    assert_eq!(plans[1]["from"], "2025-10-14T22:00:00Z");

    // A bad --from is named.
    let out = run(&[
        "recompute",
        "--config",
        cfg_s,
        "--data-dir",
        data.to_str().unwrap(),
        "--from",
        "15/10/2025",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("expected YYYY-MM or YYYY-MM-DD"),
        "{err}"
    );
}
