#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! A whole month computed by hand: last month in Europe/Paris (October 2026 has the
//! DST change: 745 hours), two projects at a constant power, a grid intensity that
//! changes every hour (imported partly before and partly after the energy arrived), a
//! PUE, and the embodied emissions of a server and two GPUs shared by use.

mod common;

use axum::http::StatusCode;
use common::*;
use empreinte_collector::period::{month, month_of};
use empreinte_collector::store::{IntensityImport, Store, TokenKind};
use empreinte_shared::{Component, SourceKind};

const CONFIG: &str = r#"
[[site]]
name = "mairie"
zone = "FR"
pue = 1.8
pue_source = "facilities measurement"
hosts = ["srv-1"]

[[inventory]]
hosts = ["srv-1"]
# 43.8 kg over one year (8,760 h): 5 g per hour.
server_kgco2e = 43.8
server_lifetime_years = 1.0
server_source = "test figure"
# 87.6 kg per card over one year: 10 g per hour per card.
gpus = [{ model = "test-gpu", count = 2 }]

[[objective]]
project = "chat"
monthly_energy_kwh = 700.0

[[objective]]
project = "web"
monthly_energy_kwh = 800.0
"#;

/// The test's intensity for the hour starting at `hour_s`: 20 to 77.5 g/kWh through the day.
fn intensity(hour_s: i64) -> f64 {
    20.0 + 2.5 * ((hour_s / 3600) % 24) as f64
}

