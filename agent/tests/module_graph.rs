//! The agent's module graph, read from its sources: the configuration is a leaf (it
//! imports no runtime module), and the sampler and the attribution do not import each
//! other both ways. `cargo test -p empreinte-agent --test module_graph -- --nocapture`
//! prints the graph of the top-level modules.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The modules a file names through `crate::NAME` (comments left out), and the
/// `super::NAME` of files one level down in a directory module.
fn references(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
        // `use crate::{a, b}` is not used in this crate; a grouped import would be caught
        // by the name `{` being skipped, so refuse it to keep this test honest.
        assert!(
            !code.contains("crate::{"),
            "grouped crate import, split it: {line}"
        );
    }
    out
}

/// Edges between top-level modules (`config`, `sampler`, `attribution`...), and between
/// files, keyed by the path under `src/`.
fn graph() -> (
    BTreeMap<String, BTreeSet<String>>,
    BTreeMap<String, BTreeSet<String>>,
) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    let (mut modules, mut by_file) = (BTreeMap::new(), BTreeMap::new());
    for f in all {
        let rel = f.strip_prefix(&src).unwrap().to_string_lossy().to_string();
        let top = rel.split(['/', '.']).next().unwrap().to_string();
        if top == "lib" || top == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        // Unit tests may reach anywhere; only the code the crate runs counts.
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        let refs = references(code);
        let entry: &mut BTreeSet<String> = modules.entry(top.clone()).or_default();
        entry.extend(refs.iter().filter(|r| **r != top).cloned());
        by_file.insert(rel, refs);
    }
    (modules, by_file)
}

fn reaches(g: &BTreeMap<String, BTreeSet<String>>, from: &str, to: &str) -> bool {
    let mut seen = BTreeSet::new();
    let mut stack = vec![from.to_string()];
    while let Some(m) = stack.pop() {
        if m == to {
            return true;
        }
        if seen.insert(m.clone()) {
            stack.extend(g.get(&m).into_iter().flatten().cloned());
        }
    }
    false
}

#[test]
fn the_configuration_is_a_leaf() {
    let (modules, by_file) = graph();
    for (m, refs) in &modules {
        eprintln!(
            "{m} -> {}",
            refs.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    let config = &modules["config"];
    assert!(
        config.is_empty(),
        "config imports runtime modules: {config:?}"
    );
    let offenders: Vec<&String> = by_file
        .iter()
        .filter(|(f, refs)| f.starts_with("config") && refs.iter().any(|r| r != "config"))
        .map(|(f, _)| f)
        .collect();
    assert!(offenders.is_empty(), "{offenders:?}");
    // And so no runtime module is imported by config, directly or not.
    for m in modules.keys().filter(|m| *m != "config") {
        assert!(!reaches(&modules, "config", m), "config reaches {m}");
    }
}

#[test]
fn the_reference_reader_sees_imports() {
    let refs = references(
        "use crate::config::AgentConfig;\n// crate::sampler in a comment\nlet x = crate::clock::unix_ms();\n",
    );
    assert_eq!(refs.into_iter().collect::<Vec<_>>(), ["clock", "config"]);
}
#[test]
fn sampler_and_attribution_do_not_import_each_other() {
    let (modules, _) = graph();
    assert!(
        !(reaches(&modules, "attribution", "sampler")
            && reaches(&modules, "sampler", "attribution")),
        "sampler <-> attribution: {:?} / {:?}",
        modules.get("sampler"),
        modules.get("attribution")
    );
    assert!(
        !reaches(&modules, "attribution", "sampler"),
        "the attribution is handed an interval; it does not know the sampler: {:?}",
        modules.get("attribution")
    );
}

#[test]
fn default_hardware_paths_live_in_the_configuration_alone() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    let defaults = [
        "\"/sys/class/powercap\"",
        "\"/proc\"",
        "\"libnvidia-ml.so.1\"",
        "\"/var/lib/docker\"",
        "\"/etc/passwd\"",
        "\"/var/run/secrets/kubernetes.io/serviceaccount/token\"",
    ];
    let mut found_in_config = BTreeSet::new();
    for f in all {
        let rel = f.strip_prefix(&src).unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(&f).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        for d in defaults {
            if code.contains(d) {
                assert!(rel.starts_with("config/"), "{d} appears in {rel}");
                found_in_config.insert(d);
            }
        }
    }
    assert_eq!(
        found_in_config.len(),
        defaults.len(),
        "every default is declared in config/: {found_in_config:?}"
    );
}
