//! The collector's commands as a user runs them: the shipped configuration, clear
//! errors for a bad one, tokens, and intensity imports.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;

#[test]
fn default_config_is_the_shipped_example_and_is_valid() {
    let out = run(&["collector", "default-config"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/collector.toml"
    ))
    .unwrap();
    assert_eq!(text, shipped);
    let config = empreinte_collector::config::CollectorConfig::from_toml(&text).unwrap();
    assert_eq!(
        config,
        empreinte_collector::config::CollectorConfig::default()
    );
}

#[test]
fn a_bad_configuration_names_every_problem_and_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("collector.toml");
    let data = dir.path().join("data");
    // The collector refuses `config` (exit 2), naming each of `needles`: what it said.
    let refused = |config: &str, needles: &[&str]| {
        std::fs::write(&path, config).unwrap();
        let out = run(&[
            "collector",
            "--config",
            path.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
        ]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(2), "{err}");
        for needle in needles {
            assert!(err.contains(needle), "{needle:?} not in {err}");
        }
        err
    };
    let err = refused(
        "[organisation]\ntimezone = \"Europe/Pariss\"\n[[site]]\nname = \"mairie\"\nzone = \"XX\"\npue = 0.5\nhosts = [\"*\"]\n[[inventory]]\nhosts = [\"gpu-*\"]\ngpus = [{ model = \"nvidia-h999\", count = 2 }]\n",
        &[
            "organisation.timezone",
            "Europe/Pariss",
            "site[0].pue",
            "between 1.0 and 4.0",
        ],
    );
    assert!(!err.contains("panicked"), "{err}");
    // The unknown zone and hardware are reported once the file itself is valid.
    refused(
        "[[site]]\nname = \"mairie\"\nzone = \"XX\"\nhosts = [\"*\"]\n[[inventory]]\nhosts = [\"gpu-*\"]\ngpus = [{ model = \"nvidia-h999\", count = 2 }]\n",
        &[
            "site[0].zone",
            "\"XX\"",
            "inventory[0].gpus[0].model",
            "nvidia-h999",
            "empreinte carbon factors",
        ],
    );
    assert!(
        !data.join("empreinte.db").exists(),
        "nothing is created for a bad configuration"
    );
}

#[test]
fn tokens_are_created_listed_and_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let out = run(&["token", "create", "--kind", "agent", "--data-dir", d]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--agent NAME"));
    let token = create_token(dir.path(), "agent", Some("web-01"));
    assert!(token.starts_with("emp_"), "{token}");
    let id = token.split('_').nth(1).unwrap();
    let list = String::from_utf8(run(&["token", "list", "--data-dir", d]).stdout).unwrap();
    assert!(list.contains(id) && list.contains("web-01"), "{list}");
    assert!(
        !list.contains(token.rsplit('_').next().unwrap()),
        "the secret is never shown again"
    );
    assert!(
        run(&["token", "revoke", id, "--data-dir", d])
            .status
            .success()
    );
    assert_eq!(
        run(&["token", "revoke", id, "--data-dir", d]).status.code(),
        Some(1)
    );
}

#[test]
fn intensity_imports_report_what_they_read_and_refuse_what_is_not_a_series() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let fixtures = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/collector/tests/fixtures/carbon"
    );
    let odre = format!("{fixtures}/eco2mix_odre_2024-10-27.csv");
    let out = run(&["carbon", "import", "--data-dir", d, &odre]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_success(&out);
    assert!(
        text.contains("zone FR") && text.contains("900 s steps") && text.contains("hours stored"),
        "{text}"
    );
    let bad = dir.path().join("notes.csv");
    std::fs::write(&bad, "hello;world\n1;2\n").unwrap();
    let out = run(&["carbon", "import", "--data-dir", d, bad.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("notes.csv") && !err.contains("panicked"),
        "{err}"
    );
    let factors = String::from_utf8(run(&["carbon", "factors", "--json"]).stdout).unwrap();
    let v: serde_json::Value = serde_json::from_str(&factors).unwrap();
    assert!(
        v["grid"]
            .as_array()
            .unwrap()
            .iter()
            .all(|g| !g["source"].as_str().unwrap().is_empty()
                && g["year"].as_i64().unwrap() >= 2015)
    );
}
