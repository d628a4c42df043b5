//! The Prometheus rules in deploy/prometheus: valid for promtool, and every alert has
//! unit tests (`promtool test rules`) that show it firing and silent.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod tools;

use std::process::Command;

use tools::{read, root, tool};

fn promtool(args: &[&str]) -> Option<String> {
    let p = tool("promtool", "--version", "Debian package prometheus")?;
    let out = Command::new(p)
        .args(args)
        .current_dir(root().join("deploy/prometheus"))
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}: {said}");
    Some(said)
}

fn alert_names() -> Vec<String> {
    read(&root().join("deploy/prometheus/rules.yml"))
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .map(|s| s.trim().to_string())
        .collect()
}

#[test]
fn rules_pass_promtool_check() {
    if let Some(said) = promtool(&["check", "rules", "rules.yml"]) {
        assert!(said.contains("SUCCESS"), "{said}");
    }
}

#[test]
fn every_alert_has_unit_tests_firing_and_silent_and_they_pass() {
    let tests = read(&root().join("deploy/prometheus/rules.test.yml"));
    let alerts = alert_names();
    assert!(alerts.len() >= 5, "{alerts:?}");
    for alert in &alerts {
        // Each `alertname: A` is followed by its exp_alerts: `[]` (silent) or a list.
        let mut firing = 0;
        let mut silent = 0;
        let mut lines = tests.lines();
        while let Some(l) = lines.next() {
            if l.trim() == format!("alertname: {alert}") {
                let next = lines.next().unwrap_or_default().trim();
                if next == "exp_alerts: []" {
                    silent += 1;
                } else if next == "exp_alerts:" {
                    firing += 1;
                }
            }
        }
        assert!(
            firing >= 1 && silent >= 1,
            "{alert}: {firing} firing and {silent} silent cases in rules.test.yml"
        );
    }
    if let Some(said) = promtool(&["test", "rules", "rules.test.yml"]) {
        assert!(said.contains("SUCCESS"), "{said}");
    }
}

/// The example scrape configuration that compose.yaml mounts, with its rule file.
#[test]
fn example_prometheus_config_passes_promtool_check_config() {
    let dir = tempfile::tempdir().unwrap();
    let config = read(&root().join("deploy/prometheus/prometheus.yml"));
    assert!(config.contains("/etc/prometheus/empreinte-rules.yml"));
    for job in ["job_name: empreinte-agent", "job_name: empreinte-collector"] {
        assert!(config.contains(job), "the dashboards expect {job}");
    }
    // The collector's /metrics needs a read token: Prometheus reads it from a file.
    assert!(
        config.contains("credentials_file: /etc/prometheus/token/collector-read"),
        "the collector job scrapes without a token"
    );
    let token = dir.path().join("collector-read");
    std::fs::write(&token, "emp_0_0").unwrap();
    let path = dir.path().join("prometheus.yml");
    std::fs::write(
        &path,
        config
            .replace(
                "/etc/prometheus/empreinte-rules.yml",
                root().join("deploy/prometheus/rules.yml").to_str().unwrap(),
            )
            .replace(
                "/etc/prometheus/token/collector-read",
                token.to_str().unwrap(),
            ),
    )
    .unwrap();
    if let Some(said) = promtool(&["check", "config", path.to_str().unwrap()]) {
        assert!(said.contains("SUCCESS"), "{said}");
        assert!(said.contains("rules found"), "{said}");
    }
}
