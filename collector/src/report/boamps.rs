//! Open exports of a month: BoAmps (Boavizta's open JSON format for the energy of AI
//! tasks, CC BY 4.0) with one document per use, and the open-data CSV of the month's
//! figures per use (its schema: `docs/opendata.md`).
//!
//! Until the register of uses exists, a use is a project. A BoAmps document carries what
//! Empreinte knows: the task (an inference service, its requests where counted), the
//! measures (one per measuring source: RAPL, NVML, the labelled estimate, in kWh at the
//! meter over the month), the infrastructure (on premises: the hosts and the GPUs of the
//! inventory) and the environment (country, the grid's average carbon intensity as used).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use super::{ReportData, ReportError};
use crate::config::CollectorConfig;
use crate::store::Sums;

/// A file name made of `[A-Za-z0-9._-]` only.
fn file_safe(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.starts_with('.') {
        format!("_{s}")
    } else {
        s
    }
}

fn kwh(uj: u64) -> f64 {
    crate::footprint::kwh(uj)
}

/// How each source measures, in BoAmps' `measurementMethod` words.
fn method(source: &str) -> &'static str {
    match source {
        "rapl" => "RAPL energy counters (powercap), read by the Empreinte agent",
        "nvml" => "NVML energy counters (NVIDIA), read by the Empreinte agent",
        "estimate" => "Estimate: processor utilisation × rated power (no readable counter)",
        _ => "Empreinte agent",
    }
}

/// What one use did in the month, from the report's aggregate lines.
#[derive(Default)]
struct Use {
    total: Sums,
    by_source: BTreeMap<String, Sums>,
    hosts: BTreeSet<String>,
    sites: BTreeSet<String>,
    zones: BTreeSet<String>,
}

fn uses(data: &ReportData) -> BTreeMap<String, Use> {
    let mut out: BTreeMap<String, Use> = BTreeMap::new();
    for l in &data.lines {
        let u = out.entry(l.project.clone()).or_default();
        u.total.add(&l.sums);
        u.by_source
            .entry(l.source.clone())
            .or_default()
            .add(&l.sums);
        u.hosts.insert(l.host.clone());
        u.sites.insert(l.site.clone());
        u.zones.insert(l.zone.clone());
    }
    out
}

/// The hardware of the hosts a use ran on: one server entry, then the inventory's GPUs.
fn components(config: &CollectorConfig, hosts: &BTreeSet<String>) -> Vec<Value> {
    let mut gpus: BTreeMap<String, u64> = BTreeMap::new();
    for h in hosts {
        if let Some(item) = config.inventory_of(h) {
            for g in &item.gpus {
                let name = g.model.clone().unwrap_or_else(|| "gpu".into());
                *gpus.entry(name).or_default() += u64::from(g.count);
            }
        }
    }
    let mut out = vec![json!({
        "componentName": "server",
        "componentType": "server",
        "nbComponent": hosts.len(),
    })];
    for (model, n) in gpus {
        out.push(json!({
            "componentName": model,
            "componentType": "gpu",
            "nbComponent": n,
        }));
    }
    out
}

/// One BoAmps document for the use `name`.
fn document(data: &ReportData, config: &CollectorConfig, name: &str, u: &Use) -> Value {
    let measured_share = if u.total.energy_uj > 0 {
        u.total.measured_energy_uj as f64 / u.total.energy_uj as f64
    } else {
        0.0
    };
    let duration_s = (parse_s(&data.to) - parse_s(&data.from)).max(0);
    let measures: Vec<Value> = u
        .by_source
        .iter()
        .map(|(source, s)| {
            json!({
                "measurementMethod": method(source),
                "manufacturer": "Empreinte",
                "version": env!("CARGO_PKG_VERSION"),
                "powerConsumption": kwh(s.energy_uj),
                "measurementDuration": duration_s,
                "measurementDateTime": data.from,
            })
        })
        .collect();
    let intensity = if u.total.facility_energy_uj > 0 {
        u.total.location_co2e_ug as f64 / 1e6 / kwh(u.total.facility_energy_uj)
    } else {
        0.0
    };
    let project = data.projects.iter().find(|p| p.project == name);
    let mut task = json!({
        "taskStage": "inference",
        "taskFamily": "other",
        "algorithms": [{}],
        "dataset": [{ "dataUsage": "input", "dataType": "other" }],
        "taskDescription": format!(
            "AI use \"{name}\" of {} over {} ({} to {}): energy at the meter of its share of the servers, as attributed by Empreinte; {:.1} % measured, the rest estimated.",
            data.organisation, data.month, data.from, data.to, measured_share * 100.0
        ),
    });
    if let Some(r) = project.and_then(|p| p.requests) {
        task["nbRequest"] = json!(r);
    }
    json!({
        "header": {
            "reportId": format!("empreinte:{}:{}:{name}", data.organisation, data.month),
            "reportDatetime": data.generated_at,
            "reportStatus": if data.complete { "final" } else { "draft" },
            "publisher": {
                "name": data.organisation,
                "projectName": name,
                "confidentialityLevel": "public",
            },
        },
        "task": task,
        "measures": measures,
        "system": { "os": "Linux" },
        "infrastructure": {
            "infraType": "onPremise",
            "components": components(config, &u.hosts),
        },
        "environment": {
            "country": u.zones.iter().cloned().collect::<Vec<_>>().join(", "),
            "location": u.sites.iter().cloned().collect::<Vec<_>>().join(", "),
            "powerSupplierType": "public",
            "powerSourceCarbonIntensity": intensity,
        },
        "quality": if measured_share >= 0.9 { "high" } else if measured_share >= 0.5 { "medium" } else { "low" },
    })
}

