//! A model-based estimate for components that nothing measures (virtual machines,
//! clouds, root-less runs). Every figure it produces is labelled `source="estimate"`.
//!
//! - CPU: `P = P_idle + (P_max - P_idle) × utilisation`, utilisation from `/proc/stat`
//!   between two samples. `P_max` is the CPU's TDP shared per hardware thread times the
//!   threads this host sees ([`CpuTable`], or `estimate.cpu_tdp_watts`), or
//!   [`DEFAULT_CPU_MAX_WATTS_PER_THREAD`] for an unknown CPU; `P_idle = P_max ×
//!   estimate.cpu_idle_fraction`.
//! - DRAM: a constant `dram_watts_per_gb × installed GB` (`MemTotal` of `/proc/meminfo`).

use std::fs;
use std::path::{Path, PathBuf};

use empreinte_shared::{Component, MicroJoules, SourceKind, Watts};
use serde::Deserialize;

use super::{Channel, ChannelEnergy, Diagnosis, EnergySource, Opened, PollError};
use crate::clock::SampleTime;
use crate::config::EstimateConfig;

/// Maximum CPU power per hardware thread when the CPU model is unknown: Cloud Carbon
/// Footprint's average for AWS, 3.5 W per vCPU (CCF methodology, 2021, from SPECpower
/// results).
pub const DEFAULT_CPU_MAX_WATTS_PER_THREAD: f64 = 3.5;

/// CPU power at zero utilisation as a fraction of its maximum: 0.74 W / 3.5 W per vCPU,
/// Cloud Carbon Footprint's AWS averages (CCF methodology, 2021, from SPECpower results).
pub use crate::config::estimate::DEFAULT_CPU_IDLE_FRACTION;

/// DRAM power per GB of installed memory: 0.392 W/GB, Cloud Carbon Footprint's memory
/// coefficient (CCF methodology, 2021).
pub use crate::config::estimate::DEFAULT_DRAM_WATTS_PER_GB;

/// Which components to estimate: those that no measuring source covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EstimateScope {
    pub cpu: bool,
    pub dram: bool,
}

/// One CPU model of the built-in table (agent/data/cpu_tdp.toml).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpuModel {
    pub model: String,
    pub vendor: String,
    pub tdp_watts: f64,
    pub threads: u32,
    pub year: u16,
}

/// The built-in table of CPU models with their TDP.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpuTable {
    cpu: Vec<CpuModel>,
}

impl CpuTable {
    pub fn builtin() -> Result<CpuTable, String> {
        toml::from_str(include_str!("../../data/cpu_tdp.toml"))
            .map_err(|e| format!("built-in CPU table agent/data/cpu_tdp.toml is malformed: {e}"))
    }

    pub fn models(&self) -> &[CpuModel] {
        &self.cpu
    }

    /// The entry whose `model` appears in `name` as a whole word; the longest wins.
    pub fn lookup(&self, name: &str) -> Option<&CpuModel> {
        self.cpu
            .iter()
            .filter(|m| contains_word(name, &m.model))
            .max_by_key(|m| m.model.len())
    }
}

fn contains_word(haystack: &str, needle: &str) -> bool {
    let hay = haystack.to_ascii_lowercase();
    let needle = needle.to_ascii_lowercase();
    let mut from = 0;
    while let Some(pos) = hay[from..].find(&needle) {
        let start = from + pos;
        let end = start + needle.len();
        let before_ok = hay[..start]
            .chars()
            .next_back()
            .is_none_or(|c| !c.is_ascii_alphanumeric());
        let after_ok = hay[end..]
            .chars()
            .next()
            .is_none_or(|c| !c.is_ascii_alphanumeric() && c != '+');
        if before_ok && after_ok {
            return true;
        }
        from = start + 1;
    }
    false
}

/// What `/proc/cpuinfo` says of the CPUs this host sees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuInfo {
    pub model: Option<String>,
    pub logical_cpus: u32,
    /// Distinct `physical id`s; 1 where none is given (virtual machines, Arm).
    pub sockets: u32,
}

impl CpuInfo {
    pub fn parse(text: &str) -> CpuInfo {
        let mut model = None;
        let mut logical = 0u32;
        let mut sockets = std::collections::BTreeSet::new();
        for line in text.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            match key.trim() {
                "processor" => logical += 1,
                "model name" if model.is_none() => model = Some(value.trim().to_string()),
                "physical id" => {
                    sockets.insert(value.trim().to_string());
                }
                _ => {}
            }
        }
        CpuInfo {
            model,
            logical_cpus: logical.max(1),
            sockets: (sockets.len() as u32).max(1),
        }
    }
}

