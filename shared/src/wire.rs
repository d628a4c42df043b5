//! The agent-to-collector wire format, version [`WIRE_VERSION`].
//!
//! An agent seals its per-project energy into [`Batch`]es (one per batch interval,
//! written to its on-disk spool as soon as each sampling cycle ends) and sends the
//! batches the collector has not acknowledged yet in one [`Push`], oldest first, as a
//! JSON `POST` to [`INGEST_PATH`] with `Authorization: Bearer <agent token>`.
//!
//! Delivery is at least once, storage exactly once: a batch is named by
//! `(agent_id, run_id, seq)`, which the agent writes to its spool with the batch, so a
//! batch sent again after a lost acknowledgement or an agent restart carries the same
//! name, and the collector stores a name once. The collector answers 200 with a
//! [`PushAck`] only after the whole push is durably stored; a push with any invalid
//! part is refused whole (4xx) and nothing of it is stored.
//!
//! Energy is integer microjoules; times are Unix milliseconds (UTC).

use serde::{Deserialize, Serialize};

use crate::labels::{Component, SourceKind};

/// The version agents of this crate write.
///
/// Version 2 added a record's optional [`Record::model`] and a batch's
/// [`Batch::inference`] records; a version 1 push carries neither.
pub const WIRE_VERSION: u32 = 2;

/// The versions a collector of this crate reads (collectors are upgraded before agents).
/// Other versions are refused with a message naming these.
pub const ACCEPTED_WIRE_VERSIONS: [u32; 2] = [1, 2];

/// Where agents push.
pub const INGEST_PATH: &str = "/api/v1/ingest";

/// One HTTP request from an agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Push {
    pub version: u32,
    pub agent: AgentInfo,
    /// The state of the agent's spool when the push was made (for the collector's
    /// spool-lag metrics).
    pub spool: SpoolStatus,
    /// Oldest first.
    pub batches: Vec<Batch>,
}

/// Who is pushing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentInfo {
    /// The host's name in the footprint (by default the host name). The collector
    /// requires it to be the agent its token was issued for.
    pub agent_id: String,
    /// The operating system's host name, for display.
    pub hostname: String,
    /// The agent's version (`CARGO_PKG_VERSION`).
    pub agent_version: String,
}

/// The agent's spool as it was when the push was made.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolStatus {
    /// Sealed batches not acknowledged yet, this push's included.
    pub batches: u64,
    /// Their size on disk.
    pub bytes: u64,
    /// Start of the oldest unacknowledged batch.
    pub oldest_start_unix_ms: Option<u64>,
    /// Batches dropped because the spool went over its size or age limit, since the
    /// agent started: energy that will never reach the collector.
    pub dropped_batches_total: u64,
}

/// The energy of one agent run over one batch interval.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    /// New on every agent start: 32 lowercase hexadecimal digits.
    pub run_id: String,
    /// 1, 2, 3… within the run, one per batch.
    pub seq: u64,
    pub start_unix_ms: u64,
    pub end_unix_ms: u64,
    /// Energy per project, component and source over sampling intervals inside
    /// `[start_unix_ms, end_unix_ms]`.
    pub records: Vec<Record>,
    /// The run's cumulative energy per project, component and source at `end_unix_ms`
    /// (the agent's `empreinte_project_energy_joules_total`, in µJ). The collector keeps
    /// the latest ones to check that nothing of a run is missing.
    pub counters: Vec<Counter>,
    /// Requests and tokens counted by the inference servers over spans inside
    /// `[start_unix_ms, end_unix_ms]` (version 2).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inference: Vec<InferenceRecord>,
}

/// A project's energy for one component and source over a time span.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub project: String,
    pub component: Component,
    pub source: SourceKind,
    pub start_unix_ms: u64,
    pub end_unix_ms: u64,
    pub energy_uj: u64,
    /// The model this energy served (version 2; same limits as a project name). `None`:
    /// energy not tied to a model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// The kind of inference server a count was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InferenceServerKind {
    Vllm,
    Sglang,
    Tgi,
    Triton,
    Llamacpp,
    Litellm,
}

