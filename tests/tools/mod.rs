//! External tools the deployment tests drive (systemd-analyze, kubernetes-validate,
//! promtool, prometheus): required in CI, where a missing tool fails the test, optional
//! on a developer's machine, where the test says what it did not check.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository's root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `name` if it runs (`name ARG` succeeds); in CI a missing tool panics with how
/// `scripts/test` installs it, elsewhere it is `None` and the test prints a note.
pub fn tool(name: &str, probe_arg: &str, installed_by: &str) -> Option<String> {
    let found = Command::new(name)
        .arg(probe_arg)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if found {
        return Some(name.to_string());
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{name} is required in CI: scripts/test installs it ({installed_by})");
    }
    eprintln!("note: {name} is not installed ({installed_by}); this check runs in CI");
    None
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
