//! The NVML source against the fake NVML library, loaded through the real nvml-wrapper.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use empreinte_agent::clock::SampleTime;
use empreinte_agent::sources::nvml::{CounterCheck, GpuMethod, MIG_SPLIT_RULE, NvmlSource};
use empreinte_agent::sources::{ChannelEnergy, Correction, EnergySource, PollError};
use empreinte_testkit::nvml::{FakeGpu, FakeInstance, FakeNvml, FakeProcess, FakeSample, Scenario};

fn at_ms(ms: u64) -> SampleTime {
    SampleTime::from_monotonic(Duration::from_millis(ms))
}

/// The true power of a GPU at time `t` seconds: a base load with a fast ripple, so that
/// sampling the power once a second does not see every change.
fn power_w(base: f64, t: f64) -> f64 {
    base * (1.0 + 0.6 * (t * 0.37).sin() + 0.15 * (t * 5.3).sin()).max(0.05)
}

fn two_gpus() -> Scenario {
    let counter = FakeGpu::new(0, "NVIDIA H100 80GB HBM3");
    let mut integrated = FakeGpu::new(1, "Tesla P100-PCIE-16GB");
    integrated.energy_mj = None;
    Scenario {
        gpus: vec![counter, integrated],
        ..Scenario::default()
    }
}

#[test]
fn exported_joules_match_the_ground_truth_for_both_methods_across_a_driver_reload() {
    let mut s = two_gpus();
    let fake = FakeNvml::new(&s);
    let opened = NvmlSource::open(fake.library());
    let mut nvml = opened.source.expect("both GPUs usable");
    assert_eq!(
        nvml.methods(),
        [GpuMethod::EnergyCounter, GpuMethod::PowerIntegration]
    );
    assert_eq!(opened.diagnoses.len(), 2);
    assert!(
        opened.diagnoses[0]
            .measures
            .as_deref()
            .unwrap()
            .contains("energy counter")
    );
    assert!(
        opened.diagnoses[1]
            .measures
            .as_deref()
            .unwrap()
            .contains("integrated")
    );
    let ids: Vec<_> = nvml
        .channels()
        .iter()
        .map(|c| c.gpu.clone().unwrap())
        .collect();
    assert_eq!(
        (ids[0].index, ids[0].model.as_str()),
        (0, "NVIDIA H100 80GB HBM3")
    );
    assert!(ids[1].uuid.starts_with("GPU-00000001"));

    // Ground truth: the energy of the fine-grained trace, in µJ (exact for the test).
    let (mut truth0_uj, mut truth1_uj) = (0f64, 0f64);
    let mut counter_mj = 10_000_000u64; // since the driver loaded, long ago
    let mut counter_frac_mj = 0f64;
    let (mut sum0, mut sum1) = (0u64, 0u64);
    let mut resets = 0;
    let mut last_total = (0u64, 0u64);
    let mut out: Vec<ChannelEnergy> = Vec::new();
    let sub = 20; // true trace resolution: 50 ms
    for step in 0..=120u64 {
        if step > 0 {
            for k in 0..sub {
                let t = (step - 1) as f64 + (k as f64 + 0.5) / sub as f64;
                let e0 = power_w(300.0, t) / sub as f64 * 1e6;
                truth0_uj += e0;
                truth1_uj += power_w(120.0, t + 11.0) / sub as f64 * 1e6;
                counter_frac_mj += e0 / 1000.0;
            }
            let whole = counter_frac_mj.floor();
            counter_mj += whole as u64;
            counter_frac_mj -= whole;
        }
        if step == 60 {
            // Driver reload during this interval: the counter restarts near zero.
            counter_mj = 1_234;
        }
        let t = step as f64;
        s.gpus[0].energy_mj = Some(counter_mj);
        s.gpus[0].power_mw = Some((power_w(300.0, t) * 1000.0) as u64);
        s.gpus[1].power_mw = Some((power_w(120.0, t + 11.0) * 1000.0) as u64);
        fake.play(&s);
        out.clear();
        nvml.poll(at_ms(step * 1000), &mut out).unwrap();
        for e in &out {
            if e.channel == 0 {
                sum0 += e.energy.0;
            } else {
                sum1 += e.energy.0;
            }
            resets += usize::from(e.correction == Some(Correction::Reset));
        }
        assert!(
            sum0 >= last_total.0 && sum1 >= last_total.1,
            "totals never decrease"
        );
        last_total = (sum0, sum1);
    }
    // The reload interval's true counter advance: the counter GPU's truth is the
    // trace's energy; the reload interval is covered by integration.
    let err0 = (sum0 as f64 - truth0_uj).abs() / truth0_uj;
    let err1 = (sum1 as f64 - truth1_uj).abs() / truth1_uj;
    eprintln!(
        "counter GPU: {sum0} µJ vs truth {truth0_uj:.0} µJ ({:.3} %)",
        err0 * 100.0
    );
    eprintln!(
        "integrated GPU: {sum1} µJ vs truth {truth1_uj:.0} µJ ({:.3} %)",
        err1 * 100.0
    );
    assert!(
        err0 < 0.005,
        "counter GPU within 0.5 %: {:.3} %",
        err0 * 100.0
    );
    assert!(
        err1 < 0.02,
        "integrated GPU within 2 %: {:.3} %",
        err1 * 100.0
    );
    assert_eq!(resets, 1, "the driver reload is reported once");
}

