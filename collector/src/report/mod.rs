//! The monthly footprint report (issue 5): what the organisation's AI used and emitted in
//! a month of its time zone, project by project, against its objectives, with the
//! coefficients and the method behind every figure.
//!
//! [`build_summary`] reads pre-summed rows (monthly and daily rollups) into a pure
//! [`ReportData`]; [`build`] adds the hourly rows, for the CSV. The renderers turn it into
//! JSON ([`to_json`]), CSV ([`csv::render`]), Markdown and HTML ([`document`], through one
//! list of blocks so both say the same thing) and PDF ([`pdf`], the HTML printed by
//! headless Chromium). All user-facing words are in [`i18n`], French first.
//!
//! Architecture invariant: **every total of the report is the exact sum of its rows.**
//! The totals are summed, in integers (µJ, µg), from the month's aggregate lines that
//! the JSON carries, and each of those is the exact sum of the hourly rows that the CSV
//! carries (the store's rollups keep that true); a row's facility energy is its energy
//! × PUE rounded once, so a spreadsheet adding the CSV's columns finds the report's
//! totals to the unit.

pub mod boamps;
mod build;
pub mod charts;
pub mod csv;
pub mod document;
pub mod history;
pub mod http;
pub mod i18n;
pub mod inference;
pub mod pdf;
pub mod readable;
pub mod register;
pub mod sections;
pub mod summary;
pub mod year;
pub mod year_factors;

pub use build::{build, build_summary};

use std::collections::BTreeMap;

use jiff::tz::TimeZone;
use serde::Serialize;

use crate::api::Figures;
use crate::config::{CollectorConfig, parse_month};
use crate::objectives::ObjectiveStatus;
use crate::period::{Month, local_day, month};
use crate::store::{AggregateLine, HourlyRow, Store, StoreError, Sums};

pub use i18n::Lang;

/// The version of the JSON report's shape.
/// 2: the hourly rows left the JSON (they are the CSV's); `lines` carries the month's
/// sums per host, project, component, source, site and zone.
pub const SCHEMA: &str = "empreinte-report/2";

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{0}")]
    BadMonth(String),
    #[error(
        "{month} is in the future (today is {today} in {timezone}): there is nothing to report yet"
    )]
    Future {
        month: String,
        today: String,
        timezone: String,
    },
    #[error("organisation.timezone {0:?} is not a known time zone")]
    TimeZone(String),
    #[error("cannot read the footprint: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Render(String),
}

