//! Grid carbon-intensity time series: what an import produces, how rows become points,
//! and the time-weighted mean the store uses for an hour.
//!
//! Every parser reads the whole input (reporting bytes read to a progress callback), turns
//! rows into raw points through a `PointCollector`, which validates values and records
//! what it skips, then `PointCollector::finish` sorts, removes duplicates, detects the
//! step and gives each point its duration: the time to the next point, capped at the step
//! (the last point gets the step), so points never overlap and a hole stays a hole.

use std::io::Read;

use jiff::Timestamp;

use super::factors::MAX_G_PER_KWH;
use super::units::FactorKind;

/// At most this many skipped rows are listed in a report; the count is kept beyond.
pub const MAX_SKIPPED_LISTED: usize = 50;

/// One step of a series: the intensity over `[start_unix_s, start_unix_s + duration_s)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IntensityPoint {
    pub start_unix_s: i64,
    pub duration_s: u32,
    pub g_per_kwh: f64,
}

/// What an import did with the input.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImportReport {
    /// Data rows (or JSON entries) read, header and blank lines excluded.
    pub rows_read: u64,
    /// Points kept in the series.
    pub points: u64,
    /// The first [`MAX_SKIPPED_LISTED`] rows skipped: (line number, or 1-based entry number
    /// in a JSON history, and why).
    pub skipped: Vec<(u64, String)>,
    /// All rows skipped for a reason in `skipped` (listed or not).
    pub skipped_total: u64,
    /// Rows whose intensity was zero or empty: no value, never stored as 0 g.
    pub zeros_skipped: u64,
    /// Rows at an instant already seen: the first was kept.
    pub duplicates_resolved: u64,
    /// Rows in the repeated local hour of the autumn DST change, placed by order of
    /// appearance (first at summer time, second at winter time).
    pub dst_repeats_resolved: u64,
    /// Steps without a value between the first and last point, whatever the cause (row
    /// absent from the file or skipped).
    pub gaps: u64,
}

/// A grid intensity time series for one zone, sorted by start and non-overlapping.
#[derive(Debug, Clone, PartialEq)]
pub struct IntensitySeries {
    /// `FR`, or the zone id the file gives (Electricity Maps `Zone Id`).
    pub zone: String,
    /// Publisher and format, stored with every emission computed from the series.
    pub source: String,
    pub kind: FactorKind,
    /// The detected step (seconds): 900 or 1,800 for eCO2mix, 3,600 for hourly exports.
    pub step_s: u32,
    pub points: Vec<IntensityPoint>,
    pub report: ImportReport,
}

impl IntensitySeries {
    /// The time-weighted mean intensity over `[start_unix_s, end_unix_s)` and the fraction
    /// of that interval the series covers; `None` if the interval is empty or nothing in
    /// it is covered. The mean is over the covered part only: the caller decides what a
    /// low coverage means.
    pub fn mean_over(&self, start_unix_s: i64, end_unix_s: i64) -> Option<(f64, f64)> {
        if end_unix_s <= start_unix_s {
            return None;
        }
        let first = self
            .points
            .partition_point(|p| p.start_unix_s + i64::from(p.duration_s) <= start_unix_s);
        let mut weighted = 0.0;
        let mut covered_s: i64 = 0;
        for p in &self.points[first..] {
            if p.start_unix_s >= end_unix_s {
                break;
            }
            let from = p.start_unix_s.max(start_unix_s);
            let to = (p.start_unix_s + i64::from(p.duration_s)).min(end_unix_s);
            if to > from {
                let s = to - from;
                covered_s += s;
                weighted += p.g_per_kwh * s as f64;
            }
        }
        if covered_s == 0 {
            return None;
        }
        let covered = covered_s as f64;
        Some((
            weighted / covered,
            covered / (end_unix_s - start_unix_s) as f64,
        ))
    }
}

