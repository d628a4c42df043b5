//! The inference servers' families of the agent's `/metrics`: each server's health and
//! what the agent counted per project, model and server kind since it started (the
//! same figures it pushes).

use std::collections::BTreeMap;
use std::sync::Arc;

use empreinte_shared::exposition::Family;
use empreinte_shared::wire::{InferenceRecord, InferenceServerKind};
use prometheus::proto::{MetricFamily, MetricType};

use super::ServerInfo;
use super::kinds::{Role, counts};

/// What the agent counted since it started, per (project, model, server kind):
/// requests, input, cached input and output tokens.
pub type CountedTotals = BTreeMap<(Arc<str>, Arc<str>, InferenceServerKind), [u64; 4]>;

/// Adds a cycle's records to `totals`.
pub fn count(totals: &mut CountedTotals, records: &[InferenceRecord]) {
    for r in records {
        let t = totals
            .entry((
                Arc::from(r.project.as_str()),
                Arc::from(r.model.as_str()),
                r.server,
            ))
            .or_default();
        for (slot, v) in t.iter_mut().zip([
            r.requests,
            r.input_tokens,
            r.cached_input_tokens,
            r.output_tokens,
        ]) {
            *slot = slot.saturating_add(v.unwrap_or(0));
        }
    }
}

/// The families for `servers` and `totals`.
pub fn families(servers: &[ServerInfo], totals: &CountedTotals) -> Vec<MetricFamily> {
    use MetricType::{COUNTER, GAUGE};
    let mut up = Family::new(
        "empreinte_inference_server_up",
        "1 if the last read of an inference server's metrics succeeded, 0 otherwise.",
        GAUGE,
    );
    let mut errors = Family::new(
        "empreinte_inference_scrape_errors_total",
        "Failed reads of an inference server's metrics since the agent started (the time is recorded as gap_ms in the pushed records).",
        COUNTER,
    );
    for s in servers {
        let labels = [("server", s.kind.as_str()), ("url", s.url.as_str())];
        up.push(&labels, if s.up { 1.0 } else { 0.0 });
        errors.push(&labels, s.scrape_errors_total as f64);
    }
    let mut requests = Family::new(
        "empreinte_inference_requests_total",
        "Requests an inference server counted since the agent started, per project, model and server kind (the servers that count them).",
        COUNTER,
    );
    let mut tokens = Family::new(
        "empreinte_inference_tokens_total",
        "Tokens an inference server counted since the agent started, per project, model, server kind and kind of token (input, cached_input: part of input, output).",
        COUNTER,
    );
    for ((project, model, server), t) in totals {
        let base = [
            ("project", &**project),
            ("model", &**model),
            ("server", server.as_str()),
        ];
        // A count the server kind does not keep has no series (never a 0).
        let kept = |role: Role| counts(*server, role);
        if kept(Role::Requests) {
            requests.push(&base, t[0] as f64);
        }
        for (kind, v, role) in [
            ("input", t[1], Role::InputTokens),
            ("cached_input", t[2], Role::CachedInputTokens),
            ("output", t[3], Role::OutputTokens),
        ] {
            if !kept(role) {
                continue;
            }
            let mut labels = base.to_vec();
            labels.push(("kind", kind));
            tokens.push(&labels, v as f64);
        }
    }
    [up, errors, requests, tokens]
        .into_iter()
        .map(|f| f.0)
        .filter(|f| !f.get_metric().is_empty())
        .collect()
}
