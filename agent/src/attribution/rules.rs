//! Project resolution: the ordered rules of [`AttributionConfig`], compiled; first match
//! wins; a process matched by no rule goes to the `unassigned` project. The rules'
//! configuration and its validation live in [`crate::config::attribution`].

use std::collections::BTreeMap;
use std::sync::Arc;

use regex::Regex;

use super::cgroup::CgroupRef;
pub use super::docker::ContainerMeta;
use super::procs::environ_value;
use crate::config::attribution::{
    AttributionConfig, DEFAULT_ENV_VAR, ProjectFrom, RuleConfig, sanitize_project,
};

/// What the Kubernetes lookup knows of a pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodMeta {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

/// What resolution looks at.
pub struct ProcessFacts<'a> {
    pub pid: u32,
    pub uid: Option<u32>,
    pub user: Option<&'a str>,
    pub cmdline: &'a str,
    /// Raw `/proc/PID/environ`.
    pub environ: &'a [u8],
    pub cgroup: &'a CgroupRef,
    pub pod: Option<&'a PodMeta>,
    pub container: Option<&'a ContainerMeta>,
}

/// The project of a process and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolution {
    pub project: Arc<str>,
    /// Index of the matching rule; `None` when no rule matched.
    pub rule: Option<usize>,
    pub reason: String,
}

struct Rule {
    config: RuleConfig,
    env_value: Option<Regex>,
    cmdline: Option<Regex>,
    project: Option<Arc<str>>,
}

/// Compiled rules.
pub struct Resolver {
    rules: Vec<Rule>,
    unassigned: Arc<str>,
}

/// `*` any run of characters, `?` one character; everything else literal.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

impl Resolver {
    /// Compiles `config.rules` (or the defaults). The configuration was validated
    /// ([`crate::config::AgentConfig::validate`]); a rule that still does not compile is
    /// named in the error.
    pub fn new(config: &AttributionConfig) -> Result<Resolver, String> {
        let mut rules = Vec::new();
        for (i, c) in config.effective_rules().into_iter().enumerate() {
            let regex = |k: &str, v: &Option<String>| -> Result<Option<Regex>, String> {
                v.as_ref()
                    .map(|r| {
                        Regex::new(r).map_err(|e| {
                            format!("attribution.rules[{i}].{k}: {r:?} is not a valid regular expression: {e}")
                        })
                    })
                    .transpose()
            };
            let env_value = regex("env_value", &c.env_value)?;
            let cmdline = regex("cmdline", &c.cmdline)?;
            let project = match &c.project {
                Some(p) => Some(Arc::from(
                    sanitize_project(p)
                        .map_err(|e| format!("attribution.rules[{i}].project: {p:?}: {e}"))?
                        .as_str(),
                )),
                None => None,
            };
            rules.push(Rule {
                config: c,
                env_value,
                cmdline,
                project,
            });
        }
        Ok(Resolver {
            rules,
            unassigned: Arc::from(config.unassigned_project.trim()),
        })
    }

    /// True when some rule reads processes' environment (`/proc/PID/environ`).
    pub fn needs_environ(&self) -> bool {
        self.rules.iter().any(|r| r.config.needs_environ())
    }

    /// True when some rule looks at container names or labels (Docker's state is read).
    pub fn needs_containers(&self) -> bool {
        self.rules.iter().any(|r| {
            r.config.container.is_some()
                || r.config.container_label.is_some()
                || matches!(
                    r.config.project_from,
                    Some(ProjectFrom::ContainerName | ProjectFrom::ContainerLabel)
                )
        })
    }

    /// True when some rule looks at pods (the Kubernetes lookup is needed).
    pub fn needs_pods(&self) -> bool {
        self.rules.iter().any(|r| {
            r.config.pod_namespace.is_some()
                || r.config.pod_label.is_some()
                || r.config.pod_annotation.is_some()
        })
    }

    pub fn resolve(&self, facts: &ProcessFacts) -> Resolution {
        for (i, rule) in self.rules.iter().enumerate() {
            if let Some((project, why)) = rule.apply(facts) {
                return Resolution {
                    project,
                    rule: Some(i),
                    reason: format!("rule {i}: {why}"),
                };
            }
        }
        Resolution {
            project: self.unassigned.clone(),
            rule: None,
            reason: "no rule matched".into(),
        }
    }
}