/// Why an input could not be imported. Row-level problems are not errors: they are
/// skipped and listed in the [`ImportReport`].
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("reading the input: {0}")]
    Read(#[from] std::io::Error),
    #[error("the file is empty")]
    Empty,
    #[error("not {expected}: {found}")]
    NotFormat {
        expected: &'static str,
        found: String,
    },
    #[error("line {line}: column `{column}` not found; the header has: {header}")]
    MissingColumn {
        line: u64,
        column: &'static str,
        header: String,
    },
    #[error("line {line}: {message}")]
    Line { line: u64, message: String },
    #[error("line {line}, column {column}: not valid JSON: {message}")]
    Json {
        line: u64,
        column: u64,
        message: String,
    },
    #[error("the time zone {zone} is not available: {message}")]
    TimeZone { zone: &'static str, message: String },
    #[error("no usable intensity in {rows_read} row(s){}", first_problems(.skipped))]
    NoPoints {
        rows_read: u64,
        skipped: Vec<(u64, String)>,
    },
}

fn first_problems(skipped: &[(u64, String)]) -> String {
    if skipped.is_empty() {
        return String::new();
    }
    let listed: Vec<String> = skipped
        .iter()
        .take(3)
        .map(|(line, why)| format!("line {line}: {why}"))
        .collect();
    format!("; first problems: {}", listed.join("; "))
}

/// Parses an intensity export of any supported format, detected from its content:
/// RTE eCO2mix (ODRÉ CSV or classic download) or Electricity Maps (CSV or API JSON).
pub fn parse_intensity<R: Read>(
    input: R,
    progress: &mut dyn FnMut(u64),
) -> Result<IntensitySeries, ImportError> {
    let text = read_text(input, progress)?;
    let first = first_line(&text).ok_or(ImportError::Empty)?;
    let looks_like_json = first.trim_start().starts_with(['{', '[']);
    let lower = first.to_lowercase();
    if looks_like_json || lower.contains("carbon intensity") || lower.contains("datetime (utc)") {
        super::electricitymaps::parse_text(&text)
    } else {
        super::eco2mix::parse_text(&text).map_err(|e| match e {
            ImportError::NotFormat { found, .. } => ImportError::NotFormat {
                expected: "a supported intensity export (RTE eCO2mix or Electricity Maps)",
                found,
            },
            other => other,
        })
    }
}

/// Reads everything, reporting the bytes read so far after each chunk, and decodes it:
/// UTF-8 if valid, else Latin-1 (each byte is one character), as RTE's classic files are.
/// A leading byte-order mark is dropped.
pub(crate) fn read_text<R: Read>(
    mut input: R,
    progress: &mut dyn FnMut(u64),
) -> Result<String, ImportError> {
    let mut bytes = Vec::new();
    let mut chunk = vec![0_u8; 64 * 1024];
    loop {
        let n = match input.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ImportError::Read(e)),
        };
        bytes.extend_from_slice(chunk.get(..n).unwrap_or_default());
        progress(bytes.len() as u64);
    }
    let text = match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => e.into_bytes().iter().map(|&b| char::from(b)).collect(),
    };
    let text = match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_owned(),
        None => text,
    };
    if text.trim().is_empty() {
        return Err(ImportError::Empty);
    }
    Ok(text)
}

/// The first non-blank line.
pub(crate) fn first_line(text: &str) -> Option<&str> {
    text.lines().find(|l| !l.trim().is_empty())
}

/// A header name reduced to lower-case letters and digits, to match `taux_co2`,
/// `Taux de Co2` and `Taux de CO2 (g/kWh)` alike.
pub(crate) fn normalise_name(name: &str) -> String {
    name.chars()
        .flat_map(char::to_lowercase)
        .filter(|c| c.is_alphanumeric())
        .collect()
}

/// A header for error messages: the names, at most 15 of them.
pub(crate) fn describe_header<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let names: Vec<&str> = names.collect();
    let mut shown: Vec<String> = names.iter().take(15).map(|n| n.trim().to_owned()).collect();
    if names.len() > 15 {
        shown.push(format!("… ({} columns)", names.len()));
    }
    shown.join(", ")
}

