//! The fake NVML library answers the real nvml-wrapper as its scenario says.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use empreinte_testkit::nvml::{FakeGpu, FakeNvml, FakeProcess, FakeSample, Scenario};
use nvml_wrapper::Nvml;
use nvml_wrapper::enums::device::UsedGpuMemory;
use nvml_wrapper::error::NvmlError;

fn scenario() -> Scenario {
    let mut a = FakeGpu::new(0, "NVIDIA H100 80GB HBM3");
    a.energy_mj = Some(123_456);
    a.power_mw = Some(250_000);
    let mut b = FakeGpu::new(1, "Tesla P100-PCIE-16GB");
    b.energy_mj = None;
    b.power_mw = Some(30_500);
    Scenario {
        init_error: None,
        gpus: vec![a, b],
        processes: vec![
            FakeProcess {
                gpu: 0,
                pid: 11,
                used_mem: Some(1 << 30),
            },
            FakeProcess {
                gpu: 0,
                pid: 12,
                used_mem: None,
            },
        ],
        samples: vec![
            FakeSample {
                gpu: 0,
                pid: 11,
                ts_us: 100,
                sm: 40,
            },
            FakeSample {
                gpu: 0,
                pid: 12,
                ts_us: 200,
                sm: 20,
            },
        ],
    }
}

#[test]
fn every_entry_point_answers_as_the_scenario_says() {
    let fake = FakeNvml::new(&scenario());
    let nvml = Nvml::builder()
        .lib_path(fake.library().as_os_str())
        .init()
        .unwrap();
    assert_eq!(nvml.device_count().unwrap(), 2);
    let d0 = nvml.device_by_index(0).unwrap();
    assert_eq!(d0.name().unwrap(), "NVIDIA H100 80GB HBM3");
    assert_eq!(
        d0.uuid().unwrap(),
        "GPU-00000000-1111-2222-3333-444455556666"
    );
    assert_eq!(d0.total_energy_consumption().unwrap(), 123_456);
    assert_eq!(d0.power_usage().unwrap(), 250_000);
    assert_eq!(d0.power_management_limit().unwrap(), 700_000);
    let procs = d0.running_compute_processes().unwrap();
    assert_eq!(procs.len(), 2);
    assert_eq!(procs[0].pid, 11);
    assert_eq!(procs[0].used_gpu_memory, UsedGpuMemory::Used(1 << 30));
    assert_eq!(procs[1].used_gpu_memory, UsedGpuMemory::Unavailable);
    let samples = d0.process_utilization_stats(150).unwrap();
    assert_eq!(
        samples.len(),
        1,
        "only samples newer than the last seen timestamp"
    );
    assert_eq!((samples[0].pid, samples[0].sm_util), (12, 20));
    assert!(matches!(
        d0.process_utilization_stats(200),
        Err(NvmlError::NotFound)
    ));

    let d1 = nvml.device_by_index(1).unwrap();
    assert!(matches!(
        d1.total_energy_consumption(),
        Err(NvmlError::NotSupported)
    ));
    assert_eq!(d1.running_compute_processes().unwrap().len(), 0);

    // The trace advances when the test rewrites the scenario.
    let mut s = scenario();
    s.gpus[0].energy_mj = Some(200_000);
    fake.play(&s);
    assert_eq!(d0.total_energy_consumption().unwrap(), 200_000);
    nvml.shutdown().unwrap();
}

#[test]
fn two_copies_play_two_scenarios_and_init_errors_come_through() {
    let a = FakeNvml::new(&scenario());
    let b = FakeNvml::new(&Scenario {
        init_error: Some(9),
        ..Scenario::default()
    });
    let na = Nvml::builder()
        .lib_path(a.library().as_os_str())
        .init()
        .unwrap();
    assert!(matches!(
        Nvml::builder().lib_path(b.library().as_os_str()).init(),
        Err(NvmlError::DriverNotLoaded)
    ));
    assert_eq!(na.device_count().unwrap(), 2);
    b.write_raw("gpu 0 nonsense\n");
    assert!(
        Nvml::builder()
            .lib_path(b.library().as_os_str())
            .init()
            .is_err(),
        "a malformed scenario fails init"
    );
}
