//! RAPL energy counters through Linux powercap sysfs, from a configured root.
//!
//! Zones: `intel-rapl:N` (a package `package-N`, `package-N-die-M`, or the platform
//! `psys`) and `intel-rapl:N:M` (subzones `core`, `uncore`, `dram`). Packages count as
//! `cpu`, `dram` subzones as `dram`; `core`, `uncore` and `psys` overlap them and are
//! exported as raw zones only. The `intel-rapl-mmio` tree duplicates the package and is
//! skipped. AMD (package and `core` zones) works the same way: the package counts, its
//! `core` zone is raw only.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};

use empreinte_shared::{Component, MicroJoules, SourceKind};

use super::{
    Channel, ChannelEnergy, Correction, Diagnosis, EnergySource, Opened, PollError, RawZone,
};
use crate::clock::SampleTime;
use crate::counter::{Ceiling, CounterStep, CumulativeCounter, Rollover};

/// The power ceiling of a zone that has no powercap constraint files, in watts: above
/// the sustained power of any single CPU package or its DRAM sold today (the largest
/// server CPUs of 2024 have a TDP of 500 W), with room for turbo peaks. Only a counter
/// step beyond this power is treated as a glitch: a wrap of a 262 kJ (Intel) or 65 kJ
/// (AMD) counter implies far more at any sampling interval the agent accepts.
pub const DEFAULT_ZONE_CEILING_WATTS: u64 = 1_000;

/// A zone's ceiling from its constraint files is this many times its largest limit:
/// short bursts (PL2, PL4) exceed the long-term limit.
pub const CONSTRAINT_HEADROOM: u64 = 2;

/// The zone's power ceiling in watts: [`CONSTRAINT_HEADROOM`] times the largest of its
/// `constraint_*_max_power_uw` and `constraint_*_power_limit_uw` where present, else
/// [`DEFAULT_ZONE_CEILING_WATTS`]. Never below 50 W (a limit set very low must not make
/// normal readings glitches).
pub fn zone_ceiling_watts(zone_dir: &Path) -> u64 {
    let mut largest_uw: u64 = 0;
    if let Ok(entries) = std::fs::read_dir(zone_dir) {
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            let is_limit = name.starts_with("constraint_")
                && (name.ends_with("_max_power_uw") || name.ends_with("_power_limit_uw"));
            if is_limit {
                if let Ok(v) = read_trimmed(&e.path()).map(|s| s.parse::<u64>()) {
                    largest_uw = largest_uw.max(v.unwrap_or(0));
                }
            }
        }
    }
    if largest_uw == 0 {
        return DEFAULT_ZONE_CEILING_WATTS;
    }
    (largest_uw / 1_000_000)
        .saturating_mul(CONSTRAINT_HEADROOM)
        .max(50)
}

/// The fix for an `energy_uj` that only root can read.
pub const PERMISSION_FIX: &str = "make energy_uj readable by the agent's group: install deploy/systemd/empreinte-rapl.conf \
     (systemd-tmpfiles) or deploy/udev/90-empreinte-rapl.rules, or run \
     `chgrp empreinte /sys/class/powercap/intel-rapl:*/energy_uj /sys/class/powercap/intel-rapl:*:*/energy_uj && \
     chmod 0440 …` (never 0444: that reopens the side channel)";

struct Zone {
    energy_path: PathBuf,
    counter: CumulativeCounter,
}

/// The RAPL source.
pub struct Rapl {
    channels: Vec<Channel>,
    zones: Vec<Zone>,
    buf: Vec<u8>,
}

/// A zone as discovered, before it is read.
struct Found {
    id: String,
    dir: PathBuf,
    name: String,
    /// The package zone's name for subzones, the zone's own name for packages.
    parent_name: String,
    is_sub: bool,
}

/// `intel-rapl:N` → Some((N, None)), `intel-rapl:N:M` → Some((N, Some(M))).
fn parse_zone_id(id: &str) -> Option<(u32, Option<u32>)> {
    let rest = id.strip_prefix("intel-rapl:")?;
    let mut parts = rest.split(':');
    let n = parts.next()?.parse().ok()?;
    let m = match parts.next() {
        Some(m) => Some(m.parse().ok()?),
        None => None,
    };
    parts.next().is_none().then_some((n, m))
}

