//! `empreinte agent check`: per source and per zone or GPU, whether it is usable, what it
//! measures, and if not, why not and how to fix it.

use serde::Serialize;

use crate::config::AgentConfig;
use crate::sources::{self, Diagnosis};

/// The whole check, as printed or as JSON.
#[derive(Clone, Debug, Serialize)]
pub struct CheckReport {
    pub diagnoses: Vec<Diagnosis>,
    /// Components covered, each with the source that covers it.
    pub coverage: Vec<Coverage>,
    /// How the running processes resolve to projects right now.
    pub projects: Vec<ProjectResolution>,
    /// Why processes could not be resolved, if so.
    pub attribution_problem: Option<String>,
    /// Processes whose environment could not be read (other users' processes, no
    /// CAP_SYS_PTRACE), and whether a rule in effect reads the environment.
    pub unreadable_processes: usize,
    pub rules_read_environment: bool,
    /// The inference servers found, read once now, and how each maps to a project and
    /// models.
    pub inference: Vec<InferenceServerCheck>,
    /// Known server processes that answered no metrics.
    pub inference_unread: Vec<crate::inference::Unread>,
}

/// One inference server as `check` reads it.
#[derive(Clone, Debug, Serialize)]
pub struct InferenceServerCheck {
    #[serde(flatten)]
    pub server: crate::inference::ServerInfo,
    /// The project its counts go to, and why.
    pub resolved_project: String,
    pub project_reason: String,
}

/// The processes of one project, as resolved now.
#[derive(Clone, Debug, Serialize)]
pub struct ProjectResolution {
    pub project: String,
    pub processes: usize,
    /// A few of them, with the rule that placed each.
    pub examples: Vec<crate::attribution::engine::ProcessResolution>,
}

/// How many example processes `check` shows per project.
const EXAMPLES: usize = 3;

#[derive(Clone, Debug, Serialize)]
pub struct Coverage {
    pub component: empreinte_shared::Component,
    pub sources: Vec<empreinte_shared::SourceKind>,
    pub measured: bool,
}

impl CheckReport {
    /// Opens every configured source as the agent would, and reports.
    pub fn run(config: &AgentConfig) -> CheckReport {
        let opened = sources::open_all(config);
        let coverage = empreinte_shared::Component::ALL
            .iter()
            .filter_map(|&component| {
                let mut kinds: Vec<_> = opened
                    .sources
                    .iter()
                    .filter(|s| s.channels().iter().any(|c| c.component == Some(component)))
                    .map(|s| s.kind())
                    .collect();
                kinds.dedup();
                (!kinds.is_empty()).then(|| Coverage {
                    component,
                    measured: kinds.iter().all(|k| k.is_measured()),
                    sources: kinds,
                })
            })
            .collect();
        let (mut unreadable_processes, mut rules_read_environment) = (0, false);
        let mut resolved = std::collections::HashMap::new();
        let (projects, attribution_problem) =
            match crate::attribution::build(config).and_then(|mut a| {
                rules_read_environment = a.needs_environ();
                a.resolve_all()
            }) {
                Ok(all) => {
                    unreadable_processes = all.iter().filter(|r| !r.environ_readable).count();
                    for r in &all {
                        resolved.insert(r.pid, (r.project.to_string(), r.reason.to_string()));
                    }
                    (group_by_project(all), None)
                }
                Err(e) => (Vec::new(), Some(e)),
            };
        let (servers, inference_unread) =
            crate::inference::Inference::read_once(config, crate::clock::MonotonicClock::start());
        let inference = servers
            .into_iter()
            .map(|server| {
                let (resolved_project, project_reason) = match (&server.project, server.pid) {
                    (Some(p), _) => (p.to_string(), "configured ([[inference]] project)".into()),
                    (None, Some(pid)) => resolved.get(&pid).cloned().unwrap_or_else(|| {
                        (
                            config.attribution.unassigned_project.clone(),
                            format!("process {pid} could not be resolved"),
                        )
                    }),
                    (None, None) => (
                        config.attribution.unassigned_project.clone(),
                        "no process on this host serves its URL, and no project is configured"
                            .into(),
                    ),
                };
                InferenceServerCheck {
                    server,
                    resolved_project,
                    project_reason,
                }
            })
            .collect();
        CheckReport {
            diagnoses: opened.diagnoses,
            coverage,
            projects,
            attribution_problem,
            unreadable_processes,
            rules_read_environment,
            inference,
            inference_unread,
        }
    }

    /// True when at least one component is measured or estimated.
    pub fn anything_usable(&self) -> bool {
        !self.coverage.is_empty()
    }