impl InferenceServerKind {
    pub const ALL: [InferenceServerKind; 6] = [
        InferenceServerKind::Vllm,
        InferenceServerKind::Sglang,
        InferenceServerKind::Tgi,
        InferenceServerKind::Triton,
        InferenceServerKind::Llamacpp,
        InferenceServerKind::Litellm,
    ];

    /// The wire's (and the configuration's) name: `vllm`, `sglang`, `tgi`, `triton`,
    /// `llamacpp`, `litellm`.
    pub fn as_str(self) -> &'static str {
        match self {
            InferenceServerKind::Vllm => "vllm",
            InferenceServerKind::Sglang => "sglang",
            InferenceServerKind::Tgi => "tgi",
            InferenceServerKind::Triton => "triton",
            InferenceServerKind::Llamacpp => "llamacpp",
            InferenceServerKind::Litellm => "litellm",
        }
    }

    /// The kind named `name`, if any.
    pub fn parse(name: &str) -> Option<InferenceServerKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

impl std::fmt::Display for InferenceServerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one inference server counted for one project and model over a span (version 2).
///
/// A count is `None` when the server does not count it (never 0 for "unknown"). Counts
/// are differences of the server's cumulative counters: never negative, a counter reset
/// (a restart) counts the new value, and time the server could not be read is `gap_ms`
/// (its counts are carried by the next successful read).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferenceRecord {
    pub project: String,
    pub model: String,
    pub server: InferenceServerKind,
    pub start_unix_ms: u64,
    pub end_unix_ms: u64,
    pub requests: Option<u64>,
    pub input_tokens: Option<u64>,
    /// Input tokens served from a prefix cache (part of `input_tokens`).
    pub cached_input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    /// Time inside the span when the server could not be read.
    pub gap_ms: u64,
    /// Counter resets (server restarts) seen inside the span.
    pub resets: u32,
    /// True when this model's energy was split from a process serving several models
    /// (by output tokens, else requests).
    pub allocated: bool,
}

/// A run's cumulative energy for one project, component and source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Counter {
    pub project: String,
    pub component: Component,
    pub source: SourceKind,
    pub total_uj: u64,
}

/// The collector's answer to a stored push.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushAck {
    /// Batches stored by this push.
    pub accepted: u64,
    /// Batches already stored before (a replay), ignored.
    pub duplicates: u64,
}

/// What a collector accepts; everything outside is refused with a [`WireProblem`].
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    pub max_batches_per_push: usize,
    pub max_records_per_batch: usize,
    /// The most a host can draw, all components together.
    pub max_host_power_watts: f64,
    /// The longest batch.
    pub max_batch_span_ms: u64,
    /// How far in the future (by the collector's clock) a batch may end.
    pub max_clock_skew_ms: u64,
    /// The oldest batch start accepted (by the collector's clock): older data is
    /// refused rather than silently stored into a closed period.
    pub max_age_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_batches_per_push: 1_000,
            max_records_per_batch: 10_000,
            // A DGX B200 is rated at 14.3 kW; 50 kW leaves room for the largest hosts
            // while refusing a counter read as the wrong unit.
            max_host_power_watts: 50_000.0,
            max_batch_span_ms: 3_600_000,
            max_clock_skew_ms: 300_000,
            max_age_ms: 400 * 86_400_000,
        }
    }
}

/// One thing wrong with a push: where (a path such as `batches[2].records[0].energy_uj`)
/// and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireProblem {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for WireProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// The largest integer a collector stores (`i64::MAX`): energy, counters, sequence
/// numbers and their sums stay at or below it.
pub const MAX_STORED: u64 = i64::MAX as u64;

/// The longest project name accepted.
pub const MAX_NAME_LEN: usize = 128;

/// Checks a project or agent name: 1 to [`MAX_NAME_LEN`] bytes, no control characters.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "is {} bytes long; at most {MAX_NAME_LEN} are allowed",
            name.len()
        ));
    }
    if name.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(())
}

