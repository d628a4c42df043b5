//! The report's section on the register of AI uses: the month per use and per
//! department (energy, emissions, euros), the projects with energy that no use declares
//! ("usage non déclaré"), the external uses' *estimated* footprint kept apart, and the
//! tariff rates behind the euros, and the amortised hardware cost apart from them (the
//! hosts' purchase prices and their sources). Present when a register is configured or a
//! cost was stored; French first.

use std::collections::BTreeMap;

use serde::Serialize;

use super::document::{Block, Ctx};
use super::i18n::{Lang, kg, kwh, number, with_unit};
use crate::config::CollectorConfig;
use crate::cost::CostLine;
use crate::period::Month;
use crate::register::external::{self, Estimate};
use crate::store::{AggregateLine, Store, Sums};

/// A group (a use or a department) for the month.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Group {
    pub key: String,
    pub name_fr: String,
    pub name_en: String,
    pub department: String,
    pub status: String,
    pub hosting: String,
    pub sums: Sums,
    pub cost_ueur: u64,
    /// The amortised hardware cost, apart from `cost_ueur` (energy).
    pub hardware_ueur: u64,
    pub estimated_energy_uj: u64,
}

/// `t` serialised without its `id` field.
fn without_id<T: Serialize, S: serde::Serializer>(t: &T, s: S) -> Result<S::Ok, S::Error> {
    let mut v = serde_json::to_value(t).map_err(serde::ser::Error::custom)?;
    if let Some(o) = v.as_object_mut() {
        o.remove("id");
    }
    v.serialize(s)
}

fn rates_without_id<S: serde::Serializer>(
    rates: &[(crate::cost::hardware::StoredRate, u64)],
    s: S,
) -> Result<S::Ok, S::Error> {
    let mut out = Vec::with_capacity(rates.len());
    for (rate, cost) in rates {
        let mut v = serde_json::to_value(rate).map_err(serde::ser::Error::custom)?;
        if let Some(o) = v.as_object_mut() {
            o.remove("id");
        }
        out.push((v, *cost));
    }
    out.serialize(s)
}

