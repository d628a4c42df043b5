//! The estimate on fake hosts: AMD-style powercap trees (package zones only, no DRAM
//! zone) and procfs files with the memory sizes of real servers. The DRAM estimate must
//! fall inside the figures published for the same memory (agent/data/estimate.toml):
//!   256 GB: Boavizta API 2.5.0 27–38 W, CodeCarbon 3.3.2 38 W;
//!   2 TiB:  Boavizta API 2.5.0 146–209 W, CodeCarbon 3.3.2 70 W.
//! Before issue 11 the agent gave 105 W and 862 W.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::path::Path;
use std::time::Duration;

use empreinte_agent::clock::SampleTime;
use empreinte_agent::config::{AgentConfig, NvmlLibrary};
use empreinte_agent::procfs::CpuInfo;
use empreinte_agent::sources::estimate::{CpuPowerModel, CpuTable, EstimateData, dram};
use empreinte_agent::sources::open_all;
use empreinte_shared::{Component, SourceKind};
use empreinte_testkit::powercap::FakePowercap;

/// A procfs root for two EPYC 9454 (192 threads) with `mem_kib` of MemTotal.
fn write_proc(dir: &Path, mem_kib: u64) {
    let mut cpuinfo = String::new();
    for i in 0..192 {
        cpuinfo.push_str(&format!(
            "processor\t: {i}\nmodel name\t: AMD EPYC 9454 48-Core Processor\nphysical id\t: {}\n\n",
            i / 96
        ));
    }
    fs::write(dir.join("cpuinfo"), cpuinfo).unwrap();
    fs::write(
        dir.join("meminfo"),
        format!("MemTotal:       {mem_kib} kB\nMemFree:        1000 kB\n"),
    )
    .unwrap();
    fs::write(dir.join("stat"), "cpu  10 0 10 100 0 0 0 0 0 0\n").unwrap();
}

/// Opens every source as the agent does on this fake host; returns the estimated DRAM
/// power in watts over 10 s, and the diagnoses' text.
fn estimated_dram_watts(mem_kib: u64, edac: Option<&[u64]>) -> (f64, String) {
    let powercap = FakePowercap::amd();
    let proc = tempfile::tempdir().unwrap();
    write_proc(proc.path(), mem_kib);
    let edac_root = proc.path().join("edac-mc");
    if let Some(modules_mib) = edac {
        for (i, mib) in modules_mib.iter().enumerate() {
            let d = edac_root.join(format!("mc{}/dimm{}", i % 2, i / 2));
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("size"), format!("{mib}\n")).unwrap();
        }
    }
    let mut config = AgentConfig::default();
    config.rapl.root = powercap.root().to_path_buf();
    config.nvml.library = NvmlLibrary::Off;
    config.procfs_root = proc.path().to_path_buf();
    config.estimate.edac_root = edac_root;
    let opened = open_all(&config);
    let text: Vec<String> = opened.diagnoses.iter().map(|d| d.to_string()).collect();
    let mut estimate = opened
        .sources
        .into_iter()
        .find(|s| s.kind() == SourceKind::Estimate)
        .expect("the estimate covers the DRAM that RAPL does not measure");
    // RAPL measures the CPU: only DRAM is estimated.
    let components: Vec<_> = estimate.channels().iter().map(|c| c.component).collect();
    assert_eq!(components, vec![Some(Component::Dram)]);
    let mut out = Vec::new();
    estimate
        .poll(SampleTime::from_monotonic(Duration::ZERO), &mut out)
        .unwrap();
    out.clear();
    estimate
        .poll(
            SampleTime::from_monotonic(Duration::from_secs(10)),
            &mut out,
        )
        .unwrap();
    let joules = out[0].energy.0 as f64 / 1e6;
    (joules / 10.0, text.join("\n"))
}

#[test]
fn a_256_gb_amd_host_gets_dram_power_in_the_published_range() {
    // 256 GiB installed; MemTotal a little less, as the kernel keeps some.
    let (watts, diag) = estimated_dram_watts(263_000_000, None);
    assert!((27.0..=38.0).contains(&watts), "{watts} W\n{diag}");
    assert!(diag.contains("8 × 32 GiB modules assumed"), "{diag}");
    assert!(diag.contains("not measured"), "{diag}");
}