/// `name` made acceptable to [`check_name`], as the agent seals it: control characters
/// become `_`, a name longer than [`MAX_NAME_LEN`] *bytes* is cut at the last character
/// boundary that fits (a name of 100 "é" is 200 bytes), an empty name becomes `_`.
/// Borrowed when `name` is already acceptable.
pub fn fit_name(name: &str) -> std::borrow::Cow<'_, str> {
    if check_name(name).is_ok() {
        return std::borrow::Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(name.len().min(MAX_NAME_LEN));
    for c in name.chars() {
        let c = if c.is_control() { '_' } else { c };
        if out.len() + c.len_utf8() > MAX_NAME_LEN {
            break;
        }
        out.push(c);
    }
    if out.is_empty() {
        out.push('_');
    }
    std::borrow::Cow::Owned(out)
}

/// Checks a run id: 32 lowercase hexadecimal digits.
pub fn check_run_id(id: &str) -> Result<(), String> {
    if id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(format!(
            "{id:?} is not a run id: 32 lowercase hexadecimal digits are expected"
        ))
    }
}

impl Batch {
    /// Every problem a collector of this version finds in this batch pushed alone, by any
    /// clock (the checks of [`Push::problems`], with "now" at the batch's end). The agent
    /// runs it before it seals a batch, so it never spools what the collector refuses.
    pub fn problems(&self, limits: &Limits) -> Vec<WireProblem> {
        let push = Push {
            version: WIRE_VERSION,
            agent: AgentInfo {
                agent_id: "agent".into(),
                hostname: String::new(),
                agent_version: String::new(),
            },
            spool: SpoolStatus::default(),
            batches: vec![self.clone()],
        };
        push.problems(limits, self.end_unix_ms)
    }
}

impl Push {
    /// Every problem of this push against `limits`, at `now_unix_ms` by the receiver's
    /// clock. Empty when the push can be stored.
    pub fn problems(&self, limits: &Limits, now_unix_ms: u64) -> Vec<WireProblem> {
        let mut out = Problems::default();
        self.check_header(&mut out);
        self.check_stored_range(&mut out);
        if self.batches.len() > limits.max_batches_per_push {
            out.add(
                "batches".into(),
                format!(
                    "{} batches in one push; at most {} are allowed",
                    self.batches.len(),
                    limits.max_batches_per_push
                ),
            );
        }
        for (b, batch) in self.batches.iter().enumerate() {
            batch.check_span(b, limits, now_unix_ms, &mut out);
            batch.check_records(b, limits, &mut out);
            batch.check_inference(b, limits, &mut out);
            if self.version < 2 {
                batch.check_v1_only(b, &mut out);
            }
        }
        out.0
    }

    /// The version and who pushes.
    fn check_header(&self, out: &mut Problems) {
        if !ACCEPTED_WIRE_VERSIONS.contains(&self.version) {
            out.add(
                "version".into(),
                format!(
                    "version {} is not supported; this collector accepts versions {ACCEPTED_WIRE_VERSIONS:?}",
                    self.version
                ),
            );
        }
        if let Err(m) = check_name(&self.agent.agent_id) {
            out.add("agent.agent_id".into(), m);
        }
        for (path, text) in [
            ("agent.hostname", &self.agent.hostname),
            ("agent.agent_version", &self.agent.agent_version),
        ] {
            if text.len() > MAX_NAME_LEN || text.chars().any(char::is_control) {
                out.add(
                    path.into(),
                    format!("at most {MAX_NAME_LEN} bytes and no control characters are allowed"),
                );
            }
        }
    }

    /// Everything is stored as a signed 64-bit integer: larger values are refused.
    fn check_stored_range(&self, out: &mut Problems) {
        out.past_i64("spool.batches".into(), self.spool.batches);
        out.past_i64("spool.bytes".into(), self.spool.bytes);
        out.past_i64(
            "spool.dropped_batches_total".into(),
            self.spool.dropped_batches_total,
        );
        out.past_i64(
            "spool.oldest_start_unix_ms".into(),
            self.spool.oldest_start_unix_ms.unwrap_or(0),
        );
        for (b, batch) in self.batches.iter().enumerate() {
            out.past_i64(format!("batches[{b}].seq"), batch.seq);
            for (c, counter) in batch.counters.iter().enumerate() {
                out.past_i64(
                    format!("batches[{b}].counters[{c}].total_uj"),
                    counter.total_uj,
                );
            }
            let mut sum: u128 = 0;
            for (r, rec) in batch.records.iter().enumerate() {
                out.past_i64(
                    format!("batches[{b}].records[{r}].energy_uj"),
                    rec.energy_uj,
                );
                sum += u128::from(rec.energy_uj);
            }
            if sum > u128::from(MAX_STORED) {
                out.past_i64(
                    format!("batches[{b}].records"),
                    u64::try_from(sum).unwrap_or(u64::MAX),
                );
            }
        }
    }
}

