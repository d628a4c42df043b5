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
//!
//! This file stays whole past 600 lines: the split, the conservation check and the
//! process tracking share the per-interval state (tracked processes, weights, parts),
//! and cutting them apart would pass that state through every call. What is separable
//! lives beside it: projects, the GPU weights, the per-model split (`models`), state.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use empreinte_shared::{Component, MicroJoules, SourceKind};

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

use super::gpu::{gpu_process_weights, program};
use super::models::ModelSplit;
use super::projects::{ProjectId, Projects};
pub use super::state::{
    AttributionState, ModelEnergy, ProcessResolution, ProcessShare, ProjectEnergy,
};

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
    /// Serving processes' energy split by model.
    models: ModelSplit,
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
            models: ModelSplit::default(),
        };
        a.idle = a.intern(&config.idle_project);
        a.unassigned = a.intern(&config.unassigned_project);
        a
    }

    /// Reads container names and labels from Docker's state for container rules.
    /// The pods annotated as inference servers, from this attributor's pod lookup.
    pub fn annotated_pods(&self) -> Option<super::kube::AnnotatedPods> {
        self.pods.as_ref().map(PodCache::annotated)
    }

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

    /// The model weights of serving processes for the next interval (see
    /// [`super::models`]).
    pub fn set_model_weights(&mut self, weights: HashMap<u32, super::models::ProcessWeights>) {
        self.models.set_weights(weights);
    }

    /// The project of a process seen at the last interval.
    pub fn project_of(&self, pid: u32) -> Option<Arc<str>> {
        self.tracked
            .get(&pid)
            .map(|t| self.projects.name(t.project).clone())
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
        self.models.begin_interval();
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
                self.models.discard_interval();
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
                        if !self.models.is_empty() {
                            let serving: Vec<(u32, ProjectId, u64)> = self
                                .tracked
                                .iter()
                                .filter(|(pid, t)| t.delta > 0 && self.models.serves(**pid))
                                .map(|(pid, t)| (*pid, t.project, t.delta))
                                .collect();
                            let parts = &self.parts;
                            self.models.split_cpu(
                                component,
                                c.source,
                                parts,
                                &cpu_weights,
                                &serving,
                            );
                        }
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
            self.models
                .split_process(pid, project, Component::Gpu, source, e);
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
        let models = self.models.publish(|p| self.projects.name(p).clone());
        self.state = AttributionState {
            projects,
            models,
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