    pub fn to_text(&self) -> String {
        let mut out = self.sources_text();
        out.push_str("\nProjects (how running processes resolve now)\n");
        if let Some(p) = &self.attribution_problem {
            out.push_str(&format!("  cannot resolve processes: {p}\n"));
        }
        out.push_str(&self.unreadable_text());
        for p in &self.projects {
            out.push_str(&format!(
                "  {:<24} {} process{}\n",
                p.project,
                p.processes,
                if p.processes == 1 { "" } else { "es" }
            ));
            for e in &p.examples {
                let cmd: String = e.cmdline.chars().take(60).collect();
                out.push_str(&format!(
                    "      pid {:<7} {cmd}\n                  {}\n",
                    e.pid, e.reason
                ));
            }
        }
        out.push_str(&self.inference_text());
        out
    }

    /// The inference servers and how each maps to a project and models.
    fn inference_text(&self) -> String {
        let mut out = String::from("\nInference servers (read once now)\n");
        if self.inference.is_empty() && self.inference_unread.is_empty() {
            out.push_str("  none configured ([[inference]]) or found on this host\n");
        }
        for s in &self.inference {
            let i = &s.server;
            let origin = match i.origin {
                crate::inference::Origin::Configured => "configured".to_string(),
                crate::inference::Origin::Discovered => {
                    format!("found: pid {}", i.pid.map_or("?".into(), |p| p.to_string()))
                }
                crate::inference::Origin::Kubernetes => format!(
                    "pod {}: annotated, pid {}",
                    i.pod
                        .as_ref()
                        .map_or("?".into(), |p| format!("{}/{}", p.namespace, p.name)),
                    i.pid.map_or("not seen".into(), |p| p.to_string())
                ),
            };
            out.push_str(&format!("  {:<9} {}  ({origin})\n", i.kind.as_str(), i.url));
            out.push_str(&format!(
                "      project  {}  ({})\n",
                s.resolved_project, s.project_reason
            ));
            let models: Vec<&str> = i.models.iter().map(|m| &**m).collect();
            match &i.last_error {
                Some(e) => out.push_str(&format!("      NOT READ: {e}\n")),
                None if models.len() > 1 => out.push_str(&format!(
                    "      models   {}  (the process's energy is split between them by output tokens, else requests)\n",
                    models.join(", ")
                )),
                None => out.push_str(&format!("      model    {}\n", models.join(", "))),
            }
        }
        for u in &self.inference_unread {
            if u.pid == 0 {
                out.push_str(&format!("  {}\n      NOT READ: {}\n", u.cmdline, u.reason));
                continue;
            }
            let cmd: String = u.cmdline.chars().take(60).collect();
            out.push_str(&format!(
                "  {:<9} pid {} {cmd}\n      NOT READ: {}\n",
                u.kind.as_str(),
                u.pid,
                u.reason
            ));
        }
        out
    }

    /// What the unreadable processes mean for the figures.
    fn unreadable_text(&self) -> String {
        let n = self.unreadable_processes;
        if n == 0 {
            return "  every process's environment could be read\n".into();
        }
        let meaning = if self.rules_read_environment {
            "rules on environment variables (EMPREINTE_PROJECT, env) cannot place them: they fall to the next rules (systemd unit, pod, user), else to unassigned. Run the agent as root or label these workloads by systemd unit, pod or user (docs/attribution.md)"
        } else {
            "no rule in effect reads the environment, so this changes no figure"
        };
        format!(
            "  {n} process{} could not be read (environment of other users' processes; the agent has no CAP_SYS_PTRACE): {meaning}\n",
            if n == 1 { "" } else { "es" }
        )
    }

    fn sources_text(&self) -> String {
        let mut out = String::from("Energy sources\n");
        for d in &self.diagnoses {
            out.push_str(&format!("{d}\n"));
        }
        out.push_str("\nCoverage\n");
        if self.coverage.is_empty() {
            out.push_str("  nothing is measured or estimated on this host\n");
        }
        for c in &self.coverage {
            let sources: Vec<&str> = c.sources.iter().map(|s| s.as_str()).collect();
            out.push_str(&format!(
                "  {:<5} {} ({})\n",
                c.component.as_str(),
                if c.measured { "measured" } else { "ESTIMATED" },
                sources.join(", ")
            ));
        }
        out
    }
}

fn group_by_project(
    all: Vec<crate::attribution::engine::ProcessResolution>,
) -> Vec<ProjectResolution> {
    let mut by: std::collections::BTreeMap<String, ProjectResolution> =
        std::collections::BTreeMap::new();
    for r in all {
        let entry = by
            .entry(r.project.to_string())
            .or_insert_with(|| ProjectResolution {
                project: r.project.to_string(),
                processes: 0,
                examples: Vec::new(),
            });
        entry.processes += 1;
        if entry.examples.len() < EXAMPLES {
            entry.examples.push(r);
        }
    }
    // Projects named by a rule first, the unmatched last.
    let mut v: Vec<ProjectResolution> = by.into_values().collect();
    v.sort_by_key(|p| {
        (
            p.examples.first().is_none_or(|e| e.rule.is_none()),
            p.project.clone(),
        )
    });
    v
}