/// The problems found so far.
#[derive(Default)]
struct Problems(Vec<WireProblem>);

impl Problems {
    fn add(&mut self, path: String, message: String) {
        self.0.push(WireProblem { path, message });
    }

    fn past_i64(&mut self, path: String, v: u64) {
        if v > MAX_STORED {
            self.add(
                path,
                format!("{v} is more than {MAX_STORED}, the largest value stored"),
            );
        }
    }

    /// A span `[start, end]` that must be non-empty and inside its batch's.
    fn span_inside(
        &mut self,
        at: &dyn Fn(&str) -> String,
        what: &str,
        span: [u64; 2],
        batch: &Batch,
    ) {
        let [start, end] = span;
        if end <= start {
            self.add(
                at("end_unix_ms"),
                format!("{end} is not after start_unix_ms {start}"),
            );
        }
        if start < batch.start_unix_ms || end > batch.end_unix_ms {
            self.add(
                at("start_unix_ms"),
                format!(
                    "the {what} spans [{start}, {end}], outside its batch [{}, {}]",
                    batch.start_unix_ms, batch.end_unix_ms
                ),
            );
        }
    }
}

impl Batch {
    /// Its name, its span against its own limits and the receiver's clock.
    fn check_span(&self, b: usize, limits: &Limits, now_unix_ms: u64, out: &mut Problems) {
        let at = |field: &str| format!("batches[{b}].{field}");
        if let Err(m) = check_run_id(&self.run_id) {
            out.add(at("run_id"), m);
        }
        if self.seq == 0 {
            out.add(at("seq"), "sequence numbers start at 1".into());
        }
        let span = self.end_unix_ms.saturating_sub(self.start_unix_ms);
        if self.end_unix_ms <= self.start_unix_ms {
            out.add(
                at("end_unix_ms"),
                format!(
                    "{} is not after start_unix_ms {}",
                    self.end_unix_ms, self.start_unix_ms
                ),
            );
        } else if span > limits.max_batch_span_ms {
            out.add(
                at("end_unix_ms"),
                format!(
                    "the batch spans {span} ms; at most {} ms are allowed",
                    limits.max_batch_span_ms
                ),
            );
        }
        if self.end_unix_ms > now_unix_ms.saturating_add(limits.max_clock_skew_ms) {
            out.add(
                at("end_unix_ms"),
                format!(
                    "{} is {} ms in the future by the collector's clock; at most {} ms of clock skew are allowed",
                    self.end_unix_ms,
                    self.end_unix_ms - now_unix_ms,
                    limits.max_clock_skew_ms
                ),
            );
        }
        if self.start_unix_ms < now_unix_ms.saturating_sub(limits.max_age_ms) {
            out.add(
                at("start_unix_ms"),
                format!(
                    "{} is older than the {} days this collector accepts",
                    self.start_unix_ms,
                    limits.max_age_ms / 86_400_000
                ),
            );
        }
    }

    /// The energy records and counters: names, spans, the host's power.
    fn check_records(&self, b: usize, limits: &Limits, out: &mut Problems) {
        if self.records.len() > limits.max_records_per_batch {
            out.add(
                format!("batches[{b}].records"),
                format!(
                    "{} records in one batch; at most {} are allowed",
                    self.records.len(),
                    limits.max_records_per_batch
                ),
            );
        }
        let mut total: u128 = 0;
        for (r, rec) in self.records.iter().enumerate() {
            let at = |field: &str| format!("batches[{b}].records[{r}].{field}");
            if let Err(m) = check_name(&rec.project) {
                out.add(at("project"), m);
            }
            if let Some(Err(m)) = rec.model.as_deref().map(check_name) {
                out.add(at("model"), m);
            }
            out.span_inside(&at, "record", [rec.start_unix_ms, rec.end_unix_ms], self);
            total += u128::from(rec.energy_uj);
        }
        let span = self.end_unix_ms.saturating_sub(self.start_unix_ms);
        if span > 0 {
            // µJ / ms = mW.
            let watts = total as f64 / span as f64 / 1e3;
            if watts > limits.max_host_power_watts {
                out.add(
                    format!("batches[{b}].records"),
                    format!(
                        "{total} µJ over {span} ms is a mean power of {watts:.0} W, more than the {:.0} W a host can draw (max_host_power_watts)",
                        limits.max_host_power_watts
                    ),
                );
            }
        }
        for (c, counter) in self.counters.iter().enumerate() {
            if let Err(m) = check_name(&counter.project) {
                out.add(format!("batches[{b}].counters[{c}].project"), m);
            }
        }
    }

