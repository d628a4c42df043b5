#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The yearly statement over 2025 in Europe/Paris (two DST changes): hours straddling
//! every local month boundary, and the whole DST days (23 and 25 hours). The year's
//! totals, read over the whole year, equal the sum of the twelve monthly reports to the
//! microjoule and microgram; the BEGES categories equal the hand computation (PUE 1.2,
//! 50 g/kWh location-based, 10 g/kWh contract, 1 g/h of amortised server).

mod common;

use std::collections::BTreeSet;

use axum::http::StatusCode;
use common::*;
use empreinte_collector::period::month;
use empreinte_collector::report::{self, Format, Lang};
use empreinte_collector::store::{Sums, TokenKind};
use empreinte_shared::{Component, SourceKind};

const CONFIG: &str = r#"
[organisation]
name = "Ville de Test"
timezone = "Europe/Paris"

[limits]
max_batch_age = "36500days"

[[site]]
name = "mairie"
zone = "FR"
pue = 1.2
pue_source = "measured 2025"
hosts = ["srv-1"]
market_g_per_kwh = 10.0
market_source = "contract 2025"

[[inventory]]
hosts = ["srv-1"]
# 8.76 kg over one year (8,760 h): 1 g per hour.
server_kgco2e = 8.76
server_lifetime_years = 1.0
server_source = "test figure"
"#;

const KWH: u64 = 3_600_000_000_000;

fn paris() -> jiff::tz::TimeZone {
    jiff::tz::TimeZone::get("Europe/Paris").unwrap()
}

fn at(text: &str) -> i64 {
    text.parse::<jiff::civil::DateTime>()
        .unwrap()
        .to_zoned(paris())
        .unwrap()
        .timestamp()
        .as_second()
}

#[tokio::test]
async fn the_year_equals_its_twelve_months_exactly_and_its_beges_categories_the_hand_computation() {
    let h = Harness::new(CONFIG).await;
    let tz = paris();
    // Hours straddling every local month boundary (2025-01-01 to 2026-01-01), and the two
    // DST days whole.
    let mut hours: BTreeSet<i64> = BTreeSet::new();
    for mo in 1..=13 {
        let (y, m) = if mo == 13 { (2026, 1) } else { (2025, mo) };
        let b = month(&tz, y, m).unwrap().from_s;
        hours.extend((b - 12 * 3600..b + 12 * 3600).step_by(3600));
    }
    for (from, to) in [
        ("2025-03-30T00:00:00", "2025-03-31T00:00:00"),
        ("2025-10-26T00:00:00", "2025-10-27T00:00:00"),
    ] {
        hours.extend((at(from)..at(to)).step_by(3600));
    }
    assert_eq!(
        (at("2025-03-31T00:00:00") - at("2025-03-30T00:00:00")) / 3600,
        23
    );
    assert_eq!(
        (at("2025-10-27T00:00:00") - at("2025-10-26T00:00:00")) / 3600,
        25
    );
    let token = h.token(TokenKind::Agent, Some("srv-1")).await;
    let batches: Vec<_> = hours
        .iter()
        .enumerate()
        .map(|(i, &s)| {
            let (s, e) = (s as u64 * 1000, s as u64 * 1000 + 3_600_000);
            batch(
                1,
                i as u64 + 1,
                s,
                e,
                vec![record("p", Component::Cpu, SourceKind::Rapl, s, e, KWH)],
            )
        })
        .collect();
    for chunk in batches.chunks(500) {
        let (status, body) = h.push(&token, &push("srv-1", chunk.to_vec())).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let config = h.state.planner.config();
    let now = at("2026-02-01T12:00:00");
    let year = report::year::build_year(h.store.as_ref(), config, &tz, 2025, now)
        .await
        .unwrap();
    assert!(year.complete);

    // The sum of the twelve monthly reports, built one by one.
    let mut months = Sums::default();
    for mo in 1..=12 {
        let m = month(&tz, 2025, mo).unwrap();
        let data = report::build_summary(h.store.as_ref(), config, &tz, &m, now)
            .await
            .unwrap();
        months.add(&data.totals.exact);
    }
    assert_eq!(
        year.totals.exact, months,
        "the year is the sum of its months, exactly"
    );
    assert_eq!(year.months.len(), 12);

    // By hand: the hours of 2025 only (the ends of 2024 and 2026 are outside).
    let (from, to) = (at("2025-01-01T00:00:00"), at("2026-01-01T00:00:00"));
    let n = hours.iter().filter(|&&s| s >= from && s < to).count() as u64;
    assert_eq!(year.totals.exact.energy_uj, n * KWH);
    let ug = |g: f64| (g * 1e6) as i64;
    let close = |got: Option<u64>, want_g: f64, what: &str| {
        let got = got.unwrap() as i64;
        assert!(
            (got - ug(want_g)).abs() <= n as i64,
            "{what}: {got} µg vs {want_g} g"
        );
    };
    let beges = &year.beges;
    close(
        beges[0].co2e_ug,
        n as f64 * 1.2 * 50.0,
        "2.1 location-based",
    );
    close(beges[1].co2e_ug, n as f64 * 1.2 * 10.0, "2.1 market-based");
    close(beges[2].co2e_ug, n as f64 * 1.0, "4.2 amortised equipment");
    assert_eq!((beges[0].category, beges[2].category), ("2.1", "4.2"));
    assert_eq!(beges[3].co2e_ug, None, "no upstream factor configured");

    // Every format but CSV; the French text to paste names the categories.
    let md = report::year::render(&year, Format::Md, Lang::Fr).unwrap();
    assert!(md.starts_with("# Bilan annuel de l'IA — 2025"), "{md}");
    assert!(
        md.contains("catégorie 2.1 du Bilan GES") && md.contains("(catégorie 4.2)"),
        "{md}"
    );
    let html = report::year::render(&year, Format::Html, Lang::En).unwrap();
    assert!(html.contains("GHG inventory (ADEME method)"), "{html:.300}");
    let json: serde_json::Value =
        serde_json::from_str(&report::year::render(&year, Format::Json, Lang::En).unwrap())
            .unwrap();
    assert_eq!(json["totals"]["exact"]["energy_uj"], n * KWH);
    assert!(report::year::render(&year, Format::Csv, Lang::Fr).is_err());
}
