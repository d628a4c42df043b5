//! The report's charts, drawn as SVG by plotters (SVG backend only: no system fonts; the
//! browser lays the text out). Each chart is a string of SVG to inline in the HTML page.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::ReportData;
use super::i18n::{Lang, number, percent};
use crate::objectives::{BudgetKind, Verdict};

/// Colours that stay distinct for colour-blind readers and in grey print (Okabe–Ito).
const PALETTE: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(230, 159, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
    RGBColor(213, 94, 0),
    RGBColor(120, 120, 120),
    RGBColor(240, 228, 66),
];

const FONT: &str = "sans-serif";
const GRID: RGBColor = RGBColor(221, 226, 224);
const WIDTH: u32 = 680;

/// The most projects the stacked chart names, one colour each; the others are summed into
/// one light grey segment per day. Seven colours and a grey are what a reader tells
/// apart, and fifty segments a day made a month's page of 1,500 bars (most of the PDF's
/// rendering time for a large organisation).
const STACKED_NAMED: usize = PALETTE.len() - 1;
/// The colour of the other projects' segment.
const OTHERS: RGBColor = RGBColor(200, 200, 200);

/// The colour of the `i`-th project of the report (projects are ordered by energy).
pub fn colour(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// Draws with `f` on a `WIDTH × height` SVG; a drawing error leaves what was drawn and
/// a note in the log (a chart is never worth failing the report for).
fn svg(height: u32, name: &str, f: impl FnOnce(&Area) -> Result<(), String>) -> String {
    let mut s = String::new();
    {
        let root = SVGBackend::with_string(&mut s, (WIDTH, height)).into_drawing_area();
        let drawn = root
            .fill(&WHITE)
            .map_err(|e| e.to_string())
            .and_then(|_| f(&root));
        if let Err(e) = drawn {
            tracing::warn!(chart = name, error = %e, "a chart of the report could not be drawn");
        }
        let _ = root.present();
    }
    // Scales with the page (the CSS sets the width), keeps its proportions: a viewBox,
    // which plotters writes itself (once: a second one is a parse error).
    let view_box = if s.contains("viewBox=") {
        String::new()
    } else {
        format!("viewBox=\"0 0 {WIDTH} {height}\" ")
    };
    s.replacen(
        "<svg ",
        &format!("<svg class=\"chart-{name}\" {view_box}"),
        1,
    )
}

fn e(err: impl std::fmt::Display) -> String {
    err.to_string()
}

fn kwh(uj: u64) -> f64 {
    crate::footprint::kwh(uj)
}

/// Where each legend entry goes: `(x, line)`, wrapping before the right edge.
fn legend_layout(names: &[String]) -> Vec<(i32, i32)> {
    let mut out = Vec::new();
    let (mut x, mut line) = (60, 0);
    for n in names {
        let w = 24 + 7 * n.chars().count() as i32;
        if x > 60 && x + w > WIDTH as i32 - 10 {
            x = 60;
            line += 1;
        }
        out.push((x, line));
        x += w;
    }
    out
}

/// The legend under a chart: a square and a name per project (the last one the other
/// projects' grey when `others`).
fn legend(area: &Area, names: &[String], y: i32, others: bool) -> Result<(), String> {
    for (i, (n, (x, line))) in names.iter().zip(legend_layout(names)).enumerate() {
        let y = y + 18 * line;
        let fill = if others && i + 1 == names.len() {
            OTHERS
        } else {
            colour(i)
        };
        area.draw(&Rectangle::new(
            [(x, y - 9), (x + 10, y + 1)],
            fill.filled(),
        ))
        .map_err(e)?;
        area.draw(&Text::new(n.clone(), (x + 14, y - 9), (FONT, 12)))
            .map_err(e)?;
    }
    Ok(())
}

/// The projects the stacked chart names and those it sums as "others" (none when the
/// palette has a colour for each).
fn stacked_split(projects: &[String]) -> (&[String], &[String]) {
    if projects.len() > PALETTE.len() {
        projects.split_at(STACKED_NAMED)
    } else {
        (projects, &[])
    }
}

/// One day's segments: each named project's energy (µJ), then the others' sum when
/// there are others.
fn day_segments(named: &[String], others: &[String], d: &super::DayLine) -> Vec<u64> {
    let mut out: Vec<u64> = named
        .iter()
        .map(|p| d.energy_uj.get(p).copied().unwrap_or(0))
        .collect();
    if !others.is_empty() {
        out.push(others.iter().filter_map(|p| d.energy_uj.get(p)).sum());
    }
    out
}

/// Energy per day, stacked by project.
pub fn days_stacked(data: &ReportData, lang: Lang) -> String {
    let projects: Vec<String> = data.projects.iter().map(|p| p.project.clone()).collect();
    let (named, others) = stacked_split(&projects);
    let t = lang.texts();
    let mut names: Vec<String> = named.iter().map(|p| t.key_name(p)).collect();
    if !others.is_empty() {
        names.push(t.others_projects.replace("{n}", &others.len().to_string()));
    }
    let n = data.days.len().max(1);
    let max = data
        .days
        .iter()
        .map(|d| kwh(d.energy_uj.values().sum()))
        .fold(0.0, f64::max);
    let (factor, unit) = axis_unit(max, &ENERGY_UNITS);
    let top = if max > 0.0 { max * factor * 1.1 } else { 1.0 };
    let lines = legend_layout(&names)
        .last()
        .map(|(_, l)| l + 1)
        .unwrap_or(1);
    svg(282 + 18 * lines as u32, "days", |root| {
        let (plot, foot) = root.split_vertically(270);
        let mut chart = ChartBuilder::on(&plot)
            .margin(8)
            .x_label_area_size(24)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..n as f64, 0f64..top)
            .map_err(e)?;
        let days = &data.days;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(TRANSPARENT)
            .bold_line_style(GRID)
            .x_labels(n.min(16))
            .x_label_formatter(&|x| {
                let i = x.floor() as usize;
                days.get(i)
                    .and_then(|d| d.day.get(8..10))
                    .map(|s| s.trim_start_matches('0').to_string())
                    .unwrap_or_default()
            })
            .y_desc(unit)
            .y_label_formatter(&|y| axis_label(lang, *y, top))
            .label_style((FONT, 11))
            .draw()
            .map_err(e)?;
        for (i, d) in data.days.iter().enumerate() {
            let mut base = 0.0;
            let mut bar = |v: f64, fill: RGBColor| -> Result<(), String> {
                if v > 0.0 {
                    chart
                        .draw_series(std::iter::once(Rectangle::new(
                            [(i as f64 + 0.12, base), (i as f64 + 0.88, base + v)],
                            fill.filled(),
                        )))
                        .map_err(e)?;
                    base += v;
                }
                Ok(())
            };
            for (si, uj) in day_segments(named, others, d).into_iter().enumerate() {
                let fill = if si < named.len() { colour(si) } else { OTHERS };
                bar(kwh(uj) * factor, fill)?;
            }
        }
        legend(&foot, &names, 20, !others.is_empty())
    })
}

