//! The label values every energy figure carries: which part of the host it is, and
//! where the figure came from (measured or estimated).

use std::fmt;

use serde::{Deserialize, Serialize};

/// A non-overlapping part of a host. Summing over components gives the host's total.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Component {
    /// CPU packages (cores, caches, uncore, integrated memory controller).
    Cpu,
    /// Memory modules, outside the package.
    Dram,
    /// Discrete GPU boards (board power, GPU memory included).
    Gpu,
}

impl Component {
    pub const ALL: [Component; 3] = [Component::Cpu, Component::Dram, Component::Gpu];

    pub fn as_str(self) -> &'static str {
        match self {
            Component::Cpu => "cpu",
            Component::Dram => "dram",
            Component::Gpu => "gpu",
        }
    }
}

/// Where a figure came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// Intel/AMD RAPL counters read through Linux powercap: measured.
    Rapl,
    /// NVIDIA Management Library: measured.
    Nvml,
    /// A model of power from utilisation and hardware characteristics: estimated.
    Estimate,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Rapl => "rapl",
            SourceKind::Nvml => "nvml",
            SourceKind::Estimate => "estimate",
        }
    }

    /// True for figures read from hardware counters, false for modelled ones.
    pub fn is_measured(self) -> bool {
        !matches!(self, SourceKind::Estimate)
    }
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
