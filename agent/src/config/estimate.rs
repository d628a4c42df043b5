//! `[estimate]`: the model-based estimate for components that nothing measures.

use serde::{Deserialize, Serialize};

use super::ConfigProblem;

/// CPU power at zero utilisation as a fraction of its maximum: 0.74 W / 3.5 W per vCPU,
/// Cloud Carbon Footprint's AWS averages (CCF methodology, 2021, from SPECpower results).
pub const DEFAULT_CPU_IDLE_FRACTION: f64 = 0.21;

/// DRAM power per GB of installed memory: 0.392 W/GB, Cloud Carbon Footprint's memory
/// coefficient (CCF methodology, 2021).
pub const DEFAULT_DRAM_WATTS_PER_GB: f64 = 0.392;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EstimateConfig {
    pub mode: EstimateMode,
    /// Thermal design power of one CPU socket in watts; overrides the built-in table.
    pub cpu_tdp_watts: Option<f64>,
    /// CPU power at zero utilisation as a fraction of its maximum.
    pub cpu_idle_fraction: f64,
    /// DRAM power per gigabyte (10^9 bytes) of installed memory, in watts.
    pub dram_watts_per_gb: f64,
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
