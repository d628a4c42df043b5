//! External AI services: the *estimated* footprint of a use hosted elsewhere, from its
//! declared monthly volume and a published per-token (or per-request) factor of
//! `collector/data/external_factors.toml` (EcoLogits' parametric model, or a provider's
//! own per-request figure). An estimate is never added to measured energy: it is shown
//! beside it, labelled "estimé" / "estimated", with its factor's source and year.

use std::path::Path;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use super::Volume;

const FACTORS: &str = include_str!("../../data/external_factors.toml");

/// EcoLogits' constants (see the data file for the model).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EcoLogits {
    pub alpha_wh_per_token_per_b: f64,
    pub beta_wh_per_token: f64,
    pub latency_a_s_per_token_per_b: f64,
    pub latency_b_s_per_token: f64,
    pub server_power_w: f64,
    pub gpus_installed: u32,
    pub gpu_memory_gb: f64,
    pub memory_overhead: f64,
    pub pue: f64,
    pub source: String,
    pub year: i32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Factor {
    pub id: String,
    pub model: String,
    /// `ecologits` (from the model's parameters) or `per_request` (a provider's figure).
    pub kind: String,
    #[serde(default)]
    pub active_params_b: Option<f64>,
    #[serde(default)]
    pub total_params_b: Option<f64>,
    #[serde(default)]
    pub quantization_bits: Option<u32>,
    #[serde(default)]
    pub wh_per_request: Option<f64>,
    pub source: String,
    pub year: i32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FactorsFile {
    ecologits: EcoLogits,
    factor: Vec<Factor>,
}

fn table() -> Option<&'static FactorsFile> {
    static TABLE: OnceLock<Option<FactorsFile>> = OnceLock::new();
    TABLE
        .get_or_init(|| match toml::from_str::<FactorsFile>(FACTORS) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::error!(error = %e, "the built-in external factors do not parse");
                None
            }
        })
        .as_ref()
}

/// The constants of EcoLogits' model.
pub fn ecologits() -> Option<&'static EcoLogits> {
    table().map(|t| &t.ecologits)
}

pub fn factor(id: &str) -> Option<&'static Factor> {
    table()?.factor.iter().find(|f| f.id == id)
}

pub fn factor_ids() -> Vec<&'static str> {
    table()
        .map(|t| t.factor.iter().map(|f| f.id.as_str()).collect())
        .unwrap_or_default()
}

impl Factor {
    pub fn has_per_request(&self) -> bool {
        self.wh_per_request.is_some()
    }

    /// Facility energy per output token, Wh (EcoLogits' model), if this factor has one.
    pub fn wh_per_output_token(&self) -> Option<f64> {
        let e = ecologits()?;
        let active = self.active_params_b?;
        let total = self.total_params_b?;
        let bits = f64::from(self.quantization_bits?);
        let gpu_wh = e.alpha_wh_per_token_per_b * active + e.beta_wh_per_token;
        let latency_s = e.latency_a_s_per_token_per_b * active + e.latency_b_s_per_token;
        let memory_gb = e.memory_overhead * total * bits / 8.0;
        let gpus = (memory_gb / e.gpu_memory_gb).ceil().max(1.0);
        let server_wh = latency_s * e.server_power_w * gpus / f64::from(e.gpus_installed) / 3600.0;
        Some(e.pue * (server_wh + gpus * gpu_wh))
    }
}

/// Microjoules in a watt-hour.
const UJ_PER_WH: f64 = 3.6e9;

/// The estimated footprint of one declared month.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Estimate {
    pub month: String,
    pub factor: String,
    pub model: String,
    /// `output_tokens` or `requests`: what the estimate multiplies.
    pub basis: String,
    pub quantity: u64,
    pub wh_per_unit: f64,
    /// Facility energy (PUE included), estimated, µJ.
    pub estimated_energy_uj: u64,
    pub factor_source: String,
    pub factor_year: i32,
    /// Always true: a reminder in every output.
    pub estimated: bool,
    pub origin: String,
}

