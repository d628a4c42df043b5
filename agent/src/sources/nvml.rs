//! NVIDIA GPUs through NVML (nvml-wrapper), loaded from a configured library path.
//!
//! Per GPU, the cumulative energy counter (`nvmlDeviceGetTotalEnergyConsumption`, mJ,
//! Volta and newer) is preferred, and checked: over its first [`FIRST_CHECK`], then over
//! every [`RECHECK_EVERY`], its advance is compared with board power
//! (`nvmlDeviceGetPowerUsage`, mW) integrated with the trapezoidal rule. A counter that
//! disagrees by more than [`DRIFT_THRESHOLD`] is not used for that GPU any more: power
//! integration takes over, and the checked window is corrected to the integrated figure
//! (a shortfall is added at once; an excess is held back from the next intervals, since a
//! total never goes backwards). GPUs without a counter use power integration throughout.
//!
//! A counter that goes backwards is a driver reload: counting restarts from the new value.
//! A lost GPU or a reloaded driver (GPU_IS_LOST, UNINITIALIZED, DRIVER_NOT_LOADED) makes
//! the source initialise NVML again and find its GPUs by UUID, with a backoff from
//! [`REINIT_BACKOFF_MIN`] to [`REINIT_BACKOFF_MAX`] in sample time; the counter's baseline
//! is kept, so an outage without a reload loses nothing. Time that neither the counter nor
//! the power readings cover is counted ([`NvmlSource::unaccounted`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use empreinte_shared::{Component, MicroJoules, MilliJoules, MilliWatts, SourceKind, Watts};
use nvml_wrapper::Nvml;
use nvml_wrapper::enums::device::UsedGpuMemory;
use nvml_wrapper::error::NvmlError;

use super::{
    Channel, ChannelEnergy, Correction, Diagnosis, EnergySource, GpuActivity, GpuIdentity,
    GpuProcess, GpuSample, Opened, PollError,
};
use crate::clock::SampleTime;
use crate::counter::{Ceiling, CounterStep, CumulativeCounter, Rollover};

/// The power ceiling of one GPU board for its energy counter, in watts: above any board
/// sold today (H100 SXM 700 W, B200 1,000 W, GB200 superchip 2,700 W for two GPUs and a
/// CPU), so only a step no board can draw is a glitch ([`crate::counter`]).
pub const DEFAULT_GPU_CEILING_WATTS: u64 = 2_000;

/// How long the energy counter is compared with integrated power before it is used.
pub const FIRST_CHECK: Duration = Duration::from_secs(5);
/// How often, while the counter is used, it is compared again (over that whole period).
pub const RECHECK_EVERY: Duration = Duration::from_secs(300);
/// Relative disagreement between the counter and integrated power beyond which the
/// counter is not trusted. Power integration under-measures short bursts on A100/H100
/// (only part of the time is sampled, Yang et al., SC24), so honest counters can read a
/// few percent above it; zeus#181 reported a counter 43 % below integrated power.
pub const DRIFT_THRESHOLD: f64 = 0.25;
/// Integrated energy a check needs before it can conclude (an idle GPU draws tens of
/// watts, so a few seconds suffice).
pub const MIN_CHECK_JOULES: f64 = 20.0;
/// Backoff between attempts to initialise NVML again after a GPU was lost.
pub const REINIT_BACKOFF_MIN: Duration = Duration::from_secs(1);
pub const REINIT_BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Longest interval across a counter reset that power readings are trusted to cover.
const MAX_INTEGRATION_GAP: Duration = Duration::from_secs(5);

/// How a GPU's energy is obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GpuMethod {
    /// The cumulative energy counter.
    EnergyCounter,
    /// Power readings integrated over time.
    PowerIntegration,
}

/// Where the cross-check of a GPU's energy counter stands.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum CounterCheck {
    /// No counter on this GPU, or no power reading to check it against.
    NotApplicable,
    /// Being compared with integrated power for the first time; the counter is used.
    Checking,
    /// Agreed with integrated power within the threshold; the counter is used.
    Trusted {
        /// The last disagreement, relative (0.02 = 2 %).
        disagreement: f64,
    },
    /// Disagreed beyond the threshold: power integration is used for this GPU.
    Rejected { counter_j: f64, integrated_j: f64 },
}

