#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `empreinte report` from the command line, without a browser: the clear errors (a
//! month in the future, locally and through a collector; no data directory; a PDF
//! without Chromium), a month without data, and the same CSV from the data directory and
//! from the collector.

mod common;

use common::*;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `empreinte report --data-dir DATA_DIR --month MONTH EXTRA...`.
fn report_from(data_dir: &str, month: &str, extra: &[&str]) -> std::process::Output {
    run(&[&["report", "--data-dir", data_dir, "--month", month], extra].concat())
}

/// `empreinte report --collector BASE --token-file TOKEN_FILE --month MONTH EXTRA...`.
fn report_through(
    base: &str,
    token_file: &str,
    month: &str,
    extra: &[&str],
) -> std::process::Output {
    let source = ["report", "--collector", base, "--token-file", token_file];
    run(&[&source, ["--month", month].as_slice(), extra].concat())
}

#[test]
fn report_errors_are_clear_and_both_sources_give_the_same_report() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let d = data.to_str().unwrap();

    // A month in the future.
    let out = report_from(d, "2100-01", &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--month 2100-01 is in the future"),
        "{}",
        stderr(&out)
    );
    // Not a month.
    let out = report_from(d, "2025-1", &[]);
    assert!(stderr(&out).contains("YYYY-MM"), "{}", stderr(&out));
    // No data directory.
    let missing = dir.path().join("nope");
    let out = run(&[
        "report",
        "--data-dir",
        missing.to_str().unwrap(),
        "--month",
        "2025-01",
    ]);
    assert!(
        stderr(&out).contains("no data directory at"),
        "{}",
        stderr(&out)
    );
    // A month without data: a report that says so (French by default).
    let out = report_from(d, "2025-01", &["--format", "md"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let md = String::from_utf8(out.stdout).unwrap();
    assert!(
        md.starts_with("# Empreinte énergétique et carbone de l'IA — janvier 2025"),
        "{md}"
    );
    assert!(md.contains("Aucune donnée n'a été enregistrée pour cette période"));
    // A PDF without a browser: where to get one.
    let out = std::process::Command::new(BIN)
        .args([
            "report",
            "--data-dir",
            d,
            "--month",
            "2025-01",
            "--format",
            "pdf",
        ])
        .args(["-o", dir.path().join("r.pdf").to_str().unwrap()])
        .env("EMPREINTE_CHROMIUM", dir.path().join("no-chromium"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("cannot start Chromium"),
        "{}",
        stderr(&out)
    );

    // Through a running collector: the same CSV as from the data directory.
    let agent = create_token(&data, "agent", Some("srv-1"));
    let read = create_token(&data, "read", None);
    let token_file = dir.path().join("read.token");
    std::fs::write(&token_file, &read).unwrap();
    let collector = Collector::spawn(&data, free_port(), &[]);
    let now_ms = empreinte_collector::clock::now_unix_ms();
    let start = now_ms - now_ms % 3_600_000 - 3 * 3_600_000;
    let body = serde_json::json!({
        "version": 1,
        "agent": { "agent_id": "srv-1", "hostname": "srv-1", "agent_version": "test" },
        "spool": { "batches": 0, "bytes": 0, "oldest_start_unix_ms": null, "dropped_batches_total": 0 },
        "batches": [{
            "run_id": format!("{:032x}", 1), "seq": 1,
            "start_unix_ms": start, "end_unix_ms": start + 3_600_000, "counters": [],
            "records": [{ "project": "chat", "component": "cpu", "source": "rapl",
                "start_unix_ms": start, "end_unix_ms": start + 3_600_000, "energy_uj": 3_600_000_000u64 }],
        }],
    });
    let status = ureq::post(&format!("{}/api/v1/ingest", collector.base))
        .header("Authorization", &format!("Bearer {agent}"))
        .header("Content-Type", "application/json")
        .send(serde_json::to_vec(&body).unwrap().as_slice())
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 200);
    // The month of that hour, in Paris.
    let tz = jiff::tz::TimeZone::get("Europe/Paris").unwrap();
    let label = empreinte_collector::period::month_of(&tz, (start / 1000) as i64)
        .unwrap()
        .label();
    let t = token_file.to_str().unwrap();
    let remote = report_through(&collector.base, t, &label, &["--format", "csv"]);
    assert!(remote.status.success(), "{}", stderr(&remote));
    let local = report_from(d, &label, &["--format", "csv"]);
    assert!(local.status.success(), "{}", stderr(&local));
    assert_eq!(
        String::from_utf8_lossy(&remote.stdout),
        String::from_utf8_lossy(&local.stdout)
    );
    let csv = String::from_utf8(local.stdout).unwrap();
    let energy: u64 = csv
        .lines()
        .skip(1)
        .map(|l| l.split(';').nth(9).unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(energy, 3_600_000_000, "{csv}");
    // BoAmps: one file per use in the -o directory; the open-data CSV, one line per use.
    let boamps_dir = dir.path().join("boamps");
    let out = report_from(
        d,
        &label,
        &["--format", "boamps", "-o", boamps_dir.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let file = boamps_dir.join(format!("{label}-chat.boamps.json"));
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(doc["measures"][0]["powerConsumption"], 0.001, "{doc}");
    let out = report_from(d, &label, &["--format", "boamps"]);
    assert!(stderr(&out).contains("give -o DIR"), "{}", stderr(&out));
    let out = report_from(d, &label, &["--format", "opendata"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let open = String::from_utf8(out.stdout).unwrap();
    assert!(
        open.starts_with("month,organisation,use,energy_kwh,")
            && open.lines().nth(1).unwrap().contains(",chat,0.001000,"),
        "{open}"
    );
    // A future month through the collector: the same sentence.
    let out = report_through(&collector.base, t, "2100-01", &[]);
    assert!(
        stderr(&out).contains("--month 2100-01 is in the future"),
        "{}",
        stderr(&out)
    );
    // A wrong token: the collector's reason.
    std::fs::write(&token_file, "emp_nope_nope").unwrap();
    let out = report_through(&collector.base, t, &label, &[]);
    assert!(stderr(&out).contains("401"), "{}", stderr(&out));
}
