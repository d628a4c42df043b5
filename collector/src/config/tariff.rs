//! A site's electricity tariff in the configuration: `tariff_eur_per_kwh` (the flat
//! price, or the peak price when an off-peak one is given), `tariff_off_peak_eur_per_kwh`
//! with `tariff_off_peak_hours`, `tariff_source`, and dated changes
//! (`[[site.tariff_change]]`, each from a local day on). Turned into
//! [`crate::cost::Tariff`] for the store.

use serde::{Deserialize, Serialize};

use super::{DefaultSite, Site};
use crate::cost::{Period, parse_hours, ueur_per_kwh};

/// A tariff that applies from a local day on (until the next change).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TariffChange {
    /// `YYYY-MM-DD`, the first local day of the new tariff.
    pub from: String,
    /// Flat price, or the peak price with `off_peak_eur_per_kwh`, euros per kWh.
    pub eur_per_kwh: f64,
    #[serde(default)]
    pub off_peak_eur_per_kwh: Option<f64>,
    /// Local hours, e.g. `["22-06"]`.
    #[serde(default)]
    pub off_peak_hours: Vec<String>,
    /// The contract or price list, and its date.
    pub source: String,
}

/// A site's tariff fields, wherever they are written (a `[[site]]` or `[default_site]`).
pub struct TariffView<'a> {
    pub eur_per_kwh: Option<f64>,
    pub off_peak_eur_per_kwh: Option<f64>,
    pub off_peak_hours: &'a [String],
    pub source: Option<&'a str>,
    pub changes: &'a [TariffChange],
}

fn period(
    from: Option<jiff::civil::Date>,
    eur: f64,
    off: Option<f64>,
    hours: &[String],
    source: &str,
) -> Option<Period> {
    let off_peak = match off {
        Some(o) => Some((ueur_per_kwh(o)?, parse_hours(hours).ok()?)),
        None => None,
    };
    Some(Period {
        from,
        price_ueur_per_kwh: ueur_per_kwh(eur)?,
        off_peak,
        off_peak_hours: if off.is_some() {
            hours.join(",")
        } else {
            String::new()
        },
        source: source.to_string(),
    })
}

impl TariffView<'_> {
    /// The periods, sorted (`None` for a valid configuration that has problems).
    pub fn periods(&self) -> Option<Vec<Period>> {
        let mut out = Vec::new();
        if let Some(eur) = self.eur_per_kwh {
            out.push(period(
                None,
                eur,
                self.off_peak_eur_per_kwh,
                self.off_peak_hours,
                self.source.unwrap_or_default(),
            )?);
        }
        for c in self.changes {
            let from = c.from.parse::<jiff::civil::Date>().ok()?;
            out.push(period(
                Some(from),
                c.eur_per_kwh,
                c.off_peak_eur_per_kwh,
                &c.off_peak_hours,
                &c.source,
            )?);
        }
        out.sort_by_key(|p| p.from);
        Some(out)
    }

    /// Every problem of these fields, with keys under `prefix` (`site[0]`).
    pub fn problems(&self, prefix: &str, problem: &mut impl FnMut(String, String)) {
        let key = |k: &str| format!("{prefix}.{k}");
        let price = |problem: &mut dyn FnMut(String, String), k: String, v: f64| {
            if ueur_per_kwh(v).is_none() || v > 10.0 {
                problem(k, format!("{v} is not a price: 0 < euros per kWh <= 10"));
            }
        };
        let bands = |problem: &mut dyn FnMut(String, String),
                     off: Option<f64>,
                     hours: &[String],
                     off_key: String,
                     hours_key: String| {
            match off {
                Some(o) => {
                    price(problem, off_key, o);
                    if let Err(e) = parse_hours(hours) {
                        problem(hours_key, e);
                    }
                }
                None if !hours.is_empty() => {
                    problem(off_key, "off-peak hours need their off-peak price".into())
                }
                None => {}
            }
        };
        if let Some(v) = self.eur_per_kwh {
            price(problem, key("tariff_eur_per_kwh"), v);
            if self.source.is_none_or(|s| s.trim().is_empty()) {
                problem(
                    key("tariff_source"),
                    "a tariff needs its source (the contract or price list, and its date)".into(),
                );
            }
        } else if self.off_peak_eur_per_kwh.is_some() || !self.off_peak_hours.is_empty() {
            problem(
                key("tariff_eur_per_kwh"),
                "an off-peak price goes with the (peak) tariff_eur_per_kwh".into(),
            );
        }
        bands(
            problem,
            self.off_peak_eur_per_kwh,
            self.off_peak_hours,
            key("tariff_off_peak_eur_per_kwh"),
            key("tariff_off_peak_hours"),
        );
        let mut last: Option<jiff::civil::Date> = None;
        for (j, c) in self.changes.iter().enumerate() {
            let k = |f: &str| format!("{prefix}.tariff_change[{j}].{f}");
            match c.from.parse::<jiff::civil::Date>() {
                Ok(d) if c.from.len() == 10 => {
                    if last.is_some_and(|l| d <= l) {
                        problem(
                            k("from"),
                            format!("{d} is not after the previous change: list changes in order"),
                        );
                    }
                    last = Some(d);
                }
                _ => problem(
                    k("from"),
                    format!("{:?} is not a date: YYYY-MM-DD is expected", c.from),
                ),
            }
            price(problem, k("eur_per_kwh"), c.eur_per_kwh);
            if c.source.trim().is_empty() {
                problem(k("source"), "a tariff needs its source".into());
            }
            bands(
                problem,
                c.off_peak_eur_per_kwh,
                &c.off_peak_hours,
                k("off_peak_eur_per_kwh"),
                k("off_peak_hours"),
            );
        }
    }
}

