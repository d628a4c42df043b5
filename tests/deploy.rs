//! The deployment files as an administrator applies them: systemd units accepted by
//! `systemd-analyze verify`, Kubernetes manifests valid against the Kubernetes API's
//! schemas, and the compose file and Dockerfile pointing at files that exist.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod tools;

use std::path::{Path, PathBuf};
use std::process::Command;

use tools::{read, root, tool};

const UNITS: [&str; 2] = ["empreinte-agent.service", "empreinte-collector.service"];

/// The units are verified as installed: in a scratch root holding the system's own
/// units, the units byte for byte, and an executable at their `ExecStart` path.
#[test]
fn systemd_units_pass_systemd_analyze_verify() {
    let Some(analyze) = tool("systemd-analyze", "--version", "Debian package systemd") else {
        return;
    };
    let scratch = tempfile::tempdir().unwrap();
    let r = scratch.path();
    let system = Path::new("/usr/lib/systemd/system");
    assert!(
        system.join("multi-user.target").exists(),
        "systemd's own units are missing from {}",
        system.display()
    );
    std::fs::create_dir_all(r.join("usr/lib/systemd")).unwrap();
    let copied = Command::new("cp")
        .arg("-a")
        .arg(system)
        .arg(r.join("usr/lib/systemd/system"))
        .status()
        .unwrap();
    assert!(copied.success());
    std::fs::create_dir_all(r.join("etc/systemd/system")).unwrap();
    std::fs::create_dir_all(r.join("usr/local/bin")).unwrap();
    std::fs::copy(
        env!("CARGO_BIN_EXE_empreinte"),
        r.join("usr/local/bin/empreinte"),
    )
    .unwrap();
    let mut args = vec![
        "verify".to_string(),
        "--man=no".into(),
        format!("--root={}", r.display()),
    ];
    for unit in UNITS {
        let text = read(&root().join("deploy/systemd").join(unit));
        for line in text.lines().filter(|l| l.starts_with("ExecStart=")) {
            assert!(
                line.starts_with("ExecStart=/usr/local/bin/empreinte "),
                "{unit}: {line}"
            );
        }
        // Hardening the issue asks for, checked on the file itself.
        for needed in [
            "ProtectSystem=strict",
            "NoNewPrivileges=yes",
            "CapabilityBoundingSet=\n",
            "StateDirectory=",
        ] {
            assert!(text.contains(needed), "{unit} lacks {needed:?}");
        }
        assert!(text.contains("\nUser=empreinte"), "{unit} runs as root");
        std::fs::write(r.join("etc/systemd/system").join(unit), text).unwrap();
        args.push(format!("/etc/systemd/system/{unit}"));
    }
    let out = Command::new(analyze).args(&args).output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Unknown or malformed settings are only warned about: any word from it fails.
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );
}

/// The tmpfiles rule and the udev rule give the agent's group, and only it, read access
/// to the RAPL counters.
#[test]
fn rapl_permission_rules_are_group_read_only() {
    let tmpfiles = read(&root().join("deploy/systemd/empreinte-rapl.conf"));
    let rules: Vec<&str> = tmpfiles
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .collect();
    assert_eq!(rules.len(), 2, "{rules:?}");
    for r in rules {
        let f: Vec<&str> = r.split_whitespace().collect();
        assert_eq!(f[0], "z", "{r}");
        assert!(f[1].ends_with("/energy_uj"), "{r}");
        assert_eq!((f[2], f[3], f[4]), ("0440", "root", "empreinte"), "{r}");
    }
    let udev = read(&root().join("deploy/udev/90-empreinte-rapl.rules"));
    assert!(udev.contains("chgrp empreinte /sys%p/energy_uj"), "{udev}");
    assert!(udev.contains("chmod 0440 /sys%p/energy_uj"), "{udev}");
    let agent = read(&root().join("deploy/systemd/empreinte-agent.service"));
    assert!(agent.contains("\nGroup=empreinte\n"), "{agent}");
}

fn kustomize_resources() -> Vec<String> {
    kustomize_resources_of("deploy/kubernetes/kustomization.yaml")
}

fn kustomize_resources_of(file: &str) -> Vec<String> {
    let k = read(&root().join(file));
    let mut out = Vec::new();
    let mut inside = false;
    for line in k.lines() {
        if line.starts_with("resources:") {
            inside = true;
        } else if inside && line.starts_with("  - ") {
            out.push(line.trim_start_matches("  - ").trim().to_string());
        } else if !line.starts_with(' ') {
            inside = false;
        }
    }
    out
}