    /// The inference records: names, spans, gaps, counts.
    fn check_inference(&self, b: usize, limits: &Limits, out: &mut Problems) {
        if self.inference.len() > limits.max_records_per_batch {
            out.add(
                format!("batches[{b}].inference"),
                format!(
                    "{} inference records in one batch; at most {} are allowed",
                    self.inference.len(),
                    limits.max_records_per_batch
                ),
            );
        }
        for (i, rec) in self.inference.iter().enumerate() {
            let at = |field: &str| format!("batches[{b}].inference[{i}].{field}");
            if let Err(m) = check_name(&rec.project) {
                out.add(at("project"), m);
            }
            if let Err(m) = check_name(&rec.model) {
                out.add(at("model"), m);
            }
            out.span_inside(
                &at,
                "inference record",
                [rec.start_unix_ms, rec.end_unix_ms],
                self,
            );
            let span = rec.end_unix_ms.saturating_sub(rec.start_unix_ms);
            if rec.gap_ms > span {
                out.add(
                    at("gap_ms"),
                    format!(
                        "{} ms of gap is more than the record's span of {span} ms",
                        rec.gap_ms
                    ),
                );
            }
            for (field, count) in [
                ("requests", rec.requests),
                ("input_tokens", rec.input_tokens),
                ("cached_input_tokens", rec.cached_input_tokens),
                ("output_tokens", rec.output_tokens),
            ] {
                out.past_i64(at(field), count.unwrap_or(0));
            }
            if let (Some(cached), Some(input)) = (rec.cached_input_tokens, rec.input_tokens) {
                if cached > input {
                    out.add(
                        at("cached_input_tokens"),
                        format!(
                            "{cached} cached input tokens are more than the {input} input tokens"
                        ),
                    );
                }
            }
        }
    }

