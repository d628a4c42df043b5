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

use std::path::PathBuf;
use std::time::Duration;

use empreinte_shared::{MilliWatts, SourceKind};
use nvml_wrapper::Nvml;
use nvml_wrapper::enums::device::UsedGpuMemory;
use nvml_wrapper::error::NvmlError;

use super::{Channel, ChannelEnergy, EnergySource, GpuActivity, GpuProcess, GpuSample, PollError};
use crate::clock::SampleTime;

mod gpu;
mod open;

use gpu::Gpu;

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

/// Whether an error means the handles are dead and NVML must be initialised again.
fn needs_reinit(e: &NvmlError) -> bool {
    matches!(
        e,
        NvmlError::GpuLost | NvmlError::Uninitialized | NvmlError::DriverNotLoaded
    )
}

impl NvmlSource {
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
            lost |= poll_gpu(&self.nvml, gpu, channel, at, out, &mut failures);
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

    fn unaccounted_time(&self, channel: usize) -> Duration {
        self.gpus
            .get(channel)
            .map_or(Duration::ZERO, |g| g.unaccounted)
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

/// Reads one GPU and appends its interval's energy; returns whether a failure says NVML
/// must be initialised again.
fn poll_gpu(
    nvml: &Nvml,
    gpu: &mut Gpu,
    channel: usize,
    at: SampleTime,
    out: &mut Vec<ChannelEnergy>,
    failures: &mut Vec<String>,
) -> bool {
    let device = match nvml.device_by_index(gpu.index) {
        Ok(d) => d,
        Err(e) => {
            failures.push(format!("GPU {}: {e}", gpu.index));
            return needs_reinit(&e);
        }
    };
    let mut lost = false;
    let power = match device.power_usage() {
        Ok(mw) => Some(MilliWatts(u64::from(mw))),
        Err(e) => {
            lost |= needs_reinit(&e);
            None
        }
    };
    let integrated = gpu.integrated_since_last(power, at);
    if gpu.uses_counter() {
        match device.total_energy_consumption() {
            Ok(mj) => {
                let (energy, correction) = gpu.energy_from_counter(mj, integrated, at);
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
    } else if power.is_some() {
        out.push(ChannelEnergy {
            channel,
            energy: gpu.energy_from_power(integrated, at),
            correction: None,
        });
    } else {
        failures.push(format!("GPU {} power reading failed", gpu.index));
    }
    // A failed power reading keeps the previous one: the next integration spans both
    // intervals, so none is dropped.
    if let Some(p) = power {
        gpu.last_power = Some((at, p));
    }
    lost
}
