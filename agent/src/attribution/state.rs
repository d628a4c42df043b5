//! What the attribution publishes: the per-project split of the last interval and the
//! totals so far, the top processes, and how a process resolves (for `check`).

use std::sync::Arc;

use empreinte_shared::{Component, SourceKind};
use serde::Serialize;

/// A project's energy for one (component, source).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProjectEnergy {
    pub project: Arc<str>,
    pub component: Component,
    pub source: SourceKind,
    /// Energy since the agent started, in µJ: only ever grows.
    pub total_uj: u64,
    /// Energy of the last interval, in µJ.
    pub last_uj: u64,
}

/// The part of a project's energy for one (component, source) that served one model in
/// the last interval (inside the project's own [`ProjectEnergy::last_uj`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ModelEnergy {
    pub project: Arc<str>,
    pub model: Arc<str>,
    pub component: Component,
    pub source: SourceKind,
    pub last_uj: u64,
    /// Split from a process serving several models (by output tokens, else requests).
    pub allocated: bool,
}

/// A process as the debug endpoint shows it.
#[derive(Clone, Debug, Serialize)]
pub struct ProcessShare {
    pub pid: u32,
    pub project: Arc<str>,
    /// Index of the rule that matched, `null` when none did.
    pub rule: Option<usize>,
    /// Why the process landed in its project.
    pub reason: Arc<str>,
    pub cmdline: Arc<str>,
    /// CPU time in the last interval, in clock ticks.
    pub cpu_ticks: u64,
    /// Share of the host's CPU time in the last interval, from 0 to 1.
    pub cpu_share: f64,
    /// GPU SM-utilisation share, per GPU device, where the process ran on a GPU.
    pub gpu_shares: Vec<(String, f64)>,
}

/// How one process resolves to a project.
#[derive(Clone, Debug, Serialize)]
pub struct ProcessResolution {
    pub pid: u32,
    pub project: Arc<str>,
    pub rule: Option<usize>,
    pub reason: Arc<str>,
    pub cmdline: Arc<str>,
    /// False when its environment could not be read (another user's process and no
    /// CAP_SYS_PTRACE): rules on environment variables could not see it.
    pub environ_readable: bool,
}

/// The split of the last interval and the totals so far.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AttributionState {
    pub projects: Vec<ProjectEnergy>,
    /// The parts of the last interval's project energy that served each model.
    pub models: Vec<ModelEnergy>,
    pub top_processes: Vec<ProcessShare>,
    pub processes_seen: usize,
    /// Projects in memory (active within `attribution.project_window`), parked
    /// (dormant, totals kept) and forgotten since the start.
    pub projects_active: usize,
    pub projects_dormant: usize,
    pub projects_forgotten_total: u64,
    /// Tracked processes whose environment could not be read (other users' processes,
    /// without CAP_SYS_PTRACE): rules on environment variables (`EMPREINTE_PROJECT`)
    /// cannot place them, so they fall to the next rules.
    pub unreadable_processes: usize,
    /// Host CPU time of the last interval, in ticks, and how it was explained.
    pub host_ticks: u64,
    pub process_ticks: u64,
    pub unexplained_busy_ticks: u64,
    pub idle_ticks: u64,
    /// Intervals whose attribution failed or read figures that did not add up: their
    /// energy went to the unassigned project whole.
    pub failed_intervals_total: u64,
    /// The energy those intervals gave to the unassigned project, in µJ.
    pub failed_energy_uj_total: u64,
}