macro_rules! tariff_view {
    ($t:ty) => {
        impl $t {
            /// The site's tariff fields.
            pub fn tariff(&self) -> TariffView<'_> {
                TariffView {
                    eur_per_kwh: self.tariff_eur_per_kwh,
                    off_peak_eur_per_kwh: self.tariff_off_peak_eur_per_kwh,
                    off_peak_hours: &self.tariff_off_peak_hours,
                    source: self.tariff_source.as_deref(),
                    changes: &self.tariff_changes,
                }
            }
        }
    };
}
tariff_view!(Site);
tariff_view!(DefaultSite);

/// The problems of an inventory item's purchase price (`crate::cost::hardware`), each
/// with its key: a price needs its amortisation period and its source; the period and
/// the date need a price.
pub(super) fn purchase_problems(
    i: usize,
    item: &super::InventoryItem,
    problem: &mut impl FnMut(String, String),
) {
    let key = |k: &str| format!("inventory[{i}].{k}");
    match item.purchase_price_eur {
        Some(eur) => {
            if crate::cost::ueur(eur).is_none() {
                problem(
                    key("purchase_price_eur"),
                    format!("{eur} is not a price: a positive number of euros, at most 10,000,000"),
                );
            }
            if item.amortisation_years.is_none() {
                problem(
                    key("amortisation_years"),
                    "needed with purchase_price_eur: the years the price is spread over".into(),
                );
            }
            if item
                .purchase_source
                .as_deref()
                .is_none_or(|s| s.trim().is_empty())
            {
                problem(
                    key("purchase_source"),
                    "needed with purchase_price_eur: the order, invoice or contract it comes from"
                        .into(),
                );
            }
        }
        None => {
            for (k, given) in [
                ("amortisation_years", item.amortisation_years.is_some()),
                ("purchased_on", item.purchased_on.is_some()),
                ("purchase_source", item.purchase_source.is_some()),
            ] {
                if given {
                    problem(key(k), "given without purchase_price_eur".into());
                }
            }
        }
    }
    if let Some(y) = item.amortisation_years {
        if !(y.is_finite() && (0.5..=30.0).contains(&y)) {
            problem(
                key("amortisation_years"),
                format!("{y} is outside 0.5..=30 years"),
            );
        }
    }
    if let Some(d) = &item.purchased_on {
        if d.parse::<jiff::civil::Date>().is_err() {
            problem(
                key("purchased_on"),
                format!("{d:?} is not a date: YYYY-MM-DD"),
            );
        }
    }
}
