#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Market-based figures where no contract is configured: the zone's residual mix (AIB)
//! from the coefficients table, else the location-based figure; and its uncertainty.

use std::sync::Arc;

use empreinte_collector::carbon::Coefficients;
use empreinte_collector::config::CollectorConfig;
use empreinte_collector::footprint::CoefficientKind;
use empreinte_collector::plan::Planner;
use empreinte_collector::store::{AggregateLine, Sums};
use empreinte_collector::uncertainty::{CoefficientPcts, of_lines_with};

const SITES: &str = r#"
[[site]]
name = "milano"
zone = "IT"
hosts = ["it-*"]

[[site]]
name = "roma"
zone = "IT"
hosts = ["contract-*"]
market_g_per_kwh = 20.0
market_source = "supplier's certificates 2024"

[[site]]
name = "paris"
zone = "FR"
hosts = ["fr-*"]

[[site]]
name = "london"
zone = "GB"
hosts = ["gb-*"]
"#;

fn planner(coefficients_toml: Option<&str>) -> Planner {
    let config = CollectorConfig::from_toml(SITES).unwrap();
    let c = match coefficients_toml {
        Some(t) => Coefficients::from_toml_str(t).unwrap(),
        None => Coefficients::built_in().unwrap(),
    };
    Planner::new(Arc::new(config), Arc::new(c))
}

#[test]
fn a_site_without_a_contract_gets_its_zones_residual_mix() {
    let p = planner(None);
    let it = p.host("it-01");
    let m = it.market.clone().expect("Italy has a residual mix");
    assert_eq!(m.kind, CoefficientKind::MarketFactor);
    // The most recent year of the table: AIB's 2025 Table 2 (2024's 441.2 is history).
    assert!((m.value - 420.2).abs() < 1e-9, "{m:?}");
    assert!(m.source.starts_with("AIB") && m.is_default, "{m:?}");
    assert_eq!(m.year, Some(2025));
    assert!(m.detail.contains("residual mix"), "{m:?}");
    assert_eq!(m.subject, "milano");
    // A contract wins over the residual mix.
    let c = p.host("contract-01").market.clone().unwrap();
    assert!((c.value - 20.0).abs() < 1e-9 && !c.is_default, "{c:?}");
    // France first: AIB 2025's French residual mix, 17.11 g CO2/kWh.
    let fr = p
        .host("fr-01")
        .market
        .clone()
        .expect("France has a residual mix");
    assert!((fr.value - 17.11).abs() < 1e-9 && fr.is_default, "{fr:?}");
    assert_eq!(fr.year, Some(2025));
    // No residual mix in the table for Great Britain (AIB's EU table): the location-based
    // figure stands in.
    assert!(p.host("gb-01").market.is_none());
}

#[test]
fn an_organisations_residual_mix_wins_and_a_bad_one_is_refused() {
    let own = r#"
[[residual_mix]]
zone = "FR"
g_per_kwh = 30.5
year = 2024
source = "our own transcription of AIB 2024, Table 2"
"#;
    let p = planner(Some(own));
    let fr = p.host("fr-01").market.clone().unwrap();
    assert!((fr.value - 30.5).abs() < 1e-9 && !fr.is_default, "{fr:?}");

    let bad = r#"
[[residual_mix]]
zone = "france"
g_per_kwh = -3.0
year = 1850
source = ""
"#;
    let err = Coefficients::from_toml_str(bad).unwrap_err().to_string();
    for what in ["`source` is empty", "year 1850", "alpha-2", "g_per_kwh -3"] {
        assert!(err.contains(what), "{what}: {err}");
    }
}

#[test]
fn the_residual_mixs_own_uncertainty_is_propagated_to_market_based_figures() {
    let config = CollectorConfig::from_toml(SITES).unwrap();
    let pcts = CoefficientPcts::of(&Coefficients::built_in().unwrap());
    let line = |host: &str, site: &str, zone: &str| AggregateLine {
        host: host.into(),
        project: "p".into(),
        component: "cpu".into(),
        source: "rapl".into(),
        site: site.into(),
        zone: zone.into(),
        sums: Sums {
            energy_uj: 3_600_000_000_000,
            facility_energy_uj: 3_600_000_000_000,
            measured_energy_uj: 3_600_000_000_000,
            location_co2e_ug: 300_000_000,
            market_co2e_ug: 441_200_000,
            ..Sums::default()
        },
    };
    // Italy, no contract: RAPL 5 %, default PUE 20 %, the residual mix's 10 %.
    let u = of_lines_with([&line("it-01", "milano", "IT")], &config, &pcts);
    let by_hand = (25.0f64 + 400.0 + 100.0).sqrt();
    assert!(
        (u.co2e_kg_market.relative_pct() - by_hand).abs() < 1e-6,
        "{u:?}"
    );
    // France, no contract: its residual mix's 10 % too.
    let u = of_lines_with([&line("fr-01", "paris", "FR")], &config, &pcts);
    assert!(
        (u.co2e_kg_market.relative_pct() - by_hand).abs() < 1e-6,
        "{u:?}"
    );
    // Great Britain, no residual mix: the location-based factor's 15 % stands in.
    let u = of_lines_with([&line("gb-01", "london", "GB")], &config, &pcts);
    let by_hand = (25.0f64 + 400.0 + 225.0).sqrt();
    assert!(
        (u.co2e_kg_market.relative_pct() - by_hand).abs() < 1e-6,
        "{u:?}"
    );
}
