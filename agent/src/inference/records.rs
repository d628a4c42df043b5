//! From what the servers counted to the wire's inference records, and how a batch
//! merges them.

use std::collections::BTreeMap;
use std::sync::Arc;

use empreinte_shared::wire::{InferenceRecord, InferenceServerKind, fit_name};

use super::ServerTake;
use super::kinds::{Role, counts};

/// One record per model of each server, over `[start_ms, end_ms]`. A server's project is
/// the configured one, else `project_of(pid)` (the attribution's), else `fallback`.
pub fn build(
    takes: &[ServerTake],
    start_ms: u64,
    end_ms: u64,
    project_of: &dyn Fn(u32) -> Option<Arc<str>>,
    fallback: &str,
) -> Vec<InferenceRecord> {
    let mut out = Vec::new();
    let span = end_ms.saturating_sub(start_ms);
    for t in takes {
        let project: Arc<str> = t
            .info
            .project
            .clone()
            .or_else(|| t.info.pid.and_then(project_of))
            .unwrap_or_else(|| Arc::from(fallback));
        let allocated = t.taken.models.len() > 1;
        let count = |c: &[u64; 4], role: Role| counts(t.info.kind, role).then_some(c[role.index()]);
        for (model, c) in &t.taken.models {
            out.push(InferenceRecord {
                project: fit_name(&project).into_owned(),
                model: fit_name(model).into_owned(),
                server: t.info.kind,
                start_unix_ms: start_ms,
                end_unix_ms: end_ms,
                requests: count(&c.counts, Role::Requests),
                input_tokens: count(&c.counts, Role::InputTokens),
                cached_input_tokens: count(&c.counts, Role::CachedInputTokens),
                output_tokens: count(&c.counts, Role::OutputTokens),
                gap_ms: t.taken.gap_ms.min(span),
                resets: t.taken.resets,
                allocated,
            });
        }
    }
    out
}

/// The gap time of each server's take past the span `[start_ms, end_ms]` (a record's gap
/// is at most its span, and [`build`] caps it): `(server id, ms)` to carry to the next take.
pub fn excess_gaps(takes: &[ServerTake], start_ms: u64, end_ms: u64) -> Vec<(u64, u64)> {
    let span = end_ms.saturating_sub(start_ms);
    takes
        .iter()
        .filter(|t| !t.taken.models.is_empty() && t.taken.gap_ms > span)
        .map(|t| (t.id, t.taken.gap_ms - span))
        .collect()
}

/// A batch's inference records, one per (project, model, server).
pub type Merged = BTreeMap<(String, String, InferenceServerKind), InferenceRecord>;

fn add(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(0).saturating_add(b.unwrap_or(0))),
    }
}

/// Adds `rec` to `merged`, its span cut to `[start_ms, end_ms]` (the batch's): counts
/// add up, spans widen, gaps and resets add up.
pub fn merge(merged: &mut Merged, mut rec: InferenceRecord, start_ms: u64, end_ms: u64) {
    rec.start_unix_ms = rec.start_unix_ms.clamp(start_ms, end_ms);
    rec.end_unix_ms = rec.end_unix_ms.clamp(start_ms, end_ms);
    if rec.end_unix_ms <= rec.start_unix_ms {
        rec.start_unix_ms = start_ms;
        rec.end_unix_ms = end_ms;
    }
    let key = (rec.project.clone(), rec.model.clone(), rec.server);
    match merged.get_mut(&key) {
        None => {
            rec.gap_ms = rec.gap_ms.min(rec.end_unix_ms - rec.start_unix_ms);
            merged.insert(key, rec);
        }
        Some(m) => {
            m.start_unix_ms = m.start_unix_ms.min(rec.start_unix_ms);
            m.end_unix_ms = m.end_unix_ms.max(rec.end_unix_ms);
            m.requests = add(m.requests, rec.requests);
            m.input_tokens = add(m.input_tokens, rec.input_tokens);
            m.cached_input_tokens = add(m.cached_input_tokens, rec.cached_input_tokens);
            m.output_tokens = add(m.output_tokens, rec.output_tokens);
            m.gap_ms = m
                .gap_ms
                .saturating_add(rec.gap_ms)
                .min(m.end_unix_ms - m.start_unix_ms);
            m.resets = m.resets.saturating_add(rec.resets);
            m.allocated |= rec.allocated;
        }
    }
}
