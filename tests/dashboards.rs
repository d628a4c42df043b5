//! The Grafana dashboards: the committed French and English JSON are exactly what the
//! generator renders from the one source in dashboards/src, every text is translated,
//! and no panel reads a metric that neither the agent, the collector, the rules nor the
//! inference servers export.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod dashgen;

use std::collections::BTreeSet;

use dashgen::*;

/// The committed file for a rendered dashboard. `UPDATE_EXPECT=1 cargo test --test
/// dashboards` rewrites them (expect-test, the one golden-file mechanism of the tests).
fn committed(path: &str) -> expect_test::ExpectFile {
    match path {
        "grafana/en/fleet.json" => expect_test::expect_file!["../dashboards/grafana/en/fleet.json"],
        "grafana/en/footprint.json" => {
            expect_test::expect_file!["../dashboards/grafana/en/footprint.json"]
        }
        "grafana/en/inference.json" => {
            expect_test::expect_file!["../dashboards/grafana/en/inference.json"]
        }
        "grafana/fr/fleet.json" => expect_test::expect_file!["../dashboards/grafana/fr/fleet.json"],
        "grafana/fr/footprint.json" => {
            expect_test::expect_file!["../dashboards/grafana/fr/footprint.json"]
        }
        "grafana/fr/inference.json" => {
            expect_test::expect_file!["../dashboards/grafana/fr/inference.json"]
        }
        other => panic!("dashboards/{other}: a new dashboard needs its line in `committed`"),
    }
}

#[test]
fn committed_dashboards_are_what_the_generator_renders() {
    let dir = dashboards_dir();
    for (path, text) in render_all() {
        committed(&path.to_string_lossy()).assert_eq(&text);
    }
    // Nothing else lies in the language folders (no hand-kept copy).
    for lang in LANGS {
        let mut names: Vec<String> = std::fs::read_dir(dir.join("grafana").join(lang))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let expected: Vec<String> = DASHBOARDS.iter().map(|d| format!("{d}.json")).collect();
        assert_eq!(names, expected, "dashboards/grafana/{lang}");
    }
}

