//! From an agent's batch to the hourly footprint: energy per hour, project, component
//! and source, and the embodied emissions of the host shared by use. Pure: no store,
//! no clock.
//!
//! Architecture invariant: a batch's energy is distributed over hours exactly (the
//! hourly parts of a record add up to the record, to the microjoule), so the stored
//! totals equal what the agents measured.

use std::collections::BTreeMap;

use empreinte_shared::split::split_amount;
use empreinte_shared::wire::Batch;
use empreinte_shared::{Component, SourceKind};
use serde::{Deserialize, Serialize};

/// Microjoules in a kilowatt-hour.
pub const UJ_PER_KWH: f64 = 3.6e12;

/// `uj` microjoules in kilowatt-hours, for display (sums stay in microjoules).
pub fn kwh(uj: u64) -> f64 {
    uj as f64 / UJ_PER_KWH
}
/// Milliseconds in an hour.
pub const MS_PER_HOUR: u64 = 3_600_000;

/// What a coefficient is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CoefficientKind {
    /// Grid carbon intensity of a zone, gCO2e/kWh.
    GridIntensity,
    /// Power usage effectiveness of a site (dimensionless).
    Pue,
    /// Contractual (market-based) emission factor of a site, gCO2e/kWh.
    MarketFactor,
    /// Amortised manufacturing emissions of a host, gCO2e per hour of use.
    Embodied,
}

impl CoefficientKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CoefficientKind::GridIntensity => "grid_intensity",
            CoefficientKind::Pue => "pue",
            CoefficientKind::MarketFactor => "market_factor",
            CoefficientKind::Embodied => "embodied",
        }
    }
}

/// A coefficient as it is stored with the emissions it produced.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Coefficient {
    pub kind: CoefficientKind,
    /// The zone, site or host it applies to.
    pub subject: String,
    pub value: f64,
    pub unit: &'static str,
    pub source: String,
    pub year: Option<i32>,
    /// A built-in default rather than the organisation's own figure.
    pub is_default: bool,
    /// How the value was made (e.g. the parts of an embodied rate).
    pub detail: String,
}

/// The units coefficients are given in (read back from the store's ingest log).
pub const COEFFICIENT_UNITS: [&str; 3] = ["", "gCO2e/kWh", "gCO2e/h"];

impl<'de> Deserialize<'de> for Coefficient {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Coefficient, D::Error> {
        /// The same fields, in the same order, with the unit owned.
        #[derive(Deserialize)]
        struct Owned {
            kind: CoefficientKind,
            subject: String,
            value: f64,
            unit: String,
            source: String,
            year: Option<i32>,
            is_default: bool,
            detail: String,
        }
        let o = Owned::deserialize(d)?;
        let unit = COEFFICIENT_UNITS
            .iter()
            .find(|u| **u == o.unit)
            .copied()
            .ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "{:?} is not a coefficient unit (expected one of {COEFFICIENT_UNITS:?})",
                    o.unit
                ))
            })?;
        Ok(Coefficient {
            kind: o.kind,
            subject: o.subject,
            value: o.value,
            unit,
            source: o.source,
            year: o.year,
            is_default: o.is_default,
            detail: o.detail,
        })
    }
}

/// Where a host's energy becomes emissions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostPlan {
    pub site: String,
    pub zone: String,
    pub pue: Coefficient,
    /// The zone's yearly factor, used for hours no imported series covers.
    pub grid_default: Coefficient,
    pub market: Option<Coefficient>,
    pub embodied: Option<EmbodiedRate>,
    /// The site's electricity tariff (`crate::cost`), if it has one.
    pub tariff: Option<std::sync::Arc<crate::cost::Tariff>>,
    /// The host's amortised purchase price (`crate::cost::hardware`), if it has one.
    pub hardware: Option<std::sync::Arc<crate::cost::hardware::HardwareRate>>,
}

/// A host's manufacturing emissions per hour of use.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EmbodiedRate {
    /// The server without its GPUs: shared by all the host's energy.
    pub server_ug_per_hour: f64,
    /// The GPUs: shared by the GPU energy (by all energy when no GPU energy was seen).
    pub gpu_ug_per_hour: f64,
    pub coefficient: Coefficient,
}

