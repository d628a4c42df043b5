//! The tests' PostgreSQL: the throw-away cluster `scripts/test` starts (Unix socket
//! only, in a temp dir) and names in `EMPREINTE_TEST_PG_URL`. Each test makes a database
//! of its own in it ([`fresh_database`]), so tests run in parallel without sharing rows.
//! In CI (`CI=true`) a missing cluster fails the test; elsewhere the PostgreSQL half of
//! a test is left out, with a note on stderr.

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

/// The variable that holds the cluster's URL (its `postgres` database).
pub const URL_VAR: &str = "EMPREINTE_TEST_PG_URL";

/// The cluster's URL, or `None` outside CI when `scripts/test` did not start one.
pub fn cluster_url() -> Option<String> {
    match std::env::var(URL_VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("CI").as_deref() == Ok("true") => {
            panic!(
                "{URL_VAR} is not set: in CI, scripts/test starts a PostgreSQL cluster for the tests"
            )
        }
        _ => {
            eprintln!(
                "note: {URL_VAR} is not set (run the tests through scripts/test): the PostgreSQL half of this test is left out"
            );
            None
        }
    }
}

/// Creates an empty database in the cluster; gives its URL.
pub fn fresh_database() -> Option<String> {
    static N: AtomicU64 = AtomicU64::new(0);
    let admin = cluster_url()?;
    let name = format!(
        "t_{}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        {
            use std::hash::{BuildHasher, Hasher};
            // Randomly keyed per process: names differ across runs on one cluster.
            std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish()
                % 1_000_000_000
        }
    );
    let out = Command::new("psql")
        .arg(&admin)
        .args(["-v", "ON_ERROR_STOP=1", "-q", "-c"])
        .arg(format!("CREATE DATABASE {name}"))
        .output()
        .expect("psql runs (Debian package postgresql-client)");
    assert!(
        out.status.success(),
        "cannot create a test database: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(database_url(&admin, &name))
}

/// `url` with its database replaced by `name` (the query, e.g. the socket's directory, kept).
pub fn database_url(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let path_start = base[scheme_end..]
        .find('/')
        .map(|i| scheme_end + i)
        .unwrap_or(base.len());
    let mut out = format!("{}/{name}", &base[..path_start]);
    if !query.is_empty() {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// Runs `sql` in the database at `url` with psql; gives its unaligned output.
pub fn psql(url: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .arg(url)
        .args(["-v", "ON_ERROR_STOP=1", "-q", "-At", "-c", sql])
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "psql {sql:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
