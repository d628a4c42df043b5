use empreinte_shared::wire::{Batch, InferenceRecord, InferenceServerKind, Record};
use empreinte_shared::{Component, SourceKind};
use proptest::prelude::*;

use super::*;

const H: u64 = 3_600_000;

fn inference(start: u64, end: u64, requests: Option<u64>, output: Option<u64>) -> InferenceRecord {
    InferenceRecord {
        project: "chat".into(),
        model: "llama".into(),
        server: InferenceServerKind::Vllm,
        start_unix_ms: start,
        end_unix_ms: end,
        requests,
        input_tokens: None,
        cached_input_tokens: None,
        output_tokens: output,
        gap_ms: 0,
        resets: 0,
        allocated: false,
    }
}

fn record(model: Option<&str>, start: u64, end: u64, uj: u64) -> Record {
    Record {
        project: "chat".into(),
        component: Component::Gpu,
        source: SourceKind::Nvml,
        start_unix_ms: start,
        end_unix_ms: end,
        energy_uj: uj,
        model: model.map(str::to_string),
    }
}

fn batch(start: u64, end: u64, records: Vec<Record>, inference: Vec<InferenceRecord>) -> Batch {
    Batch {
        run_id: "0".repeat(32),
        seq: 1,
        start_unix_ms: start,
        end_unix_ms: end,
        records,
        counters: vec![],
        inference,
    }
}

#[test]
fn counts_across_an_hour_are_split_by_time_and_unknown_stays_unknown() {
    let h = 10 * H;
    // 45 s before the hour, 15 s after: 3/4 and 1/4.
    let mut r = inference(h - 45_000, h + 15_000, Some(101), None);
    r.resets = 1;
    r.gap_ms = 4_000;
    let b = batch(h - 45_000, h + 15_000, vec![], vec![r]);
    let p = batch_inference(&b);
    assert_eq!(p.counts.len(), 2);
    assert_eq!(p.counts[0].hour_s, 9 * 3600);
    assert_eq!(p.counts[0].counts.requests, Some(76));
    assert_eq!(p.counts[1].counts.requests, Some(25));
    assert_eq!(p.counts[0].counts.output_tokens, None);
    assert_eq!(p.counts[0].span_ms + p.counts[1].span_ms, 60_000);
    assert_eq!(p.counts[0].gap_ms + p.counts[1].gap_ms, 4_000);
    // The reset is counted once, in the hour the record ends.
    assert_eq!((p.counts[0].resets, p.counts[1].resets), (0, 1));
    assert_eq!(
        p.counts[0].server_kinds,
        server_bit(InferenceServerKind::Vllm)
    );
}

#[test]
fn only_records_with_a_model_give_model_energy() {
    let h = 10 * H;
    let b = batch(
        h,
        h + 10_000,
        vec![
            record(Some("llama"), h, h + 10_000, 7_000),
            record(None, h, h + 10_000, 3_000),
            record(Some("llama"), h, h + 5_000, 1_000),
        ],
        vec![],
    );
    let p = batch_inference(&b);
    assert!(p.counts.is_empty());
    assert_eq!(p.energy.len(), 1);
    assert_eq!(p.energy[0].energy_uj, 8_000);
    assert_eq!(p.energy[0].model, "llama");
}

proptest! {
    #[test]
    fn hourly_counts_and_energy_add_up_to_the_records(
        start in 0u64..10 * H,
        len in 1u64..3 * H,
        requests in proptest::option::of(0u64..1u64 << 50),
        output in proptest::option::of(0u64..1u64 << 50),
        uj in 0u64..1u64 << 60,
    ) {
        let b = batch(
            start,
            start + len,
            vec![record(Some("llama"), start, start + len, uj)],
            vec![inference(start, start + len, requests, output)],
        );
        let p = batch_inference(&b);
        let mut sum = Counts::default();
        for c in &p.counts {
            sum.add(&c.counts);
        }
        prop_assert_eq!(sum.requests, requests);
        prop_assert_eq!(sum.output_tokens, output);
        prop_assert_eq!(sum.input_tokens, None);
        prop_assert_eq!(p.energy.iter().map(|e| e.energy_uj).sum::<u64>(), uj);
        // The same hours as the footprint's split of the same record.
        let deltas = crate::footprint::batch_deltas(&b, None);
        for e in &p.energy {
            let f = deltas.iter().find(|d| d.hour_s == e.hour_s).map(|d| d.energy_uj);
            prop_assert_eq!(f, Some(e.energy_uj));
        }
    }
}
