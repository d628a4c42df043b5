//! Every word of the report, in French and in English (one table, French first), and
//! numbers written the way each language writes them: `1 234,5` (narrow no-break space,
//! decimal comma) in French, `1,234.5` in English.
//!
//! This file stays whole past 600 lines: it is a table of words, not logic, and each
//! French sentence is easiest to check beside its English one.

use crate::objectives::Verdict;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    Fr,
    En,
}

impl Lang {
    pub fn parse(text: &str) -> Result<Lang, String> {
        match text {
            "fr" => Ok(Lang::Fr),
            "en" => Ok(Lang::En),
            other => Err(format!("{other:?} is not a report language: fr or en")),
        }
    }
    pub fn code(self) -> &'static str {
        match self {
            Lang::Fr => "fr",
            Lang::En => "en",
        }
    }
    pub fn texts(self) -> &'static Texts {
        match self {
            Lang::Fr => &FR,
            Lang::En => &EN,
        }
    }
}

/// The narrow no-break space French puts between groups of digits and before units.
pub const NNBSP: char = '\u{202F}';

/// `x` with `decimals` decimals, digits grouped by thousands.
pub fn number(lang: Lang, x: f64, decimals: usize) -> String {
    let text = format!("{:.*}", decimals, x.abs());
    let (int, frac) = match text.split_once('.') {
        Some((i, f)) => (i.to_string(), Some(f.to_string())),
        None => (text, None),
    };
    let (group, point) = match lang {
        Lang::Fr => (NNBSP, ','),
        Lang::En => (',', '.'),
    };
    let mut grouped = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(group);
        }
        grouped.push(c);
    }
    let negative = x < 0.0
        && (int.chars().any(|c| c != '0')
            || frac.as_ref().is_some_and(|f| f.chars().any(|c| c != '0')));
    let mut out = String::new();
    if negative {
        out.push('−');
    }
    out.push_str(&grouped);
    if let Some(f) = frac {
        out.push(point);
        out.push_str(&f);
    }
    out
}

/// A share as a percentage: `12,5 %` / `12.5%`.
pub fn percent(lang: Lang, ratio: f64) -> String {
    match lang {
        Lang::Fr => format!("{}{NNBSP}%", number(lang, ratio * 100.0, 1)),
        Lang::En => format!("{}%", number(lang, ratio * 100.0, 1)),
    }
}

/// A change with its sign: `+12,5 %`.
pub fn change(lang: Lang, ratio: f64) -> String {
    let sign = if ratio > 0.0 { "+" } else { "" };
    format!("{sign}{}", percent(lang, ratio))
}

/// A value with its unit, separated as the language does.
pub fn with_unit(lang: Lang, value: String, unit: &str) -> String {
    match lang {
        Lang::Fr => format!("{value}{NNBSP}{unit}"),
        Lang::En => format!("{value} {unit}"),
    }
}

pub fn kwh(lang: Lang, uj: u64) -> String {
    with_unit(lang, number(lang, crate::footprint::kwh(uj), 2), "kWh")
}

pub fn kg(lang: Lang, ug: u64) -> String {
    with_unit(lang, number(lang, ug as f64 / 1e9, 2), "kgCO2e")
}

/// A month `YYYY-MM` in words: `octobre 2026` / `October 2026`.
pub fn month_name(lang: Lang, label: &str) -> String {
    let (y, m) = label.split_once('-').unwrap_or((label, "0"));
    let i: usize = m.parse().unwrap_or(0);
    let names = match lang {
        Lang::Fr => [
            "janvier",
            "février",
            "mars",
            "avril",
            "mai",
            "juin",
            "juillet",
            "août",
            "septembre",
            "octobre",
            "novembre",
            "décembre",
        ],
        Lang::En => [
            "January",
            "February",
            "March",
            "April",
            "May",
            "June",
            "July",
            "August",
            "September",
            "October",
            "November",
            "December",
        ],
    };
    match i.checked_sub(1).and_then(|i| names.get(i)) {
        Some(n) => format!("{n} {y}"),
        None => label.to_string(),
    }
}

