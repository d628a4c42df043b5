//! `[attribution]`: which project each process belongs to (ordered rules, first match
//! wins), where idle and unexplained energy goes, and (`[attribution.kubernetes]`, in
//! [`super::kubernetes`]) where pod metadata comes from.
//!
//! ```toml
//! [[attribution.rules]]              # the citizen chatbot's inference servers
//! systemd_unit = "vllm-*.service"
//! user = "chatbot"
//! project = "chatbot"
//!
//! [[attribution.rules]]              # any pod: its label, e.g. empreinte.io/project
//! pod_label = "empreinte.io/project"
//! project_from = "pod_label"
//! ```
//!
//! Giving `rules` replaces the default rules ([`default_rules`]).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigProblem;
use super::kubernetes::KubernetesConfig;

/// The environment variable of the default first rule.
pub const DEFAULT_ENV_VAR: &str = "EMPREINTE_PROJECT";
/// The pod label of the default second rule.
pub const DEFAULT_POD_LABEL: &str = "empreinte.io/project";
/// Longest project name accepted.
pub const MAX_PROJECT_LEN: usize = 128;
/// Default passwd file (user names for `user` rules).
pub const DEFAULT_PASSWD_FILE: &str = "/etc/passwd";
/// Default Docker data root (container names and labels).
pub const DEFAULT_DOCKER_ROOT: &str = "/var/lib/docker";
/// Shortest and longest window of activity that keeps a project in memory.
pub const MIN_PROJECT_WINDOW: Duration = Duration::from_secs(60);
pub const MAX_PROJECT_WINDOW: Duration = Duration::from_secs(7 * 86_400);
/// The most dormant projects whose totals can be parked.
pub const MAX_DORMANT_PROJECTS: usize = 1_000_000;

/// Where the energy that no process's CPU time explains goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdlePolicy {
    /// To a project of its own, `idle` by default.
    Separate,
    /// To the active projects, in proportion to their activity.
    Proportional,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AttributionConfig {
    pub idle_policy: IdlePolicy,
    pub idle_project: String,
    pub unassigned_project: String,
    /// Unix user names for `user` rules (a containerised agent points it at the host's).
    pub passwd_file: PathBuf,
    /// Ordered rules, first match wins. Empty: the default rules.
    pub rules: Vec<RuleConfig>,
    /// Show whole command lines in `/debug/attribution` and `check` (arguments can hold
    /// secrets: by default only the program name is shown).
    pub debug_full_cmdline: bool,
    /// Docker's data root, for container names and labels (`container`,
    /// `container_label` rules).
    pub docker_root: PathBuf,
    /// A project that received no energy and had no live process for this long leaves
    /// the attributor's maps and `/metrics` (its totals are parked; it resumes them if it
    /// comes back). Bounds memory by the projects active in this window.
    #[serde(with = "humantime_serde")]
    pub project_window: Duration,
    /// The most projects parked past the window; beyond, the longest-dormant are
    /// forgotten (one that returns starts from zero). 0: none parked.
    pub max_dormant_projects: usize,
    pub kubernetes: KubernetesConfig,
}

impl Default for AttributionConfig {
    fn default() -> Self {
        AttributionConfig {
            idle_policy: IdlePolicy::Separate,
            idle_project: "idle".into(),
            unassigned_project: "unassigned".into(),
            passwd_file: PathBuf::from(DEFAULT_PASSWD_FILE),
            rules: Vec::new(),
            debug_full_cmdline: false,
            docker_root: PathBuf::from(DEFAULT_DOCKER_ROOT),
            project_window: Duration::from_secs(3600),
            max_dormant_projects: 10_000,
            kubernetes: KubernetesConfig::default(),
        }
    }
}

/// Where a rule takes the project name from, instead of a fixed `project`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProjectFrom {
    /// The value of the rule's `env` variable (or `EMPREINTE_PROJECT`).
    Env,
    /// The systemd unit name without its `.service` suffix.
    SystemdUnit,
    PodNamespace,
    PodName,
    /// The value of the rule's `pod_label`.
    PodLabel,
    /// The value of the rule's `pod_annotation`.
    PodAnnotation,
    /// The container name (Docker).
    ContainerName,
    /// The value of the rule's `container_label` (Docker).
    ContainerLabel,
    User,
}