/// The MIG state, persistence mode and driver of a GPU, for `check` and the debug page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpuFacts {
    pub mig: Option<bool>,
    pub persistence: Option<bool>,
    pub driver: Option<String>,
}

/// The rule that splits a MIG GPU's energy, in plain words (docs/methodology.md).
pub const MIG_SPLIT_RULE: &str = "MIG enabled: NVML gives no power per instance and no utilisation samples; the GPU's energy is split between its processes by the GPU memory each uses (NVML reports it per process, with its instance), so an instance receives the sum of its processes' shares; without memory figures, equally";

#[derive(Default)]
struct CheckWindow {
    elapsed: Duration,
    counter_uj: u64,
    integrated_uj: u64,
}

struct Gpu {
    index: u32,
    uuid: String,
    method: GpuMethod,
    check: CounterCheck,
    window: CheckWindow,
    counter: CumulativeCounter,
    /// Last power reading and when it was taken.
    last_power: Option<(SampleTime, MilliWatts)>,
    /// When the last good reading (counter or power) was taken.
    last_good: Option<SampleTime>,
    /// Driver timestamp (µs) of the newest utilisation sample seen.
    last_sample_us: u64,
    unaccounted: Duration,
    /// Energy counted in excess by a rejected counter, held back from the next intervals.
    debt_uj: u64,
}

/// The NVML source.
pub struct NvmlSource {
    library: PathBuf,
    nvml: Nvml,
    channels: Vec<Channel>,
    gpus: Vec<Gpu>,
    /// Set when a failure says NVML must be initialised again.
    lost_since: Option<SampleTime>,
    next_reinit: Option<SampleTime>,
    backoff: Duration,
    reinits: u64,
}

const FIX_LIBRARY: &str = "install the NVIDIA driver (it provides libnvidia-ml.so.1), or set --nvml-library PATH / nvml.library, or \"off\" on hosts without NVIDIA GPUs";

fn init(library: &Path) -> Result<Nvml, NvmlError> {
    Nvml::builder().lib_path(library.as_os_str()).init()
}

/// Whether an error means the handles are dead and NVML must be initialised again.
fn needs_reinit(e: &NvmlError) -> bool {
    matches!(
        e,
        NvmlError::GpuLost | NvmlError::Uninitialized | NvmlError::DriverNotLoaded
    )
}

fn on_off(b: Option<bool>) -> &'static str {
    match b {
        Some(true) => "on",
        Some(false) => "off",
        None => "unknown",
    }
}

