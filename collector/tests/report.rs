#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The monthly report against a month computed by hand: October 2025 in Europe/Paris
//! (the DST change on the 26th: 745 hours), three projects on two hosts in two sites, a
//! grid intensity that changes every hour in France and a yearly factor in Germany, a
//! contractual factor on one site, embodied emissions shared by use, one objective
//! missed, one met and a project without objective. Every total of the JSON report is
//! checked against the hand computation and against the sum of the CSV's rows; the
//! French and English Markdown and HTML are compared with golden files.

mod common;
mod report_fixture;

use std::collections::BTreeMap;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use empreinte_collector::report::{self, Format, Lang};
use empreinte_collector::store::{Store, TokenKind};
use report_fixture::*;

fn close(got: f64, want: f64, tolerance: f64, what: &str) {
    assert!(
        (got - want).abs() <= tolerance,
        "{what}: {got} vs {want} (± {tolerance})"
    );
}

#[tokio::test]
async fn every_total_matches_the_hand_computation_and_the_csv_rows_add_up_exactly() {
    // On each engine (the same figures from SQLite and PostgreSQL).
    for e in common::engines(CONFIG).await {
        eprintln!("on {}", e.name);
        let (h, hours) = october_in(e.harness).await;
        hand_computation_on(&h, &hours).await;
    }
}

