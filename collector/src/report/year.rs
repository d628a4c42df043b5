//! The yearly statement (`empreinte report --year YYYY`): a calendar year of the
//! organisation's time zone, shaped for the Bilan GES (ADEME's method: electricity in
//! category 2.1, location- and market-based; amortised equipment in 4.2; upstream of
//! electricity where a factor is given) and for the REEN law's responsible-digital
//! strategy (energy and emissions of the AI uses, their trend, the objectives and how
//! they were met), with the uncertainties, and a paragraph to paste into the
//! sustainable-development report.
//!
//! Architecture invariant: the year's totals are read from the store over the whole year
//! (its monthly rollups), independently of the monthly reports, and equal the sum of the
//! twelve monthly reports to the microjoule and microgram (the test checks it across a
//! DST change).

use serde::Serialize;

use jiff::tz::TimeZone;

use super::document::{Block, Page};
use super::i18n::{Lang, month_name, percent};
use super::{ReportData, ReportError, build_summary, readable};
use crate::api::Figures;
use crate::config::CollectorConfig;
use crate::objectives::Verdict;
use crate::period::month;
use crate::store::{Store, Sums};

/// One BEGES category line, in tCO2e.
#[derive(Clone, Debug, Serialize)]
pub struct BegesLine {
    /// `2.1`, `4.2`, …
    pub category: &'static str,
    pub label: &'static str,
    /// Exact, µg.
    pub co2e_ug: Option<u64>,
    /// Propagated standard uncertainty, kg.
    pub uncertainty_kg: Option<f64>,
    pub note: &'static str,
}

/// How the year's objectives fared, month by month.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ObjectiveTally {
    pub judged: u32,
    pub met: u32,
    pub exceeded: u32,
    pub baseline: u32,
}

/// The statement of one calendar year.
#[derive(Clone, Debug, Serialize)]
pub struct YearData {
    pub schema: &'static str,
    pub organisation: String,
    pub timezone: String,
    pub year: i16,
    pub generated_at: String,
    /// False while the year is not over.
    pub complete: bool,
    /// Read from the store over the whole year.
    pub totals: Figures,
    pub uncertainty: crate::uncertainty::FigureUncertainty,
    pub beges: Vec<BegesLine>,
    /// The year's months that have begun, each its monthly report's totals.
    pub months: Vec<super::MonthLine>,
    pub objectives: ObjectiveTally,
    /// The previous year's totals, for the trend (REEN).
    pub previous_year: Option<Figures>,
    /// The year's cost of electricity, µEUR (stored costs, read over the year).
    pub cost_ueur: u64,
    /// Each month's cost as its monthly report gives it, in the order of `months`.
    pub month_costs_ueur: Vec<u64>,
    /// The electricity emission factors the year's figures were made with.
    pub factors: Vec<super::year_factors::FactorUsed>,
    /// The publisher of grid factors the organisation chose (`[organisation]
    /// grid_factor`), e.g. `ademe` for ADEME's Base Empreinte.
    pub grid_choice: Option<String>,
    /// The upstream factor of electricity and its source, where configured.
    pub upstream: Option<(f64, String)>,
}

async fn year_sums(
    store: &dyn Store,
    config: &CollectorConfig,
    tz: &TimeZone,
    year: i16,
) -> Result<(Sums, crate::uncertainty::FigureUncertainty), ReportError> {
    let first = month(tz, year, 1).map_err(ReportError::BadMonth)?;
    let last = month(tz, year, 12).map_err(ReportError::BadMonth)?;
    let lines = store.lines(first.from_s, last.to_s).await?;
    let mut total = Sums::default();
    for l in &lines {
        total.add(&l.sums);
    }
    Ok((total, crate::uncertainty::of_lines(&lines, config)))
}

