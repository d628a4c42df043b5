#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The yearly statement over 2025 in Europe/Paris (two DST changes): hours straddling
//! every local month boundary, and the whole DST days (23 and 25 hours). The year's
//! totals, read over the whole year, equal the sum of the twelve monthly reports to the
//! microjoule and microgram; the BEGES categories equal the hand computation (PUE 1.2,
//! 50 g/kWh location-based, 10 g/kWh contract, 1 g/h of amortised server), and so do
//! the euros across a tariff change on 1 July (0.18 then 0.22 €/kWh). The CSV's months
//! add up to its year line; the grid factors are ADEME's Base Empreinte where the
//! organisation chose them.

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
tariff_eur_per_kwh = 0.18
tariff_source = "contract 2025"

[[site.tariff_change]]
from = "2025-07-01"
eur_per_kwh = 0.22
source = "contract 2025, amendment"

[[inventory]]
hosts = ["srv-1"]
# 8.76 kg over one year (8,760 h): 1 g per hour.
server_kgco2e = 8.76
server_lifetime_years = 1.0
server_source = "test figure"
"#;

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
        hours.extend((paris_at(from)..paris_at(to)).step_by(3600));
    }
    assert_eq!(
        (paris_at("2025-03-31T00:00:00") - paris_at("2025-03-30T00:00:00")) / 3600,
        23
    );
    assert_eq!(
        (paris_at("2025-10-27T00:00:00") - paris_at("2025-10-26T00:00:00")) / 3600,
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
    let now = paris_at("2026-02-01T12:00:00");
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
    let (from, to) = (
        paris_at("2025-01-01T00:00:00"),
        paris_at("2026-01-01T00:00:00"),
    );
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

    // Euros across the tariff change: each hour at the price of its local day.
    let july = paris_at("2025-07-01T00:00:00");
    let by_hand: u64 = hours
        .iter()
        .filter(|&&s| s >= from && s < to)
        .map(|&s| if s < july { 216_000 } else { 264_000 })
        .sum();
    assert_eq!(year.cost_ueur, by_hand, "the year's euros by hand");
    assert_eq!(
        year.month_costs_ueur.iter().sum::<u64>(),
        year.cost_ueur,
        "the year's euros are the sum of the twelve monthly reports' euros"
    );
    assert!(
        md.contains("| 2025 |"),
        "a year line in the REEN table: {md}"
    );

    // The CSV (French dialect): the months add up to the year line, column by column.
    let csv = report::year::render(&year, Format::Csv, Lang::Fr).unwrap();
    let mut rd = csv::ReaderBuilder::new()
        .delimiter(b';')
        .from_reader(csv.as_bytes());
    let head: Vec<String> = rd.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(head[0], "line");
    let rows: Vec<csv::StringRecord> = rd.records().map(|r| r.unwrap()).collect();
    let col = |r: &csv::StringRecord, i: usize| r[i].parse::<u64>().unwrap();
    let year_row = rows.iter().find(|r| &r[0] == "year").unwrap();
    for (i, name) in head.iter().enumerate().take(9).skip(3) {
        let months: u64 = rows
            .iter()
            .filter(|r| &r[0] == "month")
            .map(|r| col(r, i))
            .sum();
        assert_eq!(months, col(year_row, i), "column {name}");
    }
    assert_eq!(col(year_row, 8), by_hand);
    let beges: Vec<&csv::StringRecord> = rows.iter().filter(|r| &r[0] == "beges").collect();
    assert_eq!(beges.len(), 4);
    assert!(beges[0][10].contains(','), "decimal comma: {:?}", &beges[0]);
    assert_eq!(
        beges[0][9].parse::<u64>().unwrap(),
        year.beges[0].co2e_ug.unwrap()
    );
    // The grid factor used is named; the test table is not ADEME's, so the statement says
    // how to choose Base Empreinte.
    assert!(
        md.contains("FR (réseau) : 50,0") && md.contains("grid_factor = \"ademe\""),
        "{md}"
    );
}