    /// A version 1 push carries none of version 2's fields.
    fn check_v1_only(&self, b: usize, out: &mut Problems) {
        if !self.inference.is_empty() {
            out.add(
                format!("batches[{b}].inference"),
                "inference records need wire version 2; this push says version 1".into(),
            );
        }
        for (r, rec) in self.records.iter().enumerate() {
            if rec.model.is_some() {
                out.add(
                    format!("batches[{b}].records[{r}].model"),
                    "a record's model needs wire version 2; this push says version 1".into(),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_790_000_000_000;

    fn push(energy_uj: u64, span_ms: u64) -> Push {
        Push {
            version: WIRE_VERSION,
            agent: AgentInfo {
                agent_id: "web-01".into(),
                hostname: "web-01".into(),
                agent_version: "0.1.0".into(),
            },
            spool: SpoolStatus::default(),
            batches: vec![Batch {
                run_id: "0123456789abcdef0123456789abcdef".into(),
                seq: 1,
                start_unix_ms: NOW - span_ms,
                end_unix_ms: NOW,
                records: vec![Record {
                    project: "chatbot".into(),
                    component: Component::Gpu,
                    source: SourceKind::Nvml,
                    start_unix_ms: NOW - span_ms,
                    end_unix_ms: NOW,
                    energy_uj,
                    model: None,
                }],
                counters: vec![],
                inference: vec![],
            }],
        }
    }

    #[test]
    fn a_plausible_push_has_no_problem() {
        // 700 W for 15 s.
        assert_eq!(
            push(10_500_000_000, 15_000).problems(&Limits::default(), NOW),
            vec![]
        );
    }

    #[test]
    fn more_power_than_a_host_can_draw_is_named() {
        // 100 kW for 10 s.
        let p = push(1_000_000_000_000, 10_000).problems(&Limits::default(), NOW);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].path, "batches[0].records");
        assert!(p[0].message.contains("100000 W"), "{}", p[0]);
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let mut p = push(1, 1_000);
        p.version = 9;
        p.batches[0].run_id = "nope".into();
        p.batches[0].seq = 0;
        p.batches[0].records[0].project = String::new();
        p.batches[0].records[0].start_unix_ms = NOW - 5_000;
        p.batches[0].end_unix_ms = NOW + 3_600_000;
        let paths: Vec<String> = p
            .problems(&Limits::default(), NOW)
            .into_iter()
            .map(|p| p.path)
            .collect();
        for expected in [
            "version",
            "batches[0].run_id",
            "batches[0].seq",
            "batches[0].end_unix_ms",
            "batches[0].records[0].project",
            "batches[0].records[0].start_unix_ms",
        ] {
            assert!(
                paths.iter().any(|p| p == expected),
                "{expected} missing from {paths:?}"
            );
        }
    }

    #[test]
    fn values_past_what_is_stored_are_refused_with_their_path() {
        let mut p = push(10_500_000_000, 15_000);
        p.batches[0].seq = u64::MAX;
        p.batches[0].counters.push(Counter {
            project: "chatbot".into(),
            component: Component::Gpu,
            source: SourceKind::Nvml,
            total_uj: u64::MAX,
        });
        p.agent.hostname = "web\u{1b}[2J".into();
        let paths: Vec<String> = p
            .problems(&Limits::default(), NOW)
            .into_iter()
            .map(|p| p.path)
            .collect();
        assert_eq!(
            paths,
            [
                "agent.hostname",
                "batches[0].seq",
                "batches[0].counters[0].total_uj"
            ]
        );
        // i64::MAX itself is fine.
        let mut ok = push(10_500_000_000, 15_000);
        ok.batches[0].seq = MAX_STORED;
        assert_eq!(ok.problems(&Limits::default(), NOW), vec![]);
    }

    #[test]
    fn names_are_measured_in_bytes_and_fitted_to_the_wire() {
        let e100 = "é".repeat(100);
        assert_eq!(e100.chars().count(), 100);
        assert!(check_name(&e100).is_err(), "200 bytes");
        let fitted = fit_name(&e100);
        assert_eq!(fitted.len(), 128);
        assert_eq!(fitted, "é".repeat(64));
        assert_eq!(check_name(&fitted), Ok(()));
        assert_eq!(fit_name("a\u{7}b"), "a_b");
        assert_eq!(fit_name(""), "_");
        assert!(matches!(
            fit_name("chatbot"),
            std::borrow::Cow::Borrowed("chatbot")
        ));
        // A batch carrying such a name has a problem alone, by any clock.
        let mut p = push(1, 1_000);
        p.batches[0].records[0].project = e100;
        let problems = p.batches[0].problems(&Limits::default());
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].path, "batches[0].records[0].project");
        // 200 kJ in one second: 200 kW, more than a host draws.
        let p = push(200_000_000_000, 1_000);
        assert_eq!(p.batches[0].problems(&Limits::default()).len(), 1);
        assert_eq!(
            push(1, 1_000).batches[0].problems(&Limits::default()),
            vec![]
        );
    }

