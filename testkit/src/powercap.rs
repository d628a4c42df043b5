//! A fake Linux powercap tree, built as real files in a temp directory.
//!
//! The layout copies the kernel's (`intel_rapl_common`, Linux 5.x/6.x):
//!
//! ```text
//! TMP/devices/virtual/powercap/intel-rapl/               control type (no energy file)
//! TMP/devices/virtual/powercap/intel-rapl/intel-rapl:0/  zone: name, energy_uj, max_energy_range_uj, enabled
//! TMP/devices/virtual/powercap/intel-rapl/intel-rapl:0/intel-rapl:0:0/   subzone, nested in its parent
//! TMP/class/powercap/intel-rapl      -> ../../devices/virtual/powercap/intel-rapl
//! TMP/class/powercap/intel-rapl:0    -> ../../devices/virtual/powercap/intel-rapl/intel-rapl:0
//! TMP/class/powercap/intel-rapl:0:0  -> ../../devices/virtual/powercap/intel-rapl/intel-rapl:0/intel-rapl:0:0
//! ```
//!
//! [`FakePowercap::root`] is `TMP/class/powercap` (what the agent is configured with);
//! [`FakePowercap::devices_root`] is `TMP/devices/virtual/powercap`, where zones appear
//! only nested.
//!
//! Counters follow the convention of the agent's `CumulativeCounter`: `energy_uj` counts
//! up to `max_energy_range_uj`; an advance that would pass it wraps, leaving
//! `previous + delta - max`, so that a reader computes `current + max - previous`.
//! Every zone keeps the exact energy added to it ([`FakePowercap::truth_uj`]).

use std::fs;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tempfile::TempDir;

/// A realistic `max_energy_range_uj` of an Intel package or subzone (about 262 kJ).
pub const INTEL_MAX_ENERGY_RANGE_UJ: u64 = 262_143_328_850;
/// A realistic `max_energy_range_uj` of an Intel `psys` zone.
pub const INTEL_PSYS_MAX_ENERGY_RANGE_UJ: u64 = 1_048_575_999_938;
/// A realistic `max_energy_range_uj` of an AMD Zen zone (32-bit counter, 15.3 µJ units).
pub const AMD_MAX_ENERGY_RANGE_UJ: u64 = 65_712_999_613;

/// Write-only kernel files that refuse reads with `EACCES` even to root (their mode
/// has no read bit and procfs/sysfs check it for every user). Used to simulate an
/// unreadable `energy_uj` when the tests run as root. Writing to them is harmless, but
/// the fake never does: it removes the link before writing.
const ROOT_UNREADABLE_CANDIDATES: [&str; 3] = [
    "/proc/sys/vm/compact_memory",
    "/proc/sys/net/ipv4/route/flush",
    "/proc/sys/net/ipv6/route/flush",
];

/// A zone of a [`FakePowercap`]. Cheap to clone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZoneHandle {
    index: usize,
    id: String,
}

