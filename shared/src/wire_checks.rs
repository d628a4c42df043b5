//! The checks of [`Push::problems`](super::Push::problems), part by part: a batch's
//! name and span, its energy records, its inference records, and what a version 1 push
//! may not carry.

use super::{Batch, Limits, MAX_STORED, WireProblem, check_name, check_run_id};

/// The problems found so far.
#[derive(Default)]
pub(super) struct Problems(pub(super) Vec<WireProblem>);

impl Problems {
    pub(super) fn add(&mut self, path: String, message: String) {
        self.0.push(WireProblem { path, message });
    }

    pub(super) fn past_i64(&mut self, path: String, v: u64) {
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
    pub(super) fn check_span(
        &self,
        b: usize,
        limits: &Limits,
        now_unix_ms: u64,
        out: &mut Problems,
    ) {
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
    pub(super) fn check_records(&self, b: usize, limits: &Limits, out: &mut Problems) {
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
    pub(super) fn check_inference(&self, b: usize, limits: &Limits, out: &mut Problems) {
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
    pub(super) fn check_v1_only(&self, b: usize, out: &mut Problems) {
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