/// Aggregate CPU time counters of `/proc/stat`'s first line, in clock ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuTimes {
    /// user + nice + system + irq + softirq (guest time is already inside user).
    pub busy: u64,
    /// busy + idle + iowait. Steal is left out: it is the hypervisor's use, not ours.
    pub total: u64,
}

impl CpuTimes {
    pub fn parse(stat: &str) -> Result<CpuTimes, String> {
        let line = stat
            .lines()
            .find(|l| l.starts_with("cpu "))
            .ok_or_else(|| "no aggregate \"cpu \" line".to_string())?;
        let fields: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(|f| {
                f.parse::<u64>()
                    .map_err(|_| format!("field {f:?} is not a number in {line:?}"))
            })
            .collect::<Result<_, _>>()?;
        if fields.len() < 7 {
            return Err(format!("expected at least 7 counters in {line:?}"));
        }
        let (user, nice, system, idle, iowait, irq, softirq) = (
            fields[0], fields[1], fields[2], fields[3], fields[4], fields[5], fields[6],
        );
        let busy = user + nice + system + irq + softirq;
        Ok(CpuTimes {
            busy,
            total: busy + idle + iowait,
        })
    }

    /// Utilisation between `earlier` and `self`, from 0 to 1; `None` when no time passed.
    pub fn utilisation_since(&self, earlier: &CpuTimes) -> Option<f64> {
        let total = self.total.checked_sub(earlier.total)?;
        let busy = self.busy.saturating_sub(earlier.busy);
        (total > 0).then(|| (busy as f64 / total as f64).clamp(0.0, 1.0))
    }
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
pub fn parse_mem_total_bytes(meminfo: &str) -> Result<u64, String> {
    let line = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .ok_or_else(|| "no MemTotal line".to_string())?;
    let mut parts = line["MemTotal:".len()..].split_whitespace();
    let kib: u64 = parts
        .next()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("cannot read a number in {line:?}"))?;
    Ok(kib.saturating_mul(1024))
}

/// The CPU power model in use, with where its figures come from.
#[derive(Clone, Debug, PartialEq)]
pub struct CpuPowerModel {
    pub idle: Watts,
    pub max: Watts,
    /// Plain-language origin of `max`, for `check` and the logs.
    pub basis: String,
}

impl CpuPowerModel {
    pub fn derive(info: &CpuInfo, table: &CpuTable, cfg: &EstimateConfig) -> CpuPowerModel {
        let name = info.model.as_deref().unwrap_or("unknown CPU");
        let threads = info.logical_cpus;
        let known = table.lookup(name);
        let (max, basis) = match (cfg.cpu_tdp_watts, known) {
            (Some(tdp), Some(m)) => (
                tdp / f64::from(m.threads) * f64::from(threads),
                format!(
                    "configured TDP {tdp} W per socket of {} threads, {threads} threads seen",
                    m.threads
                ),
            ),
            (Some(tdp), None) => (
                tdp * f64::from(info.sockets),
                format!(
                    "configured TDP {tdp} W per socket × {} socket(s)",
                    info.sockets
                ),
            ),
            (None, Some(m)) => (
                m.tdp_watts / f64::from(m.threads) * f64::from(threads),
                format!(
                    "{} {} TDP {} W for {} threads (manufacturer, {}), {threads} threads seen",
                    m.vendor, m.model, m.tdp_watts, m.threads, m.year
                ),
            ),
            (None, None) => (
                DEFAULT_CPU_MAX_WATTS_PER_THREAD * f64::from(threads),
                format!(
                    "\"{name}\" is not in the CPU table: {DEFAULT_CPU_MAX_WATTS_PER_THREAD} W per thread (Cloud Carbon Footprint, 2021) × {threads} threads; set estimate.cpu_tdp_watts for a better figure"
                ),
            ),
        };
        CpuPowerModel {
            idle: Watts(max * cfg.cpu_idle_fraction),
            max: Watts(max),
            basis,
        }
    }

