//! The attribution of one interval: each component's energy split between projects.
//!
//! The rule, in two sentences: *on the CPU (and DRAM), each process gets the share of
//! the interval's energy that its CPU time is of the host's CPU time (busy and idle);
//! the idle time's share goes to the project `idle` (or, with `idle_policy =
//! "proportional"`, is shared by the active projects), and busy time that no live
//! process explains goes to `unassigned`. On a GPU, the processes share the GPU's energy
//! by their SM utilisation samples (else by GPU memory, else equally); a GPU with no
//! process is `idle`.*
//!
//! Architecture invariant: for every channel and interval, the parts given to projects
//! add up to the channel's energy exactly ([`split_exact`]), so the sum over projects
//! of `empreinte_project_energy_joules_total` equals the host's total.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use empreinte_shared::{Component, MicroJoules, SourceKind};
use serde::Serialize;

use super::cgroup::parse_proc_cgroup;
use super::docker::ContainerCache;
use super::kube::PodCache;
use super::procs::{ProcStat, ProcessSource};
use super::rules::{ProcessFacts, Resolver};
use super::users::UserNames;
use crate::config::attribution::{AttributionConfig, IdlePolicy};
use crate::interval::{ChannelInterval, IntervalEnergy};
use crate::sources::GpuActivity;
use crate::sources::estimate::CpuTimes;
use empreinte_shared::split::split_exact;

use super::projects::{ProjectId, Projects};

/// How many processes the debug endpoint lists.
pub const TOP_PROCESSES: usize = 25;

struct Tracked {
    start_ticks: u64,
    last_ticks: u64,
    project: ProjectId,
    rule: Option<usize>,
    reason: Arc<str>,
    cmdline: Arc<str>,
    seen: u64,
    /// CPU ticks in the last interval.
    delta: u64,
    /// In a pod whose metadata was not known yet: resolved again next cycle.
    provisional: bool,
    /// Its environment could not be read (another user's process).
    environ_unreadable: bool,
}

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

/// How the host's CPU time of an interval was explained.
#[derive(Clone, Copy, Debug, Default)]
struct Ticks {
    host: u64,
    process: u64,
    unexplained: u64,
    idle: u64,
}

struct Resolved {
    project: ProjectId,
    rule: Option<usize>,
    reason: Arc<str>,
    cmdline: Arc<str>,
    provisional: bool,
    environ_unreadable: bool,
}

/// Splits each interval's energy between projects.
pub struct Attributor {
    resolver: Resolver,
    procs: Box<dyn ProcessSource>,
    users: UserNames,
    pods: Option<PodCache>,
    containers: Option<ContainerCache>,
    idle_policy: IdlePolicy,
    show_cmdline: bool,
    tracked: HashMap<u32, Tracked>,
    departed: HashMap<u32, ProjectId>,
    projects: Projects,
    idle: ProjectId,
    unassigned: ProjectId,
    last_host: Option<CpuTimes>,
    cycle: u64,
    scan: Vec<ProcStat>,
    weights: Vec<u64>,
    parts: Vec<MicroJoules>,
    state: AttributionState,
    failed_intervals: u64,
    failed_energy: MicroJoules,
    /// The unreadable processes were logged once (at the first interval that had any).
    warned_unreadable: bool,
}

impl Attributor {
    pub fn new(
        config: &AttributionConfig,
        resolver: Resolver,
        procs: Box<dyn ProcessSource>,
        users: UserNames,
        pods: Option<PodCache>,
    ) -> Attributor {
        let mut a = Attributor {
            resolver,
            procs,
            users,
            pods,
            containers: None,
            idle_policy: config.idle_policy,
            show_cmdline: config.debug_full_cmdline,
            tracked: HashMap::new(),
            departed: HashMap::new(),
            projects: Projects::new(config.project_window, config.max_dormant_projects),
            idle: 0,
            unassigned: 0,
            last_host: None,
            cycle: 0,
            scan: Vec::with_capacity(1024),
            weights: Vec::new(),
            parts: Vec::new(),
            state: AttributionState::default(),
            failed_intervals: 0,
            failed_energy: MicroJoules::ZERO,
            warned_unreadable: false,
        };
        a.idle = a.intern(&config.idle_project);
        a.unassigned = a.intern(&config.unassigned_project);
        a
    }

    /// Reads container names and labels from Docker's state for container rules.
    pub fn with_containers(mut self, containers: Option<ContainerCache>) -> Attributor {
        self.containers = containers;
        self
    }

    fn intern(&mut self, name: &str) -> ProjectId {
        self.projects.intern(name)
    }