impl ZoneHandle {
    /// The zone's sysfs name: `intel-rapl:0`, `intel-rapl:0:1`.
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// How [`FakePowercap::make_unreadable`] made a zone's `energy_uj` unreadable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unreadable {
    /// Reading fails with `EACCES`, as on a kernel with the CVE-2020-8694 fix (mode 0400)
    /// for a non-root agent. Non-root: the file is `chmod 000`. Root: `energy_uj` is a
    /// symlink to a write-only kernel file that refuses reads even to root.
    PermissionDenied,
    /// Root, and no write-only kernel file was found: `energy_uj` is a directory, so
    /// reading fails with `EISDIR`. Simulates a read failure other than permissions.
    IsADirectory,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Broken {
    Unreadable,
    Garbage,
}

#[derive(Debug)]
struct Zone {
    id: String,
    dir: PathBuf,
    max: u64,
    value: u64,
    truth: u128,
    broken: Option<Broken>,
    /// `energy_uj` files of duplicate zones (`intel-rapl-mmio:N`) that show the same counter.
    mirrors: Vec<PathBuf>,
}

/// A powercap sysfs tree in a temp directory, removed on drop.
#[derive(Debug)]
pub struct FakePowercap {
    dir: TempDir,
    root: PathBuf,
    devices: PathBuf,
    zones: Vec<Zone>,
}

impl Default for FakePowercap {
    fn default() -> Self {
        Self::new()
    }
}

impl FakePowercap {
    /// An empty tree: the `class/powercap` root exists and holds no control type yet.
    pub fn new() -> FakePowercap {
        let dir = tempfile::Builder::new()
            .prefix("fake-powercap")
            .tempdir()
            .unwrap();
        let root = dir.path().join("class/powercap");
        let devices = dir.path().join("devices/virtual/powercap");
        fs::create_dir_all(&root).unwrap();
        fs::create_dir_all(&devices).unwrap();
        FakePowercap {
            dir,
            root,
            devices,
            zones: Vec::new(),
        }
    }

    /// `class/powercap`: top-level symlinks to every zone and control type.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `devices/virtual/powercap`: control types with their zones nested, no symlinks.
    pub fn devices_root(&self) -> &Path {
        &self.devices
    }

    /// The temp directory holding both trees.
    pub fn temp_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Adds a zone. `id` is `intel-rapl:N` (a package or `psys`) or `intel-rapl:N:M`
    /// (a subzone of `intel-rapl:N`, which must exist); the `intel-rapl-mmio` control
    /// type works the same way. Creates the control type on first use.
    pub fn add_zone(
        &mut self,
        id: &str,
        name: &str,
        max_energy_range_uj: u64,
        energy_uj: u64,
    ) -> ZoneHandle {
        assert!(
            energy_uj <= max_energy_range_uj,
            "{id}: energy_uj {energy_uj} above max {max_energy_range_uj}"
        );
        let parts: Vec<&str> = id.split(':').collect();
        assert!(
            (2..=3).contains(&parts.len()) && parts[1..].iter().all(|p| p.parse::<u32>().is_ok()),
            "zone id {id:?} is not CONTROL:N or CONTROL:N:M"
        );
        let control = parts[0];
        let control_dir = self.devices.join(control);
        if !control_dir.exists() {
            fs::create_dir_all(&control_dir).unwrap();
            fs::write(control_dir.join("enabled"), "1\n").unwrap();
            symlink(
                Path::new("../../devices/virtual/powercap").join(control),
                self.root.join(control),
            )
            .unwrap();
        }
        // Path of the zone relative to devices/virtual/powercap.
        let mut rel = PathBuf::from(control);
        if parts.len() == 3 {
            let parent = format!("{control}:{}", parts[1]);
            assert!(
                control_dir.join(&parent).is_dir(),
                "{id}: add its parent {parent} first"
            );
            rel.push(parent);
        }
        rel.push(id);
        let dir = self.devices.join(&rel);
        assert!(!dir.exists(), "zone {id} added twice");
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("name"), format!("{name}\n")).unwrap();
        fs::write(
            dir.join("max_energy_range_uj"),
            format!("{max_energy_range_uj}\n"),
        )
        .unwrap();
        fs::write(dir.join("enabled"), "1\n").unwrap();
        fs::write(dir.join("energy_uj"), format!("{energy_uj}\n")).unwrap();
        symlink(
            Path::new("../../devices/virtual/powercap").join(&rel),
            self.root.join(id),
        )
        .unwrap();
        self.zones.push(Zone {
            id: id.to_string(),
            dir,
            max: max_energy_range_uj,
            value: energy_uj,
            truth: 0,
            broken: None,
            mirrors: Vec::new(),
        });
        ZoneHandle {
            index: self.zones.len() - 1,
            id: id.to_string(),
        }
    }

