//! Every series the agent can export, on one exposition that `promtool check metrics`
//! (Prometheus's own lint) accepts: RAPL zones with a wrap, a reset and a glitch, GPUs
//! through the fake NVML (with a reset and a glitch of their counter), the attribution
//! (with a failed interval), the push and the inference servers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use empreinte_agent::attribution::engine::Attributor;
use empreinte_agent::attribution::procs::ProcFs;
use empreinte_agent::attribution::rules::Resolver;
use empreinte_agent::attribution::users::UserNames;
use empreinte_agent::clock::SampleTime;
use empreinte_agent::config::AttributionConfig;
use empreinte_agent::inference::metrics::CountedTotals;
use empreinte_agent::inference::{Origin, ServerInfo};
use empreinte_agent::metrics::{self, ExportInfo};
use empreinte_agent::push::PushMetrics;
use empreinte_agent::sampler::Sampler;
use empreinte_agent::sources::EnergySource;
use empreinte_agent::sources::nvml::NvmlSource;
use empreinte_agent::sources::rapl::Rapl;
use empreinte_shared::wire::{InferenceRecord, InferenceServerKind};
use empreinte_testkit::nvml::{FakeGpu, FakeNvml, FakeProcess as GpuProc, Scenario};
use empreinte_testkit::powercap::FakePowercap;
use empreinte_testkit::procfs::{FakeProcess, FakeProcfs};

fn inference_server(kind: InferenceServerKind, url: &str, up: bool) -> ServerInfo {
    ServerInfo {
        kind,
        url: url.into(),
        origin: Origin::Configured,
        project: Some("chat".into()),
        model: None,
        pod: None,
        pid: None,
        start_ticks: None,
        models: vec!["mistral-7b".into()],
        up,
        last_error: (!up).then(|| "connection refused".into()),
        scrapes_total: 2,
        scrape_errors_total: u64::from(!up),
    }
}

fn at(s: u64) -> SampleTime {
    SampleTime::from_monotonic(Duration::from_secs(s))
}