/// The report of one month.
#[derive(Clone, Debug, Serialize)]
pub struct ReportData {
    pub schema: &'static str,
    pub organisation: String,
    pub timezone: String,
    /// `YYYY-MM`.
    pub month: String,
    /// `[from, to)`, RFC 3339 instants.
    pub from: String,
    pub to: String,
    pub generated_at: String,
    #[serde(skip)]
    pub generated_s: i64,
    /// False while the month is not over: the figures are month-to-date.
    pub complete: bool,
    /// False when no row was stored for the month.
    pub has_data: bool,
    pub perimeter: Perimeter,
    pub totals: Figures,
    /// The totals' propagated standard uncertainties (`crate::uncertainty`).
    pub uncertainty: crate::uncertainty::FigureUncertainty,
    /// Sites whose electricity contract gives a market-based factor.
    pub market_sites: Vec<String>,
    pub projects: Vec<ProjectLine>,
    /// Objectives of the whole organisation (`project = "*"`).
    pub organisation_objectives: Vec<ObjectiveStatus>,
    pub sites: Vec<Line>,
    pub hosts: Vec<Line>,
    pub components: Vec<Line>,
    pub sources: Vec<Line>,
    /// GPU energy by GPU model (from the inventory of each host).
    pub gpu_models: Vec<Line>,
    /// Energy per local day and project (µJ).
    pub days: Vec<DayLine>,
    /// The last twelve months, this one last.
    pub trend: Vec<MonthLine>,
    /// The previous month's totals, for the first page's comparison.
    pub previous_month: Option<MonthLine>,
    /// The same month a year before.
    pub year_ago: Option<MonthLine>,
    /// Hosts some of whose energy is estimated (no readable counter), for the banner.
    pub estimated_hosts: Vec<String>,
    /// The month's cost in euros, where tariffs are configured (the register's costs
    /// fill it); the first page shows it when present.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_eur: Option<f64>,
    pub inference: Inference,
    /// The register of AI uses, departments and costs (`register.rs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub register: Option<register::RegisterReport>,
    pub coefficients: Vec<CoefficientLine>,
    /// The configuration in force over the month and its recomputations (`history.rs`).
    pub configuration: history::ConfigurationReport,
    pub intensity_series: Vec<SeriesLine>,
    /// The month's sums per host, project, component, source, site and zone: every total
    /// above is their exact sum.
    pub lines: Vec<AggregateLine>,
    /// Every stored hourly row behind the totals, for the CSV export only ([`build`]);
    /// empty from [`build_summary`], and never in the JSON.
    #[serde(skip)]
    pub rows: Vec<ReportRow>,
    /// Each coefficient's own uncertainty, for the CSV's per-row figures.
    #[serde(skip)]
    pub coefficient_pcts: std::sync::Arc<crate::uncertainty::CoefficientPcts>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Perimeter {
    pub hosts: Vec<String>,
    pub sites: Vec<String>,
    /// `(model, cards)` from the inventory of the hosts covered.
    pub gpus: Vec<GpuCount>,
    /// Agents the collector knows that stored nothing for the month.
    pub silent_agents: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct GpuCount {
    pub model: String,
    pub count: u64,
}

/// One line of a breakdown.
#[derive(Clone, Debug, Serialize)]
pub struct Line {
    pub key: String,
    /// Share of the month's IT energy.
    pub share: f64,
    #[serde(flatten)]
    pub figures: Figures,
}

#[derive(Clone, Debug, Serialize)]
pub struct ProjectLine {
    pub project: String,
    pub share: f64,
    #[serde(flatten)]
    pub figures: Figures,
    /// The previous month's figures, if it has data.
    pub previous: Option<Figures>,
    /// Change of IT energy against the previous month (0.1 = +10 %).
    pub energy_change: Option<f64>,
    /// The project's objectives; empty when it has none.
    pub objectives: Vec<ObjectiveStatus>,
    /// The project's propagated standard uncertainties.
    pub uncertainty: crate::uncertainty::FigureUncertainty,
    /// The project's cost in euros, where known (tariffs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_eur: Option<f64>,
    /// Requests served, where the inference servers' counters are collected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests: Option<u64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct DayLine {
    /// `YYYY-MM-DD`, local.
    pub day: String,
    /// IT energy per project, µJ.
    pub energy_uj: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct MonthLine {
    pub month: String,
    /// False when nothing was stored for the month (before the deployment): "no data",
    /// not 0.
    pub has_data: bool,
    #[serde(flatten)]
    pub figures: Figures,
}

/// The per-model section (`inference.rs`).
pub use inference::InferenceSection as Inference;

/// A coefficient line of the report is the stored coefficient itself.
pub type CoefficientLine = crate::store::StoredCoefficient;

/// An imported intensity series as used by the month's rows.
pub type SeriesLine = crate::store::SeriesUse;

/// One stored hourly row with what was computed from it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReportRow {
    /// Start of the hour, RFC 3339 (UTC).
    pub hour: String,
    pub hour_s: i64,
    /// The local day the hour belongs to.
    pub day: String,
    pub host: String,
    pub site: String,
    pub zone: String,
    pub project: String,
    pub component: String,
    pub source: String,
    pub measured: bool,
    pub energy_uj: u64,
    pub pue: f64,
    /// `energy_uj × pue`, rounded once.
    pub facility_energy_uj: u64,
    pub intensity_g_per_kwh: f64,
    /// `coefficient:ID` or `import:ID`.
    pub intensity_from: String,
    pub location_co2e_ug: u64,
    /// The contractual factor, where the site has one.
    pub market_g_per_kwh: Option<f64>,
    /// Market-based emissions; the location-based figure where no contract is configured.
    pub market_co2e_ug: u64,
    pub embodied_co2e_ug: u64,
    pub pue_coef: i64,
    pub market_coef: Option<i64>,
    pub embodied_coef: Option<i64>,
}

impl ReportRow {
    fn from_stored(r: &HourlyRow, tz: &TimeZone) -> ReportRow {
        ReportRow {
            hour: instant(r.hour_s),
            hour_s: r.hour_s,
            day: local_day(tz, r.hour_s),
            host: r.host.clone(),
            site: r.site.clone(),
            zone: r.zone.clone(),
            project: r.project.clone(),
            component: r.component.clone(),
            source: r.source.clone(),
            measured: r.source != "estimate",
            energy_uj: r.energy_uj,
            pue: r.pue,
            facility_energy_uj: (r.energy_uj as f64 * r.pue).round() as u64,
            intensity_g_per_kwh: r.intensity_g_per_kwh,
            intensity_from: match (r.intensity_import, r.intensity_coef) {
                (Some(i), _) => format!("import:{i}"),
                (None, Some(c)) => format!("coefficient:{c}"),
                (None, None) => String::new(),
            },
            location_co2e_ug: r.location_co2e_ug,
            market_g_per_kwh: r.market_g_per_kwh,
            market_co2e_ug: r.market_co2e_ug.unwrap_or(r.location_co2e_ug),
            embodied_co2e_ug: r.embodied_co2e_ug,
            pue_coef: r.pue_coef,
            market_coef: r.market_coef,
            embodied_coef: r.embodied_coef,
        }
    }

    /// The row's contribution to every total.
    pub fn sums(&self) -> Sums {
        Sums {
            energy_uj: self.energy_uj,
            facility_energy_uj: self.facility_energy_uj,
            measured_energy_uj: if self.measured { self.energy_uj } else { 0 },
            estimated_energy_uj: if self.measured { 0 } else { self.energy_uj },
            location_co2e_ug: self.location_co2e_ug,
            market_co2e_ug: self.market_co2e_ug,
            embodied_co2e_ug: self.embodied_co2e_ug,
        }
    }
}

fn instant(s: i64) -> String {
    jiff::Timestamp::from_second(s)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// The organisation's time zone.
pub fn time_zone(config: &CollectorConfig) -> Result<TimeZone, ReportError> {
    TimeZone::get(&config.organisation.timezone)
        .map_err(|_| ReportError::TimeZone(config.organisation.timezone.clone()))
}

/// Parses `YYYY-MM` into a month of `tz`, refusing a month that has not begun at `now_s`.
pub fn parse_report_month(tz: &TimeZone, text: &str, now_s: i64) -> Result<Month, ReportError> {
    let m = parse_month(text)
        .and_then(|(y, mo)| month(tz, y, mo))
        .map_err(ReportError::BadMonth)?;
    if m.from_s > now_s {
        let timezone = tz.iana_name().unwrap_or("the organisation's time zone");
        return Err(ReportError::Future {
            month: m.label(),
            today: local_day(tz, now_s),
            timezone: timezone.to_string(),
        });
    }
    Ok(m)
}

/// Rows per page of the streamed CSV.
const CSV_PAGE: u32 = 5_000;

/// The CSV of the month of `data` (from [`build_summary`]), page by page from the store:
/// memory holds one page of rows, whatever the month's size. Each item is a piece of the
/// file; the first carries the header.
pub fn csv_stream(
    store: std::sync::Arc<dyn Store>,
    data: ReportData,
    tz: TimeZone,
    lang: Lang,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, ReportError>> + Send {
    csv_stream_paged(store, data, tz, lang, CSV_PAGE)
}

/// [`csv_stream`] with pages of `page` rows.
pub fn csv_stream_paged(
    store: std::sync::Arc<dyn Store>,
    data: ReportData,
    tz: TimeZone,
    lang: Lang,
    page: u32,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, ReportError>> + Send {
    let page = page.max(1);
    let from_s = parse_instant(&data.from);
    let to_s = parse_instant(&data.to);
    struct State {
        store: std::sync::Arc<dyn Store>,
        data: ReportData,
        tz: TimeZone,
        after: Option<crate::store::RowKey>,
        first: bool,
        done: bool,
    }
    let state = State {
        store,
        data,
        tz,
        after: None,
        first: true,
        done: false,
    };
    futures_util::stream::unfold(state, move |mut st| async move {
        if st.done {
            return None;
        }
        let rows = match st
            .store
            .hourly_rows_after(from_s, to_s, st.after.as_ref(), page)
            .await
        {
            Ok(p) => p,
            Err(e) => {
                st.done = true;
                return Some((Err(ReportError::Store(e)), st));
            }
        };
        st.done = rows.len() < page as usize;
        st.after = rows.last().map(HourlyRow::key);
        st.data.rows = rows
            .iter()
            .map(|r| ReportRow::from_stored(r, &st.tz))
            .collect();
        let text = csv::render(&st.data, lang);
        st.data.rows = Vec::new();
        let piece = text.map(|t| {
            if st.first {
                t.into_bytes()
            } else {
                // The header is written once, with the first page.
                t.split_once('\n')
                    .map(|(_, rest)| rest.as_bytes().to_vec())
                    .unwrap_or_default()
            }
        });
        st.first = false;
        Some((piece, st))
    })
}

/// Writes the CSV of `data`'s month to `out`, page by page (see [`csv_stream`]).
pub async fn write_csv(
    store: std::sync::Arc<dyn Store>,
    data: ReportData,
    tz: TimeZone,
    lang: Lang,
    out: &mut impl std::io::Write,
) -> Result<(), ReportError> {
    use futures_util::StreamExt;
    let stream = csv_stream(store, data, tz, lang);
    futures_util::pin_mut!(stream);
    while let Some(piece) = stream.next().await {
        out.write_all(&piece?)
            .map_err(|e| ReportError::Render(format!("cannot write the CSV: {e}")))?;
    }
    Ok(())
}

fn parse_instant(text: &str) -> i64 {
    text.parse::<jiff::Timestamp>()
        .map(|t| t.as_second())
        .unwrap_or_default()
}

/// The report as JSON (aggregate lines, not hourly rows: those are in the CSV).
pub fn to_json(data: &ReportData) -> Result<String, ReportError> {
    serde_json::to_string_pretty(data).map_err(|e| ReportError::Render(e.to_string()))
}

/// The formats a report is rendered in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Html,
    Pdf,
    Csv,
    Json,
    Md,
    /// BoAmps documents, one per use (a directory: [`boamps::documents`]).
    Boamps,
    /// The open-data CSV of the month per use ([`boamps::open_data_csv`]).
    OpenData,
}

impl Format {
    pub fn parse(text: &str) -> Result<Format, String> {
        match text {
            "html" => Ok(Format::Html),
            "pdf" => Ok(Format::Pdf),
            "csv" => Ok(Format::Csv),
            "json" => Ok(Format::Json),
            "md" => Ok(Format::Md),
            "boamps" => Ok(Format::Boamps),
            "opendata" => Ok(Format::OpenData),
            other => Err(format!(
                "{other:?} is not a report format: html, pdf, csv, json, md, boamps or opendata"
            )),
        }
    }
    pub fn extension(self) -> &'static str {
        match self {
            Format::Html => "html",
            Format::Pdf => "pdf",
            Format::Csv => "csv",
            Format::Json => "json",
            Format::Md => "md",
            Format::Boamps => "boamps",
            Format::OpenData => "opendata",
        }
    }
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Html => "text/html; charset=utf-8",
            Format::Pdf => "application/pdf",
            Format::Csv => "text/csv; charset=utf-8",
            Format::Json => "application/json",
            Format::Md => "text/markdown; charset=utf-8",
            Format::Boamps => "application/json",
            Format::OpenData => "text/csv; charset=utf-8",
        }
    }
}

/// Renders `data` in every format but PDF (which needs a browser: [`pdf::print`]).
pub fn render_text(data: &ReportData, format: Format, lang: Lang) -> Result<String, ReportError> {
    match format {
        Format::Json => to_json(data),
        Format::Csv => csv::render(data, lang),
        Format::Md => Ok(document::markdown(data, lang)),
        Format::Html | Format::Pdf => Ok(document::html(data, lang)),
        Format::OpenData => boamps::open_data_csv(data),
        Format::Boamps => Err(ReportError::Render(
            "BoAmps is one file per use: `empreinte report --format boamps --month YYYY-MM -o DIR`"
                .into(),
        )),
    }
}