/// One GPU drawing a constant power; the test advances its counter and scenario time.
struct OneGpu {
    fake: FakeNvml,
    s: Scenario,
    nvml: NvmlSource,
    total_uj: u64,
    resets: usize,
}

impl OneGpu {
    fn new(gpu: FakeGpu) -> OneGpu {
        let s = Scenario {
            gpus: vec![gpu],
            ..Scenario::default()
        };
        let fake = FakeNvml::new(&s);
        let nvml = NvmlSource::open(fake.library()).source.unwrap();
        OneGpu {
            fake,
            s,
            nvml,
            total_uj: 0,
            resets: 0,
        }
    }

    /// Plays the scenario, polls at `t` seconds, adds what came out.
    fn poll(&mut self, t: u64) -> Result<(), PollError> {
        self.fake.play(&self.s);
        let mut out = Vec::new();
        let r = self.nvml.poll(at_ms(t * 1000), &mut out);
        for e in out {
            self.total_uj += e.energy.0;
            self.resets += usize::from(e.correction == Some(Correction::Reset));
        }
        r
    }
}

fn gpu_at(watts: u64) -> FakeGpu {
    let mut g = FakeGpu::new(0, "NVIDIA H100 80GB HBM3");
    g.energy_mj = Some(5_000_000);
    g.power_mw = Some(watts * 1000);
    g
}

#[test]
fn a_counter_drifting_40_percent_from_the_power_trace_is_diagnosed_and_integration_used() {
    for factor in [1.4, 0.6] {
        let mut g = OneGpu::new(gpu_at(250));
        let mut counter = 5_000_000f64;
        for t in 0..=60u64 {
            if t > 0 {
                counter += 250_000.0 * factor; // the trace is 250 J per second
            }
            g.s.gpus[0].energy_mj = Some(counter as u64);
            g.poll(t).unwrap();
            if t == 3 {
                assert_eq!(g.nvml.counter_checks()[0], CounterCheck::Checking);
                assert_eq!(g.nvml.methods(), [GpuMethod::EnergyCounter]);
            }
        }
        assert!(
            matches!(g.nvml.counter_checks()[0], CounterCheck::Rejected { .. }),
            "{factor}: {:?}",
            g.nvml.counter_checks()
        );
        assert_eq!(g.nvml.methods(), [GpuMethod::PowerIntegration]);
        let truth = 60.0 * 250.0 * 1e6;
        let err = (g.total_uj as f64 - truth).abs() / truth;
        assert!(
            err < 0.02,
            "counter × {factor}: {} µJ vs {truth} ({:.2} %)",
            g.total_uj,
            err * 100.0
        );
    }
}

#[test]
fn an_honest_counter_is_trusted_and_rechecked() {
    let mut g = OneGpu::new(gpu_at(300));
    let mut counter = 5_000_000u64;
    for t in 0..=10u64 {
        if t > 0 {
            counter += 303_000; // 1 % above the power readings: within the threshold
        }
        g.s.gpus[0].energy_mj = Some(counter);
        g.poll(t).unwrap();
    }
    assert!(
        matches!(g.nvml.counter_checks()[0], CounterCheck::Trusted { disagreement } if (disagreement - 0.01).abs() < 1e-6),
        "{:?}",
        g.nvml.counter_checks()
    );
    assert_eq!(g.total_uj, 10 * 303_000_000, "the trusted counter counts");
}