#[test]
fn every_text_is_translated_and_every_translation_used() {
    let table = table();
    let mut used = BTreeSet::new();
    for lang in LANGS {
        for name in DASHBOARDS {
            let (d, keys) = render(name, lang);
            used.extend(keys);
            let text = d.to_string();
            assert!(!text.contains("@{"), "{name} ({lang}) keeps a key: {text}");
        }
    }
    for (key, texts) in &table {
        assert!(
            used.contains(key),
            "@{{{key}}} is translated but never used"
        );
        for lang in LANGS {
            let t = texts.get(lang).map(String::as_str).unwrap_or_default();
            assert!(!t.trim().is_empty(), "@{{{key}}} has no {lang} text");
        }
    }
    // The two languages differ where people read them.
    let (en, _) = render("footprint", "en");
    let (fr, _) = render("footprint", "fr");
    assert_ne!(en["title"], fr["title"]);
    assert_eq!(fr["panels"][1]["type"], "row");
    assert_eq!(fr["uid"], "empreinte-footprint-fr");
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The metric names the agent and the collector export, read from their sources (any
/// module of either crate may declare a family), and the series the rules record.
fn known_metrics() -> BTreeSet<String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut known = BTreeSet::new();
    let mut files = Vec::new();
    rust_files(&root.join("agent/src"), &mut files);
    rust_files(&root.join("collector/src"), &mut files);
    for file in files {
        let src = std::fs::read_to_string(&file).unwrap();
        for part in src.split('"').skip(1).step_by(2) {
            if part.starts_with("empreinte_") && !part.contains(' ') {
                known.insert(part.to_string());
                for suffix in ["_bucket", "_sum", "_count"] {
                    known.insert(format!("{part}{suffix}"));
                }
            }
        }
    }
    let rules = std::fs::read_to_string(root.join("deploy/prometheus/rules.yml")).unwrap();
    for l in rules.lines() {
        if let Some(r) = l.trim().strip_prefix("- record: ") {
            known.insert(r.trim().to_string());
        }
    }
    // Exported by Prometheus itself.
    known.extend(["up"].map(String::from));
    known
}

#[test]
fn dashboards_and_rules_name_only_exported_metrics() {
    let known = known_metrics();
    assert!(known.contains("empreinte_host_energy_joules_total"));
    assert!(known.contains("empreinte_collector_store_duration_seconds_bucket"));
    let mut names = BTreeSet::new();
    for q in committed_queries() {
        let found = metric_names(&q.expr);
        assert!(
            !found.is_empty(),
            "{} {}: no metric in {}",
            q.file,
            q.panel,
            q.expr
        );
        for n in found {
            assert!(
                known.contains(&n),
                "{} «{}» reads {n}, which nobody exports: {}",
                q.file,
                q.panel,
                q.expr
            );
            names.insert(n);
        }
    }
    let rules = rules();
    assert!(rules.len() >= 14, "{rules:?}");
    for (rule, expr) in rules {
        let found = metric_names(&expr);
        assert!(!found.is_empty(), "rule {rule}: no metric in {expr}");
        for n in found {
            assert!(
                known.contains(&n),
                "rule {rule} reads {n}, which nobody exports: {expr}"
            );
        }
    }
    // The fleet, footprint and inference readers' metrics are all there.
    for n in [
        "empreinte_footprint_energy_joules_total",
        "empreinte_budget_projected_ratio",
        "empreinte_grid_intensity_grams_per_kwh",
        "empreinte_collector_agent_lag_seconds",
        "empreinte_agent_sampling_seconds_total",
        "empreinte_inference_requests_total",
        "empreinte_inference_energy_joules_total",
    ] {
        assert!(names.contains(n), "no dashboard shows {n}");
    }
}

#[test]
fn metric_names_skip_labels_and_strings() {
    let n = metric_names(
        r#"sum by (instance, component) (rate(empreinte_host_energy_joules_total{source="empreinte_x:y"}[5m])) / on (project) project:x:rate5m or up == 0"#,
    );
    let n: Vec<&str> = n.iter().map(String::as_str).collect();
    assert_eq!(
        n,
        [
            "empreinte_host_energy_joules_total",
            "project:x:rate5m",
            "up"
        ]
    );
}

/// Grafana shows the panels where the layout puts them: unique ids, inside the 24-column
/// grid, no two overlapping; every data panel reads the datasource variable and says
/// its unit.
#[test]
fn panels_tile_the_grid_and_say_their_units() {
    for lang in LANGS {
        for name in DASHBOARDS {
            let (d, _) = render(name, lang);
            let panels = d["panels"].as_array().unwrap();
            let mut ids = BTreeSet::new();
            let mut boxes: Vec<(u64, u64, u64, u64, String)> = Vec::new();
            for p in panels {
                let title = p["title"].as_str().unwrap().to_string();
                assert!(
                    ids.insert(p["id"].as_u64().unwrap()),
                    "{name}: id of {title}"
                );
                let g = &p["gridPos"];
                let (x, y, w, h) = (
                    g["x"].as_u64().unwrap(),
                    g["y"].as_u64().unwrap(),
                    g["w"].as_u64().unwrap(),
                    g["h"].as_u64().unwrap(),
                );
                assert!(x + w <= 24 && w > 0 && h > 0, "{name}: {title} {g}");
                for (x2, y2, w2, h2, t2) in &boxes {
                    let apart = x + w <= *x2 || x2 + w2 <= x || y + h <= *y2 || y2 + h2 <= y;
                    assert!(apart, "{name} ({lang}): «{title}» overlaps «{t2}»");
                }
                boxes.push((x, y, w, h, title.clone()));
                if !["row", "text"].contains(&p["type"].as_str().unwrap()) {
                    assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
                    assert!(
                        p["fieldConfig"]["defaults"]["unit"].is_string(),
                        "{name} ({lang}): «{title}» has no unit"
                    );
                }
            }
        }
    }
}