/// Every manifest that kustomization.yaml lists validates, strictly (no unknown field),
/// against the schemas of the Kubernetes API; the only kind without a schema is the
/// Prometheus Operator's ServiceMonitor.
#[test]
fn kubernetes_manifests_match_the_api_schemas() {
    let resources = kustomize_resources();
    assert!(
        resources.len() >= 5,
        "kustomization.yaml lists {resources:?}"
    );
    let dir = root().join("deploy/kubernetes");
    let mut kinds = String::new();
    for r in &resources {
        assert!(
            dir.join(r).is_file(),
            "kustomization.yaml lists {r}, missing"
        );
        kinds.push_str(&read(&dir.join(r)));
    }
    for kind in [
        "kind: DaemonSet",
        "kind: Deployment",
        "kind: Service\n",
        "kind: ServiceMonitor",
        "kind: ClusterRole\n",
        "kind: ClusterRoleBinding",
        "kind: ServiceAccount",
        "kind: PersistentVolumeClaim",
    ] {
        assert!(kinds.contains(kind), "no {kind} in the manifests");
    }
    assert!(kinds.contains("hostPID: true"));
    let Some(said) = kubernetes_validate(resources.iter().map(|r| dir.join(r))) else {
        return;
    };
    let mut passed = 0;
    for line in said.lines() {
        if line.contains(" passed for resource ") {
            passed += 1;
        } else {
            assert!(
                line.starts_with("WARN ") && line.contains("kind ServiceMonitor"),
                "kubernetes-validate: {line}\n{said}"
            );
        }
    }
    assert!(passed >= 10, "{said}");
}

/// `kubernetes-validate --strict FILES`, which must succeed: what it said (stdout then
/// stderr); `None` when the tool is not installed (outside CI).
fn kubernetes_validate(files: impl IntoIterator<Item = PathBuf>) -> Option<String> {
    let validate = tool(
        "kubernetes-validate",
        "--version",
        "PyPI package kubernetes-validate, in a virtual environment",
    )?;
    let out = Command::new(validate)
        .arg("--strict")
        .args(files)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "kubernetes-validate: {said}");
    Some(said)
}

/// The PostgreSQL example (three collector replicas, the URL from a Secret) lists files
/// that exist, and its own manifests validate strictly against the Kubernetes API.
#[test]
fn kubernetes_postgresql_example_matches_the_api_schemas() {
    let dir = root().join("deploy/kubernetes/postgresql");
    let resources = kustomize_resources_of("deploy/kubernetes/postgresql/kustomization.yaml");
    for r in &resources {
        assert!(
            dir.join(r).is_file(),
            "the PostgreSQL example lists {r}, missing"
        );
    }
    let own: Vec<_> = resources.iter().filter(|r| !r.starts_with("../")).collect();
    let collector = read(&dir.join("collector.yaml"));
    for want in [
        "replicas: 3",
        "secretKeyRef:",
        "EMPREINTE_DATABASE_URL",
        "kind: Service\n",
    ] {
        assert!(
            collector.contains(want),
            "no {want} in the PostgreSQL example"
        );
    }
    assert!(
        !collector.contains("postgres://"),
        "no database URL in the manifests"
    );
    let Some(said) = kubernetes_validate(own.iter().map(|r| dir.join(r))) else {
        return;
    };
    let passed = said
        .lines()
        .filter(|l| l.contains(" passed for resource "))
        .count();
    assert_eq!(passed, 4, "{said}");
}

/// The compose file mounts files that exist, and the Dockerfile builds the binary the
/// units and manifests run.
#[test]
fn compose_and_dockerfile_name_files_that_exist() {
    let compose = read(&root().join("compose.yaml"));
    let mut mounts = 0;
    for line in compose.lines() {
        let l = line.trim().trim_start_matches("- ");
        if let Some(rest) = l.strip_prefix("./") {
            let path = rest.split(':').next().unwrap();
            assert!(root().join(path).exists(), "compose.yaml mounts ./{path}");
            mounts += 1;
        }
    }
    assert!(mounts >= 4, "{compose}");
    let docker = read(&root().join("Dockerfile"));
    assert!(
        docker.contains("cargo build --release --locked"),
        "{docker}"
    );
    assert!(docker.contains("\nUSER "), "the image runs as root");
    assert!(
        docker.matches("\nFROM ").count() + usize::from(docker.starts_with("FROM ")) >= 2,
        "not multi-stage"
    );
}

