#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `empreinte collector` refuses a damaged database and one that was emptied after
//! tokens were issued: exit 2, a message naming the file and how to restore it.

use std::process::Command;

use empreinte_testkit::process::output_ok;

use empreinte_collector::store::TokenKind;
use empreinte_collector::store::sqlite::{DB_FILE, SqliteStore};

/// A data directory with a database, a token and some rows in it, closed.
fn seeded() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = SqliteStore::open(dir.path()).await.unwrap();
        for i in 0..300 {
            empreinte_collector::auth::issue(
                &store,
                TokenKind::Agent,
                Some(&format!("host-{i}")),
                "a note long enough to fill a few pages of the tokens table",
                1,
            )
            .await
            .unwrap();
        }
        store.close().await;
    });
    // The rows may still be in the write-ahead log after `close`: the damage below must
    // hit the database itself, so the directory gets one whole file, the consistent copy
    // `empreinte backup` writes, in place of the database and its log.
    let copy = dir.path().join("copy.db");
    output_ok(
        Command::new(env!("CARGO_BIN_EXE_empreinte"))
            .args(["backup", "--data-dir"])
            .arg(dir.path())
            .arg("-o")
            .arg(&copy),
    );
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.path().join(format!("{DB_FILE}{suffix}")));
    }
    std::fs::rename(&copy, dir.path().join(DB_FILE)).unwrap();
    dir
}

/// Starts the collector on `dir`; its exit code and stderr. A collector that starts
/// instead of refusing is killed after a while (the test then fails on its code).
fn start(dir: &std::path::Path) -> (Option<i32>, String) {
    use std::io::Read;
    let mut child = Command::new(env!("CARGO_BIN_EXE_empreinte"))
        .args(["collector", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut status = None;
    let exited = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        status = Some(empreinte_testkit::wait::wait_until(
            "the collector to exit",
            std::time::Duration::from_secs(30),
            || child.try_wait().unwrap(),
        ));
    }));
    if exited.is_err() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    (status.and_then(|s| s.code()), stderr)
}

fn assert_refused(dir: &std::path::Path, what: &str) {
    let (code, stderr) = start(dir);
    assert_eq!(code, Some(2), "{what}: {stderr}");
    let db = dir.join(DB_FILE).display().to_string();
    assert!(stderr.contains(&db), "{what}: names {db}: {stderr}");
    assert!(stderr.contains("to restore"), "{what}: {stderr}");
    assert!(stderr.contains("empreinte backup"), "{what}: {stderr}");
}

#[test]
fn a_damaged_database_is_refused_with_exit_2() {
    let dir = seeded();
    let db = dir.path().join(DB_FILE);
    let mut bytes = std::fs::read(&db).unwrap();
    assert!(bytes.len() > 8 * 4096, "{} bytes", bytes.len());
    let end = bytes.len() - 4096;
    for (i, b) in bytes[2 * 4096..end].iter_mut().enumerate() {
        *b = (i * 31 + 7) as u8;
    }
    std::fs::write(&db, &bytes).unwrap();
    assert_refused(dir.path(), "damaged");
}

#[test]
fn an_emptied_database_is_refused_with_exit_2_and_not_recreated() {
    let dir = seeded();
    let db = dir.path().join(DB_FILE);
    std::fs::write(&db, b"").unwrap();
    // Emptied whole: a write-ahead log left beside it would hold the pages again.
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.path().join(format!("{DB_FILE}{suffix}")));
    }
    assert_refused(dir.path(), "empty");
    assert_eq!(std::fs::metadata(&db).unwrap().len(), 0);
}