    /// Adds `intel-rapl-mmio:N`, a duplicate of package zone `package` (same name, same
    /// counter: advancing `package` advances it too), as some client machines have.
    pub fn add_mmio_duplicate(&mut self, package: &ZoneHandle) -> ZoneHandle {
        let n = package.id.strip_prefix("intel-rapl:").unwrap();
        assert!(
            !n.contains(':'),
            "{}: only packages have mmio duplicates",
            package.id
        );
        let (max, value) = (
            self.zones[package.index].max,
            self.zones[package.index].value,
        );
        let name = fs::read_to_string(self.zones[package.index].dir.join("name")).unwrap();
        let mmio = self.add_zone(&format!("intel-rapl-mmio:{n}"), name.trim(), max, value);
        let mirror = self.zones[mmio.index].dir.join("energy_uj");
        self.zones[package.index].mirrors.push(mirror);
        mmio
    }

    /// Two Intel sockets: `intel-rapl:0` `package-0` and `intel-rapl:1` `package-1`, each
    /// with subzones `core` (`:0`), `uncore` (`:1`) and `dram` (`:2`), and the platform
    /// zone `intel-rapl:2` `psys`.
    pub fn intel_two_socket() -> FakePowercap {
        let mut fp = FakePowercap::new();
        for p in 0..2u64 {
            let pkg = format!("intel-rapl:{p}");
            fp.add_zone(
                &pkg,
                &format!("package-{p}"),
                INTEL_MAX_ENERGY_RANGE_UJ,
                12_345_678_901 + p * 1_000_003,
            );
            for (m, name) in ["core", "uncore", "dram"].into_iter().enumerate() {
                fp.add_zone(
                    &format!("{pkg}:{m}"),
                    name,
                    INTEL_MAX_ENERGY_RANGE_UJ,
                    1_000_000 * (m as u64 + 1) + p,
                );
            }
        }
        fp.add_zone(
            "intel-rapl:2",
            "psys",
            INTEL_PSYS_MAX_ENERGY_RANGE_UJ,
            98_765_432_109,
        );
        fp
    }

    /// Two AMD Zen packages, each with a `core` subzone; no DRAM zone.
    pub fn amd() -> FakePowercap {
        let mut fp = FakePowercap::new();
        for p in 0..2u64 {
            fp.add_zone(
                &format!("intel-rapl:{p}"),
                &format!("package-{p}"),
                AMD_MAX_ENERGY_RANGE_UJ,
                5_000_000_000 + p,
            );
            fp.add_zone(
                &format!("intel-rapl:{p}:0"),
                "core",
                AMD_MAX_ENERGY_RANGE_UJ,
                2_000_000_000 + p,
            );
        }
        fp
    }

    /// One Intel package made of two dies: `intel-rapl:0` `package-0-die-0` and
    /// `intel-rapl:1` `package-0-die-1`, each with `core` and `dram` subzones.
    pub fn intel_multi_die() -> FakePowercap {
        let mut fp = FakePowercap::new();
        for d in 0..2u64 {
            let zone = format!("intel-rapl:{d}");
            fp.add_zone(
                &zone,
                &format!("package-0-die-{d}"),
                INTEL_MAX_ENERGY_RANGE_UJ,
                7_000_000 + d,
            );
            fp.add_zone(
                &format!("{zone}:0"),
                "core",
                INTEL_MAX_ENERGY_RANGE_UJ,
                3_000_000 + d,
            );
            fp.add_zone(
                &format!("{zone}:1"),
                "dram",
                INTEL_MAX_ENERGY_RANGE_UJ,
                1_000_000 + d,
            );
        }
        fp
    }

