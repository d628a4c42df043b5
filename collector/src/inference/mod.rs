//! Energy per use of AI: the inference servers' requests and tokens (wire v2) joined to
//! the energy of the records that carry the model they serve.
//!
//! - [`batch_inference`] splits a batch's inference records and its model-tagged energy
//!   over hours (pure: the store writes the parts in the batch's transaction);
//! - [`figures`] groups the stored hours ([`InferenceUnit`]) by project, model, host or
//!   day into per-request and per-token figures (the API and the report share it);
//! - [`api`] serves `GET /api/v1/inference`.
//!
//! Architecture invariant: an hour's counts are the exact integer parts of the records
//! that span it (split by time, adding up to the records), and a count the server does
//! not keep stays `None` end to end — never 0 for "unknown".

pub mod api;
pub mod figures;
pub mod group;

use std::collections::BTreeMap;

use empreinte_shared::Component;
use empreinte_shared::split::split_amount;
use empreinte_shared::wire::{Batch, InferenceServerKind};
use serde::{Deserialize, Serialize};

use crate::footprint::MS_PER_HOUR;

/// Requests and tokens; `None` where the server does not count them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub requests: Option<u64>,
    pub input_tokens: Option<u64>,
    pub cached_input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
}

/// `a + b` where `None` is "not counted": the sum of what was counted (saturating).
pub fn add_count(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (None, None) => None,
        (x, y) => Some(x.unwrap_or(0).saturating_add(y.unwrap_or(0))),
    }
}

impl Counts {
    pub fn add(&mut self, o: &Counts) {
        self.requests = add_count(self.requests, o.requests);
        self.input_tokens = add_count(self.input_tokens, o.input_tokens);
        self.cached_input_tokens = add_count(self.cached_input_tokens, o.cached_input_tokens);
        self.output_tokens = add_count(self.output_tokens, o.output_tokens);
    }

    /// True when something was counted.
    pub fn any(&self) -> bool {
        self.requests.is_some()
            || self.input_tokens.is_some()
            || self.cached_input_tokens.is_some()
            || self.output_tokens.is_some()
    }
}

/// The bit of a server kind in a stored set of kinds.
pub fn server_bit(kind: InferenceServerKind) -> u32 {
    match kind {
        InferenceServerKind::Vllm => 1,
        InferenceServerKind::Sglang => 2,
        InferenceServerKind::Tgi => 4,
        InferenceServerKind::Triton => 8,
        InferenceServerKind::Llamacpp => 16,
        InferenceServerKind::Litellm => 32,
    }
}

/// The names of the kinds in a stored set, in bit order.
pub fn server_names(bits: u32) -> Vec<&'static str> {
    ["vllm", "sglang", "tgi", "triton", "llamacpp", "litellm"]
        .into_iter()
        .enumerate()
        .filter(|(i, _)| bits & (1 << i) != 0)
        .map(|(_, n)| n)
        .collect()
}

/// One batch's inference in one hour, for one project and model.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountsDelta {
    pub hour_s: i64,
    pub project: String,
    pub model: String,
    pub server_kinds: u32,
    pub counts: Counts,
    pub span_ms: u64,
    pub gap_ms: u64,
    pub resets: u64,
    pub allocated: bool,
}

/// One batch's energy tagged with a model, in one hour.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelEnergyDelta {
    pub hour_s: i64,
    pub project: String,
    pub model: String,
    pub component: Component,
    pub energy_uj: u64,
}

/// The hourly parts of a batch's inference (in the store's ingest log, written with
/// postcard: no field may be skipped).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InferenceParts {
    pub counts: Vec<CountsDelta>,
    pub energy: Vec<ModelEnergyDelta>,
}

impl InferenceParts {
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty() && self.energy.is_empty()
    }
}

/// The time each hour of `[start, end)` holds, and the first hour (an empty span is one
/// instant: all of it in the hour of `start`).
fn hour_weights(start: u64, end: u64, weights: &mut Vec<u64>) -> u64 {
    weights.clear();
    let first = start / MS_PER_HOUR;
    if end <= start {
        weights.push(1);
        return first;
    }
    let last = (end - 1) / MS_PER_HOUR;
    for h in first..=last {
        weights.push(end.min((h + 1) * MS_PER_HOUR) - start.max(h * MS_PER_HOUR));
    }
    first
}

fn hour_start_s(h: u64) -> i64 {
    i64::try_from(h.saturating_mul(3600)).unwrap_or(i64::MAX)
}

/// `value` split over `weights` (exactly), `None` staying `None` in every part.
fn split_count(value: Option<u64>, weights: &[u64], out: &mut Vec<u64>) -> Vec<Option<u64>> {
    match value {
        None => vec![None; weights.len()],
        Some(v) => {
            split_amount(v, weights, out);
            out.iter().map(|&p| Some(p)).collect()
        }
    }
}