/// Every sentence and label of the report.
pub struct Texts {
    pub title: &'static str,
    pub organisation: &'static str,
    pub period: &'static str,
    pub generated: &'static str,
    pub time_zone: &'static str,
    pub month_to_date: &'static str,
    pub perimeter: &'static str,
    pub hosts: &'static str,
    pub sites: &'static str,
    pub gpus: &'static str,
    pub none: &'static str,
    pub exclusions: &'static str,
    pub exclusion_list: &'static [&'static str],
    pub silent_agents: &'static str,
    pub no_data: &'static str,
    pub totals: &'static str,
    pub energy_it: &'static str,
    pub energy_facility: &'static str,
    pub co2e_location: &'static str,
    pub co2e_market: &'static str,
    pub co2e_embodied: &'static str,
    pub co2e_total: &'static str,
    pub market_none: &'static str,
    pub market_some: &'static str,
    pub measured_share: &'static str,
    pub by_project: &'static str,
    pub project: &'static str,
    pub energy: &'static str,
    pub emissions: &'static str,
    pub share: &'static str,
    pub vs_previous: &'static str,
    pub objective: &'static str,
    pub no_objective: &'static str,
    pub new_project: &'static str,
    pub objectives: &'static str,
    pub budget: &'static str,
    pub used: &'static str,
    pub projected: &'static str,
    pub status: &'static str,
    pub kind_energy: &'static str,
    pub kind_co2e: &'static str,
    pub whole_organisation: &'static str,
    pub no_objectives: &'static str,
    pub by_site: &'static str,
    pub by_host: &'static str,
    /// The remainder row of a capped table: `{n}` is how many lines it sums.
    pub others_hosts: &'static str,
    /// The other projects' segment of the stacked chart: `{n}` is how many it sums.
    pub others_projects: &'static str,
    /// Under a capped per-host table: `{shown}` and `{all}` are counts.
    pub hosts_capped: &'static str,
    /// After the first hosts of the perimeter, when there are more.
    pub hosts_full_list: &'static str,
    pub by_gpu_model: &'static str,
    pub site: &'static str,
    pub host: &'static str,
    pub gpu_model: &'static str,
    pub no_gpu: &'static str,
    pub inference: &'static str,
    pub trend: &'static str,
    pub month: &'static str,
    pub measured: &'static str,
    pub measured_title: &'static str,
    pub estimated: &'static str,
    pub coefficients: &'static str,
    pub kind: &'static str,
    pub subject: &'static str,
    pub value: &'static str,
    pub source: &'static str,
    pub year: &'static str,
    pub default_flag: &'static str,
    pub yes_default: &'static str,
    pub no_own: &'static str,
    pub series: &'static str,
    pub series_line: &'static str,
    pub no_coefficients: &'static str,
    pub methodology: &'static str,
    pub method: &'static [(&'static str, &'static str)],
    pub data_note: &'static str,
    pub chart_days: &'static str,
    pub chart_share: &'static str,
    pub chart_trend: &'static str,
    pub chart_objectives: &'static str,
    pub verdict_on_track: &'static str,
    pub verdict_projected_to_exceed: &'static str,
    pub verdict_exceeded: &'static str,
    pub verdict_met: &'static str,
    pub verdict_no_baseline: &'static str,
    pub verdict_baseline: &'static str,
    pub projected_from: &'static str,
    pub baseline_note: &'static str,
    pub uncertainty_note: &'static str,
    pub location_market_note: &'static str,
    pub idle_note: &'static str,
    pub measured_note: &'static str,
    pub no_data_short: &'static str,
}