impl NvmlSource {
    pub fn open(library: &Path) -> Opened<NvmlSource> {
        let subject = format!("NVML library {}", library.display());
        let nvml = match init(library) {
            Ok(n) => n,
            Err(e) => {
                let problem = match &e {
                    NvmlError::LibloadingError(_) => {
                        format!(
                            "cannot load {}: {e} (no NVIDIA driver on this host?)",
                            library.display()
                        )
                    }
                    NvmlError::DriverNotLoaded => {
                        "the NVIDIA kernel driver is not loaded".to_string()
                    }
                    NvmlError::NoPermission => {
                        "no permission to talk to the NVIDIA driver".to_string()
                    }
                    other => format!("NVML initialisation failed: {other}"),
                };
                return Opened {
                    source: None,
                    diagnoses: vec![Diagnosis::unusable(
                        SourceKind::Nvml,
                        subject,
                        problem,
                        Some(FIX_LIBRARY.into()),
                    )],
                };
            }
        };
        let count = match nvml.device_count() {
            Ok(c) => c,
            Err(e) => {
                return Opened {
                    source: None,
                    diagnoses: vec![Diagnosis::unusable(
                        SourceKind::Nvml,
                        subject,
                        format!("cannot count GPUs: {e}"),
                        None,
                    )],
                };
            }
        };
        if count == 0 {
            return Opened {
                source: None,
                diagnoses: vec![Diagnosis::unusable(
                    SourceKind::Nvml,
                    subject,
                    "NVML loaded, but this host has no NVIDIA GPU",
                    Some("nothing to fix on a host without GPUs; set nvml.library = \"off\" to skip NVML".into()),
                )],
            };
        }
        let driver = nvml.sys_driver_version().ok();
        let mut channels = Vec::new();
        let mut gpus = Vec::new();
        let mut diagnoses = Vec::new();
        for index in 0..count {
            let device = match nvml.device_by_index(index) {
                Ok(d) => d,
                Err(e) => {
                    diagnoses.push(Diagnosis::unusable(
                        SourceKind::Nvml,
                        format!("GPU {index}"),
                        format!("cannot open: {e}"),
                        None,
                    ));
                    continue;
                }
            };
            let model = device.name().unwrap_or_else(|_| "unknown".to_string());
            let uuid = device.uuid().unwrap_or_else(|_| format!("unknown-{index}"));
            let subject = format!("GPU {index} {model} ({uuid})");
            let limit = device
                .power_management_limit()
                .map(|mw| format!(", power limit {} W", mw / 1000))
                .unwrap_or_default();
            let facts = GpuFacts {
                mig: device.mig_mode().ok().map(|m| m.current == 1),
                persistence: device.is_in_persistent_mode().ok(),
                driver: driver.clone(),
            };
            let power_ok = device.power_usage().is_ok();
            let method = match (device.total_energy_consumption(), power_ok) {
                (Ok(_), _) => GpuMethod::EnergyCounter,
                (Err(NvmlError::NotSupported), true) => GpuMethod::PowerIntegration,
                (Err(e1), false) => {
                    let e2 = device
                        .power_usage()
                        .err()
                        .map(|e| e.to_string())
                        .unwrap_or_default();
                    diagnoses.push(Diagnosis::unusable(
                        SourceKind::Nvml,
                        subject,
                        format!("neither the energy counter ({e1}) nor the power reading ({e2}) can be read"),
                        Some("check the driver with `nvidia-smi -q -d POWER`".into()),
                    ));
                    continue;
                }
                (Err(e), true) => {
                    diagnoses.push(Diagnosis::unusable(
                        SourceKind::Nvml,
                        subject,
                        format!("the energy counter fails: {e}"),
                        Some("check the driver with `nvidia-smi -q -d POWER`".into()),
                    ));
                    continue;
                }
            };
            let check = match (method, power_ok) {
                (GpuMethod::EnergyCounter, true) => CounterCheck::Checking,
                _ => CounterCheck::NotApplicable,
            };
            let facts_text = format!(
                "; driver {}, persistence mode {}, MIG {}",
                facts.driver.as_deref().unwrap_or("unknown"),
                on_off(facts.persistence),
                on_off(facts.mig),
            );
            let measures = match (method, check) {
                (GpuMethod::EnergyCounter, CounterCheck::Checking) => format!(
                    "gpu energy from the cumulative energy counter (mJ), once it agrees within {:.0} % with integrated power over its first {} s (checked again every {} s){limit}{facts_text}",
                    DRIFT_THRESHOLD * 100.0,
                    FIRST_CHECK.as_secs(),
                    RECHECK_EVERY.as_secs()
                ),
                (GpuMethod::EnergyCounter, _) => format!(
                    "gpu energy from the cumulative energy counter (mJ), not cross-checked: no power reading{limit}{facts_text}"
                ),
                (GpuMethod::PowerIntegration, _) => format!(
                    "gpu energy from power readings integrated each interval (no energy counter on this GPU: pre-Volta){limit}{facts_text}"
                ),
            };
            let mut diagnosis = Diagnosis::usable(SourceKind::Nvml, subject, measures);
            let mut problems = Vec::new();
            if facts.mig == Some(true) {
                problems.push(MIG_SPLIT_RULE.to_string());
            }
            if facts.persistence == Some(false) {
                problems.push("persistence mode is off: the driver may unload between jobs, which restarts the energy counter (`nvidia-smi -pm 1` keeps it loaded)".to_string());
            }
            if !problems.is_empty() {
                diagnosis.problem = Some(problems.join("; "));
            }
            diagnoses.push(diagnosis);
            channels.push(Channel {
                component: Some(Component::Gpu),
                source: SourceKind::Nvml,
                device: format!("gpu{index}"),
                zone: None,
                gpu: Some(GpuIdentity {
                    index,
                    uuid: uuid.clone(),
                    model,
                    mig: facts.mig,
                    persistence: facts.persistence,
                    driver: facts.driver.clone(),
                    split: (facts.mig == Some(true)).then(|| MIG_SPLIT_RULE.to_string()),
                }),
            });
            gpus.push(Gpu {
                index,
                uuid,
                method,
                check,
                window: CheckWindow::default(),
                counter: CumulativeCounter::new(
                    Rollover::Resets,
                    Ceiling::watts_in_millijoules(DEFAULT_GPU_CEILING_WATTS),
                ),
                last_power: None,
                last_good: None,
                last_sample_us: 0,
                unaccounted: Duration::ZERO,
                debt_uj: 0,
            });
        }
        let source = (!gpus.is_empty()).then_some(NvmlSource {
            library: library.to_path_buf(),
            nvml,
            channels,
            gpus,
            lost_since: None,
            next_reinit: None,
            backoff: REINIT_BACKOFF_MIN,
            reinits: 0,
        });
        Opened { source, diagnoses }
    }