async fn hand_computation_on(h: &common::Harness<dyn Store>, hours: &[i64]) {
    let data = build(h, "2025-10").await.unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&report::render_text(&data, Format::Json, Lang::En).unwrap()).unwrap();
    let n = hours.len() as f64;
    let t = &json["totals"]["exact"];
    let u = |v: &serde_json::Value| v.as_u64().unwrap();

    // Energy, exact to the microjoule.
    let e_srv = KWH / 2 * 745 + KWH / 5 * 372;
    let e_gpu = KWH * 745 + KWH / 4 * 745;
    assert_eq!(u(&t["energy_uj"]), e_srv + e_gpu);
    assert_eq!(u(&t["estimated_energy_uj"]), KWH / 5 * 372);
    assert_eq!(u(&t["measured_energy_uj"]), e_srv + e_gpu - KWH / 5 * 372);
    // Facility: 1.2 in the town hall, the default 1.5 in the data centre.
    close(
        u(&t["facility_energy_uj"]) as f64,
        e_srv as f64 * 1.2 + e_gpu as f64 * 1.5,
        745.0 * 3.0,
        "facility energy",
    );

    // Location-based: hour by hour in France (series), 400 g/kWh in Germany (yearly).
    let fr_kwh_per_hour = |i: usize| 0.5 + if i < 372 { 0.2 } else { 0.0 };
    let fr_g: f64 = hours
        .iter()
        .enumerate()
        .map(|(i, &hs)| fr_kwh_per_hour(i) * 1.2 * intensity(hs))
        .sum();
    let de_g = 1.25 * n * 1.5 * 400.0;
    let rows = 745.0 + 372.0 + 745.0 * 2.0; // one µg of rounding per row at most
    close(
        u(&t["location_co2e_ug"]) as f64,
        (fr_g + de_g) * 1e6,
        rows,
        "location-based",
    );
    // Market-based: the contract's 10 g/kWh in France; Germany has none (location stands in).
    let fr_market_g = (0.5 * n + 0.2 * 372.0) * 1.2 * 10.0;
    close(
        u(&t["market_co2e_ug"]) as f64,
        (fr_market_g + de_g) * 1e6,
        rows,
        "market-based",
    );
    // Embodied: gpu-1's server 5 g/h and cards 20 g/h; srv-1 has no inventory.
    close(
        u(&t["embodied_co2e_ug"]) as f64,
        25.0 * n * 1e6,
        rows,
        "embodied",
    );

    // Projects: energy, share, change, objectives.
    let project = |p: &str| {
        json["projects"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["project"] == p)
            .unwrap_or_else(|| panic!("{p} missing"))
            .clone()
    };
    assert_eq!(u(&project("chat")["exact"]["energy_uj"]), KWH * 745);
    assert_eq!(
        u(&project("web")["exact"]["energy_uj"]),
        KWH / 2 * 745 + KWH / 4 * 745
    );
    assert_eq!(u(&project("batch")["exact"]["energy_uj"]), KWH / 5 * 372);
    close(
        project("chat")["share"].as_f64().unwrap(),
        745.0 / (0.5 * 745.0 + 0.2 * 372.0 + 1.25 * 745.0),
        1e-12,
        "chat's share",
    );
    close(
        project("chat")["energy_change"].as_f64().unwrap(),
        (745.0 - 10.0) / 10.0,
        1e-9,
        "chat against September",
    );
    assert!(project("web")["energy_change"].is_null(), "web is new");
    close(
        u(&project("chat")["exact"]["embodied_co2e_ug"]) as f64,
        24.0 * n * 1e6,
        745.0,
        "chat's embodied (cards and 4/5 of the server)",
    );
    // Per project: chat is all in Germany (1 kWh × 1.5 × 400 g), batch all in France.
    close(
        u(&project("chat")["exact"]["location_co2e_ug"]) as f64,
        n * 1.5 * 400.0 * 1e6,
        745.0,
        "chat's location-based",
    );
    let batch_g: f64 = hours[..372]
        .iter()
        .map(|&hs| 0.2 * 1.2 * intensity(hs))
        .sum();
    close(
        u(&project("batch")["exact"]["location_co2e_ug"]) as f64,
        batch_g * 1e6,
        372.0,
        "batch's location-based",
    );
    close(
        u(&project("batch")["exact"]["market_co2e_ug"]) as f64,
        0.2 * 372.0 * 1.2 * 10.0 * 1e6,
        372.0,
        "batch's market-based (the contract)",
    );
    assert_eq!(u(&project("batch")["exact"]["measured_energy_uj"]), 0);
    let verdict = |p: &str| project(p)["objectives"][0]["verdict"].clone();
    assert_eq!(verdict("chat"), "exceeded");
    assert_eq!(verdict("web"), "met");
    assert_eq!(project("batch")["objectives"], serde_json::json!([]));

    // Days in Paris time: 31 days, the 26th has 25 hours.
    let days = json["days"].as_array().unwrap();
    assert_eq!(days.len(), 31);
    let day = |d: &str| days.iter().find(|x| x["day"] == d).unwrap().clone();
    assert_eq!(u(&day("2025-10-26")["energy_uj"]["chat"]), 25 * KWH);
    assert_eq!(u(&day("2025-10-27")["energy_uj"]["chat"]), 24 * KWH);

    // Perimeter, breakdowns, trend, coefficients.
    assert_eq!(
        json["perimeter"]["hosts"],
        serde_json::json!(["gpu-1", "srv-1"])
    );
    assert_eq!(
        json["perimeter"]["gpus"],
        serde_json::json!([{ "model": "test-gpu", "count": 2 }])
    );
    let gpu_line = &json["gpu_models"][0];
    assert_eq!(gpu_line["key"], "test-gpu");
    assert_eq!(u(&gpu_line["exact"]["energy_uj"]), KWH * 745);
    let trend = json["trend"].as_array().unwrap();
    assert_eq!(trend.len(), 12);
    assert_eq!(trend[11]["month"], "2025-10");
    assert_eq!(trend[10]["month"], "2025-09");
    assert_eq!(u(&trend[10]["exact"]["energy_uj"]), 10 * KWH);
    assert_eq!(trend[0]["month"], "2024-11");
    let coefs = json["coefficients"].as_array().unwrap();
    let default_pue = coefs
        .iter()
        .find(|c| c["kind"] == "pue" && c["subject"] == "datacentre")
        .unwrap();
    assert_eq!(default_pue["is_default"], true);
    assert_eq!(default_pue["value"], 1.5);
    assert!(
        coefs
            .iter()
            .any(|c| c["kind"] == "market_factor" && c["value"] == 10.0)
    );
    assert_eq!(json["intensity_series"][0]["hours"], 745);
    assert_eq!(json["inference"]["available"], false);
    assert_eq!(json["market_sites"], serde_json::json!(["mairie"]));

    // The CSV's rows add up to the totals, exactly, column by column and per project.
    let csv_text = report::render_text(&data, Format::Csv, Lang::En).unwrap();
    let mut reader = csv::Reader::from_reader(csv_text.as_bytes());
    let headers = reader.headers().unwrap().clone();
    let col = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let mut sums: BTreeMap<&str, u64> = BTreeMap::new();
    let mut per_project: BTreeMap<String, u64> = BTreeMap::new();
    let mut lines = 0;
    for rec in reader.records() {
        let rec = rec.unwrap();
        lines += 1;
        for c in [
            "energy_uj",
            "facility_energy_uj",
            "location_co2e_ug",
            "market_co2e_ug",
            "embodied_co2e_ug",
        ] {
            *sums.entry(c).or_default() += rec[col(c)].parse::<u64>().unwrap();
        }
        *per_project
            .entry(rec[col("project")].to_string())
            .or_default() += rec[col("energy_uj")].parse::<u64>().unwrap();
        // Each row's figures follow from its own coefficients.
        let e: f64 = rec[col("energy_uj")].parse().unwrap();
        let pue: f64 = rec[col("pue")].parse().unwrap();
        let g: f64 = rec[col("intensity_g_per_kwh")].parse().unwrap();
        let loc: f64 = rec[col("location_co2e_ug")].parse().unwrap();
        close(
            loc,
            e / 3.6e12 * pue * g * 1e6,
            1.0,
            "a row's location-based",
        );
    }
    assert_eq!(lines, 745 + 372 + 745 * 2);
    for (c, k) in [
        ("energy_uj", "energy_uj"),
        ("facility_energy_uj", "facility_energy_uj"),
        ("location_co2e_ug", "location_co2e_ug"),
        ("market_co2e_ug", "market_co2e_ug"),
        ("embodied_co2e_ug", "embodied_co2e_ug"),
    ] {
        assert_eq!(sums[c], u(&t[k]), "column {c}");
    }
    for p in ["chat", "web", "batch"] {
        assert_eq!(per_project[p], u(&project(p)["exact"]["energy_uj"]), "{p}");
    }
    // The JSON carries the month's aggregate lines (not every hourly row), which add up
    // to the same totals.
    assert!(json.get("rows").is_none());
    for k in [
        "energy_uj",
        "facility_energy_uj",
        "location_co2e_ug",
        "market_co2e_ug",
        "embodied_co2e_ug",
    ] {
        let sum: u64 = json["lines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| u(&l[k]))
            .sum();
        assert_eq!(sum, u(&t[k]), "lines' {k}");
    }
}