    pub fn power_at(&self, utilisation: f64) -> Watts {
        Watts(self.idle.0 + (self.max.0 - self.idle.0) * utilisation.clamp(0.0, 1.0))
    }
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

impl Estimate {
    pub fn open(
        cfg: &EstimateConfig,
        procfs_root: &Path,
        scope: EstimateScope,
    ) -> Opened<Estimate> {
        let mut diagnoses = Vec::new();
        let mut channels = Vec::new();
        let proc = procfs_root;
        let channel = |component| Channel {
            component: Some(component),
            source: SourceKind::Estimate,
            device: "host".to_string(),
            zone: None,
            gpu: None,
        };
        let cpu = if scope.cpu {
            match open_cpu(proc, cfg) {
                Ok((stat_path, model, first)) => {
                    diagnoses.push(Diagnosis {
                        problem: Some("estimated from utilisation, not measured".into()),
                        ..Diagnosis::usable(
                            SourceKind::Estimate,
                            "CPU power model",
                            format!(
                                "cpu power {:.1} W idle to {:.1} W at full load; {}",
                                model.idle.0, model.max.0, model.basis
                            ),
                        )
                    });
                    channels.push(channel(Component::Cpu));
                    Some(CpuPart {
                        channel: channels.len() - 1,
                        stat_path,
                        model,
                        last: Some(first),
                        last_util: 0.0,
                    })
                }
                Err(problem) => {
                    diagnoses.push(Diagnosis::unusable(
                        SourceKind::Estimate,
                        "CPU power model",
                        problem,
                        Some(format!("give the agent read access to {}/stat and {}/cpuinfo, or set --procfs-root", proc.display(), proc.display())),
                    ));
                    None
                }
            }
        } else {
            None
        };
        let dram = if scope.dram {
            let path = proc.join("meminfo");
            match fs::read_to_string(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))
                .and_then(|t| {
                    parse_mem_total_bytes(&t).map_err(|e| format!("{}: {e}", path.display()))
                }) {
                Ok(bytes) => {
                    let gb = bytes as f64 / 1e9;
                    let power = Watts(gb * cfg.dram_watts_per_gb);
                    diagnoses.push(Diagnosis {
                        problem: Some("estimated from installed memory, not measured".into()),
                        ..Diagnosis::usable(
                            SourceKind::Estimate,
                            "DRAM power model",
                            format!(
                                "dram power {:.1} W constant: {gb:.1} GB × {} W/GB",
                                power.0, cfg.dram_watts_per_gb
                            ),
                        )
                    });
                    channels.push(channel(Component::Dram));
                    Some(DramPart {
                        channel: channels.len() - 1,
                        power,
                    })
                }
                Err(problem) => {
                    diagnoses.push(Diagnosis::unusable(
                        SourceKind::Estimate,
                        "DRAM power model",
                        problem,
                        None,
                    ));
                    None
                }
            }
        } else {
            None
        };
        let source = (!channels.is_empty()).then_some(Estimate {
            channels,
            cpu,
            dram,
            last_at: None,
        });
        Opened { source, diagnoses }
    }
}