    /// How each GPU's energy is obtained now, in channel order (a rejected counter reads
    /// as power integration).
    pub fn methods(&self) -> Vec<GpuMethod> {
        self.gpus
            .iter()
            .map(|g| match g.check {
                CounterCheck::Rejected { .. } => GpuMethod::PowerIntegration,
                _ => g.method,
            })
            .collect()
    }

    /// Where each GPU's counter cross-check stands, in channel order.
    pub fn counter_checks(&self) -> Vec<CounterCheck> {
        self.gpus.iter().map(|g| g.check).collect()
    }

    /// Time per GPU (channel order) that neither the counter nor the power readings
    /// could account for (a driver reload after a long outage).
    pub fn unaccounted(&self) -> Vec<Duration> {
        self.gpus.iter().map(|g| g.unaccounted).collect()
    }

    /// How many times NVML was initialised again after a loss.
    pub fn reinitialisations(&self) -> u64 {
        self.reinits
    }

    /// Initialises NVML again and finds each GPU by UUID. On failure, backs off.
    fn try_reinit(&mut self, at: SampleTime) -> Result<(), String> {
        let result = init(&self.library)
            .map_err(|e| e.to_string())
            .and_then(|nvml| {
                let count = nvml.device_count().map_err(|e| e.to_string())?;
                let mut found = Vec::new();
                for i in 0..count {
                    if let Ok(uuid) = nvml.device_by_index(i).and_then(|d| d.uuid()) {
                        found.push((uuid, i));
                    }
                }
                Ok((nvml, found))
            });
        match result {
            Ok((nvml, found)) => {
                for g in &mut self.gpus {
                    if let Some((_, i)) = found.iter().find(|(u, _)| *u == g.uuid) {
                        g.index = *i;
                    }
                }
                // The new handle replaces the old one; dropping the old shuts it down.
                self.nvml = nvml;
                self.next_reinit = Some(SampleTime::from_monotonic(
                    at.since_start().saturating_add(self.backoff),
                ));
                self.backoff = (self.backoff * 2).min(REINIT_BACKOFF_MAX);
                self.reinits = self.reinits.saturating_add(1);
                tracing::info!(
                    reinits = self.reinits,
                    "NVML initialised again; GPUs found by UUID"
                );
                Ok(())
            }
            Err(e) => {
                self.next_reinit = Some(SampleTime::from_monotonic(
                    at.since_start().saturating_add(self.backoff),
                ));
                self.backoff = (self.backoff * 2).min(REINIT_BACKOFF_MAX);
                Err(format!("NVML cannot be initialised again yet: {e}"))
            }
        }
    }

    fn reinit_due(&self, at: SampleTime) -> bool {
        self.lost_since.is_some()
            && self
                .next_reinit
                .is_none_or(|t| at.since_start() >= t.since_start())
    }
}