/// A tariff rate as used in the month. Its stored id is left out of the report: ids are
/// given in the order rates were first stored, which differs between engines and
/// between collectors, and the report reads the same from either.
#[derive(Clone, Debug, Serialize)]
pub struct TariffLine {
    #[serde(serialize_with = "without_id")]
    pub tariff: crate::cost::StoredTariff,
    pub facility_uj: u64,
    pub cost_ueur: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct RegisterReport {
    /// Why the register could not be read, if it could not.
    pub error: Option<String>,
    pub uses: Vec<Group>,
    pub departments: Vec<Group>,
    /// Projects with energy and no use, with their sums.
    pub undeclared: Vec<(String, Sums)>,
    pub estimates: Vec<(String, Estimate)>,
    pub tariffs: Vec<TariffLine>,
    pub cost_ueur: u64,
    /// Every hardware rate behind the month's amortised cost, with that cost (in the
    /// report without its stored id, as tariffs).
    #[serde(serialize_with = "rates_without_id")]
    pub hardware: Vec<(crate::cost::hardware::StoredRate, u64)>,
    pub hardware_ueur: u64,
}

/// Tariff and hardware rates in the order of what they say, not of their ids: ids are
/// given in the order the rates were first stored, which differs between engines and
/// between collectors, and the report reads the same from either.
fn in_content_order(
    tariffs: impl Iterator<Item = TariffLine>,
    rates: impl Iterator<Item = (crate::cost::hardware::StoredRate, u64)>,
) -> (
    Vec<TariffLine>,
    Vec<(crate::cost::hardware::StoredRate, u64)>,
) {
    let mut tariffs: Vec<TariffLine> = tariffs.collect();
    tariffs.sort_by(|a, b| {
        let key = |t: &crate::cost::StoredTariff| {
            (
                t.site.clone(),
                t.valid_from.clone(),
                t.band,
                t.price_ueur_per_kwh,
                t.off_peak_hours.clone(),
                t.source.clone(),
            )
        };
        key(&a.tariff).cmp(&key(&b.tariff))
    });
    let mut rates: Vec<_> = rates.collect();
    rates.sort_by(|(a, _), (b, _)| {
        (
            &a.host,
            &a.purchased_on,
            a.price_ueur,
            a.period_hours,
            &a.source,
        )
            .cmp(&(
                &b.host,
                &b.purchased_on,
                b.price_ueur,
                b.period_hours,
                &b.source,
            ))
    });
    (tariffs, rates)
}

/// The section's data for month `m` from the month's lines, the register and the
/// stored costs; `None` when there is neither a register nor a cost.
pub async fn gather(
    store: &dyn Store,
    config: &CollectorConfig,
    m: &Month,
    lines: &[AggregateLine],
) -> Option<RegisterReport> {
    let costs: Vec<CostLine> = store.costs(m.from_s, m.to_s).await.unwrap_or_default();
    let hardware = store
        .hardware_costs(m.from_s, m.to_s)
        .await
        .unwrap_or_default();
    if config.register_file.is_none() && costs.is_empty() && hardware.is_empty() {
        return None;
    }
    let (register, error) = match crate::register::load_configured(config) {
        Ok(r) => (r, None),
        Err(e) => (crate::register::Register::empty(), Some(e.to_string())),
    };
    let mut by_project: BTreeMap<&str, Sums> = BTreeMap::new();
    for l in lines {
        by_project.entry(&l.project).or_default().add(&l.sums);
    }
    let mut cost_of: BTreeMap<&str, u64> = BTreeMap::new();
    let mut tariffs: BTreeMap<i64, TariffLine> = BTreeMap::new();
    for c in &costs {
        *cost_of.entry(&c.project).or_default() += c.cost_ueur;
        let t = tariffs.entry(c.tariff.id).or_insert_with(|| TariffLine {
            tariff: c.tariff.clone(),
            facility_uj: 0,
            cost_ueur: 0,
        });
        t.facility_uj += c.facility_uj;
        t.cost_ueur += c.cost_ueur;
    }
    let mut hardware_of: BTreeMap<&str, u64> = BTreeMap::new();
    let mut rates: BTreeMap<i64, (crate::cost::hardware::StoredRate, u64)> = BTreeMap::new();
    for h in &hardware {
        *hardware_of.entry(&h.project).or_default() += h.cost_ueur;
        rates
            .entry(h.rate.id)
            .or_insert_with(|| (h.rate.clone(), 0))
            .1 += h.cost_ueur;
    }
    let (tariffs, rates) = in_content_order(tariffs.into_values(), rates.into_values());
    let mut out = RegisterReport {
        error,
        cost_ueur: costs.iter().map(|c| c.cost_ueur).sum(),
        tariffs,
        hardware_ueur: hardware.iter().map(|h| h.cost_ueur).sum(),
        hardware: rates,
        ..RegisterReport::default()
    };
    let mut departments: BTreeMap<String, Group> = BTreeMap::new();
    for u in &register.uses {
        let mut g = Group {
            key: u.id.clone(),
            name_fr: u.name.fr.clone(),
            name_en: u.name.en.clone(),
            department: u.department.clone(),
            status: format!("{:?}", u.status).to_lowercase(),
            hosting: match &u.hosting {
                crate::register::Hosting::OnSite { site } => site.clone(),
                crate::register::Hosting::External { provider, .. } => provider.clone(),
            },
            ..Group::default()
        };
        for p in &u.projects {
            if let Some(s) = by_project.get(p.as_str()) {
                g.sums.add(s);
            }
            g.cost_ueur += cost_of.get(p.as_str()).copied().unwrap_or(0);
            g.hardware_ueur += hardware_of.get(p.as_str()).copied().unwrap_or(0);
        }
        for v in u.volumes.iter().filter(|v| v.month == m.label()) {
            if let Some(e) = external::estimate(v) {
                g.estimated_energy_uj += e.estimated_energy_uj;
                out.estimates.push((u.id.clone(), e));
            }
        }
        let d = departments
            .entry(u.department.clone())
            .or_insert_with(|| Group {
                key: u.department.clone(),
                ..Group::default()
            });
        d.sums.add(&g.sums);
        d.cost_ueur += g.cost_ueur;
        d.hardware_ueur += g.hardware_ueur;
        d.estimated_energy_uj += g.estimated_energy_uj;
        out.uses.push(g);
    }
    out.departments = departments.into_values().collect();
    out.undeclared = by_project
        .into_iter()
        .filter(|(p, s)| register.use_of(p).is_none() && s.energy_uj > 0)
        .map(|(p, s)| (p.to_string(), s))
        .collect();
    Some(out)
}

fn tr(lang: Lang, fr: &'static str, en: &'static str) -> &'static str {
    if lang == Lang::En { en } else { fr }
}