    #[test]
    fn the_json_form_is_stable() {
        let text = serde_json::to_string(&push(5, 1_000)).unwrap_or_default();
        assert!(
            text.contains(r#""component":"gpu","source":"nvml""#),
            "{text}"
        );
        let back: Push = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, push(5, 1_000));
        // Negative energy cannot be represented.
        let negative = text.replace(r#""energy_uj":5"#, r#""energy_uj":-5"#);
        assert!(serde_json::from_str::<Push>(&negative).is_err());
    }

    fn inference(start: u64, end: u64) -> InferenceRecord {
        InferenceRecord {
            project: "chatbot".into(),
            model: "mistral-7b".into(),
            server: InferenceServerKind::Vllm,
            start_unix_ms: start,
            end_unix_ms: end,
            requests: Some(12),
            input_tokens: Some(3_000),
            cached_input_tokens: None,
            output_tokens: Some(900),
            gap_ms: 0,
            resets: 0,
            allocated: false,
        }
    }

    #[test]
    fn a_v2_push_with_models_and_inference_records_is_accepted() {
        let mut p = push(10_500_000_000, 15_000);
        p.batches[0].records[0].model = Some("mistral-7b".into());
        p.batches[0].inference.push(inference(NOW - 15_000, NOW));
        assert_eq!(p.version, 2);
        assert_eq!(p.problems(&Limits::default(), NOW), vec![]);
        let text = serde_json::to_string(&p).unwrap_or_default();
        assert!(text.contains(r#""server":"vllm""#), "{text}");
        assert!(text.contains(r#""cached_input_tokens":null"#), "{text}");
        let back: Push = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, p);
        // Every kind spells as the configuration and the wire name it.
        for kind in InferenceServerKind::ALL {
            let json = serde_json::to_string(&kind).unwrap_or_default();
            assert_eq!(json, format!("\"{kind}\""));
            assert_eq!(InferenceServerKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(InferenceServerKind::parse("ollama"), None);
    }

    #[test]
    fn a_v1_push_is_accepted_and_written_without_v2_fields() {
        let mut p = push(10_500_000_000, 15_000);
        p.version = 1;
        assert_eq!(p.problems(&Limits::default(), NOW), vec![]);
        let text = serde_json::to_string(&p).unwrap_or_default();
        assert!(!text.contains("model"), "{text}");
        assert!(!text.contains("inference"), "{text}");
        // What a v1 agent wrote (no v2 field at all) reads back.
        let back: Push = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, p);
        // A v1 push carrying a v2 field is refused, naming the field.
        p.batches[0].records[0].model = Some("mistral-7b".into());
        p.batches[0].inference.push(inference(NOW - 15_000, NOW));
        let paths: Vec<String> = p
            .problems(&Limits::default(), NOW)
            .into_iter()
            .map(|p| p.path)
            .collect();
        assert_eq!(
            paths,
            ["batches[0].inference", "batches[0].records[0].model"]
        );
        p.version = 3;
        let problems = p.problems(&Limits::default(), NOW);
        assert_eq!(problems[0].path, "version");
        assert!(problems[0].message.contains("[1, 2]"), "{}", problems[0]);
    }

    #[test]
    fn every_problem_of_an_inference_record_is_named() {
        let mut p = push(10_500_000_000, 15_000);
        p.batches[0].records[0].model = Some(String::new());
        let mut bad = inference(NOW - 20_000, NOW - 15_000);
        bad.project = "a\u{7}".into();
        bad.model = "m".repeat(200);
        bad.gap_ms = 6_000;
        bad.requests = Some(u64::MAX);
        bad.input_tokens = Some(10);
        bad.cached_input_tokens = Some(11);
        bad.output_tokens = Some(MAX_STORED + 1);
        p.batches[0].inference.push(bad);
        let mut empty = inference(NOW - 1_000, NOW - 1_000);
        empty.input_tokens = None;
        empty.cached_input_tokens = Some(5);
        p.batches[0].inference.push(empty);
        let paths: Vec<String> = p
            .problems(&Limits::default(), NOW)
            .into_iter()
            .map(|p| p.path)
            .collect();
        assert_eq!(
            paths,
            [
                "batches[0].records[0].model",
                "batches[0].inference[0].project",
                "batches[0].inference[0].model",
                "batches[0].inference[0].start_unix_ms",
                "batches[0].inference[0].gap_ms",
                "batches[0].inference[0].requests",
                "batches[0].inference[0].output_tokens",
                "batches[0].inference[0].cached_input_tokens",
                "batches[0].inference[1].end_unix_ms",
            ]
        );
        let limits = Limits {
            max_records_per_batch: 1,
            ..Limits::default()
        };
        let mut p = push(10_500_000_000, 15_000);
        p.batches[0].inference = vec![inference(NOW - 15_000, NOW); 2];
        let problems = p.problems(&limits, NOW);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].path, "batches[0].inference");
        // Unknown fields in an inference record are refused like everywhere else.
        let text = serde_json::to_string(&p).unwrap_or_default().replacen(
            r#""allocated":false"#,
            r#""allocated":false,"watts":3"#,
            1,
        );
        assert!(serde_json::from_str::<Push>(&text).is_err());
    }
}