/// The metric names the agent declares: the first string after every `Family::new(` in
/// `agent/src/`.
fn declared_families() -> BTreeSet<String> {
    fn walk(dir: &std::path::Path, out: &mut BTreeSet<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                let code = text.split("#[cfg(test)]").next().unwrap_or("");
                for part in code.split("Family::new(").skip(1) {
                    if let Some(name) = part.split('"').nth(1) {
                        if name.starts_with("empreinte_") {
                            out.insert(name.to_string());
                        }
                    }
                }
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(
        std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/agent/src")),
        &mut out,
    );
    assert!(out.len() > 20, "{out:?}");
    out
}

#[test]
fn every_series_the_agent_exports_passes_promtool() {
    let mut fp = FakePowercap::intel_two_socket();
    let zones = fp.zones();
    let procfs = FakeProcfs::new();
    procfs.add(&FakeProcess {
        pid: 100,
        start_ticks: 1100,
        cpu_ticks: 0,
        cmdline: "python serve.py",
        environ: &[("EMPREINTE_PROJECT", "chatbot")],
        cgroup: "0::/system.slice/app.service\n",
    });
    let mut g0 = FakeGpu::new(0, "NVIDIA H100 80GB HBM3");
    g0.energy_mj = Some(10_000_000);
    let mut scenario = Scenario {
        gpus: vec![g0, FakeGpu::new(1, "NVIDIA H100 80GB HBM3")],
        processes: vec![GpuProc::new(0, 100, Some(1 << 30))],
        ..Scenario::default()
    };
    let nvml = FakeNvml::new(&scenario);
    // The first package starts 50 J below its wrap: it wraps in the second interval.
    let pkg = zones[0].clone();
    let max = fp.max_energy_range_uj(&pkg);
    fp.set_energy_uj(&pkg, max - 50_000_000);
    // Another zone sits mid-range, where a step back is neither a wrap nor a reset.
    let other = zones[1].clone();
    fp.set_energy_uj(&other, max / 2);
    let third = zones[2].clone();
    fp.set_energy_uj(&third, max / 2);
    let sources: Vec<Box<dyn EnergySource>> = vec![
        Box::new(Rapl::open(fp.root()).source.unwrap()),
        Box::new(NvmlSource::open(nvml.library()).source.unwrap()),
    ];
    let cfg = AttributionConfig::default();
    let attributor = Attributor::new(
        &cfg,
        Resolver::new(&cfg).unwrap(),
        Box::new(ProcFs::new(procfs.root())),
        UserNames::default(),
        None,
    );
    let mut sampler = Sampler::new(sources).with_attribution(attributor);
    sampler.cycle(at(0));
    let mut t = 0;
    let mut step = |fp: &mut FakePowercap, sampler: &mut Sampler, nvml_energy: Option<u64>| {
        t += 1;
        for z in &zones {
            fp.advance(z, 40.0, Duration::from_secs(1));
        }
        if let Some(mj) = nvml_energy {
            scenario.gpus[0].energy_mj = Some(mj);
            nvml.play(&scenario);
        }
        procfs.set_ticks(100, 1100, 50 * t);
        procfs.set_host_stat(50 * t, 50 * t);
        sampler.cycle(at(t));
    };
    step(&mut fp, &mut sampler, Some(10_100_000));
    // RAPL: a wrap (above), a reset (back to near zero), a glitch (300 J back).
    step(&mut fp, &mut sampler, None);
    fp.set_energy_uj(&third, 1_000);
    step(&mut fp, &mut sampler, None);
    fp.step_back_uj(&other, 300_000_000);
    step(&mut fp, &mut sampler, None);
    // NVML: a glitch (back, not to zero), then a reset (back to near zero).
    step(&mut fp, &mut sampler, Some(5_000_000));
    step(&mut fp, &mut sampler, Some(50));
    // An attribution failure: no /proc/stat for one interval.
    std::fs::remove_file(procfs.root().join("stat")).unwrap();
    step(&mut fp, &mut sampler, None);

    let host = sampler.host().clone();
    let push = PushMetrics {
        last_success_unix_ms: Some(1_700_000_000_000),
        ..PushMetrics::default()
    };
    // An inference server read once and counting, another failing: their families.
    let servers = [
        inference_server(
            InferenceServerKind::Vllm,
            "http://127.0.0.1:8000/metrics",
            true,
        ),
        inference_server(
            InferenceServerKind::Tgi,
            "http://127.0.0.1:8080/metrics",
            false,
        ),
    ];
    let mut totals = CountedTotals::new();
    empreinte_agent::inference::metrics::count(
        &mut totals,
        &[InferenceRecord {
            project: "chat".into(),
            model: "mistral-7b".into(),
            server: InferenceServerKind::Vllm,
            start_unix_ms: 1_700_000_000_000,
            end_unix_ms: 1_700_000_001_000,
            requests: Some(3),
            input_tokens: Some(300),
            cached_input_tokens: None,
            output_tokens: Some(120),
            gap_ms: 0,
            resets: 0,
            allocated: false,
        }],
    );
    let text = metrics::render_all(
        &host,
        &ExportInfo {
            interval_seconds: 1.0,
        },
        Some((&push, 1_700_000_001_000)),
        empreinte_agent::inference::metrics::families(&servers, &totals),
    )
    .unwrap();

    for kind in ["wrap", "reset", "glitch"] {
        for source in ["rapl", "nvml"] {
            if source == "nvml" && kind == "wrap" {
                continue; // NVML's counter does not wrap
            }
            let needle = format!("source=\"{source}\"");
            assert!(
                text.lines().any(
                    |l| l.starts_with("empreinte_energy_reading_corrections_total")
                        && l.contains(&format!("kind=\"{kind}\""))
                        && l.contains(&needle)
                ),
                "no {kind} correction for {source}:\n{text}"
            );
        }
    }
    let missing: Vec<String> = declared_families()
        .into_iter()
        .filter(|name| !text.contains(&format!("# TYPE {name} ")))
        .collect();
    assert!(
        missing.is_empty(),
        "families absent from the scenario: {missing:?}\n{text}"
    );
    if let Some(promtool) = common::promtool() {
        common::promtool_check(promtool, &text);
    }
}
