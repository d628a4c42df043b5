//! The report's first page, for a reader in a hurry (an elected official): the title, the
//! headline sentence, the banner when a share of the figures is estimated, the change
//! against the previous month and the same month a year before, the objectives at a
//! glance and the top uses.

use std::fmt::Write as _;

use jiff::tz::TimeZone;

use super::document::{Block, Ctx};
use super::i18n::{Lang, month_name, percent, with_unit};
use super::sections::{self, colon};
use super::{MonthLine, readable};
use crate::objectives::ObjectiveStatus;

fn local_time(tz: &TimeZone, s: i64) -> String {
    match jiff::Timestamp::from_second(s) {
        Ok(t) => t
            .to_zoned(tz.clone())
            .strftime("%Y-%m-%d %H:%M")
            .to_string(),
        Err(_) => String::new(),
    }
}

fn parse_s(instant: &str) -> i64 {
    instant
        .parse::<jiff::Timestamp>()
        .map(|t| t.as_second())
        .unwrap_or_default()
}

fn local_date(tz: &TimeZone, s: i64) -> String {
    jiff::Timestamp::from_second(s)
        .map(|ts| ts.to_zoned(tz.clone()).date().to_string())
        .unwrap_or_default()
}

/// The title, what the report covers and the notices that must not be missed.
pub fn first_page(cx: &Ctx, b: &mut Vec<Block>) {
    let (lang, t, data, tz) = (cx.lang, cx.t, cx.data, &cx.tz);
    b.push(Block::Title(format!(
        "{} — {}",
        t.title,
        month_name(lang, &data.month)
    )));
    let from = local_date(tz, parse_s(&data.from));
    let last_day = local_date(tz, parse_s(&data.to) - 1);
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
            format!("{} ({})", local_time(tz, data.generated_s), data.timezone),
        ),
    ]));
    if !data.complete {
        b.push(Block::Notice(t.month_to_date.into()));
    }
    if !data.has_data {
        b.push(Block::Notice(t.no_data.into()));
    }
}

/// The first page's words, French first (the rest of the report's are in `i18n`).
struct Words {
    headline_past: &'static str,
    headline_running: &'static str,
    uses_of: &'static str,
    consumed: &'static str,
    cost: &'static str,
    emitted: &'static str,
    as_much_as: &'static str,
    or: &'static str,
    at_a_glance: &'static str,
    energy: &'static str,
    emissions: &'static str,
    cost_label: &'static str,
    compared_to: &'static str,
    no_data_for: &'static str,
    of_energy: &'static str,
    of_emissions: &'static str,
    banner_on: &'static str,
    banner_all: &'static str,
    banner_share: &'static str,
    banner_why: &'static str,
    objectives: &'static str,
    top_uses: &'static str,
    use_name: &'static str,
    share: &'static str,
    cost_per_request: &'static str,
    used_for_budget: (&'static str, &'static str),
    basis: &'static str,
    equivalence_source: &'static str,
}

static FR_WORDS: Words = Words {
    headline_past: "En",
    headline_running: "Depuis le début du mois de",
    uses_of: "les usages d'IA de",
    consumed: "ont consommé",
    cost: "coûté",
    emitted: "émis",
    as_much_as: "soit autant que",
    or: "ou",
    at_a_glance: "En bref",
    energy: "Énergie consommée (salle des serveurs comprise)",
    emissions: "Émissions de gaz à effet de serre",
    cost_label: "Coût de l'électricité",
    compared_to: "Par rapport à",
    no_data_for: "pas de données pour ce mois",
    of_energy: "d'énergie",
    of_emissions: "d'émissions",
    banner_on: "sur",
    banner_all: "Tous ces chiffres sont estimés, voici pourquoi",
    banner_share: "de ces chiffres sont estimés, voici pourquoi",
    banner_why: "aucun compteur d'énergie n'est lisible (machine virtuelle, ou matériel sans compteur) ; l'énergie y est calculée à partir de l'utilisation du processeur et de la puissance nominale du matériel, avec une incertitude plus grande. Le détail est à la page « Énergie mesurée et estimée ».",
    objectives: "Objectifs de sobriété",
    top_uses: "Principaux usages",
    use_name: "Usage",
    share: "Part de l'énergie",
    cost_per_request: "Coût par requête",
    used_for_budget: (
        "au compteur des équipements, pour un budget de",
        "émis, pour un budget de",
    ),
    basis: "Énergie : celle des serveurs et de leur salle (refroidissement, onduleurs). Émissions : électricité, selon le réseau du lieu (méthode « location-based »), et fabrication du matériel, amortie sur sa durée de vie. Les pages suivantes expliquent chaque chiffre.",
    equivalence_source: "Équivalences",
};

