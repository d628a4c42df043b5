//! Figures for a reader, not a spreadsheet: the unit that fits the figure (Wh → kWh → MWh
//! → GWh, gCO2e → kgCO2e → tCO2e) with three significant digits, and the citizen
//! equivalences of `collector/data/equivalences.toml` (ADEME's Impact CO2 factors).

use serde::Deserialize;

use super::i18n::{Lang, number, with_unit};

/// `x` rounded to `digits` significant digits, with the decimals that shows.
pub fn significant(lang: Lang, x: f64, digits: i32) -> String {
    if x == 0.0 || !x.is_finite() {
        return number(lang, 0.0, 0);
    }
    let magnitude = x.abs().log10().floor() as i32;
    let decimals = (digits - 1 - magnitude).max(0);
    let scale = 10f64.powi(magnitude - digits + 1);
    let rounded = (x / scale).round() * scale;
    // Rounding may carry into a new digit (9.996 → 10.0): one decimal fewer then.
    let decimals = if rounded.abs() >= 10f64.powi(magnitude + 1) {
        (decimals - 1).max(0)
    } else {
        decimals
    };
    number(lang, rounded, decimals as usize)
}

/// Picks the unit of `units` (each 1,000 times the previous) that keeps `value` (in the
/// first unit) under 1,000, and writes it with three significant digits.
fn fit(lang: Lang, value: f64, units: &[&str]) -> String {
    let mut v = value;
    let mut i = 0;
    while v.abs() >= 999.5 && i + 1 < units.len() {
        v /= 1000.0;
        i += 1;
    }
    with_unit(lang, significant(lang, v, 3), units[i])
}

/// Energy in the unit that fits: `1,93 MWh`, `52,1 Wh`.
pub fn energy(lang: Lang, uj: u64) -> String {
    fit(lang, uj as f64 / 3.6e9, &["Wh", "kWh", "MWh", "GWh"])
}

/// Emissions in the unit that fits: `604 kgCO2e`, `0,31 tCO2e` is written `310 kgCO2e`.
pub fn mass(lang: Lang, ug: u64) -> String {
    fit(
        lang,
        ug as f64 / 1e6,
        &["gCO2e", "kgCO2e", "tCO2e", "ktCO2e"],
    )
}

/// Euros for a reader: `380 €`, `1 240 €`, `0,52 €` (`€380` in English).
pub fn euros(lang: Lang, eur: f64) -> String {
    let text = if eur.abs() >= 100.0 {
        number(lang, eur, 0)
    } else {
        significant(lang, eur, 2)
    };
    match lang {
        Lang::Fr => with_unit(lang, text, "€"),
        Lang::En => format!("€{text}"),
    }
}

/// A change for a reader: `+12 %`, `−3,5 %` (one decimal under 10 %).
pub fn change(lang: Lang, ratio: f64) -> String {
    let pct = ratio * 100.0;
    let decimals = usize::from(pct.abs() < 10.0);
    let sign = if pct > 0.0 { "+" } else { "" };
    match lang {
        Lang::Fr => format!("{sign}{}\u{202F}%", number(lang, pct, decimals)),
        Lang::En => format!("{sign}{}%", number(lang, pct, decimals)),
    }
}

/// One citizen equivalence and where its factor comes from.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Equivalence {
    pub id: String,
    pub kgco2e_per_unit: f64,
    pub fr: String,
    pub en: String,
    pub source: String,
    pub year: i32,
    pub min_units: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    equivalence: Vec<Equivalence>,
}

const EQUIVALENCES_TOML: &str = include_str!("../../data/equivalences.toml");

/// The built-in equivalences (an unreadable table gives none, and says so in the log).
pub fn equivalences() -> Vec<Equivalence> {
    match toml::from_str::<File>(EQUIVALENCES_TOML) {
        Ok(f) => f.equivalence,
        Err(e) => {
            tracing::warn!(error = %e, "the built-in equivalences table is unreadable");
            Vec::new()
        }
    }
}

/// The equivalences of `ug` of CO2e worth saying (at least `min_units` of each), as
/// `(text, equivalence)`: `2 770 km en voiture thermique`.
pub fn equivalents(lang: Lang, ug: u64) -> Vec<(String, Equivalence)> {
    let kg = ug as f64 / 1e9;
    equivalences()
        .into_iter()
        .filter_map(|e| {
            let units = kg / e.kgco2e_per_unit;
            if units < e.min_units {
                return None;
            }
            let what = match lang {
                Lang::Fr => &e.fr,
                Lang::En => &e.en,
            };
            let text = format!("{} {what}", significant(lang, units, 2));
            Some((text, e))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_take_the_unit_that_fits_with_three_significant_digits() {
        let kwh = 3_600_000_000_000u64;
        let cases = [
            (kwh * 1933, "1,93\u{202F}MWh", "1.93 MWh"),
            (kwh / 1000 * 52, "52,0\u{202F}Wh", "52.0 Wh"),
            (kwh * 745, "745\u{202F}kWh", "745 kWh"),
            (kwh / 1000 * 99_996 / 100, "1,00\u{202F}kWh", "1.00 kWh"),
            (0, "0\u{202F}Wh", "0 Wh"),
        ];
        for (uj, fr, en) in cases {
            assert_eq!(energy(Lang::Fr, uj), fr, "{uj}");
            assert_eq!(energy(Lang::En, uj), en, "{uj}");
        }
        assert_eq!(mass(Lang::Fr, 603_510_000_000), "604\u{202F}kgCO2e");
        assert_eq!(mass(Lang::En, 3_100_000_000_000), "3.10 tCO2e");
        assert_eq!(mass(Lang::En, 4_321_000), "4.32 gCO2e");
        assert_eq!(significant(Lang::En, 2773.4, 2), "2,800");
        assert_eq!(euros(Lang::Fr, 380.4), "380\u{202F}€");
        assert_eq!(euros(Lang::En, 0.523), "€0.52");
        assert_eq!(change(Lang::Fr, 0.1234), "+12\u{202F}%");
        assert_eq!(change(Lang::En, -0.035), "−3.5%");
    }

    #[test]
    fn every_equivalence_has_a_source_a_year_and_a_positive_factor() {
        let all = equivalences();
        assert!(all.len() >= 2, "{all:?}");
        for e in &all {
            assert!(e.kgco2e_per_unit > 0.0, "{}", e.id);
            assert!(e.source.contains("ADEME"), "{}", e.id);
            assert!((2020..=2030).contains(&e.year), "{}", e.id);
            assert!(!e.fr.is_empty() && !e.en.is_empty(), "{}", e.id);
        }
        // 604 kg: 2,776 km by car (0.2176 kg/km); not yet a transatlantic flight.
        let got = equivalents(Lang::Fr, 604_000_000_000);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].0, "2\u{202F}800 km en voiture thermique");
    }
}
