//! Energy sources behind one trait.
//!
//! A source is opened from a root or library path given by configuration
//! ([`rapl::Rapl::open`], [`nvml::NvmlSource::open`], [`estimate::Estimate::open`]). Opening
//! never fails: it returns an [`Opened`] with the source (if usable) and one
//! [`Diagnosis`] per thing examined, which `empreinte agent check` prints as they are.

use std::fmt;

use empreinte_shared::{Component, MicroJoules, SourceKind};
use serde::Serialize;

use crate::clock::SampleTime;

pub mod estimate;
pub mod nvml;
pub mod rapl;

/// One stream of energy a source reports: a RAPL zone, a GPU, an estimated component.
/// A source's channels are fixed once it is opened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Channel {
    /// The host component this channel's energy belongs to, or `None` for a zone that
    /// overlaps others (RAPL `core`, `uncore`, `psys`): such a channel is exported only as
    /// a raw zone, never summed into the host's totals.
    pub component: Option<Component>,
    pub source: SourceKind,
    /// The `device` label: `package-0`, `package-0-die-1`, `gpu0`, `host`...
    pub device: String,
    /// The raw zone, for sources that have zones (RAPL).
    pub zone: Option<RawZone>,
    /// GPU identity, for GPU channels.
    pub gpu: Option<GpuIdentity>,
}

/// A RAPL zone as the kernel names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RawZone {
    /// The sysfs directory name: `intel-rapl:0`, `intel-rapl:0:1`.
    pub id: String,
    /// The zone's `name` file: `package-0`, `core`, `uncore`, `dram`, `psys`.
    pub name: String,
}

/// A GPU's labels.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GpuIdentity {
    pub index: u32,
    pub uuid: String,
    pub model: String,
    /// MIG mode (`None`: not supported or unknown).
    pub mig: Option<bool>,
    /// Persistence mode (`None`: unknown).
    pub persistence: Option<bool>,
    /// NVIDIA driver version.
    pub driver: Option<String>,
    /// How this GPU's energy is split between processes when it differs from the usual
    /// rule (a MIG GPU), in plain words.
    pub split: Option<String>,
}

/// A counter anomaly that a source corrected rather than dropping the interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Correction {
    /// The counter wrapped past its maximum; the difference was computed across the wrap.
    Wrap,
    /// The counter restarted from zero (GPU driver reload): the energy since the restart
    /// was counted, nothing before it was invented.
    Reset,
    /// The counter stepped backwards (or forwards) by more than the zone's power ceiling
    /// allows in the interval: neither a wrap nor a reset. No energy was taken from the
    /// step (see [`crate::counter`]).
    Glitch,
}

/// Energy one channel used since the previous poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelEnergy {
    /// Index into the source's [`EnergySource::channels`].
    pub channel: usize,
    pub energy: MicroJoules,
    pub correction: Option<Correction>,
}

/// Why a poll failed.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    /// A read failed this time; the source keeps its baselines and is polled again next
    /// cycle, so the energy of this interval is counted in the next one.
    #[error("{0} (will retry next cycle)")]
    Retry(String),
    /// The source cannot be used any more (device gone, library unloaded).
    #[error("{0} (source stopped)")]
    Fatal(String),
}

/// A source of energy figures.
pub trait EnergySource: Send {
    fn kind(&self) -> SourceKind;

    /// The channels this source reports, fixed once opened.
    fn channels(&self) -> &[Channel];

    /// Reads every channel at `at` and appends the energy each used since the previous
    /// poll. The first poll establishes baselines and appends zero energies. On
    /// `Err(Retry)` the channels that were read are still appended; the others keep their
    /// baselines so nothing is lost.
    fn poll(&mut self, at: SampleTime, out: &mut Vec<ChannelEnergy>) -> Result<(), PollError>;

    /// Time since the source opened during which a channel's energy could not be
    /// accounted for at all (a GPU whose driver reloaded after a long outage: neither its
    /// counter nor power readings cover the gap). Zero for sources that never lose time.
    fn unaccounted_time(&self, _channel: usize) -> std::time::Duration {
        std::time::Duration::ZERO
    }

    /// For a GPU channel, the processes that used the GPU since the last call (for
    /// per-project attribution). Sources without per-process data return `None`.
    fn gpu_activity(&mut self, _channel: usize) -> Option<GpuActivity> {
        None
    }
}