fn euros(lang: Lang, ueur: u64) -> String {
    with_unit(lang, number(lang, ueur as f64 / 1e6, 2), "€")
}

/// The section (nothing when the report has no register data).
pub fn section(cx: &Ctx, b: &mut Vec<Block>) {
    let Some(r) = &cx.data.register else { return };
    let lang = cx.lang;
    b.push(Block::Heading(
        tr(
            lang,
            "Usages de l'IA, directions et coûts",
            "AI uses, departments and costs",
        )
        .into(),
    ));
    if let Some(e) = &r.error {
        b.push(Block::Notice(format!(
            "{} {e}",
            tr(
                lang,
                "Le registre n'a pas pu être lu :",
                "The register could not be read:"
            )
        )));
    }
    let co2 = |s: &Sums| kg(lang, s.location_co2e_ug + s.embodied_co2e_ug);
    if !r.uses.is_empty() {
        b.push(Block::Table(
            vec![
                tr(lang, "Usage", "Use").into(),
                tr(lang, "Direction", "Department").into(),
                tr(lang, "Statut", "Status").into(),
                tr(lang, "Hébergement", "Hosting").into(),
                tr(lang, "Énergie mesurée", "Measured energy").into(),
                "CO2e".into(),
                tr(lang, "Coût de l'électricité", "Electricity cost").into(),
                tr(lang, "Matériel amorti", "Amortised hardware").into(),
            ],
            r.uses
                .iter()
                .map(|g| {
                    vec![
                        if lang == Lang::En {
                            g.name_en.clone()
                        } else {
                            g.name_fr.clone()
                        },
                        g.department.clone(),
                        g.status.clone(),
                        g.hosting.clone(),
                        kwh(lang, g.sums.energy_uj),
                        co2(&g.sums),
                        euros(lang, g.cost_ueur),
                        euros(lang, g.hardware_ueur),
                    ]
                })
                .collect(),
        ));
        b.push(Block::Table(
            vec![
                tr(lang, "Direction", "Department").into(),
                tr(lang, "Énergie mesurée", "Measured energy").into(),
                "CO2e".into(),
                tr(lang, "Coût de l'électricité", "Electricity cost").into(),
                tr(lang, "Matériel amorti", "Amortised hardware").into(),
                tr(
                    lang,
                    "Énergie estimée (services externes)",
                    "Estimated energy (external services)",
                )
                .into(),
            ],
            r.departments
                .iter()
                .map(|g| {
                    vec![
                        g.key.clone(),
                        kwh(lang, g.sums.energy_uj),
                        co2(&g.sums),
                        euros(lang, g.cost_ueur),
                        euros(lang, g.hardware_ueur),
                        kwh(lang, g.estimated_energy_uj),
                    ]
                })
                .collect(),
        ));
    }
    if !r.undeclared.is_empty() {
        let list: Vec<String> = r
            .undeclared
            .iter()
            .map(|(p, s)| format!("{p} ({})", kwh(lang, s.energy_uj)))
            .collect();
        b.push(Block::Notice(format!(
            "{} {}",
            tr(
                lang,
                "Usage non déclaré : ces projets consomment de l'énergie sans qu'aucun usage du registre ne les déclare :",
                "Undeclared use: these projects consume energy and no use of the register declares them:"
            ),
            list.join(", ")
        )));
    }
    estimates(cx, r, b);
    tariffs(cx, r, b);
    hardware(cx, r, b);
}

