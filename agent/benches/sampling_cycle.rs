//! Cost of one sampling cycle on fake hardware: RAPL (a two-socket tree with psys, 9
//! zones), NVML (the fake library, 2 GPUs), the estimate, and rendering /metrics.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use empreinte_agent::clock::SampleTime;
use empreinte_agent::metrics::{self, ExportInfo};
use empreinte_agent::sampler::Sampler;
use empreinte_agent::sources::EnergySource;
use empreinte_agent::sources::estimate::{Estimate, EstimateScope};
use empreinte_agent::sources::nvml::NvmlSource;
use empreinte_agent::sources::rapl::Rapl;
use empreinte_testkit::nvml::{FakeGpu, FakeNvml, Scenario};
use empreinte_testkit::powercap::FakePowercap;

fn cycle(c: &mut Criterion) {
    let fp = FakePowercap::intel_two_socket();
    let mut g1 = FakeGpu::new(1, "Tesla P100");
    g1.energy_mj = None;
    g1.power_mw = Some(120_000);
    let nvml = FakeNvml::new(&Scenario {
        gpus: vec![FakeGpu::new(0, "NVIDIA H100"), g1],
        ..Scenario::default()
    });

    let mut group = c.benchmark_group("sampling_cycle");
    let mut t = 0u64;
    let mut bench = |name: &str, sources: Vec<Box<dyn EnergySource>>| {
        let mut sampler = Sampler::new(sources);
        group.bench_function(name, |b| {
            b.iter(|| {
                t += 1;
                sampler.cycle(SampleTime::from_monotonic(Duration::from_millis(t)))
            })
        });
    };
    bench(
        "rapl_9_zones",
        vec![Box::new(Rapl::open(fp.root()).source.unwrap())],
    );
    bench(
        "nvml_2_gpus_fake",
        vec![Box::new(NvmlSource::open(nvml.library()).source.unwrap())],
    );
    let est = Estimate::open(
        &Default::default(),
        std::path::Path::new("/proc"),
        EstimateScope {
            cpu: true,
            dram: true,
        },
    );
    bench("estimate_cpu_dram", vec![Box::new(est.source.unwrap())]);
    group.finish();

    let mut sampler = Sampler::new(vec![
        Box::new(Rapl::open(fp.root()).source.unwrap()),
        Box::new(NvmlSource::open(nvml.library()).source.unwrap()),
    ]);
    for i in 0..3 {
        sampler.cycle(SampleTime::from_monotonic(Duration::from_secs(i)));
    }
    let state = sampler.state();
    let info = ExportInfo {
        interval_seconds: 1.0,
    };
    c.bench_function("render_metrics_11_channels", |b| {
        b.iter(|| metrics::render(&state.lock(), &info))
    });
}

criterion_group!(benches, cycle);
criterion_main!(benches);