#[tokio::test]
async fn the_markdown_reports_match_the_golden_files_in_french_and_english() {
    let (h, _) = october().await;
    let data = build(&h, "2025-10").await.unwrap();
    let fr = report::render_text(&data, Format::Md, Lang::Fr).unwrap();
    let en = report::render_text(&data, Format::Md, Lang::En).unwrap();
    // `UPDATE_EXPECT=1 cargo test -p empreinte-collector --test report` rewrites them.
    expect_test::expect_file!["golden/report-2025-10.fr.md"].assert_eq(&fr);
    expect_test::expect_file!["golden/report-2025-10.en.md"].assert_eq(&en);
    // The printed document (A4 HTML with its charts, what the PDF is printed from).
    let fr_html = report::render_text(&data, Format::Html, Lang::Fr).unwrap();
    let en_html = report::render_text(&data, Format::Html, Lang::En).unwrap();
    expect_test::expect_file!["golden/report-2025-10.fr.html"].assert_eq(&fr_html);
    expect_test::expect_file!["golden/report-2025-10.en.html"].assert_eq(&en_html);
    // What a reader checks first, in each language's way of writing numbers.
    assert!(fr.contains("| chat | 745,00\u{202F}kWh |"), "{fr}");
    assert!(en.contains("| chat | 745.00 kWh |"), "{en}");
    assert!(fr.contains("| batch |") && fr.contains("pas d'objectif"));
    assert!(en.contains("no objective"));
    assert!(
        fr.contains("énergie\u{202F}: dépassé"),
        "chat missed its objective"
    );
    assert!(en.contains("energy: met"), "web met its objective");
    assert!(
        en.contains("yes: default value"),
        "the default PUE is flagged"
    );
    assert!(en.contains("Not available"), "no inference counts");
}

#[tokio::test]
async fn a_month_without_data_a_future_month_and_a_bad_month_are_clearly_worded() {
    let (h, _) = october().await;
    // No data in June 2025: a report that says so, with zero totals.
    let data = build(&h, "2025-06").await.unwrap();
    assert!(!data.has_data);
    assert_eq!(data.totals.exact.energy_uj, 0);
    let fr = report::render_text(&data, Format::Md, Lang::Fr).unwrap();
    assert!(
        fr.contains("Aucune donnée n'a été enregistrée pour cette période"),
        "{fr}"
    );
    let en = report::render_text(&data, Format::Html, Lang::En).unwrap();
    assert!(en.contains("No data was recorded for this period"));
    // The objectives are still evaluated: nothing used, so met.
    assert!(en.contains("<td>met</td>"), "{en}");
    // A month in the future: an error that says so.
    let e = build(&h, "2030-01").await.unwrap_err().to_string();
    assert!(e.starts_with("2030-01 is in the future"), "{e}");
    assert!(e.contains("2025-11-05"), "{e}");
    // Not a month.
    let e = build(&h, "2025-13").await.unwrap_err().to_string();
    assert!(e.contains("YYYY-MM"), "{e}");
    // The current month is month-to-date, and says so.
    let data = build(&h, "2025-11").await.unwrap();
    assert!(!data.complete);
    let en = report::render_text(&data, Format::Md, Lang::En).unwrap();
    assert!(en.contains("The month is not over"), "{en}");
}