/// Energy of a linear power ramp from `a` to `b` over `dt` (the trapezoidal rule).
fn trapezoid(a: MilliWatts, b: MilliWatts, dt: Duration) -> MicroJoules {
    MicroJoules::from_power(Watts((Watts::from(a).0 + Watts::from(b).0) / 2.0), dt)
}

impl Gpu {
    /// Folds one interval into the cross-check window and concludes when it is long
    /// enough. On a rejection, returns the energy to add now (a counter that read low);
    /// an excess goes to `debt_uj`.
    #[must_use]
    fn cross_check(&mut self, counter: MicroJoules, integrated: MicroJoules, dt: Duration) -> u64 {
        self.window.elapsed += dt;
        self.window.counter_uj = self.window.counter_uj.saturating_add(counter.0);
        self.window.integrated_uj = self.window.integrated_uj.saturating_add(integrated.0);
        let needed = match self.check {
            CounterCheck::Checking => FIRST_CHECK,
            CounterCheck::Trusted { .. } => RECHECK_EVERY,
            _ => return 0,
        };
        let integrated_j = self.window.integrated_uj as f64 / 1e6;
        if self.window.elapsed < needed || integrated_j < MIN_CHECK_JOULES {
            return 0;
        }
        let counter_j = self.window.counter_uj as f64 / 1e6;
        let disagreement = (counter_j - integrated_j).abs() / integrated_j;
        let (counted, truth) = (self.window.counter_uj, self.window.integrated_uj);
        self.window = CheckWindow::default();
        if disagreement <= DRIFT_THRESHOLD {
            self.check = CounterCheck::Trusted { disagreement };
            0
        } else {
            tracing::warn!(
                gpu = self.index,
                uuid = %self.uuid,
                counter_j,
                integrated_j,
                "the GPU's energy counter disagrees with its integrated power beyond the threshold; power integration is used for this GPU from now on"
            );
            self.check = CounterCheck::Rejected {
                counter_j,
                integrated_j,
            };
            self.debt_uj = self.debt_uj.saturating_add(counted.saturating_sub(truth));
            truth.saturating_sub(counted)
        }
    }
}

impl EnergySource for NvmlSource {
    fn kind(&self) -> SourceKind {
        SourceKind::Nvml
    }

    fn channels(&self) -> &[Channel] {
        &self.channels
    }

