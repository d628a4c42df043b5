//! The agent as the shipped unit runs it: an unprivileged user next to labelled
//! processes of another user. Their environment (`EMPREINTE_PROJECT`) cannot be read
//! without CAP_SYS_PTRACE, which the unit does not grant (docs/attribution.md): `agent
//! check` says how many processes could not be read and what that means, and the
//! default rules place a labelled service by its systemd unit instead.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{BIN, assert_success};

/// Runs `BIN args` as `nobody` (setpriv from util-linux), or as ourselves.
fn check(bin: &Path, procfs: &Path, unprivileged: bool) -> Output {
    let args = [
        "agent",
        "check",
        "--json",
        "--powercap-root",
        "/nonexistent-powercap",
        "--nvml-library",
        "off",
        "--procfs-root",
        procfs.to_str().unwrap(),
    ];
    let mut cmd = if unprivileged {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "--inh-caps=-all",
            "--",
        ])
        .arg(bin);
        c
    } else {
        Command::new(bin)
    };
    cmd.args(args).env("RUST_LOG", "warn").output().unwrap()
}

/// The binary where `nobody` can run it (the build tree may sit under a private home).
fn reachable_binary(dir: &Path) -> PathBuf {
    let copy = dir.join("empreinte");
    if std::fs::hard_link(BIN, &copy).is_err() {
        std::fs::copy(BIN, &copy).unwrap();
    }
    copy
}

#[test]
fn an_unprivileged_agent_counts_the_processes_it_cannot_read_and_falls_back_to_the_unit() {
    // /proc/self belongs to the effective user.
    let root = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) == 0;
    if !root {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "this test runs as root in CI, to switch to an unprivileged user"
        );
        eprintln!("note: not root, cannot switch user: skipped (it runs in CI)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = reachable_binary(dir.path());
    // A labelled service of another user (root), seen through a procfs whose files are
    // the real ones (so the kernel's permission checks apply) except `cgroup`, which
    // puts it in chatbot.service.
    let mut labelled = Command::new("sleep")
        .arg("60")
        .env("EMPREINTE_PROJECT", "citizen-chatbot")
        .spawn()
        .unwrap();
    let pid = labelled.id();
    let procfs = dir.path().join("proc");
    let p = procfs.join(pid.to_string());
    std::fs::create_dir_all(&p).unwrap();
    for f in ["stat", "environ", "cmdline", "comm"] {
        symlink(format!("/proc/{pid}/{f}"), p.join(f)).unwrap();
    }
    std::fs::write(p.join("cgroup"), "0::/system.slice/chatbot.service\n").unwrap();
    for f in ["stat", "cpuinfo", "meminfo"] {
        symlink(format!("/proc/{f}"), procfs.join(f)).unwrap();
    }
    for d in [&procfs, &p] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    let project_of = |out: &Output| -> (String, serde_json::Value) {
        assert_success(out);
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let project = report["projects"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| {
                p["examples"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|e| e["pid"] == pid)
            })
            .map(|p| p["project"].as_str().unwrap().to_string())
            .unwrap_or_default();
        (project, report)
    };

    // As root: the variable is read.
    let (project, report) = project_of(&check(&bin, &procfs, false));
    assert_eq!(project, "citizen-chatbot");
    assert_eq!(report["unreadable_processes"], 0);

    // As nobody: it is not; the unit places the service, and check says why.
    let out = check(&bin, &procfs, true);
    let (project, report) = project_of(&out);
    assert_eq!(project, "chatbot", "the default rule on the systemd unit");
    assert_eq!(report["unreadable_processes"], 1);
    assert_eq!(report["rules_read_environment"], true);

    // The text a sysadmin reads says the count and what it means.
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .arg(&bin)
        .args([
            "agent",
            "check",
            "--powercap-root",
            "/nonexistent-powercap",
            "--nvml-library",
            "off",
            "--procfs-root",
            procfs.to_str().unwrap(),
        ]);
    let text = String::from_utf8(cmd.output().unwrap().stdout).unwrap();
    assert!(
        text.contains("1 process could not be read") && text.contains("EMPREINTE_PROJECT"),
        "{text}"
    );
    let _ = labelled.kill();
    let _ = labelled.wait();
}