/// The estimate of a declared month: output tokens × the per-token figure, or requests ×
/// the per-request figure when only requests are known and the factor has one.
pub fn estimate(v: &Volume) -> Option<Estimate> {
    let f = factor(&v.factor)?;
    let (basis, quantity, wh) = match (v.output_tokens, f.wh_per_output_token()) {
        (Some(t), Some(wh)) => ("output_tokens", t, wh),
        _ => ("requests", v.requests?, f.wh_per_request?),
    };
    let uj = quantity as f64 * wh * UJ_PER_WH;
    let (source, year) = if basis == "output_tokens" {
        let e = ecologits()?;
        (format!("{}; {}", f.source, e.source), f.year.max(e.year))
    } else {
        (f.source.clone(), f.year)
    };
    Some(Estimate {
        month: v.month.clone(),
        factor: f.id.clone(),
        model: f.model.clone(),
        basis: basis.into(),
        quantity,
        wh_per_unit: wh,
        estimated_energy_uj: if uj.is_finite() && uj > 0.0 {
            uj.round() as u64
        } else {
            0
        },
        factor_source: source,
        factor_year: year,
        estimated: true,
        origin: v.origin.clone(),
    })
}

/// Totals of a provider's usage export over one month.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub requests: Option<u64>,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
}

/// Sums the rows of `month` (`YYYY-MM`) of a usage CSV: a header row with a `date`
/// column (an ISO date or timestamp; rows of other months are skipped) and any of
/// `requests`, `input_tokens`, `output_tokens` (also `prompt_tokens` and
/// `completion_tokens`, the names of the chat-completion APIs' usage fields).
pub fn read_usage_csv(path: &Path, month: &str) -> Result<Usage, String> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(false)
        .from_path(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let headers = reader
        .headers()
        .map_err(|e| format!("{}: no header row: {e}", path.display()))?
        .clone();
    let find = |names: &[&str]| {
        headers
            .iter()
            .position(|h| names.iter().any(|n| h.trim().eq_ignore_ascii_case(n)))
    };
    let Some(date) = find(&["date", "day", "timestamp"]) else {
        return Err(format!(
            "{}: a `date` column is needed (YYYY-MM-DD or an ISO timestamp)",
            path.display()
        ));
    };
    let cols = [
        find(&["requests", "num_requests"]),
        find(&["input_tokens", "prompt_tokens"]),
        find(&["output_tokens", "completion_tokens"]),
    ];
    if cols.iter().all(Option::is_none) {
        return Err(format!(
            "{}: none of the columns requests, input_tokens, output_tokens",
            path.display()
        ));
    }
    let mut sums = [None::<u64>; 3];
    for (n, row) in reader.records().enumerate() {
        let line = n + 2;
        let row = row.map_err(|e| format!("{} line {line}: {e}", path.display()))?;
        let d = row.get(date).unwrap_or_default().trim();
        if !d.starts_with(month) || d.as_bytes().get(7) != Some(&b'-') {
            continue;
        }
        for (k, col) in cols.iter().enumerate() {
            let Some(c) = col else { continue };
            let text = row.get(*c).unwrap_or_default().trim();
            let v: u64 = text.parse().map_err(|_| {
                format!(
                    "{} line {line}, column {:?}: {text:?} is not a whole number",
                    path.display(),
                    headers.get(*c).unwrap_or_default()
                )
            })?;
            let s = sums[k].get_or_insert(0);
            *s = s
                .checked_add(v)
                .ok_or_else(|| format!("{}: the sum passes {}", path.display(), u64::MAX))?;
        }
    }
    if sums.iter().all(Option::is_none) {
        return Err(format!("{}: no row of {month}", path.display()));
    }
    Ok(Usage {
        requests: sums[0],
        input_tokens: sums[1],
        output_tokens: sums[2],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_factors_parse_with_sources_and_years() {
        let ids = factor_ids();
        assert!(ids.len() >= 5, "{ids:?}");
        for id in ids {
            let f = factor(id).unwrap();
            assert!(!f.source.is_empty() && f.year >= 2023, "{id}");
            assert!(f.wh_per_output_token().is_some() || f.wh_per_request.is_some());
        }
    }

    #[test]
    fn a_usage_export_is_summed_over_its_month_only() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("usage.csv");
        std::fs::write(
            &p,
            "date,model,prompt_tokens,completion_tokens,requests\n\
             2026-02-28,m,5,7,1\n2026-03-01,m,100,1000,2\n2026-03-31T23:00:00Z,m,10,20,3\n2026-04-01,m,1,1,1\n",
        )
        .unwrap();
        let u = read_usage_csv(&p, "2026-03").unwrap();
        assert_eq!(
            u,
            Usage {
                requests: Some(5),
                input_tokens: Some(110),
                output_tokens: Some(1020)
            }
        );
        std::fs::write(&p, "date,output_tokens\n2026-03-01,lots\n").unwrap();
        let e = read_usage_csv(&p, "2026-03").unwrap_err();
        assert!(e.contains("line 2") && e.contains("lots"), "{e}");
    }
}
