#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! A month computed by hand, with uncertainties: one host, CPU measured by RAPL
//! (300 kWh), GPU measured by NVML (800 kWh), DRAM estimated (36 kWh), in a site with the
//! default PUE and the zone's yearly grid factor. By hand (docs/methodology.md,
//! "Uncertainty"):
//!   u(energy) = sqrt((5 % × 300)² + (5 % × 800)² + (35 % × 36)²) = sqrt(1983.76)
//!             = 44.54 kWh, 3.92 % of 1,136 kWh -> "1 136,00 kWh ± 4 %";
//!   u(facility energy) adds the default PUE (20 %): sqrt(3.92² + 20²) = 20.4 %;
//!   u(location CO2e) adds the grid factor (15 %): sqrt(3.92² + 20² + 15²) = 25.3 %.

mod common;

use axum::http::StatusCode;
use common::*;
use empreinte_collector::report::{self, Format, Lang};
use empreinte_shared::{Component, SourceKind};

const CONFIG: &str = r#"
[organisation]
name = "Ville de Test"
timezone = "Europe/Paris"
language = "fr"

[limits]
max_batch_age = "36500days"

[default_site]
name = "mairie"
zone = "FR"
"#;

/// 2025-11-05T10:00:00Z: October 2025 is over.
const NOW_S: i64 = 1_762_336_800;

#[tokio::test]
async fn the_reports_plus_minus_figures_match_a_hand_computed_month() {
    let h = Harness::new(CONFIG).await;
    let tz = jiff::tz::TimeZone::get("Europe/Paris").unwrap();
    let m = report::parse_report_month(&tz, "2025-10", NOW_S).unwrap();
    let token = h
        .token(empreinte_collector::store::TokenKind::Agent, Some("srv-1"))
        .await;
    // 100 hours from the 2nd of October: 3 kWh/h RAPL, 8 kWh/h NVML, 0.36 kWh/h estimate.
    let first = (m.from_s + 24 * 3600) as u64 * 1000;
    let batches: Vec<_> = (0..100u64)
        .map(|i| {
            let (s, e) = (first + i * 3_600_000, first + (i + 1) * 3_600_000);
            batch(
                1,
                i + 1,
                s,
                e,
                vec![
                    record("web", Component::Cpu, SourceKind::Rapl, s, e, 3 * KWH),
                    record("chat", Component::Gpu, SourceKind::Nvml, s, e, 8 * KWH),
                    record(
                        "web",
                        Component::Dram,
                        SourceKind::Estimate,
                        s,
                        e,
                        KWH * 36 / 100,
                    ),
                ],
            )
        })
        .collect();
    let (status, body) = h.push(&token, &push("srv-1", batches)).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let config = h.state.planner.config();
    let data = report::build(h.store.as_ref(), config, &tz, &m, NOW_S)
        .await
        .unwrap();
    let u = &data.uncertainty;
    let by_hand = 1983.76f64.sqrt();
    assert!((u.energy_kwh.value - 1136.0).abs() < 1e-6, "{u:?}");
    assert!((u.energy_kwh.absolute - by_hand).abs() < 1e-6, "{u:?}");
    let e_pct = by_hand / 1136.0 * 100.0;
    let fac = (e_pct.powi(2) + 20f64.powi(2)).sqrt();
    assert!(
        (u.facility_energy_kwh.relative_pct() - fac).abs() < 1e-6,
        "{u:?}"
    );
    let loc = (e_pct.powi(2) + 20f64.powi(2) + 15f64.powi(2)).sqrt();
    assert!(
        (u.co2e_kg_location.relative_pct() - loc).abs() < 1e-6,
        "{u:?}"
    );

    // The report shows them, in French and in English, and the JSON carries them.
    let fr = report::render_text(&data, Format::Md, Lang::Fr).unwrap();
    assert!(
        fr.contains("1\u{202F}136,00\u{202F}kWh ± 4\u{202F}%"),
        "{fr}"
    );
    assert!(
        fr.contains("± 20\u{202F}%") && fr.contains("± 25\u{202F}%"),
        "{fr}"
    );
    let en = report::render_text(&data, Format::Md, Lang::En).unwrap();
    assert!(
        en.contains("1,136.00\u{202F}kWh ± 4%") || en.contains("1,136.00 kWh ± 4%"),
        "{en}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&report::render_text(&data, Format::Json, Lang::En).unwrap()).unwrap();
    let abs = json["uncertainty"]["energy_kwh"]["absolute"]
        .as_f64()
        .unwrap();
    assert!((abs - by_hand).abs() < 1e-6);
    // Per project: "web" is RAPL 300 + estimate 36 on one host: sqrt(15² + 12.6²).
    let web = data.projects.iter().find(|p| p.project == "web").unwrap();
    let web_hand = (15f64.powi(2) + 12.6f64.powi(2)).sqrt();
    assert!((web.uncertainty.energy_kwh.absolute - web_hand).abs() < 1e-6);
    // The CSV gives each row's own uncertainty.
    let csv = report::render_text(&data, Format::Csv, Lang::En).unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let col = header
        .iter()
        .position(|c| *c == "energy_uncertainty_pct")
        .unwrap();
    let src = header.iter().position(|c| *c == "source").unwrap();
    for line in csv.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let want = match f[src] {
            "estimate" => "35.0",
            _ => "5.0",
        };
        assert_eq!(f[col], want, "{line}");
    }
}

