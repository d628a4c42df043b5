#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `empreinte collector` refuses a damaged database and one that was emptied after
//! tokens were issued: exit 2, a message naming the file and how to restore it.

use std::process::Command;

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
    dir
}

fn start(dir: &std::path::Path) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_empreinte"))
        .args(["collector", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
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
    assert_refused(dir.path(), "empty");
    assert_eq!(std::fs::metadata(&db).unwrap().len(), 0);
}