    /// Resolves every running process now (for `empreinte agent check`).
    pub fn resolve_all(&mut self) -> Result<Vec<ProcessResolution>, String> {
        if let Some(pods) = &self.pods {
            // `check` is not the sampling path: it may wait for the first pod list.
            pods.wait_first_list(super::kube::REQUEST_TIMEOUT + Duration::from_secs(1));
        }
        self.scan.clear();
        self.procs
            .scan(&mut self.scan)
            .map_err(|e| format!("cannot list processes: {e}"))?;
        let pids: Vec<u32> = self.scan.iter().map(|s| s.pid).collect();
        let mut out = Vec::with_capacity(pids.len());
        for pid in pids {
            if let Some(r) = self.resolve(pid) {
                out.push(ProcessResolution {
                    pid,
                    project: self.projects.name(r.project).clone(),
                    rule: r.rule,
                    reason: r.reason,
                    cmdline: r.cmdline,
                    environ_readable: !r.environ_unreadable,
                });
            }
        }
        Ok(out)
    }

    /// True when some rule reads processes' environment.
    pub fn needs_environ(&self) -> bool {
        self.resolver.needs_environ()
    }

    /// The state after the last interval.
    pub fn state(&self) -> &AttributionState {
        &self.state
    }

    /// Splits the interval's energy of every channel between projects.
    ///
    /// Whatever happens, the parts given to projects add up to the host's energy of the
    /// interval, per component and source: when processes cannot be read, when
    /// `/proc/stat` is missing or garbage, or when the split does not add up (checked
    /// here, on every interval), the interval's energy goes to the unassigned project
    /// whole, the failure is counted ([`AttributionState::failed_intervals_total`]) and
    /// returned.
    pub fn attribute(&mut self, interval: &IntervalEnergy) -> Result<(), String> {
        self.cycle += 1;
        for v in self.projects.totals.values_mut() {
            v.1 = MicroJoules::ZERO;
        }
        let split = self
            .split(interval)
            .and_then(|ticks| self.check_conservation(interval).map(|()| ticks));
        let (ticks, result) = match split {
            Ok(ticks) => (ticks, Ok(())),
            Err(e) => {
                // Take back whatever this interval gave, then give it all to unassigned.
                for v in self.projects.totals.values_mut() {
                    v.0 = MicroJoules(v.0.0.saturating_sub(v.1.0));
                    v.1 = MicroJoules::ZERO;
                }
                for c in &interval.channels {
                    if let Some(component) = c.component {
                        if c.energy > MicroJoules::ZERO {
                            self.add(self.unassigned, component, c.source, c.energy);
                            self.failed_energy = self.failed_energy.saturating_add(c.energy);
                        }
                    }
                }
                self.failed_intervals += 1;
                // The next interval starts from fresh baselines.
                self.last_host = None;
                (Ticks::default(), Err(e))
            }
        };
        // Projects with live processes stay; the others leave after the window.
        for t in self.tracked.values() {
            self.projects.touch(t.project);
        }
        let (idle, unassigned) = (self.idle, self.unassigned);
        self.projects
            .advance(interval.duration.unwrap_or_default(), |id| {
                id == idle || id == unassigned
            });
        self.publish(ticks, interval);
        result
    }

    /// The split proper; the CPU ticks it used.
    fn split(&mut self, interval: &IntervalEnergy) -> Result<Ticks, String> {
        let first = self.last_host.is_none();
        let host_now = self
            .procs
            .host_cpu_times()
            .map_err(|e| format!("cannot read host CPU times: {e}"))?;
        if host_now.busy > host_now.total {
            return Err(format!(
                "host CPU times make no sense: {} busy ticks out of {} in all",
                host_now.busy, host_now.total
            ));
        }
        self.scan.clear();
        self.procs
            .scan(&mut self.scan)
            .map_err(|e| format!("cannot list processes: {e}"))?;
        self.track_processes(first);

        let host_before = self.last_host.replace(host_now);
        let (host_ticks, busy_ticks) = match host_before {
            Some(b) => (
                host_now.total.saturating_sub(b.total),
                host_now.busy.saturating_sub(b.busy),
            ),
            None => (0, 0),
        };
        let process_ticks: u64 = self
            .tracked
            .values()
            .fold(0u64, |acc, t| acc.saturating_add(t.delta));
        let unexplained = busy_ticks.saturating_sub(process_ticks);
        let idle_ticks = host_ticks.saturating_sub(busy_ticks.max(process_ticks));

        // CPU-time weights per project, in a fixed order: project ids.
        let n = self.projects.len();
        self.weights.clear();
        self.weights.resize(n, 0);
        for t in self.tracked.values() {
            self.weights[t.project] = self.weights[t.project].saturating_add(t.delta);
        }
        self.weights[self.unassigned] = self.weights[self.unassigned].saturating_add(unexplained);
        if self.idle_policy == IdlePolicy::Separate || self.weights.iter().all(|&w| w == 0) {
            self.weights[self.idle] = self.weights[self.idle].saturating_add(idle_ticks);
        }
        let cpu_weights = std::mem::take(&mut self.weights);

        for (index, c) in interval.channels.iter().enumerate() {
            let Some(component) = c.component else {
                continue;
            };
            if c.energy == MicroJoules::ZERO {
                continue;
            }
            match component {
                Component::Cpu | Component::Dram => {
                    if split_exact(c.energy, &cpu_weights, &mut self.parts) {
                        self.add_parts(component, c.source);
                    } else {
                        self.add(self.idle, component, c.source, c.energy);
                    }
                }
                Component::Gpu => {
                    let activity = interval
                        .gpu_activity
                        .iter()
                        .find(|(i, _)| *i == index)
                        .map(|(_, a)| a);
                    self.attribute_gpu(c, activity);
                }
            }
        }
        self.weights = cpu_weights;
        Ok(Ticks {
            host: host_ticks,
            process: process_ticks,
            unexplained,
            idle: idle_ticks,
        })
    }