#[tokio::test]
async fn the_collector_serves_the_reports_with_a_read_token() {
    let (h, _) = october().await;
    let reader = h.token(TokenKind::Read, None).await;
    let call = |path: &str, token: Option<&str>| {
        let mut req = Request::get(path);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        h.call(req.body(Body::empty()).unwrap())
    };
    let (status, body) = call("/reports/2025-10.json", Some(&reader)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["month"], "2025-10");
    assert_eq!(
        json["totals"]["exact"]["energy_uj"].as_u64().unwrap(),
        KWH / 2 * 745 + KWH / 5 * 372 + KWH * 745 + KWH / 4 * 745
    );
    // The CSV: French by default (`;`, decimal commas), international on request.
    let (status, body) = call("/reports/2025-10.csv", Some(&reader)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.starts_with("hour_utc;local_day;host"), "{body:.200}");
    let (status, body) = call("/reports/2025-10.csv?lang=en", Some(&reader)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.starts_with("hour_utc,local_day,host"), "{body:.200}");
    // French by default (the organisation's language), English on request.
    let (status, body) = call("/reports/2025-10.html", Some(&reader)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("<html lang=\"fr\">") && body.contains("<svg"));
    let (_, body) = call("/reports/2025-10.md?lang=en", Some(&reader)).await;
    assert!(body.starts_with("# AI energy and carbon footprint — October 2025"));
    // The PDF, where the collector's machine has Chromium (required in CI).
    match report::pdf::find_chromium(None) {
        Ok(_) => {
            let (status, body) = call("/reports/2025-10.pdf?lang=en", Some(&reader)).await;
            assert_eq!(status, StatusCode::OK, "{body:.300}");
            assert!(body.starts_with("%PDF-"), "{body:.300}");
        }
        Err(e) if std::env::var("CI").as_deref() == Ok("true") => panic!("CI=true: {e}"),
        Err(e) => eprintln!("note: no PDF checked: {e}"),
    }
    // Refusals: no token, a bad name, a month in the future.
    let (status, _) = call("/reports/2025-10.json", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = call("/reports/2025-10.docx", Some(&reader)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(
        body.contains("html, pdf, csv, json, md, boamps or opendata"),
        "{body}"
    );
    let (status, body) = call("/reports/2100-01.json", Some(&reader)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("2100-01 is in the future"), "{body}");
}

#[tokio::test]
async fn the_streamed_csv_is_the_csv_of_every_row_page_after_page() {
    let (h, _) = october().await;
    let full = build(&h, "2025-10").await.unwrap();
    let expected = report::render_text(&full, Format::Csv, Lang::En).unwrap();
    assert_eq!(expected.lines().count(), 1 + 745 + 372 + 745 * 2);
    let config = h.state.planner.config();
    let m = report::parse_report_month(&paris(), "2025-10", NOW_S).unwrap();
    let summary = report::build_summary(h.store.as_ref(), config, &paris(), &m, NOW_S)
        .await
        .unwrap();
    assert!(summary.rows.is_empty(), "the summary holds no hourly row");
    // Pages of 100 rows (and a page size that divides the rows exactly) give the same file.
    for page in [100, 2607, 1] {
        let store: std::sync::Arc<dyn Store> = h.store.clone();
        let stream = report::csv_stream_paged(store, summary.clone(), paris(), Lang::En, page);
        let pieces: Vec<Vec<u8>> = futures_util::StreamExt::collect::<Vec<_>>(stream)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            String::from_utf8(pieces.concat()).unwrap(),
            expected,
            "page {page}"
        );
    }
    // And the collector serves that file.
    let read = h.token(TokenKind::Read, None).await;
    let (status, body) = h
        .call(
            Request::get("/reports/2025-10.csv?lang=en")
                .header("authorization", format!("Bearer {read}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, expected);
}

#[tokio::test]
async fn the_french_csv_has_semicolons_and_decimal_commas_and_the_same_figures() {
    let (h, _) = october().await;
    let data = build(&h, "2025-10").await.unwrap();
    let en = report::render_text(&data, Format::Csv, Lang::En).unwrap();
    let fr = report::render_text(&data, Format::Csv, Lang::Fr).unwrap();
    let read = |text: &str, delimiter: u8| -> Vec<Vec<String>> {
        csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .from_reader(text.as_bytes())
            .records()
            .map(|r| r.unwrap().iter().map(str::to_string).collect())
            .collect()
    };
    let (en_rows, fr_rows) = (read(&en, b','), read(&fr, b';'));
    assert_eq!(en_rows.len(), 745 + 372 + 745 * 2);
    assert_eq!(en_rows.len(), fr_rows.len());
    let header: Vec<&str> = fr.lines().next().unwrap().split(';').collect();
    assert_eq!(
        header,
        report::csv::COLUMNS,
        "the same columns, split by `;`"
    );
    let pue = header.iter().position(|c| *c == "pue").unwrap();
    let energy = header.iter().position(|c| *c == "energy_uj").unwrap();
    for (e, f) in en_rows.iter().zip(&fr_rows) {
        // Decimals with a comma, the same value; integers as they are.
        assert_eq!(f[pue], e[pue].replace('.', ","), "{f:?}");
        assert!(!f[pue].contains('.'), "{f:?}");
        assert_eq!(f[energy], e[energy]);
    }
    assert!(
        fr_rows.iter().any(|r| r[pue] == "1,2"),
        "the town hall's PUE"
    );
}

/// A report for people lists the 50 hosts that used the most and one line adding up the
/// rest, exactly (the table still adds up to the hosts' total to the microjoule); the JSON
/// keeps every host. Hosts are made by cutting the fixture's hosts into 60 lines.
#[tokio::test]
async fn a_report_of_many_hosts_lists_the_largest_and_adds_up_the_rest_exactly() {
    let (h, _) = october().await;
    let mut data = build(&h, "2025-10").await.unwrap();
    let total: u64 = data.hosts.iter().map(|l| l.figures.exact.energy_uj).sum();
    let template = data.hosts[0].clone();
    // 60 hosts of 1..=60 kWh-ish (distinct, so the order is by energy), the total kept:
    // host-01 gets 1 part, host-60 gets 60 parts, the last one the remainder.
    let parts: u64 = (1..=60).sum();
    let mut given = 0u64;
    data.hosts = (1..=60u64)
        .map(|i| {
            let mut l = template.clone();
            l.key = format!("host-{i:02}");
            let e = if i == 60 {
                total - given
            } else {
                total / parts * i
            };
            given += e;
            l.figures.exact = empreinte_collector::store::Sums {
                energy_uj: e,
                facility_energy_uj: e,
                ..Default::default()
            };
            l.share = e as f64 / total as f64;
            l
        })
        .collect::<Vec<_>>();
    data.hosts.reverse();
    data.perimeter.hosts = (1..=60).map(|i| format!("host-{i:02}")).collect();
    let md = report::render_text(&data, Format::Md, Lang::En).unwrap();
    let section = md
        .split("## By host")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .unwrap();
    let rows: Vec<&str> = section
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| Host"))
        .collect();
    assert_eq!(rows.len(), 51, "{section}");
    assert!(rows[0].starts_with("| host-60 |"), "{}", rows[0]);
    assert!(rows[49].starts_with("| host-11 |"), "{}", rows[49]);
    // host-01 to host-10: 55 parts.
    let rest_uj = total / parts * 55;
    assert!(rows[50].starts_with("| 10 other hosts |"), "{}", rows[50]);
    let kwh = |uj: u64| format!("{:.2} kWh", uj as f64 / 3.6e12);
    assert!(
        rows[50].contains(&kwh(rest_uj)),
        "{} vs {}",
        rows[50],
        kwh(rest_uj)
    );
    assert!(section.contains("The 50 hosts that used the most energy, out of 60"));
    assert!(
        md.contains("60 (host-01, host-02,")
            && md.contains("… the full list is in the CSV export)")
    );
    // Exact: the shown lines and the remainder add up to the hosts' total.
    let shown: u64 = data.hosts[..50]
        .iter()
        .map(|l| l.figures.exact.energy_uj)
        .sum();
    assert_eq!(shown + rest_uj, total);
    // The French document says the same; the JSON keeps all 60.
    let fr = report::render_text(&data, Format::Md, Lang::Fr).unwrap();
    assert!(fr.contains("| 10 autres serveurs |"), "{fr}");
    let json = report::render_text(&data, Format::Json, Lang::En).unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["hosts"].as_array().map(Vec::len), Some(60));
}