static EN_WORDS: Words = Words {
    headline_past: "In",
    headline_running: "Since the beginning of",
    uses_of: "the AI uses of",
    consumed: "consumed",
    cost: "cost",
    emitted: "emitted",
    as_much_as: "as much as",
    or: "or",
    at_a_glance: "At a glance",
    energy: "Energy used (server room included)",
    emissions: "Greenhouse gas emissions",
    cost_label: "Cost of electricity",
    compared_to: "Compared with",
    no_data_for: "no data for that month",
    of_energy: "energy",
    of_emissions: "emissions",
    banner_on: "on",
    banner_all: "All these figures are estimated, here is why",
    banner_share: "of these figures are estimated, here is why",
    banner_why: "no energy counter can be read (virtual machine, or hardware without counters); the energy there is computed from processor use and the hardware's rated power, with a larger uncertainty. The page \"Measured and estimated energy\" gives the detail.",
    objectives: "Sobriety objectives",
    top_uses: "Main uses",
    use_name: "Use",
    share: "Share of energy",
    cost_per_request: "Cost per request",
    used_for_budget: (
        "at the equipment's meter, for a budget of",
        "emitted, for a budget of",
    ),
    basis: "Energy: the servers' and their room's (cooling, UPS). Emissions: electricity, by the local grid (location-based method), and the manufacturing of the hardware, amortised over its lifetime. The following pages explain every figure.",
    equivalence_source: "Equivalences",
};

fn words(lang: Lang) -> &'static Words {
    match lang {
        Lang::Fr => &FR_WORDS,
        Lang::En => &EN_WORDS,
    }
}

/// Emissions as the first page counts them: operational location-based plus embodied.
fn emissions_ug(s: &crate::store::Sums) -> u64 {
    s.location_co2e_ug.saturating_add(s.embodied_co2e_ug)
}

/// The headline sentence: the month's energy, cost, emissions and what they amount to.
pub fn headline(cx: &Ctx) -> String {
    let (lang, data) = (cx.lang, cx.data);
    let w = words(lang);
    let tot = &data.totals.exact;
    let when = if data.complete {
        format!("{} {}", w.headline_past, month_name(lang, &data.month))
    } else {
        format!("{} {}", w.headline_running, month_name(lang, &data.month))
    };
    let mut done = vec![format!(
        "{} {}",
        w.consumed,
        readable::energy(lang, tot.facility_energy_uj)
    )];
    if let Some(eur) = data.cost_eur {
        done.push(format!("{} {}", w.cost, readable::euros(lang, eur)));
    }
    done.push(format!(
        "{} {}",
        w.emitted,
        readable::mass(lang, emissions_ug(tot))
    ));
    let last = done.pop().unwrap_or_default();
    let and = if lang == Lang::Fr { "et" } else { "and" };
    let verbs = if done.is_empty() {
        last
    } else {
        format!("{} {and} {last}", done.join(", "))
    };
    let mut sentence = format!("{when}, {} {} {verbs}", w.uses_of, data.organisation);
    let eq: Vec<String> = readable::equivalents(lang, emissions_ug(tot))
        .into_iter()
        .map(|(text, _)| text)
        .collect();
    if !eq.is_empty() {
        let _ = write!(
            sentence,
            ", {} {}",
            w.as_much_as,
            eq.join(&format!(" {} ", w.or))
        );
    }
    sentence.push('.');
    sentence
}