fn read_trimmed(path: &Path) -> std::io::Result<String> {
    Ok(std::fs::read_to_string(path)?.trim().to_string())
}

fn is_package_name(name: &str) -> bool {
    name.strip_prefix("package-").is_some_and(|rest| {
        let mut parts = rest.split("-die-");
        let ok_pkg = parts
            .next()
            .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        let ok_die = parts
            .next()
            .is_none_or(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()));
        ok_pkg && ok_die && parts.next().is_none()
    })
}

/// Finds every `intel-rapl` zone under `root`, each once, whether the zones appear as
/// top-level entries (`/sys/class/powercap`) or only nested (`/sys/devices/virtual/powercap`).
fn discover(root: &Path) -> std::io::Result<Vec<Found>> {
    let mut zones: Vec<(u32, Option<u32>, String, PathBuf)> = Vec::new();
    let visit =
        |dir: &Path, zones: &mut Vec<(u32, Option<u32>, String, PathBuf)>| -> std::io::Result<()> {
            for entry in std::fs::read_dir(dir)? {
                let entry = entry?;
                let name = entry.file_name();
                let Some(id) = name.to_str() else { continue };
                if let Some((n, m)) = parse_zone_id(id) {
                    if !zones.iter().any(|z| z.2 == id) {
                        zones.push((n, m, id.to_string(), entry.path()));
                    }
                }
            }
            Ok(())
        };
    visit(root, &mut zones)?;
    // The control type directory (`intel-rapl`) holds packages; packages hold subzones.
    let control = root.join("intel-rapl");
    if control.is_dir() {
        visit(&control, &mut zones)?;
    }
    let packages: Vec<PathBuf> = zones
        .iter()
        .filter(|z| z.1.is_none())
        .map(|z| z.3.clone())
        .collect();
    for p in packages {
        visit(&p, &mut zones)?;
    }
    zones.sort_by_key(|z| (z.0, z.1.map_or(0, |m| m + 1)));
    let names: Vec<(u32, Option<u32>, String)> = zones
        .iter()
        .map(|(n, m, _, dir)| (*n, *m, read_trimmed(&dir.join("name")).unwrap_or_default()))
        .collect();
    Ok(zones
        .into_iter()
        .zip(&names)
        .map(|((n, m, id, dir), (_, _, name))| {
            let parent_name = match m {
                Some(_) => names
                    .iter()
                    .find(|p| p.0 == n && p.1.is_none())
                    .map(|p| p.2.clone())
                    .unwrap_or_default(),
                None => name.clone(),
            };
            Found {
                id,
                dir,
                name: name.clone(),
                parent_name,
                is_sub: m.is_some(),
            }
        })
        .collect())
}

/// Reads and parses `energy_uj`.
fn read_energy(path: &Path, buf: &mut Vec<u8>) -> Result<u64, ReadError> {
    buf.clear();
    File::open(path)
        .and_then(|mut f| f.read_to_end(buf))
        .map_err(ReadError::Io)?;
    let text = std::str::from_utf8(buf)
        .map_err(|_| ReadError::Malformed(String::from_utf8_lossy(buf).into_owned()))?;
    text.trim()
        .parse::<u64>()
        .map_err(|_| ReadError::Malformed(text.trim().chars().take(64).collect()))
}

enum ReadError {
    Io(std::io::Error),
    Malformed(String),
}

impl ReadError {
    fn describe(&self, path: &Path) -> String {
        match self {
            ReadError::Io(e) if e.kind() == ErrorKind::PermissionDenied => format!(
                "{} is readable by root only (the kernel's default since the 2020 fix for CVE-2020-8694)",
                path.display()
            ),
            ReadError::Io(e) => format!("cannot read {}: {e}", path.display()),
            ReadError::Malformed(s) => format!(
                "{} holds {s:?}, not a number of microjoules",
                path.display()
            ),
        }
    }