    /// The architecture invariant, checked on every interval: per (component, source),
    /// the parts given to projects add up to the host's energy.
    fn check_conservation(&self, interval: &IntervalEnergy) -> Result<(), String> {
        for (component, source, host) in interval.host_totals() {
            let given = self
                .projects
                .totals
                .iter()
                .filter(|((_, c, s), _)| *c == component && *s == source)
                .fold(MicroJoules::ZERO, |acc, (_, v)| acc.saturating_add(v.1));
            if given != host {
                return Err(format!(
                    "the split of {component} ({source}) gives {} µJ to projects for a host total of {} µJ",
                    given.0, host.0
                ));
            }
        }
        Ok(())
    }

    fn add(
        &mut self,
        project: ProjectId,
        component: Component,
        source: SourceKind,
        e: MicroJoules,
    ) {
        self.projects.add(project, component, source, e);
    }

    fn add_parts(&mut self, component: Component, source: SourceKind) {
        let parts = std::mem::take(&mut self.parts);
        for (project, &e) in parts.iter().enumerate() {
            if e > MicroJoules::ZERO {
                self.add(project, component, source, e);
            }
        }
        self.parts = parts;
    }

    fn attribute_gpu(&mut self, c: &ChannelInterval, activity: Option<&GpuActivity>) {
        let source = c.source;
        let Some(activity) = activity.filter(|a| !a.processes.is_empty() || !a.samples.is_empty())
        else {
            self.add(self.idle, Component::Gpu, source, c.energy);
            return;
        };
        let weights = gpu_process_weights(activity);
        let pids: Vec<u32> = weights.iter().map(|(pid, _)| *pid).collect();
        let w: Vec<u64> = weights.iter().map(|(_, w)| *w).collect();
        let mut parts = Vec::with_capacity(w.len());
        if !split_exact(c.energy, &w, &mut parts) {
            self.add(self.idle, Component::Gpu, source, c.energy);
            return;
        }
        for (pid, e) in pids.into_iter().zip(parts) {
            let project = self.project_of_pid(pid);
            self.add(project, Component::Gpu, source, e);
        }
    }

    /// The project of a PID seen on a GPU: the tracked one, else resolved now (a
    /// process that exited before the scan).
    fn project_of_pid(&mut self, pid: u32) -> ProjectId {
        if let Some(t) = self.tracked.get(&pid) {
            return t.project;
        }
        if let Some(&project) = self.departed.get(&pid) {
            return project;
        }
        match self.resolve(pid) {
            Some(r) => r.project,
            None => self.unassigned,
        }
    }

    fn resolve(&mut self, pid: u32) -> Option<Resolved> {
        let details = self.procs.details(pid)?;
        let cgroup = parse_proc_cgroup(&details.cgroup);
        let user = details.uid.and_then(|uid| self.users.name(uid));
        let (pod, provisional) = match (&cgroup.pod, self.pods.as_mut()) {
            (Some(p), Some(cache)) => {
                let meta = cache.pod(&p.uid);
                let missing = meta.is_none();
                (meta, missing)
            }
            _ => (None, false),
        };
        let container = match (&cgroup.container, self.containers.as_mut()) {
            (Some(c), Some(cache)) => cache.container(&c.id),
            _ => None,
        };
        let facts = ProcessFacts {
            pid,
            uid: details.uid,
            user: user.as_deref(),
            cmdline: &details.cmdline,
            environ: &details.environ,
            cgroup: &cgroup,
            pod: pod.as_deref(),
            container: container.as_deref(),
        };
        let r = self.resolver.resolve(&facts);
        let project = self.intern(&r.project);
        Some(Resolved {
            project,
            rule: r.rule,
            reason: Arc::from(r.reason.as_str()),
            cmdline: Arc::from(if self.show_cmdline {
                details.cmdline.as_str()
            } else {
                program(&details.cmdline)
            }),
            provisional,
            environ_unreadable: !details.environ_readable,
        })
    }

