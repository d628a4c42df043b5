//! The NVML source against the fake NVML library, loaded through the real nvml-wrapper.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use empreinte_agent::clock::SampleTime;
use empreinte_agent::sources::nvml::{GpuMethod, NvmlSource};
use empreinte_agent::sources::{ChannelEnergy, Correction, EnergySource, PollError};
use empreinte_testkit::nvml::{FakeGpu, FakeNvml, FakeProcess, FakeSample, Scenario};

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

#[test]
fn a_gpu_failing_mid_run_loses_nothing_once_it_recovers() {
    let mut s = two_gpus();
    s.gpus[0].energy_mj = Some(1_000);
    let fake = FakeNvml::new(&s);
    let mut nvml = NvmlSource::open(fake.library()).source.unwrap();
    let mut out = Vec::new();
    nvml.poll(at_ms(0), &mut out).unwrap();
    s.gpus[0].energy_mj = Some(6_000);
    s.gpus[0].fail = Some(15); // GPU_IS_LOST
    fake.play(&s);
    out.clear();
    let err = nvml.poll(at_ms(1000), &mut out).unwrap_err();
    assert!(
        matches!(err, PollError::Retry(ref m) if m.contains("GPU 0")),
        "{err}"
    );
    assert!(out.iter().all(|e| e.channel != 0));
    s.gpus[0].fail = None;
    s.gpus[0].energy_mj = Some(9_000);
    fake.play(&s);
    out.clear();
    nvml.poll(at_ms(2000), &mut out).unwrap();
    let e0: u64 = out
        .iter()
        .filter(|e| e.channel == 0)
        .map(|e| e.energy.0)
        .sum();
    assert_eq!(e0, 8_000_000, "8 J over the two intervals");
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
        FakeProcess {
            gpu: 0,
            pid: 100,
            used_mem: Some(4 << 30),
        },
        FakeProcess {
            gpu: 0,
            pid: 200,
            used_mem: None,
        },
    ];
    s.samples = vec![
        FakeSample {
            gpu: 0,
            pid: 100,
            ts_us: 1_000,
            sm: 70,
        },
        FakeSample {
            gpu: 0,
            pid: 200,
            ts_us: 1_500,
            sm: 10,
        },
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
    s.samples.push(FakeSample {
        gpu: 0,
        pid: 200,
        ts_us: 2_000,
        sm: 55,
    });
    fake.play(&s);
    let next = nvml.gpu_activity(0).unwrap();
    assert_eq!(next.samples.len(), 1);
    assert_eq!((next.samples[0].pid, next.samples[0].sm_util), (200, 55));
    let idle = nvml.gpu_activity(1).unwrap();
    assert!(idle.processes.is_empty() && idle.samples.is_empty());
}
