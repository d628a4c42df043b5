//! Per-project attribution on fake hardware and a fake procfs whose CPU times the test
//! sets: exact shares, exact conservation, GPU sharing through the fake NVML library.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::Duration;

use empreinte_agent::attribution::engine::Attributor;
use empreinte_agent::attribution::procs::ProcFs;
use empreinte_agent::attribution::rules::Resolver;
use empreinte_agent::attribution::users::UserNames;
use empreinte_agent::clock::SampleTime;
use empreinte_agent::config::{AttributionConfig, IdlePolicy};
use empreinte_agent::sampler::{HostState, Sampler};
use empreinte_agent::sources::EnergySource;
use empreinte_agent::sources::nvml::NvmlSource;
use empreinte_agent::sources::rapl::Rapl;
use empreinte_shared::Component;
use empreinte_testkit::nvml::{FakeGpu, FakeNvml, FakeProcess as GpuProc, FakeSample, Scenario};
use empreinte_testkit::powercap::FakePowercap;
use empreinte_testkit::procfs::{FakeProcess, FakeProcfs};

fn attributor(procfs: &FakeProcfs, policy: IdlePolicy) -> Attributor {
    let cfg = AttributionConfig {
        idle_policy: policy,
        ..AttributionConfig::default()
    };
    Attributor::new(
        &cfg,
        Resolver::new(&cfg).unwrap(),
        Box::new(ProcFs::new(procfs.root())),
        UserNames::default(),
        None,
    )
}

fn process(procfs: &FakeProcfs, pid: u32, project: Option<&str>, ticks: u64) {
    let env: Vec<(&str, &str)> = project
        .map(|p| vec![("EMPREINTE_PROJECT", p)])
        .unwrap_or_default();
    procfs.add(&FakeProcess {
        pid,
        start_ticks: 1000 + u64::from(pid),
        cpu_ticks: ticks,
        cmdline: "python serve.py",
        environ: &env,
        cgroup: "0::/user.slice/user-1000.slice/session-3.scope\n",
    });
}

/// Project totals in µJ by (project, component).
fn projects(host: &HostState) -> BTreeMap<(String, Component), u64> {
    let mut m = BTreeMap::new();
    for p in &host.attribution.as_ref().unwrap().projects {
        *m.entry((p.project.to_string(), p.component)).or_default() += p.total_uj;
    }
    m
}

/// Checks that, per component, the projects' totals equal the host's, exactly.
fn assert_conserved(host: &HostState) {
    for component in Component::ALL {
        let host_total: u64 = host
            .channels
            .iter()
            .filter(|c| c.channel.component == Some(component))
            .map(|c| c.total.0)
            .sum();
        let project_total: u64 = host
            .attribution
            .as_ref()
            .unwrap()
            .projects
            .iter()
            .filter(|p| p.component == component)
            .map(|p| p.total_uj)
            .sum();
        assert_eq!(
            project_total, host_total,
            "{component}: the sum over projects equals the host's energy"
        );
    }
}

#[test]
fn cpu_energy_is_split_by_cpu_time_with_idle_separate_and_exact_conservation() {
    let mut fp = FakePowercap::intel_two_socket();
    let procfs = FakeProcfs::new();
    process(&procfs, 100, Some("chatbot"), 0);
    process(&procfs, 101, Some("chatbot"), 0);
    process(&procfs, 200, Some("summaries"), 0);
    process(&procfs, 300, None, 0);
    let rapl = Rapl::open(fp.root()).source.unwrap();
    let mut sampler = Sampler::new(vec![Box::new(rapl)])
        .with_attribution(attributor(&procfs, IdlePolicy::Separate));
    sampler.cycle(SampleTime::from_monotonic(Duration::ZERO));

    // 10 intervals of 1 s on 4 CPUs (400 ticks each): chatbot 150 ticks (2 processes),
    // summaries 50, an unlabelled process 20, 10 busy ticks no live process explains
    // (an exited process), the rest idle.
    let (mut busy, mut idle) = (0, 0);
    for step in 1..=10u64 {
        for z in fp.zones() {
            fp.advance(&z, 100.0 + step as f64, Duration::from_secs(1));
        }
        procfs.set_ticks(100, 1100, 100 * step);
        procfs.set_ticks(101, 1101, 50 * step);
        procfs.set_ticks(200, 1200, 50 * step);
        procfs.set_ticks(300, 1300, 20 * step);
        busy += 230;
        idle += 170;
        procfs.set_host_stat(busy, idle);
        sampler.cycle(SampleTime::from_monotonic(Duration::from_secs(step)));
    }
    let state = sampler.state();
    let host = state.lock();
    assert_conserved(&host);
    let p = projects(&host);
    let cpu_total: u64 = host
        .channels
        .iter()
        .filter(|c| c.channel.component == Some(Component::Cpu))
        .map(|c| c.total.0)
        .sum();
    let share = |name: &str| p[&(name.to_string(), Component::Cpu)] as f64 / cpu_total as f64;
    // Shares of CPU time: 150/400, 50/400, 20+10 unassigned, 170/400 idle (to rounding).
    for (name, expected) in [
        ("chatbot", 150.0),
        ("summaries", 50.0),
        ("unassigned", 30.0),
        ("idle", 170.0),
    ] {
        assert!(
            (share(name) - expected / 400.0).abs() < 1e-6,
            "{name}: {} vs {}",
            share(name),
            expected / 400.0
        );
    }
    // DRAM follows the same shares.
    let dram_total: u64 = host
        .channels
        .iter()
        .filter(|c| c.channel.component == Some(Component::Dram))
        .map(|c| c.total.0)
        .sum();
    let dram_share = p[&("chatbot".to_string(), Component::Dram)] as f64 / dram_total as f64;
    assert!((dram_share - 150.0 / 400.0).abs() < 1e-6);
    let top = &host.attribution.as_ref().unwrap().top_processes;
    assert_eq!(top[0].pid, 100);
    assert_eq!(&*top[0].project, "chatbot");
    assert!(
        top[0].reason.contains("EMPREINTE_PROJECT=chatbot"),
        "{}",
        top[0].reason
    );
}

