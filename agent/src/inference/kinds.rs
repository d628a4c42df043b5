//! What each server kind counts, and under which names: the counter series of a scrape,
//! by role (requests, input tokens, cached input tokens, output tokens) and model.
//! The names, types and labels were read from each server's own source; where and in
//! which version is in `docs/inference.md`.

use empreinte_shared::wire::InferenceServerKind;

use super::text::Sample;

/// What a counter counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Requests,
    InputTokens,
    CachedInputTokens,
    OutputTokens,
}

impl Role {
    pub const ALL: [Role; 4] = [
        Role::Requests,
        Role::InputTokens,
        Role::CachedInputTokens,
        Role::OutputTokens,
    ];

    pub fn index(self) -> usize {
        self as usize
    }
}

/// One counter of a kind: its sample name and the labels that name the model (the first
/// present wins; none: one model per server).
struct Spec {
    role: Role,
    sample: &'static str,
    model_labels: &'static [&'static str],
}

const fn spec(role: Role, sample: &'static str, model_labels: &'static [&'static str]) -> Spec {
    Spec {
        role,
        sample,
        model_labels,
    }
}

const VLLM: &[Spec] = &[
    spec(
        Role::Requests,
        "vllm:request_success_total",
        &["model_name"],
    ),
    spec(
        Role::InputTokens,
        "vllm:prompt_tokens_total",
        &["model_name"],
    ),
    spec(
        Role::CachedInputTokens,
        "vllm:prefix_cache_hits_total",
        &["model_name"],
    ),
    spec(
        Role::OutputTokens,
        "vllm:generation_tokens_total",
        &["model_name"],
    ),
];
const SGLANG: &[Spec] = &[
    spec(Role::Requests, "sglang:num_requests_total", &["model_name"]),
    spec(
        Role::InputTokens,
        "sglang:prompt_tokens_total",
        &["model_name"],
    ),
    spec(
        Role::CachedInputTokens,
        "sglang:cached_tokens_total",
        &["model_name"],
    ),
    spec(
        Role::OutputTokens,
        "sglang:generation_tokens_total",
        &["model_name"],
    ),
];
// TGI's exporter writes counters without `_total`; token counts are the `_sum` of
// per-request histograms.
const TGI: &[Spec] = &[
    spec(Role::Requests, "tgi_request_success", &[]),
    spec(Role::InputTokens, "tgi_request_input_length_sum", &[]),
    spec(Role::OutputTokens, "tgi_request_generated_tokens_sum", &[]),
];
const TRITON: &[Spec] = &[
    spec(Role::Requests, "nv_inference_request_success", &["model"]),
    spec(Role::InputTokens, "nv_llm_input_token_len_sum", &["model"]),
    spec(
        Role::OutputTokens,
        "nv_llm_output_token_len_sum",
        &["model"],
    ),
];
// llama.cpp counts no requests (only a gauge of those in progress).
const LLAMACPP: &[Spec] = &[
    spec(Role::InputTokens, "llamacpp:prompt_tokens_total", &[]),
    spec(Role::OutputTokens, "llamacpp:tokens_predicted_total", &[]),
];
const LITELLM: &[Spec] = &[
    spec(
        Role::Requests,
        "litellm_proxy_total_requests_metric_total",
        &["requested_model", "model"],
    ),
    spec(
        Role::InputTokens,
        "litellm_input_tokens_metric_total",
        &["requested_model", "model"],
    ),
    spec(
        Role::OutputTokens,
        "litellm_output_tokens_metric_total",
        &["requested_model", "model"],
    ),
];

fn specs(kind: InferenceServerKind) -> &'static [Spec] {
    match kind {
        InferenceServerKind::Vllm => VLLM,
        InferenceServerKind::Sglang => SGLANG,
        InferenceServerKind::Tgi => TGI,
        InferenceServerKind::Triton => TRITON,
        InferenceServerKind::Llamacpp => LLAMACPP,
        InferenceServerKind::Litellm => LITELLM,
    }
}

/// Whether `kind` counts `role` at all (a count it does not keep is `None` on the
/// wire, never 0).
pub fn counts(kind: InferenceServerKind, role: Role) -> bool {
    specs(kind).iter().any(|s| s.role == role)
}

/// The sample names `kind` is read from (for docs and `agent check`).
pub fn sample_names(kind: InferenceServerKind) -> Vec<&'static str> {
    specs(kind).iter().map(|s| s.sample).collect()
}

/// One counter series of a scrape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reading {
    pub role: Role,
    /// From the server's labels; `None` for a server of one unnamed model.
    pub model: Option<String>,
    /// The series' identity within the server: its name and all its labels.
    pub series: String,
    pub value: u64,
}

/// A scrape's counters, and the serving process's start time when the server exports
/// it (`process_start_time_seconds`, Python servers), in milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Extracted {
    pub readings: Vec<Reading>,
    pub process_start_ms: Option<u64>,
}

/// The counter series of `kind` in `samples`. A counter that is negative or not a
/// number is an error naming it (a broken server, not a count).
pub fn extract(kind: InferenceServerKind, samples: &[Sample]) -> Result<Extracted, String> {
    let mut out = Extracted::default();
    for s in samples {
        if s.name == "process_start_time_seconds" && s.value.is_finite() && s.value >= 0.0 {
            out.process_start_ms = Some((s.value * 1000.0).round() as u64);
            continue;
        }
        let Some(spec) = specs(kind).iter().find(|spec| spec.sample == s.name) else {
            continue;
        };
        if !(s.value.is_finite() && s.value >= 0.0) {
            return Err(format!("{} is {}, not a count", s.name, s.value));
        }
        let model = spec
            .model_labels
            .iter()
            .find_map(|l| s.label(l))
            .map(str::to_string);
        let mut labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
        labels.sort();
        out.readings.push(Reading {
            role: spec.role,
            model,
            series: format!("{}{{{}}}", s.name, labels.join(",")),
            value: s.value.round() as u64,
        });
    }
    Ok(out)
}

/// The model a server of one model names in its info endpoint: the path to ask and
/// how to read the answer. `None`: the kind labels its counters with the model.
pub fn info_path(kind: InferenceServerKind) -> Option<&'static str> {
    match kind {
        InferenceServerKind::Tgi => Some("/info"),
        InferenceServerKind::Llamacpp => Some("/v1/models"),
        _ => None,
    }
}

/// The model named in an info answer (`/info`'s `model_id`, `/v1/models`'s first id).
pub fn model_from_info(body: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    let id = v.get("model_id").or_else(|| {
        v.get("data")
            .and_then(|d| d.get(0))
            .and_then(|m| m.get("id"))
    })?;
    id.as_str().map(str::to_string)
}