    /// An Intel client: `intel-rapl:0` `package-0` with `core`, `uncore` and `dram`, and
    /// `intel-rapl-mmio:0` duplicating `package-0`.
    pub fn with_mmio_duplicate() -> FakePowercap {
        let mut fp = FakePowercap::new();
        let pkg = fp.add_zone(
            "intel-rapl:0",
            "package-0",
            INTEL_MAX_ENERGY_RANGE_UJ,
            40_000_000_000,
        );
        fp.add_zone(
            "intel-rapl:0:0",
            "core",
            INTEL_MAX_ENERGY_RANGE_UJ,
            20_000_000_000,
        );
        fp.add_zone(
            "intel-rapl:0:1",
            "uncore",
            INTEL_MAX_ENERGY_RANGE_UJ,
            1_000_000_000,
        );
        fp.add_zone(
            "intel-rapl:0:2",
            "dram",
            INTEL_MAX_ENERGY_RANGE_UJ,
            9_000_000_000,
        );
        fp.add_mmio_duplicate(&pkg);
        fp
    }

    /// Every zone, in the order added (mmio duplicates included).
    pub fn zones(&self) -> Vec<ZoneHandle> {
        self.zones
            .iter()
            .enumerate()
            .map(|(index, z)| ZoneHandle {
                index,
                id: z.id.clone(),
            })
            .collect()
    }

    /// The zone with this id. Panics if there is none.
    pub fn zone(&self, id: &str) -> ZoneHandle {
        let index = self
            .zones
            .iter()
            .position(|z| z.id == id)
            .unwrap_or_else(|| panic!("no zone {id}"));
        ZoneHandle {
            index,
            id: id.to_string(),
        }
    }

    /// The zone's directory (the real one, under [`Self::devices_root`]).
    pub fn zone_dir(&self, zone: &ZoneHandle) -> &Path {
        &self.zones[zone.index].dir
    }

    /// The zone's `energy_uj` file.
    pub fn energy_path(&self, zone: &ZoneHandle) -> PathBuf {
        self.zones[zone.index].dir.join("energy_uj")
    }

    /// The counter's value as the fake keeps it (the file shows it unless broken).
    pub fn energy_uj(&self, zone: &ZoneHandle) -> u64 {
        self.zones[zone.index].value
    }

    pub fn max_energy_range_uj(&self, zone: &ZoneHandle) -> u64 {
        self.zones[zone.index].max
    }

    /// Exact energy added to the zone by [`Self::advance`] and [`Self::advance_uj`] since
    /// it was created, whatever the wraps.
    pub fn truth_uj(&self, zone: &ZoneHandle) -> u128 {
        self.zones[zone.index].truth
    }

    /// Adds the energy of `power_watts` during `dt`, rounded to the microjoule. Returns
    /// the microjoules added.
    pub fn advance(&mut self, zone: &ZoneHandle, power_watts: f64, dt: Duration) -> u64 {
        assert!(
            power_watts.is_finite() && power_watts >= 0.0,
            "power {power_watts} W"
        );
        let delta = (power_watts * dt.as_secs_f64() * 1e6).round() as u64;
        self.advance_uj(zone, delta);
        delta
    }

    /// Adds `delta` µJ, wrapping past `max_energy_range_uj` (`value + delta - max`, as
    /// many times as needed: a reader sees at most one wrap per interval if it samples
    /// faster than the wrap period). A broken file stays broken; the counter runs on.
    pub fn advance_uj(&mut self, zone: &ZoneHandle, delta: u64) {
        let z = &mut self.zones[zone.index];
        z.truth += u128::from(delta);
        let mut value = u128::from(z.value) + u128::from(delta);
        let max = u128::from(z.max);
        while value > max {
            value -= max;
        }
        z.value = value as u64;
        self.write_value(zone.index);
    }

    /// Sets the counter without counting energy (a starting point near the wrap, say).
    pub fn set_energy_uj(&mut self, zone: &ZoneHandle, energy_uj: u64) {
        self.zones[zone.index].value = energy_uj;
        self.write_value(zone.index);
    }