    fn fix(&self) -> Option<String> {
        match self {
            ReadError::Io(e) if e.kind() == ErrorKind::PermissionDenied => {
                Some(PERMISSION_FIX.to_string())
            }
            _ => None,
        }
    }
}

impl Rapl {
    pub fn open(root: &Path) -> Opened<Rapl> {
        let subject = format!("powercap {}", root.display());
        let found = match discover(root) {
            Ok(f) => f,
            Err(e) => {
                let problem = if e.kind() == ErrorKind::NotFound {
                    format!(
                        "no powercap tree at {} (no RAPL on this host: a virtual machine, a non-x86 CPU, or the RAPL driver not loaded)",
                        root.display()
                    )
                } else {
                    format!("cannot list {}: {e}", root.display())
                };
                return Opened {
                    source: None,
                    diagnoses: vec![Diagnosis::unusable(
                        SourceKind::Rapl,
                        subject,
                        problem,
                        Some("load the driver (`modprobe intel_rapl_common`; AMD Zen needs Linux 5.11 or later), set --powercap-root, or rely on the estimate".into()),
                    )],
                };
            }
        };
        if found.is_empty() {
            return Opened {
                source: None,
                diagnoses: vec![Diagnosis::unusable(
                    SourceKind::Rapl,
                    subject,
                    format!("no intel-rapl zone under {} (no RAPL on this host, or the driver is not loaded)", root.display()),
                    Some("load the driver (`modprobe intel_rapl_common`; AMD Zen needs Linux 5.11 or later), or rely on the estimate".into()),
                )],
            };
        }
        let mut rapl = Rapl {
            channels: Vec::new(),
            zones: Vec::new(),
            buf: Vec::with_capacity(32),
        };
        let mut diagnoses = Vec::new();
        for z in found {
            match open_zone(&z, &mut rapl.buf) {
                Ok((channel, zone, diagnosis)) => {
                    diagnoses.push(diagnosis);
                    rapl.channels.push(channel);
                    rapl.zones.push(zone);
                }
                Err(diagnosis) => diagnoses.push(diagnosis),
            }
        }
        let usable = rapl.channels.iter().any(|c| c.component.is_some());
        Opened {
            source: usable.then_some(rapl),
            diagnoses,
        }
    }
}

/// Reads a zone's range and first value, and says what it counts; or why it cannot be
/// used.
fn open_zone(z: &Found, buf: &mut Vec<u8>) -> Result<(Channel, Zone, Diagnosis), Diagnosis> {
    let subject = format!("{} ({})", z.id, z.name);
    let unusable = |problem: String, fix: Option<String>| {
        Diagnosis::unusable(SourceKind::Rapl, subject.clone(), problem, fix)
    };
    let energy_path = z.dir.join("energy_uj");
    let max_path = z.dir.join("max_energy_range_uj");
    let max = match read_trimmed(&max_path).map(|s| s.parse::<u64>().map_err(|_| s)) {
        Ok(Ok(m)) if m > 0 => m,
        Ok(Ok(_)) | Ok(Err(_)) => {
            let content = read_trimmed(&max_path).unwrap_or_default();
            return Err(unusable(
                format!(
                    "{} holds {content:?}, not a positive number of microjoules",
                    max_path.display()
                ),
                None,
            ));
        }
        Err(e) => {
            return Err(unusable(
                format!("cannot read {}: {e}", max_path.display()),
                None,
            ));
        }
    };
    let counter = CumulativeCounter::new(
        Rollover::WrapsAt { max },
        Ceiling::watts_in_microjoules(zone_ceiling_watts(&z.dir)),
    );
    // Validated here, read again by the first poll (the baseline).
    let first =
        read_energy(&energy_path, buf).map_err(|e| unusable(e.describe(&energy_path), e.fix()))?;
    if first > max {
        return Err(unusable(
            format!(
                "{} holds {first}, above max_energy_range_uj {max}",
                energy_path.display()
            ),
            None,
        ));
    }
    let (component, measures) = classify(z, max);
    let device = if z.is_sub {
        z.parent_name.clone()
    } else {
        z.name.clone()
    };
    let channel = Channel {
        component,
        source: SourceKind::Rapl,
        device,
        zone: Some(RawZone {
            id: z.id.clone(),
            name: z.name.clone(),
        }),
        gpu: None,
    };
    let diagnosis = Diagnosis::usable(SourceKind::Rapl, subject, measures);
    Ok((
        channel,
        Zone {
            energy_path,
            counter,
        },
        diagnosis,
    ))
}

