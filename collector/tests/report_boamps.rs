#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The open exports of the hand-built October (see `report_fixture`): one BoAmps document
//! per use, valid against Boavizta's official schemas (draft-04, `$ref`s resolved from the
//! local copies in `shared/reference/boamps`, never fetched) with the measures adding up
//! to the use's energy; and the open-data CSV, one line per use, whose columns add up to
//! the report's totals.
//!
//! Validation runs Python's `jsonschema` from the tools' virtual environment that
//! `scripts/test` installs (beside `check-jsonschema`); in CI a missing validator or
//! missing schemas fail the test.

mod common;
mod report_fixture;

use std::path::{Path, PathBuf};

use empreinte_collector::report::boamps;
use report_fixture::*;

fn in_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// The directory of the BoAmps schemas: `$EMPREINTE_BOAMPS_SCHEMAS`, else the first
/// `shared/reference/boamps` beside the repository or one of its parents.
fn schemas() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("EMPREINTE_BOAMPS_SCHEMAS") {
        return Some(PathBuf::from(p));
    }
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .map(|a| a.join("shared/reference/boamps"))
        .find(|p| p.join("report_schema.json").is_file())
}

/// A Python with `jsonschema`: the one beside `check-jsonschema` on PATH.
fn python() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .filter(|d| d.join("check-jsonschema").is_file())
        .map(|d| d.join("python3"))
        .find(|p| {
            std::process::Command::new(p)
                .args(["-c", "import jsonschema, referencing"])
                .output()
                .is_ok_and(|o| o.status.success())
        })
}

#[tokio::test]
async fn every_use_has_a_boamps_document_valid_against_the_official_schema() {
    let (h, _) = october().await;
    let data = build(&h, "2025-10").await.unwrap();
    let config = h.state.planner.config();
    let docs = boamps::documents(&data, config).unwrap();
    let names: Vec<&str> = docs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "2025-10-batch.boamps.json",
            "2025-10-chat.boamps.json",
            "2025-10-web.boamps.json"
        ]
    );
    // The measures of a use add up to its energy at the meter (kWh), source by source.
    let web: serde_json::Value = serde_json::from_str(&docs[2].1).unwrap();
    let measured: f64 = web["measures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["powerConsumption"].as_f64().unwrap())
        .sum();
    assert!((measured - (0.5 + 0.25) * 745.0).abs() < 1e-6, "{measured}");
    assert_eq!(web["infrastructure"]["infraType"], "onPremise");
    let chat: serde_json::Value = serde_json::from_str(&docs[1].1).unwrap();
    let gpus = &chat["infrastructure"]["components"][1];
    assert_eq!(
        (gpus["componentType"].as_str(), gpus["nbComponent"].as_u64()),
        (Some("gpu"), Some(2))
    );
    // chat runs in Germany at 400 g/kWh (facility energy).
    assert!(
        (chat["environment"]["powerSourceCarbonIntensity"]
            .as_f64()
            .unwrap()
            - 400.0)
            .abs()
            < 1e-6
    );
    let batch: serde_json::Value = serde_json::from_str(&docs[0].1).unwrap();
    assert_eq!(batch["quality"], "low", "all estimated");

    let (Some(schemas), Some(python)) = (schemas(), python()) else {
        assert!(
            !in_ci(),
            "CI=true: the BoAmps schemas and a Python with jsonschema are required"
        );
        eprintln!("note: skipping the schema validation (no schemas or no jsonschema)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (name, text) in &docs {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        files.push(p);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/boamps_validate.py");
    let out = std::process::Command::new(&python)
        .arg(&script)
        .arg(&schemas)
        .args(&files)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("3 documents, 0 problems"), "{said}");

    // The validator does reject a document without its measures (the test can fail).
    let mut broken: serde_json::Value = serde_json::from_str(&docs[0].1).unwrap();
    broken.as_object_mut().unwrap().remove("measures");
    let bad = dir.path().join("broken.json");
    std::fs::write(&bad, broken.to_string()).unwrap();
    let out = std::process::Command::new(&python)
        .arg(&script)
        .arg(&schemas)
        .arg(&bad)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test]
async fn the_open_data_csv_has_one_line_per_use_adding_up_to_the_totals() {
    let (h, _) = october().await;
    let data = build(&h, "2025-10").await.unwrap();
    let text = boamps::open_data_csv(&data).unwrap();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    assert_eq!(
        reader.headers().unwrap().iter().collect::<Vec<_>>(),
        boamps::OPEN_DATA_COLUMNS
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
    assert_eq!(rows.len(), 3);
    let sum = |col: usize| {
        rows.iter()
            .map(|r| r[col].parse::<f64>().unwrap())
            .sum::<f64>()
    };
    let t = &data.totals;
    assert!((sum(3) - t.energy_kwh).abs() < 1e-5, "{text}");
    assert!((sum(4) - t.facility_energy_kwh).abs() < 1e-5, "{text}");
    assert!(
        (sum(9) - (t.co2e_kg_location + t.co2e_kg_embodied)).abs() < 1e-5,
        "{text}"
    );
    assert_eq!(&rows[0][0], "2025-10");
    assert_eq!(&rows[0][2], "chat");
}
