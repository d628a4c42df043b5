#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Tokens never reach a log, at any level: an agent pushing to a collector, both at
//! `RUST_LOG=trace` (issue 10, item 5).

mod common;

use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::Duration;

use common::{BIN, CollectorCmd, create_token, free_port};
use empreinte_testkit::powercap::FakePowercap;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn no_token_is_logged_even_at_trace_level() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("collector");
    std::fs::create_dir_all(&data).unwrap();
    let reader = create_token(&data, "read", None);
    let token = create_token(&data, "agent", Some("quiet-host"));
    let port = free_port();
    let collector_log = dir.path().join("collector-trace.log");
    let collector = Killed(
        CollectorCmd::new(&data, port)
            .rust_log("trace")
            .log(&collector_log)
            .spawn(),
    );
    let token_file = dir.path().join("agent.token");
    std::fs::write(&token_file, &token).unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[push]\ncollector = \"http://127.0.0.1:{port}\"\ntoken_file = \"{}\"\nagent_id = \"quiet-host\"\nbatch_interval = \"1s\"\nspool_dir = \"{}\"\n",
            token_file.display(),
            dir.path().join("spool").display()
        ),
    )
    .unwrap();
    let mut fp = FakePowercap::intel_two_socket();
    let agent_log = dir.path().join("agent-trace.log");
    let agent = Killed(
        Command::new(BIN)
            .arg("agent")
            .args(["--listen", &format!("127.0.0.1:{}", free_port())])
            .arg("--config")
            .arg(&config)
            .args(["--interval", "200ms", "--nvml-library", "off"])
            .arg("--powercap-root")
            .arg(fp.root())
            .env("RUST_LOG", "trace,ureq=trace")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&agent_log).unwrap())
            .spawn()
            .unwrap(),
    );
    // Energy flows until the collector has stored some of it.
    let base = format!("http://127.0.0.1:{port}");
    let mut stored = false;
    for _ in 0..600 {
        let zone = fp.zone("intel-rapl:0");
        fp.advance_uj(&zone, 5_000_000);
        let agents = ureq::get(&format!("{base}/api/v1/agents"))
            .header("Authorization", &format!("Bearer {reader}"))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .unwrap_or_default();
        if agents.contains("quiet-host") {
            stored = true;
            break;
        }
        sleep(Duration::from_millis(50));
    }
    assert!(stored, "no push stored within 30 s");
    // A refused request with a bad token, logged by the collector.
    let _ = ureq::get(&format!("{base}/metrics"))
        .header(
            "Authorization",
            "Bearer emp_000000000000_wrongsecretwrongsecret",
        )
        .call();
    drop(agent);
    drop(collector);
    let secret = token.rsplit('_').next().unwrap();
    let read_secret = reader.rsplit('_').next().unwrap();
    for (who, path) in [("agent", &agent_log), ("collector", &collector_log)] {
        let log = std::fs::read_to_string(path).unwrap();
        assert!(
            log.lines().count() > 20 && log.contains("DEBUG"),
            "{who}: the log was not verbose:\n{log}"
        );
        if who == "agent" {
            // The HTTP client's own lines are there (capped at debug).
            assert!(log.contains("ureq"), "{log}");
        }
        for needle in [secret, read_secret, "wrongsecret", "Bearer emp_"] {
            assert!(
                !log.contains(needle),
                "{who}'s log holds a secret ({needle}):\n{}",
                log.lines()
                    .filter(|l| l.contains(needle))
                    .take(3)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        assert!(
            !log.to_ascii_lowercase().contains("authorization: bearer"),
            "{who}"
        );
    }
}
