//! A model-based estimate for components that nothing measures (virtual machines,
//! clouds, root-less runs, AMD hosts' memory). Every figure it produces is labelled
//! `source="estimate"`; its data, each number with its source and year, is in
//! `agent/data/estimate.toml` and `agent/data/cpu_models.toml`.
//!
//! - CPU ([`model::CpuPowerModel`]): TDP × a piecewise-linear curve of utilisation through
//!   eleven load points fitted to published SPECpower results (0.12, 0.295, 0.531, 1.004
//!   × TDP at 0, 10, 50, 100 %; `[cpu_curve]`), utilisation from `/proc/stat` between two
//!   samples. The TDP is the table's for
//!   the model (the threads' share in a virtual machine), else the family's, else the
//!   table's median per thread, never above a per-socket ceiling.
//! - DRAM ([`dram`]): watts per installed module plus watts per GB, on the EDAC module
//!   layout where readable, else on one inferred from `MemTotal`.

use std::fs;
use std::path::{Path, PathBuf};

use empreinte_shared::{Component, MicroJoules, SourceKind, Watts};

use super::{Channel, ChannelEnergy, Diagnosis, EnergySource, Opened, PollError};
use crate::clock::SampleTime;
use crate::config::EstimateConfig;
pub use crate::procfs::{CpuInfo, CpuTimes, parse_mem_total_bytes};

pub mod dram;
pub mod model;

pub use model::{CpuBasis, CpuPowerModel, CpuTable, EstimateData};

/// The configuration's defaults, equal to the data file's figures (a test checks).
pub use crate::config::estimate::{DEFAULT_CPU_IDLE_FRACTION, DEFAULT_DRAM_WATTS_PER_GB};

/// Which components to estimate: those that no measuring source covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EstimateScope {
    pub cpu: bool,
    pub dram: bool,
}

struct CpuPart {
    channel: usize,
    stat_path: PathBuf,
    model: CpuPowerModel,
    last: Option<CpuTimes>,
    /// Utilisation of the last interval that had CPU ticks, reused when none elapsed.
    last_util: f64,
}

struct DramPart {
    channel: usize,
    power: Watts,
}

/// The estimate source.
pub struct Estimate {
    channels: Vec<Channel>,
    cpu: Option<CpuPart>,
    dram: Option<DramPart>,
    last_at: Option<SampleTime>,
}

/// The DRAM power this host gets: the layout (EDAC, else inferred) and the watts.
pub fn dram_power(
    cfg: &EstimateConfig,
    data: &EstimateData,
    mem_total_bytes: u64,
) -> (dram::DimmLayout, Watts) {
    let layout = dram::read_edac(&cfg.edac_root)
        .unwrap_or_else(|| dram::infer_layout(mem_total_bytes, &data.dram));
    let watts = dram::power_watts(&layout, &data.dram, cfg.dram_watts_per_gb);
    (layout, Watts(watts))
}

impl Estimate {
    pub fn open(
        cfg: &EstimateConfig,
        procfs_root: &Path,
        scope: EstimateScope,
    ) -> Opened<Estimate> {
        let data = match EstimateData::builtin() {
            Ok(d) => d,
            Err(problem) => {
                return Opened {
                    source: None,
                    diagnoses: vec![Diagnosis::unusable(
                        SourceKind::Estimate,
                        "estimate",
                        problem,
                        None,
                    )],
                };
            }
        };
        let mut diagnoses = Vec::new();
        let mut channels = Vec::new();
        let channel = |component| Channel {
            component: Some(component),
            source: SourceKind::Estimate,
            device: "host".to_string(),
            zone: None,
            gpu: None,
        };
        let mut cpu = None;
        if scope.cpu {
            let (diagnosis, part) = cpu_part(procfs_root, cfg, &data, channels.len());
            diagnoses.push(diagnosis);
            if let Some(part) = part {
                channels.push(channel(Component::Cpu));
                cpu = Some(part);
            }
        }
        let mut dram = None;
        if scope.dram {
            let (diagnosis, part) = dram_part(procfs_root, cfg, &data, channels.len());
            diagnoses.push(diagnosis);
            if let Some(part) = part {
                channels.push(channel(Component::Dram));
                dram = Some(part);
            }
        }
        let source = (!channels.is_empty()).then_some(Estimate {
            channels,
            cpu,
            dram,
            last_at: None,
        });
        Opened { source, diagnoses }
    }
}