/// One part of a batch: a project's energy in one hour, and its share of the host's
/// embodied emissions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HourlyDelta {
    /// Start of the hour, Unix seconds.
    pub hour_s: i64,
    pub project: String,
    pub component: Component,
    pub source: SourceKind,
    pub energy_uj: u64,
    pub embodied_ug: u64,
}

/// Operational emissions of `energy_uj` at the meter, in µg CO2e: energy × PUE ×
/// intensity, rounded to the microgram.
pub fn operational_ug(energy_uj: u64, pue: f64, g_per_kwh: f64) -> u64 {
    // uj / 3.6e12 kWh × g/kWh × 1e6 µg/g = uj × g / 3.6e6.
    let ug = energy_uj as f64 * pue * g_per_kwh / 3.6e6;
    if ug.is_finite() && ug > 0.0 {
        ug.round() as u64
    } else {
        0
    }
}

/// The hourly parts of `batch`, with the embodied emissions of its time span.
pub fn batch_deltas(batch: &Batch, embodied: Option<&EmbodiedRate>) -> Vec<HourlyDelta> {
    type Key = (i64, String, Component, SourceKind);
    let mut acc: BTreeMap<Key, u64> = BTreeMap::new();
    let mut weights = Vec::new();
    let mut parts = Vec::new();
    for r in &batch.records {
        if r.energy_uj == 0 || r.end_unix_ms <= r.start_unix_ms {
            continue;
        }
        let first_hour = r.start_unix_ms / MS_PER_HOUR;
        let last_hour = (r.end_unix_ms - 1) / MS_PER_HOUR;
        weights.clear();
        for h in first_hour..=last_hour {
            let from = r.start_unix_ms.max(h * MS_PER_HOUR);
            let to = r.end_unix_ms.min((h + 1) * MS_PER_HOUR);
            weights.push(to - from);
        }
        split_amount(r.energy_uj, &weights, &mut parts);
        for (h, &uj) in (first_hour..=last_hour).zip(parts.iter()) {
            if uj == 0 {
                continue;
            }
            let hour_s = i64::try_from(h * 3600).unwrap_or(i64::MAX);
            *acc.entry((hour_s, r.project.clone(), r.component, r.source))
                .or_default() += uj;
        }
    }
    let mut out: Vec<HourlyDelta> = acc
        .into_iter()
        .map(
            |((hour_s, project, component, source), energy_uj)| HourlyDelta {
                hour_s,
                project,
                component,
                source,
                energy_uj,
                embodied_ug: 0,
            },
        )
        .collect();
    if let Some(rate) = embodied {
        share_embodied(
            &mut out,
            batch.end_unix_ms.saturating_sub(batch.start_unix_ms),
            rate,
        );
    }
    out
}

