//! Electricity Maps history exports: a zone's grid intensity, hourly, in UTC.
//!
//! Two shapes, told apart by their first character:
//! - the CSV history export (`Datetime (UTC)`, `Zone Id`,
//!   `Carbon Intensity gCO₂eq/kWh (direct)`, `Carbon Intensity gCO₂eq/kWh (LCA)`, …): the
//!   lifecycle (LCA) column is used when it has values, else the direct one;
//! - the API's JSON (`/v3/carbon-intensity/history` and the like):
//!   `{zone, history: [{zone, carbonIntensity, datetime, emissionFactorType, …}]}`; the
//!   series takes the first entry's `emissionFactorType` (lifecycle if absent) and skips
//!   entries of another type.
//!
//! A file holds one zone: a row or entry of another zone is an error, not a skip.

use std::io::Read;

use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use serde_json::Value as Json;

use super::eco2mix::shorten;
use super::import::{
    ImportError, IntensitySeries, PointCollector, Value, describe_header, normalise_name, read_text,
};
use super::units::FactorKind;

const EXPECTED: &str = "an Electricity Maps export (history CSV or API JSON)";
/// Used when a file holds a single point: Electricity Maps' history is hourly. Other
/// steps (daily, monthly exports) are detected from the data.
const FALLBACK_STEP_S: u32 = 3600;

/// Parses an Electricity Maps export of either shape. `progress` is called with the
/// number of bytes read so far.
pub fn parse_electricitymaps<R: Read>(
    input: R,
    progress: &mut dyn FnMut(u64),
) -> Result<IntensitySeries, ImportError> {
    let text = read_text(input, progress)?;
    parse_text(&text)
}

pub(crate) fn parse_text(text: &str) -> Result<IntensitySeries, ImportError> {
    if text.trim_start().starts_with(['{', '[']) {
        parse_json(text)
    } else {
        parse_csv(text)
    }
}

/// `2024-01-01T00:00:00.000Z`, or `2024-01-01 00:00:00` meaning UTC.
fn parse_utc(s: &str) -> Option<Timestamp> {
    if let Ok(at) = s.parse::<Timestamp>() {
        return Some(at);
    }
    let dt: DateTime = s.parse().ok()?;
    dt.to_zoned(TimeZone::UTC).ok().map(|z| z.timestamp())
}

/// The columns of a history export's header row.
struct CsvColumns {
    datetime: usize,
    zone: usize,
    lca: Option<usize>,
    direct: Option<usize>,
}

/// A data row of a history export, before the intensity column is chosen.
struct CsvRow {
    line: u64,
    at: Timestamp,
    lca: String,
    direct: String,
}

fn csv_columns(header: &csv::StringRecord) -> Result<CsvColumns, ImportError> {
    let header_line = header.position().map_or(1, |p| p.line());
    let names: Vec<String> = header.iter().map(normalise_name).collect();
    let find = |pred: &dyn Fn(&str) -> bool| names.iter().position(|n| pred(n));
    let Some(datetime) = find(&|n| n.starts_with("datetime")) else {
        return Err(ImportError::NotFormat {
            expected: EXPECTED,
            found: format!(
                "line {header_line} has no `Datetime (UTC)` column; it has: {}",
                describe_header(header.iter())
            ),
        });
    };
    let missing = |column: &'static str| ImportError::MissingColumn {
        line: header_line,
        column,
        header: describe_header(header.iter()),
    };
    let zone = find(&|n| n == "zoneid").ok_or_else(|| missing("Zone Id"))?;
    let lca = find(&|n| n.contains("carbonintensity") && n.contains("lca"));
    let direct = find(&|n| n.contains("carbonintensity") && n.contains("direct"));
    if lca.is_none() && direct.is_none() {
        return Err(missing("Carbon Intensity gCO₂eq/kWh (LCA)"));
    }
    Ok(CsvColumns {
        datetime,
        zone,
        lca,
        direct,
    })
}