/// Builds the statement of `year` as of `now_s`: the store's year, and each begun
/// month's report.
pub async fn build_year(
    store: &dyn Store,
    config: &CollectorConfig,
    tz: &TimeZone,
    year: i16,
    now_s: i64,
) -> Result<YearData, ReportError> {
    let first = month(tz, year, 1).map_err(ReportError::BadMonth)?;
    if first.from_s > now_s {
        return Err(ReportError::BadMonth(format!(
            "{year} has not begun: there is nothing to report yet"
        )));
    }
    let last = month(tz, year, 12).map_err(ReportError::BadMonth)?;
    let (total, uncertainty) = year_sums(store, config, tz, year).await?;
    let mut months = Vec::new();
    let mut month_costs_ueur = Vec::new();
    let mut objectives = ObjectiveTally::default();
    for mo in 1..=12 {
        let m = month(tz, year, mo).map_err(ReportError::BadMonth)?;
        if m.from_s > now_s {
            break;
        }
        let data: ReportData = build_summary(store, config, tz, &m, now_s).await?;
        let all = data
            .projects
            .iter()
            .flat_map(|p| p.objectives.iter())
            .chain(data.organisation_objectives.iter());
        for o in all {
            match o.verdict {
                Verdict::Met => objectives.met += 1,
                Verdict::Exceeded => objectives.exceeded += 1,
                Verdict::Baseline => objectives.baseline += 1,
                _ => {}
            }
            if matches!(o.verdict, Verdict::Met | Verdict::Exceeded) {
                objectives.judged += 1;
            }
        }
        month_costs_ueur.push(data.register.as_ref().map_or(0, |r| r.cost_ueur));
        months.push(super::MonthLine {
            month: data.month.clone(),
            has_data: data.has_data,
            figures: data.totals.clone(),
        });
    }
    let previous_year = match year_sums(store, config, tz, year - 1).await {
        Ok((s, _)) if s != Sums::default() => Some(Figures::from(&s)),
        _ => None,
    };
    let beges = beges(config, &total, &uncertainty);
    Ok(YearData {
        schema: "empreinte-year/1",
        organisation: config.organisation.name.clone(),
        timezone: config.organisation.timezone.clone(),
        year,
        generated_at: jiff::Timestamp::from_second(now_s)
            .map(|t| t.to_string())
            .unwrap_or_default(),
        complete: now_s >= last.to_s,
        totals: Figures::from(&total),
        uncertainty,
        beges,
        months,
        objectives,
        previous_year,
        cost_ueur: store
            .costs(first.from_s, last.to_s)
            .await
            .unwrap_or_default()
            .iter()
            .map(|c| c.cost_ueur)
            .sum(),
        month_costs_ueur,
        factors: super::year_factors::used(store, first.from_s, last.to_s).await?,
        grid_choice: config.organisation.grid_factor.clone(),
        upstream: config.organisation.upstream_g_per_kwh.map(|g| {
            (
                g,
                config
                    .organisation
                    .upstream_source
                    .clone()
                    .unwrap_or_default(),
            )
        }),
    })
}

/// The BEGES category lines of a year's totals.
fn beges(
    config: &CollectorConfig,
    total: &Sums,
    uncertainty: &crate::uncertainty::FigureUncertainty,
) -> Vec<BegesLine> {
    vec![
        BegesLine {
            category: "2.1",
            label: "electricity, location-based",
            co2e_ug: Some(total.location_co2e_ug),
            uncertainty_kg: Some(uncertainty.co2e_kg_location.absolute),
            note: "indirect emissions from electricity consumption (grid average)",
        },
        BegesLine {
            category: "2.1",
            label: "electricity, market-based",
            co2e_ug: Some(total.market_co2e_ug),
            uncertainty_kg: Some(uncertainty.co2e_kg_market.absolute),
            note: "the electricity contract's factor where configured, else location-based",
        },
        BegesLine {
            category: "4.2",
            label: "amortised equipment (servers, GPUs)",
            co2e_ug: Some(total.embodied_co2e_ug),
            uncertainty_kg: Some(uncertainty.co2e_kg_embodied.absolute),
            note: "manufacturing amortised over the lifetime, in proportion to use",
        },
        match config.organisation.upstream_g_per_kwh {
            Some(g) => BegesLine {
                category: "2.1 (upstream)",
                label: "upstream of electricity, configured factor",
                co2e_ug: Some(crate::footprint::operational_ug(
                    total.facility_energy_uj,
                    1.0,
                    g,
                )),
                uncertainty_kg: None,
                note: "facility energy × organisation.upstream_g_per_kwh (see the factors used)",
            },
            None => BegesLine {
                category: "2.1 (upstream)",
                label: "upstream of electricity",
                co2e_ug: None,
                uncertainty_kg: None,
                note: "not computed: no upstream factor is configured",
            },
        },
    ]
}

