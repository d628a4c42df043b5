//! `empreinte register check` as the person who keeps the register reads it: a valid
//! register says what it holds (exit 0); a broken one lists every problem at once with
//! its key (exit 1); an unreadable one is an error (exit 2), like the other commands.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;

const FIVE_USES: &str = include_str!("../collector/tests/fixtures/register/five_uses.toml");

#[test]
fn a_valid_register_is_summarised_and_checked_against_the_sites() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("register.toml");
    std::fs::write(&file, FIVE_USES.replace("MONTH", "2026-03")).unwrap();
    let out = run(&["register", "check", file.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("valid — 5 uses, 3 departments"), "{stdout}");
    assert!(stdout.contains("sites not checked"), "{stdout}");
    // With the collector's configuration, the sites are checked: "mairie" is unknown there.
    let config = dir.path().join("collector.toml");
    std::fs::write(
        &config,
        format!("register_file = {:?}\n", file.to_str().unwrap()),
    )
    .unwrap();
    let out = run(&["register", "check", "--config", config.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("use[0].hosting.site: \"mairie\" is not a site"),
        "{stdout}"
    );
    assert!(stdout.contains("use[1].hosting.site"), "{stdout}");
}

#[test]
fn a_broken_register_lists_every_problem_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("register.toml");
    let broken = FIVE_USES
        .replace("MONTH", "2026-3")
        .replace("status = \"retired\"", "status = \"archived\"")
        .replace("risk = \"high\"", "risk = \"severe\"")
        .replace("projects = [\"ocr\"]", "projects = [\"chat\"]")
        .replace("id = \"plu-analyse\"", "id = \"ocr-courrier\"")
        .replace(
            "data = [\"public\"]\ndecision = \"Comité numérique du 10 janvier 2026\"",
            "data = [\"public\"]\ndecision = \"\"",
        );
    std::fs::write(&file, broken).unwrap();
    let out = run(&["register", "check", "--json", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], false);
    let keys: Vec<&str> = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        [
            "use[1].projects[0]",
            "use[2].status",
            "use[3].decision",
            "use[3].volume[0].month",
            "use[4].id",
            "use[4].risk",
        ],
        "{v}"
    );
    // The same as text, one line per problem.
    let out = run(&["register", "check", file.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout.contains("has 6 problems"), "{stdout}");
    assert!(
        stdout.contains("\"archived\": allowed are pilot, production, retired"),
        "{stdout}"
    );
}

#[test]
fn an_unreadable_register_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("none.toml");
    let out = run(&["register", "check", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read the register"));
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[[use]]\nidd = 1\n").unwrap();
    let out = run(&["register", "check", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("idd"));
}