#[test]
fn a_2_tib_amd_host_never_gets_hundreds_of_watts_of_dram() {
    let (watts, diag) = estimated_dram_watts(2_147_483_648, None);
    assert!((70.0..=209.0).contains(&watts), "{watts} W\n{diag}");
    assert!(diag.contains("16 × 128 GiB modules assumed"), "{diag}");
}

#[test]
fn the_edac_module_layout_is_used_when_readable() {
    // The same 2 TiB as 32 × 64 GiB modules: more modules, a little more power, still
    // inside the published range.
    let layout = [65_536u64; 32];
    let (watts, diag) = estimated_dram_watts(2_147_483_648, Some(&layout));
    assert!((146.0..=209.0).contains(&watts), "{watts} W\n{diag}");
    assert!(diag.contains("32 modules read from EDAC"), "{diag}");
    let (inferred, _) = estimated_dram_watts(2_147_483_648, None);
    assert!(watts > inferred, "{watts} vs {inferred}");
}

#[derive(serde::Deserialize)]
struct Validation {
    server: Vec<Server>,
}

#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct Server {
    result_id: Option<String>,
    url: Option<String>,
    ccf_row: u32,
    vendor: String,
    system: String,
    published: String,
    cpu: String,
    chips: u32,
    threads: u32,
    memory_gb: u64,
    levels_source: Option<String>,
    note: Option<String>,
    loads: Vec<f64>,
    measured_watts: Vec<f64>,
    error_pct: Vec<f64>,
}

impl Server {
    fn label(&self) -> String {
        self.result_id
            .clone()
            .unwrap_or_else(|| format!("CCF row {}", self.ccf_row))
    }
}

/// The estimate (CPU + DRAM, built-in data, MemTotal = the installed memory) of each
/// published server at each published load level, against its measured watts.
#[test]
fn the_estimate_against_published_servers_has_not_moved() {
    let v: Validation = toml::from_str(include_str!("../data/validation.toml")).unwrap();
    let data = EstimateData::builtin().unwrap();
    let table = CpuTable::builtin().unwrap();
    // At least five results with their spec.org id, each at several load levels.
    let with_ids = v
        .server
        .iter()
        .filter(|s| s.result_id.is_some() && s.url.is_some() && s.loads.len() >= 5)
        .count();
    assert!(
        with_ids >= 5,
        "{with_ids} results with an id and five load levels or more"
    );
    let mut report = Vec::new();
    let mut recorded = Vec::new();
    let mut moved = Vec::new();
    for s in &v.server {
        assert_eq!(s.loads.len(), s.measured_watts.len(), "{}", s.label());
        assert_eq!(s.loads.len(), s.error_pct.len(), "{}", s.label());
        let info = CpuInfo {
            model: Some(s.cpu.clone()),
            logical_cpus: s.threads,
            sockets: s.chips,
            arm_part: None,
        };
        let cpu = CpuPowerModel::derive(&info, &table, &data, None, data.cpu_curve.tdp_ratio[0]);
        assert_eq!(
            cpu.basis,
            empreinte_agent::sources::estimate::CpuBasis::Table,
            "{} must be in the table",
            s.cpu
        );
        let layout = dram::infer_layout(s.memory_gb << 30, &data.dram);
        let dram = dram::power_watts(&layout, &data.dram, data.dram.watts_per_gb);
        let mut errors = Vec::new();
        for ((load, measured), recorded) in s.loads.iter().zip(&s.measured_watts).zip(&s.error_pct)
        {
            let estimate = cpu.power_at(*load) + dram;
            let error = (estimate - measured) / measured * 100.0;
            errors.push(format!("{error:.1}"));
            report.push(format!(
                "| {} | {} {} ({}) | {} × {}, {} GB | {:.0} % | {measured:.0} | {estimate:.0} | {error:+.0} |",
                s.label(),
                s.vendor,
                s.system,
                s.published,
                s.chips,
                s.cpu,
                s.memory_gb,
                load * 100.0
            ));
            if (error - recorded).abs() > 5.0 {
                moved.push(format!(
                    "{} at {:.0} %: {error:+.1} points, recorded {recorded:+.1}",
                    s.label(),
                    load * 100.0
                ));
            }
        }
        recorded.push(format!(
            "{}: error_pct = [{}]",
            s.label(),
            errors.join(", ")
        ));
    }
    println!("{}\n\n{}", report.join("\n"), recorded.join("\n"));
    assert!(
        moved.is_empty(),
        "errors moved by more than 5 points:\n{}",
        moved.join("\n")
    );
}

