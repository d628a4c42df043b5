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

#[path = "wire_checks.rs"]
mod checks;
use checks::Problems;

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
