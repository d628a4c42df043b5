//! Months and days in the organisation's time zone, as ranges of Unix seconds. The
//! footprint is stored per UTC hour; every time zone in use has whole-hour offsets at
//! month and day boundaries except a few (India, Nepal…), where a boundary hour is
//! counted in the period it starts in.

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};

/// A month of the organisation: `[from_s, to_s)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Month {
    pub year: i16,
    pub month: i8,
    pub from_s: i64,
    pub to_s: i64,
}

impl Month {
    pub fn label(&self) -> String {
        format!("{:04}-{:02}", self.year, self.month)
    }

    /// The month before.
    pub fn previous(&self, tz: &TimeZone) -> Result<Month, String> {
        let (y, m) = if self.month == 1 {
            (self.year - 1, 12)
        } else {
            (self.year, self.month - 1)
        };
        month(tz, y, m)
    }
}

fn start_of(tz: &TimeZone, d: Date) -> Result<i64, String> {
    d.to_zoned(tz.clone())
        .map(|z| z.timestamp().as_second())
        .map_err(|e| format!("cannot place {d} in the time zone: {e}"))
}

/// The month `year-month` in `tz`.
pub fn month(tz: &TimeZone, year: i16, month: i8) -> Result<Month, String> {
    let first = Date::new(year, month, 1).map_err(|e| format!("{year}-{month}: {e}"))?;
    let next = first
        .checked_add(jiff::Span::new().months(1))
        .map_err(|e| e.to_string())?;
    Ok(Month {
        year,
        month,
        from_s: start_of(tz, first)?,
        to_s: start_of(tz, next)?,
    })
}

/// The month that contains `at_s` in `tz`.
pub fn month_of(tz: &TimeZone, at_s: i64) -> Result<Month, String> {
    let z = Timestamp::from_second(at_s)
        .map_err(|e| e.to_string())?
        .to_zoned(tz.clone());
    month(tz, z.year(), z.month())
}

/// The local date (in `tz`) of the instant `at_s`, as `YYYY-MM-DD`.
pub fn local_day(tz: &TimeZone, at_s: i64) -> String {
    match Timestamp::from_second(at_s) {
        Ok(t) => t.to_zoned(tz.clone()).date().to_string(),
        Err(_) => String::new(),
    }
}

/// Parses a bound: `YYYY-MM-DD` (midnight in `tz`) or an RFC 3339 instant.
pub fn parse_bound(tz: &TimeZone, text: &str) -> Result<i64, String> {
    if let Ok(d) = text.parse::<Date>() {
        return start_of(tz, d);
    }
    if let Ok(t) = text.parse::<Timestamp>() {
        return Ok(t.as_second());
    }
    if let Ok(z) = text.parse::<Zoned>() {
        return Ok(z.timestamp().as_second());
    }
    Err(format!(
        "{text:?} is not a date (YYYY-MM-DD, local to the organisation) or an RFC 3339 instant (2026-03-01T00:00:00Z)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paris() -> TimeZone {
        TimeZone::get("Europe/Paris").unwrap()
    }

    #[test]
    fn months_follow_the_time_zone_and_dst() {
        // March 2026 in Paris: starts at UTC+1, ends at UTC+2 (DST on 29 March):
        // 31 days less one hour.
        let m = month(&paris(), 2026, 3).unwrap();
        assert_eq!(m.from_s, 1_772_319_600); // 2026-02-28T23:00:00Z
        assert_eq!(m.to_s - m.from_s, 31 * 86_400 - 3_600);
        // October 2026: one hour more.
        let o = month(&paris(), 2026, 10).unwrap();
        assert_eq!(o.to_s - o.from_s, 31 * 86_400 + 3_600);
        assert_eq!(month_of(&paris(), o.from_s).unwrap(), o);
        assert_eq!(month_of(&paris(), o.from_s - 1).unwrap().label(), "2026-09");
        assert_eq!(o.previous(&paris()).unwrap().label(), "2026-09");
        assert_eq!(
            month(&paris(), 2026, 1)
                .unwrap()
                .previous(&paris())
                .unwrap()
                .label(),
            "2025-12"
        );
    }

    #[test]
    fn bounds_are_local_dates_or_instants() {
        assert_eq!(parse_bound(&paris(), "2026-03-01").unwrap(), 1_772_319_600);
        assert_eq!(
            parse_bound(&paris(), "2026-03-01T00:00:00Z").unwrap(),
            1_772_323_200
        );
        let e = parse_bound(&paris(), "yesterday").unwrap_err();
        assert!(e.contains("YYYY-MM-DD"), "{e}");
        assert_eq!(local_day(&paris(), 1_772_319_600), "2026-03-01");
    }
}