/// The banner when a share of the energy is estimated, with the reason and the hosts.
fn banner(cx: &Ctx) -> Option<String> {
    let (lang, data) = (cx.lang, cx.data);
    let w = words(lang);
    let tot = &data.totals.exact;
    if tot.estimated_energy_uj == 0 || tot.energy_uj == 0 {
        return None;
    }
    let share = tot.estimated_energy_uj as f64 / tot.energy_uj as f64;
    let head = if tot.measured_energy_uj == 0 {
        w.banner_all.to_string()
    } else {
        format!("{} {}", percent(lang, share), w.banner_share)
    };
    Some(format!(
        "{head}{} {} {}, {}",
        colon(lang),
        w.banner_on,
        data.estimated_hosts.join(", "),
        w.banner_why,
    ))
}

/// `+12 % d'énergie, +9 % d'émissions` against another month.
fn compared(cx: &Ctx, other: Option<&MonthLine>) -> String {
    let (lang, data) = (cx.lang, cx.data);
    let w = words(lang);
    let Some(o) = other else {
        return w.no_data_for.to_string();
    };
    let ratio = |now: u64, then: u64| {
        if then == 0 {
            None
        } else {
            Some((now as f64 - then as f64) / then as f64)
        }
    };
    let tot = &data.totals.exact;
    let parts: Vec<String> = [
        (
            ratio(tot.facility_energy_uj, o.figures.exact.facility_energy_uj),
            w.of_energy,
        ),
        (
            ratio(emissions_ug(tot), emissions_ug(&o.figures.exact)),
            w.of_emissions,
        ),
    ]
    .into_iter()
    .filter_map(|(r, what)| r.map(|r| format!("{} {what}", readable::change(lang, r))))
    .collect();
    parts.join(", ")
}

/// Energy, emissions, cost and the comparisons with the previous month and a year before.
fn at_a_glance(cx: &Ctx, b: &mut Vec<Block>) {
    let (lang, data) = (cx.lang, cx.data);
    let w = words(lang);
    let tot = &data.totals.exact;
    b.push(Block::Subheading(w.at_a_glance.into()));
    let mut facts = vec![
        (
            w.energy.to_string(),
            readable::energy(lang, tot.facility_energy_uj),
        ),
        (
            w.emissions.to_string(),
            readable::mass(lang, emissions_ug(tot)),
        ),
    ];
    if let Some(eur) = data.cost_eur {
        facts.push((w.cost_label.to_string(), readable::euros(lang, eur)));
    }
    let names = [
        (data.previous_month.as_ref(), previous_label(cx)),
        (data.year_ago.as_ref(), year_ago_label(cx)),
    ];
    for (line, label) in names {
        facts.push((format!("{} {label}", w.compared_to), compared(cx, line)));
    }
    b.push(Block::Facts(facts));
}

fn previous_label(cx: &Ctx) -> String {
    let (y, m) = split_month(&cx.data.month);
    let (y, m) = if m == 1 { (y - 1, 12) } else { (y, m - 1) };
    month_name(cx.lang, &format!("{y:04}-{m:02}"))
}

fn year_ago_label(cx: &Ctx) -> String {
    let (y, m) = split_month(&cx.data.month);
    month_name(cx.lang, &format!("{:04}-{m:02}", y - 1))
}

fn split_month(label: &str) -> (i32, u32) {
    let (y, m) = label.split_once('-').unwrap_or(("0", "0"));
    (y.parse().unwrap_or(0), m.parse().unwrap_or(0))
}

