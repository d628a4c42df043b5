//! The report as a document: one list of [`Block`]s, written once from the data, then
//! rendered as Markdown or as a self-contained HTML page (inline CSS and SVG charts,
//! A4 print rules) so that both say exactly the same thing.

use std::fmt::Write as _;

use jiff::tz::TimeZone;

use super::charts;
use super::i18n::{self, Lang, NNBSP, Texts, change, kg, kwh, month_name, number, percent};
use super::{Line, ReportData};
use crate::objectives::{BudgetKind, ObjectiveStatus};

/// A piece of the document.
#[derive(Clone, Debug, PartialEq)]
pub enum Block {
    Title(String),
    Heading(String),
    Subheading(String),
    Para(String),
    /// A sentence that must not be missed (no data, month not over).
    Notice(String),
    List(Vec<String>),
    /// `(label, value)` lines.
    Facts(Vec<(String, String)>),
    /// Header, rows; columns after the first are right-aligned.
    Table(Vec<String>, Vec<Vec<String>>),
    /// An SVG chart (HTML only) with its caption.
    Chart(String, String),
}

fn local_time(tz: &TimeZone, s: i64) -> String {
    match jiff::Timestamp::from_second(s) {
        Ok(t) => t
            .to_zoned(tz.clone())
            .strftime("%Y-%m-%d %H:%M")
            .to_string(),
        Err(_) => String::new(),
    }
}

fn emissions(l: &super::Figures) -> u64 {
    l.exact.location_co2e_ug + l.exact.embodied_co2e_ug
}

fn kind_name(t: &Texts, k: BudgetKind) -> &'static str {
    match k {
        BudgetKind::Energy => t.kind_energy,
        BudgetKind::Co2e => t.kind_co2e,
    }
}

fn budget_value(lang: Lang, o: &ObjectiveStatus, v: f64) -> String {
    i18n::with_unit(lang, number(lang, v, 2), o.unit)
}

