//! Cost of one full sampling cycle with attribution (RAPL read, process scan, resolution
//! of new processes, split) for 100, 1,000 and 5,000 live processes in a fake procfs.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use empreinte_agent::attribution::engine::Attributor;
use empreinte_agent::attribution::procs::ProcFs;
use empreinte_agent::attribution::rules::Resolver;
use empreinte_agent::attribution::users::UserNames;
use empreinte_agent::clock::SampleTime;
use empreinte_agent::config::AttributionConfig;
use empreinte_agent::sampler::Sampler;
use empreinte_agent::sources::rapl::Rapl;
use empreinte_testkit::powercap::FakePowercap;
use empreinte_testkit::procfs::{FakeProcess, FakeProcfs};

fn cycle(c: &mut Criterion) {
    let fp = FakePowercap::intel_two_socket();
    let mut group = c.benchmark_group("attribution_cycle");
    for n in [100u32, 1_000, 5_000] {
        let procfs = FakeProcfs::new();
        let projects = ["chatbot", "summaries", "translation", "search"];
        for pid in 1..=n {
            let env = [("EMPREINTE_PROJECT", projects[pid as usize % projects.len()])];
            procfs.add(&FakeProcess {
                pid,
                start_ticks: u64::from(pid),
                cpu_ticks: u64::from(pid) * 3,
                cmdline: "python -m vllm.entrypoints.openai.api_server --model x",
                environ: if pid % 5 == 0 { &[] } else { &env },
                cgroup: "0::/system.slice/vllm.service\n",
            });
        }
        let cfg = AttributionConfig::default();
        let a = Attributor::new(
            &cfg,
            Resolver::new(&cfg).unwrap(),
            Box::new(ProcFs::new(procfs.root())),
            UserNames::default(),
            None,
        );
        let mut sampler =
            Sampler::new(vec![Box::new(Rapl::open(fp.root()).source.unwrap())]).with_attribution(a);
        let mut t = 0u64;
        // The first cycle resolves every process; the benchmark measures the steady state.
        sampler.cycle(SampleTime::from_monotonic(Duration::ZERO));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                t += 1;
                sampler.cycle(SampleTime::from_monotonic(Duration::from_millis(t)))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, cycle);
criterion_main!(benches);