/// One hour, three hours ago, pushed by `srv-1`: web 3 kWh of CPU (RAPL) and 0.36 kWh of
/// DRAM (estimated), chat 8 kWh of GPU (NVML). Gives the harness, a read token and the
/// hour's bounds.
async fn one_hour_of_three_sources() -> (Harness, String, jiff::Timestamp, jiff::Timestamp) {
    let h = Harness::new(CONFIG).await;
    let token = h
        .token(empreinte_collector::store::TokenKind::Agent, Some("srv-1"))
        .await;
    let s = hour_ago(3);
    let e = s + 3_600_000;
    let records = vec![
        record("web", Component::Cpu, SourceKind::Rapl, s, e, 3 * KWH),
        record("chat", Component::Gpu, SourceKind::Nvml, s, e, 8 * KWH),
        record(
            "web",
            Component::Dram,
            SourceKind::Estimate,
            s,
            e,
            KWH * 36 / 100,
        ),
    ];
    let (status, body) = h
        .push(&token, &push("srv-1", vec![batch(1, 1, s, e, records)]))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let read = h
        .token(empreinte_collector::store::TokenKind::Read, None)
        .await;
    (
        h,
        read,
        jiff::Timestamp::from_millisecond(s as i64).unwrap(),
        jiff::Timestamp::from_millisecond(e as i64).unwrap(),
    )
}

