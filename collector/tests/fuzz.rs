#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Fuzzing that stays in CI (issue 10, item 7), time-boxed (`EMPREINTE_FUZZ_SECONDS`
//! per target, see `empreinte_testkit::fuzz`): the push decoder and `Push::problems`,
//! the eCO2mix and Electricity Maps importers, and the collector's configuration parser.
//! Each target checks what must hold for any input: no panic, and what is accepted is
//! within the limits the rest of the collector relies on.

use std::path::PathBuf;

use empreinte_collector::carbon::import::parse_intensity;
use empreinte_collector::config::CollectorConfig;
use empreinte_shared::wire::{Limits, MAX_STORED, Push, check_name};
use empreinte_testkit::fuzz;
use proptest::prelude::*;

const NOW_MS: u64 = 1_790_000_000_000;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A valid push as the agent sends it.
fn valid_push() -> Vec<u8> {
    let end = NOW_MS - 60_000;
    let start = end - 15_000;
    format!(
        r#"{{"version":1,"agent":{{"agent_id":"gpu-01","hostname":"gpu-01","agent_version":"0.1.0"}},"spool":{{"batches":3,"bytes":4096,"oldest_start_unix_ms":{start},"dropped_batches_total":0}},"batches":[{{"run_id":"0123456789abcdef0123456789abcdef","seq":7,"start_unix_ms":{start},"end_unix_ms":{end},"records":[{{"project":"chat","component":"gpu","source":"nvml","start_unix_ms":{start},"end_unix_ms":{end},"energy_uj":4500000007}},{{"project":"web","component":"cpu","source":"rapl","start_unix_ms":{start},"end_unix_ms":{end},"energy_uj":900000001}}],"counters":[{{"project":"chat","component":"gpu","source":"nvml","total_uj":123456789012}}]}}]}}"#
    )
    .into_bytes()
}

/// What the collector relies on once `problems` is empty.
fn accepted_push_is_storable(push: &Push) -> Result<(), String> {
    check_name(&push.agent.agent_id).map_err(|e| format!("agent id: {e}"))?;
    for b in &push.batches {
        if b.seq == 0 || b.seq > MAX_STORED {
            return Err(format!("seq {} accepted", b.seq));
        }
        if b.end_unix_ms <= b.start_unix_ms {
            return Err("an empty or reversed batch accepted".into());
        }
        let mut sum: u128 = 0;
        for r in &b.records {
            check_name(&r.project).map_err(|e| format!("project: {e}"))?;
            if r.start_unix_ms < b.start_unix_ms || r.end_unix_ms > b.end_unix_ms {
                return Err("a record outside its batch accepted".into());
            }
            sum += u128::from(r.energy_uj);
        }
        if sum > u128::from(MAX_STORED) {
            return Err(format!("a batch of {sum} µJ accepted"));
        }
        for c in &b.counters {
            if c.total_uj > MAX_STORED {
                return Err(format!("a counter of {} µJ accepted", c.total_uj));
            }
        }
    }
    Ok(())
}

#[test]
fn fuzz_push_decoder_and_problems() {
    let limits = Limits::default();
    fuzz::run("push", fuzz::documents(vec![valid_push()]), 1_000, |body| {
        // The decoder the ingest endpoint uses.
        let mut de = serde_json::Deserializer::from_slice(body);
        let Ok(push) = serde_path_to_error::deserialize::<_, Push>(&mut de) else {
            return Ok(());
        };
        if de.end().is_err() {
            return Ok(());
        }
        let problems = push.problems(&limits, NOW_MS);
        for p in &problems {
            if p.path.is_empty() || p.message.is_empty() {
                return Err(format!("a problem without its path or message: {p:?}"));
            }
        }
        if problems.is_empty() {
            accepted_push_is_storable(&push)?;
        }
        Ok(())
    });
}

/// Pushes built field by field, numbers biased to the edges.
fn edge_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        any::<u64>(),
        Just(u64::MAX),
        Just(MAX_STORED),
        Just(MAX_STORED + 1),
        Just(0u64),
        0u64..10_000_000_000,
    ]
}

