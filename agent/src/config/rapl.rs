//! `[rapl]`: RAPL energy counters through Linux powercap sysfs.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::ConfigProblem;

/// Default powercap sysfs root.
pub const DEFAULT_POWERCAP_ROOT: &str = "/sys/class/powercap";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaplConfig {
    pub enabled: bool,
    /// Root of the powercap tree.
    pub root: PathBuf,
}

impl Default for RaplConfig {
    fn default() -> Self {
        RaplConfig {
            enabled: true,
            root: PathBuf::from(DEFAULT_POWERCAP_ROOT),
        }
    }
}

impl RaplConfig {
    pub(super) fn check(&self, problems: &mut Vec<ConfigProblem>) {
        if self.enabled && self.root.as_os_str().is_empty() {
            problems.push(ConfigProblem::new(
                "rapl.root",
                format!("empty path: give the powercap root (default {DEFAULT_POWERCAP_ROOT})"),
            ));
        }
    }
}
