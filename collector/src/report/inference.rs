//! The report's "per model and per functional unit" section: per project (use) and
//! model, joules per request, watt-hours per 1,000 output tokens and grams CO2e per
//! request, beside the GPUs' share of the energy and the idle share of the GPUs' energy
//! on the hosts that served the model (the store keeps energy, not GPU utilisation:
//! a lightly loaded GPU shows as a large idle share, and it is why every token costs
//! more), and the share of the model's energy the counts cover.

use std::collections::BTreeSet;

use jiff::tz::TimeZone;
use serde::Serialize;

use super::document::Block;
use super::i18n::{Lang, number, percent};
use crate::inference::figures::{GroupBy, GroupFigures, group};
use crate::store::{AggregateLine, Store, StoreError};

/// The project the agents give idle time's energy to (`attribution.idle_project`'s
/// default).
pub const IDLE_PROJECT: &str = "idle";

/// The section's data (the JSON report's `inference`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct InferenceSection {
    /// True when some inference was counted in the month.
    pub available: bool,
    /// Why nothing is given, when nothing is.
    pub note: String,
    pub lines: Vec<InferenceLine>,
}

/// One project and model.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct InferenceLine {
    pub project: String,
    pub model: String,
    pub servers: Vec<&'static str>,
    pub requests: Option<u64>,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    /// Model-tagged energy of the hours with counts, µJ (at the meter).
    pub energy_uj: u64,
    /// All the energy tagged with the model, µJ.
    pub energy_total_uj: u64,
    pub covered_share: Option<f64>,
    pub joules_per_request: Option<f64>,
    pub wh_per_1k_output_tokens: Option<f64>,
    /// Operational (location-based, PUE included) and embodied.
    pub co2e_g_per_request: Option<f64>,
    /// Of the energy with counts, the GPUs' share.
    pub gpu_share: Option<f64>,
    /// Of the GPUs' energy of the month on the hosts that served the model, the share
    /// given to idle time (project `idle`).
    pub idle_gpu_share: Option<f64>,
    pub allocated: bool,
    pub resets: u64,
}

/// The idle share of the GPU energy of `hosts` in `lines`.
fn idle_gpu_share(lines: &[AggregateLine], hosts: &BTreeSet<String>) -> Option<f64> {
    let (mut idle, mut all) = (0u64, 0u64);
    for l in lines
        .iter()
        .filter(|l| l.component == "gpu" && hosts.contains(&l.host))
    {
        all = all.saturating_add(l.sums.energy_uj);
        if l.project == IDLE_PROJECT {
            idle = idle.saturating_add(l.sums.energy_uj);
        }
    }
    (all > 0).then(|| idle as f64 / all as f64)
}

fn line(g: &GroupFigures, lines: &[AggregateLine]) -> InferenceLine {
    InferenceLine {
        project: g.key.0.clone(),
        model: g.key.1.clone(),
        servers: crate::inference::server_names(g.server_kinds),
        requests: g.counts.requests,
        input_tokens: g.counts.input_tokens,
        output_tokens: g.counts.output_tokens,
        energy_uj: g.energy_uj,
        energy_total_uj: g.energy_total_uj,
        covered_share: g.covered_share(),
        joules_per_request: g.joules_per_request(),
        wh_per_1k_output_tokens: g.wh_per_1k_output_tokens(),
        co2e_g_per_request: g.co2e_g_per_request(),
        gpu_share: g.gpu_share(),
        idle_gpu_share: idle_gpu_share(lines, &g.hosts),
        allocated: g.allocated,
        resets: g.resets,
    }
}

/// The section of `[from_s, to_s)`, whose aggregate lines are `lines`. A store that
/// keeps no inference counts gives the section of a month without counts.
pub async fn build(
    store: &dyn Store,
    tz: &TimeZone,
    (from_s, to_s): (i64, i64),
    lines: &[AggregateLine],
) -> Result<InferenceSection, StoreError> {
    let units = match store.inference_reads() {
        Some(reads) => reads.inference_units(from_s, to_s).await?,
        // An engine that keeps no counts (a declared capability, said in the log at
        // start): the section of a month without counts.
        None => Vec::new(),
    };
    let groups = group(
        &units,
        GroupBy::ProjectModel,
        tz,
        &std::collections::BTreeMap::new(),
    );
    let lines: Vec<InferenceLine> = groups.iter().map(|g| line(g, lines)).collect();
    let available = groups.iter().any(|g| g.counts.any());
    Ok(InferenceSection {
        available,
        note: if available {
            String::new()
        } else {
            "no inference server counted requests or tokens in the month".into()
        },
        lines,
    })
}