#[test]
fn fuzz_push_values() {
    let limits = Limits::default();
    let name = prop_oneof![
        "[a-z]{1,12}".prop_map(String::from),
        any::<String>(),
        Just(String::new()),
        Just("x".repeat(200)),
    ];
    let record = (name.clone(), edge_u64(), edge_u64(), edge_u64());
    let strategy = (
        name,
        edge_u64(),
        edge_u64(),
        edge_u64(),
        prop::collection::vec(record, 0..6),
        edge_u64(),
    );
    fuzz::run(
        "push-values",
        strategy,
        1_000,
        |(agent, seq, start, end, records, total)| {
            let mut push: Push = serde_json::from_slice(&valid_push()).unwrap();
            push.agent.agent_id = agent.clone();
            let b = &mut push.batches[0];
            b.seq = *seq;
            b.start_unix_ms = *start;
            b.end_unix_ms = *end;
            b.counters[0].total_uj = *total;
            b.records = records
                .iter()
                .map(|(project, s, e, uj)| {
                    let mut r = b.records[0].clone();
                    r.project = project.clone();
                    r.start_unix_ms = *s;
                    r.end_unix_ms = *e;
                    r.energy_uj = *uj;
                    r
                })
                .collect();
            if push.problems(&limits, NOW_MS).is_empty() {
                accepted_push_is_storable(&push)?;
            }
            Ok(())
        },
    );
}

#[test]
fn fuzz_intensity_importers() {
    let dir = root().join("tests/fixtures/carbon");
    let seeds: Vec<Vec<u8>> = [
        "eco2mix_odre_2024-10-27.csv",
        "electricitymaps_FR_2024-01-01.csv",
        "electricitymaps_DE_history.json",
        "eCO2mix_RTE_2025-10-26.xls",
    ]
    .iter()
    .map(|f| {
        let bytes = std::fs::read(dir.join(f)).unwrap();
        // Mutations work on a head of the file: several hours are enough to reach
        // every branch, and keep each case fast.
        let cut = bytes.len().min(8 * 1024);
        bytes[..cut].to_vec()
    })
    .collect();
    fuzz::run("intensity-import", fuzz::documents(seeds), 300, |doc| {
        let Ok(series) = parse_intensity(&doc[..], &mut |_| {}) else {
            return Ok(());
        };
        for w in series.points.windows(2) {
            let end = w[0].start_unix_s + i64::from(w[0].duration_s);
            if end > w[1].start_unix_s {
                return Err(format!("overlapping points: {:?} then {:?}", w[0], w[1]));
            }
        }
        for p in &series.points {
            if !(p.g_per_kwh.is_finite() && p.g_per_kwh > 0.0) {
                return Err(format!("a point of {} g/kWh accepted", p.g_per_kwh));
            }
            if p.duration_s == 0 {
                return Err("a point of no duration accepted".into());
            }
        }
        Ok(())
    });
}

#[test]
fn fuzz_collector_config() {
    let example = std::fs::read(root().join("../deploy/collector.toml")).unwrap();
    let with_sites = [
        &example[..],
        b"\n[[site]]\nname = \"dc\"\nzone = \"DE\"\npue = 1.3\npue_source = \"m\"\nhosts = [\"gpu-*\"]\nmarket_g_per_kwh = 20.0\nmarket_source = \"c\"\n[[inventory]]\nhosts = [\"gpu-*\"]\nserver_kgco2e = 1300.0\nserver_lifetime_years = 6.0\nserver_source = \"s\"\ngpus = [{ model = \"nvidia-h100\", count = 4 }]\n[[objective]]\nproject = \"chat\"\nreduction_percent = 10.0\nbaseline_month = \"2026-01\"\n",
    ]
    .concat();
    fuzz::run(
        "collector-config",
        fuzz::documents(vec![example, with_sites]),
        300,
        |doc| {
            let Ok(text) = std::str::from_utf8(doc) else {
                return Ok(());
            };
            let Ok(config) = CollectorConfig::from_toml(text) else {
                return Ok(());
            };
            let problems = config.problems();
            if problems.is_empty() {
                let l = &config.limits;
                if l.max_connections == 0
                    || l.max_ingests_in_flight == 0
                    || l.max_pdf_renders == 0
                    || l.header_timeout.is_zero()
                    || !(l.max_host_power_watts.is_finite() && l.max_host_power_watts > 0.0)
                {
                    return Err(format!("limits accepted: {l:?}"));
                }
                if jiff::tz::TimeZone::get(&config.organisation.timezone).is_err() {
                    return Err("an unknown time zone accepted".into());
                }
            }
            Ok(())
        },
    );
}