    /// The counter steps back by `back_uj` without any energy being returned (a glitch of
    /// the hardware or the driver); it runs on from the lower value.
    pub fn step_back_uj(&mut self, zone: &ZoneHandle, back_uj: u64) {
        let z = &mut self.zones[zone.index];
        z.value = z.value.saturating_sub(back_uj);
        self.write_value(zone.index);
    }

    /// Writes a powercap constraint file of the zone: `constraint_N_NAME` (say
    /// `constraint_0_power_limit_uw`, `constraint_1_max_power_uw`) with `value`.
    pub fn set_constraint(&mut self, zone: &ZoneHandle, file: &str, value: u64) {
        fs::write(self.zones[zone.index].dir.join(file), format!("{value}\n")).unwrap();
    }

    /// Makes `energy_uj` unreadable by the agent, as the CVE-2020-8694 fix does (mode
    /// 0400, root only) and returns how. Not root: `chmod 000`, reads fail with `EACCES`.
    /// Root (who reads mode-000 files): a symlink to a write-only kernel file, reads fail
    /// with `EACCES` too; if none exists, a directory, reads fail with `EISDIR`. The
    /// counter runs on; [`Self::repair`] shows it again.
    pub fn make_unreadable(&mut self, zone: &ZoneHandle) -> Unreadable {
        let path = self.energy_path(zone);
        self.zones[zone.index].broken = Some(Broken::Unreadable);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o000)).unwrap();
        if read_fails_with(&path, ErrorKind::PermissionDenied) {
            return Unreadable::PermissionDenied;
        }
        fs::remove_file(&path).unwrap();
        for target in ROOT_UNREADABLE_CANDIDATES {
            symlink(target, &path).unwrap();
            if read_fails_with(&path, ErrorKind::PermissionDenied) {
                return Unreadable::PermissionDenied;
            }
            fs::remove_file(&path).unwrap();
        }
        fs::create_dir(&path).unwrap();
        Unreadable::IsADirectory
    }

    /// Writes `content` (verbatim, no newline added) in place of the counter, which
    /// runs on behind it until [`Self::repair`].
    pub fn write_garbage(&mut self, zone: &ZoneHandle, content: &str) {
        let path = self.energy_path(zone);
        self.zones[zone.index].broken = Some(Broken::Garbage);
        replace_file(&path, content);
    }

    /// Undoes [`Self::make_unreadable`] or [`Self::write_garbage`]: `energy_uj` shows the
    /// counter again, with mode 0444.
    pub fn repair(&mut self, zone: &ZoneHandle) {
        self.zones[zone.index].broken = None;
        self.write_value(zone.index);
    }

    /// True when the tests run as root (who can read mode-000 files).
    pub fn running_as_root() -> bool {
        fs::metadata("/proc/self")
            .map(|m| m.uid() == 0)
            .unwrap_or(false)
    }

    fn write_value(&mut self, index: usize) {
        let z = &self.zones[index];
        let content = format!("{}\n", z.value);
        for mirror in &z.mirrors {
            replace_file(mirror, &content);
        }
        if z.broken.is_none() {
            replace_file(&z.dir.join("energy_uj"), &content);
        }
    }
}

/// Writes `content` at `path`, first removing whatever is there (a symlink that must not
/// be written through, a directory, a file of mode 000), and leaves it mode 0444.
fn replace_file(path: &Path, content: &str) {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir(path).unwrap(),
        Ok(_) => fs::remove_file(path).unwrap(),
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => panic!("{}: {e}", path.display()),
    }
    fs::write(path, content).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o444)).unwrap();
}