#[tokio::test]
async fn a_month_of_emissions_matches_the_hand_computation() {
    let h = Harness::new(CONFIG).await;
    let token = h.token(TokenKind::Agent, Some("srv-1")).await;
    let reader = h.token(TokenKind::Read, None).await;
    let tz = jiff::tz::TimeZone::get("Europe/Paris").unwrap();
    let now_s = (empreinte_collector::clock::now_unix_ms() / 1000) as i64;
    let this = month_of(&tz, now_s).unwrap();
    let m = this.previous(&tz).unwrap();
    assert_eq!(month(&tz, m.year, m.month).unwrap(), m);
    let hours: Vec<i64> = (m.from_s..m.to_s).step_by(3600).collect();
    let half = hours.len() / 2;

    // The first half of the month's intensity is known before the energy arrives.
    let series = |hs: &[i64]| IntensityImport {
        zone: "FR".into(),
        source: "test series".into(),
        kind: "direct".into(),
        file: "test".into(),
        now_ms: 1,
        hours: hs.iter().map(|&h| (h, intensity(h), 1.0)).collect(),
    };
    h.store
        .import_intensity(&series(&hours[..half]))
        .await
        .unwrap();

    // chat: 1 kWh per hour on the GPU; web: 0.5 kWh per hour on the CPU.
    let batches: Vec<_> = hours
        .iter()
        .enumerate()
        .map(|(i, &hs)| {
            let (s, e) = (hs as u64 * 1000, hs as u64 * 1000 + 3_600_000);
            batch(
                7,
                i as u64 + 1,
                s,
                e,
                vec![
                    record("chat", Component::Gpu, SourceKind::Nvml, s, e, KWH),
                    record("web", Component::Cpu, SourceKind::Rapl, s, e, KWH / 2),
                ],
            )
        })
        .collect();
    let (status, body) = h.push(&token, &push("srv-1", batches)).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // The second half arrives after: the stored emissions are recomputed.
    let outcome = h
        .store
        .import_intensity(&series(&hours[half..]))
        .await
        .unwrap();
    assert_eq!(outcome.rows_updated, 2 * (hours.len() - half) as u64);

    let (status, f) = h
        .get(
            &reader,
            &format!("/api/v1/footprint?month={}&group_by=project", m.label()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{f}");
    let row = |p: &str| {
        f["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["key"] == p)
            .unwrap()
            .clone()
    };
    let n = hours.len() as f64;
    assert_eq!(hours.len(), ((m.to_s - m.from_s) / 3600) as usize);

    // Energy: exact.
    assert_eq!(
        row("chat")["exact"]["energy_uj"].as_u64().unwrap(),
        KWH * hours.len() as u64
    );
    assert!((row("web")["energy_kwh"].as_f64().unwrap() - 0.5 * n).abs() < 1e-9);
    assert!((f["total"]["facility_energy_kwh"].as_f64().unwrap() - 1.5 * 1.8 * n).abs() < 1e-6);

    // Location-based: E × PUE × I(hour), summed by hand.
    let sum_i: f64 = hours.iter().map(|&h| intensity(h)).sum();
    let chat_g = 1.0 * 1.8 * sum_i;
    let web_g = 0.5 * 1.8 * sum_i;
    let kg = |r: &serde_json::Value, k: &str| r[k].as_f64().unwrap();
    assert!(
        (kg(&row("chat"), "co2e_kg_location") * 1e3 - chat_g).abs() < 1e-3,
        "{} vs {chat_g}",
        kg(&row("chat"), "co2e_kg_location")
    );
    assert!((kg(&row("web"), "co2e_kg_location") * 1e3 - web_g).abs() < 1e-3);
    // No contractual factor: market-based falls back to location-based.
    assert_eq!(
        row("chat")["exact"]["market_co2e_ug"],
        row("chat")["exact"]["location_co2e_ug"]
    );

    // Embodied: server 5 g/h shared 2:1 by energy, GPUs 20 g/h all to chat.
    assert!(
        (kg(&row("chat"), "co2e_kg_embodied") * 1e3 - (20.0 + 5.0 * 2.0 / 3.0) * n).abs() < 1e-3
    );
    assert!((kg(&row("web"), "co2e_kg_embodied") * 1e3 - (5.0 / 3.0) * n).abs() < 1e-3);

    // Days follow Paris time: the DST day has 25 hours.
    let (_, days) = h
        .get(
            &reader,
            &format!("/api/v1/footprint?month={}&group_by=day", m.label()),
        )
        .await;
    let day_rows = days["rows"].as_array().unwrap();
    let longest = day_rows
        .iter()
        .map(|r| r["energy_kwh"].as_f64().unwrap())
        .fold(0.0, f64::max);
    let shortest = day_rows
        .iter()
        .map(|r| r["energy_kwh"].as_f64().unwrap())
        .fold(f64::MAX, f64::min);
    if m.month == 10 || m.month == 3 {
        assert!(
            (longest - shortest - 1.5).abs() < 1e-9,
            "{longest} {shortest}"
        );
    }

    // Every coefficient used is there with its source, defaults flagged.
    let (_, c) = h
        .get(
            &reader,
            &format!("/api/v1/coefficients?month={}", m.label()),
        )
        .await;
    let coefs = c["coefficients"].as_array().unwrap();
    let pue = coefs.iter().find(|c| c["kind"] == "pue").unwrap();
    assert_eq!(
        (pue["value"].as_f64(), pue["is_default"].as_bool()),
        (Some(1.8), Some(false))
    );
    let emb = coefs.iter().find(|c| c["kind"] == "embodied").unwrap();
    assert!(
        (emb["value"].as_f64().unwrap() - 25.0).abs() < 1e-9,
        "{emb}"
    );
    assert_eq!(
        emb["is_default"], true,
        "the GPUs' figure is a built-in one"
    );

    // Objectives of a finished month: chat used 1 kWh × n > 700 (missed), web 0.5 × n < 800 (met).
    let (_, o) = h
        .get(&reader, &format!("/api/v1/objectives?month={}", m.label()))
        .await;
    let verdict = |p: &str| {
        o["objectives"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["project"] == p && x["kind"] == "energy")
            .unwrap()["verdict"]
            .clone()
    };
    assert_eq!(verdict("chat"), "exceeded", "{o}");
    assert_eq!(verdict("web"), "met", "{o}");
}