/// The hourly parts of `batch`'s inference records and of its records that carry a
/// model, summed per hour, project, model (and component for energy). Counts and gap
/// time are split by time like energy; resets go to the hour the record ends in.
pub fn batch_inference(batch: &Batch) -> InferenceParts {
    let mut weights = Vec::new();
    let mut tmp = Vec::new();
    let mut counts: BTreeMap<(i64, String, String), CountsDelta> = BTreeMap::new();
    for r in &batch.inference {
        let first = hour_weights(r.start_unix_ms, r.end_unix_ms, &mut weights);
        let requests = split_count(r.requests, &weights, &mut tmp);
        let input = split_count(r.input_tokens, &weights, &mut tmp);
        let cached = split_count(r.cached_input_tokens, &weights, &mut tmp);
        let output = split_count(r.output_tokens, &weights, &mut tmp);
        let gaps = split_count(Some(r.gap_ms), &weights, &mut tmp);
        let last = weights.len() - 1;
        for (i, &w) in weights.iter().enumerate() {
            let hour_s = hour_start_s(first + i as u64);
            let d = counts
                .entry((hour_s, r.project.clone(), r.model.clone()))
                .or_insert_with(|| CountsDelta {
                    hour_s,
                    project: r.project.clone(),
                    model: r.model.clone(),
                    ..CountsDelta::default()
                });
            d.server_kinds |= server_bit(r.server);
            d.counts.add(&Counts {
                requests: requests[i],
                input_tokens: input[i],
                cached_input_tokens: cached[i],
                output_tokens: output[i],
            });
            if r.end_unix_ms > r.start_unix_ms {
                d.span_ms = d.span_ms.saturating_add(w);
            }
            d.gap_ms = d.gap_ms.saturating_add(gaps[i].unwrap_or(0));
            if i == last {
                d.resets = d.resets.saturating_add(u64::from(r.resets));
            }
            d.allocated |= r.allocated;
        }
    }
    let mut energy: BTreeMap<(i64, String, String, Component), u64> = BTreeMap::new();
    for r in &batch.records {
        let Some(model) = &r.model else { continue };
        if r.energy_uj == 0 || r.end_unix_ms <= r.start_unix_ms {
            continue;
        }
        let first = hour_weights(r.start_unix_ms, r.end_unix_ms, &mut weights);
        split_amount(r.energy_uj, &weights, &mut tmp);
        for (i, &uj) in tmp.iter().enumerate() {
            if uj > 0 {
                let key = (
                    hour_start_s(first + i as u64),
                    r.project.clone(),
                    model.clone(),
                    r.component,
                );
                let e = energy.entry(key).or_default();
                *e = e.saturating_add(uj);
            }
        }
    }
    InferenceParts {
        counts: counts.into_values().collect(),
        energy: energy
            .into_iter()
            .map(
                |((hour_s, project, model, component), energy_uj)| ModelEnergyDelta {
                    hour_s,
                    project,
                    model,
                    component,
                    energy_uj,
                },
            )
            .collect(),
    }
}

/// One stored hour of one model on one host: its counts (all `None` when the hour has
/// model-tagged energy but no counts) and the energy of the records tagged with it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct InferenceUnit {
    pub hour_s: i64,
    pub host: String,
    pub project: String,
    pub model: String,
    pub server_kinds: u32,
    pub counts: Counts,
    pub span_ms: u64,
    pub gap_ms: u64,
    pub resets: u64,
    pub allocated: bool,
    /// Energy of the records tagged with the model (at the meter, without PUE).
    pub energy_uj: u64,
    /// Of it, GPU energy.
    pub gpu_energy_uj: u64,
    /// Operational (location-based, PUE included) and embodied emissions of that energy:
    /// the project's stored emissions of the hour, host and component in proportion to
    /// energy.
    pub co2e_ug: u64,
}

/// All-time counts and model-tagged energy of one project and model.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct InferenceTotal {
    pub project: String,
    pub model: String,
    pub counts: Counts,
    /// Energy of the records tagged with the model, µJ (at the meter).
    pub energy_uj: u64,
}

#[cfg(test)]
mod tests;

/// Starts the collector's inference counters from the store's totals (at every scrape,
/// like the footprint's). A store that keeps no counts (a declared capability, said in
/// the log at start) leaves the series out.
pub async fn seed_metrics(state: &crate::server::AppState) {
    let Some(reads) = state.store.inference_reads() else {
        return;
    };
    match reads.inference_totals().await {
        Ok(totals) => state.metrics.seed_inference(totals),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the stored inference counts; their series are left out of this scrape")
        }
    }
}