    fn track_processes(&mut self, first: bool) {
        let scan = std::mem::take(&mut self.scan);
        for s in &scan {
            let (reuse, provisional) = match self.tracked.get_mut(&s.pid) {
                Some(t) if t.start_ticks == s.start_ticks => {
                    t.delta = s.cpu_ticks.saturating_sub(t.last_ticks);
                    t.last_ticks = s.cpu_ticks;
                    t.seen = self.cycle;
                    (false, t.provisional)
                }
                _ => (true, false),
            };
            if provisional {
                // Its pod was unknown: try again (the pod cache limits its own refreshes).
                if let Some(r) = self.resolve(s.pid) {
                    if let Some(t) = self.tracked.get_mut(&s.pid) {
                        (t.project, t.rule, t.reason, t.provisional) =
                            (r.project, r.rule, r.reason, r.provisional);
                    }
                }
            }
            if reuse {
                // A new process (or a reused PID): resolved once. After the first cycle, a
                // process we did not see before started during the interval, so all its
                // CPU time belongs to this interval.
                let Some(r) = self.resolve(s.pid) else {
                    continue;
                }; // exited already
                self.tracked.insert(
                    s.pid,
                    Tracked {
                        start_ticks: s.start_ticks,
                        last_ticks: s.cpu_ticks,
                        project: r.project,
                        rule: r.rule,
                        reason: r.reason,
                        cmdline: r.cmdline,
                        seen: self.cycle,
                        delta: if first { 0 } else { s.cpu_ticks },
                        provisional: r.provisional,
                        environ_unreadable: r.environ_unreadable,
                    },
                );
            }
        }
        let cycle = self.cycle;
        // Processes that exited during the interval keep their project for this cycle's
        // GPU split (the driver may still list them).
        self.departed.clear();
        for (pid, t) in &self.tracked {
            if t.seen != cycle {
                self.departed.insert(*pid, t.project);
            }
        }
        self.tracked.retain(|_, t| t.seen == cycle);
        self.scan = scan;
    }

    fn publish(&mut self, ticks: Ticks, interval: &IntervalEnergy) {
        let host_ticks = ticks.host;
        let mut projects: Vec<ProjectEnergy> = self
            .projects
            .totals
            .iter()
            .map(|(&(p, component, source), &(total, last))| ProjectEnergy {
                project: self.projects.name(p).clone(),
                component,
                source,
                total_uj: total.0,
                last_uj: last.0,
            })
            .collect();
        projects.sort_by(|a, b| {
            (&a.project, a.component, a.source).cmp(&(&b.project, b.component, b.source))
        });

        let mut top: Vec<(&u32, &Tracked)> =
            self.tracked.iter().filter(|(_, t)| t.delta > 0).collect();
        top.sort_by(|a, b| b.1.delta.cmp(&a.1.delta).then(a.0.cmp(b.0)));
        let mut top_processes: Vec<ProcessShare> = top
            .into_iter()
            .take(TOP_PROCESSES)
            .map(|(&pid, t)| self.share(pid, t, host_ticks))
            .collect();
        for (index, activity) in &interval.gpu_activity {
            let device = interval
                .channels
                .get(*index)
                .map(|c| c.device.to_string())
                .unwrap_or_default();
            let weights = gpu_process_weights(activity);
            let sum: u64 = weights.iter().map(|(_, w)| w).sum();
            for (pid, w) in weights {
                let share = if sum > 0 { w as f64 / sum as f64 } else { 0.0 };
                if let Some(p) = top_processes.iter_mut().find(|p| p.pid == pid) {
                    p.gpu_shares.push((device.clone(), share));
                } else if let Some(t) = self.tracked.get(&pid) {
                    let mut p = self.share(pid, t, host_ticks);
                    p.gpu_shares.push((device.clone(), share));
                    top_processes.push(p);
                }
            }
        }
        let unreadable_processes = self
            .tracked
            .values()
            .filter(|t| t.environ_unreadable)
            .count();
        if unreadable_processes > 0 && !self.warned_unreadable && self.resolver.needs_environ() {
            self.warned_unreadable = true;
            tracing::warn!(
                processes = unreadable_processes,
                "the environment of some processes cannot be read (other users' processes; the agent has no CAP_SYS_PTRACE): rules on environment variables such as EMPREINTE_PROJECT cannot place them, they fall to the next rules (systemd unit, pod, user); empreinte_attribution_unreadable_processes counts them, `empreinte agent check` lists them"
            );
        }
        self.state = AttributionState {
            projects,
            top_processes,
            processes_seen: self.tracked.len(),
            projects_active: self.projects.active(),
            projects_dormant: self.projects.dormant(),
            projects_forgotten_total: self.projects.forgotten_total,
            unreadable_processes,
            host_ticks,
            process_ticks: ticks.process,
            unexplained_busy_ticks: ticks.unexplained,
            idle_ticks: ticks.idle,
            failed_intervals_total: self.failed_intervals,
            failed_energy_uj_total: self.failed_energy.0,
        };
    }
}