#[test]
fn a_gpu_lost_for_30_s_resumes_without_restart_and_loses_nothing() {
    let mut g = OneGpu::new(gpu_at(100));
    let mut counter = 5_000_000u64;
    for t in 0..=70u64 {
        if t > 0 {
            counter += 100_000; // the GPU keeps working while NVML cannot see it
        }
        g.s.gpus[0].energy_mj = Some(counter);
        g.s.gpus[0].fail = (10..40).contains(&t).then_some(15); // GPU_IS_LOST
        let r = g.poll(t);
        if (10..40).contains(&t) {
            assert!(matches!(r, Err(PollError::Retry(_))), "t={t}: {r:?}");
        } else {
            r.unwrap_or_else(|e| panic!("t={t}: {e}"));
        }
    }
    assert!(
        g.nvml.reinitialisations() >= 1,
        "NVML was initialised again"
    );
    assert!(
        g.nvml.reinitialisations() <= 8,
        "with backoff: {}",
        g.nvml.reinitialisations()
    );
    assert_eq!(
        g.total_uj,
        70 * 100_000_000,
        "every joule of the outage is counted"
    );
    assert_eq!(g.nvml.unaccounted(), [Duration::ZERO]);
}

#[test]
fn a_quick_driver_reload_is_covered_by_the_power_readings() {
    let mut g = OneGpu::new(gpu_at(100));
    let mut counter = 5_000_000u64;
    for t in 0..=40u64 {
        if t == 20 {
            // The driver is reloaded: old handles die, the counter restarts from zero.
            g.s.generation = 1;
            counter = 0;
        }
        if t > 0 && t != 20 {
            counter += 100_000;
        }
        g.s.gpus[0].energy_mj = Some(counter);
        let _ = g.poll(t);
    }
    assert!(g.nvml.reinitialisations() >= 1);
    assert_eq!(g.resets, 1, "the reload is reported once");
    // The 2 s across the reload come from the power readings around it: 100 W × 40 s.
    assert_eq!(g.total_uj, 40 * 100_000_000);
    assert_eq!(g.nvml.unaccounted(), [Duration::ZERO]);
}

#[test]
fn after_a_long_driver_outage_the_counter_since_the_reload_counts_and_the_gap_is_counted() {
    let mut g = OneGpu::new(gpu_at(100));
    let mut counter = 5_000_000u64;
    let mut back = None;
    for t in 0..=120u64 {
        // The driver is unloaded from 20 s to 50 s, then loaded again: its counter starts
        // from zero at 50 s.
        g.s.generation = u64::from(t >= 20);
        g.s.init_error = (20..50).contains(&t).then_some(9); // DRIVER_NOT_LOADED
        if t == 50 {
            counter = 0;
        } else if t > 0 && !(20..50).contains(&t) {
            counter += 100_000;
        }
        g.s.gpus[0].energy_mj = Some(counter);
        if g.poll(t).is_ok() && t >= 50 && back.is_none() {
            back = Some(t);
        }
    }
    let back = back.expect("the source resumed without a restart");
    assert!(
        back <= 50 + 60,
        "resumed at {back} s (backoff at most 60 s)"
    );
    assert_eq!(g.resets, 1);
    // 19 s before the outage, then the counter's 70 s since the reload.
    assert_eq!(g.total_uj, (19 + 70) * 100_000_000);
    let gap = g.nvml.unaccounted()[0];
    assert!(
        gap >= Duration::from_secs(31),
        "the unaccounted gap is counted: {gap:?}"
    );
}

#[test]
fn a_mig_gpu_is_diagnosed_and_says_how_its_energy_is_split() {
    let mut gpu = gpu_at(200);
    gpu.mig = Some(true);
    gpu.persistence = Some(false);
    let s = Scenario {
        gpus: vec![gpu],
        driver: Some("560.35.03".into()),
        processes: vec![
            FakeProcess::new(0, 100, Some(10 << 30)),
            FakeProcess::new(0, 200, Some(30 << 30)),
        ],
        instances: vec![
            FakeInstance {
                pid: 100,
                gpu_instance: 1,
                compute_instance: 0,
            },
            FakeInstance {
                pid: 200,
                gpu_instance: 2,
                compute_instance: 0,
            },
        ],
        ..Scenario::default()
    };
    let fake = FakeNvml::new(&s);
    let opened = NvmlSource::open(fake.library());
    let d = &opened.diagnoses[0];
    let text = d.to_string();
    assert!(
        text.contains("MIG on") && text.contains("MIG enabled"),
        "{text}"
    );
    assert!(
        text.contains("driver 560.35.03") && text.contains("persistence mode off"),
        "{text}"
    );
    let mut nvml = opened.source.unwrap();
    let id = nvml.channels()[0].gpu.clone().unwrap();
    assert_eq!(id.mig, Some(true));
    assert_eq!(id.persistence, Some(false));
    assert_eq!(id.split.as_deref(), Some(MIG_SPLIT_RULE));
    // NVML gives no utilisation samples on MIG: memory decides the split.
    let a = nvml.gpu_activity(0).unwrap();
    assert!(a.samples.is_empty());
    assert_eq!(a.processes.len(), 2);
}