/// systemd-tmpfiles applies empreinte-rapl.conf to a copy of a real powercap layout
/// (zones under devices/, symlinks in class/powercap): every energy counter, and nothing
/// else, becomes readable to the `empreinte` group only.
#[test]
fn tmpfiles_rule_gives_the_agent_group_the_rapl_counters() {
    use std::os::unix::fs::MetadataExt;
    let Some(tmpfiles) = tool("systemd-tmpfiles", "--version", "Debian package systemd") else {
        return;
    };
    let fp = empreinte_testkit::powercap::FakePowercap::intel_two_socket();
    let scratch = tempfile::tempdir().unwrap();
    let r = scratch.path();
    let copied = Command::new("cp")
        .arg("-a")
        .arg(fp.temp_dir())
        .arg(r.join("sys"))
        .status()
        .unwrap();
    assert!(copied.success());
    std::fs::create_dir_all(r.join("etc")).unwrap();
    std::fs::write(r.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(r.join("etc/group"), "root:x:0:\nempreinte:x:4242:\n").unwrap();
    let out = Command::new(tmpfiles)
        .arg(format!("--root={}", r.display()))
        .arg("--create")
        .arg(root().join("deploy/systemd/empreinte-rapl.conf"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "systemd-tmpfiles: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut counters = 0;
    let mut stack = vec![r.join("sys/devices")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else if e.file_name() == "energy_uj" {
                assert_eq!(m.mode() & 0o777, 0o440, "{}", e.path().display());
                assert_eq!((m.uid(), m.gid()), (0, 4242), "{}", e.path().display());
                counters += 1;
            } else {
                assert_ne!(m.gid(), 4242, "{} changed", e.path().display());
            }
        }
    }
    assert_eq!(counters, fp.zones().len(), "every zone's counter");
}

/// The TOML embedded in `name: |` of a Kubernetes ConfigMap.
fn embedded(manifest: &str, key: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in manifest.lines() {
        if line.trim() == format!("{key}: |") {
            inside = true;
        } else if inside {
            if line.starts_with("    ") || line.trim().is_empty() {
                out.push_str(line.strip_prefix("    ").unwrap_or(""));
                out.push('\n');
            } else {
                break;
            }
        }
    }
    assert!(!out.trim().is_empty(), "no {key} in the manifest");
    out
}

/// The configurations the manifests embed are valid for the binary, and every flag the
/// units, manifests and compose file give the binary exists.
#[test]
fn shipped_configs_and_flags_are_accepted_by_the_binary() {
    let k8s = root().join("deploy/kubernetes");
    // In the pod, NODE_NAME (from the pod's spec) names the node whose pods it looks up.
    let agent_toml = embedded(&read(&k8s.join("agent.yaml")), "agent.toml").replace(
        "mode = \"api\"\n",
        "mode = \"api\"\nnode_name = \"node-1\"\n",
    );
    let agent = empreinte_agent::config::AgentConfig::from_toml(&agent_toml, "agent.yaml")
        .unwrap_or_else(|e| panic!("agent.yaml's agent.toml: {e}"));
    let agent_dbg = format!("{agent:?}");
    assert!(
        agent_dbg.contains("empreinte-collector.empreinte.svc:9820"),
        "{agent_dbg}"
    );
    empreinte_collector::config::CollectorConfig::from_toml(&embedded(
        &read(&k8s.join("collector.yaml")),
        "collector.toml",
    ))
    .unwrap_or_else(|e| panic!("collector.yaml's collector.toml: {e}"));

    let help = |cmd: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_empreinte"))
            .args([cmd, "--help"])
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    let (agent_help, collector_help) = (help("agent"), help("collector"));
    let mut checked = 0;
    for file in [
        "compose.yaml",
        "deploy/kubernetes/agent.yaml",
        "deploy/kubernetes/collector.yaml",
        "deploy/systemd/empreinte-agent.service",
        "deploy/systemd/empreinte-collector.service",
    ] {
        let text = read(&root().join(file));
        // Each command line: the subcommand, then its flags (comments skipped; a word
        // after a flag is its value, not a subcommand).
        let mut command = "";
        let mut previous = "";
        let words = text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .flat_map(|l| l.split(|c: char| c.is_whitespace() || "[]\",".contains(c)))
            .filter(|w| !w.is_empty());
        for word in words {
            if word.ends_with(':') || word == "---" {
                command = ""; // a YAML key: another service or setting
            } else if !previous.starts_with("--") {
                match word {
                    "agent" | "collector" => command = word,
                    "token" | "up" => command = "",
                    _ => {}
                }
            }
            let is_flag = word
                .strip_prefix("--")
                .is_some_and(|f| f.starts_with(|c: char| c.is_ascii_lowercase()));
            if is_flag && !command.is_empty() {
                let flag = word.split('=').next().unwrap();
                let h = if command == "agent" {
                    &agent_help
                } else {
                    &collector_help
                };
                assert!(
                    h.contains(&format!("{flag} ")) || h.contains(&format!("{flag}=")),
                    "{file}: `empreinte {command}` has no flag {flag}"
                );
                checked += 1;
            }
            previous = word;
        }
    }
    assert!(checked >= 15, "{checked} flags checked");
}

/// compose.yaml against the Compose specification's schema (vendored by
/// check-jsonschema: no network).
#[test]
fn compose_file_matches_the_compose_specification() {
    let Some(check) = tool(
        "check-jsonschema",
        "--version",
        "PyPI package check-jsonschema, in a virtual environment",
    ) else {
        return;
    };
    let out = Command::new(check)
        .args(["--builtin-schema", "vendor.compose-spec"])
        .arg(root().join("compose.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "compose.yaml: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