fn parse_csv(text: &str) -> Result<IntensitySeries, ImportError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    let mut records = reader.records();
    let header = match records.next() {
        Some(Ok(h)) => h,
        Some(Err(e)) => {
            return Err(ImportError::Line {
                line: e.position().map_or(0, |p| p.line()),
                message: e.to_string(),
            });
        }
        None => return Err(ImportError::Empty),
    };
    let CsvColumns {
        datetime,
        zone: zone_col,
        lca,
        direct,
    } = csv_columns(&header)?;

    let mut out = PointCollector::default();
    let mut rows = Vec::new();
    let mut zone: Option<(String, u64)> = None;
    for record in records {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                out.row_read();
                out.skip(
                    e.position().map_or(0, |p| p.line()),
                    format!("unreadable row: {e}"),
                );
                continue;
            }
        };
        let line = record.position().map_or(0, |p| p.line());
        if record.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        out.row_read();
        let field = |i: Option<usize>| i.and_then(|i| record.get(i)).unwrap_or("").trim();
        let row_zone = field(Some(zone_col));
        if row_zone.is_empty() {
            out.skip(line, "`Zone Id` is empty");
            continue;
        }
        match &zone {
            None => zone = Some((row_zone.to_owned(), line)),
            Some((z, first)) if z != row_zone => {
                return Err(ImportError::Line {
                    line,
                    message: format!(
                        "zone `{row_zone}` differs from `{z}` on line {first}; import one zone per file"
                    ),
                });
            }
            Some(_) => {}
        }
        let Some(at) = parse_utc(field(Some(datetime))) else {
            out.skip(
                line,
                format!(
                    "`Datetime (UTC)` is not a date and time: \"{}\"",
                    shorten(field(Some(datetime)))
                ),
            );
            continue;
        };
        rows.push(CsvRow {
            line,
            at,
            lca: field(lca).to_owned(),
            direct: field(direct).to_owned(),
        });
    }
    let use_lca = lca.is_some() && rows.iter().any(|r| !r.lca.is_empty());
    let (kind, column) = if use_lca {
        (FactorKind::Lifecycle, "Carbon Intensity (LCA)")
    } else {
        (FactorKind::Direct, "Carbon Intensity (direct)")
    };
    for r in &rows {
        let text = if use_lca { &r.lca } else { &r.direct };
        if let Value::Kept(g) = out.value(r.line, column, text) {
            out.push(r.at, g);
        }
    }
    let zone = zone.map(|(z, _)| z).unwrap_or_default();
    out.finish(
        zone,
        "Electricity Maps, history export (CSV)".to_owned(),
        kind,
        &[],
        FALLBACK_STEP_S,
    )
}

fn parse_json(text: &str) -> Result<IntensitySeries, ImportError> {
    let doc: Json = serde_json::from_str(text).map_err(|e| ImportError::Json {
        line: e.line() as u64,
        column: e.column() as u64,
        message: e.to_string(),
    })?;
    let (top_zone, history) = match &doc {
        Json::Array(entries) => (None, entries),
        Json::Object(map) => {
            let Some(Json::Array(entries)) = map.get("history").or_else(|| map.get("data")) else {
                let keys: Vec<&str> = map.keys().map(String::as_str).collect();
                return Err(ImportError::NotFormat {
                    expected: EXPECTED,
                    found: format!(
                        "the JSON object has no `history` list; its keys are: {}",
                        describe_header(keys.into_iter())
                    ),
                });
            };
            (map.get("zone").and_then(Json::as_str), entries)
        }
        _ => {
            return Err(ImportError::NotFormat {
                expected: EXPECTED,
                found: "the JSON is neither an object nor a list".to_owned(),
            });
        }
    };

    let mut out = PointCollector::default();
    let mut zone: Option<String> = top_zone.map(str::to_owned);
    let mut kind: Option<FactorKind> = None;
    for (i, entry) in history.iter().enumerate() {
        let n = i as u64 + 1;
        out.row_read();
        let Some(obj) = entry.as_object() else {
            out.skip(n, "history entry is not an object");
            continue;
        };
        if let Some(z) = obj.get("zone").and_then(Json::as_str) {
            match &zone {
                None => zone = Some(z.to_owned()),
                Some(first) if first != z => {
                    return Err(ImportError::Line {
                        line: n,
                        message: format!(
                            "history entry {n}: zone `{z}` differs from `{first}`; import one zone per file"
                        ),
                    });
                }
                Some(_) => {}
            }
        }
        let entry_kind = match obj.get("emissionFactorType").and_then(Json::as_str) {
            None => FactorKind::Lifecycle,
            Some("lifecycle") => FactorKind::Lifecycle,
            Some("direct") => FactorKind::Direct,
            Some(other) => {
                out.skip(
                    n,
                    format!("unknown emissionFactorType \"{}\"", shorten(other)),
                );
                continue;
            }
        };
        let series_kind = *kind.get_or_insert(entry_kind);
        if entry_kind != series_kind {
            out.skip(
                n,
                format!("emissionFactorType {entry_kind} differs from the series' {series_kind}"),
            );
            continue;
        }
        let Some(at) = obj
            .get("datetime")
            .and_then(Json::as_str)
            .and_then(parse_utc)
        else {
            out.skip(n, "`datetime` is missing or not an ISO 8601 instant");
            continue;
        };
        let value = match obj.get("carbonIntensity") {
            None | Some(Json::Null) => out.value(n, "carbonIntensity", ""),
            Some(Json::Number(x)) => match x.as_f64() {
                Some(v) => out.number(n, "carbonIntensity", v),
                None => out.value(n, "carbonIntensity", "not a number"),
            },
            Some(other) => {
                out.skip(n, format!("`carbonIntensity` is not a number: {other}"));
                continue;
            }
        };
        if let Value::Kept(g) = value {
            out.push(at, g);
        }
    }
    let Some(zone) = zone else {
        return Err(ImportError::NotFormat {
            expected: EXPECTED,
            found: "no `zone` in the JSON".to_owned(),
        });
    };
    out.finish(
        zone,
        "Electricity Maps API, carbon-intensity history".to_owned(),
        kind.unwrap_or(FactorKind::Lifecycle),
        &[],
        FALLBACK_STEP_S,
    )
}