impl Texts {
    pub fn verdict(&self, v: Verdict) -> &'static str {
        match v {
            Verdict::OnTrack => self.verdict_on_track,
            Verdict::ProjectedToExceed => self.verdict_projected_to_exceed,
            Verdict::Exceeded => self.verdict_exceeded,
            Verdict::Met => self.verdict_met,
            Verdict::NoBaseline => self.verdict_no_baseline,
            Verdict::Baseline => self.verdict_baseline,
        }
    }

    /// The name of a coefficient kind.
    pub fn coefficient_kind(&self, kind: &str) -> String {
        let fr = std::ptr::eq(self, &FR);
        match (kind, fr) {
            ("grid_intensity", true) => "Intensité carbone du réseau".into(),
            ("grid_intensity", false) => "Grid carbon intensity".into(),
            ("pue", true) => "PUE (efficacité du site)".into(),
            ("pue", false) => "PUE (site efficiency)".into(),
            ("market_factor", true) => "Facteur contractuel (market-based)".into(),
            ("market_factor", false) => "Contractual factor (market-based)".into(),
            ("embodied", true) => "Fabrication (amortie sur la durée de vie)".into(),
            ("embodied", false) => "Manufacturing (amortised over the lifetime)".into(),
            (other, _) => other.to_string(),
        }
    }

    fn is_fr(&self) -> bool {
        std::ptr::eq(self, &FR)
    }

    /// A project, source or model name the software itself writes, in the reader's
    /// language (an organisation's own names are left as they are).
    pub fn key_name(&self, key: &str) -> String {
        let fr = self.is_fr();
        let words = match key {
            "unassigned" => ("non attribué", "unassigned"),
            "idle" => ("à vide (idle)", "idle"),
            "estimate" => ("estimation", "estimate"),
            "rapl" => ("RAPL (processeur, mémoire)", "RAPL (processor, memory)"),
            "nvml" => ("NVML (cartes graphiques)", "NVML (graphics cards)"),
            "not in the inventory" => ("absent de l'inventaire", "not in the inventory"),
            "gpu (organisation's figure)" => (
                "GPU (valeur de l'organisation)",
                "GPU (the organisation's figure)",
            ),
            other => return other.to_string(),
        };
        if fr { words.0 } else { words.1 }.to_string()
    }

    /// A coefficient's source as the software writes it, in the reader's language.
    pub fn source_name(&self, source: &str) -> String {
        if !self.is_fr() {
            return source.to_string();
        }
        match source {
            "built-in hardware figures (see detail)" => {
                "valeurs de fabrication intégrées (voir le détail)".into()
            }
            "organisation's inventory" => "inventaire de l'organisation".into(),
            "no PUE known: IT energy only" => {
                "aucun PUE connu : énergie des équipements seule".into()
            }
            "built-in carbon.toml" => "table intégrée (carbon.toml)".into(),
            other => other.to_string(),
        }
    }

    /// A coefficient's detail, with the software's own phrases translated.
    pub fn source_detail(&self, detail: &str) -> String {
        // "over 1 years" as the planner writes it: one year is singular.
        let detail = detail.replace(" over 1 years (", " over 1 year (");
        if !self.is_fr() {
            return detail;
        }
        // Decimal points between digits become decimal commas ("43.8" → "43,8").
        let chars: Vec<char> = detail.chars().collect();
        let detail: String = chars
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                let digit = |j: Option<usize>| {
                    j.and_then(|j| chars.get(j))
                        .is_some_and(|c| c.is_ascii_digit())
                };
                if c == '.' && digit(i.checked_sub(1)) && digit(Some(i + 1)) {
                    ','
                } else {
                    c
                }
            })
            .collect();
        [
            (
                "global average: the site gives no PUE of its own",
                "moyenne mondiale : le site ne donne pas de PUE propre",
            ),
            ("direct factor", "facteur direct (combustion)"),
            ("lifecycle factor", "facteur en cycle de vie"),
            ("server: ", "serveur : "),
            (" kgCO2e over ", "\u{202F}kgCO2e sur "),
            (" years (", " ans ("),
            (" year (", " an ("),
        ]
        .iter()
        .fold(detail, |d, (en, fr)| d.replace(en, fr))
    }
}