#[test]
fn a_missing_library_and_a_host_without_gpus_are_diagnosed() {
    let dir = tempfile::tempdir().unwrap();
    let opened = NvmlSource::open(&dir.path().join("libnvidia-ml.so.1"));
    assert!(opened.source.is_none());
    let d = &opened.diagnoses[0];
    assert!(!d.usable);
    assert!(
        d.problem.as_deref().unwrap().contains("cannot load"),
        "{d:?}"
    );
    assert!(
        d.fix.as_deref().unwrap().contains("--nvml-library"),
        "{d:?}"
    );

    let fake = FakeNvml::new(&Scenario::default());
    let opened = NvmlSource::open(fake.library());
    assert!(opened.source.is_none());
    assert!(
        opened.diagnoses[0]
            .problem
            .as_deref()
            .unwrap()
            .contains("no NVIDIA GPU")
    );

    let fake = FakeNvml::new(&Scenario {
        init_error: Some(9),
        ..Scenario::default()
    });
    let opened = NvmlSource::open(fake.library());
    assert!(
        opened.diagnoses[0]
            .problem
            .as_deref()
            .unwrap()
            .contains("driver is not loaded")
    );
}

#[test]
fn a_gpu_with_no_energy_reading_at_all_is_unusable_with_the_reason() {
    let mut s = two_gpus();
    s.gpus[1].power_mw = None;
    let fake = FakeNvml::new(&s);
    let opened = NvmlSource::open(fake.library());
    assert_eq!(opened.source.unwrap().channels().len(), 1);
    assert!(!opened.diagnoses[1].usable);
    assert!(
        opened.diagnoses[1]
            .problem
            .as_deref()
            .unwrap()
            .contains("neither")
    );
}

#[test]
fn gpu_activity_lists_processes_and_only_new_samples() {
    let mut s = two_gpus();
    s.processes = vec![
        FakeProcess::new(0, 100, Some(4 << 30)),
        FakeProcess::new(0, 200, None),
    ];
    s.samples = vec![
        FakeSample::new(0, 100, 1_000, 70),
        FakeSample::new(0, 200, 1_500, 10),
    ];
    let fake = FakeNvml::new(&s);
    let mut nvml = NvmlSource::open(fake.library()).source.unwrap();
    let a = nvml.gpu_activity(0).unwrap();
    assert_eq!(a.processes.len(), 2);
    assert_eq!(a.processes[0].used_gpu_memory, Some(4 << 30));
    assert_eq!(a.processes[1].used_gpu_memory, None);
    assert_eq!(a.samples.len(), 2);
    let again = nvml.gpu_activity(0).unwrap();
    assert!(
        again.samples.is_empty(),
        "samples already seen are not returned twice"
    );
    s.samples.push(FakeSample::new(0, 200, 2_000, 55));
    fake.play(&s);
    let next = nvml.gpu_activity(0).unwrap();
    assert_eq!(next.samples.len(), 1);
    assert_eq!((next.samples[0].pid, next.samples[0].sm_util), (200, 55));
    let idle = nvml.gpu_activity(1).unwrap();
    assert!(idle.processes.is_empty() && idle.samples.is_empty());
}

