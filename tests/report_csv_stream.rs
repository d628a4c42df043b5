#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `empreinte report --format csv -o FILE` streams the month's hourly rows to the file
//! (issue 12): more rows than one page of the store, from the data directory and from a
//! collector, give the same file, whose energy column sums to what was pushed; the file
//! takes its name only once complete (no `.partial` left), and a report that cannot be
//! made leaves no file under the name asked.

mod common;

use common::*;

const PROJECTS: usize = 2_100;
const HOURS: u64 = 3;
/// One watt-hour per project and hour.
const RECORD_UJ: u64 = 3_600_000_000;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_csv_of_a_month_larger_than_a_page_is_streamed_to_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let d = data.to_str().unwrap();
    let agent = create_token(&data, "agent", Some("srv-1"));
    let read = create_token(&data, "read", None);
    let token_file = dir.path().join("read.token");
    std::fs::write(&token_file, &read).unwrap();
    let collector = Collector::spawn(&data, free_port(), &[]);

    // Three hours × 2,100 projects: 6,300 hourly rows, more than one page (5,000).
    let now_ms = empreinte_collector::clock::now_unix_ms();
    let start = now_ms - now_ms % 3_600_000 - (HOURS + 1) * 3_600_000;
    let batches: Vec<serde_json::Value> = (0..HOURS)
        .map(|h| {
            let from = start + h * 3_600_000;
            let records: Vec<serde_json::Value> = (0..PROJECTS)
                .map(|p| {
                    serde_json::json!({ "project": format!("p{p:04}"), "component": "cpu",
                        "source": "rapl", "start_unix_ms": from, "end_unix_ms": from + 3_600_000,
                        "energy_uj": RECORD_UJ })
                })
                .collect();
            serde_json::json!({ "run_id": format!("{:032x}", 1), "seq": h + 1,
                "start_unix_ms": from, "end_unix_ms": from + 3_600_000, "counters": [],
                "records": records })
        })
        .collect();
    let body = serde_json::json!({
        "version": 1,
        "agent": { "agent_id": "srv-1", "hostname": "srv-1", "agent_version": "test" },
        "spool": { "batches": 0, "bytes": 0, "oldest_start_unix_ms": null, "dropped_batches_total": 0 },
        "batches": batches,
    });
    let mut response = ureq::post(&format!("{}/api/v1/ingest", collector.base))
        .header("Authorization", &format!("Bearer {agent}"))
        .header("Content-Type", "application/json")
        .config()
        .http_status_as_error(false)
        .build()
        .send(serde_json::to_vec(&body).unwrap().as_slice())
        .unwrap();
    assert_eq!(
        response.status().as_u16(),
        200,
        "{}",
        response.body_mut().read_to_string().unwrap()
    );

    // Every month the three hours touch (a month boundary may fall among them).
    let tz = jiff::tz::TimeZone::get("Europe/Paris").unwrap();
    let mut labels: Vec<String> = (0..HOURS)
        .map(|h| {
            empreinte_collector::period::month_of(&tz, ((start + h * 3_600_000) / 1000) as i64)
                .unwrap()
                .label()
        })
        .collect();
    labels.dedup();
    let mut energy = 0u64;
    let mut rows = 0usize;
    for label in &labels {
        // From the collector first: its read folds every acknowledged push into the
        // database, which the command then reads directly (docs/operations.md).
        let remote_file = dir.path().join(format!("remote-{label}.csv"));
        let out = run(&[
            "report",
            "--collector",
            &collector.base,
            "--token-file",
            token_file.to_str().unwrap(),
            "--month",
            label,
            "--format",
            "csv",
            "-o",
            remote_file.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        let local_file = dir.path().join(format!("local-{label}.csv"));
        let out = run(&[
            "report",
            "--data-dir",
            d,
            "--month",
            label,
            "--format",
            "csv",
            "-o",
            local_file.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stderr(&out).contains("written to"), "{}", stderr(&out));
        let local = std::fs::read_to_string(&local_file).unwrap();
        let remote = std::fs::read_to_string(&remote_file).unwrap();
        assert!(local == remote, "the two sources differ for {label}");
        assert_eq!(local.matches("hour_utc").count(), 1, "one header");
        for line in local.lines().skip(1) {
            energy += line.split(';').nth(9).unwrap().parse::<u64>().unwrap();
            rows += 1;
        }
    }
    assert_eq!(rows, PROJECTS * HOURS as usize);
    assert_eq!(energy, PROJECTS as u64 * HOURS * RECORD_UJ, "to the µJ");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".partial"))
        .collect();
    assert!(left.is_empty(), "{left:?}");

    // A report that cannot be made (a month in the future) leaves no file behind.
    let refused = dir.path().join("future.csv");
    let out = run(&[
        "report",
        "--data-dir",
        d,
        "--month",
        "2100-01",
        "--format",
        "csv",
        "-o",
        refused.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("in the future"), "{}", stderr(&out));
    assert!(!refused.exists());
    assert!(!dir.path().join("future.csv.partial").exists());
}
