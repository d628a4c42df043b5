//! NVIDIA GPUs through NVML (nvml-wrapper), loaded from a configured library path.
//!
//! Per GPU, the cumulative energy counter (`nvmlDeviceGetTotalEnergyConsumption`, mJ,
//! Volta and newer) is preferred. Where it is not supported, board power
//! (`nvmlDeviceGetPowerUsage`, mW) is integrated over every interval with the
//! trapezoidal rule. A counter that goes backwards is a driver reload: counting restarts
//! from the new value, and that one interval's energy is taken from the power readings.

use std::path::Path;

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

/// How a GPU's energy is obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GpuMethod {
    /// The cumulative energy counter.
    EnergyCounter,
    /// Power readings integrated over time.
    PowerIntegration,
}

struct Gpu {
    index: u32,
    method: GpuMethod,
    counter: CumulativeCounter,
    /// Last power reading and when it was taken.
    last_power: Option<(SampleTime, MilliWatts)>,
    /// Driver timestamp (µs) of the newest utilisation sample seen.
    last_sample_us: u64,
}

/// The NVML source.
pub struct NvmlSource {
    nvml: Nvml,
    channels: Vec<Channel>,
    gpus: Vec<Gpu>,
}

const FIX_LIBRARY: &str = "install the NVIDIA driver (it provides libnvidia-ml.so.1), or set --nvml-library PATH / nvml.library, or \"off\" on hosts without NVIDIA GPUs";

impl NvmlSource {
    pub fn open(library: &Path) -> Opened<NvmlSource> {
        let subject = format!("NVML library {}", library.display());
        let nvml = match Nvml::builder().lib_path(library.as_os_str()).init() {
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
            let method = match (device.total_energy_consumption(), device.power_usage()) {
                (Ok(_), _) => GpuMethod::EnergyCounter,
                (Err(NvmlError::NotSupported), Ok(_)) => GpuMethod::PowerIntegration,
                (Err(e1), Err(e2)) => {
                    diagnoses.push(Diagnosis::unusable(
                        SourceKind::Nvml,
                        subject,
                        format!("neither the energy counter ({e1}) nor the power reading ({e2}) can be read"),
                        Some("check the driver with `nvidia-smi -q -d POWER`".into()),
                    ));
                    continue;
                }
                (Err(e), Ok(_)) => {
                    diagnoses.push(Diagnosis::unusable(
                        SourceKind::Nvml,
                        subject,
                        format!("the energy counter fails: {e}"),
                        Some("check the driver with `nvidia-smi -q -d POWER`".into()),
                    ));
                    continue;
                }
            };
            let measures = match method {
                GpuMethod::EnergyCounter => {
                    format!("gpu energy from the cumulative energy counter (mJ){limit}")
                }
                GpuMethod::PowerIntegration => format!(
                    "gpu energy from power readings integrated each interval (no energy counter on this GPU: pre-Volta){limit}"
                ),
            };
            diagnoses.push(Diagnosis::usable(SourceKind::Nvml, subject, measures));
            channels.push(Channel {
                component: Some(Component::Gpu),
                source: SourceKind::Nvml,
                device: format!("gpu{index}"),
                zone: None,
                gpu: Some(GpuIdentity { index, uuid, model }),
            });
            gpus.push(Gpu {
                index,
                method,
                counter: CumulativeCounter::new(
                    Rollover::Resets,
                    Ceiling::watts_in_millijoules(DEFAULT_GPU_CEILING_WATTS),
                ),
                last_power: None,
                last_sample_us: 0,
            });
        }
        let source = (!gpus.is_empty()).then_some(NvmlSource {
            nvml,
            channels,
            gpus,
        });
        Opened { source, diagnoses }
    }

    /// How each GPU's energy is obtained, in channel order.
    pub fn methods(&self) -> Vec<GpuMethod> {
        self.gpus.iter().map(|g| g.method).collect()
    }
}

/// Energy of a linear power ramp from `a` to `b` over `dt` (the trapezoidal rule).
fn trapezoid(a: MilliWatts, b: MilliWatts, dt: std::time::Duration) -> MicroJoules {
    MicroJoules::from_power(Watts((Watts::from(a).0 + Watts::from(b).0) / 2.0), dt)
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
        for (channel, gpu) in self.gpus.iter_mut().enumerate() {
            let device = match self.nvml.device_by_index(gpu.index) {
                Ok(d) => d,
                Err(e) => {
                    failures.push(format!("GPU {}: {e}", gpu.index));
                    continue;
                }
            };
            let power = device
                .power_usage()
                .ok()
                .map(|mw| MilliWatts(u64::from(mw)));
            let integrated = match (gpu.last_power, power) {
                (Some((t0, p0)), Some(p1)) => Some(trapezoid(p0, p1, at.since(t0))),
                _ => None,
            };
            match gpu.method {
                GpuMethod::EnergyCounter => match device.total_energy_consumption() {
                    Ok(mj) => {
                        let step = gpu.counter.update(mj, at).unwrap_or(CounterStep::Baseline);
                        let (energy, correction) = match step {
                            CounterStep::Baseline => (MicroJoules::ZERO, None),
                            CounterStep::Advanced { delta } | CounterStep::Wrapped { delta } => {
                                (MicroJoules::from(MilliJoules(delta)), None)
                            }
                            // Driver reload: the counter restarted. This interval's energy
                            // comes from the power readings; counting goes on from the
                            // new value.
                            CounterStep::Reset { .. } => {
                                (integrated.unwrap_or_default(), Some(Correction::Reset))
                            }
                            // A step no board can draw: nothing taken from it.
                            CounterStep::Glitch => (MicroJoules::ZERO, Some(Correction::Glitch)),
                        };
                        out.push(ChannelEnergy {
                            channel,
                            energy,
                            correction,
                        });
                    }
                    // The baseline is kept: the next good read covers this interval.
                    Err(e) => failures.push(format!("GPU {} energy counter: {e}", gpu.index)),
                },
                GpuMethod::PowerIntegration => match power {
                    Some(_) => out.push(ChannelEnergy {
                        channel,
                        energy: integrated.unwrap_or_default(),
                        correction: None,
                    }),
                    None => failures.push(format!("GPU {} power reading failed", gpu.index)),
                },
            }
            // A failed power reading keeps the previous one: the next integration spans
            // both intervals, so none is dropped.
            if let Some(p) = power {
                gpu.last_power = Some((at, p));
            }
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
