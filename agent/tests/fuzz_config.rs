#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The agent's configuration parser, fuzzed for a fixed time (issue 10, item 7; see
//! `empreinte_testkit::fuzz`): mutations of the shipped example and of a configuration
//! with every section; any input gives a configuration or an error, never a panic, and
//! an accepted configuration is within the documented bounds.

use empreinte_agent::config::AgentConfig;
use empreinte_testkit::fuzz;

#[test]
fn fuzz_agent_config() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let example = std::fs::read(root.join("deploy/agent.toml")).unwrap();
    let pushing = [
        &example[..],
        b"\n[push]\ncollector = \"https://collector:9820\"\nagent_id = \"gpu-01\"\nca_file = \"/etc/ca.pem\"\n",
    ]
    .concat();
    let n = fuzz::run(
        "agent-config",
        fuzz::documents(vec![example, pushing]),
        300,
        |doc| {
            let Ok(text) = std::str::from_utf8(doc) else {
                return Ok(());
            };
            let Ok(config) = AgentConfig::from_toml(text, "fuzz") else {
                return Ok(());
            };
            if config.interval.is_zero() {
                return Err("a zero sampling interval accepted".into());
            }
            if config.push.batch_interval.is_zero() || config.push.max_batches_per_push == 0 {
                return Err(format!("push settings accepted: {:?}", config.push));
            }
            Ok(())
        },
    );
    assert!(n >= 300);
}