/// Each project's share of the month's energy, as horizontal bars.
pub fn shares(data: &ReportData, lang: Lang) -> String {
    let t = lang.texts();
    let n = data.projects.len().max(1);
    let height = 30 + 26 * n as u32;
    svg(height, "shares", |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(8)
            .build_cartesian_2d(0f64..1.0, 0f64..n as f64)
            .map_err(e)?;
        for (i, p) in data.projects.iter().enumerate() {
            let y = (n - 1 - i) as f64;
            let w = p.share * 0.62;
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(0.0, y + 0.15), (w.max(0.002), y + 0.85)],
                    colour(i).filled(),
                )))
                .map_err(e)?;
            chart
                .draw_series(std::iter::once(Text::new(
                    format!("{} — {}", t.key_name(&p.project), percent(lang, p.share)),
                    (w + 0.01, y + 0.7),
                    (FONT, 13),
                )))
                .map_err(e)?;
        }
        Ok(())
    })
}

/// A unit for an axis whose largest value is `max` (in the first unit): the factor to
/// multiply values by and the unit's name (`0.004 kWh` is drawn as `4 Wh`).
fn axis_unit(max: f64, units: &[(&'static str, f64)]) -> (f64, &'static str) {
    for &(name, factor) in units {
        if max * factor < 1000.0 {
            return (factor, name);
        }
    }
    units.last().map(|&(n, f)| (f, n)).unwrap_or((1.0, ""))
}

const ENERGY_UNITS: [(&str, f64); 4] = [("Wh", 1000.0), ("kWh", 1.0), ("MWh", 1e-3), ("GWh", 1e-6)];
const MASS_UNITS: [(&str, f64); 3] = [("gCO2e", 1000.0), ("kgCO2e", 1.0), ("tCO2e", 1e-3)];

/// An axis label with as many decimals as the axis's step needs (never `0,0 0,0 0,0`).
pub fn axis_label(lang: Lang, v: f64, top: f64) -> String {
    let step = top / 5.0;
    let decimals = if step > 0.0 {
        (-step.log10().floor()).max(0.0) as usize
    } else {
        0
    };
    number(lang, v, decimals.min(6))
}

/// `nov. 24` / `Nov 24`: a month of the trend's axis.
pub fn short_month(lang: Lang, label: &str) -> String {
    let (y, m) = label.split_once('-').unwrap_or(("", ""));
    let i: usize = m.parse().unwrap_or(0);
    let names = match lang {
        Lang::Fr => [
            "janv.", "févr.", "mars", "avr.", "mai", "juin", "juil.", "août", "sept.", "oct.",
            "nov.", "déc.",
        ],
        Lang::En => [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ],
    };
    match i.checked_sub(1).and_then(|i| names.get(i)) {
        Some(n) => format!("{n} {}", y.get(2..).unwrap_or(y)),
        None => label.to_string(),
    }
}

fn emissions_kg(m: &super::MonthLine) -> f64 {
    (m.figures.exact.location_co2e_ug + m.figures.exact.embodied_co2e_ug) as f64 / 1e9
}

/// Twelve months: energy as bars, emissions as a line (right axis); the months before the
/// first data say "no data" instead of drawing zeros.
pub fn trend(data: &ReportData, lang: Lang) -> String {
    let n = data.trend.len().max(1);
    let first = data.trend.iter().position(|m| m.has_data).unwrap_or(n);
    let max_kwh = data
        .trend
        .iter()
        .map(|m| kwh(m.figures.exact.energy_uj))
        .fold(0.0, f64::max);
    let max_kg = data.trend.iter().map(emissions_kg).fold(0.0, f64::max);
    let (fe, ue) = axis_unit(max_kwh, &ENERGY_UNITS);
    let (fm, um) = axis_unit(max_kg, &MASS_UNITS);
    let top_e = if max_kwh > 0.0 {
        max_kwh * fe * 1.15
    } else {
        1.0
    };
    let top_m = if max_kg > 0.0 {
        max_kg * fm * 1.15
    } else {
        1.0
    };
    let no_data = lang.texts().no_data_short;
    svg(260, "trend", |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(8)
            .margin_right(12)
            .x_label_area_size(24)
            .y_label_area_size(60)
            .right_y_label_area_size(60)
            .build_cartesian_2d(0f64..n as f64, 0f64..top_e)
            .map_err(e)?
            .set_secondary_coord(0f64..n as f64, 0f64..top_m);
        let months = &data.trend;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(TRANSPARENT)
            .bold_line_style(GRID)
            .x_labels(n)
            .x_label_formatter(&|x| {
                months
                    .get(x.floor() as usize)
                    .map(|m| short_month(lang, &m.month))
                    .unwrap_or_default()
            })
            .y_desc(ue)
            .y_label_formatter(&|y| axis_label(lang, *y, top_e))
            .label_style((FONT, 11))
            .draw()
            .map_err(e)?;
        chart
            .configure_secondary_axes()
            .y_desc(um)
            .y_label_formatter(&|y| axis_label(lang, *y, top_m))
            .label_style((FONT, 11))
            .draw()
            .map_err(e)?;
        chart
            .draw_series(data.trend.iter().enumerate().skip(first).map(|(i, m)| {
                Rectangle::new(
                    [
                        (i as f64 + 0.15, 0.0),
                        (i as f64 + 0.85, kwh(m.figures.exact.energy_uj) * fe),
                    ],
                    colour(0).mix(0.8).filled(),
                )
            }))
            .map_err(e)?;
        chart
            .draw_secondary_series(LineSeries::new(
                data.trend
                    .iter()
                    .enumerate()
                    .skip(first)
                    .map(|(i, m)| (i as f64 + 0.5, emissions_kg(m) * fm)),
                colour(5).stroke_width(3),
            ))
            .map_err(e)?;
        if first > 0 {
            let style = TextStyle::from((FONT, 12).into_font())
                .color(&RGBColor(110, 110, 110))
                .pos(Pos::new(HPos::Center, VPos::Center));
            chart
                .draw_series(std::iter::once(Text::new(
                    format!("({no_data})"),
                    (first as f64 / 2.0, top_e / 2.0),
                    style,
                )))
                .map_err(e)?;
        }
        Ok(())
    })
}

/// Each objective's use (solid) and projection (light) against its budget (the line):
/// each label is centred on its bar's row, and the ratio is written at the bar's end,
/// inside the drawing.
pub fn objectives(data: &ReportData, lang: Lang) -> String {
    let all: Vec<_> = data
        .projects
        .iter()
        .flat_map(|p| p.objectives.iter())
        .chain(data.organisation_objectives.iter())
        .collect();
    let n = all.len().max(1);
    let height = 40 + 28 * n as u32;
    let max = all
        .iter()
        .flat_map(|o| [o.used_ratio, o.projected_ratio])
        .flatten()
        .fold(1.0, f64::max);
    // Room on the right for the longest value label ("160 %").
    let right = max * 1.3;
    let t = lang.texts();
    let label_style =
        TextStyle::from((FONT, 12).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    svg(height, "objectives", |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(8)
            .margin_right(24)
            .x_label_area_size(20)
            .y_label_area_size(180)
            .build_cartesian_2d(0f64..right, 0f64..n as f64)
            .map_err(e)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .light_line_style(TRANSPARENT)
            .bold_line_style(GRID)
            .y_labels(0)
            .x_label_formatter(&|x| percent_short(lang, *x))
            .label_style((FONT, 11))
            .draw()
            .map_err(e)?;
        for (i, o) in all.iter().enumerate() {
            let y = (n - 1 - i) as f64;
            let bad = matches!(o.verdict, Verdict::Exceeded | Verdict::ProjectedToExceed);
            let c = if bad { colour(5) } else { colour(2) };
            if let Some(p) = o.projected_ratio {
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(0.0, y + 0.2), (p, y + 0.8)],
                        c.mix(0.3).filled(),
                    )))
                    .map_err(e)?;
            }
            if let Some(u) = o.used_ratio {
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(0.0, y + 0.2), (u, y + 0.8)],
                        c.filled(),
                    )))
                    .map_err(e)?;
            }
            let end = o
                .used_ratio
                .unwrap_or(0.0)
                .max(o.projected_ratio.unwrap_or(0.0));
            let value = match o.used_ratio {
                Some(u) => percent_short(lang, u),
                None => t.verdict(o.verdict).to_string(),
            };
            chart
                .draw_series(std::iter::once(Text::new(
                    value,
                    (end + right * 0.01, y + 0.5),
                    label_style.clone(),
                )))
                .map_err(e)?;
            let who = if o.project == "*" {
                t.whole_organisation.to_string()
            } else {
                t.key_name(&o.project)
            };
            let kind = match o.kind {
                BudgetKind::Energy => t.kind_energy,
                BudgetKind::Co2e => t.kind_co2e,
            };
            // The row's centre, in the root's pixels: the label sits on it.
            let (_, centre) = chart.backend_coord(&(0.0, y + 0.5));
            root.draw(&Text::new(
                format!("{who} ({kind})"),
                (8, centre),
                label_style.clone(),
            ))
            .map_err(e)?;
        }
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(1.0, 0.0), (1.0, n as f64)],
                BLACK.stroke_width(2),
            )))
            .map_err(e)?;
        Ok(())
    })
}