/// With `grid_factor = "ademe"`, the statement's electricity is made with ADEME's Base
/// Empreinte factor for France and says so; without it, with another publisher's.
#[tokio::test]
async fn the_yearly_statement_uses_and_names_ademe_base_empreinte_where_the_organisation_chose_it()
{
    use std::sync::Arc;
    for (choice, factor) in [
        (
            "grid_factor = \"ademe\"\nupstream_g_per_kwh = 6.0\nupstream_source = \"test upstream factor\"\n",
            58.0,
        ),
        ("", 0.0),
    ] {
        let toml = format!(
            "[organisation]\nname = \"Ville\"\ntimezone = \"Europe/Paris\"\n{choice}[limits]\nmax_batch_age = \"36500days\"\n[default_site]\nname = \"mairie\"\nzone = \"FR\"\npue = 1.0\n"
        );
        let config = empreinte_collector::config::CollectorConfig::from_toml(&toml).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(
            empreinte_collector::store::sqlite::SqliteStore::open_with(
                dir.path(),
                &config.store.options("Europe/Paris", 10_000.0),
            )
            .await
            .unwrap(),
        );
        let defaults = Arc::new(empreinte_collector::plan::load_coefficients(&config).unwrap());
        let planner = empreinte_collector::plan::Planner::new(Arc::new(config.clone()), defaults);
        let state =
            empreinte_collector::server::AppState::new(store.clone(), Arc::new(planner)).unwrap();
        let token = empreinte_collector::auth::issue(
            store.as_ref(),
            TokenKind::Agent,
            Some("srv-1"),
            "t",
            1,
        )
        .await
        .unwrap()
        .token;
        let s = paris_at("2025-05-01T10:00:00") as u64 * 1000;
        let p = push(
            "srv-1",
            vec![batch(
                1,
                1,
                s,
                s + 3_600_000,
                vec![record(
                    "p",
                    Component::Cpu,
                    SourceKind::Rapl,
                    s,
                    s + 3_600_000,
                    KWH,
                )],
            )],
        );
        let resp = tower::ServiceExt::oneshot(
            empreinte_collector::server::router(state),
            axum::http::Request::post("/api/v1/ingest")
                .header("content-type", "application/json")
                .header("authorization", format!("Bearer {token}"))
                .body(axum::body::Body::from(serde_json::to_vec(&p).unwrap()))
                .unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let year = report::year::build_year(
            store.as_ref(),
            &config,
            &paris(),
            2025,
            paris_at("2026-01-02T00:00:00"),
        )
        .await
        .unwrap();
        let grid: Vec<_> = year
            .factors
            .iter()
            .filter(|f| f.kind == "grid_intensity")
            .collect();
        assert_eq!(grid.len(), 1, "{grid:?}");
        let md = report::year::render(&year, Format::Md, Lang::Fr).unwrap();
        if factor > 0.0 {
            assert!(
                grid[0].ademe_base_empreinte && (grid[0].g_per_kwh - factor).abs() < 1e-9,
                "{grid:?}"
            );
            assert_eq!(year.beges[0].co2e_ug, Some((factor * 1e6).round() as u64));
            assert!(
                md.contains("Base Empreinte de l'ADEME, choisie par l'organisation"),
                "{md}"
            );
            // The configured upstream factor: 1 kWh × 6 g.
            assert_eq!(year.beges[3].co2e_ug, Some(6_000_000));
            assert!(
                md.contains("Amont de l'électricité (extraction, transport, pertes)")
                    && md.contains("test upstream factor"),
                "{md}"
            );
        } else {
            assert!(!grid[0].ademe_base_empreinte, "{grid:?}");
            assert!(
                md.contains("la méthode de l'ADEME demande les facteurs de la Base Empreinte"),
                "{md}"
            );
        }
    }
}

#[test]
fn an_upstream_factor_needs_a_plausible_value_and_a_source() {
    let c = empreinte_collector::config::CollectorConfig::from_toml(
        "[organisation]\nupstream_g_per_kwh = -3.0\n",
    )
    .unwrap();
    let keys: Vec<String> = c.problems().into_iter().map(|p| p.key).collect();
    assert!(
        keys.contains(&"organisation.upstream_g_per_kwh".to_string())
            && keys.contains(&"organisation.upstream_source".to_string()),
        "{keys:?}"
    );
}