/// The component a zone counts as (`None`: a raw zone only) and what it measures.
fn classify(z: &Found, max: u64) -> (Option<Component>, String) {
    match (z.is_sub, z.name.as_str()) {
        (false, name) if is_package_name(name) => (
            Some(Component::Cpu),
            format!("cpu energy of {name} (RAPL counter, wraps at {max} µJ)"),
        ),
        (true, "dram") => (
            Some(Component::Dram),
            format!(
                "dram energy of {} (RAPL counter, wraps at {max} µJ)",
                z.parent_name
            ),
        ),
        (false, "psys") => (
            None,
            "platform energy (psys): raw zone, exported separately, not summed".to_string(),
        ),
        (true, name) => (
            None,
            format!(
                "raw zone {name} inside {}, exported separately, not summed",
                z.parent_name
            ),
        ),
        (false, name) => (
            None,
            format!("raw zone {name}, not a known package name: exported separately, not summed"),
        ),
    }
}

impl EnergySource for Rapl {
    fn kind(&self) -> SourceKind {
        SourceKind::Rapl
    }

    fn channels(&self) -> &[Channel] {
        &self.channels
    }

    fn poll(&mut self, at: SampleTime, out: &mut Vec<ChannelEnergy>) -> Result<(), PollError> {
        let mut failures: Vec<String> = Vec::new();
        for (channel, zone) in self.zones.iter_mut().enumerate() {
            let step = match read_energy(&zone.energy_path, &mut self.buf) {
                Ok(v) => zone
                    .counter
                    .update(v, at)
                    .map_err(|e| format!("{}: {e}", zone.energy_path.display())),
                Err(e) => Err(e.describe(&zone.energy_path)),
            };
            match step {
                Ok(CounterStep::Baseline) => out.push(ChannelEnergy {
                    channel,
                    energy: MicroJoules::ZERO,
                    correction: None,
                }),
                Ok(CounterStep::Reset { since_restart }) => out.push(ChannelEnergy {
                    channel,
                    energy: MicroJoules(since_restart),
                    correction: Some(Correction::Reset),
                }),
                Ok(CounterStep::Glitch) => {
                    tracing::warn!(zone = %zone.energy_path.display(), "energy counter stepped by more than the zone's power ceiling allows: a glitch, no energy taken from it");
                    out.push(ChannelEnergy {
                        channel,
                        energy: MicroJoules::ZERO,
                        correction: Some(Correction::Glitch),
                    })
                }
                Ok(CounterStep::Advanced { delta }) => out.push(ChannelEnergy {
                    channel,
                    energy: MicroJoules(delta),
                    correction: None,
                }),
                Ok(CounterStep::Wrapped { delta }) => out.push(ChannelEnergy {
                    channel,
                    energy: MicroJoules(delta),
                    correction: Some(Correction::Wrap),
                }),
                // The baseline is kept: the next good read covers this interval too.
                Err(e) => failures.push(e),
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(PollError::Retry(failures.join("; ")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_ids_and_package_names() {
        assert_eq!(parse_zone_id("intel-rapl:0"), Some((0, None)));
        assert_eq!(parse_zone_id("intel-rapl:1:2"), Some((1, Some(2))));
        assert_eq!(parse_zone_id("intel-rapl"), None);
        assert_eq!(parse_zone_id("intel-rapl-mmio:0"), None);
        assert_eq!(parse_zone_id("intel-rapl:0:1:2"), None);
        assert!(is_package_name("package-0"));
        assert!(is_package_name("package-1-die-1"));
        assert!(!is_package_name("package-"));
        assert!(!is_package_name("psys"));
        assert!(!is_package_name("package-0-die-"));
    }
}