fn t_co2e(lang: Lang, ug: u64) -> String {
    readable::mass(lang, ug)
}

/// The statement as blocks (the monthly report's renderers draw them).
pub fn blocks(y: &YearData, lang: Lang) -> Vec<Block> {
    let fr = lang == Lang::Fr;
    let mut b = vec![Block::Title(if fr {
        format!("Bilan annuel de l'IA — {}", y.year)
    } else {
        format!("Yearly AI statement — {}", y.year)
    })];
    b.push(Block::Facts(vec![
        ("Organisation".into(), y.organisation.clone()),
        (
            if fr { "Période" } else { "Period" }.into(),
            format!("{} ({})", y.year, y.timezone),
        ),
    ]));
    if !y.complete {
        b.push(Block::Notice(if fr {
            "L'année n'est pas terminée : les chiffres vont jusqu'à la date de génération.".into()
        } else {
            "The year is not over: the figures run to the date of generation.".into()
        }));
    }
    b.push(Block::Heading(if fr {
        "Texte pour le rapport de développement durable".into()
    } else {
        "Text for the sustainable-development report".into()
    }));
    b.push(Block::Para(paste_paragraph(y, lang)));
    b.push(Block::Heading(if fr {
        "Bilan GES (méthode ADEME)".into()
    } else {
        "GHG inventory (ADEME method)".into()
    }));
    b.push(Block::Table(
        vec![
            if fr { "Catégorie" } else { "Category" }.into(),
            if fr { "Poste" } else { "Item" }.into(),
            if fr { "Émissions" } else { "Emissions" }.into(),
            if fr {
                "Incertitude (1 σ)"
            } else {
                "Uncertainty (1 σ)"
            }
            .into(),
        ],
        y.beges
            .iter()
            .map(|l| {
                vec![
                    l.category.to_string(),
                    beges_label(l, fr),
                    l.co2e_ug.map_or("—".into(), |ug| t_co2e(lang, ug)),
                    l.uncertainty_kg
                        .map_or("—".into(), |kg| t_co2e(lang, (kg * 1e9) as u64)),
                ]
            })
            .collect(),
    ));
    super::year_factors::section(y, lang, &mut b);
    b.push(Block::Heading(if fr {
        "Indicateurs REEN : énergie et émissions mois par mois".into()
    } else {
        "REEN indicators: energy and emissions month by month".into()
    }));
    let with_cost = y.cost_ueur > 0;
    let mut head = vec![
        if fr { "Mois" } else { "Month" }.into(),
        if fr {
            "Énergie (avec PUE)"
        } else {
            "Energy (with PUE)"
        }
        .into(),
        if fr { "Émissions" } else { "Emissions" }.into(),
    ];
    if with_cost {
        head.push(if fr { "Coût" } else { "Cost" }.into());
    }
    let mut rows: Vec<Vec<String>> = y
        .months
        .iter()
        .zip(y.month_costs_ueur.iter().chain(std::iter::repeat(&0)))
        .map(|(m, cost)| {
            let e = &m.figures.exact;
            let mut row = vec![
                month_name(lang, &m.month),
                readable::energy(lang, e.facility_energy_uj),
                t_co2e(lang, e.location_co2e_ug + e.embodied_co2e_ug),
            ];
            if with_cost {
                row.push(readable::euros(lang, *cost as f64 / 1e6));
            }
            row
        })
        .collect();
    let tot = &y.totals.exact;
    let mut total = vec![
        y.year.to_string(),
        readable::energy(lang, tot.facility_energy_uj),
        t_co2e(lang, tot.location_co2e_ug + tot.embodied_co2e_ug),
    ];
    if with_cost {
        total.push(readable::euros(lang, y.cost_ueur as f64 / 1e6));
    }
    rows.push(total);
    b.push(Block::Table(head, rows));
    b
}