pub static FR: Texts = Texts {
    title: "Empreinte énergétique et carbone de l'IA",
    organisation: "Organisation",
    period: "Période",
    generated: "Généré le",
    time_zone: "fuseau horaire",
    month_to_date: "Le mois n'est pas terminé : les chiffres vont jusqu'à la date de génération, et les objectifs sont projetés à la fin du mois au rythme actuel.",
    perimeter: "Périmètre",
    hosts: "Serveurs",
    sites: "Sites",
    gpus: "GPU",
    none: "aucun",
    exclusions: "Exclusions (non comptés)",
    exclusion_list: &[
        "les serveurs sans agent Empreinte, et les périodes où l'agent ne tournait pas ;",
        "le réseau, le stockage partagé et les postes des utilisateurs ;",
        "les pertes d'alimentation, ventilateurs et disques des serveurs mesurés, sauf au travers du PUE du site ;",
        "les services d'IA en ligne (API externes) utilisés par l'organisation.",
    ],
    silent_agents: "Agents connus du collecteur sans aucune donnée ce mois-ci",
    no_data: "Aucune donnée n'a été enregistrée pour cette période : aucun agent n'a transmis de mesure. Les totaux ci-dessous sont nuls ; vérifiez que les agents tournent et envoient leurs mesures au collecteur.",
    totals: "Totaux",
    energy_it: "Énergie des équipements (au compteur)",
    energy_facility: "Énergie avec le PUE du site",
    co2e_location: "Émissions d'exploitation, méthode « location-based »",
    co2e_market: "Émissions d'exploitation, méthode « market-based »",
    co2e_embodied: "Émissions de fabrication (amorties)",
    co2e_total: "Émissions totales (exploitation location-based + fabrication)",
    market_none: "Aucun contrat d'électricité n'est configuré : le chiffre « market-based » utilise le mix résiduel de la zone (AIB) quand la table des coefficients en donne un (voir la table des coefficients), sinon il reprend le chiffre « location-based ».",
    market_some: "Facteur contractuel configuré pour les sites",
    measured_share: "Part mesurée (RAPL, NVML)",
    by_project: "Par projet",
    project: "Projet",
    energy: "Énergie",
    emissions: "Émissions",
    share: "Part",
    vs_previous: "Évolution sur le mois précédent",
    objective: "Objectif",
    no_objective: "pas d'objectif",
    new_project: "nouveau",
    objectives: "Objectifs de sobriété",
    budget: "Budget",
    used: "Consommé",
    projected: "Projeté fin de mois",
    status: "État",
    kind_energy: "énergie",
    kind_co2e: "émissions",
    whole_organisation: "toute l'organisation",
    no_objectives: "Aucun objectif n'est configuré.",
    by_site: "Par site",
    by_host: "Par serveur",
    others_hosts: "{n} autres serveurs",
    others_projects: "{n} autres projets",
    hosts_full_list: "la liste complète est dans l'export CSV",
    hosts_capped: "Les {shown} serveurs qui ont le plus consommé sur {all} ; la ligne suivante additionne les autres. La liste complète par serveur est dans l'export CSV et le rapport JSON.",
    by_gpu_model: "Par modèle de GPU",
    site: "Site",
    host: "Serveur",
    gpu_model: "Modèle de GPU",
    no_gpu: "Aucune énergie de GPU ce mois-ci.",
    inference: "Par modèle d'inférence et par unité fonctionnelle",
    trend: "Tendance sur 12 mois",
    month: "Mois",
    measured: "Mesuré",
    measured_title: "Énergie mesurée et estimée",
    estimated: "Estimé",
    coefficients: "Coefficients utilisés",
    kind: "Coefficient",
    subject: "Objet",
    value: "Valeur",
    source: "Source",
    year: "Année",
    default_flag: "Par défaut ?",
    yes_default: "oui : valeur par défaut",
    no_own: "non : valeur de l'organisation",
    series: "Séries horaires d'intensité importées",
    series_line: "heures couvertes",
    no_coefficients: "Aucun coefficient n'a servi ce mois-ci.",
    methodology: "Méthode",
    method: &[
        (
            "Mesure de l'énergie",
            "Sur chaque serveur, l'agent Empreinte lit chaque seconde les compteurs d'énergie du processeur et de la mémoire (RAPL) et des cartes graphiques NVIDIA (NVML). Là où aucun compteur n'est lisible (machines virtuelles), l'énergie est estimée à partir de l'utilisation du processeur et de la puissance nominale du matériel ; ces chiffres sont toujours signalés comme estimés.",
        ),
        (
            "Répartition entre projets",
            "L'énergie du processeur et de la mémoire est partagée entre les programmes au prorata de leur temps de calcul ; celle d'une carte graphique, au prorata de son utilisation par chaque programme. Chaque programme appartient à un projet selon des règles de configuration. La somme des projets est exactement égale à l'énergie du serveur.",
        ),
        (
            "Conversion en CO2e",
            "L'énergie est multipliée par le PUE du site (énergie du bâtiment : refroidissement, onduleurs), puis par l'intensité carbone du réseau électrique, heure par heure quand une série horaire est importée, sinon par un facteur annuel. La méthode « market-based » utilise le facteur du contrat d'électricité quand il est configuré. La fabrication des serveurs et des cartes est amortie sur leur durée de vie, au prorata de l'utilisation.",
        ),
        (
            "Ce qui n'est pas compté",
            "Les équipements sans agent, le réseau, le stockage partagé, les postes de travail et les services d'IA externes ne sont pas comptés. Le PUE par défaut et les facteurs par défaut sont signalés dans le tableau des coefficients.",
        ),
        (
            "Traçabilité",
            "Chaque total est la somme exacte des lignes horaires fournies dans les exports CSV et JSON de ce rapport, chacune avec ses coefficients : on peut refaire le calcul dans un tableur.",
        ),
    ],
    data_note: "Les données détaillées (une ligne par heure, serveur, projet, composant et source, avec leurs coefficients) sont dans les exports CSV et JSON du même rapport.",
    chart_days: "Énergie par jour et par projet",
    chart_share: "Part de chaque projet dans l'énergie du mois",
    chart_trend: "Énergie (barres, axe de gauche) et émissions (ligne, axe de droite) sur 12 mois",
    chart_objectives: "Consommation par rapport au budget (100 % = budget ; en clair : projection à la fin du mois)",
    verdict_on_track: "en bonne voie",
    verdict_projected_to_exceed: "dépassement projeté",
    verdict_exceeded: "dépassé",
    verdict_met: "atteint",
    verdict_no_baseline: "pas de mois de référence",
    verdict_baseline: "mois de référence, sans verdict",
    projected_from: "projection à partir du premier jour avec des données, le",
    baseline_note: "Un objectif de réduction n'est pas jugé sur son propre mois de référence : ce mois fixe le budget des suivants.",
    uncertainty_note: "± : incertitude-type propagée (un écart-type) : chaque source d’erreur (mesure d’un serveur par une source, PUE d’un site, facteur d’émission d’une zone, données de fabrication) compte pour son incertitude relative documentée, corrélée avec elle-même, et les sources indépendantes s’ajoutent quadratiquement (voir la méthodologie).",
    location_market_note: "Deux façons de compter l'électricité : la méthode « location-based » (selon le lieu) applique l'intensité carbone moyenne du réseau électrique du pays, heure par heure quand elle est connue ; la méthode « market-based » (selon le contrat) applique celle du contrat d'électricité de l'organisation (garanties d'origine, par exemple). Le Bilan GES demande les deux ; les chiffres de la première page suivent la méthode « location-based ».",
    idle_note: "« À vide (idle) » : l'énergie que les serveurs consomment allumés mais sans calcul à faire. Elle n'est imputée à aucun projet : elle est le coût de garder les machines disponibles, payé par l'organisation dans son ensemble. La réduire, c'est mieux remplir les machines ou en éteindre.",
    measured_note: "Une énergie « mesurée » est lue sur les compteurs du matériel (RAPL pour le processeur et la mémoire, NVML pour les cartes graphiques NVIDIA). Une énergie « estimée » est calculée à partir de l'utilisation et de la puissance nominale, là où aucun compteur n'est lisible (machines virtuelles) : son incertitude est plus grande.",
    no_data_short: "pas de données",
};

