//! The report's sections after its first page: one function per section, each adding its
//! blocks to the document ([`super::document::SECTIONS`] lists them in order).

use super::charts;
use super::document::{Block, Ctx};
use super::i18n::{self, Lang, NNBSP, Texts, change, kg, kwh, number, percent};
use super::{Figures, Line};
use crate::objectives::{BudgetKind, ObjectiveStatus};

/// `" :"` in French (with a narrow no-break space), `":"` in English.
pub fn colon(lang: Lang) -> &'static str {
    match lang {
        Lang::Fr => "\u{202F}:",
        Lang::En => ":",
    }
}

/// Operational (location-based) plus embodied emissions, µg.
pub fn emissions(l: &Figures) -> u64 {
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
        .map(|o| {
            format!(
                "{}{} {}",
                kind_name(t, o.kind),
                colon(lang),
                t.verdict(o.verdict)
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn breakdown(cx: &Ctx, key: &str, lines: &[Line]) -> Block {
    let (lang, t) = (cx.lang, cx.t);
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
                    t.key_name(&l.key),
                    kwh(lang, l.figures.exact.energy_uj),
                    kwh(lang, l.figures.exact.facility_energy_uj),
                    kg(lang, emissions(&l.figures)),
                    percent(lang, l.share),
                ]
            })
            .collect(),
    )
}

/// How many hosts a report for people lists one by one (they are sorted by energy, most
/// first); the rest is one line that adds them up. A report of 1,000 hosts would spend
/// some 25 printed pages on them, and a reader looks at the largest: the full list is in
/// the CSV export and the JSON report.
pub const HOSTS_SHOWN: usize = 50;

/// [`breakdown`] of the first `cap` lines, then one line adding up the rest (exact sums
/// of the integer figures, so the table still adds up to the month).
fn breakdown_capped(cx: &Ctx, key: &str, lines: &[Line], cap: usize, others: &str) -> Block {
    let mut table = breakdown(cx, key, &lines[..lines.len().min(cap)]);
    let rest = lines.get(cap..).unwrap_or_default();
    if let (Block::Table(_, rows), false) = (&mut table, rest.is_empty()) {
        let mut sums = crate::store::Sums::default();
        let mut share = 0.0;
        for l in rest {
            sums.add(&l.figures.exact);
            share += l.share;
        }
        let line = Line {
            key: others.replace("{n}", &rest.len().to_string()),
            share,
            figures: Figures::from(&sums),
        };
        if let Block::Table(_, mut last) = breakdown(cx, key, std::slice::from_ref(&line)) {
            rows.append(&mut last);
        }
    }
    table
}

/// Perimeter and exclusions.
pub fn perimeter(cx: &Ctx, b: &mut Vec<Block>) {
    let (lang, t, data) = (cx.lang, cx.t, cx.data);
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
            if p.hosts.len() > HOSTS_SHOWN {
                format!(
                    "{} ({}, … {})",
                    p.hosts.len(),
                    p.hosts[..HOSTS_SHOWN].join(", "),
                    t.hosts_full_list
                )
            } else {
                format!("{} ({})", p.hosts.len(), or_none(p.hosts.clone()))
            },
        ),
        (
            t.gpus.into(),
            or_none(
                p.gpus
                    .iter()
                    .map(|g| format!("{} × {}", g.count, t.key_name(&g.model)))
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
            colon(lang),
            p.silent_agents.join(", ")
        ));
    }
    b.push(Block::List(ex));
}

/// The totals with their uncertainties, and what location- and market-based mean.
pub fn totals(cx: &Ctx, b: &mut Vec<Block>) {
    let (lang, t, data) = (cx.lang, cx.t, cx.data);
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
    b.push(Block::Para(t.uncertainty_note.into()));
    b.push(Block::Para(t.location_market_note.into()));
    if data.market_sites.is_empty() {
        b.push(Block::Para(t.market_none.into()));
    } else {
        b.push(Block::Para(format!(
            "{}{} {}.",
            t.market_some,
            colon(lang),
            data.market_sites.join(", ")
        )));
    }
}

/// The projects' table and the daily and share charts.
pub fn projects(cx: &Ctx, b: &mut Vec<Block>) {
    let (lang, t, data) = (cx.lang, cx.t, cx.data);
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
                    t.key_name(&p.project),
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
    if data.projects.iter().any(|p| p.project == "idle") {
        b.push(Block::Para(t.idle_note.into()));
    }
    if cx.charts && data.has_data {
        b.push(Block::Chart(
            t.chart_days.into(),
            charts::days_stacked(data, lang),
        ));
        b.push(Block::Chart(
            t.chart_share.into(),
            charts::shares(data, lang),
        ));
    }
}