struct Words {
    heading: &'static str,
    none: &'static str,
    intro: &'static str,
    gpu_note: &'static str,
    allocated: &'static str,
    allocated_tag: &'static str,
    head: [&'static str; 7],
    /// The second table: what the figures depend on.
    context_head: [&'static str; 3],
}

const FR: Words = Words {
    heading: "Par modèle d'inférence et par unité fonctionnelle",
    none: "Non disponible : aucun serveur d'inférence n'a compté de requêtes ni de tokens ce mois-ci ; aucun chiffre par requête ou par 1 000 tokens n'est donné.",
    intro: "Énergie au compteur des serveurs (sans PUE) des heures où le serveur d'inférence a compté ses requêtes, divisée par ces requêtes et par les tokens générés ; les émissions incluent le PUE (méthode location) et la fabrication amortie. La part couverte est la part de l'énergie du modèle tombée dans des heures comptées.",
    gpu_note: "Empreinte mesure l'énergie des GPU, pas leur taux d'utilisation. « Part GPU » : part de l'énergie du modèle tirée par les GPU ; « GPU au repos (hôtes) » : part de l'énergie des GPU des hôtes qui servent le modèle attribuée au repos (projet idle) ; un GPU peu chargé rend chaque requête et chaque token plus coûteux. « Part couverte » : part de l'énergie du modèle tombée dans des heures où le serveur a compté.",
    allocated: "Réparti : l'énergie du modèle est une part de celle d'un processus qui sert plusieurs modèles, au prorata des tokens générés (ou des requêtes).",
    allocated_tag: "réparti",
    head: [
        "Usage (projet)",
        "Modèle",
        "Requêtes",
        "Tokens générés",
        "J/requête",
        "Wh/1 000 tokens",
        "gCO2e/requête",
    ],
    context_head: ["Part GPU", "GPU au repos (hôtes)", "Part couverte"],
};

const EN: Words = Words {
    heading: "By inference model and functional unit",
    none: "Not available: no inference server counted requests or tokens this month, so no figure per request or per 1,000 tokens is given.",
    intro: "Energy at the servers' meters (without PUE) of the hours in which the inference server counted its requests, divided by those requests and by the generated tokens; emissions include the PUE (location-based) and amortised manufacturing. The covered share is the share of the model's energy that fell in counted hours.",
    gpu_note: "Empreinte measures GPU energy, not GPU utilisation. \"GPU share\": the share of the model's energy drawn by GPUs; \"Idle GPU (hosts)\": the share of the GPU energy of the hosts serving the model attributed to idle time (project idle): a lightly loaded GPU makes every request and every token more expensive. \"Covered share\": the share of the model's energy that fell in hours the server counted.",
    allocated: "Allocated: the model's energy is a share of that of a process serving several models, in proportion to generated tokens (or requests).",
    allocated_tag: "allocated",
    head: [
        "Use (project)",
        "Model",
        "Requests",
        "Output tokens",
        "J/request",
        "Wh/1k tokens",
        "gCO2e/request",
    ],
    context_head: ["GPU share", "Idle GPU (hosts)", "Covered share"],
};

/// `x` with three significant digits (at most six decimals): per-request figures range
/// from milligrams to hundreds of joules.
fn significant(lang: Lang, x: f64) -> String {
    let decimals = if x > 0.0 && x.is_finite() {
        (2 - x.log10().floor() as i64).clamp(0, 6) as usize
    } else {
        0
    };
    number(lang, x, decimals)
}

fn opt(lang: Lang, v: Option<f64>) -> String {
    v.map(|x| significant(lang, x))
        .unwrap_or_else(|| "—".into())
}

fn opt_count(lang: Lang, v: Option<u64>) -> String {
    v.map(|x| number(lang, x as f64, 0))
        .unwrap_or_else(|| "—".into())
}

fn opt_percent(lang: Lang, v: Option<f64>) -> String {
    v.map(|x| percent(lang, x)).unwrap_or_else(|| "—".into())
}

/// The section in the document (`document::SECTIONS`).
pub fn section(cx: &super::document::Ctx, b: &mut Vec<Block>) {
    b.extend(blocks(&cx.data.inference, cx.lang));
}

/// The section's blocks.
pub fn blocks(s: &InferenceSection, lang: Lang) -> Vec<Block> {
    let w = match lang {
        Lang::Fr => &FR,
        Lang::En => &EN,
    };
    let mut b = vec![Block::Heading(w.heading.into())];
    if !s.available {
        b.push(Block::Para(w.none.into()));
        return b;
    }
    b.push(Block::Para(w.intro.into()));
    let counted: Vec<&InferenceLine> = s
        .lines
        .iter()
        .filter(|l| l.requests.is_some() || l.output_tokens.is_some())
        .collect();
    let names = |l: &InferenceLine| {
        vec![
            l.project.clone(),
            if l.allocated {
                format!("{} ({})", l.model, w.allocated_tag)
            } else {
                l.model.clone()
            },
        ]
    };
    let figures = counted
        .iter()
        .map(|l| {
            let mut row = names(l);
            row.extend([
                opt_count(lang, l.requests),
                opt_count(lang, l.output_tokens),
                opt(lang, l.joules_per_request),
                opt(lang, l.wh_per_1k_output_tokens),
                opt(lang, l.co2e_g_per_request),
            ]);
            row
        })
        .collect();
    b.push(Block::Table(
        w.head.iter().map(|h| h.to_string()).collect(),
        figures,
    ));
    let context = counted
        .iter()
        .map(|l| {
            let mut row = names(l);
            row.extend([
                opt_percent(lang, l.gpu_share),
                opt_percent(lang, l.idle_gpu_share),
                opt_percent(lang, l.covered_share),
            ]);
            row
        })
        .collect();
    b.push(Block::Table(
        w.head[..2]
            .iter()
            .chain(&w.context_head)
            .map(|h| h.to_string())
            .collect(),
        context,
    ));
    b.push(Block::Para(w.gpu_note.into()));
    if s.lines.iter().any(|l| l.allocated) {
        b.push(Block::Para(w.allocated.into()));
    }
    b
}