pub static EN: Texts = Texts {
    title: "AI energy and carbon footprint",
    organisation: "Organisation",
    period: "Period",
    generated: "Generated on",
    time_zone: "time zone",
    month_to_date: "The month is not over: the figures run to the date of generation, and objectives are projected to the end of the month at the current pace.",
    perimeter: "Perimeter",
    hosts: "Hosts",
    sites: "Sites",
    gpus: "GPUs",
    none: "none",
    exclusions: "Exclusions (not counted)",
    exclusion_list: &[
        "servers without an Empreinte agent, and the periods when the agent was not running;",
        "network, shared storage and end-user devices;",
        "power supply losses, fans and disks of measured servers, except through the site's PUE;",
        "online AI services (external APIs) used by the organisation.",
    ],
    silent_agents: "Agents known to the collector with no data this month",
    no_data: "No data was recorded for this period: no agent sent any measurement. The totals below are zero; check that the agents are running and pushing to the collector.",
    totals: "Totals",
    energy_it: "Energy of the equipment (at the meter)",
    energy_facility: "Energy with the site's PUE",
    co2e_location: "Operational emissions, location-based",
    co2e_market: "Operational emissions, market-based",
    co2e_embodied: "Embodied emissions (amortised)",
    co2e_total: "Total emissions (operational location-based + embodied)",
    market_none: "No electricity contract is configured: the market-based figure uses the zone's residual mix (AIB) where the coefficients table gives one (see the coefficients table), else it repeats the location-based one.",
    market_some: "Contractual factor configured for the sites",
    measured_share: "Share measured (RAPL, NVML)",
    by_project: "By project",
    project: "Project",
    energy: "Energy",
    emissions: "Emissions",
    share: "Share",
    vs_previous: "Change on the previous month",
    objective: "Objective",
    no_objective: "no objective",
    new_project: "new",
    objectives: "Sobriety objectives",
    budget: "Budget",
    used: "Used",
    projected: "Projected end of month",
    status: "Status",
    kind_energy: "energy",
    kind_co2e: "emissions",
    whole_organisation: "whole organisation",
    no_objectives: "No objective is configured.",
    by_site: "By site",
    by_host: "By host",
    others_hosts: "{n} other hosts",
    others_projects: "{n} other projects",
    hosts_full_list: "the full list is in the CSV export",
    hosts_capped: "The {shown} hosts that used the most energy, out of {all}; the next line adds up the others. The full list by host is in the CSV export and the JSON report.",
    by_gpu_model: "By GPU model",
    site: "Site",
    host: "Host",
    gpu_model: "GPU model",
    no_gpu: "No GPU energy this month.",
    inference: "By inference model and functional unit",
    trend: "Trend over 12 months",
    month: "Month",
    measured: "Measured",
    measured_title: "Measured and estimated energy",
    estimated: "Estimated",
    coefficients: "Coefficients used",
    kind: "Coefficient",
    subject: "Subject",
    value: "Value",
    source: "Source",
    year: "Year",
    default_flag: "Default?",
    yes_default: "yes: default value",
    no_own: "no: the organisation's value",
    series: "Imported hourly intensity series",
    series_line: "hours covered",
    no_coefficients: "No coefficient was used this month.",
    methodology: "Method",
    method: &[
        (
            "Measuring energy",
            "On every server, the Empreinte agent reads every second the energy counters of the processor and memory (RAPL) and of NVIDIA graphics cards (NVML). Where no counter can be read (virtual machines), energy is estimated from processor use and the hardware's rated power; such figures are always flagged as estimated.",
        ),
        (
            "Splitting between projects",
            "Processor and memory energy is shared between programs in proportion to their computing time; a graphics card's, in proportion to each program's use of it. Each program belongs to a project by configured rules. The projects add up exactly to the server's energy.",
        ),
        (
            "From energy to CO2e",
            "Energy is multiplied by the site's PUE (the building's energy: cooling, UPS), then by the carbon intensity of the electricity grid, hour by hour where an hourly series is imported, else by a yearly factor. The market-based method uses the electricity contract's factor where one is configured. The manufacturing of servers and cards is amortised over their lifetime, in proportion to use.",
        ),
        (
            "What is not counted",
            "Equipment without an agent, the network, shared storage, workstations and external AI services are not counted. Default PUE and default factors are flagged in the coefficients table.",
        ),
        (
            "Traceability",
            "Every total is the exact sum of the hourly rows given in this report's CSV and JSON exports, each with its coefficients: the computation can be redone in a spreadsheet.",
        ),
    ],
    data_note: "The detailed data (one row per hour, host, project, component and source, with its coefficients) is in the CSV and JSON exports of the same report.",
    chart_days: "Energy per day and project",
    chart_share: "Share of each project in the month's energy",
    chart_trend: "Energy (bars, left axis) and emissions (line, right axis) over 12 months",
    chart_objectives: "Use against budget (100% = budget; light: projected to the end of the month)",
    verdict_on_track: "on track",
    verdict_projected_to_exceed: "projected to exceed",
    verdict_exceeded: "exceeded",
    verdict_met: "met",
    verdict_no_baseline: "no baseline month",
    verdict_baseline: "baseline month, no verdict",
    projected_from: "projected from the first day with data,",
    baseline_note: "A reduction objective is not judged on its own baseline month: that month sets the budget of the following ones.",
    uncertainty_note: "±: propagated standard uncertainty (one standard deviation): each error source (a host measured by one source, a site's PUE, a zone's grid factor, manufacturing figures) counts with its documented relative uncertainty, correlated with itself, and independent sources add in quadrature (see the methodology).",
    location_market_note: "Two ways of counting electricity: location-based applies the average carbon intensity of the country's grid, hour by hour where it is known; market-based applies the organisation's electricity contract (guarantees of origin, for instance). The GHG inventory asks for both; the first page's figures are location-based.",
    idle_note: "Idle: the energy servers use while switched on with nothing to compute. It is charged to no project: it is the cost of keeping the machines available, borne by the organisation as a whole. Reducing it means filling the machines better or switching some off.",
    measured_note: "Measured energy is read on the hardware's counters (RAPL for processor and memory, NVML for NVIDIA graphics cards). Estimated energy is computed from use and rated power where no counter can be read (virtual machines): its uncertainty is larger.",
    no_data_short: "no data",
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_written_the_way_each_language_writes_them() {
        let cases = [
            (1234.5, 1, "1\u{202F}234,5", "1,234.5"),
            (0.0, 2, "0,00", "0.00"),
            (999.0, 0, "999", "999"),
            (1_000_000.0, 0, "1\u{202F}000\u{202F}000", "1,000,000"),
            (-12.345, 2, "−12,35", "−12.35"),
            (-0.001, 2, "0,00", "0.00"),
        ];
        for (x, d, fr, en) in cases {
            assert_eq!(number(Lang::Fr, x, d), fr, "{x}");
            assert_eq!(number(Lang::En, x, d), en, "{x}");
        }
        assert_eq!(percent(Lang::Fr, 0.125), "12,5\u{202F}%");
        assert_eq!(change(Lang::En, 0.125), "+12.5%");
        assert_eq!(
            kwh(Lang::Fr, 3_600_000_000_000 * 1500),
            "1\u{202F}500,00\u{202F}kWh"
        );
        assert_eq!(month_name(Lang::Fr, "2026-10"), "octobre 2026");
        assert_eq!(month_name(Lang::En, "2026-03"), "March 2026");
    }
}