#[test]
fn proportional_policy_gives_idle_time_to_the_active_projects() {
    let mut fp = FakePowercap::amd();
    let procfs = FakeProcfs::new();
    process(&procfs, 10, Some("a"), 0);
    process(&procfs, 20, Some("b"), 0);
    let mut sampler = Sampler::new(vec![Box::new(Rapl::open(fp.root()).source.unwrap())])
        .with_attribution(attributor(&procfs, IdlePolicy::Proportional));
    sampler.cycle(SampleTime::from_monotonic(Duration::ZERO));
    for z in fp.zones() {
        fp.advance(&z, 80.0, Duration::from_secs(1));
    }
    procfs.set_ticks(10, 1010, 30);
    procfs.set_ticks(20, 1020, 10);
    procfs.set_host_stat(40, 160);
    sampler.cycle(SampleTime::from_monotonic(Duration::from_secs(1)));
    let state = sampler.state();
    let host = state.lock();
    assert_conserved(&host);
    let p = projects(&host);
    assert!(!p.contains_key(&("idle".to_string(), Component::Cpu)));
    let (a, b) = (
        p[&("a".to_string(), Component::Cpu)],
        p[&("b".to_string(), Component::Cpu)],
    );
    assert_eq!(a + b, 160_000_000, "both packages' 80 J");
    assert_eq!(a, 120_000_000);
}

#[test]
fn a_new_process_counts_from_its_start_and_a_reused_pid_is_resolved_again() {
    let mut fp = FakePowercap::amd();
    let procfs = FakeProcfs::new();
    process(&procfs, 10, Some("old"), 500);
    let mut sampler = Sampler::new(vec![Box::new(Rapl::open(fp.root()).source.unwrap())])
        .with_attribution(attributor(&procfs, IdlePolicy::Separate));
    sampler.cycle(SampleTime::from_monotonic(Duration::ZERO));
    // The PID is reused by another program, and a new process starts: all their CPU time
    // is from this interval; the old cumulative 500 ticks are not.
    procfs.remove(10);
    procfs.add(&FakeProcess {
        pid: 10,
        start_ticks: 9999,
        cpu_ticks: 40,
        cmdline: "new",
        environ: &[("EMPREINTE_PROJECT", "new")],
        cgroup: "0::/\n",
    });
    process(&procfs, 11, Some("other"), 40);
    procfs.set_host_stat(80, 120);
    for z in fp.zones() {
        fp.advance(&z, 50.0, Duration::from_secs(1));
    }
    sampler.cycle(SampleTime::from_monotonic(Duration::from_secs(1)));
    let state = sampler.state();
    let host = state.lock();
    assert_conserved(&host);
    let p = projects(&host);
    assert!(!p.contains_key(&("old".to_string(), Component::Cpu)));
    assert_eq!(
        p[&("new".to_string(), Component::Cpu)],
        p[&("other".to_string(), Component::Cpu)]
    );
    assert_eq!(
        p[&("new".to_string(), Component::Cpu)],
        20_000_000,
        "40 of 200 ticks of 100 J"
    );
}