/// The CPU model for this host, on channel `channel`, and what `check` says of it.
fn cpu_part(
    proc: &Path,
    cfg: &EstimateConfig,
    data: &EstimateData,
    channel: usize,
) -> (Diagnosis, Option<CpuPart>) {
    match open_cpu(proc, cfg, data) {
        Ok((stat_path, model, first)) => {
            let diagnosis = Diagnosis {
                problem: Some(format!(
                    "estimated from utilisation, not measured (± {} %)",
                    data.cpu_curve.uncertainty_pct
                )),
                ..Diagnosis::usable(
                    SourceKind::Estimate,
                    "CPU power model",
                    format!(
                        "cpu power {:.1} W idle, {:.1} W at 10 %, {:.1} W at 50 %, {:.1} W at full load; {}",
                        model.power_at(0.0),
                        model.power_at(0.1),
                        model.power_at(0.5),
                        model.power_at(1.0),
                        model.explanation
                    ),
                )
            };
            let part = CpuPart {
                channel,
                stat_path,
                model,
                last: Some(first),
                last_util: 0.0,
            };
            (diagnosis, Some(part))
        }
        Err(problem) => {
            let diagnosis = Diagnosis::unusable(
                SourceKind::Estimate,
                "CPU power model",
                problem,
                Some(format!(
                    "give the agent read access to {}/stat and {}/cpuinfo, or set --procfs-root",
                    proc.display(),
                    proc.display()
                )),
            );
            (diagnosis, None)
        }
    }
}

/// The DRAM model for this host, on channel `channel`, and what `check` says of it.
fn dram_part(
    proc: &Path,
    cfg: &EstimateConfig,
    data: &EstimateData,
    channel: usize,
) -> (Diagnosis, Option<DramPart>) {
    let path = proc.join("meminfo");
    let bytes = match fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
        .and_then(|t| parse_mem_total_bytes(&t).map_err(|e| format!("{}: {e}", path.display())))
    {
        Ok(bytes) => bytes,
        Err(problem) => {
            let diagnosis =
                Diagnosis::unusable(SourceKind::Estimate, "DRAM power model", problem, None);
            return (diagnosis, None);
        }
    };
    let (layout, power) = dram_power(cfg, data, bytes);
    let size = layout.modules.first().copied().unwrap_or(0) >> 30;
    let from = if layout.from_edac {
        format!(
            "{} modules read from EDAC ({})",
            layout.modules.len(),
            cfg.edac_root.display()
        )
    } else {
        format!(
            "{} × {size} GiB modules assumed from MemTotal {:.1} GiB (EDAC lists none at {})",
            layout.modules.len(),
            bytes as f64 / f64::from(1u32 << 30),
            cfg.edac_root.display()
        )
    };
    let diagnosis = Diagnosis {
        problem: Some(format!(
            "estimated from installed memory, not measured (± {} %)",
            data.dram.uncertainty_pct
        )),
        ..Diagnosis::usable(
            SourceKind::Estimate,
            "DRAM power model",
            format!(
                "dram power {:.1} W constant: {from}, {} W per module + {} W per GB ({}, {})",
                power.0,
                data.dram.watts_per_module,
                cfg.dram_watts_per_gb,
                data.dram.source,
                data.dram.year
            ),
        )
    };
    (diagnosis, Some(DramPart { channel, power }))
}

fn open_cpu(
    proc: &Path,
    cfg: &EstimateConfig,
    data: &EstimateData,
) -> Result<(PathBuf, CpuPowerModel, CpuTimes), String> {
    let table = CpuTable::builtin()?;
    let cpuinfo_path = proc.join("cpuinfo");
    let info = fs::read_to_string(&cpuinfo_path)
        .map(|t| CpuInfo::parse(&t))
        .map_err(|e| format!("cannot read {}: {e}", cpuinfo_path.display()))?;
    let stat_path = proc.join("stat");
    let times = read_times(&stat_path)?;
    let model = CpuPowerModel::derive(
        &info,
        &table,
        data,
        cfg.cpu_tdp_watts,
        cfg.cpu_idle_fraction,
    );
    Ok((stat_path, model, times))
}

