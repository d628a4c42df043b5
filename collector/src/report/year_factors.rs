//! The yearly statement's electricity factors (which ones made the year's figures, and
//! whether they are ADEME's Base Empreinte, which a French Bilan GES must use) and its
//! CSV: one line per month, the year's line and the BEGES categories, in integers (µJ,
//! µg, µEUR), so that the months add up to the year exactly in a spreadsheet.

use serde::Serialize;

use super::document::Block;
use super::i18n::{Lang, number, with_unit};
use super::year::YearData;
use super::{ReportError, csv::text_cell};
use crate::store::{Store, StoreError};

/// An electricity factor used by the year's rows.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FactorUsed {
    /// `grid_intensity` (location-based) or `market_factor`.
    pub kind: String,
    /// Zone or site.
    pub subject: String,
    pub g_per_kwh: f64,
    pub source: String,
    pub year: Option<i64>,
    pub is_default: bool,
    /// From ADEME's Base Empreinte (Base Carbone).
    pub ademe_base_empreinte: bool,
}

/// The electricity factors the rows of `[from_s, to_s)` were made with.
pub async fn used(
    store: &dyn Store,
    from_s: i64,
    to_s: i64,
) -> Result<Vec<FactorUsed>, StoreError> {
    Ok(store
        .coefficients_used(from_s, to_s)
        .await?
        .into_iter()
        .filter(|c| c.kind == "grid_intensity" || c.kind == "market_factor")
        .map(|c| FactorUsed {
            ademe_base_empreinte: c.source.contains("Base Empreinte")
                || c.source.contains("Base Carbone"),
            kind: c.kind,
            subject: c.subject,
            g_per_kwh: c.value,
            source: c.source,
            year: c.year,
            is_default: c.is_default,
        })
        .collect())
}

/// The factors under the BEGES table, and whether ADEME's were chosen.
pub fn section(y: &YearData, lang: Lang, b: &mut Vec<Block>) {
    let fr = lang == Lang::Fr;
    if y.factors.is_empty() {
        return;
    }
    b.push(Block::Subheading(
        if fr {
            "Facteurs d'émission de l'électricité utilisés"
        } else {
            "Electricity emission factors used"
        }
        .into(),
    ));
    b.push(Block::List(
        y.factors
            .iter()
            .map(|f| {
                let what = match (f.kind.as_str(), fr) {
                    ("market_factor", true) => "contrat",
                    ("market_factor", false) => "contract",
                    (_, true) => "réseau",
                    (_, false) => "grid",
                };
                format!(
                    "{} ({what}) : {} — {}{}",
                    f.subject,
                    with_unit(lang, number(lang, f.g_per_kwh, 1), "gCO2e/kWh"),
                    f.source,
                    f.year.map(|y| format!(", {y}")).unwrap_or_default()
                )
                .replace(" : ", if fr { " : " } else { ": " })
            })
            .collect(),
    ));
    if let Some((g, source)) = &y.upstream {
        b.push(Block::Para(format!(
            "{} {} — {source}",
            if fr {
                "Amont de l'électricité (extraction, transport, pertes) :"
            } else {
                "Upstream of electricity (extraction, transport, losses):"
            },
            with_unit(lang, number(lang, *g, 1), "gCO2e/kWh"),
        )));
    }
    let ademe_chosen = y.grid_choice.as_deref() == Some("ademe");
    let grid_all_ademe = y
        .factors
        .iter()
        .filter(|f| f.kind == "grid_intensity")
        .all(|f| f.ademe_base_empreinte);
    let text = match (ademe_chosen && grid_all_ademe, fr) {
        (true, true) => {
            "Les facteurs du réseau sont ceux de la Base Empreinte de l'ADEME, choisie par l'organisation (`grid_factor = \"ademe\"`), comme le demande la méthode du Bilan GES."
        }
        (true, false) => {
            "The grid factors are ADEME's Base Empreinte, chosen by the organisation (`grid_factor = \"ademe\"`), as the Bilan GES method requires."
        }
        (false, true) => {
            "Pour un Bilan GES, la méthode de l'ADEME demande les facteurs de la Base Empreinte : l'organisation peut les choisir dans sa configuration (`[organisation] grid_factor = \"ademe\"`)."
        }
        (false, false) => {
            "For a Bilan GES, ADEME's method asks for the Base Empreinte factors: the organisation can choose them in its configuration (`[organisation] grid_factor = \"ademe\"`)."
        }
    };
    b.push(Block::Para(text.into()));
}

/// The header of the year's CSV.
pub const COLUMNS: &[&str] = &[
    "line",
    "period",
    "category",
    "energy_uj",
    "facility_energy_uj",
    "location_co2e_ug",
    "market_co2e_ug",
    "embodied_co2e_ug",
    "cost_ueur",
    "co2e_ug",
    "uncertainty_kgco2e",
];

/// The statement as CSV in the dialect of `lang` (French: `;` and decimal commas).
pub fn csv(y: &YearData, lang: Lang) -> Result<String, ReportError> {
    let delimiter = if lang == Lang::Fr { b';' } else { b',' };
    let mut w = ::csv::WriterBuilder::new()
        .delimiter(delimiter)
        .from_writer(Vec::new());
    let err = |e: ::csv::Error| ReportError::Render(e.to_string());
    w.write_record(COLUMNS).map_err(err)?;
    let sums = |line: &str, period: String, s: &crate::store::Sums, cost: u64| {
        vec![
            line.to_string(),
            period,
            String::new(),
            s.energy_uj.to_string(),
            s.facility_energy_uj.to_string(),
            s.location_co2e_ug.to_string(),
            s.market_co2e_ug.to_string(),
            s.embodied_co2e_ug.to_string(),
            cost.to_string(),
            String::new(),
            String::new(),
        ]
    };
    for (m, cost) in y
        .months
        .iter()
        .zip(y.month_costs_ueur.iter().chain(std::iter::repeat(&0)))
    {
        w.write_record(sums("month", m.month.clone(), &m.figures.exact, *cost))
            .map_err(err)?;
    }
    w.write_record(sums(
        "year",
        y.year.to_string(),
        &y.totals.exact,
        y.cost_ueur,
    ))
    .map_err(err)?;
    for l in &y.beges {
        let mut row = vec![String::new(); COLUMNS.len()];
        row[0] = "beges".into();
        row[1] = y.year.to_string();
        row[2] = text_cell(&format!("{} {}", l.category, l.label));
        row[9] = l.co2e_ug.map(|v| v.to_string()).unwrap_or_default();
        row[10] = l
            .uncertainty_kg
            .map(|v| {
                let t = format!("{v:.3}");
                if lang == Lang::Fr {
                    t.replace('.', ",")
                } else {
                    t
                }
            })
            .unwrap_or_default();
        w.write_record(&row).map_err(err)?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| ReportError::Render(e.to_string()))?;
    String::from_utf8(bytes).map_err(|e| ReportError::Render(e.to_string()))
}