    fn poll(&mut self, at: SampleTime, out: &mut Vec<ChannelEnergy>) -> Result<(), PollError> {
        let mut failures = Vec::new();
        // After a loss, NVML is initialised again when the backoff allows; the GPUs are
        // polled either way, so a GPU that comes back on its old handle resumes at once.
        if self.reinit_due(at) {
            if let Err(e) = self.try_reinit(at) {
                failures.push(e);
            }
        }
        let mut lost = false;
        for (channel, gpu) in self.gpus.iter_mut().enumerate() {
            let device = match self.nvml.device_by_index(gpu.index) {
                Ok(d) => d,
                Err(e) => {
                    lost |= needs_reinit(&e);
                    failures.push(format!("GPU {}: {e}", gpu.index));
                    continue;
                }
            };
            let power = match device.power_usage() {
                Ok(mw) => Some(MilliWatts(u64::from(mw))),
                Err(e) => {
                    lost |= needs_reinit(&e);
                    None
                }
            };
            let integrated = match (gpu.last_power, power) {
                (Some((t0, p0)), Some(p1)) => Some(trapezoid(p0, p1, at.since(t0))),
                _ => None,
            };
            let use_counter = gpu.method == GpuMethod::EnergyCounter
                && !matches!(gpu.check, CounterCheck::Rejected { .. });
            if use_counter {
                match device.total_energy_consumption() {
                    Ok(mj) => {
                        let step = gpu.counter.update(mj, at).unwrap_or(CounterStep::Baseline);
                        let (energy, correction) = match step {
                            CounterStep::Baseline => (MicroJoules::ZERO, None),
                            CounterStep::Advanced { delta } | CounterStep::Wrapped { delta } => {
                                let counted = MicroJoules::from(MilliJoules(delta));
                                let add = match integrated {
                                    Some(i) => {
                                        let dt = gpu
                                            .last_power
                                            .map_or(Duration::ZERO, |(t0, _)| at.since(t0));
                                        gpu.cross_check(counted, i, dt)
                                    }
                                    None => 0,
                                };
                                (MicroJoules(counted.0.saturating_add(add)), None)
                            }
                            // Driver reload: the counter restarted. A short interval is
                            // covered by the power readings around it; after a longer
                            // outage the counter's new value (energy since the reload) is
                            // what is known, and the rest of the gap is unaccounted.
                            CounterStep::Reset { since_restart } => {
                                gpu.window = CheckWindow::default();
                                if gpu.check != CounterCheck::NotApplicable {
                                    gpu.check = CounterCheck::Checking;
                                }
                                let gap = gpu.last_good.map_or(Duration::ZERO, |t| at.since(t));
                                let energy = match integrated {
                                    Some(i) if gap <= MAX_INTEGRATION_GAP => i,
                                    _ => {
                                        gpu.unaccounted += gap;
                                        MicroJoules::from(MilliJoules(since_restart))
                                    }
                                };
                                (energy, Some(Correction::Reset))
                            }
                            // A step no board can draw: nothing taken from it.
                            CounterStep::Glitch => (MicroJoules::ZERO, Some(Correction::Glitch)),
                        };
                        gpu.last_good = Some(at);
                        out.push(ChannelEnergy {
                            channel,
                            energy,
                            correction,
                        });
                    }
                    // The baseline is kept: the next good read covers this interval.
                    Err(e) => {
                        lost |= needs_reinit(&e);
                        failures.push(format!("GPU {} energy counter: {e}", gpu.index));
                    }
                }
            } else {
                match power {
                    Some(_) => {
                        gpu.last_good = Some(at);
                        let raw = integrated.unwrap_or_default().0;
                        let repaid = raw.min(gpu.debt_uj);
                        gpu.debt_uj -= repaid;
                        out.push(ChannelEnergy {
                            channel,
                            energy: MicroJoules(raw - repaid),
                            correction: None,
                        });
                    }
                    None => failures.push(format!("GPU {} power reading failed", gpu.index)),
                }
            }
            // A failed power reading keeps the previous one: the next integration spans
            // both intervals, so none is dropped.
            if let Some(p) = power {
                gpu.last_power = Some((at, p));
            }
        }
        if lost && self.lost_since.is_none() {
            tracing::warn!(
                "NVML reports a lost GPU or an unloaded driver; it will be initialised again"
            );
            self.lost_since = Some(at);
            self.next_reinit = Some(SampleTime::from_monotonic(
                at.since_start().saturating_add(self.backoff),
            ));
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(PollError::Retry(failures.join("; ")))
        }
    }

    fn gpu_activity(&mut self, channel: usize) -> Option<GpuActivity> {
        let gpu = self.gpus.get_mut(channel)?;
        let device = self.nvml.device_by_index(gpu.index).ok()?;
        let processes = device
            .running_compute_processes()
            .unwrap_or_default()
            .into_iter()
            .map(|p| GpuProcess {
                pid: p.pid,
                used_gpu_memory: match p.used_gpu_memory {
                    UsedGpuMemory::Used(b) => Some(b),
                    UsedGpuMemory::Unavailable => None,
                },
            })
            .collect();
        let samples: Vec<GpuSample> = match device.process_utilization_stats(gpu.last_sample_us) {
            Ok(s) => s
                .into_iter()
                .filter(|s| s.timestamp > gpu.last_sample_us)
                .map(|s| GpuSample {
                    pid: s.pid,
                    timestamp_us: s.timestamp,
                    sm_util: s.sm_util,
                })
                .collect(),
            // NotFound: no sample since the last one; NotSupported (MIG): none at all.
            Err(_) => Vec::new(),
        };
        if let Some(newest) = samples.iter().map(|s| s.timestamp_us).max() {
            gpu.last_sample_us = newest;
        }
        Some(GpuActivity { processes, samples })
    }
}