fn gpu_setup(procfs: &FakeProcfs) -> (FakeNvml, Scenario, Sampler) {
    process(procfs, 100, Some("chatbot"), 0);
    process(procfs, 200, Some("translation"), 0);
    let mut g0 = FakeGpu::new(0, "NVIDIA H100 80GB HBM3");
    g0.energy_mj = Some(0);
    let mut g1 = FakeGpu::new(1, "NVIDIA H100 80GB HBM3");
    g1.energy_mj = Some(0);
    let scenario = Scenario {
        gpus: vec![g0, g1],
        ..Scenario::default()
    };
    let nvml = FakeNvml::new(&scenario);
    let source: Box<dyn EnergySource> = Box::new(NvmlSource::open(nvml.library()).source.unwrap());
    let mut sampler =
        Sampler::new(vec![source]).with_attribution(attributor(procfs, IdlePolicy::Separate));
    sampler.cycle(SampleTime::from_monotonic(Duration::ZERO));
    (nvml, scenario, sampler)
}

fn gpu_projects(host: &HostState) -> BTreeMap<String, u64> {
    host.attribution
        .as_ref()
        .unwrap()
        .projects
        .iter()
        .filter(|p| p.component == Component::Gpu)
        .map(|p| (p.project.to_string(), p.total_uj))
        .collect()
}

#[test]
fn two_projects_share_a_gpu_by_their_utilisation_samples_and_an_empty_gpu_is_idle() {
    let procfs = FakeProcfs::new();
    let (nvml, mut s, mut sampler) = gpu_setup(&procfs);
    s.processes = vec![
        GpuProc::new(0, 100, Some(10 << 30)),
        GpuProc::new(0, 200, Some(30 << 30)),
    ];
    s.samples = vec![
        FakeSample::new(0, 100, 10, 60),
        FakeSample::new(0, 100, 20, 60),
        FakeSample::new(0, 200, 15, 20),
        FakeSample::new(0, 200, 25, 20),
    ];
    s.gpus[0].energy_mj = Some(400_000); // 400 J
    s.gpus[1].energy_mj = Some(90_000); // 90 J with no process
    nvml.play(&s);
    sampler.cycle(SampleTime::from_monotonic(Duration::from_secs(1)));
    let state = sampler.state();
    let host = state.lock();
    assert_conserved(&host);
    let g = gpu_projects(&host);
    assert_eq!(
        g["chatbot"], 300_000_000,
        "120 of 160 SM-utilisation points of 400 J"
    );
    assert_eq!(g["translation"], 100_000_000);
    assert_eq!(g["idle"], 90_000_000, "the GPU without process is idle");
    let top = &host.attribution.as_ref().unwrap().top_processes;
    assert!(
        top.iter()
            .any(|p| p.pid == 100 && p.gpu_shares == [("gpu0".to_string(), 0.75)]),
        "{top:?}"
    );
}

#[test]
fn without_samples_gpu_memory_decides_and_an_exited_process_still_gets_its_share() {
    let procfs = FakeProcfs::new();
    let (nvml, mut s, mut sampler) = gpu_setup(&procfs);
    // No utilisation sample in this interval: used memory decides (1:3). Process 200
    // exited during the interval (its /proc entry is gone, the driver still lists it):
    // it keeps its project for this interval.
    s.processes = vec![
        GpuProc::new(0, 100, Some(10 << 30)),
        GpuProc::new(0, 200, Some(30 << 30)),
    ];
    s.gpus[0].energy_mj = Some(200_000);
    nvml.play(&s);
    procfs.remove(200);
    sampler.cycle(SampleTime::from_monotonic(Duration::from_secs(1)));
    let state = sampler.state();
    let host = state.lock();
    assert_conserved(&host);
    let g = gpu_projects(&host);
    assert_eq!(g["chatbot"], 50_000_000);
    assert_eq!(g["translation"], 150_000_000);
}

mod conservation {
    use super::*;
    use empreinte_agent::interval::{ChannelInterval, IntervalEnergy};
    use empreinte_agent::sources::{GpuActivity, GpuProcess, GpuSample};
    use empreinte_shared::{MicroJoules, SourceKind};
    use proptest::prelude::*;