impl Attributor {
    /// How the debug endpoint shows a tracked process.
    fn share(&self, pid: u32, t: &Tracked, host_ticks: u64) -> ProcessShare {
        ProcessShare {
            pid,
            project: self.projects.name(t.project).clone(),
            rule: t.rule,
            reason: t.reason.clone(),
            cmdline: t.cmdline.clone(),
            cpu_ticks: t.delta,
            cpu_share: if host_ticks > 0 {
                t.delta as f64 / host_ticks as f64
            } else {
                0.0
            },
            gpu_shares: Vec::new(),
        }
    }
}

/// The program name of a command line (the first word's last path segment): what the
/// debug endpoint and `check` show unless full command lines are enabled, since
/// arguments can hold secrets.
fn program(cmdline: &str) -> &str {
    let first = cmdline.split(' ').next().unwrap_or("");
    first.rsplit('/').next().unwrap_or(first)
}

/// Per-process weights on one GPU for one interval: the sum of SM utilisation samples
/// when any process has one; else used GPU memory; else equal shares. Sorted by PID.
pub fn gpu_process_weights(activity: &GpuActivity) -> Vec<(u32, u64)> {
    let mut by_pid: std::collections::BTreeMap<u32, u64> = std::collections::BTreeMap::new();
    for s in &activity.samples {
        *by_pid.entry(s.pid).or_default() += u64::from(s.sm_util);
    }
    if by_pid.values().any(|&w| w > 0) {
        return by_pid.into_iter().collect();
    }
    let memory: Vec<(u32, u64)> = activity
        .processes
        .iter()
        .map(|p| (p.pid, p.used_gpu_memory.unwrap_or(0)))
        .collect();
    let mut out: Vec<(u32, u64)> = if memory.iter().any(|(_, m)| *m > 0) {
        memory
    } else {
        activity.processes.iter().map(|p| (p.pid, 1)).collect()
    };
    out.sort_unstable();
    out.dedup_by_key(|(pid, _)| *pid);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_program_name_is_shown_by_default() {
        assert_eq!(
            program("/usr/bin/python3 serve.py --api-key s3cr3t"),
            "python3"
        );
        assert_eq!(program("[kthreadd]"), "[kthreadd]");
        assert_eq!(program(""), "");
    }

    #[test]
    fn gpu_weights_prefer_samples_then_memory_then_equal_shares() {
        use crate::sources::{GpuProcess, GpuSample};
        let procs = vec![
            GpuProcess {
                pid: 2,
                used_gpu_memory: Some(300),
            },
            GpuProcess {
                pid: 1,
                used_gpu_memory: Some(100),
            },
        ];
        let samples = vec![
            GpuSample {
                pid: 2,
                timestamp_us: 1,
                sm_util: 10,
            },
            GpuSample {
                pid: 2,
                timestamp_us: 2,
                sm_util: 30,
            },
        ];
        let a = GpuActivity {
            processes: procs.clone(),
            samples,
        };
        assert_eq!(gpu_process_weights(&a), [(2, 40)]);
        let a = GpuActivity {
            processes: procs.clone(),
            samples: Vec::new(),
        };
        assert_eq!(gpu_process_weights(&a), [(1, 100), (2, 300)]);
        let none: Vec<GpuProcess> = procs
            .iter()
            .map(|p| GpuProcess {
                used_gpu_memory: None,
                ..*p
            })
            .collect();
        assert_eq!(
            gpu_process_weights(&GpuActivity {
                processes: none,
                samples: Vec::new()
            }),
            [(1, 1), (2, 1)]
        );
    }
}
