//! The RAPL source against fake powercap trees advanced at known powers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use empreinte_agent::clock::SampleTime;
use empreinte_agent::sampler::Sampler;
use empreinte_agent::sources::rapl::{DEFAULT_ZONE_CEILING_WATTS, Rapl, zone_ceiling_watts};
use empreinte_agent::sources::{ChannelEnergy, Correction, EnergySource, PollError};
use empreinte_shared::Component;
use empreinte_testkit::powercap::{
    FakePowercap, INTEL_MAX_ENERGY_RANGE_UJ, Unreadable, ZoneHandle,
};

fn at(s: u64) -> SampleTime {
    SampleTime::from_monotonic(Duration::from_secs(s))
}

/// (component, device, zone name) of every channel, sorted.
fn layout(r: &Rapl) -> Vec<(Option<Component>, String, String)> {
    let mut v: Vec<_> = r
        .channels()
        .iter()
        .map(|c| {
            (
                c.component,
                c.device.clone(),
                c.zone.as_ref().unwrap().name.clone(),
            )
        })
        .collect();
    v.sort();
    v
}

/// Advances every zone at its own power for `steps` intervals of 1 s, polling after each,
/// and checks each channel's summed energy against the fake's exact truth.
fn run_and_check(
    fp: &mut FakePowercap,
    rapl: &mut Rapl,
    powers: &[(ZoneHandle, f64)],
    steps: u64,
) -> Vec<Option<Correction>> {
    let mut out = Vec::new();
    rapl.poll(at(0), &mut out).unwrap();
    assert!(
        out.iter().all(|e| e.energy.0 == 0),
        "the first poll is a baseline"
    );
    let start: Vec<u128> = powers.iter().map(|(z, _)| fp.truth_uj(z)).collect();
    let mut sums = vec![0u128; rapl.channels().len()];
    let mut corrections = Vec::new();
    for step in 1..=steps {
        for (z, p) in powers {
            // Power varies up and down around its mean.
            let w = p * (1.0 + 0.5 * ((step as f64) * 0.7).sin());
            fp.advance(z, w, Duration::from_secs(1));
        }
        out.clear();
        rapl.poll(at(step), &mut out).unwrap();
        for e in &out {
            sums[e.channel] += u128::from(e.energy.0);
            corrections.push(e.correction);
        }
    }
    for (i, (z, _)) in powers.iter().enumerate() {
        let ch = rapl
            .channels()
            .iter()
            .position(|c| c.zone.as_ref().unwrap().id == z.id())
            .unwrap();
        let truth = fp.truth_uj(z) - start[i];
        assert_eq!(
            sums[ch],
            truth,
            "zone {}: reported energy equals the truth exactly",
            z.id()
        );
    }
    corrections
}

#[test]
fn a_two_socket_intel_host_with_psys() {
    let mut fp = FakePowercap::intel_two_socket();
    let mut rapl = Rapl::open(fp.root()).source.unwrap();
    assert_eq!(
        layout(&rapl),
        vec![
            (None, "package-0".into(), "core".into()),
            (None, "package-0".into(), "uncore".into()),
            (None, "package-1".into(), "core".into()),
            (None, "package-1".into(), "uncore".into()),
            (None, "psys".into(), "psys".into()),
            (Some(Component::Cpu), "package-0".into(), "package-0".into()),
            (Some(Component::Cpu), "package-1".into(), "package-1".into()),
            (Some(Component::Dram), "package-0".into(), "dram".into()),
            (Some(Component::Dram), "package-1".into(), "dram".into()),
        ]
    );
    let powers: Vec<(ZoneHandle, f64)> = fp
        .zones()
        .into_iter()
        .zip([95.0, 60.0, 10.0, 12.0, 80.0, 50.0, 9.0, 14.0, 230.0])
        .collect();
    run_and_check(&mut fp, &mut rapl, &powers, 30);
}

#[test]
fn a_wrap_within_an_interval_is_corrected_and_reported() {
    let mut fp = FakePowercap::new();
    let pkg = fp.add_zone(
        "intel-rapl:0",
        "package-0",
        INTEL_MAX_ENERGY_RANGE_UJ,
        INTEL_MAX_ENERGY_RANGE_UJ - 150_000_000,
    );
    let mut rapl = Rapl::open(fp.root()).source.unwrap();
    // About 200 W for 1 s = 200 J: the counter passes its maximum in the first interval.
    let corrections = run_and_check(&mut fp, &mut rapl, &[(pkg, 200.0)], 5);
    assert_eq!(
        corrections
            .iter()
            .filter(|c| **c == Some(Correction::Wrap))
            .count(),
        1
    );
}

#[test]
fn an_amd_host_counts_packages_only() {
    let mut fp = FakePowercap::amd();
    let mut rapl = Rapl::open(fp.root()).source.unwrap();
    assert_eq!(
        layout(&rapl),
        vec![
            (None, "package-0".into(), "core".into()),
            (None, "package-1".into(), "core".into()),
            (Some(Component::Cpu), "package-0".into(), "package-0".into()),
            (Some(Component::Cpu), "package-1".into(), "package-1".into()),
        ]
    );
    let powers: Vec<(ZoneHandle, f64)> = fp
        .zones()
        .into_iter()
        .zip([150.0, 90.0, 140.0, 85.0])
        .collect();
    run_and_check(&mut fp, &mut rapl, &powers, 20);
}