    fn channel(component: Component, source: SourceKind, device: &str, uj: u64) -> ChannelInterval {
        ChannelInterval::new(component, source, device, MicroJoules(uj))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Whatever the processes, their CPU times, the host's ticks, the policy and the
        /// GPU activity, every channel's energy is handed out to projects exactly.
        #[test]
        fn every_channel_is_split_exactly(
            procs in proptest::collection::vec((0u8..5, 0u64..500), 0..12),
            host in (0u64..3000, 0u64..3000),
            energies in proptest::collection::vec(0u64..u64::MAX / 64, 4),
            gpu in proptest::collection::vec((0usize..12, 0u32..100, proptest::option::of(0u64..1 << 34)), 0..6),
            proportional in any::<bool>(),
        ) {
            let procfs = FakeProcfs::new();
            let names = ["a", "b", "c", "d"];
            for (i, (project, _)) in procs.iter().enumerate() {
                process(&procfs, 100 + i as u32, names.get(*project as usize).copied(), 0);
            }
            let policy = if proportional { IdlePolicy::Proportional } else { IdlePolicy::Separate };
            let mut a = attributor(&procfs, policy);
            let channels = vec![
                channel(Component::Cpu, SourceKind::Rapl, "package-0", energies[0]),
                channel(Component::Dram, SourceKind::Rapl, "package-0", energies[1]),
                channel(Component::Cpu, SourceKind::Estimate, "host", energies[2]),
                channel(Component::Gpu, SourceKind::Nvml, "gpu0", energies[3]),
            ];
            let interval = IntervalEnergy::new(Some(Duration::from_secs(1)), channels);
            a.attribute(&interval).unwrap();
            for (i, (_, ticks)) in procs.iter().enumerate() {
                procfs.set_ticks(100 + i as u32, 1100 + i as u64, *ticks);
            }
            procfs.set_host_stat(host.0, host.1);
            let activity = GpuActivity {
                processes: gpu.iter().map(|(p, _, m)| GpuProcess { pid: 100 + *p as u32, used_gpu_memory: *m }).collect(),
                samples: gpu.iter().enumerate().map(|(k, (p, sm, _))| GpuSample { pid: 100 + *p as u32, timestamp_us: k as u64, sm_util: *sm }).collect(),
            };
            a.attribute(&interval.with_gpu_activity(3, activity)).unwrap();
            for (component, source, expected) in [
                (Component::Cpu, SourceKind::Rapl, energies[0]),
                (Component::Dram, SourceKind::Rapl, energies[1]),
                (Component::Cpu, SourceKind::Estimate, energies[2]),
                (Component::Gpu, SourceKind::Nvml, energies[3]),
            ] {
                let got: u64 = a.state().projects.iter()
                    .filter(|p| p.component == component && p.source == source)
                    .map(|p| p.last_uj)
                    .sum();
                prop_assert_eq!(got, expected, "{:?} {:?}", component, source);
            }
        }
    }
}

/// 1,000 one-off projects, each with one process that lives one interval: after the
/// window the attributor holds only the projects of the window, and a project that comes
/// back resumes its counter.
#[test]
fn memory_is_bounded_by_the_projects_active_in_the_window() {
    use empreinte_agent::interval::{ChannelInterval, IntervalEnergy};
    use empreinte_shared::{MicroJoules, SourceKind};
    let procfs = FakeProcfs::new();
    let cfg = AttributionConfig {
        project_window: Duration::from_secs(20),
        max_dormant_projects: 200,
        ..AttributionConfig::default()
    };
    let mut a = Attributor::new(
        &cfg,
        Resolver::new(&cfg).unwrap(),
        Box::new(ProcFs::new(procfs.root())),
        UserNames::default(),
        None,
    );
    let interval = IntervalEnergy::new(
        Some(Duration::from_secs(1)),
        vec![ChannelInterval::new(
            Component::Cpu,
            SourceKind::Rapl,
            "package-0",
            MicroJoules(1_000_000),
        )],
    );
    let total_of = |a: &Attributor, name: &str| -> u64 {
        a.state()
            .projects
            .iter()
            .filter(|p| &*p.project == name)
            .map(|p| p.total_uj)
            .sum()
    };
    let mut most_published = 0;
    let mut host = 0;
    for i in 0..1_000u32 {
        let pid = 1_000 + i;
        process(&procfs, pid, Some(&format!("one-off-{i}")), 0);
        host += 10;
        procfs.set_ticks(pid, 1000 + u64::from(pid), 10);
        procfs.set_host_stat(host, 0);
        a.attribute(&interval).unwrap();
        procfs.remove(pid);
        if i > 100 {
            most_published = most_published.max(a.state().projects.len());
        }
    }
    let s = a.state();
    // The window holds 20 one-second intervals: their projects, idle and unassigned.
    assert!(s.projects_active <= 23, "{} active", s.projects_active);
    assert!(most_published <= 23, "{most_published} published");
    assert_eq!(s.projects_dormant, 200);
    assert!(
        s.projects_forgotten_total >= 770,
        "{}",
        s.projects_forgotten_total
    );
    // A project parked a while ago comes back: its counter resumes from its total.
    let back = "one-off-900";
    process(&procfs, 99_999, Some(back), 0);
    let mut seen = Vec::new();
    for _ in 0..2 {
        host += 10;
        procfs.set_ticks(99_999, 1000 + 99_999, host);
        procfs.set_host_stat(host, 0);
        a.attribute(&interval).unwrap();
        seen.push(total_of(&a, back));
    }
    assert!(
        seen[0] > 1_000_000 && seen[1] > seen[0],
        "resumed from its parked total (1 J in its first interval): {seen:?}"
    );
}