/// A MIG GPU through the sampler and the attributor: no utilisation samples, so each
/// process's GPU memory decides (its instance receives the sum of its processes' shares),
/// and the projects' energy adds up to the GPU's exactly.
#[test]
fn a_mig_gpu_is_split_by_memory_per_instance_and_exactly_conserved() {
    use empreinte_agent::attribution::engine::Attributor;
    use empreinte_agent::attribution::procs::ProcFs;
    use empreinte_agent::attribution::rules::Resolver;
    use empreinte_agent::attribution::users::UserNames;
    use empreinte_agent::config::AttributionConfig;
    use empreinte_agent::sampler::Sampler;
    use empreinte_shared::Component;
    use empreinte_testkit::procfs::{FakeProcess as Proc, FakeProcfs};

    let procfs = FakeProcfs::new();
    for (pid, project) in [
        (100u32, "chatbot"),
        (200, "translation"),
        (300, "translation"),
    ] {
        let env = [("EMPREINTE_PROJECT", project)];
        procfs.add(&Proc {
            pid,
            start_ticks: 1000 + u64::from(pid),
            cpu_ticks: 0,
            cmdline: "python serve.py",
            environ: &env,
            cgroup: "0::/system.slice/app.service\n",
        });
    }
    let mut gpu = gpu_at(0);
    gpu.mig = Some(true);
    let mut s = Scenario {
        gpus: vec![gpu],
        processes: vec![
            FakeProcess::new(0, 100, Some(10 << 30)),
            FakeProcess::new(0, 200, Some(20 << 30)),
            FakeProcess::new(0, 300, Some(10 << 30)),
        ],
        instances: vec![
            FakeInstance {
                pid: 100,
                gpu_instance: 1,
                compute_instance: 0,
            },
            FakeInstance {
                pid: 200,
                gpu_instance: 2,
                compute_instance: 0,
            },
            FakeInstance {
                pid: 300,
                gpu_instance: 2,
                compute_instance: 0,
            },
        ],
        ..Scenario::default()
    };
    let fake = FakeNvml::new(&s);
    let source: Box<dyn EnergySource> = Box::new(NvmlSource::open(fake.library()).source.unwrap());
    let cfg = AttributionConfig::default();
    let attributor = Attributor::new(
        &cfg,
        Resolver::new(&cfg).unwrap(),
        Box::new(ProcFs::new(procfs.root())),
        UserNames::default(),
        None,
    );
    let mut sampler = Sampler::new(vec![source]).with_attribution(attributor);
    sampler.cycle(at_ms(0));
    s.gpus[0].energy_mj = Some(5_000_000 + 400_001); // 400.001 J: not divisible by 4
    fake.play(&s);
    sampler.cycle(at_ms(1000));
    let state = sampler.state();
    let host = state.lock();
    let gpu_total: u64 = host
        .channels
        .iter()
        .filter(|c| c.channel.component == Some(Component::Gpu))
        .map(|c| c.total.0)
        .sum();
    assert_eq!(gpu_total, 400_001_000);
    let projects: Vec<(String, u64)> = host
        .attribution
        .as_ref()
        .unwrap()
        .projects
        .iter()
        .filter(|p| p.component == Component::Gpu)
        .map(|p| (p.project.to_string(), p.total_uj))
        .collect();
    let sum: u64 = projects.iter().map(|p| p.1).sum();
    assert_eq!(sum, gpu_total, "exactly conserved: {projects:?}");
    let get = |n: &str| projects.iter().find(|p| p.0 == n).map(|p| p.1).unwrap();
    // Instance 1 (10 GiB of 40) gets a quarter; instance 2 (30 GiB) three quarters.
    assert!(get("chatbot").abs_diff(100_000_250) <= 1, "{projects:?}");
    assert!(
        get("translation").abs_diff(300_000_750) <= 1,
        "{projects:?}"
    );
}

/// The value of `name{…uuid="…"}` in a Prometheus text exposition.
fn series(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(&format!("{name}{{")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn unaccounted_gpu_time_is_exported_as_a_metric() {
    use empreinte_agent::metrics::{ExportInfo, render};
    use empreinte_agent::sampler::Sampler;

    let mut s = Scenario {
        gpus: vec![gpu_at(100)],
        ..Scenario::default()
    };
    let fake = FakeNvml::new(&s);
    let nvml = NvmlSource::open(fake.library()).source.unwrap();
    let mut sampler = Sampler::new(vec![Box::new(nvml)]);
    let info = ExportInfo {
        interval_seconds: 1.0,
    };
    let mut counter = 5_000_000u64;
    let mut before_outage = None;
    for t in 0..=120u64 {
        // The driver is unloaded from 20 s to 50 s, then loaded again (counter from 0).
        s.generation = u64::from(t >= 20);
        s.init_error = (20..50).contains(&t).then_some(9);
        if t == 50 {
            counter = 0;
        } else if t > 0 && !(20..50).contains(&t) {
            counter += 100_000;
        }
        s.gpus[0].energy_mj = Some(counter);
        fake.play(&s);
        sampler.cycle(at_ms(t * 1000));
        if t == 19 {
            let text = render(&sampler.state().lock(), &info).unwrap();
            before_outage = series(&text, "empreinte_gpu_unaccounted_seconds_total");
        }
    }
    assert_eq!(before_outage, Some(0.0), "a GPU measured throughout: 0 s");
    let text = render(&sampler.state().lock(), &info).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("empreinte_gpu_unaccounted_seconds_total{"))
        .expect("the series is exported");
    assert!(line.contains("uuid=\"GPU-00000000"), "{line}");
    let seconds = series(&text, "empreinte_gpu_unaccounted_seconds_total").unwrap();
    // The gap runs from the last good reading (19 s) to the reload's first (≥ 50 s).
    assert!(
        (31.0..=100.0).contains(&seconds),
        "the outage's unaccounted time: {seconds} s"
    );
}