/// One rule: every matcher given must match (at least one is required), then the
/// project is `project`, or taken from what matched (`project_from`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project_from: Option<ProjectFrom>,
    /// The process has this environment variable, not empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// A regular expression the `env` variable's value must match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env_value: Option<String>,
    /// A glob on the systemd unit (`vllm-*.service`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub systemd_unit: Option<String>,
    /// A glob on the container id or (Docker) name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// The container has this label (Docker).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_label: Option<String>,
    /// A glob on the pod's namespace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_namespace: Option<String>,
    /// The pod has this label.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_label: Option<String>,
    /// The pod has this annotation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_annotation: Option<String>,
    /// The process's Unix user (a name, or a numeric uid).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// A regular expression on the command line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
}

impl RuleConfig {
    /// True when the rule reads the process's environment (`/proc/PID/environ`, which
    /// only the process's owner, root or CAP_SYS_PTRACE can read).
    pub fn needs_environ(&self) -> bool {
        self.env.is_some() || self.project_from == Some(ProjectFrom::Env)
    }
}

/// The rules used when the configuration gives none: the `EMPREINTE_PROJECT` variable,
/// then a pod's `empreinte.io/project` label, then a pod's namespace, then the systemd
/// service (`vllm.service` → `vllm`).
///
/// The last rule needs no privilege: the shipped unit runs the agent as an unprivileged
/// user, which cannot read other users' `/proc/PID/environ` (that takes CAP_SYS_PTRACE,
/// which would also let it read their memory), so a service labelled only by
/// `EMPREINTE_PROJECT` still lands in a project named after its unit rather than in
/// `unassigned`. See docs/attribution.md.
pub fn default_rules() -> Vec<RuleConfig> {
    vec![
        RuleConfig {
            env: Some(DEFAULT_ENV_VAR.into()),
            project_from: Some(ProjectFrom::Env),
            ..RuleConfig::default()
        },
        RuleConfig {
            pod_label: Some(DEFAULT_POD_LABEL.into()),
            project_from: Some(ProjectFrom::PodLabel),
            ..RuleConfig::default()
        },
        RuleConfig {
            pod_namespace: Some("*".into()),
            project_from: Some(ProjectFrom::PodNamespace),
            ..RuleConfig::default()
        },
        RuleConfig {
            systemd_unit: Some("*.service".into()),
            project_from: Some(ProjectFrom::SystemdUnit),
            ..RuleConfig::default()
        },
    ]
}

/// Checks a project name: trimmed, not empty, at most [`MAX_PROJECT_LEN`] characters,
/// no control characters. Returns the cleaned name.
pub fn sanitize_project(name: &str) -> Result<String, String> {
    let name = name.trim();
    if name.is_empty() {
        return Err("a project name cannot be empty".into());
    }
    if name.chars().count() > MAX_PROJECT_LEN {
        return Err(format!(
            "a project name has at most {MAX_PROJECT_LEN} characters"
        ));
    }
    if name.chars().any(char::is_control) {
        return Err("a project name cannot hold control characters".into());
    }
    Ok(name.to_string())
}

impl AttributionConfig {
    /// The rules in effect: the configured ones, else [`default_rules`].
    pub fn effective_rules(&self) -> Vec<RuleConfig> {
        if self.rules.is_empty() {
            default_rules()
        } else {
            self.rules.clone()
        }
    }

