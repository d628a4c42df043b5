#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Euros over a whole month computed by hand: two sites, one with a peak/off-peak
//! tariff (off-peak 22:00–06:00 local time), the other flat, and both tariffs changing
//! on the 16th. The API's costs match the hand computation to the cent, per project,
//! site, use and tariff rate, and every cost names the rate that produced it. The hosts'
//! amortised purchase prices are shown apart, exact to the micro-euro. Both store
//! engines are held to the same figures.

mod common;

use std::collections::BTreeMap;

use axum::http::StatusCode;
use common::*;
use empreinte_collector::period::month_of;
use empreinte_collector::store::TokenKind;
use empreinte_shared::{Component, SourceKind};
use empreinte_testkit::register::production_use;

fn config(register: &str, change: &str) -> String {
    format!(
        r#"
register_file = "{register}"
[[site]]
name = "mairie"
zone = "FR"
pue = 1.5
pue_source = "test"
hosts = ["srv-1"]
tariff_eur_per_kwh = 0.2516
tariff_off_peak_eur_per_kwh = 0.1996
tariff_off_peak_hours = ["22-06"]
tariff_source = "Tarif bleu HP/HC, test"
[[site.tariff_change]]
from = "{change}"
eur_per_kwh = 0.2700
off_peak_eur_per_kwh = 0.2100
off_peak_hours = ["22:00-06:00"]
source = "Avenant au contrat, test"

[[site]]
name = "datacentre"
zone = "FR"
pue = 1.2
pue_source = "test"
hosts = ["srv-2"]
tariff_eur_per_kwh = 0.18
tariff_source = "Marché public, lot 1, test"
[[site.tariff_change]]
from = "{change}"
eur_per_kwh = 0.15
source = "Marché public, lot 1, révision, test"

# Amortised purchase prices: srv-1 8,760 € over one year (1 €/h, every hour);
# srv-2 43,800 € over five years (1 €/h) from the 16th on.
[[inventory]]
hosts = ["srv-1"]
purchase_price_eur = 8760.0
amortisation_years = 1.0
purchase_source = "Facture F-2025-001, test"
[[inventory]]
hosts = ["srv-2"]
purchase_price_eur = 43800.0
amortisation_years = 5.0
purchased_on = "{change}"
purchase_source = "Marché 2025-17, test"
"#
    )
}

#[tokio::test]
async fn a_month_of_costs_matches_the_hand_computation_to_the_cent() {
    let tz = jiff::tz::TimeZone::get("Europe/Paris").unwrap();
    let now_s = (empreinte_collector::clock::now_unix_ms() / 1000) as i64;
    let m = month_of(&tz, now_s).unwrap().previous(&tz).unwrap();
    let change = format!("{}-{:02}-16", m.year, m.month);
    let dir = tempfile::tempdir().unwrap();
    let register = dir.path().join("register.toml");
    std::fs::write(&register, production_use("chatbot", &["chat", "web"])).unwrap();
    for h in engines(&config(register.to_str().unwrap(), &change)).await {
        eprintln!("engine: {}", h.name);
        month_matches_by_hand(&h, &tz, &m, &change).await;
    }
}

