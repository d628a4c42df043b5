//! A fake NVML library (`c/fake_nvml.c`, built by `build.rs`) driven by a scenario file.
//!
//! Each [`FakeNvml`] copies the built library into its own temp dir as
//! `libnvidia-ml.so`: a distinct file, so `dlopen` gives each test its own library state
//! even when tests run in parallel threads of one process. The library reads
//! `<its path>.scenario` on every call, so a test advances the trace by writing a new
//! [`Scenario`] (atomically: temp file, then rename). The format is documented at the top
//! of `c/fake_nvml.c`.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

/// Path of the fake library as built.
pub const BUILT_LIBRARY: &str = env!("FAKE_NVML_LIB");

/// A private copy of the fake library and its scenario file.
pub struct FakeNvml {
    _dir: TempDir,
    library: PathBuf,
}

/// One GPU of a scenario.
#[derive(Clone, Debug, PartialEq)]
pub struct FakeGpu {
    pub uuid: String,
    pub name: String,
    /// Cumulative energy in millijoules; `None` when the counter is not supported.
    pub energy_mj: Option<u64>,
    /// Power in milliwatts; `None` when not supported.
    pub power_mw: Option<u64>,
    pub limit_mw: Option<u64>,
    /// Make every data call on this GPU return this NVML error code.
    pub fail: Option<u32>,
    pub utilization_supported: bool,
    /// MIG mode; `None`: not supported.
    pub mig: Option<bool>,
    /// Persistence mode; `None`: not supported.
    pub persistence: Option<bool>,
}

impl FakeGpu {
    pub fn new(index: u32, name: &str) -> FakeGpu {
        FakeGpu {
            uuid: format!("GPU-{index:08x}-1111-2222-3333-444455556666"),
            name: name.to_string(),
            energy_mj: Some(0),
            power_mw: Some(0),
            limit_mw: Some(700_000),
            fail: None,
            utilization_supported: true,
            mig: None,
            persistence: Some(true),
        }
    }
}

/// A process running on a GPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FakeProcess {
    pub gpu: u32,
    pub pid: u32,
    /// Used GPU memory in bytes; `None` when unavailable.
    pub used_mem: Option<u64>,
}

impl FakeProcess {
    /// Process `pid` on GPU `gpu`, using `used_mem` bytes of its memory.
    pub fn new(gpu: u32, pid: u32, used_mem: Option<u64>) -> FakeProcess {
        FakeProcess { gpu, pid, used_mem }
    }
}

/// A per-process utilisation sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FakeSample {
    pub gpu: u32,
    pub pid: u32,
    pub ts_us: u64,
    pub sm: u32,
}

impl FakeSample {
    /// Process `pid` used `sm` % of GPU `gpu`'s multiprocessors at `ts_us`.
    pub fn new(gpu: u32, pid: u32, ts_us: u64, sm: u32) -> FakeSample {
        FakeSample {
            gpu,
            pid,
            ts_us,
            sm,
        }
    }
}

/// The MIG instance a process of a scenario runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FakeInstance {
    pub pid: u32,
    pub gpu_instance: u32,
    pub compute_instance: u32,
}

/// What the fake library plays. GPU indices are positions in `gpus`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Scenario {
    /// Make `nvmlInit_v2` fail with this code.
    pub init_error: Option<u32>,
    /// The driver's load generation: changing it is a driver reload, after which the
    /// handles of an earlier initialisation answer UNINITIALIZED.
    pub generation: u64,
    /// The driver version string; the library's default when `None`.
    pub driver: Option<String>,
    /// MIG instances of processes listed in `processes` (by pid).
    pub instances: Vec<FakeInstance>,
    pub gpus: Vec<FakeGpu>,
    pub processes: Vec<FakeProcess>,
    pub samples: Vec<FakeSample>,
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "unsupported".to_string(), |v| v.to_string())
}

impl Scenario {
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        if let Some(e) = self.init_error {
            writeln!(s, "init_error={e}").unwrap();
        }
        writeln!(s, "generation={}", self.generation).unwrap();
        if let Some(d) = &self.driver {
            writeln!(s, "driver=\"{d}\"").unwrap();
        }
        for (i, g) in self.gpus.iter().enumerate() {
            write!(
                s,
                "gpu {i} uuid=\"{}\" name=\"{}\" energy_mj={} power_mw={} limit_mw={}",
                g.uuid,
                g.name,
                opt(g.energy_mj),
                opt(g.power_mw),
                opt(g.limit_mw)
            )
            .unwrap();
            if let Some(f) = g.fail {
                write!(s, " fail={f}").unwrap();
            }
            if !g.utilization_supported {
                s.push_str(" utilization=unsupported");
            }
            let on_off = |b: bool| if b { "on" } else { "off" };
            if let Some(m) = g.mig {
                write!(s, " mig={}", on_off(m)).unwrap();
            }
            if let Some(p) = g.persistence {
                write!(s, " persistence={}", on_off(p)).unwrap();
            }
            s.push('\n');
        }
        for p in &self.processes {
            write!(
                s,
                "process {} pid={} used_mem={}",
                p.gpu,
                p.pid,
                p.used_mem
                    .map_or_else(|| "unavailable".into(), |m| m.to_string())
            )
            .unwrap();
            if let Some(i) = self.instances.iter().find(|i| i.pid == p.pid) {
                write!(s, " gi={} ci={}", i.gpu_instance, i.compute_instance).unwrap();
            }
            s.push('\n');
        }
        for x in &self.samples {
            writeln!(
                s,
                "sample {} pid={} ts_us={} sm={} mem=0 enc=0 dec=0",
                x.gpu, x.pid, x.ts_us, x.sm
            )
            .unwrap();
        }
        s
    }
}

impl FakeNvml {
    /// A private copy of the library, playing `scenario`.
    pub fn new(scenario: &Scenario) -> FakeNvml {
        let dir = tempfile::Builder::new()
            .prefix("fake-nvml")
            .tempdir()
            .unwrap();
        let library = dir.path().join("libnvidia-ml.so");
        fs::copy(BUILT_LIBRARY, &library).unwrap();
        let f = FakeNvml { _dir: dir, library };
        f.play(scenario);
        f
    }

    /// The library to give the agent (`--nvml-library`).
    pub fn library(&self) -> &Path {
        &self.library
    }

    /// Replaces the scenario, atomically.
    pub fn play(&self, scenario: &Scenario) {
        self.write_raw(&scenario.to_text());
    }

    /// Writes a raw scenario text (for malformed-scenario tests).
    pub fn write_raw(&self, text: &str) {
        let path = self.scenario_path();
        let tmp = path.with_extension("scenario.tmp");
        fs::write(&tmp, text).unwrap();
        fs::rename(tmp, path).unwrap();
    }

    pub fn scenario_path(&self) -> PathBuf {
        let mut p = self.library.clone().into_os_string();
        p.push(".scenario");
        PathBuf::from(p)
    }
}