/// The processes seen on one GPU during an interval.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GpuActivity {
    /// Running compute processes.
    pub processes: Vec<GpuProcess>,
    /// Per-process utilisation samples taken since the previous call.
    pub samples: Vec<GpuSample>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GpuProcess {
    pub pid: u32,
    /// Used GPU memory in bytes, when the driver reports it.
    pub used_gpu_memory: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GpuSample {
    pub pid: u32,
    /// The driver's timestamp of the sample, in microseconds.
    pub timestamp_us: u64,
    /// Streaming-multiprocessor utilisation, percent.
    pub sm_util: u32,
}

/// What `check` says about one thing a source examined (a zone, a GPU, a library).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Diagnosis {
    pub source: SourceKind,
    /// What was examined: `intel-rapl:0 (package-0)`, `GPU 0 NVIDIA H100 (GPU-…)`.
    pub subject: String,
    pub usable: bool,
    /// What it measures when usable: `cpu energy of package-0`.
    pub measures: Option<String>,
    /// Why it is not usable, or a caveat when it is.
    pub problem: Option<String>,
    /// How a sysadmin can fix the problem.
    pub fix: Option<String>,
}

impl Diagnosis {
    pub fn usable(
        source: SourceKind,
        subject: impl Into<String>,
        measures: impl Into<String>,
    ) -> Diagnosis {
        Diagnosis {
            source,
            subject: subject.into(),
            usable: true,
            measures: Some(measures.into()),
            problem: None,
            fix: None,
        }
    }

    pub fn unusable(
        source: SourceKind,
        subject: impl Into<String>,
        problem: impl Into<String>,
        fix: Option<String>,
    ) -> Diagnosis {
        Diagnosis {
            source,
            subject: subject.into(),
            usable: false,
            measures: None,
            problem: Some(problem.into()),
            fix,
        }
    }
}

impl fmt::Display for Diagnosis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mark = if self.usable { "ok  " } else { "FAIL" };
        write!(f, "[{mark}] {:<8} {}", self.source.as_str(), self.subject)?;
        if let Some(m) = &self.measures {
            write!(f, "\n         measures: {m}")?;
        }
        if let Some(p) = &self.problem {
            write!(f, "\n         problem:  {p}")?;
        }
        if let Some(x) = &self.fix {
            write!(f, "\n         fix:      {x}")?;
        }
        Ok(())
    }
}

/// The result of opening a source: the source if anything of it is usable, and what was
/// found either way.
pub struct Opened<S> {
    pub source: Option<S>,
    pub diagnoses: Vec<Diagnosis>,
}

/// Every source the configuration enables, opened, and what `check` should say.
pub struct OpenedSources {
    pub sources: Vec<Box<dyn EnergySource>>,
    pub diagnoses: Vec<Diagnosis>,
}

/// Opens RAPL and NVML as configured, then the estimate for CPU and DRAM where no
/// measuring source covers them (when `estimate.mode = "fallback"`).
pub fn open_all(config: &crate::config::AgentConfig) -> OpenedSources {
    use crate::config::{EstimateMode, NvmlLibrary};

    let mut sources: Vec<Box<dyn EnergySource>> = Vec::new();
    let mut diagnoses = Vec::new();
    if config.rapl.enabled {
        let opened = rapl::Rapl::open(&config.rapl.root);
        diagnoses.extend(opened.diagnoses);
        if let Some(s) = opened.source {
            sources.push(Box::new(s));
        }
    } else {
        diagnoses.push(Diagnosis::unusable(
            SourceKind::Rapl,
            "RAPL",
            "disabled by configuration (rapl.enabled = false)",
            None,
        ));
    }
    match &config.nvml.library {
        NvmlLibrary::Path(path) => {
            let opened = nvml::NvmlSource::open(path);
            diagnoses.extend(opened.diagnoses);
            if let Some(s) = opened.source {
                sources.push(Box::new(s));
            }
        }
        NvmlLibrary::Off => diagnoses.push(Diagnosis::unusable(
            SourceKind::Nvml,
            "NVML",
            "disabled by configuration (nvml.library = \"off\")",
            None,
        )),
    }
    let measured = |component| {
        sources.iter().any(|s| {
            s.kind().is_measured() && s.channels().iter().any(|c| c.component == Some(component))
        })
    };
    let scope = estimate::EstimateScope {
        cpu: !measured(Component::Cpu),
        dram: !measured(Component::Dram),
    };
    match config.estimate.mode {
        EstimateMode::Fallback if scope.cpu || scope.dram => {
            let opened = estimate::Estimate::open(&config.estimate, &config.procfs_root, scope);
            diagnoses.extend(opened.diagnoses);
            if let Some(s) = opened.source {
                sources.push(Box::new(s));
            }
        }
        EstimateMode::Fallback => {}
        EstimateMode::Off if scope.cpu || scope.dram => diagnoses.push(Diagnosis::unusable(
            SourceKind::Estimate,
            "estimate",
            format!(
                "disabled by configuration (estimate.mode = \"off\"): {} not counted",
                match (scope.cpu, scope.dram) {
                    (true, true) => "CPU and DRAM are",
                    (true, false) => "CPU is",
                    _ => "DRAM is",
                }
            ),
            Some("set estimate.mode = \"fallback\" to estimate what is not measured".into()),
        )),
        EstimateMode::Off => {}
    }
    OpenedSources { sources, diagnoses }
}