fn estimates(cx: &Ctx, r: &RegisterReport, b: &mut Vec<Block>) {
    let lang = cx.lang;
    if r.estimates.is_empty() {
        return;
    }
    b.push(Block::Subheading(
        tr(
            lang,
            "Services d'IA externes (estimé)",
            "External AI services (estimated)",
        )
        .into(),
    ));
    b.push(Block::Para(
        tr(
            lang,
            "Estimé, non mesuré : volume déclaré × facteur publié ; ces chiffres ne sont pas ajoutés à l'énergie mesurée.",
            "Estimated, not measured: declared volume × published factor; these figures are not added to the measured energy.",
        )
        .into(),
    ));
    b.push(Block::Table(
        vec![
            tr(lang, "Usage", "Use").into(),
            tr(lang, "Volume", "Volume").into(),
            tr(lang, "Énergie estimée", "Estimated energy").into(),
            tr(lang, "Facteur (source, année)", "Factor (source, year)").into(),
        ],
        r.estimates
            .iter()
            .map(|(id, e)| {
                vec![
                    id.clone(),
                    format!("{} {}", number(lang, e.quantity as f64, 0), e.basis),
                    format!(
                        "{} ({})",
                        kwh(lang, e.estimated_energy_uj),
                        tr(lang, "estimé", "estimated")
                    ),
                    format!("{}, {}", e.factor_source, e.factor_year),
                ]
            })
            .collect(),
    ));
}

fn tariffs(cx: &Ctx, r: &RegisterReport, b: &mut Vec<Block>) {
    let lang = cx.lang;
    if r.tariffs.is_empty() {
        return;
    }
    b.push(Block::Subheading(
        tr(
            lang,
            "Tarifs de l'électricité appliqués",
            "Electricity tariffs applied",
        )
        .into(),
    ));
    b.push(Block::Para(format!(
        "{} {}",
        tr(
            lang,
            "Coût de l'énergie du site (PUE compris), heure par heure, au tarif de chaque site. Total :",
            "Cost of the facility energy (PUE included), hour by hour, at each site's tariff. Total:"
        ),
        euros(lang, r.cost_ueur)
    )));
    b.push(Block::Table(
        vec![
            "Site".into(),
            tr(lang, "Tranche", "Band").into(),
            tr(lang, "Depuis", "From").into(),
            "€/kWh".into(),
            tr(lang, "Énergie", "Energy").into(),
            tr(lang, "Coût", "Cost").into(),
            "Source".into(),
        ],
        r.tariffs
            .iter()
            .map(|t| {
                vec![
                    t.tariff.site.clone(),
                    t.tariff.band.as_str().into(),
                    if t.tariff.valid_from.is_empty() {
                        "—".into()
                    } else {
                        t.tariff.valid_from.clone()
                    },
                    number(lang, t.tariff.price_ueur_per_kwh as f64 / 1e6, 4),
                    kwh(lang, t.facility_uj),
                    euros(lang, t.cost_ueur),
                    t.tariff.source.clone(),
                ]
            })
            .collect(),
    ));
}

/// The amortised hardware cost, apart from the electricity cost: each host's price,
/// period, purchase date and source, and what the month was charged.
fn hardware(cx: &Ctx, r: &RegisterReport, b: &mut Vec<Block>) {
    let lang = cx.lang;
    if r.hardware.is_empty() {
        return;
    }
    b.push(Block::Subheading(
        tr(lang, "Coût matériel amorti", "Amortised hardware cost").into(),
    ));
    b.push(Block::Para(format!(
        "{} {}",
        tr(
            lang,
            "Prix d'achat de chaque hôte réparti également sur sa durée d'amortissement, pour le temps où il a rendu compte, partagé entre ses projets selon l'énergie ; un chiffre comptable, à part du coût de l'électricité et non ajouté à lui. Total :",
            "Purchase price of each host spread evenly over its amortisation period, for the time it reported, shared between its projects by energy; an accounting figure, apart from the electricity cost and not added to it. Total:"
        ),
        euros(lang, r.hardware_ueur)
    )));
    b.push(Block::Table(
        vec![
            tr(lang, "Hôte", "Host").into(),
            tr(lang, "Prix d'achat", "Purchase price").into(),
            tr(lang, "Amortissement (ans)", "Amortisation (years)").into(),
            tr(lang, "Depuis", "From").into(),
            tr(lang, "Coût du mois", "Month's cost").into(),
            "Source".into(),
        ],
        r.hardware
            .iter()
            .map(|(rate, ueur)| {
                vec![
                    rate.host.clone(),
                    euros(lang, rate.price_ueur),
                    number(
                        lang,
                        rate.period_hours as f64 / crate::plan::HOURS_PER_YEAR,
                        2,
                    ),
                    if rate.purchased_on.is_empty() {
                        "—".into()
                    } else {
                        rate.purchased_on.clone()
                    },
                    euros(lang, *ueur),
                    rate.source.clone(),
                ]
            })
            .collect(),
    ));
}
