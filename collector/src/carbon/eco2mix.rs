//! RTE eCO2mix exports: France's grid intensity (`taux_co2`, g/kWh, direct emissions of
//! production) every 15 or 30 minutes.
//!
//! Two shapes are read, told apart by their first line:
//! - the ODRÉ (Opendatasoft) CSV export: `;`-separated, UTF-8, with `date_heure` in ISO 8601
//!   with its offset (`2024-10-27T02:00:00+01:00`), so instants are unambiguous; headers as
//!   field names (`taux_co2`) or labels (`Taux de CO2 (g/kWh)`) both work;
//! - the classic eCO2mix download (`eCO2mix_RTE_….xls`, in fact tab-separated Latin-1 text):
//!   `Date` and `Heures` in Europe/Paris local time without offsets. The autumn DST hour
//!   appears twice: its first occurrence is summer time (+02:00), the second winter time
//!   (+01:00). The spring hour that does not exist is simply absent. RTE's trailing
//!   disclaimer line is skipped.
//!
//! If an ODRÉ export has no `date_heure`, its `date` and `heure` are read as the classic
//! file's are. Zero or empty intensities are counted and skipped, never stored as 0 g.

use std::collections::HashMap;
use std::io::Read;

use jiff::Timestamp;
use jiff::civil::{Date, DateTime, Time};
use jiff::tz::{AmbiguousOffset, TimeZone};

use super::import::{
    ImportError, IntensitySeries, PointCollector, Value, describe_header, first_line,
    normalise_name, read_text,
};
use super::units::FactorKind;

const EXPECTED: &str = "an eCO2mix export (RTE download or ODRÉ CSV)";
const PARIS: &str = "Europe/Paris";
/// eCO2mix steps: 15 minutes in real-time data, 30 in older consolidated data.
const STEPS_S: [u32; 2] = [900, 1800];
/// Used when no two points are one step apart: the shortest step, so that a point never
/// claims more time than it may cover.
const FALLBACK_STEP_S: u32 = 900;

/// Parses an eCO2mix export of either shape. `progress` is called with the number of
/// bytes read so far.
pub fn parse_eco2mix<R: Read>(
    input: R,
    progress: &mut dyn FnMut(u64),
) -> Result<IntensitySeries, ImportError> {
    let text = read_text(input, progress)?;
    parse_text(&text)
}

#[derive(Clone, Copy)]
enum Shape {
    Odre,
    Classic,
}

/// Where the instant comes from.
enum When {
    /// An ISO 8601 column with an offset.
    WithOffset(usize),
    /// Local date and time columns.
    Local { date: usize, time: usize },
}

/// Where a data row's fields are: its time and its intensity.
struct Columns {
    when: When,
    taux: usize,
}

impl Columns {
    /// How many fields a data row needs.
    fn needed(&self) -> usize {
        let last = match self.when {
            When::WithOffset(i) => i.max(self.taux),
            When::Local { date, time } => date.max(time).max(self.taux),
        };
        last + 1
    }
}

/// Which of the two exports this is, from its first line's separator.
fn shape_of(first: &str) -> Result<Shape, ImportError> {
    if first.contains('\t') {
        Ok(Shape::Classic)
    } else if first.contains(';') {
        Ok(Shape::Odre)
    } else {
        Err(ImportError::NotFormat {
            expected: EXPECTED,
            found: format!(
                "the first line is neither `;` nor tab separated: \"{}\"",
                shorten(first)
            ),
        })
    }
}

/// The time and intensity columns of the header row, or what is missing.
fn columns(header: &csv::StringRecord) -> Result<Columns, ImportError> {
    let header_line = header.position().map_or(1, |p| p.line());
    let names: Vec<String> = header.iter().map(normalise_name).collect();
    let find = |pred: &dyn Fn(&str) -> bool| names.iter().position(|n| pred(n));
    let taux = find(&|n| n == "tauxco2" || n.starts_with("tauxdeco2"));
    let date_heure = find(&|n| n == "dateheure");
    let date = find(&|n| n == "date");
    let time = find(&|n| n == "heure" || n == "heures");

    let when = match (date_heure, date, time) {
        (Some(i), _, _) => When::WithOffset(i),
        (None, Some(date), Some(time)) => When::Local { date, time },
        _ => {
            return Err(if taux.is_none() {
                ImportError::NotFormat {
                    expected: EXPECTED,
                    found: format!(
                        "line {header_line} has neither `taux_co2` nor a date column; it has: {}",
                        describe_header(header.iter())
                    ),
                }
            } else {
                ImportError::MissingColumn {
                    line: header_line,
                    column: "date_heure (or date and heure)",
                    header: describe_header(header.iter()),
                }
            });
        }
    };
    let Some(taux) = taux else {
        return Err(ImportError::MissingColumn {
            line: header_line,
            column: "taux_co2",
            header: describe_header(header.iter()),
        });
    };
    Ok(Columns { when, taux })
}