#[tokio::test]
async fn the_footprint_api_gives_the_totals_uncertainty() {
    let (h, read, from, to) = one_hour_of_three_sources().await;
    let (status, json) = h
        .get(&read, &format!("/api/v1/footprint?from={from}&to={to}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{json}");
    // The same month by hand, scaled to one hour: sqrt(0.15² + 0.4² + 0.126²) kWh.
    let abs = json["uncertainty"]["energy_kwh"]["absolute"]
        .as_f64()
        .unwrap();
    assert!((abs - 0.198_376f64.sqrt()).abs() < 1e-6, "{json}");
    let (_, web) = h
        .get(
            &read,
            &format!("/api/v1/footprint?from={from}&to={to}&project=web"),
        )
        .await;
    let abs = web["uncertainty"]["energy_kwh"]["absolute"]
        .as_f64()
        .unwrap();
    assert!(
        (abs - (0.15f64.powi(2) + 0.126f64.powi(2)).sqrt()).abs() < 1e-6,
        "{web}"
    );
}

#[tokio::test]
async fn each_footprint_row_carries_its_own_uncertainty() {
    let (h, read, from, to) = one_hour_of_three_sources().await;
    let row = |json: &serde_json::Value, key: &str| {
        json["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["key"] == key)
            .unwrap_or_else(|| panic!("{key} in {json}"))
            .clone()
    };
    let abs = |r: &serde_json::Value, figure: &str| {
        r["uncertainty"][figure]["absolute"].as_f64().unwrap()
    };
    // By project, by hand: web = RAPL 3 kWh (5 %) + estimate 0.36 kWh (35 %) on one host,
    // chat = NVML 8 kWh (5 %).
    let (status, json) = h
        .get(
            &read,
            &format!("/api/v1/footprint?from={from}&to={to}&group_by=project"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let web = row(&json, "web");
    let web_hand = (0.15f64.powi(2) + 0.126f64.powi(2)).sqrt();
    assert!((abs(&web, "energy_kwh") - web_hand).abs() < 1e-6, "{web}");
    let chat = row(&json, "chat");
    assert!((abs(&chat, "energy_kwh") - 0.4).abs() < 1e-6, "{chat}");
    // Emissions add the default PUE (20 %) and France's yearly factor (15 %).
    let loc = chat["uncertainty"]["co2e_kg_location"].clone();
    let rel = loc["absolute"].as_f64().unwrap() / loc["value"].as_f64().unwrap() * 100.0;
    assert!(
        (rel - (25.0f64 + 400.0 + 225.0).sqrt()).abs() < 1e-6,
        "{chat}"
    );
    // By source: the estimate's row is 35 %, the measured rows 5 %.
    let (_, json) = h
        .get(
            &read,
            &format!("/api/v1/footprint?from={from}&to={to}&group_by=source"),
        )
        .await;
    let est = row(&json, "estimate");
    assert!((abs(&est, "energy_kwh") - 0.126).abs() < 1e-6, "{est}");
    // By hour: the period's relative uncertainty, applied to the hour's figures.
    let (_, json) = h
        .get(
            &read,
            &format!("/api/v1/footprint?from={from}&to={to}&group_by=hour"),
        )
        .await;
    let total_rel = json["uncertainty"]["energy_kwh"]["absolute"]
        .as_f64()
        .unwrap()
        / json["uncertainty"]["energy_kwh"]["value"].as_f64().unwrap();
    for r in json["rows"].as_array().unwrap() {
        let u = &r["uncertainty"]["energy_kwh"];
        let (v, a) = (
            u["value"].as_f64().unwrap(),
            u["absolute"].as_f64().unwrap(),
        );
        assert!(v > 0.0 && (a / v - total_rel).abs() < 1e-9, "{r}");
    }
}

#[tokio::test]
async fn a_coefficients_own_uncertainty_is_propagated() {
    // With ADEME's French factor, whose table entry states 10 % (not the 15 % of a yearly
    // factor without its own figure).
    let config = CONFIG.replace(
        "language = \"fr\"",
        "language = \"fr\"\ngrid_factor = \"ademe\"",
    );
    let h = Harness::new(&config).await;
    let token = h
        .token(empreinte_collector::store::TokenKind::Agent, Some("srv-1"))
        .await;
    let s = hour_ago(3);
    let e = s + 3_600_000;
    let records = vec![record(
        "web",
        Component::Cpu,
        SourceKind::Rapl,
        s,
        e,
        10 * KWH,
    )];
    let (status, body) = h
        .push(&token, &push("srv-1", vec![batch(1, 1, s, e, records)]))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let read = h
        .token(empreinte_collector::store::TokenKind::Read, None)
        .await;
    let from = jiff::Timestamp::from_millisecond(s as i64).unwrap();
    let to = jiff::Timestamp::from_millisecond(e as i64).unwrap();
    let (status, json) = h
        .get(&read, &format!("/api/v1/footprint?from={from}&to={to}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let loc = &json["uncertainty"]["co2e_kg_location"];
    let rel = loc["absolute"].as_f64().unwrap() / loc["value"].as_f64().unwrap() * 100.0;
    // RAPL 5 %, default PUE 20 %, ADEME's 10 %.
    let by_hand = (25.0f64 + 400.0 + 100.0).sqrt();
    assert!((rel - by_hand).abs() < 1e-6, "{rel} vs {by_hand}: {json}");
}

/// The CSV's per-row figures come from each row's own coefficients (their table entries'
/// `uncertainty_pct`), not from the kinds' figures. By hand, for one RAPL hour (5 %):
///   srv-1, site "mairie" (FR, default PUE 20 %, ADEME's factor 10 %, no contract: AIB's
///     French residual mix, 10 %; no inventory): location sqrt(5² + 20² + 10²), market
///     sqrt(5² + 20² + 10²), embodied the kind's 50 %;
///   srv-2, site "roma" (IT, own PUE 5 %, Ember's yearly factor without its own figure:
///     15 %, no contract: AIB's Italian residual mix, 10 %; inventory
///     `server-2s-2u-boavizta`, 45 %): location sqrt(5² + 5² + 15²), market
///     sqrt(5² + 5² + 10²), embodied 45 %;
///   srv-3, site "contrat" (FR, default PUE, a contract 5 %): location sqrt(5² + 20² +
///     10²), market sqrt(5² + 20² + 5²).
#[tokio::test]
async fn each_csv_row_carries_the_uncertainty_of_its_own_coefficients() {
    let config = CONFIG.replace(
        "language = \"fr\"",
        "language = \"fr\"\ngrid_factor = \"ademe\"",
    ) + r#"
[[site]]
name = "roma"
zone = "IT"
pue = 1.3
pue_source = "measured"
hosts = ["srv-2"]

[[site]]
name = "contrat"
zone = "FR"
hosts = ["srv-3"]
market_g_per_kwh = 20.0
market_source = "supplier contract"

[[inventory]]
hosts = ["srv-2"]
server = "server-2s-2u-boavizta"
"#;
    let h = builtin_harness(&config).await;
    let tz = jiff::tz::TimeZone::get("Europe/Paris").unwrap();
    let m = report::parse_report_month(&tz, "2025-10", NOW_S).unwrap();
    let s = (m.from_s + 24 * 3600) as u64 * 1000;
    let e = s + 3_600_000;
    for host in ["srv-1", "srv-2", "srv-3"] {
        let token = h
            .token(empreinte_collector::store::TokenKind::Agent, Some(host))
            .await;
        let records = vec![record("web", Component::Cpu, SourceKind::Rapl, s, e, KWH)];
        let (status, body) = h
            .push(&token, &push(host, vec![batch(1, 1, s, e, records)]))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let data = report::build(h.store.as_ref(), h.state.planner.config(), &tz, &m, NOW_S)
        .await
        .unwrap();
    let csv = report::render_text(&data, Format::Csv, Lang::En).unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|c| *c == name).unwrap();
    let q = |a: f64, b: f64, c: f64| format!("{:.1}", (a * a + b * b + c * c).sqrt());
    let want = [
        ("srv-1", q(5.0, 20.0, 10.0), q(5.0, 20.0, 10.0), "50.0"),
        ("srv-2", q(5.0, 5.0, 15.0), q(5.0, 5.0, 10.0), "45.0"),
        ("srv-3", q(5.0, 20.0, 10.0), q(5.0, 20.0, 5.0), "50.0"),
    ];
    let mut seen = 0;
    for line in csv.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let (_, location, market, embodied) = want.iter().find(|w| w.0 == f[col("host")]).unwrap();
        assert_eq!(f[col("energy_uncertainty_pct")], "5.0", "{line}");
        assert_eq!(f[col("location_co2e_uncertainty_pct")], location, "{line}");
        assert_eq!(f[col("market_co2e_uncertainty_pct")], market, "{line}");
        assert_eq!(f[col("embodied_co2e_uncertainty_pct")], *embodied, "{line}");
        seen += 1;
    }
    assert_eq!(seen, 3, "{csv}");
}

/// A harness whose planner uses the built-in coefficients table (the one the CSV's
/// uncertainties are read from), not the tests' small table.
async fn builtin_harness(config_toml: &str) -> Harness {
    use empreinte_collector::config::CollectorConfig;
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let config = CollectorConfig::from_toml(config_toml).unwrap();
    let store = Arc::new(
        empreinte_collector::store::sqlite::SqliteStore::open_with(
            dir.path(),
            &config.store.options(
                &config.organisation.timezone,
                config.limits.max_host_power_watts,
            ),
        )
        .await
        .unwrap(),
    );
    let coefficients = Arc::new(empreinte_collector::carbon::Coefficients::built_in().unwrap());
    let planner = Arc::new(empreinte_collector::plan::Planner::new(
        Arc::new(config),
        coefficients,
    ));
    assert_eq!(planner.problems(), vec![]);
    let state = empreinte_collector::server::AppState::new(store.clone(), planner).unwrap();
    Harness { dir, store, state }
}