/// A row's value after validation.
pub(crate) enum Value {
    Kept(f64),
    /// Zero or empty: counted, not stored.
    Missing,
    /// Recorded as skipped, with its reason.
    Bad,
}

#[derive(Debug)]
struct RawPoint {
    start_unix_s: i64,
    g_per_kwh: f64,
}

/// Gathers a parser's points and its report, then builds the series.
#[derive(Debug, Default)]
pub(crate) struct PointCollector {
    raw: Vec<RawPoint>,
    report: ImportReport,
}

impl PointCollector {
    pub(crate) fn row_read(&mut self) {
        self.report.rows_read += 1;
    }

    pub(crate) fn skip(&mut self, line: u64, reason: impl Into<String>) {
        self.report.skipped_total += 1;
        if self.report.skipped.len() < MAX_SKIPPED_LISTED {
            self.report.skipped.push((line, reason.into()));
        }
    }

    pub(crate) fn dst_repeat_resolved(&mut self) {
        self.report.dst_repeats_resolved += 1;
    }

    /// Validates an intensity as written in a file (a decimal comma is accepted).
    pub(crate) fn value(&mut self, line: u64, column: &str, text: &str) -> Value {
        let t = text.trim();
        if t.is_empty() {
            self.report.zeros_skipped += 1;
            return Value::Missing;
        }
        let Ok(v) = t.replace(',', ".").parse::<f64>() else {
            self.skip(line, format!("`{column}` is not a number: \"{t}\""));
            return Value::Bad;
        };
        self.number(line, column, v)
    }

    /// Validates an intensity already parsed as a number.
    pub(crate) fn number(&mut self, line: u64, column: &str, v: f64) -> Value {
        if !v.is_finite() || v < 0.0 {
            self.skip(line, format!("`{column}` is negative or not finite: {v}"));
            Value::Bad
        } else if v == 0.0 {
            self.report.zeros_skipped += 1;
            Value::Missing
        } else if v > MAX_G_PER_KWH {
            self.skip(
                line,
                format!("`{column}` {v} g/kWh is above {MAX_G_PER_KWH}: not plausible"),
            );
            Value::Bad
        } else {
            Value::Kept(v)
        }
    }

    pub(crate) fn push(&mut self, at: Timestamp, g_per_kwh: f64) {
        self.raw.push(RawPoint {
            start_unix_s: at.as_second(),
            g_per_kwh,
        });
    }

    /// Sorts, keeps the first of points at the same instant, detects the step, sets
    /// durations and counts gaps. The step is the most common interval between
    /// consecutive points among `allowed_steps_s` (any interval if it is empty);
    /// `fallback_step_s` when no interval qualifies (a single point, or only holes).
    pub(crate) fn finish(
        mut self,
        zone: String,
        source: String,
        kind: FactorKind,
        allowed_steps_s: &[u32],
        fallback_step_s: u32,
    ) -> Result<IntensitySeries, ImportError> {
        if self.raw.is_empty() {
            return Err(ImportError::NoPoints {
                rows_read: self.report.rows_read,
                skipped: self.report.skipped,
            });
        }
        // Stable: among equal instants, file order is kept, so the first one stays.
        self.raw.sort_by_key(|p| p.start_unix_s);
        let before = self.raw.len();
        self.raw.dedup_by_key(|p| p.start_unix_s);
        self.report.duplicates_resolved += (before - self.raw.len()) as u64;

        let step_s = detect_step(&self.raw, allowed_steps_s)
            .unwrap_or(fallback_step_s)
            .max(1);
        let step = i64::from(step_s);
        let mut points = Vec::with_capacity(self.raw.len());
        for (i, p) in self.raw.iter().enumerate() {
            let duration = match self.raw.get(i + 1) {
                Some(next) => {
                    let d = next.start_unix_s - p.start_unix_s;
                    if d > step {
                        self.report.gaps += ((d - 1) / step) as u64;
                    }
                    d.min(step)
                }
                None => step,
            };
            points.push(IntensityPoint {
                start_unix_s: p.start_unix_s,
                duration_s: u32::try_from(duration).unwrap_or(step_s),
                g_per_kwh: p.g_per_kwh,
            });
        }
        self.report.points = points.len() as u64;
        Ok(IntensitySeries {
            zone,
            source,
            kind,
            step_s,
            points,
            report: self.report,
        })
    }
}

