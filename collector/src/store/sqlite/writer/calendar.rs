//! Days and months of the rollups in the store's time zone, and the one rounding of a
//! row's facility energy.

use std::collections::HashMap;

use jiff::tz::TimeZone;

/// Days and months of the rollups: the Unix second where the local day (month) of an
/// hour starts, in the store's time zone.
pub struct Calendar {
    tz: TimeZone,
    cache: HashMap<i64, (i64, i64)>,
}

impl Calendar {
    pub fn new(tz: TimeZone) -> Calendar {
        Calendar {
            tz,
            cache: HashMap::new(),
        }
    }

    /// `(day_s, month_s)` of the hour starting at `hour_s`.
    pub fn of(&mut self, hour_s: i64) -> (i64, i64) {
        if let Some(v) = self.cache.get(&hour_s) {
            return *v;
        }
        let v = day_month(&self.tz, hour_s);
        if self.cache.len() > 100_000 {
            self.cache.clear();
        }
        self.cache.insert(hour_s, v);
        v
    }
}

/// `(day_s, month_s)` of the instant `s` in `tz` (a boundary hour that does not start on
/// a local midnight, in zones with half-hour offsets, counts in the day it starts in).
pub fn day_month(tz: &TimeZone, s: i64) -> (i64, i64) {
    let Ok(t) = jiff::Timestamp::from_second(s) else {
        return (s, s);
    };
    let z = t.to_zoned(tz.clone());
    let start = |d: jiff::civil::Date| {
        d.to_zoned(tz.clone())
            .map(|z| z.timestamp().as_second())
            .unwrap_or(s)
    };
    (start(z.date()), start(z.date().first_of_month()))
}

/// The rounding of a row's facility energy: energy × PUE, rounded once.
pub fn facility_uj(energy_uj: u64, pue: f64) -> u64 {
    let v = energy_uj as f64 * pue;
    if v.is_finite() && v > 0.0 {
        v.round() as u64
    } else {
        0
    }
}