    /// Checks the names and every rule (regular expressions compiled, not kept).
    pub(super) fn check(&self, problems: &mut Vec<ConfigProblem>) {
        for (key, name) in [
            ("attribution.idle_project", &self.idle_project),
            ("attribution.unassigned_project", &self.unassigned_project),
        ] {
            if let Err(e) = sanitize_project(name) {
                problems.push(ConfigProblem::new(key, format!("{name:?}: {e}")));
            }
        }
        if self.project_window < MIN_PROJECT_WINDOW || self.project_window > MAX_PROJECT_WINDOW {
            problems.push(ConfigProblem::new(
                "attribution.project_window",
                format!(
                    "{} is out of range: allowed from {} to {}",
                    humantime::format_duration(self.project_window),
                    humantime::format_duration(MIN_PROJECT_WINDOW),
                    humantime::format_duration(MAX_PROJECT_WINDOW)
                ),
            ));
        }
        if self.max_dormant_projects > MAX_DORMANT_PROJECTS {
            problems.push(ConfigProblem::new(
                "attribution.max_dormant_projects",
                format!(
                    "{} is too many: at most {MAX_DORMANT_PROJECTS}",
                    self.max_dormant_projects
                ),
            ));
        }
        for (i, c) in self.effective_rules().iter().enumerate() {
            let mut bad = |k: &str, message: String| {
                problems.push(ConfigProblem::new(
                    &format!("attribution.rules[{i}].{k}"),
                    message,
                ))
            };
            for (k, v) in [("env_value", &c.env_value), ("cmdline", &c.cmdline)] {
                if let Some(r) = v {
                    if let Err(e) = regex::Regex::new(r) {
                        bad(k, format!("{r:?} is not a valid regular expression: {e}"));
                    }
                }
            }
            let has_matcher = c.env.is_some()
                || c.systemd_unit.is_some()
                || c.container.is_some()
                || c.container_label.is_some()
                || c.pod_namespace.is_some()
                || c.pod_label.is_some()
                || c.pod_annotation.is_some()
                || c.user.is_some()
                || c.cmdline.is_some();
            if !has_matcher {
                bad("", "a rule needs at least one matcher: env, systemd_unit, container, container_label, pod_namespace, pod_label, pod_annotation, user or cmdline".into());
            }
            if c.env_value.is_some() && c.env.is_none() {
                bad(
                    "env_value",
                    "env_value needs env (the variable whose value it matches)".into(),
                );
            }
            match (&c.project, c.project_from) {
                (Some(_), Some(_)) => bad(
                    "project",
                    "give either project (a fixed name) or project_from, not both".into(),
                ),
                (None, None) => bad("project", "give project (a fixed name) or project_from (env, systemd_unit, pod_namespace, pod_name, pod_label, pod_annotation, container_name, container_label, user)".into()),
                (Some(p), None) => {
                    if let Err(e) = sanitize_project(p) {
                        bad("project", format!("{p:?}: {e}"));
                    }
                }
                (None, Some(from)) => {
                    let needs = match from {
                        ProjectFrom::PodLabel if c.pod_label.is_none() => Some("pod_label"),
                        ProjectFrom::PodAnnotation if c.pod_annotation.is_none() => {
                            Some("pod_annotation")
                        }
                        _ => None,
                    };
                    if let Some(n) = needs {
                        bad(
                            "project_from",
                            format!(
                                "project_from = {from:?} needs {n} (the key whose value names the project)"
                            ),
                        );
                    }
                }
            }
        }
        self.kubernetes.check(problems);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(cfg: &AttributionConfig) -> Vec<ConfigProblem> {
        let mut p = Vec::new();
        cfg.check(&mut p);
        p
    }

    #[test]
    fn every_bad_rule_is_reported_at_once() {
        let cfg = AttributionConfig {
            rules: vec![
                RuleConfig {
                    project: Some("a".into()),
                    ..RuleConfig::default()
                },
                RuleConfig {
                    cmdline: Some("(unclosed".into()),
                    project: Some("b".into()),
                    ..RuleConfig::default()
                },
                RuleConfig {
                    user: Some("x".into()),
                    ..RuleConfig::default()
                },
                RuleConfig {
                    pod_namespace: Some("*".into()),
                    project_from: Some(ProjectFrom::PodLabel),
                    ..RuleConfig::default()
                },
                RuleConfig {
                    env_value: Some("x".into()),
                    user: Some("u".into()),
                    project: Some("\u{7}".into()),
                    ..RuleConfig::default()
                },
            ],
            ..AttributionConfig::default()
        };
        let problems = problems(&cfg);
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "attribution.rules[0].",
                "attribution.rules[1].cmdline",
                "attribution.rules[2].project",
                "attribution.rules[3].project_from",
                "attribution.rules[4].env_value",
                "attribution.rules[4].project",
            ]
        );
        assert!(
            problems[1]
                .message
                .contains("not a valid regular expression")
        );
    }

    #[test]
    fn the_defaults_are_valid_and_bad_names_are_named() {
        assert_eq!(problems(&AttributionConfig::default()), []);
        let cfg = AttributionConfig {
            idle_project: " ".into(),
            unassigned_project: "x".repeat(MAX_PROJECT_LEN + 1),
            ..AttributionConfig::default()
        };
        let keys: Vec<String> = problems(&cfg).into_iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            ["attribution.idle_project", "attribution.unassigned_project"]
        );
    }

    #[test]
    fn rules_parse_from_toml() {
        let cfg: AttributionConfig = toml::from_str(
            "idle_policy = \"proportional\"\n[[rules]]\nsystemd_unit = \"ollama.service\"\nproject = \"assistant\"\n[[rules]]\npod_label = \"app\"\nproject_from = \"pod_label\"\n",
        )
        .unwrap();
        assert_eq!(cfg.idle_policy, IdlePolicy::Proportional);
        assert_eq!(cfg.rules.len(), 2);
        assert_eq!(cfg.rules[1].project_from, Some(ProjectFrom::PodLabel));
        assert!(toml::from_str::<AttributionConfig>("[[rules]]\nsystemd = \"x\"\n").is_err());
    }
}