#[test]
fn multi_die_packages_and_the_mmio_duplicate() {
    let fp = FakePowercap::intel_multi_die();
    let rapl = Rapl::open(fp.root()).source.unwrap();
    let cpu: Vec<String> = rapl
        .channels()
        .iter()
        .filter(|c| c.component == Some(Component::Cpu))
        .map(|c| c.device.clone())
        .collect();
    assert_eq!(cpu, ["package-0-die-0", "package-0-die-1"]);

    let fp = FakePowercap::with_mmio_duplicate();
    let rapl = Rapl::open(fp.root()).source.unwrap();
    assert_eq!(
        rapl.channels()
            .iter()
            .filter(|c| c.component == Some(Component::Cpu))
            .count(),
        1,
        "mmio skipped"
    );
    assert!(
        rapl.channels()
            .iter()
            .all(|c| !c.zone.as_ref().unwrap().id.contains("mmio"))
    );
}

#[test]
fn a_nested_only_tree_is_read_the_same() {
    let fp = FakePowercap::intel_two_socket();
    let a = Rapl::open(fp.root()).source.unwrap();
    let b = Rapl::open(fp.devices_root()).source.unwrap();
    assert_eq!(layout(&a), layout(&b));
}

#[test]
fn an_unreadable_energy_file_is_diagnosed_with_the_fix() {
    let mut fp = FakePowercap::intel_two_socket();
    let mut how = Unreadable::PermissionDenied;
    for z in fp.zones() {
        how = fp.make_unreadable(&z);
    }
    let opened = Rapl::open(fp.root());
    assert!(opened.source.is_none(), "no usable zone, no source");
    assert_eq!(opened.diagnoses.len(), 9);
    for d in &opened.diagnoses {
        assert!(!d.usable);
        let problem = d.problem.as_deref().unwrap();
        assert!(problem.contains("energy_uj"), "{problem}");
        if how == Unreadable::PermissionDenied {
            assert!(
                problem.contains("root only") && problem.contains("CVE-2020-8694"),
                "{problem}"
            );
            assert!(
                d.fix.as_deref().unwrap().contains("empreinte-rapl.conf"),
                "{d:?}"
            );
        }
    }
}

#[test]
fn malformed_contents_and_a_missing_root_are_diagnosed() {
    let mut fp = FakePowercap::new();
    let z = fp.add_zone("intel-rapl:0", "package-0", 1_000_000, 5);
    fp.write_garbage(&z, "12abc\n");
    let opened = Rapl::open(fp.root());
    assert!(opened.source.is_none());
    assert!(
        opened.diagnoses[0]
            .problem
            .as_deref()
            .unwrap()
            .contains("\"12abc\""),
        "{:?}",
        opened.diagnoses
    );

    let opened = Rapl::open(&fp.root().join("nope"));
    assert!(opened.source.is_none());
    assert!(
        opened.diagnoses[0]
            .problem
            .as_deref()
            .unwrap()
            .contains("no powercap tree")
    );
    assert!(opened.diagnoses[0].fix.is_some());
}

#[test]
fn a_zone_failing_mid_run_loses_nothing_once_it_recovers() {
    let mut fp = FakePowercap::new();
    let pkg = fp.add_zone(
        "intel-rapl:0",
        "package-0",
        INTEL_MAX_ENERGY_RANGE_UJ,
        1_000,
    );
    let dram = fp.add_zone("intel-rapl:0:0", "dram", INTEL_MAX_ENERGY_RANGE_UJ, 1_000);
    let mut rapl = Rapl::open(fp.root()).source.unwrap();
    let mut out: Vec<ChannelEnergy> = Vec::new();
    rapl.poll(at(0), &mut out).unwrap();
    let pkg_ch = rapl
        .channels()
        .iter()
        .position(|c| c.component == Some(Component::Cpu))
        .unwrap();
    let total = |out: &[ChannelEnergy]| {
        out.iter()
            .filter(|e| e.channel == pkg_ch)
            .map(|e| e.energy.0)
            .sum::<u64>()
    };
    fp.advance(&pkg, 100.0, Duration::from_secs(1));
    fp.advance(&dram, 10.0, Duration::from_secs(1));
    fp.write_garbage(&pkg, "");
    out.clear();
    let err = rapl.poll(at(1), &mut out).unwrap_err();
    assert!(
        matches!(err, PollError::Retry(ref m) if m.contains("intel-rapl:0")),
        "{err}"
    );
    assert_eq!(out.len(), 1, "the DRAM zone is still reported");
    fp.repair(&pkg);
    fp.advance(&pkg, 100.0, Duration::from_secs(1));
    out.clear();
    rapl.poll(at(2), &mut out).unwrap();
    assert_eq!(
        total(&out),
        200_000_000,
        "both intervals counted once the zone recovers"
    );
}

