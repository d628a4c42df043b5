//! Euros: each site's electricity tariff (a flat price, or peak and off-peak prices by
//! local hour, with a dated history and its source) applied to the facility energy
//! (PUE included) of every hour.
//!
//! Money is integer: prices in micro-euros per kWh (`_ueur_per_kwh`), costs in
//! micro-euros (`_ueur`). A cost row's amount is its facility energy × its price,
//! rounded once to the micro-euro; sums of costs are sums of integers.
//!
//! Architecture invariant: every stored cost names the tariff rate that produced it
//! (`cost_hourly.tariff_id` → `tariffs`), as emissions name their coefficients, so a
//! later change of the configured tariff never rewrites a past cost.

pub mod api;
pub mod hardware;
pub mod hardware_api;

use jiff::civil::Date;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};

/// Microjoules in a kilowatt-hour.
const UJ_PER_KWH: u128 = 3_600_000_000_000;

/// Micro-euros in a euro.
pub const UEUR_PER_EUR: f64 = 1e6;

/// `facility_uj` at `price_ueur_per_kwh`, rounded to the micro-euro (half up).
pub fn cost_ueur(facility_uj: u64, price_ueur_per_kwh: u64) -> u64 {
    let v =
        (u128::from(facility_uj) * u128::from(price_ueur_per_kwh) + UJ_PER_KWH / 2) / UJ_PER_KWH;
    u64::try_from(v).unwrap_or(u64::MAX)
}

/// A price typed in euros per kWh, as an integer of micro-euros per kWh.
pub fn ueur_per_kwh(eur_per_kwh: f64) -> Option<u64> {
    let v = (eur_per_kwh * UEUR_PER_EUR).round();
    (eur_per_kwh.is_finite() && eur_per_kwh > 0.0 && v <= 1e9).then_some(v as u64)
}

/// An amount typed in euros (a purchase price), as an integer of micro-euros: positive
/// and at most ten million euros.
pub fn ueur(eur: f64) -> Option<u64> {
    let v = (eur * UEUR_PER_EUR).round();
    (eur.is_finite() && eur > 0.0 && v <= 1e13).then_some(v as u64)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Band {
    /// One price at every hour.
    Flat,
    Peak,
    OffPeak,
}

impl Band {
    pub fn as_str(self) -> &'static str {
        match self {
            Band::Flat => "flat",
            Band::Peak => "peak",
            Band::OffPeak => "off_peak",
        }
    }
}

/// The rate that applies to one hour of one site: what a cost is stored with.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Rate {
    pub site: String,
    pub price_ueur_per_kwh: u64,
    pub band: Band,
    /// First local day of the tariff (`YYYY-MM-DD`), empty when it has always applied.
    pub valid_from: String,
    /// The off-peak hours of the tariff (`22-06`), empty for a flat one.
    pub off_peak_hours: String,
    pub source: String,
}

/// One tariff of a site's history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Period {
    /// First local day; `None`: before every dated change.
    pub from: Option<Date>,
    pub price_ueur_per_kwh: u64,
    /// Off-peak price and the local hours (0..24) it applies to.
    pub off_peak: Option<(u64, [bool; 24])>,
    pub off_peak_hours: String,
    pub source: String,
}

/// A site's tariff history in the organisation's time zone. It travels with a push's
/// host plan (through the store's ingest log: the time zone as its IANA name).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tariff {
    pub site: String,
    #[serde(with = "tz_name")]
    pub tz: TimeZone,
    /// Sorted by `from` (`None` first).
    pub periods: Vec<Period>,
}

impl Tariff {
    /// The rate of the hour starting at `hour_s`, or `None` when no tariff covers it.
    pub fn rate_at(&self, hour_s: i64) -> Option<Rate> {
        let t = jiff::Timestamp::from_second(hour_s).ok()?;
        let local = t.to_zoned(self.tz.clone());
        let day = local.date();
        let p = self
            .periods
            .iter()
            .rev()
            .find(|p| p.from.is_none_or(|f| f <= day))?;
        let hour = usize::try_from(local.hour()).ok()?;
        let (price, band) = match &p.off_peak {
            Some((off, hours)) if hours.get(hour).copied().unwrap_or(false) => {
                (*off, Band::OffPeak)
            }
            Some(_) => (p.price_ueur_per_kwh, Band::Peak),
            None => (p.price_ueur_per_kwh, Band::Flat),
        };
        Some(Rate {
            site: self.site.clone(),
            price_ueur_per_kwh: price,
            band,
            valid_from: p.from.map(|d| d.to_string()).unwrap_or_default(),
            off_peak_hours: p.off_peak_hours.clone(),
            source: p.source.clone(),
        })
    }
}