/// `[cpu_curve]` is the fit it says it is: at every load point above idle, the ratio that
/// minimises the squared relative error of CPU + DRAM against the six SPECpower results
/// with eleven levels (a one-variable least-squares problem per load level). Also prints
/// the left-one-out errors (each result estimated with the curve fitted on the other five),
/// the out-of-sample figure docs/validation.md gives.
#[test]
fn the_cpu_curve_is_the_least_squares_fit_to_the_published_levels() {
    let v: Validation = toml::from_str(include_str!("../data/validation.toml")).unwrap();
    let data = EstimateData::builtin().unwrap();
    let table = CpuTable::builtin().unwrap();
    // (TDP seen, DRAM watts, loads, measured) of each eleven-level result.
    let servers: Vec<(f64, f64, &[f64], &[f64])> = v
        .server
        .iter()
        .filter(|s| s.result_id.is_some() && s.loads.len() == 11)
        .map(|s| {
            let info = CpuInfo {
                model: Some(s.cpu.clone()),
                logical_cpus: s.threads,
                sockets: s.chips,
                arm_part: None,
            };
            let cpu =
                CpuPowerModel::derive(&info, &table, &data, None, data.cpu_curve.tdp_ratio[0]);
            let layout = dram::infer_layout(s.memory_gb << 30, &data.dram);
            let dram = dram::power_watts(&layout, &data.dram, data.dram.watts_per_gb);
            (
                cpu.tdp_seen_watts,
                dram,
                &s.loads[..],
                &s.measured_watts[..],
            )
        })
        .collect();
    assert_eq!(servers.len(), 6);
    let curve = &data.cpu_curve;
    let fit = |level: usize, skip: Option<usize>| -> f64 {
        let (mut num, mut den) = (0.0, 0.0);
        for (i, (tdp, dram, loads, measured)) in servers.iter().enumerate() {
            if Some(i) == skip {
                continue;
            }
            assert!((loads[level] - curve.load[level]).abs() < 1e-9);
            let (a, b) = (
                tdp / measured[level],
                (measured[level] - dram) / measured[level],
            );
            num += a * b;
            den += a * a;
        }
        num / den
    };
    assert_eq!(curve.load.len(), 11);
    let mut off = Vec::new();
    for level in 1..11 {
        let fitted = fit(level, None);
        println!("fit at {:.0} %: {fitted:.5}", curve.load[level] * 100.0);
        if (fitted - curve.tdp_ratio[level]).abs() > 0.0005 + 1e-9 {
            off.push(format!(
                "at {:.0} %: the fit gives {fitted:.4}, the data file {}",
                curve.load[level] * 100.0,
                curve.tdp_ratio[level]
            ));
        }
    }
    assert!(off.is_empty(), "{}", off.join("\n"));
    // Left-one-out: each result estimated with the other five's fit (idle kept).
    let mut errors = Vec::new();
    for (k, (tdp, dram, _, measured)) in servers.iter().enumerate() {
        for level in 0..11 {
            let ratio = if level == 0 {
                curve.tdp_ratio[0]
            } else {
                fit(level, Some(k))
            };
            errors.push((tdp * ratio + dram - measured[level]) / measured[level] * 100.0);
        }
    }
    let mae = errors.iter().map(|e| e.abs()).sum::<f64>() / errors.len() as f64;
    let rms = (errors.iter().map(|e| e * e).sum::<f64>() / errors.len() as f64).sqrt();
    println!(
        "left-one-out over {} points: mean absolute error {mae:.1} %, RMS {rms:.1} %",
        errors.len()
    );
    // The documented CPU uncertainty covers the out-of-sample spread.
    assert!(
        rms <= curve.uncertainty_pct,
        "RMS {rms:.1} % above {} %",
        curve.uncertainty_pct
    );
}