fn read_times(path: &Path) -> Result<CpuTimes, String> {
    let text =
        fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    CpuTimes::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

impl EnergySource for Estimate {
    fn kind(&self) -> SourceKind {
        SourceKind::Estimate
    }

    fn channels(&self) -> &[Channel] {
        &self.channels
    }

    fn poll(&mut self, at: SampleTime, out: &mut Vec<ChannelEnergy>) -> Result<(), PollError> {
        let Some(prev_at) = self.last_at.replace(at) else {
            // First poll: a baseline. The CPU times read at open are the baseline for
            // utilisation; refresh them so the first interval starts now.
            if let Some(cpu) = &mut self.cpu {
                if let Ok(t) = read_times(&cpu.stat_path) {
                    cpu.last = Some(t);
                }
            }
            out.extend(
                self.channels
                    .iter()
                    .enumerate()
                    .map(|(channel, _)| ChannelEnergy {
                        channel,
                        energy: MicroJoules::ZERO,
                        correction: None,
                    }),
            );
            return Ok(());
        };
        let dt = at.since(prev_at);
        let mut failure = None;
        if let Some(cpu) = &mut self.cpu {
            match read_times(&cpu.stat_path) {
                Ok(now) => {
                    // No tick elapsed (or no previous reading): keep the last utilisation.
                    let util = cpu
                        .last
                        .and_then(|before| now.utilisation_since(&before))
                        .unwrap_or(cpu.last_util);
                    cpu.last_util = util;
                    cpu.last = Some(now);
                    out.push(ChannelEnergy {
                        channel: cpu.channel,
                        energy: MicroJoules::from_power(Watts(cpu.model.power_at(util)), dt),
                        correction: None,
                    });
                }
                Err(e) => {
                    // Energy is a rate model: the interval still gets the idle power.
                    out.push(ChannelEnergy {
                        channel: cpu.channel,
                        energy: MicroJoules::from_power(Watts(cpu.model.power_at(0.0)), dt),
                        correction: None,
                    });
                    cpu.last = None;
                    failure = Some(e);
                }
            }
        }
        if let Some(dram) = &self.dram {
            out.push(ChannelEnergy {
                channel: dram.channel,
                energy: MicroJoules::from_power(dram.power, dt),
                correction: None,
            });
        }
        match failure {
            Some(e) => Err(PollError::Retry(e)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The default configuration, with EDAC pointed at a missing directory (never the
    /// test machine's own).
    fn cfg(dir: &Path) -> EstimateConfig {
        EstimateConfig {
            edac_root: dir.join("no-edac"),
            ..EstimateConfig::default()
        }
    }

    #[test]
    fn the_config_defaults_are_the_data_files_figures() {
        let d = EstimateData::builtin().unwrap();
        assert_eq!(DEFAULT_CPU_IDLE_FRACTION, d.cpu_curve.tdp_ratio[0]);
        assert_eq!(DEFAULT_DRAM_WATTS_PER_GB, d.dram.watts_per_gb);
    }

    fn write_proc(dir: &Path, model: &str, threads: u32, stat: (u64, u64)) {
        let mut cpuinfo = String::new();
        for i in 0..threads {
            cpuinfo.push_str(&format!(
                "processor\t: {i}\nmodel name\t: {model}\nphysical id\t: 0\n\n"
            ));
        }
        fs::write(dir.join("cpuinfo"), cpuinfo).unwrap();
        fs::write(
            dir.join("meminfo"),
            "MemTotal:       16000000 kB\nMemFree: 1 kB\n",
        )
        .unwrap();
        write_stat(dir, stat);
    }

    /// /proc/stat with `busy` ticks of user time and `idle` ticks of idle time.
    fn write_stat(dir: &Path, (busy, idle): (u64, u64)) {
        fs::write(
            dir.join("stat"),
            format!("cpu  {busy} 0 0 {idle} 0 0 0 7 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n"),
        )
        .unwrap();
    }

    #[test]
    fn estimated_energy_follows_utilisation_and_is_labelled() {
        let dir = tempfile::tempdir().unwrap();
        write_proc(dir.path(), "AMD EPYC 7742 64-Core Processor", 4, (0, 0));
        let opened = Estimate::open(
            &cfg(dir.path()),
            dir.path(),
            EstimateScope {
                cpu: true,
                dram: true,
            },
        );
        let mut est = opened.source.unwrap();
        assert!(
            est.channels()
                .iter()
                .all(|c| c.source == SourceKind::Estimate)
        );
        assert_eq!(est.channels().len(), 2);
        assert!(
            opened
                .diagnoses
                .iter()
                .all(|d| d.usable && d.problem.as_deref().unwrap().contains("not measured"))
        );

        let t0 = SampleTime::from_monotonic(Duration::ZERO);
        let mut out = Vec::new();
        est.poll(t0, &mut out).unwrap();
        assert!(out.iter().all(|e| e.energy == MicroJoules::ZERO));

        // 2 s at 50 % utilisation: 4 of the 128 threads of a 225 W EPYC 7742 give
        // 7.03125 W of TDP; at 50 % the curve gives 0.531 × that, 3.73359375 W.
        write_stat(dir.path(), (100, 100));
        out.clear();
        est.poll(SampleTime::from_monotonic(Duration::from_secs(2)), &mut out)
            .unwrap();
        let cpu = out
            .iter()
            .find(|e| est.channels()[e.channel].component == Some(Component::Cpu))
            .unwrap();
        assert_eq!(cpu.energy, MicroJoules(7_467_188));
        // DRAM: MemTotal 15.3 GiB, assumed 4 × 4 GiB modules: 4 × 2 W + 17.18 GB × 0.065.
        let dram = out
            .iter()
            .find(|e| est.channels()[e.channel].component == Some(Component::Dram))
            .unwrap();
        assert_eq!(
            dram.energy,
            MicroJoules::from_power(
                Watts(4.0 * 2.0 + 16.0 * 1.073_741_824 * 0.065),
                Duration::from_secs(2)
            )
        );
    }

    #[test]
    fn only_the_requested_components_are_estimated() {
        let dir = tempfile::tempdir().unwrap();
        write_proc(dir.path(), "AMD EPYC 7742 64-Core Processor", 4, (0, 0));
        let est = Estimate::open(
            &cfg(dir.path()),
            dir.path(),
            EstimateScope {
                cpu: false,
                dram: true,
            },
        )
        .source
        .unwrap();
        assert_eq!(est.channels().len(), 1);
        assert_eq!(est.channels()[0].component, Some(Component::Dram));
        assert!(
            Estimate::open(
                &cfg(dir.path()),
                dir.path(),
                EstimateScope {
                    cpu: false,
                    dram: false
                }
            )
            .source
            .is_none()
        );
    }

    #[test]
    fn a_missing_procfs_is_diagnosed() {
        let opened = Estimate::open(
            &EstimateConfig::default(),
            Path::new("/nonexistent/proc"),
            EstimateScope {
                cpu: true,
                dram: true,
            },
        );
        assert!(opened.source.is_none());
        assert_eq!(opened.diagnoses.len(), 2);
        assert!(
            opened
                .diagnoses
                .iter()
                .all(|d| !d.usable && d.problem.as_deref().unwrap().contains("/nonexistent/proc"))
        );
    }

    #[test]
    fn a_malformed_stat_mid_run_gives_retry_and_idle_power() {
        let dir = tempfile::tempdir().unwrap();
        write_proc(dir.path(), "AMD EPYC 7742 64-Core Processor", 4, (0, 0));
        let mut est = Estimate::open(
            &cfg(dir.path()),
            dir.path(),
            EstimateScope {
                cpu: true,
                dram: false,
            },
        )
        .source
        .unwrap();
        let mut out = Vec::new();
        est.poll(SampleTime::from_monotonic(Duration::ZERO), &mut out)
            .unwrap();
        fs::write(dir.path().join("stat"), "garbage").unwrap();
        out.clear();
        let err = est
            .poll(SampleTime::from_monotonic(Duration::from_secs(1)), &mut out)
            .unwrap_err();
        assert!(matches!(err, PollError::Retry(_)), "{err}");
        assert_eq!(
            out[0].energy,
            MicroJoules::from_power(Watts(225.0 / 128.0 * 4.0 * 0.12), Duration::from_secs(1))
        );
    }
}
