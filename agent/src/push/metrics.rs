//! The push and spool families of the agent's `/metrics`.

use empreinte_shared::exposition::Family;
use prometheus::proto::{MetricFamily, MetricType};

use super::PushMetrics;

/// The push and spool families, when pushing is configured; `now_unix_ms` dates the
/// oldest batch's age.
pub fn push_families(m: &PushMetrics, now_unix_ms: u64) -> Vec<MetricFamily> {
    use MetricType::{COUNTER, GAUGE};
    let mut batches = Family::new(
        "empreinte_push_batches_total",
        "Batches sent to the collector since the agent started, by outcome: accepted (stored), duplicate (the collector had it already: a replay), refused (401 or 403: the token is wrong; kept), halved (a push of several refused: sent again in smaller pushes), set_aside (refused on its own: set aside in rejected/), failed (no answer, 5xx or 429: kept and sent again).",
        COUNTER,
    );
    for (outcome, n) in [
        ("accepted", m.accepted_total),
        ("duplicate", m.duplicate_total),
        ("refused", m.refused_total),
        ("halved", m.halved_total),
        ("set_aside", m.set_aside_total),
        ("failed", m.failed_total),
    ] {
        batches.push(&[("outcome", outcome)], n as f64);
    }
    let mut spooled = Family::new(
        "empreinte_spool_batches",
        "Sealed batches in the on-disk spool that the collector has not acknowledged yet.",
        GAUGE,
    );
    spooled.push(&[], m.spool.batches as f64);
    let mut bytes = Family::new(
        "empreinte_spool_bytes",
        "Size on disk of the batches the collector has not acknowledged yet, in bytes.",
        GAUGE,
    );
    bytes.push(&[], m.spool.bytes as f64);
    let mut age = Family::new(
        "empreinte_spool_oldest_batch_age_seconds",
        "Age of the oldest batch the collector has not acknowledged yet (from its start, by the sampling clock), in seconds; 0 when the spool is empty.",
        GAUGE,
    );
    age.push(
        &[],
        m.spool
            .oldest_start_unix_ms
            .map_or(0.0, |s| now_unix_ms.saturating_sub(s) as f64 / 1e3),
    );
    let mut dropped = Family::new(
        "empreinte_spool_dropped_batches_total",
        "Batches dropped since the agent started because the spool went over its size or age limit, or the disk refused them for longer than memory keeps them: energy that will never reach the collector.",
        COUNTER,
    );
    dropped.push(&[], m.spool.dropped_batches_total as f64);
    let mut dropped_energy = Family::new(
        "empreinte_spool_dropped_energy_joules_total",
        "Energy of the batches dropped since the agent started (spool limits, disk write failures), in joules: measured but lost.",
        COUNTER,
    );
    dropped_energy.push(&[], m.dropped_energy_uj_total as f64 / 1e6);
    let mut errors = Family::new(
        "empreinte_spool_errors_total",
        "Sampling cycles whose batches could not be written to the spool (disk full, permissions); the energy stays in memory and is written again.",
        COUNTER,
    );
    errors.push(&[], m.spool_errors_total as f64);
    let mut rejected = Family::new(
        "empreinte_spool_rejected_batches_total",
        "Batches refused on their own since the agent started (by the collector, or by the agent's own check before sealing) and set aside in the spool's rejected/ directory with the reason; delivery went on without them.",
        COUNTER,
    );
    rejected.push(&[], m.rejected_batches_total as f64);
    let mut rejected_energy = Family::new(
        "empreinte_spool_rejected_energy_joules_total",
        "Energy of the batches set aside as refused since the agent started, in joules: measured, not stored by the collector.",
        COUNTER,
    );
    rejected_energy.push(&[], m.rejected_energy_uj_total as f64 / 1e6);
    let mut unwritten = Family::new(
        "empreinte_spool_unwritten_batches",
        "Sealed batches kept in memory because the disk refused them (full, read-only); written again at every cycle.",
        GAUGE,
    );
    unwritten.push(&[], m.unwritten_batches as f64);
    let mut active = Family::new(
        "empreinte_push_active_keys",
        "Project, component and source combinations active within the window, whose run totals the agent keeps in memory and puts in every batch's counters.",
        GAUGE,
    );
    active.push(&[], m.active_keys as f64);
    let mut last = Family::new(
        "empreinte_push_last_success_timestamp_seconds",
        "When the collector last acknowledged a push, in seconds since the Unix epoch.",
        GAUGE,
    );
    if let Some(ms) = m.last_success_unix_ms {
        last.push(&[], ms as f64 / 1e3);
    }
    [
        batches,
        spooled,
        bytes,
        age,
        dropped,
        dropped_energy,
        errors,
        rejected,
        rejected_energy,
        unwritten,
        active,
        last,
    ]
    .into_iter()
    .map(|f| f.0)
    .filter(|f| !f.get_metric().is_empty())
    .collect()
}
