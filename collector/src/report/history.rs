//! The report's section on the configuration that produced its figures (issue 16,
//! item 4): each plan in force during the month (sites with zone, PUE, market factor and
//! tariff; the inventory) with the instants it applied from and to, and every
//! recomputation of the month with its figures before and after.

use jiff::tz::TimeZone;
use serde::Serialize;

use super::document::{Block, Ctx};
use super::i18n::{Lang, number};
use super::readable::{energy, euros, mass};
use crate::config::CollectorConfig;
use crate::history::{PlanConfig, Recomputation};
use crate::period::Month;
use crate::store::{Store, StoreError};

/// A plan in force over part of the month.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PlanPeriod {
    /// RFC 3339 instants, clipped to the month.
    pub from: String,
    pub to: String,
    pub sites: Vec<SitePlan>,
    /// Host patterns with an embodied footprint in the inventory.
    pub inventory: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SitePlan {
    pub name: String,
    pub zone: String,
    pub pue: Option<f64>,
    pub market_g_per_kwh: Option<f64>,
    pub tariff_eur_per_kwh: Option<f64>,
}

/// What the report says of the configuration.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ConfigurationReport {
    pub plans: Vec<PlanPeriod>,
    pub recomputations: Vec<Recomputation>,
}

fn instant(s: i64) -> String {
    crate::history::instant(s)
}

fn period(p: &PlanConfig, from_s: i64, to_s: i64) -> PlanPeriod {
    let d = &p.default_site;
    let mut sites = vec![SitePlan {
        name: d.name.clone(),
        zone: d.zone.clone(),
        pue: d.pue,
        market_g_per_kwh: None,
        tariff_eur_per_kwh: d.tariff_eur_per_kwh,
    }];
    sites.extend(p.sites.iter().map(|s| SitePlan {
        name: s.name.clone(),
        zone: s.zone.clone(),
        pue: s.pue,
        market_g_per_kwh: s.market_g_per_kwh,
        tariff_eur_per_kwh: s.tariff_eur_per_kwh,
    }));
    PlanPeriod {
        from: instant(from_s),
        to: instant(to_s),
        sites,
        inventory: p.inventory.iter().map(|i| i.hosts.join(", ")).collect(),
    }
}

/// The plans in force during `m` (the configuration alone when no history is stored)
/// and the recomputations that changed it.
pub async fn gather(
    store: &dyn Store,
    config: &CollectorConfig,
    m: &Month,
) -> Result<ConfigurationReport, StoreError> {
    let history = store.plan_history().await?;
    let mut plans = Vec::new();
    for (i, r) in history.iter().enumerate() {
        let next = history.get(i + 1).map_or(i64::MAX, |n| n.from_s);
        let (from, to) = (r.from_s.max(m.from_s), next.min(m.to_s));
        if from >= to {
            continue;
        }
        if let Ok(p) = PlanConfig::from_text(&r.plan) {
            plans.push(period(&p, from, to));
        }
    }
    if plans.is_empty() {
        plans.push(period(&PlanConfig::of(config), m.from_s, m.to_s));
    }
    Ok(ConfigurationReport {
        plans,
        recomputations: store.recomputations(m.from_s, m.to_s).await?,
    })
}

struct Words {
    heading: &'static str,
    intro: &'static str,
    from_to: &'static str,
    site: &'static str,
    zone: &'static str,
    pue: &'static str,
    market: &'static str,
    tariff: &'static str,
    inventory: &'static str,
    none: &'static str,
    recomputed: &'static str,
    before_after: &'static str,
}

fn words(lang: Lang) -> Words {
    match lang {
        Lang::Fr => Words {
            heading: "Configuration qui a produit ces chiffres",
            intro: "Chaque heure est calculée avec la configuration en vigueur à cette heure (sites, zones, PUE, facteurs, tarifs, inventaire).",
            from_to: "Du {from} au {to}",
            site: "Site",
            zone: "Zone",
            pue: "PUE",
            market: "Facteur de marché",
            tariff: "Tarif",
            inventory: "Inventaire (empreinte de fabrication)",
            none: "aucun",
            recomputed: "Ce mois a été recalculé le {at}, à partir du {from}, après une correction de la configuration ({rows} lignes horaires).",
            before_after: "Avant → après : émissions (méthode de localisation) {loc}, fabrication {emb}, énergie avec PUE {fac}, coût {cost}.",
        },
        Lang::En => Words {
            heading: "Configuration that produced these figures",
            intro: "Every hour is computed with the configuration in force at that hour (sites, zones, PUE, factors, tariffs, inventory).",
            from_to: "From {from} to {to}",
            site: "Site",
            zone: "Zone",
            pue: "PUE",
            market: "Market factor",
            tariff: "Tariff",
            inventory: "Inventory (manufacturing footprint)",
            none: "none",
            recomputed: "This month was recomputed on {at}, from {from}, after a correction of the configuration ({rows} hourly rows).",
            before_after: "Before → after: emissions (location-based) {loc}, manufacturing {emb}, energy with PUE {fac}, cost {cost}.",
        },
    }
}