pub(crate) fn parse_text(text: &str) -> Result<IntensitySeries, ImportError> {
    let first = first_line(text).ok_or(ImportError::Empty)?;
    let shape = shape_of(first)?;
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(match shape {
            Shape::Odre => b';',
            Shape::Classic => b'\t',
        })
        .quoting(matches!(shape, Shape::Odre))
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    let mut records = reader.records();

    let header = match records.next() {
        Some(Ok(h)) => h,
        Some(Err(e)) => return Err(csv_error(&e)),
        None => return Err(ImportError::Empty),
    };
    let cols = columns(&header)?;
    let needed = cols.needed();
    let Columns { when, taux } = cols;

    let paris = TimeZone::get(PARIS).map_err(|e| ImportError::TimeZone {
        zone: PARIS,
        message: e.to_string(),
    })?;
    let mut local = LocalResolver::new(paris);
    let mut out = PointCollector::default();

    for record in records {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                out.row_read();
                out.skip(line, format!("unreadable row: {e}"));
                continue;
            }
        };
        let line = record.position().map_or(0, |p| p.line());
        if record.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        out.row_read();
        if record.len() < needed {
            let reason = if record.len() == 1 {
                format!(
                    "not a data row: \"{}\"",
                    shorten(record.get(0).unwrap_or(""))
                )
            } else {
                format!("{} fields, expected at least {needed}", record.len())
            };
            out.skip(line, reason);
            continue;
        }
        let field = |i: usize| record.get(i).unwrap_or("").trim();
        let at = match when {
            When::WithOffset(i) => parse_with_offset(field(i), &mut local),
            When::Local { date, time } => parse_local(field(date), field(time), &mut local),
        };
        let at = match at {
            Ok(Placed { at, dst_repeat }) => {
                if dst_repeat {
                    out.dst_repeat_resolved();
                }
                at
            }
            Err(reason) => {
                out.skip(line, reason);
                continue;
            }
        };
        if let Value::Kept(g) = out.value(line, "taux_co2", field(taux)) {
            out.push(at, g);
        }
    }
    let source = match shape {
        Shape::Odre => "RTE eCO2mix, ODRÉ export (taux_co2)",
        Shape::Classic => "RTE eCO2mix, download (Taux de Co2)",
    };
    out.finish(
        "FR".to_owned(),
        source.to_owned(),
        FactorKind::Direct,
        &STEPS_S,
        FALLBACK_STEP_S,
    )
}

struct Placed {
    at: Timestamp,
    /// The second occurrence of a repeated local time, placed at winter time.
    dst_repeat: bool,
}

/// Places local Europe/Paris times; remembers how often each ambiguous time was seen.
struct LocalResolver {
    tz: TimeZone,
    seen_ambiguous: HashMap<DateTime, u32>,
}

impl LocalResolver {
    fn new(tz: TimeZone) -> LocalResolver {
        LocalResolver {
            tz,
            seen_ambiguous: HashMap::new(),
        }
    }

    fn place(&mut self, dt: DateTime) -> Result<Placed, String> {
        let ambiguous = self.tz.to_ambiguous_timestamp(dt);
        let (offset, dst_repeat) = match ambiguous.offset() {
            AmbiguousOffset::Unambiguous { offset } => (offset, false),
            AmbiguousOffset::Gap { .. } => {
                return Err(format!(
                    "{dt} does not exist in {PARIS} (skipped by the spring DST change)"
                ));
            }
            AmbiguousOffset::Fold { before, after } => {
                let n = self.seen_ambiguous.entry(dt).or_insert(0);
                *n += 1;
                if *n == 1 {
                    (before, false)
                } else {
                    (after, *n == 2)
                }
            }
        };
        offset
            .to_timestamp(dt)
            .map(|at| Placed { at, dst_repeat })
            .map_err(|e| format!("{dt} is out of range: {e}"))
    }
}

fn parse_with_offset(text: &str, local: &mut LocalResolver) -> Result<Placed, String> {
    if text.is_empty() {
        return Err("`date_heure` is empty".to_owned());
    }
    if let Ok(at) = text.parse::<Timestamp>() {
        return Ok(Placed {
            at,
            dst_repeat: false,
        });
    }
    // Without an offset, it is local time.
    match text.parse::<DateTime>() {
        Ok(dt) => local.place(dt),
        Err(_) => Err(format!(
            "`date_heure` is not an ISO 8601 date and time: \"{}\"",
            shorten(text)
        )),
    }
}

fn parse_local(date: &str, time: &str, local: &mut LocalResolver) -> Result<Placed, String> {
    let d = parse_date(date).ok_or_else(|| {
        format!(
            "date \"{}\" is neither YYYY-MM-DD nor DD/MM/YYYY",
            shorten(date)
        )
    })?;
    let t = parse_time(time).ok_or_else(|| format!("time \"{}\" is not HH:MM", shorten(time)))?;
    local.place(d.to_datetime(t))
}

/// `YYYY-MM-DD` (ODRÉ) or `DD/MM/YYYY` (the eCO2mix download), parsed by jiff.
fn parse_date(s: &str) -> Option<Date> {
    let format = if s.contains('/') {
        "%d/%m/%Y"
    } else {
        "%Y-%m-%d"
    };
    Date::strptime(format, s).ok()
}

/// `HH:MM` or `HH:MM:SS`, parsed by jiff.
fn parse_time(s: &str) -> Option<Time> {
    let format = if s.matches(':').count() == 2 {
        "%H:%M:%S"
    } else {
        "%H:%M"
    };
    Time::strptime(format, s).ok()
}

fn csv_error(e: &csv::Error) -> ImportError {
    ImportError::Line {
        line: e.position().map_or(0, |p| p.line()),
        message: e.to_string(),
    }
}

/// At most 60 characters of a field, for messages.
pub(crate) fn shorten(s: &str) -> String {
    let mut out: String = s.chars().take(60).collect();
    if s.chars().count() > 60 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_times_in_both_spellings() {
        assert_eq!(parse_date("2025-10-26"), parse_date("26/10/2025"));
        assert!(parse_date("2025-13-01").is_none());
        assert!(parse_date("26/10").is_none());
        assert_eq!(parse_time("02:30"), parse_time("02:30:00"));
        assert!(parse_time("2h30").is_none());
    }
}