impl Rule {
    /// The project and a short explanation when every matcher matches.
    fn apply(&self, f: &ProcessFacts) -> Option<(Arc<str>, String)> {
        let c = &self.config;
        let mut why: Vec<String> = Vec::new();
        let env_name = c.env.as_deref().unwrap_or(DEFAULT_ENV_VAR);
        if let Some(name) = &c.env {
            let value = environ_value(f.environ, name)?;
            if let Some(re) = &self.env_value {
                if !re.is_match(value) {
                    return None;
                }
            }
            why.push(format!("env {name}={value}"));
        }
        if let Some(g) = &c.systemd_unit {
            let unit = f.cgroup.unit.as_deref()?;
            if !glob_match(g, unit) {
                return None;
            }
            why.push(format!("systemd unit {unit}"));
        }
        if let Some(g) = &c.container {
            let id = &f.cgroup.container.as_ref()?.id;
            let name = f.container.map(|m| m.name.as_str());
            if !(glob_match(g, id) || name.is_some_and(|n| glob_match(g, n))) {
                return None;
            }
            why.push(format!(
                "container {}",
                name.unwrap_or(&id[..id.len().min(12)])
            ));
        }
        if let Some(k) = &c.container_label {
            let v = f.container?.labels.get(k)?;
            why.push(format!("container label {k}={v}"));
        }
        if let Some(g) = &c.pod_namespace {
            let pod = f.pod?;
            if !glob_match(g, &pod.namespace) {
                return None;
            }
            why.push(format!("pod {}/{}", pod.namespace, pod.name));
        }
        if let Some(k) = &c.pod_label {
            let v = f.pod?.labels.get(k)?;
            why.push(format!("pod label {k}={v}"));
        }
        if let Some(k) = &c.pod_annotation {
            let v = f.pod?.annotations.get(k)?;
            why.push(format!("pod annotation {k}={v}"));
        }
        if let Some(u) = &c.user {
            let by_name = f.user.is_some_and(|name| name == u);
            let by_uid = f.uid.is_some_and(|uid| u.parse::<u32>() == Ok(uid));
            if !(by_name || by_uid) {
                return None;
            }
            why.push(format!("user {u}"));
        }
        if let Some(re) = &self.cmdline {
            if !re.is_match(f.cmdline) {
                return None;
            }
            why.push(format!("cmdline matches {}", re.as_str()));
        }
        let project: Arc<str> = match (&self.project, c.project_from) {
            (Some(p), _) => p.clone(),
            (None, Some(from)) => {
                let raw: String = match from {
                    ProjectFrom::Env => environ_value(f.environ, env_name)?.to_string(),
                    ProjectFrom::SystemdUnit => {
                        let u = f.cgroup.unit.as_deref()?;
                        u.strip_suffix(".service").unwrap_or(u).to_string()
                    }
                    ProjectFrom::PodNamespace => f.pod?.namespace.clone(),
                    ProjectFrom::PodName => f.pod?.name.clone(),
                    ProjectFrom::PodLabel => f.pod?.labels.get(c.pod_label.as_deref()?)?.clone(),
                    ProjectFrom::PodAnnotation => f
                        .pod?
                        .annotations
                        .get(c.pod_annotation.as_deref()?)?
                        .clone(),
                    ProjectFrom::ContainerName => f.container?.name.clone(),
                    ProjectFrom::ContainerLabel => f
                        .container?
                        .labels
                        .get(c.container_label.as_deref()?)?
                        .clone(),
                    ProjectFrom::User => f
                        .user
                        .map(str::to_string)
                        .or_else(|| f.uid.map(|u| u.to_string()))?,
                };
                // A value that is not a valid project name does not match: next rule.
                Arc::from(sanitize_project(&raw).ok()?.as_str())
            }
            (None, None) => return None,
        };
        Some((project, why.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribution::cgroup::parse_proc_cgroup;
    use crate::config::attribution::DEFAULT_POD_LABEL;

    fn facts<'a>(
        env: &'a [u8],
        cgroup: &'a CgroupRef,
        pod: Option<&'a PodMeta>,
    ) -> ProcessFacts<'a> {
        ProcessFacts {
            pid: 42,
            uid: Some(1001),
            user: Some("alice"),
            cmdline: "python -m vllm.entrypoints.api_server",
            environ: env,
            cgroup,
            pod,
            container: None,
        }
    }

    fn resolver(rules: Vec<RuleConfig>) -> Resolver {
        Resolver::new(&AttributionConfig {
            rules,
            ..AttributionConfig::default()
        })
        .unwrap()
    }

    fn pod() -> PodMeta {
        PodMeta {
            namespace: "chatbot-prod".into(),
            name: "vllm-0".into(),
            labels: [("app".to_string(), "vllm".to_string())].into(),
            annotations: [("team".to_string(), "citizen-services".to_string())].into(),
        }
    }

    #[test]
    fn globs() {
        assert!(glob_match("vllm-*.service", "vllm-llama.service"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "ac"));
        assert!(!glob_match("vllm-*.service", "vllm.service"));
        assert!(glob_match("*a*b*", "xxaxxbxx"));
        assert!(!glob_match("*a*b", "xxaxxbxxc"));
    }

    #[test]
    fn default_rules_env_then_pod_label_then_namespace() {
        let r = Resolver::new(&AttributionConfig::default()).unwrap();
        let cg = CgroupRef::default();
        let env = b"A=1\0EMPREINTE_PROJECT=chatbot\0";
        let res = r.resolve(&facts(env, &cg, None));
        assert_eq!((&*res.project, res.rule), ("chatbot", Some(0)));
        assert!(
            res.reason.contains("EMPREINTE_PROJECT=chatbot"),
            "{}",
            res.reason
        );

        let mut p = pod();
        assert_eq!(
            &*r.resolve(&facts(b"", &cg, Some(&p))).project,
            "chatbot-prod"
        );
        p.labels
            .insert(DEFAULT_POD_LABEL.into(), "summaries".into());
        let res = r.resolve(&facts(b"", &cg, Some(&p)));
        assert_eq!((&*res.project, res.rule), ("summaries", Some(1)));

        let res = r.resolve(&facts(b"", &cg, None));
        assert_eq!((&*res.project, res.rule), ("unassigned", None));
    }

    #[test]
    fn combined_matchers_must_all_match_and_the_first_rule_wins() {
        let r = resolver(vec![
            RuleConfig {
                systemd_unit: Some("vllm-*.service".into()),
                user: Some("bob".into()),
                project: Some("never".into()),
                ..RuleConfig::default()
            },
            RuleConfig {
                systemd_unit: Some("vllm-*.service".into()),
                cmdline: Some("vllm\\.entrypoints".into()),
                project_from: Some(ProjectFrom::SystemdUnit),
                ..RuleConfig::default()
            },
            RuleConfig {
                user: Some("1001".into()),
                project: Some("by-uid".into()),
                ..RuleConfig::default()
            },
        ]);
        let cg = parse_proc_cgroup("0::/system.slice/vllm-llama.service\n");
        let res = r.resolve(&facts(b"", &cg, None));
        assert_eq!((&*res.project, res.rule), ("vllm-llama", Some(1)));
        let other = parse_proc_cgroup("0::/system.slice/tgi.service\n");
        assert_eq!(&*r.resolve(&facts(b"", &other, None)).project, "by-uid");
    }

    #[test]
    fn pod_annotations_env_values_and_containers() {
        let r = resolver(vec![
            RuleConfig {
                env: Some("TEAM".into()),
                env_value: Some("^data-".into()),
                project: Some("data".into()),
                ..RuleConfig::default()
            },
            RuleConfig {
                pod_annotation: Some("team".into()),
                project_from: Some(ProjectFrom::PodAnnotation),
                ..RuleConfig::default()
            },
            RuleConfig {
                container: Some("4f9a*".into()),
                project: Some("docker-jobs".into()),
                ..RuleConfig::default()
            },
        ]);
        let cg = CgroupRef::default();
        assert_eq!(
            &*r.resolve(&facts(b"TEAM=data-science\0", &cg, None)).project,
            "data"
        );
        assert_eq!(
            &*r.resolve(&facts(b"TEAM=web\0", &cg, None)).project,
            "unassigned"
        );
        let p = pod();
        assert_eq!(
            &*r.resolve(&facts(b"", &cg, Some(&p))).project,
            "citizen-services"
        );
        let docker =
            parse_proc_cgroup("0::/system.slice/docker-4f9a1c3e5b7d2f8a6c0e4b1d3f5a7c9e.scope\n");
        assert_eq!(
            &*r.resolve(&facts(b"", &docker, None)).project,
            "docker-jobs"
        );
    }

    #[test]
    fn docker_container_names_and_labels() {
        let r = resolver(vec![
            RuleConfig {
                container_label: Some("empreinte.io/project".into()),
                project_from: Some(ProjectFrom::ContainerLabel),
                ..RuleConfig::default()
            },
            RuleConfig {
                container: Some("ocr-*".into()),
                project_from: Some(ProjectFrom::ContainerName),
                ..RuleConfig::default()
            },
        ]);
        let cg = parse_proc_cgroup(&format!(
            "0::/system.slice/docker-{}.scope\n",
            "ab".repeat(32)
        ));
        let mut meta = ContainerMeta {
            name: "ocr-worker".into(),
            labels: BTreeMap::new(),
        };
        fn with<'a>(m: &'a ContainerMeta, cg: &'a CgroupRef) -> ProcessFacts<'a> {
            ProcessFacts {
                container: Some(m),
                ..facts(b"", cg, None)
            }
        }
        let res = r.resolve(&with(&meta, &cg));
        assert_eq!((&*res.project, res.rule), ("ocr-worker", Some(1)));
        assert!(
            res.reason.contains("container ocr-worker"),
            "{}",
            res.reason
        );
        meta.labels
            .insert("empreinte.io/project".into(), "archives".into());
        assert_eq!(&*r.resolve(&with(&meta, &cg)).project, "archives");
        assert_eq!(
            &*r.resolve(&facts(b"", &cg, None)).project,
            "unassigned",
            "no metadata, no match"
        );
    }

    #[test]
    fn an_invalid_project_value_falls_through_to_the_next_rule() {
        let r = Resolver::new(&AttributionConfig::default()).unwrap();
        let cg = CgroupRef::default();
        let long = format!("EMPREINTE_PROJECT={}\0", "x".repeat(200));
        assert_eq!(
            &*r.resolve(&facts(long.as_bytes(), &cg, None)).project,
            "unassigned"
        );
        assert_eq!(
            &*r.resolve(&facts(b"EMPREINTE_PROJECT=  spaced  \0", &cg, None))
                .project,
            "spaced"
        );
    }
}