fn objective_summary(lang: Lang, t: &Texts, objectives: &[ObjectiveStatus]) -> String {
    if objectives.is_empty() {
        return t.no_objective.to_string();
    }
    objectives
        .iter()
        .map(|o| format!("{} : {}", kind_name(t, o.kind), t.verdict(o.verdict)))
        .map(|s| match lang {
            Lang::Fr => s.replace(" : ", &format!("{NNBSP}: ")),
            Lang::En => s.replace(" : ", ": "),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn breakdown(lang: Lang, t: &Texts, key: &str, lines: &[Line]) -> Block {
    Block::Table(
        vec![
            key.to_string(),
            t.energy.into(),
            t.energy_facility.into(),
            t.emissions.into(),
            t.share.into(),
        ],
        lines
            .iter()
            .map(|l| {
                vec![
                    l.key.clone(),
                    kwh(lang, l.figures.exact.energy_uj),
                    kwh(lang, l.figures.exact.facility_energy_uj),
                    kg(lang, emissions(&l.figures)),
                    percent(lang, l.share),
                ]
            })
            .collect(),
    )
}

/// The document of `data` in `lang`; charts are included when `charts` is true.
pub fn blocks(data: &ReportData, lang: Lang, with_charts: bool) -> Vec<Block> {
    let t = lang.texts();
    let tz = TimeZone::get(&data.timezone).unwrap_or(TimeZone::UTC);
    let mut b = Vec::new();
    b.push(Block::Title(format!(
        "{} — {}",
        t.title,
        month_name(lang, &data.month)
    )));
    let from = jiff::Timestamp::from_second(parse_s(&data.from))
        .map(|ts| ts.to_zoned(tz.clone()).date().to_string())
        .unwrap_or_default();
    let last_day = jiff::Timestamp::from_second(parse_s(&data.to) - 1)
        .map(|ts| ts.to_zoned(tz.clone()).date().to_string())
        .unwrap_or_default();
    b.push(Block::Facts(vec![
        (t.organisation.into(), data.organisation.clone()),
        (
            t.period.into(),
            format!(
                "{} ({from} → {last_day}, {} {})",
                month_name(lang, &data.month),
                t.time_zone,
                data.timezone
            ),
        ),
        (
            t.generated.into(),
            format!("{} ({})", local_time(&tz, data.generated_s), data.timezone),
        ),
    ]));
    if !data.complete {
        b.push(Block::Notice(t.month_to_date.into()));
    }
    if !data.has_data {
        b.push(Block::Notice(t.no_data.into()));
    }

    // Perimeter and exclusions.
    b.push(Block::Heading(t.perimeter.into()));
    let or_none = |v: Vec<String>| {
        if v.is_empty() {
            t.none.to_string()
        } else {
            v.join(", ")
        }
    };
    let p = &data.perimeter;
    b.push(Block::Facts(vec![
        (
            t.sites.into(),
            format!("{} ({})", p.sites.len(), or_none(p.sites.clone())),
        ),
        (
            t.hosts.into(),
            format!("{} ({})", p.hosts.len(), or_none(p.hosts.clone())),
        ),
        (
            t.gpus.into(),
            or_none(
                p.gpus
                    .iter()
                    .map(|g| format!("{} × {}", g.count, g.model))
                    .collect(),
            ),
        ),
    ]));
    b.push(Block::Subheading(t.exclusions.into()));
    let mut ex: Vec<String> = t.exclusion_list.iter().map(|s| s.to_string()).collect();
    if !p.silent_agents.is_empty() {
        ex.push(format!(
            "{}{} {}.",
            t.silent_agents,
            if lang == Lang::Fr { "\u{202F}:" } else { ":" },
            p.silent_agents.join(", ")
        ));
    }
    b.push(Block::List(ex));

    // Totals.
    let tot = &data.totals.exact;
    let u = &data.uncertainty;
    // Location-based and embodied emissions have no error source in common: quadrature.
    let total_u = crate::uncertainty::Uncertain {
        value: u.co2e_kg_location.value + u.co2e_kg_embodied.value,
        absolute: u
            .co2e_kg_location
            .absolute
            .hypot(u.co2e_kg_embodied.absolute),
    };
    b.push(Block::Heading(t.totals.into()));
    b.push(Block::Facts(vec![
        (
            t.energy_it.into(),
            kwh(lang, tot.energy_uj) + &pm(lang, &u.energy_kwh),
        ),
        (
            t.energy_facility.into(),
            kwh(lang, tot.facility_energy_uj) + &pm(lang, &u.facility_energy_kwh),
        ),
        (
            t.measured_share.into(),
            percent(lang, data.totals.measured_share),
        ),
        (
            t.co2e_location.into(),
            kg(lang, tot.location_co2e_ug) + &pm(lang, &u.co2e_kg_location),
        ),
        (
            t.co2e_market.into(),
            kg(lang, tot.market_co2e_ug) + &pm(lang, &u.co2e_kg_market),
        ),
        (
            t.co2e_embodied.into(),
            kg(lang, tot.embodied_co2e_ug) + &pm(lang, &u.co2e_kg_embodied),
        ),
        (
            t.co2e_total.into(),
            kg(lang, tot.location_co2e_ug + tot.embodied_co2e_ug) + &pm(lang, &total_u),
        ),
    ]));
    b.push(Block::Para(match lang {
        Lang::Fr => "± : incertitude-type propagée (un écart-type) : chaque source d’erreur (mesure d’un serveur par une source, PUE d’un site, facteur d’émission d’une zone, données de fabrication) compte pour son incertitude relative documentée, corrélée avec elle-même, et les sources indépendantes s’ajoutent quadratiquement (voir la méthodologie).".into(),
        Lang::En => "±: propagated standard uncertainty (one standard deviation): each error source (a host measured by one source, a site's PUE, a zone's grid factor, manufacturing figures) counts with its documented relative uncertainty, correlated with itself, and independent sources add in quadrature (see the methodology).".into(),
    }));
    if data.market_sites.is_empty() {
        b.push(Block::Para(t.market_none.into()));
    } else {
        b.push(Block::Para(format!(
            "{}{} {}.",
            t.market_some,
            if lang == Lang::Fr { "\u{202F}:" } else { ":" },
            data.market_sites.join(", ")
        )));
    }

    // Projects.
    b.push(Block::Heading(t.by_project.into()));
    b.push(Block::Table(
        vec![
            t.project.into(),
            t.energy.into(),
            t.share.into(),
            t.emissions.into(),
            t.vs_previous.into(),
            t.objective.into(),
        ],
        data.projects
            .iter()
            .map(|p| {
                vec![
                    p.project.clone(),
                    kwh(lang, p.figures.exact.energy_uj),
                    percent(lang, p.share),
                    kg(lang, emissions(&p.figures)),
                    p.energy_change
                        .map(|c| change(lang, c))
                        .unwrap_or_else(|| t.new_project.into()),
                    objective_summary(lang, t, &p.objectives),
                ]
            })
            .collect(),
    ));
    if with_charts && data.has_data {
        b.push(Block::Chart(
            t.chart_days.into(),
            charts::days_stacked(data, lang),
        ));
        b.push(Block::Chart(
            t.chart_share.into(),
            charts::shares(data, lang),
        ));
    }

    // Objectives.
    b.push(Block::Heading(t.objectives.into()));
    let all: Vec<&ObjectiveStatus> = data
        .projects
        .iter()
        .flat_map(|p| p.objectives.iter())
        .chain(data.organisation_objectives.iter())
        .collect();
    if all.is_empty() {
        b.push(Block::Para(t.no_objectives.into()));
    } else {
        b.push(Block::Table(
            vec![
                t.project.into(),
                t.objective.into(),
                t.budget.into(),
                t.used.into(),
                t.projected.into(),
                t.status.into(),
            ],
            all.iter()
                .map(|o| {
                    vec![
                        if o.project == "*" {
                            t.whole_organisation.to_string()
                        } else {
                            o.project.clone()
                        },
                        kind_name(t, o.kind).to_string(),
                        o.budget
                            .map(|v| budget_value(lang, o, v))
                            .unwrap_or_else(|| "—".into()),
                        budget_value(lang, o, o.used),
                        budget_value(lang, o, o.projected),
                        t.verdict(o.verdict).to_string(),
                    ]
                })
                .collect(),
        ));
        if with_charts {
            b.push(Block::Chart(
                t.chart_objectives.into(),
                charts::objectives(data, lang),
            ));
        }
    }
    let without: Vec<String> = data
        .projects
        .iter()
        .filter(|p| p.objectives.is_empty())
        .map(|p| p.project.clone())
        .collect();
    if !without.is_empty() && !all.is_empty() {
        b.push(Block::Para(format!(
            "{}{} {}.",
            capitalise(t.no_objective),
            if lang == Lang::Fr { "\u{202F}:" } else { ":" },
            without.join(", ")
        )));
    }

    // Sites, hosts, GPU models.
    b.push(Block::Heading(t.by_site.into()));
    b.push(breakdown(lang, t, t.site, &data.sites));
    b.push(Block::Heading(t.by_host.into()));
    b.push(breakdown(lang, t, t.host, &data.hosts));
    b.push(Block::Heading(t.by_gpu_model.into()));
    if data.gpu_models.is_empty() {
        b.push(Block::Para(t.no_gpu.into()));
    } else {
        b.push(breakdown(lang, t, t.gpu_model, &data.gpu_models));
    }
    b.extend(super::inference::blocks(&data.inference, lang));

    // Trend.
    b.push(Block::Heading(t.trend.into()));
    b.push(Block::Table(
        vec![t.month.into(), t.energy.into(), t.emissions.into()],
        data.trend
            .iter()
            .map(|m| {
                vec![
                    m.month.clone(),
                    kwh(lang, m.figures.exact.energy_uj),
                    kg(lang, emissions(&m.figures)),
                ]
            })
            .collect(),
    ));
    if with_charts {
        b.push(Block::Chart(
            t.chart_trend.into(),
            charts::trend(data, lang),
        ));
    }

    // Measured and estimated.
    b.push(Block::Heading(t.measured_title.into()));
    b.push(Block::Table(
        vec![
            t.project.into(),
            t.measured.into(),
            t.estimated.into(),
            t.measured_share.into(),
        ],
        data.projects
            .iter()
            .map(|p| {
                vec![
                    p.project.clone(),
                    kwh(lang, p.figures.exact.measured_energy_uj),
                    kwh(lang, p.figures.exact.estimated_energy_uj),
                    percent(lang, p.figures.measured_share),
                ]
            })
            .collect(),
    ));
    b.push(breakdown(lang, t, t.source, &data.sources));

    // Coefficients.
    b.push(Block::Heading(t.coefficients.into()));
    if data.coefficients.is_empty() {
        b.push(Block::Para(t.no_coefficients.into()));
    } else {
        b.push(Block::Table(
            vec![
                "#".into(),
                t.kind.into(),
                t.subject.into(),
                t.value.into(),
                t.source.into(),
                t.year.into(),
                t.default_flag.into(),
            ],
            data.coefficients
                .iter()
                .map(|c| {
                    let source = if c.detail.is_empty() {
                        c.source.clone()
                    } else {
                        format!("{} ({})", c.source, c.detail)
                    };
                    vec![
                        c.id.to_string(),
                        t.coefficient_kind(&c.kind),
                        c.subject.clone(),
                        if c.unit.is_empty() {
                            number(lang, c.value, 3)
                        } else {
                            i18n::with_unit(lang, number(lang, c.value, 3), &c.unit)
                        },
                        source,
                        c.year.map(|y| y.to_string()).unwrap_or_else(|| "—".into()),
                        if c.is_default {
                            t.yes_default.into()
                        } else {
                            t.no_own.into()
                        },
                    ]
                })
                .collect(),
        ));
    }
    if !data.intensity_series.is_empty() {
        b.push(Block::Subheading(t.series.into()));
        b.push(Block::List(
            data.intensity_series
                .iter()
                .map(|s| {
                    format!(
                        "{} (import #{}){} {} {}, {} → {}",
                        s.zone,
                        s.import_id,
                        if lang == Lang::Fr { "\u{202F}:" } else { ":" },
                        s.hours,
                        t.series_line,
                        number(lang, s.min_g_per_kwh, 1),
                        i18n::with_unit(lang, number(lang, s.max_g_per_kwh, 1), "gCO2e/kWh"),
                    )
                })
                .collect(),
        ));
    }

    // Method.
    b.push(Block::Heading(t.methodology.into()));
    for (title, text) in t.method {
        b.push(Block::Subheading((*title).into()));
        b.push(Block::Para((*text).into()));
    }
    b.push(Block::Para(t.data_note.into()));
    b
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

fn parse_s(instant: &str) -> i64 {
    instant
        .parse::<jiff::Timestamp>()
        .map(|t| t.as_second())
        .unwrap_or_default()
}

/// Which columns hold figures (right-aligned): those whose every cell starts like one.
fn numeric_columns(head: &[String], rows: &[Vec<String>]) -> Vec<bool> {
    (0..head.len())
        .map(|i| {
            i > 0
                && !rows.is_empty()
                && rows.iter().all(|r| {
                    r.get(i)
                        .and_then(|c| c.chars().next())
                        .is_some_and(|c| c.is_ascii_digit() || "+−—".contains(c))
                })
        })
        .collect()
}

fn md_cell(s: &str) -> String {
    md_text(s).replace('|', "\\|").replace('\n', " ")
}

/// Text for Markdown that a renderer shows as text: no HTML (`<img onerror>`), no
/// entity tricks, no links (`[x](javascript:…)`).
pub fn md_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '[' => out.push_str("\\["),
            ']' => out.push_str("\\]"),
            c => out.push(c),
        }
    }
    out
}

/// The report as Markdown (no charts).
pub fn markdown(data: &ReportData, lang: Lang) -> String {
    let mut out = String::new();
    for block in blocks(data, lang, false) {
        match block {
            Block::Title(s) => {
                let _ = writeln!(out, "# {}\n", md_text(&s));
            }
            Block::Heading(s) => {
                let _ = writeln!(out, "## {}\n", md_text(&s));
            }
            Block::Subheading(s) => {
                let _ = writeln!(out, "### {}\n", md_text(&s));
            }
            Block::Para(s) => {
                let _ = writeln!(out, "{}\n", md_text(&s));
            }
            Block::Notice(s) => {
                let _ = writeln!(out, "> **{}**\n", md_text(&s));
            }
            Block::List(items) => {
                for i in items {
                    let _ = writeln!(out, "- {}", md_text(&i));
                }
                out.push('\n');
            }
            Block::Facts(facts) => {
                for (k, v) in facts {
                    let sep = if lang == Lang::Fr { "\u{202F}:" } else { ":" };
                    let _ = writeln!(out, "- **{}**{sep} {}", md_text(&k), md_text(&v));
                }
                out.push('\n');
            }
            Block::Table(head, rows) => {
                let _ = writeln!(
                    out,
                    "| {} |",
                    head.iter()
                        .map(|h| md_cell(h))
                        .collect::<Vec<_>>()
                        .join(" | ")
                );
                let _ = writeln!(
                    out,
                    "|{}|",
                    numeric_columns(&head, &rows)
                        .iter()
                        .map(|n| if *n { "---:" } else { "---" })
                        .collect::<Vec<_>>()
                        .join("|")
                );
                for r in rows {
                    let _ = writeln!(
                        out,
                        "| {} |",
                        r.iter().map(|c| md_cell(c)).collect::<Vec<_>>().join(" | ")
                    );
                }
                out.push('\n');
            }
            Block::Chart(..) => {}
        }
    }
    while out.ends_with("\n\n") {
        out.pop();
    }
    out
}

/// Escapes text for HTML.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The page's style: A4, print rules, nothing wider than the page.
pub const CSS: &str = r#"
@page { size: A4; margin: 15mm 14mm 16mm 14mm; }
* { box-sizing: border-box; }
html { font-family: "DejaVu Sans", "Liberation Sans", Arial, sans-serif; font-size: 10pt; color: #1d2327; }
body { margin: 0 auto; max-width: 182mm; padding: 0; line-height: 1.35; }
h1 { font-size: 17pt; margin: 0 0 8pt; color: #0b4f3c; }
h2 { font-size: 13pt; margin: 16pt 0 6pt; color: #0b4f3c; border-bottom: 1px solid #9cc5b4; break-after: avoid; }
h3 { font-size: 10.5pt; margin: 10pt 0 3pt; break-after: avoid; }
p, ul { margin: 0 0 6pt; }
.notice { border-left: 4px solid #c2410c; background: #fff4ec; padding: 5pt 8pt; font-weight: bold; }
dl.facts { display: grid; grid-template-columns: 62mm 1fr; gap: 2pt 8pt; margin: 0 0 6pt; }
dl.facts dt { font-weight: bold; }
dl.facts dd { margin: 0; overflow-wrap: anywhere; }
table { border-collapse: collapse; width: 100%; margin: 0 0 8pt; table-layout: auto; font-size: 8.5pt; }
th, td { border-bottom: 1px solid #d5dfdb; padding: 2pt 4pt; text-align: left; vertical-align: top; overflow-wrap: break-word; hyphens: auto; }
th.num, td.num { text-align: right; white-space: nowrap; }
th { background: #e8f2ee; }
tr { break-inside: avoid; }
figure { margin: 6pt 0 10pt; break-inside: avoid; }
figure svg { display: block; width: 100%; height: auto; max-width: 100%; }
figcaption { font-size: 8.5pt; color: #4b5563; margin-top: 2pt; }
.legend { font-size: 8pt; margin: 2pt 0 0; padding: 0; list-style: none; display: flex; flex-wrap: wrap; gap: 2pt 10pt; }
.legend span { display: inline-block; width: 8pt; height: 8pt; margin-right: 3pt; vertical-align: middle; }
@media print { body { max-width: none; } a { color: inherit; } }
"#;

/// The report as one self-contained HTML page.
pub fn html(data: &ReportData, lang: Lang) -> String {
    let t = lang.texts();
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"{}\">\n<head>\n<meta charset=\"utf-8\">\n<title>{} — {} — {}</title>\n<style>{CSS}</style>\n</head>\n<body>\n",
        lang.code(),
        escape(t.title),
        escape(&data.organisation),
        escape(&month_name(lang, &data.month))
    );
    for block in blocks(data, lang, true) {
        match block {
            Block::Title(s) => {
                let _ = writeln!(out, "<h1>{}</h1>", escape(&s));
            }
            Block::Heading(s) => {
                let _ = writeln!(out, "<h2>{}</h2>", escape(&s));
            }
            Block::Subheading(s) => {
                let _ = writeln!(out, "<h3>{}</h3>", escape(&s));
            }
            Block::Para(s) => {
                let _ = writeln!(out, "<p>{}</p>", escape(&s));
            }
            Block::Notice(s) => {
                let _ = writeln!(out, "<p class=\"notice\">{}</p>", escape(&s));
            }
            Block::List(items) => {
                out.push_str("<ul>\n");
                for i in items {
                    let _ = writeln!(out, "<li>{}</li>", escape(&i));
                }
                out.push_str("</ul>\n");
            }
            Block::Facts(facts) => {
                out.push_str("<dl class=\"facts\">\n");
                for (k, v) in facts {
                    let _ = writeln!(out, "<dt>{}</dt><dd>{}</dd>", escape(&k), escape(&v));
                }
                out.push_str("</dl>\n");
            }
            Block::Table(head, rows) => {
                let numeric = numeric_columns(&head, &rows);
                let class = |i: usize| {
                    if numeric.get(i).copied().unwrap_or(false) {
                        " class=\"num\""
                    } else {
                        ""
                    }
                };
                out.push_str("<table>\n<thead><tr>");
                for (i, h) in head.iter().enumerate() {
                    let _ = write!(out, "<th{}>{}</th>", class(i), escape(h));
                }
                out.push_str("</tr></thead>\n<tbody>\n");
                for r in rows {
                    out.push_str("<tr>");
                    for (i, c) in r.iter().enumerate() {
                        let _ = write!(out, "<td{}>{}</td>", class(i), escape(c));
                    }
                    out.push_str("</tr>\n");
                }
                out.push_str("</tbody>\n</table>\n");
            }
            Block::Chart(caption, svg) => {
                let _ = writeln!(
                    out,
                    "<figure class=\"chart\">{svg}<figcaption>{}</figcaption></figure>",
                    escape(&caption)
                );
            }
        }
    }
    out.push_str("</body>\n</html>\n");
    out
}

/// ` ± 4 %`: a total's relative standard uncertainty, rounded for reading.
fn pm(lang: Lang, u: &crate::uncertainty::Uncertain) -> String {
    if u.value <= 0.0 {
        return String::new();
    }
    let pct = u.relative_pct();
    let decimals = usize::from(pct < 1.0);
    match lang {
        Lang::Fr => format!(" ± {}{NNBSP}%", number(lang, pct, decimals)),
        Lang::En => format!(" ± {}%", number(lang, pct, decimals)),
    }
}
