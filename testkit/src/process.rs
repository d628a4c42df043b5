//! Commands a test needs to succeed: when one fails, the test fails showing the
//! command's stderr, at the test's own line.

use std::process::{Command, Output};

/// Panics, showing the command's stderr, unless `out` is of a command that succeeded.
#[track_caller]
pub fn assert_success(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `cmd` to completion; [`assert_success`] on its output, which it gives back.
#[track_caller]
pub fn output_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert_success(&out);
    out
}