/// Every objective in one line: who, what, verdict, use against budget.
fn objectives_at_a_glance(cx: &Ctx, b: &mut Vec<Block>) {
    let (lang, t, data) = (cx.lang, cx.t, cx.data);
    let w = words(lang);
    let all: Vec<&ObjectiveStatus> = data
        .projects
        .iter()
        .flat_map(|p| p.objectives.iter())
        .chain(data.organisation_objectives.iter())
        .collect();
    b.push(Block::Subheading(w.objectives.into()));
    if all.is_empty() {
        b.push(Block::Para(t.no_objectives.into()));
        return;
    }
    let value =
        |o: &ObjectiveStatus, v: f64| with_unit(lang, readable::significant(lang, v, 3), o.unit);
    b.push(Block::List(
        all.iter()
            .map(|o| {
                let who = if o.project == "*" {
                    sections::capitalise(t.whole_organisation)
                } else {
                    t.key_name(&o.project)
                };
                let kind = match o.kind {
                    crate::objectives::BudgetKind::Energy => t.kind_energy,
                    crate::objectives::BudgetKind::Co2e => t.kind_co2e,
                };
                let against = match o.kind {
                    crate::objectives::BudgetKind::Energy => w.used_for_budget.0,
                    crate::objectives::BudgetKind::Co2e => w.used_for_budget.1,
                };
                let budget = match o.budget {
                    Some(bu) => format!(" ({} {against} {})", value(o, o.used), value(o, bu)),
                    None => String::new(),
                };
                format!(
                    "{who} — {kind}{} {}{budget}",
                    colon(lang),
                    t.verdict(o.verdict)
                )
            })
            .collect(),
    ));
}

/// The uses with the most energy, with their cost (and cost per request) where known.
fn top_uses(cx: &Ctx, b: &mut Vec<Block>) {
    let (lang, t, data) = (cx.lang, cx.t, cx.data);
    let w = words(lang);
    let top: Vec<_> = data
        .projects
        .iter()
        .filter(|p| p.figures.exact.energy_uj > 0)
        .take(5)
        .collect();
    if top.is_empty() {
        return;
    }
    let with_cost = top.iter().any(|p| p.cost_eur.is_some());
    let with_per_request = top
        .iter()
        .any(|p| p.cost_eur.is_some() && p.requests.is_some_and(|r| r > 0));
    let mut head = vec![
        w.use_name.to_string(),
        t.energy.to_string(),
        t.emissions.to_string(),
        w.share.to_string(),
    ];
    if with_cost {
        head.push(w.cost_label.into());
    }
    if with_per_request {
        head.push(w.cost_per_request.into());
    }
    let rows = top
        .iter()
        .map(|p| {
            let mut row = vec![
                t.key_name(&p.project),
                readable::energy(lang, p.figures.exact.facility_energy_uj),
                readable::mass(lang, emissions_ug(&p.figures.exact)),
                percent(lang, p.share),
            ];
            if with_cost {
                row.push(p.cost_eur.map_or("—".into(), |e| readable::euros(lang, e)));
            }
            if with_per_request {
                row.push(match (p.cost_eur, p.requests) {
                    (Some(e), Some(r)) if r > 0 => readable::euros(lang, e / r as f64),
                    _ => "—".into(),
                });
            }
            row
        })
        .collect();
    b.push(Block::Subheading(w.top_uses.into()));
    b.push(Block::Table(head, rows));
}

/// The first page for a reader in a hurry: headline, banner, figures at a glance,
/// objectives, top uses; the detail begins on the next page.
pub fn for_readers(cx: &Ctx, b: &mut Vec<Block>) {
    let (lang, data) = (cx.lang, cx.data);
    if !data.has_data {
        return;
    }
    let w = words(lang);
    b.push(Block::Lead(headline(cx)));
    if let Some(text) = banner(cx) {
        b.push(Block::Notice(text));
    }
    at_a_glance(cx, b);
    objectives_at_a_glance(cx, b);
    top_uses(cx, b);
    let mut notes = vec![w.basis.to_string()];
    let eq = readable::equivalents(lang, emissions_ug(&data.totals.exact));
    if !eq.is_empty() {
        let sources: Vec<String> = eq
            .iter()
            .map(|(_, e)| format!("{} ({})", e.source, e.year))
            .collect();
        notes.push(format!(
            "{}{} {}.",
            w.equivalence_source,
            colon(lang),
            sources.join(" ; ")
        ));
    }
    b.push(Block::Small(notes.join(" ")));
    b.push(Block::PageBreak);
}