/// Runs a sampler over one package zone at ~`watts` for `steps` intervals of 1 s, calling
/// `glitch` before the poll of step `at_step`; returns (reported µJ, truth µJ, glitches).
fn run_with_glitch(
    steps: u64,
    at_step: u64,
    watts: f64,
    glitch: impl Fn(&mut FakePowercap, &ZoneHandle),
) -> (u64, u128, u64) {
    let mut fp = FakePowercap::new();
    let pkg = fp.add_zone(
        "intel-rapl:0",
        "package-0",
        INTEL_MAX_ENERGY_RANGE_UJ,
        INTEL_MAX_ENERGY_RANGE_UJ / 2,
    );
    let rapl = Rapl::open(fp.root()).source.unwrap();
    let mut sampler = Sampler::new(vec![Box::new(rapl)]);
    sampler.cycle(at(0));
    let start = fp.truth_uj(&pkg);
    for step in 1..=steps {
        let w = watts * (1.0 + 0.3 * ((step as f64) * 0.7).sin());
        fp.advance(&pkg, w, Duration::from_secs(1));
        if step == at_step {
            glitch(&mut fp, &pkg);
        }
        sampler.cycle(at(step));
    }
    let host = sampler.host();
    let c = &host.channels[0];
    (
        c.total.0,
        fp.truth_uj(&pkg) - start,
        c.corrections.glitches + c.corrections.wraps + c.corrections.resets,
    )
}

#[test]
fn a_300_joule_backward_glitch_invents_nothing_and_is_counted() {
    // The counter stays 300 J low from then on: one interval's energy is unknown.
    let (got, truth, corrections) =
        run_with_glitch(300, 120, 100.0, |fp, z| fp.step_back_uj(z, 300_000_000));
    let error = (got as f64 - truth as f64).abs() / truth as f64;
    eprintln!(
        "300 J glitch: reported {got} µJ, truth {truth} µJ, error {:.3} %",
        error * 100.0
    );
    assert!(
        error < 0.005,
        "reported {got} µJ for a truth of {truth} µJ: {:.3} %",
        error * 100.0
    );
    assert!(got as u128 <= truth, "no energy invented");
    assert_eq!(corrections, 1, "one glitch, no wrap");

    // A shorter run: still one glitch, still nothing invented.
    let (got, truth, corrections) =
        run_with_glitch(60, 30, 100.0, |fp, z| fp.step_back_uj(z, 300_000_000));
    assert_eq!(corrections, 1);
    assert!(got as u128 <= truth);
}

#[test]
fn a_transient_glitch_loses_nothing() {
    let mut fp = FakePowercap::new();
    let pkg = fp.add_zone(
        "intel-rapl:0",
        "package-0",
        INTEL_MAX_ENERGY_RANGE_UJ,
        1_000_000_000,
    );
    let mut sampler = Sampler::new(vec![Box::new(Rapl::open(fp.root()).source.unwrap())]);
    sampler.cycle(at(0));
    let start = fp.truth_uj(&pkg);
    for step in 1..=20 {
        fp.advance(&pkg, 80.0, Duration::from_secs(1));
        if step == 10 {
            // A read 300 J low, then right again.
            let good = fp.energy_uj(&pkg);
            fp.set_energy_uj(&pkg, good - 300_000_000);
            sampler.cycle(at(step));
            fp.set_energy_uj(&pkg, good);
            continue;
        }
        sampler.cycle(at(step));
    }
    let c = &sampler.host().channels[0];
    assert_eq!(u128::from(c.total.0), fp.truth_uj(&pkg) - start, "exact");
    assert_eq!(c.corrections.glitches, 1);
    assert_eq!(c.corrections.wraps, 0);
}

#[test]
fn the_ceiling_comes_from_the_constraint_files_where_present() {
    let mut fp = FakePowercap::new();
    let pkg = fp.add_zone("intel-rapl:0", "package-0", INTEL_MAX_ENERGY_RANGE_UJ, 0);
    let dir = fp.zone_dir(&pkg).to_path_buf();
    assert_eq!(zone_ceiling_watts(&dir), DEFAULT_ZONE_CEILING_WATTS);
    fp.set_constraint(&pkg, "constraint_0_power_limit_uw", 125_000_000);
    fp.set_constraint(&pkg, "constraint_1_power_limit_uw", 150_000_000);
    fp.set_constraint(&pkg, "constraint_0_max_power_uw", 0);
    assert_eq!(zone_ceiling_watts(&dir), 300);
    // At 300 W, 1 s (+ slack) allows 375 J: a 500 J jump is a glitch, 350 J is not.
    let mut rapl = Rapl::open(fp.root()).source.unwrap();
    let mut out = Vec::new();
    rapl.poll(at(0), &mut out).unwrap();
    for (jump, correction) in [(350_000_000, None), (500_000_000, Some(Correction::Glitch))] {
        fp.advance_uj(&pkg, jump);
        out.clear();
        rapl.poll(at(if correction.is_none() { 1 } else { 2 }), &mut out)
            .unwrap();
        assert_eq!(out[0].correction, correction, "{jump} µJ");
    }
}