/// The paragraph to paste into the sustainable-development report.
fn paste_paragraph(y: &YearData, lang: Lang) -> String {
    let fr = lang == Lang::Fr;
    let tot = &y.totals.exact;
    let emissions = tot.location_co2e_ug + tot.embodied_co2e_ug;
    let trend = y.previous_year.as_ref().and_then(|p| {
        let before = p.exact.location_co2e_ug + p.exact.embodied_co2e_ug;
        (before > 0).then(|| (emissions as f64 - before as f64) / before as f64)
    });
    let trend_text = match (trend, fr) {
        (Some(r), true) => format!(
            " ({} par rapport à {})",
            readable::change(lang, r),
            y.year - 1
        ),
        (Some(r), false) => format!(" ({} on {})", readable::change(lang, r), y.year - 1),
        (None, _) => String::new(),
    };
    if fr {
        format!(
            "En {}, les usages d'intelligence artificielle de {} ont consommé {} d'électricité (salles des serveurs comprises) et émis {}{trend_text}, dont {} pour l'électricité (catégorie 2.1 du Bilan GES, méthode « location-based ») et {} pour la fabrication du matériel amortie (catégorie 4.2). {} de l'énergie a été mesurée sur les compteurs du matériel, le reste estimé. Sur l'année, {} bilans mensuels d'objectifs de sobriété ont été atteints sur {}.",
            y.year,
            y.organisation,
            readable::energy(lang, tot.facility_energy_uj),
            t_co2e(lang, emissions),
            t_co2e(lang, tot.location_co2e_ug),
            t_co2e(lang, tot.embodied_co2e_ug),
            percent(lang, y.totals.measured_share),
            y.objectives.met,
            y.objectives.judged,
        )
    } else {
        format!(
            "In {}, the artificial-intelligence uses of {} consumed {} of electricity (server rooms included) and emitted {}{trend_text}, of which {} for electricity (GHG inventory category 2.1, location-based) and {} for the amortised manufacturing of the hardware (category 4.2). {} of the energy was measured on hardware counters, the rest estimated. Over the year, {} of {} monthly sobriety objectives were met.",
            y.year,
            y.organisation,
            readable::energy(lang, tot.facility_energy_uj),
            t_co2e(lang, emissions),
            t_co2e(lang, tot.location_co2e_ug),
            t_co2e(lang, tot.embodied_co2e_ug),
            percent(lang, y.totals.measured_share),
            y.objectives.met,
            y.objectives.judged,
        )
    }
}

fn beges_label(l: &BegesLine, fr: bool) -> String {
    if !fr {
        return format!("{} ({})", l.label, l.note);
    }
    match l.label {
        "electricity, location-based" => {
            "électricité, méthode « location-based » (moyenne du réseau)".into()
        }
        "electricity, market-based" => "électricité, méthode « market-based » (contrat)".into(),
        "amortised equipment (servers, GPUs)" => "immobilisations amorties (serveurs, GPU)".into(),
        "upstream of electricity, configured factor" => {
            "amont de l'électricité (facteur configuré par l'organisation)".into()
        }
        "upstream of electricity" => {
            "amont de l'électricité : non calculé, aucun facteur amont configuré".into()
        }
        other => other.into(),
    }
}

/// The statement as Markdown, HTML or JSON.
pub fn render(y: &YearData, format: super::Format, lang: Lang) -> Result<String, ReportError> {
    let title = if lang == Lang::Fr {
        "Bilan annuel de l'IA"
    } else {
        "Yearly AI statement"
    };
    match format {
        super::Format::Json => {
            serde_json::to_string_pretty(y).map_err(|e| ReportError::Render(e.to_string()))
        }
        super::Format::Md => Ok(super::document::markdown_of(blocks(y, lang), lang)),
        super::Format::Csv => super::year_factors::csv(y, lang),
        super::Format::Html | super::Format::Pdf => {
            let page = Page {
                title,
                organisation: &y.organisation,
                period: y.year.to_string(),
                generated_at: &y.generated_at,
            };
            Ok(super::document::html_of(&page, blocks(y, lang), lang))
        }
        other => Err(ReportError::Render(format!(
            "the yearly statement is written as html, pdf, csv, json or md, not {}",
            other.extension()
        ))),
    }
}