fn open_cpu(
    proc: &Path,
    cfg: &EstimateConfig,
) -> Result<(PathBuf, CpuPowerModel, CpuTimes), String> {
    let table = CpuTable::builtin()?;
    let cpuinfo_path = proc.join("cpuinfo");
    let info = fs::read_to_string(&cpuinfo_path)
        .map(|t| CpuInfo::parse(&t))
        .map_err(|e| format!("cannot read {}: {e}", cpuinfo_path.display()))?;
    let stat_path = proc.join("stat");
    let times = read_times(&stat_path)?;
    Ok((stat_path, CpuPowerModel::derive(&info, &table, cfg), times))
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
                        energy: MicroJoules::from_power(cpu.model.power_at(util), dt),
                        correction: None,
                    });
                }
                Err(e) => {
                    // Energy is a rate model: the interval still gets the idle power.
                    out.push(ChannelEnergy {
                        channel: cpu.channel,
                        energy: MicroJoules::from_power(cpu.model.idle, dt),
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
    fn the_builtin_table_parses_and_matches_whole_words() {
        let t = CpuTable::builtin().unwrap();
        assert!(t.models().len() >= 20);
        assert_eq!(
            t.lookup("Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz")
                .unwrap()
                .tdp_watts,
            150.0
        );
        assert_eq!(
            t.lookup("Intel(R) Xeon(R) Gold 6248R CPU @ 3.00GHz")
                .unwrap()
                .tdp_watts,
            205.0
        );
        assert_eq!(
            t.lookup("AMD EPYC 7742 64-Core Processor").unwrap().threads,
            128
        );
        assert!(t.lookup("AMD EPYC 77420").is_none());
        assert!(
            t.lookup("Intel(R) Xeon(R) Platinum 8480 CPU").is_none(),
            "8480 is not 8480+"
        );
        assert!(t.lookup("Intel(R) Xeon(R) Platinum 8480+").is_some());
    }

    #[test]
    fn cpu_times_and_utilisation() {
        let a = CpuTimes::parse("cpu  100 0 50 800 50 0 0 30 0 0\n").unwrap();
        assert_eq!(
            a,
            CpuTimes {
                busy: 150,
                total: 1000
            }
        );
        let b = CpuTimes::parse("cpu  200 0 100 1400 100 0 0 90 0 0\n").unwrap();
        assert_eq!(b.utilisation_since(&a), Some(150.0 / 800.0));
        assert_eq!(a.utilisation_since(&a), None);
        assert!(
            CpuTimes::parse("cpu  1 2 x\n")
                .unwrap_err()
                .contains("\"x\"")
        );
        assert!(CpuTimes::parse("intr 1\n").is_err());
    }

    #[test]
    fn a_known_cpu_in_a_vm_gets_its_threads_share_of_the_tdp() {
        let info = CpuInfo {
            model: Some("AMD EPYC 7742 64-Core Processor".into()),
            logical_cpus: 8,
            sockets: 1,
        };
        let m = CpuPowerModel::derive(
            &info,
            &CpuTable::builtin().unwrap(),
            &EstimateConfig::default(),
        );
        assert!((m.max.0 - 225.0 / 128.0 * 8.0).abs() < 1e-9, "{m:?}");
        assert!((m.idle.0 - m.max.0 * DEFAULT_CPU_IDLE_FRACTION).abs() < 1e-9);
        assert!((m.power_at(0.5).0 - (m.idle.0 + m.max.0) / 2.0).abs() < 1e-9);
    }

    #[test]
    fn an_unknown_cpu_uses_the_per_thread_default_and_says_so() {
        let info = CpuInfo {
            model: Some("Mystery CPU".into()),
            logical_cpus: 4,
            sockets: 1,
        };
        let m = CpuPowerModel::derive(
            &info,
            &CpuTable::builtin().unwrap(),
            &EstimateConfig::default(),
        );
        assert_eq!(m.max, Watts(14.0));
        assert!(m.basis.contains("not in the CPU table"), "{}", m.basis);
    }

    #[test]
    fn estimated_energy_follows_utilisation_and_is_labelled() {
        let dir = tempfile::tempdir().unwrap();
        write_proc(dir.path(), "Mystery CPU", 4, (0, 0));
        let opened = Estimate::open(
            &EstimateConfig::default(),
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

        // 2 s at 50 % utilisation: P = 0.21*14 + (14 - 0.21*14) * 0.5 = 8.47 W.
        write_stat(dir.path(), (100, 100));
        out.clear();
        est.poll(SampleTime::from_monotonic(Duration::from_secs(2)), &mut out)
            .unwrap();
        let cpu = out
            .iter()
            .find(|e| est.channels()[e.channel].component == Some(Component::Cpu))
            .unwrap();
        assert_eq!(cpu.energy, MicroJoules(16_940_000));
        // DRAM: 16e6 kB = 16.384 GB × 0.392 W/GB × 2 s.
        let dram = out
            .iter()
            .find(|e| est.channels()[e.channel].component == Some(Component::Dram))
            .unwrap();
        assert_eq!(
            dram.energy,
            MicroJoules::from_power(Watts(16.384 * 0.392), Duration::from_secs(2))
        );
    }

    #[test]
    fn only_the_requested_components_are_estimated() {
        let dir = tempfile::tempdir().unwrap();
        write_proc(dir.path(), "Mystery CPU", 4, (0, 0));
        let est = Estimate::open(
            &EstimateConfig::default(),
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
                &EstimateConfig::default(),
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
        write_proc(dir.path(), "Mystery CPU", 4, (0, 0));
        let mut est = Estimate::open(
            &EstimateConfig::default(),
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
            MicroJoules::from_power(Watts(14.0 * 0.21), Duration::from_secs(1))
        );
    }
}