fn local(tz: &TimeZone, rfc3339: &str) -> String {
    rfc3339
        .parse::<jiff::Timestamp>()
        .map(|t| {
            t.to_zoned(tz.clone())
                .strftime("%Y-%m-%d %H:%M")
                .to_string()
        })
        .unwrap_or_else(|_| rfc3339.to_string())
}

fn local_s(tz: &TimeZone, s: i64) -> String {
    local(tz, &instant(s))
}

/// The section: plans in force, then recomputations.
pub fn section(cx: &Ctx, b: &mut Vec<Block>) {
    let (lang, data) = (cx.lang, cx.data);
    let w = words(lang);
    let c = &data.configuration;
    b.push(Block::Heading(w.heading.into()));
    for r in &c.recomputations {
        b.push(Block::Notice(
            w.recomputed
                .replace("{at}", &local_s(&cx.tz, (r.at_ms / 1000) as i64))
                .replace("{from}", &local_s(&cx.tz, r.from_s))
                .replace("{rows}", &r.rows.to_string()),
        ));
        for m in &r.months {
            let pair = |a: i64, z: i64, f: &dyn Fn(u64) -> String| {
                format!(
                    "{} → {}",
                    f(u64::try_from(a).unwrap_or(0)),
                    f(u64::try_from(z).unwrap_or(0))
                )
            };
            b.push(Block::Small(
                w.before_after
                    .replace(
                        "{loc}",
                        &pair(m.before.location_ug, m.after.location_ug, &|v| {
                            mass(lang, v)
                        }),
                    )
                    .replace(
                        "{emb}",
                        &pair(m.before.embodied_ug, m.after.embodied_ug, &|v| {
                            mass(lang, v)
                        }),
                    )
                    .replace(
                        "{fac}",
                        &pair(m.before.facility_uj, m.after.facility_uj, &|v| {
                            energy(lang, v)
                        }),
                    )
                    .replace(
                        "{cost}",
                        &pair(m.before.cost_ueur, m.after.cost_ueur, &|v| {
                            euros(lang, v as f64 / 1e6)
                        }),
                    ),
            ));
        }
    }
    b.push(Block::Para(w.intro.into()));
    for p in &c.plans {
        b.push(Block::Subheading(
            w.from_to
                .replace("{from}", &local(&cx.tz, &p.from))
                .replace("{to}", &local(&cx.tz, &p.to)),
        ));
        let opt = |v: Option<f64>, unit: &str, decimals: usize| match v {
            Some(v) if unit.is_empty() => number(lang, v, decimals),
            Some(v) => super::i18n::with_unit(lang, number(lang, v, decimals), unit),
            None => "—".to_string(),
        };
        b.push(Block::Table(
            vec![
                w.site.into(),
                w.zone.into(),
                w.pue.into(),
                w.market.into(),
                w.tariff.into(),
            ],
            p.sites
                .iter()
                // The sites that have figures this month (all of them when none has).
                .filter(|s| {
                    data.perimeter.sites.is_empty() || data.perimeter.sites.contains(&s.name)
                })
                .map(|s| {
                    vec![
                        s.name.clone(),
                        s.zone.clone(),
                        opt(s.pue, "", 2),
                        opt(s.market_g_per_kwh, "gCO2e/kWh", 1),
                        opt(s.tariff_eur_per_kwh, "€/kWh", 4),
                    ]
                })
                .collect(),
        ));
        b.push(Block::Small(format!(
            "{}{} {}",
            w.inventory,
            if lang == Lang::Fr { " :" } else { ":" },
            if p.inventory.is_empty() {
                w.none.to_string()
            } else {
                p.inventory.join(" ; ")
            }
        )));
    }
}