mod tz_name {
    use jiff::tz::TimeZone;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(tz: &TimeZone, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(tz.iana_name().unwrap_or("UTC"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<TimeZone, D::Error> {
        let name = String::deserialize(d)?;
        TimeZone::get(&name).map_err(serde::de::Error::custom)
    }
}

/// Parses off-peak hours: `HH-HH` or `HH:00-HH:00` ranges (local, end exclusive,
/// crossing midnight allowed), e.g. `["22-06"]` or `["12:00-14:00", "23-07"]`. Energy is
/// stored per hour, so ranges start and end on the hour.
pub fn parse_hours(ranges: &[String]) -> Result<[bool; 24], String> {
    let mut out = [false; 24];
    let hour = |s: &str| -> Result<usize, String> {
        let s = s.trim();
        let h = s.strip_suffix(":00").unwrap_or(s);
        match h.parse::<usize>() {
            Ok(v) if v <= 24 && !h.is_empty() && h.len() <= 2 => Ok(v % 24),
            _ => Err(format!(
                "{s:?} is not an hour: HH or HH:00 (energy is stored per hour, so bands start on the hour)"
            )),
        }
    };
    if ranges.is_empty() {
        return Err("list the off-peak hours, e.g. [\"22-06\"]".into());
    }
    for r in ranges {
        let (a, b) = r
            .split_once('-')
            .ok_or_else(|| format!("{r:?} is not a range: HH-HH, e.g. \"22-06\""))?;
        let (a, b) = (hour(a)?, hour(b)?);
        if a == b {
            return Err(format!("{r:?} is empty or the whole day"));
        }
        let mut h = a;
        while h != b {
            out[h] = true;
            h = (h + 1) % 24;
        }
    }
    if out.iter().all(|&x| x) {
        return Err("every hour is off-peak: use one flat price".into());
    }
    Ok(out)
}

/// The tariff of every site that has one (default site included), in `tz`.
pub fn tariffs(config: &crate::config::CollectorConfig) -> Vec<Tariff> {
    let Ok(tz) = TimeZone::get(&config.organisation.timezone) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (name, t) in config
        .sites
        .iter()
        .map(|s| (&s.name, s.tariff()))
        .chain(std::iter::once((
            &config.default_site.name,
            config.default_site.tariff(),
        )))
    {
        if let Some(periods) = t.periods() {
            if !periods.is_empty() {
                out.push(Tariff {
                    site: name.clone(),
                    tz: tz.clone(),
                    periods,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kwh_costs_its_price_and_rounds_once() {
        assert_eq!(cost_ueur(3_600_000_000_000, 251_600), 251_600);
        // Half a micro-euro rounds up; less rounds down.
        assert_eq!(cost_ueur(7_154_213, 251_600), 0);
        assert_eq!(cost_ueur(7_154_214, 251_600), 1);
        assert_eq!(cost_ueur(u64::MAX, 1_000_000_000), 5_124_095_576_030_431);
        assert_eq!(ueur_per_kwh(0.2516), Some(251_600));
        assert_eq!(ueur_per_kwh(-1.0), None);
    }

    #[test]
    fn off_peak_hours_cross_midnight() {
        let h = parse_hours(&["22-06".into(), "12:00-14:00".into()]).unwrap();
        let on: Vec<usize> = (0..24).filter(|&i| h[i]).collect();
        assert_eq!(on, [0, 1, 2, 3, 4, 5, 12, 13, 22, 23]);
        for bad in ["22:30-06", "25-01", "6", "06-06"] {
            assert!(parse_hours(&[bad.into()]).is_err(), "{bad}");
        }
    }
}

/// A stored tariff rate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StoredTariff {
    pub id: i64,
    pub site: String,
    pub price_ueur_per_kwh: u64,
    pub band: Band,
    pub valid_from: String,
    pub off_peak_hours: String,
    pub source: String,
}

/// A stored cost: an hour, a site, a project, the tariff rate that priced it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CostLine {
    pub hour_s: i64,
    pub site: String,
    pub project: String,
    pub facility_uj: u64,
    pub cost_ueur: u64,
    pub tariff: StoredTariff,
}

/// All-time cost of a project at a site.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CostTotal {
    pub site: String,
    pub project: String,
    pub facility_uj: u64,
    pub cost_ueur: u64,
}
