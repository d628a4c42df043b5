//! One sampling interval's energy: what the sampler measured, handed to the attribution.
//!
//! The sampler fills an [`IntervalEnergy`] every cycle (per channel: the component, the
//! source, the device, the energy and the counter corrections applied), and the
//! attribution splits it between projects. Neither knows the other's internals: the
//! sampler keeps its running totals for `/metrics`, the attribution its per-project
//! totals.

use std::sync::Arc;
use std::time::Duration;

use empreinte_shared::{Component, MicroJoules, SourceKind};

use crate::sources::{Channel, Correction, GpuActivity};

/// Counter corrections applied to a channel during one interval (or since the start,
/// when summed).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Corrections {
    /// The counter wrapped past its maximum; the difference was taken across the wrap.
    pub wraps: u64,
    /// The counter restarted from zero (driver reload, CPU hot-plug).
    pub resets: u64,
    /// The counter stepped in a way no power could explain; no energy was taken from it.
    pub glitches: u64,
}

impl Corrections {
    pub fn count(&mut self, c: Correction) {
        match c {
            Correction::Wrap => self.wraps += 1,
            Correction::Reset => self.resets += 1,
            Correction::Glitch => self.glitches += 1,
        }
    }

    pub fn add(&mut self, other: &Corrections) {
        self.wraps += other.wraps;
        self.resets += other.resets;
        self.glitches += other.glitches;
    }
}

/// One channel's energy over the interval.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelInterval {
    /// The host component, or `None` for a raw zone that overlaps others (never split).
    pub component: Option<Component>,
    /// Measured (`rapl`, `nvml`) or estimated.
    pub source: SourceKind,
    /// The `device` label (`package-0`, `gpu0`, `host`).
    pub device: Arc<str>,
    pub energy: MicroJoules,
    pub corrections: Corrections,
}

impl ChannelInterval {
    /// A channel of `channel`'s identity with no energy yet.
    pub fn of(channel: &Channel) -> ChannelInterval {
        ChannelInterval {
            component: channel.component,
            source: channel.source,
            device: Arc::from(channel.device.as_str()),
            energy: MicroJoules::ZERO,
            corrections: Corrections::default(),
        }
    }

    /// A channel of a host component with `energy` (tests and benchmarks).
    pub fn new(
        component: Component,
        source: SourceKind,
        device: &str,
        energy: MicroJoules,
    ) -> ChannelInterval {
        ChannelInterval {
            component: Some(component),
            source,
            device: Arc::from(device),
            energy,
            corrections: Corrections::default(),
        }
    }
}

/// One interval's energy, per channel, as the sampler measured it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IntervalEnergy {
    /// Time since the previous sample; `None` for the first (a baseline, no energy).
    pub duration: Option<Duration>,
    pub channels: Vec<ChannelInterval>,
    /// For GPU channels (by index into `channels`), the processes seen on that GPU.
    pub gpu_activity: Vec<(usize, GpuActivity)>,
}

impl IntervalEnergy {
    /// An interval of these channels, with no GPU activity.
    pub fn new(duration: Option<Duration>, channels: Vec<ChannelInterval>) -> IntervalEnergy {
        IntervalEnergy {
            duration,
            channels,
            gpu_activity: Vec::new(),
        }
    }

    /// Adds the processes seen on the GPU of channel `index`.
    pub fn with_gpu_activity(mut self, index: usize, activity: GpuActivity) -> IntervalEnergy {
        self.gpu_activity.push((index, activity));
        self
    }

    /// The energy of the host's non-overlapping components (raw zones left out), per
    /// (component, source), summed: what the projects must add up to.
    pub fn host_totals(&self) -> Vec<(Component, SourceKind, MicroJoules)> {
        let mut out: Vec<(Component, SourceKind, MicroJoules)> = Vec::new();
        for c in &self.channels {
            let Some(component) = c.component else {
                continue;
            };
            match out
                .iter_mut()
                .find(|(k, s, _)| *k == component && *s == c.source)
            {
                Some(e) => e.2 += c.energy,
                None => out.push((component, c.source, c.energy)),
            }
        }
        out
    }
}