fn read_fails_with(path: &Path, kind: ErrorKind) -> bool {
    let read = fs::File::open(path).and_then(|mut f| {
        let mut s = String::new();
        f.read_to_string(&mut s)
    });
    matches!(read, Err(e) if e.kind() == kind)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    fn read(path: &Path) -> io::Result<String> {
        fs::read_to_string(path)
    }

    #[test]
    fn zones_are_nested_and_linked_from_the_root_like_the_kernel() {
        let fp = FakePowercap::intel_two_socket();
        let root = fp.root();
        assert_eq!(
            read(&root.join("intel-rapl:0/name")).unwrap(),
            "package-0\n"
        );
        assert_eq!(read(&root.join("intel-rapl:1:2/name")).unwrap(), "dram\n");
        assert_eq!(
            read(&root.join("intel-rapl:0/intel-rapl:0:1/name")).unwrap(),
            "uncore\n"
        );
        assert_eq!(read(&root.join("intel-rapl:2/name")).unwrap(), "psys\n");
        assert_eq!(
            fs::read_link(root.join("intel-rapl:0:0")).unwrap(),
            Path::new("../../devices/virtual/powercap/intel-rapl/intel-rapl:0/intel-rapl:0:0")
        );
        assert!(
            fs::symlink_metadata(root.join("intel-rapl"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert!(!root.join("intel-rapl/energy_uj").exists());
        assert!(
            fp.devices_root()
                .join("intel-rapl/intel-rapl:1/intel-rapl:1:2/energy_uj")
                .is_file()
        );
        assert_eq!(
            read(&root.join("intel-rapl:0/max_energy_range_uj")).unwrap(),
            format!("{INTEL_MAX_ENERGY_RANGE_UJ}\n")
        );
    }

    #[test]
    fn advancing_wraps_past_the_maximum_and_keeps_the_truth() {
        let mut fp = FakePowercap::new();
        let z = fp.add_zone("intel-rapl:0", "package-0", 1_000_000, 900_000);
        assert_eq!(fp.advance(&z, 50.0, Duration::from_millis(2)), 100_000);
        assert_eq!(read(&fp.energy_path(&z)).unwrap(), "1000000\n");
        fp.advance(&z, 150.0, Duration::from_millis(1));
        // 1_000_000 + 150_000 - 1_000_000: a reader computes 150_000 + max - 1_000_000.
        assert_eq!(
            read(&fp.root().join("intel-rapl:0/energy_uj")).unwrap(),
            "150000\n"
        );
        assert_eq!(fp.truth_uj(&z), 250_000);
    }

    #[test]
    fn mmio_duplicate_follows_its_package() {
        let mut fp = FakePowercap::with_mmio_duplicate();
        let pkg = fp.zone("intel-rapl:0");
        fp.advance(&pkg, 10.0, Duration::from_secs(1));
        assert_eq!(
            read(&fp.root().join("intel-rapl-mmio:0/name")).unwrap(),
            "package-0\n"
        );
        assert_eq!(
            read(&fp.root().join("intel-rapl-mmio:0/energy_uj")).unwrap(),
            read(&fp.root().join("intel-rapl:0/energy_uj")).unwrap()
        );
    }

    #[test]
    fn broken_files_stay_broken_until_repaired_and_lose_no_energy() {
        let mut fp = FakePowercap::amd();
        let z = fp.zone("intel-rapl:1");
        let path = fp.root().join("intel-rapl:1/energy_uj");
        let how = fp.make_unreadable(&z);
        let err = read(&path).unwrap_err();
        match how {
            Unreadable::PermissionDenied => assert_eq!(err.kind(), ErrorKind::PermissionDenied),
            Unreadable::IsADirectory => assert!(FakePowercap::running_as_root()),
        }
        fp.advance_uj(&z, 7);
        assert!(read(&path).is_err());
        fp.repair(&z);
        assert_eq!(read(&path).unwrap(), format!("{}\n", 5_000_000_001u64 + 7));
        fp.write_garbage(&z, "abc");
        fp.advance_uj(&z, 1);
        assert_eq!(read(&path).unwrap(), "abc");
        fp.repair(&z);
        assert_eq!(read(&path).unwrap(), format!("{}\n", 5_000_000_001u64 + 8));
        assert_eq!(fp.truth_uj(&z), 8);
    }
}