/// The most common interval between consecutive points (the shortest on a tie), among
/// `allowed` if it is not empty, if it fits in a `u32`.
fn detect_step(raw: &[RawPoint], allowed: &[u32]) -> Option<u32> {
    let mut counts: Vec<(i64, usize)> = Vec::new();
    for w in raw.windows(2) {
        if let [a, b] = w {
            let d = b.start_unix_s - a.start_unix_s;
            if !allowed.is_empty() && !allowed.iter().any(|&s| i64::from(s) == d) {
                continue;
            }
            match counts.iter_mut().find(|(v, _)| *v == d) {
                Some((_, n)) => *n += 1,
                None => counts.push((d, 1)),
            }
        }
    }
    counts
        .into_iter()
        .max_by(|(da, na), (db, nb)| na.cmp(nb).then(db.cmp(da)))
        .and_then(|(d, _)| u32::try_from(d).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(points: &[(i64, u32, f64)]) -> IntensitySeries {
        IntensitySeries {
            zone: "FR".into(),
            source: "test".into(),
            kind: FactorKind::Direct,
            step_s: 900,
            points: points
                .iter()
                .map(|&(s, d, g)| IntensityPoint {
                    start_unix_s: s,
                    duration_s: d,
                    g_per_kwh: g,
                })
                .collect(),
            report: ImportReport::default(),
        }
    }

    #[test]
    fn mean_over_weights_by_time_and_reports_coverage() {
        // 0–900 at 10, 900–1800 at 20, hole 1800–2700, 2700–3600 at 40.
        let s = series(&[(0, 900, 10.0), (900, 900, 20.0), (2700, 900, 40.0)]);
        let (mean, covered) = s.mean_over(0, 3600).unwrap();
        assert!((mean - (10.0 + 20.0 + 40.0) / 3.0).abs() < 1e-12);
        assert!((covered - 0.75).abs() < 1e-12);
        // Partial overlap: 450–1350 is half 10, half 20.
        let (mean, covered) = s.mean_over(450, 1350).unwrap();
        assert!((mean - 15.0).abs() < 1e-12);
        assert!((covered - 1.0).abs() < 1e-12);
        assert_eq!(s.mean_over(1800, 2700), None);
        assert_eq!(s.mean_over(100, 100), None);
        assert_eq!(s.mean_over(5000, 9000), None);
    }

    #[test]
    fn finish_dedups_detects_the_step_and_counts_gaps() {
        let mut c = PointCollector::default();
        let at = |s: i64| Timestamp::from_second(s).unwrap();
        for (s, g) in [(1800, 3.0), (0, 1.0), (900, 2.0), (900, 9.0), (4500, 5.0)] {
            c.push(at(s), g);
        }
        let s = c
            .finish("FR".into(), "t".into(), FactorKind::Direct, &[], 60)
            .unwrap();
        assert_eq!(s.step_s, 900);
        let got: Vec<(i64, u32, f64)> = s
            .points
            .iter()
            .map(|p| (p.start_unix_s, p.duration_s, p.g_per_kwh))
            .collect();
        assert_eq!(
            got,
            vec![
                (0, 900, 1.0),
                (900, 900, 2.0),
                (1800, 900, 3.0),
                (4500, 900, 5.0)
            ]
        );
        assert_eq!(s.report.duplicates_resolved, 1);
        assert_eq!(s.report.gaps, 2);
    }
}
