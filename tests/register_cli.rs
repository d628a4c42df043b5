//! `empreinte register check` as the person who keeps the register reads it: a valid
//! register says what it holds (exit 0); a broken one lists every problem at once with
//! its key (exit 1); an unreadable one is an error (exit 2), like the other commands.
//! The running collector reloads the register on SIGHUP and keeps the one it has when
//! the new file is broken.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use empreinte_testkit::register::production_use;

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

/// The use ids the collector serves.
fn use_ids(c: &Collector, token: &str) -> Vec<String> {
    c.get(token, "/api/v1/uses")["uses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_collector_reloads_the_register_on_sighup_and_keeps_it_when_the_new_one_is_broken() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let file = dir.path().join("register.toml");
    std::fs::write(&file, production_use("chatbot", &["chat"])).unwrap();
    let config = dir.path().join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "register_file = {:?}\n[[site]]\nname = \"mairie\"\nzone = \"FR\"\nhosts = [\"*\"]\n",
            file.to_str().unwrap()
        ),
    )
    .unwrap();
    let reader = create_token(&data, "read", None);
    let collector = Collector::spawn(&data, free_port(), &["--config", config.to_str().unwrap()]);
    assert_eq!(use_ids(&collector, &reader), ["chatbot"]);
    let hup = || {
        let sent = std::process::Command::new("kill")
            .args(["-HUP", &collector.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    };
    // A second use: served after SIGHUP, without a restart.
    let two = format!(
        "{}{}",
        production_use("chatbot", &["chat"]),
        production_use("ocr", &["ocr"])
    );
    std::fs::write(&file, &two).unwrap();
    hup();
    wait_for("the reloaded register served", PATIENCE, || {
        use_ids(&collector, &reader) == ["chatbot", "ocr"]
    });
    // A broken one is refused, its problem logged with its key; the previous one stays.
    std::fs::write(
        &file,
        two.replace("status = \"production\"", "status = \"archived\""),
    )
    .unwrap();
    hup();
    let log_path = data.join("collector.log");
    wait_for("the refused reload logged", PATIENCE, || {
        std::fs::read_to_string(&log_path)
            .unwrap_or_default()
            .contains("the register was not reloaded")
    });
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("use[0].status"), "{log}");
    assert_eq!(use_ids(&collector, &reader), ["chatbot", "ocr"]);
}
