//! The fake NVML library answers the real nvml-wrapper as its scenario says.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use empreinte_testkit::nvml::{FakeGpu, FakeInstance, FakeNvml, FakeProcess, FakeSample, Scenario};
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
        generation: 0,
        driver: None,
        instances: Vec::new(),
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

#[test]
fn mig_persistence_instances_and_a_driver_reload_are_played() {
    let mut s = scenario();
    s.gpus[0].mig = Some(true);
    s.gpus[1].persistence = Some(false);
    s.driver = Some("560.35.03".into());
    s.instances = vec![FakeInstance {
        pid: 11,
        gpu_instance: 3,
        compute_instance: 1,
    }];
    let fake = FakeNvml::new(&s);
    let nvml = Nvml::builder()
        .lib_path(fake.library().as_os_str())
        .init()
        .unwrap();
    assert_eq!(nvml.sys_driver_version().unwrap(), "560.35.03");
    let d0 = nvml.device_by_index(0).unwrap();
    assert_eq!(d0.mig_mode().unwrap().current, 1);
    assert!(d0.is_in_persistent_mode().unwrap());
    let procs = d0.running_compute_processes().unwrap();
    assert_eq!(
        (procs[0].gpu_instance_id, procs[0].compute_instance_id),
        (Some(3), Some(1))
    );
    assert_eq!(
        (procs[1].gpu_instance_id, procs[1].compute_instance_id),
        (None, None)
    );
    assert!(matches!(
        d0.process_utilization_stats(0),
        Err(NvmlError::NotSupported)
    ));
    let d1 = nvml.device_by_index(1).unwrap();
    assert!(!d1.is_in_persistent_mode().unwrap());
    assert!(matches!(d1.mig_mode(), Err(NvmlError::NotSupported)));
    // A driver reload: the old initialisation's handles answer UNINITIALIZED.
    s.generation = 1;
    fake.play(&s);
    assert!(matches!(
        d0.total_energy_consumption(),
        Err(NvmlError::Uninitialized)
    ));
    let again = Nvml::builder()
        .lib_path(fake.library().as_os_str())
        .init()
        .unwrap();
    assert_eq!(
        again
            .device_by_index(0)
            .unwrap()
            .total_energy_consumption()
            .unwrap(),
        123_456
    );
}