/// A ratio as a whole percentage: `160 %` / `160%`.
fn percent_short(lang: Lang, ratio: f64) -> String {
    match lang {
        Lang::Fr => format!("{}\u{202F}%", number(lang, ratio * 100.0, 0)),
        Lang::En => format!("{}%", number(lang, ratio * 100.0, 0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_eight_projects_the_stacked_chart_names_seven_and_sums_the_others() {
        let projects: Vec<String> = (0..12).map(|i| format!("p{i:02}")).collect();
        let day = super::super::DayLine {
            day: "2026-10-01".into(),
            energy_uj: projects
                .iter()
                .enumerate()
                .map(|(i, p)| (p.clone(), 1_000_003 * (i as u64 + 1)))
                .collect(),
        };
        let (named, others) = stacked_split(&projects);
        assert_eq!((named.len(), others.len()), (7, 5));
        assert_eq!(named, &projects[..7]);
        let segments = day_segments(named, others, &day);
        assert_eq!(segments.len(), 8);
        // Nothing lost: the segments add up to the day to the µJ, the last one the others.
        assert_eq!(
            segments.iter().sum::<u64>(),
            day.energy_uj.values().sum::<u64>()
        );
        assert_eq!(segments[7], (8..=12).map(|k| 1_000_003 * k).sum::<u64>());
        // Eight projects: a colour each, no "others".
        let (named, others) = stacked_split(&projects[..8]);
        assert_eq!((named.len(), others.len()), (8, 0));
        assert_eq!(day_segments(named, others, &day).len(), 8);
    }

    #[test]
    fn the_legend_wraps_before_the_right_edge() {
        let names: Vec<String> = (0..20).map(|i| format!("project-number-{i}")).collect();
        let layout = legend_layout(&names);
        assert!(layout.last().unwrap().1 >= 2, "{layout:?}");
        for ((x, _), n) in layout.iter().zip(&names) {
            let w = 24 + 7 * n.chars().count() as i32;
            assert!(*x == 60 || x + w <= WIDTH as i32 - 10, "{x} {n}");
        }
        assert_eq!(
            legend_layout(&names[..2]),
            vec![(60, 0), (60 + 24 + 7 * 16, 0)]
        );
    }
}