/// Shares the embodied emissions of `span_ms` of the host between `deltas` by energy.
fn share_embodied(deltas: &mut [HourlyDelta], span_ms: u64, rate: &EmbodiedRate) {
    let hours = span_ms as f64 / MS_PER_HOUR as f64;
    let amount = |per_hour: f64| -> u64 {
        let ug = per_hour * hours;
        if ug.is_finite() && ug > 0.0 {
            ug.round() as u64
        } else {
            0
        }
    };
    let server = amount(rate.server_ug_per_hour);
    let gpu = amount(rate.gpu_ug_per_hour);
    let mut parts = Vec::new();
    let all: Vec<u64> = deltas.iter().map(|d| d.energy_uj).collect();
    if split_amount(server, &all, &mut parts) {
        for (d, p) in deltas.iter_mut().zip(&parts) {
            d.embodied_ug += p;
        }
    }
    let gpu_weights: Vec<u64> = deltas
        .iter()
        .map(|d| {
            if d.component == Component::Gpu {
                d.energy_uj
            } else {
                0
            }
        })
        .collect();
    let weights = if gpu_weights.iter().any(|&w| w > 0) {
        gpu_weights
    } else {
        all
    };
    if split_amount(gpu, &weights, &mut parts) {
        for (d, p) in deltas.iter_mut().zip(&parts) {
            d.embodied_ug += p;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use empreinte_shared::wire::Record;
    use proptest::prelude::*;

    fn record(project: &str, component: Component, start: u64, end: u64, uj: u64) -> Record {
        Record {
            project: project.into(),
            component,
            source: SourceKind::Rapl,
            start_unix_ms: start,
            end_unix_ms: end,
            energy_uj: uj,
            model: None,
        }
    }

    fn batch(start: u64, end: u64, records: Vec<Record>) -> Batch {
        Batch {
            run_id: "0".repeat(32),
            seq: 1,
            start_unix_ms: start,
            end_unix_ms: end,
            records,
            counters: vec![],
            inference: vec![],
        }
    }

    fn rate(server: f64, gpu: f64) -> EmbodiedRate {
        EmbodiedRate {
            server_ug_per_hour: server,
            gpu_ug_per_hour: gpu,
            coefficient: Coefficient {
                kind: CoefficientKind::Embodied,
                subject: "h".into(),
                value: 0.0,
                unit: "gCO2e/h",
                source: "test".into(),
                year: None,
                is_default: false,
                detail: String::new(),
            },
        }
    }

    #[test]
    fn a_record_across_an_hour_boundary_is_split_by_time() {
        let h = 1_000 * MS_PER_HOUR;
        // 3 s before the hour, 1 s after: 3/4 and 1/4 of 1,000,003 µJ.
        let b = batch(
            h - 3_000,
            h + 1_000,
            vec![record("a", Component::Cpu, h - 3_000, h + 1_000, 1_000_003)],
        );
        let d = batch_deltas(&b, None);
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].hour_s, 999 * 3600);
        assert_eq!(d[0].energy_uj, 750_002);
        assert_eq!(d[1].hour_s, 1000 * 3600);
        assert_eq!(d[1].energy_uj, 250_001);
    }

    #[test]
    fn embodied_follows_use_and_gpus_follow_gpu_energy() {
        let h = 10 * MS_PER_HOUR;
        // 15 minutes: a quarter of the hourly rates.
        let b = batch(
            h,
            h + 900_000,
            vec![
                record("chat", Component::Gpu, h, h + 900_000, 3_000),
                record("chat", Component::Cpu, h, h + 900_000, 1_000),
                record("web", Component::Cpu, h, h + 900_000, 4_000),
            ],
        );
        let d = batch_deltas(&b, Some(&rate(8_000.0, 40_000.0)));
        let get = |p: &str, c: Component| {
            d.iter()
                .find(|x| x.project == p && x.component == c)
                .map(|x| x.embodied_ug)
                .unwrap()
        };
        // Server: 2,000 µg by energy 3:1:4 of 8,000 µJ. GPUs: 10,000 µg all to the GPU row.
        assert_eq!(get("chat", Component::Gpu), 750 + 10_000);
        assert_eq!(get("chat", Component::Cpu), 250);
        assert_eq!(get("web", Component::Cpu), 1_000);
    }

    #[test]
    fn operational_emissions_of_a_kwh() {
        // 1 kWh at PUE 1.5 and 56 g/kWh: 84 g.
        assert_eq!(operational_ug(3_600_000_000_000, 1.5, 56.0), 84_000_000);
        assert_eq!(operational_ug(5, 1.0, f64::NAN), 0);
    }

    proptest! {
        #[test]
        fn hourly_parts_add_up_to_the_batch(
            start in 0u64..10 * MS_PER_HOUR,
            len in 1u64..3 * MS_PER_HOUR,
            energies in proptest::collection::vec(0u64..u64::MAX / 64, 1..8),
            server in 0.0f64..1e9,
            gpu in 0.0f64..1e9,
        ) {
            let records: Vec<Record> = energies
                .iter()
                .enumerate()
                .map(|(i, &uj)| record(&format!("p{}", i % 3), if i % 2 == 0 { Component::Gpu } else { Component::Cpu }, start, start + len, uj))
                .collect();
            let b = batch(start, start + len, records);
            let d = batch_deltas(&b, Some(&rate(server, gpu)));
            let total: u128 = d.iter().map(|x| u128::from(x.energy_uj)).sum();
            prop_assert_eq!(total, energies.iter().map(|&e| u128::from(e)).sum::<u128>());
            if total > 0 {
                let hours = len as f64 / MS_PER_HOUR as f64;
                let expected = (server * hours).round() as u64 + (gpu * hours).round() as u64;
                prop_assert_eq!(d.iter().map(|x| x.embodied_ug).sum::<u64>(), expected);
            }
        }
    }
}