/// Every objective's budget, use, projection and verdict.
pub fn objectives(cx: &Ctx, b: &mut Vec<Block>) {
    let (lang, t, data) = (cx.lang, cx.t, cx.data);
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
                            t.key_name(&o.project)
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
        let mut notes: Vec<String> = all
            .iter()
            .filter_map(|o| {
                let day = o.projected_from.as_ref()?;
                let who = if o.project == "*" {
                    t.whole_organisation.to_string()
                } else {
                    t.key_name(&o.project)
                };
                Some(format!(
                    "{who} ({}){} {} {day}.",
                    kind_name(t, o.kind),
                    colon(lang),
                    t.projected_from
                ))
            })
            .collect();
        notes.dedup();
        if all
            .iter()
            .any(|o| o.verdict == crate::objectives::Verdict::Baseline)
        {
            notes.push(t.baseline_note.into());
        }
        if !notes.is_empty() {
            b.push(Block::List(notes));
        }
        if cx.charts {
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
        .map(|p| t.key_name(&p.project))
        .collect();
    if !without.is_empty() && !all.is_empty() {
        b.push(Block::Para(format!(
            "{}{} {}.",
            capitalise(t.no_objective),
            colon(lang),
            without.join(", ")
        )));
    }
}

/// Sites, hosts and GPU models.
pub fn breakdowns(cx: &Ctx, b: &mut Vec<Block>) {
    let (t, data) = (cx.t, cx.data);
    b.push(Block::Heading(t.by_site.into()));
    b.push(breakdown(cx, t.site, &data.sites));
    b.push(Block::Heading(t.by_host.into()));
    if data.hosts.len() > HOSTS_SHOWN {
        b.push(Block::Para(
            t.hosts_capped
                .replace("{shown}", &HOSTS_SHOWN.to_string())
                .replace("{all}", &data.hosts.len().to_string()),
        ));
    }
    b.push(breakdown_capped(
        cx,
        t.host,
        &data.hosts,
        HOSTS_SHOWN,
        t.others_hosts,
    ));
    b.push(Block::Heading(t.by_gpu_model.into()));
    if data.gpu_models.is_empty() {
        b.push(Block::Para(t.no_gpu.into()));
    } else {
        b.push(breakdown(cx, t.gpu_model, &data.gpu_models));
    }
}

/// The last twelve months: months before the first data say "no data", not 0.
pub fn trend(cx: &Ctx, b: &mut Vec<Block>) {
    let (lang, t, data) = (cx.lang, cx.t, cx.data);
    b.push(Block::Heading(t.trend.into()));
    let first = data.trend.iter().position(|m| m.has_data);
    b.push(Block::Table(
        vec![t.month.into(), t.energy.into(), t.emissions.into()],
        data.trend
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let before = first.is_none_or(|f| i < f);
                vec![
                    capitalise(&i18n::month_name(lang, &m.month)),
                    if before {
                        t.no_data_short.into()
                    } else {
                        kwh(lang, m.figures.exact.energy_uj)
                    },
                    if before {
                        t.no_data_short.into()
                    } else {
                        kg(lang, emissions(&m.figures))
                    },
                ]
            })
            .collect(),
    ));
    if cx.charts {
        b.push(Block::Chart(
            t.chart_trend.into(),
            charts::trend(data, lang),
        ));
    }
}

/// Measured and estimated energy, per project and per source.
pub fn measured(cx: &Ctx, b: &mut Vec<Block>) {
    let (lang, t, data) = (cx.lang, cx.t, cx.data);
    b.push(Block::Heading(t.measured_title.into()));
    b.push(Block::Para(t.measured_note.into()));
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
                    t.key_name(&p.project),
                    kwh(lang, p.figures.exact.measured_energy_uj),
                    kwh(lang, p.figures.exact.estimated_energy_uj),
                    percent(lang, p.figures.measured_share),
                ]
            })
            .collect(),
    ));
    b.push(breakdown(cx, t.source, &data.sources));
}

/// The coefficients used, with their sources, and the imported series.
pub fn coefficients(cx: &Ctx, b: &mut Vec<Block>) {
    let (lang, t, data) = (cx.lang, cx.t, cx.data);
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
                    let source = t.source_name(&c.source);
                    let source = if c.detail.is_empty() {
                        source
                    } else {
                        format!("{source} ({})", t.source_detail(&c.detail))
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
                        colon(lang),
                        s.hours,
                        t.series_line,
                        number(lang, s.min_g_per_kwh, 1),
                        i18n::with_unit(lang, number(lang, s.max_g_per_kwh, 1), "gCO2e/kWh"),
                    )
                })
                .collect(),
        ));
    }
}

/// How the figures are made, in plain words.
pub fn method(cx: &Ctx, b: &mut Vec<Block>) {
    let t = cx.t;
    b.push(Block::Heading(t.methodology.into()));
    for (title, text) in t.method {
        b.push(Block::Subheading((*title).into()));
        b.push(Block::Para((*text).into()));
    }
    b.push(Block::Para(t.data_note.into()));
}

pub fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// ` ± 4 %`: a total's relative standard uncertainty, rounded for reading.
pub fn pm(lang: Lang, u: &crate::uncertainty::Uncertain) -> String {
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
