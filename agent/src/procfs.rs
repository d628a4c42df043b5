//! Host-wide procfs files, parsed: `/proc/stat` (CPU time), `/proc/cpuinfo` (CPU model,
//! threads, sockets), `/proc/meminfo` (installed memory). Pure parsers over text; the
//! callers read the files under their configured procfs root.
//!
//! Per-process files (`/proc/PID/...`) are read by `attribution::procs` only.

use std::collections::BTreeSet;

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
        let busy = user
            .saturating_add(nice)
            .saturating_add(system)
            .saturating_add(irq)
            .saturating_add(softirq);
        Ok(CpuTimes {
            busy,
            total: busy.saturating_add(idle).saturating_add(iowait),
        })
    }

    /// Utilisation between `earlier` and `self`, from 0 to 1; `None` when no time passed.
    pub fn utilisation_since(&self, earlier: &CpuTimes) -> Option<f64> {
        let total = self.total.checked_sub(earlier.total)?;
        let busy = self.busy.saturating_sub(earlier.busy);
        (total > 0).then(|| (busy as f64 / total as f64).clamp(0.0, 1.0))
    }
}

/// What `/proc/cpuinfo` says of the CPUs this host sees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuInfo {
    /// `model name` (x86); absent on most Arm hosts.
    pub model: Option<String>,
    pub logical_cpus: u32,
    /// Distinct `physical id`s; 1 where none is given (virtual machines, Arm).
    pub sockets: u32,
    /// Arm `CPU implementer:CPU part`, e.g. `0x41:0xd0c` (Neoverse N1).
    pub arm_part: Option<String>,
}

impl CpuInfo {
    pub fn parse(text: &str) -> CpuInfo {
        let mut model = None;
        let mut logical = 0u32;
        let mut sockets = BTreeSet::new();
        let mut implementer = None;
        let mut part = None;
        for line in text.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match key.trim() {
                "processor" => logical = logical.saturating_add(1),
                "model name" if model.is_none() && !value.is_empty() => {
                    model = Some(value.to_string());
                }
                "physical id" => {
                    sockets.insert(value.to_string());
                }
                "CPU implementer" if implementer.is_none() => {
                    implementer = Some(value.to_ascii_lowercase());
                }
                "CPU part" if part.is_none() => part = Some(value.to_ascii_lowercase()),
                _ => {}
            }
        }
        CpuInfo {
            model,
            logical_cpus: logical.max(1),
            sockets: u32::try_from(sockets.len()).unwrap_or(u32::MAX).max(1),
            arm_part: implementer.zip(part).map(|(i, p)| format!("{i}:{p}")),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(CpuTimes::parse("cpu  1 2 3\n").is_err());
    }

    #[test]
    fn cpuinfo_x86_and_arm() {
        let x86 = "processor\t: 0\nmodel name\t: AMD EPYC 9454 48-Core Processor\nphysical id\t: 0\n\nprocessor\t: 1\nmodel name\t: AMD EPYC 9454 48-Core Processor\nphysical id\t: 1\n";
        let i = CpuInfo::parse(x86);
        assert_eq!(i.model.as_deref(), Some("AMD EPYC 9454 48-Core Processor"));
        assert_eq!((i.logical_cpus, i.sockets, i.arm_part), (2, 2, None));
        let arm = "processor\t: 0\nBogoMIPS\t: 50.00\nCPU implementer\t: 0x41\nCPU part\t: 0xD0C\n\nprocessor\t: 1\nCPU implementer\t: 0x41\nCPU part\t: 0xd0c\n";
        let a = CpuInfo::parse(arm);
        assert_eq!(a.model, None);
        assert_eq!(a.arm_part.as_deref(), Some("0x41:0xd0c"));
        assert_eq!((a.logical_cpus, a.sockets), (2, 1));
        assert_eq!(CpuInfo::parse("").logical_cpus, 1);
    }

    #[test]
    fn meminfo() {
        assert_eq!(
            parse_mem_total_bytes("MemTotal:       16000000 kB\nMemFree: 1 kB\n"),
            Ok(16_384_000_000)
        );
        assert!(parse_mem_total_bytes("MemFree: 1 kB\n").is_err());
        assert!(parse_mem_total_bytes("MemTotal: lots kB\n").is_err());
    }
}
