//! `[estimate]`: the model-based estimate for components that nothing measures.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::ConfigProblem;

/// CPU power at zero utilisation as a fraction of TDP: the zero-load point of the
/// built-in curve, 0.12 (Teads / Boavizta profile, 2021; agent/data/estimate.toml). A test
/// of the estimate keeps the two equal.
pub const DEFAULT_CPU_IDLE_FRACTION: f64 = 0.12;

/// DRAM power per GB (10^9 bytes) installed, on top of the data file's power per module:
/// 0.065 W/GB (agent/data/estimate.toml). A test of the estimate keeps the two equal.
pub const DEFAULT_DRAM_WATTS_PER_GB: f64 = 0.065;

/// Default EDAC memory-controller directory (memory modules, for the DRAM estimate).
pub const DEFAULT_EDAC_ROOT: &str = "/sys/devices/system/edac/mc";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EstimateConfig {
    pub mode: EstimateMode,
    /// Thermal design power of one CPU socket in watts; overrides the built-in table.
    pub cpu_tdp_watts: Option<f64>,
    /// CPU power at zero utilisation as a fraction of TDP: the first point of the
    /// built-in curve (agent/data/estimate.toml).
    pub cpu_idle_fraction: f64,
    /// DRAM power per gigabyte (10^9 bytes) of installed memory, in watts, on top of the
    /// data file's power per module.
    pub dram_watts_per_gb: f64,
    /// The EDAC driver's memory-controller directory, where the installed modules are
    /// listed without root; a missing directory makes the estimate infer them.
    pub edac_root: PathBuf,
}

/// When the estimate runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EstimateMode {
    /// Estimate each of CPU and DRAM that no source measures (the default).
    Fallback,
    /// Never estimate: unmeasured components are absent.
    Off,
}

impl Default for EstimateConfig {
    fn default() -> Self {
        EstimateConfig {
            mode: EstimateMode::Fallback,
            cpu_tdp_watts: None,
            cpu_idle_fraction: DEFAULT_CPU_IDLE_FRACTION,
            dram_watts_per_gb: DEFAULT_DRAM_WATTS_PER_GB,
            edac_root: PathBuf::from(DEFAULT_EDAC_ROOT),
        }
    }
}

impl EstimateConfig {
    pub(super) fn check(&self, problems: &mut Vec<ConfigProblem>) {
        if let Some(tdp) = self.cpu_tdp_watts {
            if !(tdp.is_finite() && tdp > 0.0 && tdp <= 1000.0) {
                problems.push(ConfigProblem::new(
                    "estimate.cpu_tdp_watts",
                    format!("{tdp} is not allowed: a power per socket above 0 and at most 1000 W"),
                ));
            }
        }
        let idle = self.cpu_idle_fraction;
        if !(idle.is_finite() && (0.0..1.0).contains(&idle)) {
            problems.push(ConfigProblem::new(
                "estimate.cpu_idle_fraction",
                format!("{idle} is not allowed: a fraction from 0 (included) to 1 (excluded)"),
            ));
        }
        let dram = self.dram_watts_per_gb;
        if !(dram.is_finite() && (0.0..=5.0).contains(&dram)) {
            problems.push(ConfigProblem::new(
                "estimate.dram_watts_per_gb",
                format!("{dram} is not allowed: watts per GB from 0 to 5"),
            ));
        }
    }
}