async fn month_matches_by_hand(
    h: &Engine,
    tz: &jiff::tz::TimeZone,
    m: &empreinte_collector::period::Month,
    change: &str,
) {
    let reader = h.token(TokenKind::Read, None).await;
    let hours: Vec<i64> = (m.from_s..m.to_s).step_by(3600).collect();

    push_month(h, &hours).await;
    let (by_project, by_rate) = by_hand(tz, &hours, change);

    let (status, v) = h
        .get(&reader, &format!("/api/v1/costs?month={}", m.label()))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["currency"], "EUR");
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "{v}");
    let cents = |eur: f64| (eur * 100.0).round() as i64;
    for r in rows {
        let p = r["key"].as_str().unwrap();
        let api = r["cost_ueur"].as_u64().unwrap() as f64 / 1e6;
        assert_eq!(
            cents(api),
            cents(by_project[p]),
            "{p}: {api} vs {}",
            by_project[p]
        );
    }
    let total: f64 = by_project.values().sum();
    assert_eq!(
        cents(v["total"]["cost_eur"].as_f64().unwrap()),
        cents(total)
    );
    // The all-time counters (what /metrics serves) hold the same money.
    let totals = h.store.cost_totals().await.unwrap();
    assert_eq!(totals.len(), 3, "{totals:?}");
    assert_eq!(
        totals.iter().map(|t| t.cost_ueur).sum::<u64>(),
        v["total"]["cost_ueur"].as_u64().unwrap()
    );
    assert_eq!(
        v["uncosted_facility_energy_uj"], 0,
        "every site has a tariff"
    );

    // Six rates (mairie: peak and off-peak before and after the change; datacentre:
    // flat before and after), each with its price, source and what it priced.
    let tariffs = v["tariffs"].as_array().unwrap();
    assert_eq!(tariffs.len(), 6, "{v}");
    for t in tariffs {
        let key = (
            t["site"].as_str().unwrap().to_string(),
            t["band"].as_str().unwrap().to_string(),
            t["valid_from"].as_str().unwrap().to_string(),
        );
        let (eur, kwh) = by_rate[&key];
        assert_eq!(
            cents(t["cost_ueur"].as_u64().unwrap() as f64 / 1e6),
            cents(eur),
            "{t}"
        );
        assert!(
            (t["facility_energy_kwh"].as_f64().unwrap() - kwh).abs() < 1e-9,
            "{t}"
        );
        assert!(!t["source"].as_str().unwrap().is_empty());
        let (price, _) = match key.0.as_str() {
            "mairie" if key.1 == "off_peak" => (if key.2.is_empty() { 0.1996 } else { 0.21 }, ()),
            "mairie" => (if key.2.is_empty() { 0.2516 } else { 0.27 }, ()),
            _ => (if key.2.is_empty() { 0.18 } else { 0.15 }, ()),
        };
        assert_eq!(
            t["price_ueur_per_kwh"].as_u64().unwrap(),
            (price * 1e6_f64).round() as u64
        );
    }

    // By site, use and month: the same money, grouped; the undeclared project apart.
    let (_, s) = h
        .get(
            &reader,
            &format!("/api/v1/costs?month={}&group_by=site", m.label()),
        )
        .await;
    let site = |k: &str| {
        s["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["key"] == k)
            .unwrap()["cost_ueur"]
            .as_u64()
            .unwrap() as f64
            / 1e6
    };
    assert_eq!(
        cents(site("mairie")),
        cents(by_project["chat"] + by_project["web"])
    );
    assert_eq!(cents(site("datacentre")), cents(by_project["ocr"]));
    let (_, u) = h
        .get(
            &reader,
            &format!("/api/v1/costs?month={}&group_by=use", m.label()),
        )
        .await;
    assert_eq!(u["rows"][0]["key"], "chatbot");
    assert_eq!(
        cents(u["rows"][0]["cost_ueur"].as_u64().unwrap() as f64 / 1e6),
        cents(by_project["chat"] + by_project["web"])
    );
    assert_eq!(u["undeclared"][0]["key"], "ocr");
    assert_eq!(u["undeclared"][0]["undeclared_use"], true);
    let (_, mo) = h
        .get(
            &reader,
            &format!("/api/v1/costs?month={}&group_by=month", m.label()),
        )
        .await;
    assert_eq!(mo["rows"].as_array().unwrap().len(), 1);
    assert_eq!(mo["rows"][0]["key"], m.label());
    assert_eq!(mo["rows"][0]["cost_ueur"], v["total"]["cost_ueur"]);

    hardware_apart_by_hand(h, tz, m, &hours, &v, &u).await;
}

