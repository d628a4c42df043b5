#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The report's first page for the hand-built October (see `report_fixture`): the
//! headline sentence states the month's energy (with the site's PUE) and emissions
//! (location-based + embodied) in units that fit, as the hand computation gives them, with
//! the car equivalence of ADEME's factor; the banner names the estimated share and the
//! host; the comparisons and the objectives read in words; nothing on the first page is
//! left in English in the French report.

mod common;
mod report_fixture;

use empreinte_collector::report::document::{Block, blocks};
use empreinte_collector::report::{Lang, readable};
use report_fixture::*;

/// The blocks before the first page break.
fn first_page(data: &empreinte_collector::report::ReportData, lang: Lang) -> Vec<Block> {
    blocks(data, lang, false)
        .into_iter()
        .take_while(|b| *b != Block::PageBreak)
        .collect()
}

/// Every word of `blocks`, one piece a line.
fn text(blocks: &[Block]) -> String {
    let mut out = Vec::new();
    for b in blocks {
        match b {
            Block::Title(s)
            | Block::Heading(s)
            | Block::Subheading(s)
            | Block::Para(s)
            | Block::Notice(s)
            | Block::Lead(s)
            | Block::Small(s) => out.push(s.clone()),
            Block::List(v) => out.extend(v.iter().cloned()),
            Block::Facts(v) => out.extend(v.iter().map(|(k, v)| format!("{k}: {v}"))),
            Block::Table(h, rows) => {
                out.push(h.join(" | "));
                out.extend(rows.iter().map(|r| r.join(" | ")));
            }
            Block::Chart(c, _) => out.push(c.clone()),
            Block::PageBreak => {}
        }
    }
    out.join("\n")
}

#[tokio::test]
async fn the_first_page_says_the_month_in_one_sentence_with_the_hand_computed_figures() {
    let (h, hours) = october().await;
    let data = build(&h, "2025-10").await.unwrap();
    let n = hours.len() as f64;
    // Hand computation (see report.rs): srv-1 at PUE 1.2, gpu-1 at the default 1.5.
    let srv_kwh = 0.5 * n + 0.2 * 372.0;
    let gpu_kwh = 1.25 * n;
    let facility_kwh = srv_kwh * 1.2 + gpu_kwh * 1.5;
    let fr_g: f64 = hours
        .iter()
        .enumerate()
        .map(|(i, &hs)| (0.5 + if i < 372 { 0.2 } else { 0.0 }) * 1.2 * intensity(hs))
        .sum();
    let emissions_kg = (fr_g + gpu_kwh * 1.5 * 400.0 + 25.0 * n) / 1000.0;
    // 1,933.15 kWh and 603.5 kg: "1,93 MWh", "604 kgCO2e".
    assert!((facility_kwh - 1933.15).abs() < 0.01, "{facility_kwh}");
    let car_km = emissions_kg / 0.2176;

    let lead = |lang| {
        first_page(&data, lang)
            .into_iter()
            .find_map(|b| match b {
                Block::Lead(s) => Some(s),
                _ => None,
            })
            .expect("a headline")
    };
    let fr = lead(Lang::Fr);
    assert_eq!(
        fr,
        format!(
            "En octobre 2025, les usages d'IA de Ville de Bourg-Test ont consommé {} et émis {}, soit autant que {} km en voiture thermique.",
            readable::energy(Lang::Fr, (facility_kwh * 3.6e12) as u64),
            readable::mass(Lang::Fr, (emissions_kg * 1e9) as u64),
            readable::significant(Lang::Fr, car_km, 2),
        )
    );
    assert!(fr.contains("1,93\u{202F}MWh"), "{fr}");
    assert!(fr.contains("604\u{202F}kgCO2e"), "{fr}");
    assert!(fr.contains("2\u{202F}800 km"), "{fr}");
    let en = lead(Lang::En);
    assert!(
        en.starts_with("In October 2025, the AI uses of Ville de Bourg-Test consumed 1.93 MWh and emitted 604 kgCO2e, as much as 2,800 km"),
        "{en}"
    );

    // The banner: batch's 74.4 kWh of 1,378.15 are estimated, on srv-1.
    let banner = first_page(&data, Lang::Fr)
        .into_iter()
        .find_map(|b| match b {
            Block::Notice(s) if s.contains("estimés") => Some(s),
            _ => None,
        })
        .expect("a banner");
    let share = 74.4 / (srv_kwh + gpu_kwh) * 100.0;
    assert!((share - 5.4).abs() < 0.05, "{share}");
    assert!(
        banner.starts_with(
            "5,4\u{202F}% de ces chiffres sont estimés, voici pourquoi\u{202F}: sur srv-1"
        ),
        "{banner}"
    );

    // Comparisons, objectives and top uses, in words.
    let page = text(&first_page(&data, Lang::Fr));
    assert!(page.contains("Par rapport à septembre 2025"), "{page}");
    assert!(page.contains("Par rapport à octobre 2024"), "{page}");
    assert!(page.contains("pas de données pour ce mois"), "{page}");
    assert!(page.contains("chat — énergie\u{202F}: dépassé"), "{page}");
    // The equivalence's source and year are given.
    assert!(
        page.contains("ADEME, Impact CO2") && page.contains("(2025)"),
        "{page}"
    );
    for english in [
        "unassigned",
        "idle",
        "estimate",
        "exceeded",
        "not in the inventory",
    ] {
        assert!(
            !page.contains(english),
            "{english:?} left in English: {page}"
        );
    }
}

#[tokio::test]
async fn a_month_without_estimates_has_no_banner_and_a_month_without_data_no_headline() {
    let (h, _) = october().await;
    let mut data = build(&h, "2025-10").await.unwrap();
    data.totals.exact.measured_energy_uj += data.totals.exact.estimated_energy_uj;
    data.totals.exact.estimated_energy_uj = 0;
    let page = first_page(&data, Lang::En);
    assert!(
        !page
            .iter()
            .any(|b| matches!(b, Block::Notice(s) if s.contains("estimated"))),
        "{page:?}"
    );
    let empty = build(&h, "2025-08").await.unwrap();
    assert!(
        !first_page(&empty, Lang::Fr)
            .iter()
            .any(|b| matches!(b, Block::Lead(_))),
        "no headline without data"
    );
}