fn parse_s(instant: &str) -> i64 {
    instant
        .parse::<jiff::Timestamp>()
        .map(|t| t.as_second())
        .unwrap_or_default()
}

/// The BoAmps documents of the month, one per use: `(file name, JSON text)`.
pub fn documents(
    data: &ReportData,
    config: &CollectorConfig,
) -> Result<Vec<(String, String)>, ReportError> {
    let mut names: BTreeSet<String> = BTreeSet::new();
    let mut out = Vec::new();
    for (name, u) in uses(data) {
        let mut file = format!("{}-{}.boamps.json", data.month, file_safe(&name));
        let mut n = 2;
        while !names.insert(file.clone()) {
            file = format!("{}-{}-{n}.boamps.json", data.month, file_safe(&name));
            n += 1;
        }
        let text = serde_json::to_string_pretty(&document(data, config, &name, &u))
            .map_err(|e| ReportError::Render(e.to_string()))?;
        out.push((file, text));
    }
    Ok(out)
}

/// The open-data CSV's columns (documented in `docs/opendata.md`).
pub const OPEN_DATA_COLUMNS: &[&str] = &[
    "month",
    "organisation",
    "use",
    "energy_kwh",
    "facility_energy_kwh",
    "measured_share",
    "co2e_location_kg",
    "co2e_market_kg",
    "co2e_embodied_kg",
    "co2e_total_kg",
    "requests",
    "cost_eur",
];

/// The month's figures per use as open data: `,`-separated, `.` decimals, UTF-8, one
/// line per use (see `docs/opendata.md`).
pub fn open_data_csv(data: &ReportData) -> Result<String, ReportError> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let err = |e: csv::Error| ReportError::Render(format!("cannot write the CSV: {e}"));
    w.write_record(OPEN_DATA_COLUMNS).map_err(err)?;
    let kg = |ug: u64| format!("{:.6}", ug as f64 / 1e9);
    for p in &data.projects {
        let s = &p.figures.exact;
        w.write_record([
            data.month.clone(),
            super::csv::text_cell(&data.organisation),
            super::csv::text_cell(&p.project),
            format!("{:.6}", kwh(s.energy_uj)),
            format!("{:.6}", kwh(s.facility_energy_uj)),
            format!("{:.4}", p.figures.measured_share),
            kg(s.location_co2e_ug),
            kg(s.market_co2e_ug),
            kg(s.embodied_co2e_ug),
            kg(s.location_co2e_ug + s.embodied_co2e_ug),
            p.requests.map(|r| r.to_string()).unwrap_or_default(),
            p.cost_eur.map(|c| format!("{c:.2}")).unwrap_or_default(),
        ])
        .map_err(err)?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| ReportError::Render(e.to_string()))?;
    String::from_utf8(bytes).map_err(|e| ReportError::Render(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::file_safe;

    #[test]
    fn file_names_keep_only_safe_characters() {
        assert_eq!(file_safe("assistant-citoyen"), "assistant-citoyen");
        assert_eq!(file_safe("../etc/passwd"), "_.._etc_passwd");
        assert_eq!(file_safe("é t/é"), "__t__");
        assert_eq!(file_safe(""), "_");
    }
}