/// Pushes the month: each hour of both hosts, in half-hour batches.
async fn push_month(h: &Engine, hours: &[i64]) {
    // srv-1 (mairie): chat 1 kWh and web 0.25 kWh each hour; srv-2 (datacentre): ocr
    // 0.5 kWh each hour. Each hour comes in two half-hour batches, the first halves in
    // one push and the second halves in another (so every cost row is added to once
    // after it was made), and the first push is sent twice (a replay costs nothing).
    let hosts: [(&str, &[(&str, u64)]); 2] = [
        ("srv-1", &[("chat", KWH), ("web", KWH / 4)]),
        ("srv-2", &[("ocr", KWH / 2)]),
    ];
    for (host, projects) in hosts {
        let token = h.token(TokenKind::Agent, Some(host)).await;
        let half = |second: u64| -> Vec<_> {
            hours
                .iter()
                .enumerate()
                .map(|(i, &hs)| {
                    let s = hs as u64 * 1000 + second * 1_800_000;
                    let e = s + 1_800_000;
                    let records = projects
                        .iter()
                        .map(|(p, uj)| {
                            let uj = if second == 0 { uj / 2 } else { uj - uj / 2 };
                            record(p, Component::Cpu, SourceKind::Rapl, s, e, uj)
                        })
                        .collect();
                    batch(3, 2 * i as u64 + 1 + second, s, e, records)
                })
                .collect()
        };
        for p in [half(0), half(1), half(0)] {
            let (status, body) = h.push(&token, &push(host, p)).await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
    }
}

/// The month's euros computed by hand: per project, and per `(site, band, valid_from)`
/// rate (euros, facility kWh).
#[allow(clippy::type_complexity)]
fn by_hand(
    tz: &jiff::tz::TimeZone,
    hours: &[i64],
    change: &str,
) -> (
    BTreeMap<&'static str, f64>,
    BTreeMap<(String, String, String), (f64, f64)>,
) {
    // By hand: for each hour, its local date and hour give the price.
    let change_day: jiff::civil::Date = change.parse().unwrap();
    let price = |site: &str, hour_s: i64| -> (f64, &'static str) {
        let local = jiff::Timestamp::from_second(hour_s)
            .unwrap()
            .to_zoned(tz.clone());
        let after = local.date() >= change_day;
        let off = local.hour() >= 22 || local.hour() < 6;
        match (site, after, off) {
            ("mairie", false, false) => (0.2516, "peak"),
            ("mairie", false, true) => (0.1996, "off_peak"),
            ("mairie", true, false) => (0.2700, "peak"),
            ("mairie", true, true) => (0.2100, "off_peak"),
            (_, false, _) => (0.18, "flat"),
            (_, true, _) => (0.15, "flat"),
        }
    };
    let mut by_project: BTreeMap<&str, f64> = BTreeMap::new();
    let mut by_rate: BTreeMap<(String, String, String), (f64, f64)> = BTreeMap::new();
    for &hs in hours {
        for (site, pue, projects) in [
            ("mairie", 1.5, &[("chat", 1.0), ("web", 0.25)][..]),
            ("datacentre", 1.2, &[("ocr", 0.5)][..]),
        ] {
            let (eur_per_kwh, band) = price(site, hs);
            let from = if jiff::Timestamp::from_second(hs)
                .unwrap()
                .to_zoned(tz.clone())
                .date()
                >= change_day
            {
                change.to_string()
            } else {
                String::new()
            };
            for (project, kwh) in projects {
                let eur = kwh * pue * eur_per_kwh;
                *by_project.entry(project).or_default() += eur;
                let r = by_rate
                    .entry((site.to_string(), band.to_string(), from.clone()))
                    .or_default();
                r.0 += eur;
                r.1 += kwh * pue;
            }
        }
    }

    (by_project, by_rate)
}

/// The amortised hardware cost: 1 €/h for srv-1 every hour, shared 4:1 between chat
/// and web by energy; 1 €/h for srv-2 (ocr) from the 16th, local midnight. Exact to the
/// micro-euro, apart from the energy costs, in the API and in /metrics.
async fn hardware_apart_by_hand(
    h: &Engine,
    tz: &jiff::tz::TimeZone,
    m: &empreinte_collector::period::Month,
    hours: &[i64],
    v: &serde_json::Value,
    u: &serde_json::Value,
) {
    let change: jiff::civil::Date = jiff::civil::date(m.year, m.month, 16);
    let from_16th = change.to_zoned(tz.clone()).unwrap().timestamp().as_second();
    let n = hours.len() as u64;
    let n_after = hours.iter().filter(|&&hs| hs >= from_16th).count() as u64;
    let expected = [
        ("chat", 800_000 * n),
        ("ocr", 1_000_000 * n_after),
        ("web", 200_000 * n),
    ];
    let hw = &v["hardware"];
    let rows = hw["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "{hw}");
    for (r, (p, ueur)) in rows.iter().zip(expected) {
        assert_eq!(r["key"], p, "{hw}");
        assert_eq!(r["cost_ueur"].as_u64().unwrap(), ueur, "{p}: {hw}");
    }
    let hw_total: u64 = expected.iter().map(|e| e.1).sum();
    assert_eq!(hw["total"]["cost_ueur"].as_u64().unwrap(), hw_total);
    // Every cost names its rate: host, price, period, purchase date and source.
    let rates = hw["rates"].as_array().unwrap();
    assert_eq!(rates.len(), 2, "{hw}");
    assert_eq!(rates[0]["host"], "srv-1");
    assert_eq!(rates[0]["price_eur"], 8760.0);
    assert_eq!(rates[0]["amortisation_years"], 1.0);
    assert_eq!(rates[0]["eur_per_hour"], 1.0);
    assert_eq!(rates[0]["source"], "Facture F-2025-001, test");
    assert_eq!(rates[1]["host"], "srv-2");
    assert_eq!(rates[1]["purchased_on"], change.to_string());
    assert_eq!(rates[1]["cost_ueur"].as_u64().unwrap(), 1_000_000 * n_after);
    // Apart: the energy total is the energy rows' sum alone.
    let energy: u64 = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["cost_ueur"].as_u64().unwrap())
        .sum();
    assert_eq!(v["total"]["cost_ueur"].as_u64().unwrap(), energy);
    // Grouped by use, the undeclared project apart, as the energy costs.
    assert_eq!(u["hardware"]["rows"][0]["key"], "chatbot");
    assert_eq!(
        u["hardware"]["rows"][0]["cost_ueur"].as_u64().unwrap(),
        1_000_000 * n
    );
    assert_eq!(u["hardware"]["undeclared"][0]["key"], "ocr");
    // /metrics: both series, the hardware one with the same money.
    let reader = h.token(TokenKind::Read, None).await;
    let (status, text) = h
        .call(
            axum::http::Request::get("/metrics")
                .header("authorization", format!("Bearer {reader}"))
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    for (p, site, ueur) in [
        ("chat", "mairie", expected[0].1),
        ("ocr", "datacentre", expected[1].1),
        ("web", "mairie", expected[2].1),
    ] {
        let line = format!(
            "empreinte_footprint_hardware_cost_euros_total{{project=\"{p}\",site=\"{site}\"}} {}",
            ueur as f64 / 1e6
        );
        assert!(text.contains(&line), "{line} not in:\n{text}");
    }
    assert!(text.contains("empreinte_footprint_cost_euros_total{project=\"chat\""));

    // The report: the hardware table apart from the tariffs, each host with its price,
    // period, date, source and the month's cost; per use and department, its own column.
    for (lang, title, col) in [
        ("fr", "Coût matériel amorti", "Matériel amorti"),
        ("en", "Amortised hardware cost", "Amortised hardware"),
    ] {
        let (status, md) = h
            .get(&reader, &format!("/reports/{}.md?lang={lang}", m.label()))
            .await;
        assert_eq!(status, StatusCode::OK);
        let md = md.as_str().unwrap();
        assert!(md.contains(title) && md.contains(col), "{lang}: {md}");
        let row = |host: &str| {
            md.lines()
                .find(|l| l.starts_with(&format!("| {host} |")) && l.contains('€'))
                .unwrap_or_else(|| panic!("{host} in {md}"))
                .to_string()
        };
        let (a, b) = (row("srv-1"), row("srv-2"));
        assert!(a.contains("Facture F-2025-001, test"), "{a}");
        assert!(
            b.contains(&change.to_string()) && b.contains("Marché 2025-17"),
            "{b}"
        );
        if lang == "en" {
            assert!(a.contains(&format!("| {n}.00 €")), "{a}");
            assert!(b.contains(&format!("| {n_after}.00 €")), "{b}");
        }
    }
}

#[tokio::test]
async fn a_tariff_with_problems_is_refused_with_every_key() {
    let text = r#"
[[site]]
name = "a"
zone = "FR"
hosts = ["x"]
tariff_eur_per_kwh = -1.0
tariff_off_peak_hours = ["22:30-06"]
[[site.tariff_change]]
from = "2026-13-01"
eur_per_kwh = 0.2
source = ""
"#;
    let c = empreinte_collector::config::CollectorConfig::from_toml(text).unwrap();
    let keys: Vec<String> = c.problems().into_iter().map(|p| p.key).collect();
    assert_eq!(
        keys,
        [
            "site[0].tariff_eur_per_kwh",
            "site[0].tariff_source",
            "site[0].tariff_off_peak_eur_per_kwh",
            "site[0].tariff_change[0].from",
            "site[0].tariff_change[0].source",
        ]
    );
}

#[tokio::test]
async fn a_purchase_price_with_problems_is_refused_with_every_key() {
    let text = r#"
[[inventory]]
hosts = ["a"]
purchase_price_eur = -1.0
[[inventory]]
hosts = ["b"]
amortisation_years = 40.0
purchased_on = "2025-02-30"
"#;
    let c = empreinte_collector::config::CollectorConfig::from_toml(text).unwrap();
    let problems: Vec<(String, String)> = c
        .problems()
        .into_iter()
        .map(|p| (p.key, p.message))
        .collect();
    let keys: Vec<&str> = problems.iter().map(|p| p.0.as_str()).collect();
    assert_eq!(
        keys,
        [
            "inventory[0].purchase_price_eur",
            "inventory[0].amortisation_years",
            "inventory[0].purchase_source",
            "inventory[1].amortisation_years",
            "inventory[1].purchased_on",
            "inventory[1].amortisation_years",
            "inventory[1].purchased_on",
        ],
        "{problems:?}"
    );
    assert!(problems[3].1.contains("without purchase_price_eur"));
    assert!(problems[5].1.contains("outside 0.5..=30 years"));
    assert!(problems[6].1.contains("YYYY-MM-DD"));
}
