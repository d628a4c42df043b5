#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `db migrate`'s copy (`store::pg::copy`) follows the SQLite file's tables, not a fixed
//! list: a table that PostgreSQL's schema has too is copied and checked (costs,
//! inference counts and configuration history once their PostgreSQL tables land); one
//! it lacks refuses the copy, naming it, when it holds rows (nothing written), and is
//! left out when empty.

mod common;

use common::{Harness, batch, hour_ago, push, record};
use empreinte_collector::store::pg::{PgStore, copy};
use empreinte_collector::store::sqlite::DB_FILE;
use empreinte_collector::store::{StoreOptions, TokenKind};
use empreinte_shared::{Component, SourceKind};

/// A SQLite store with one push, closed; gives its directory.
async fn filled() -> tempfile::TempDir {
    let h = Harness::new("").await;
    let t = h.token(TokenKind::Agent, Some("srv-1")).await;
    let s = hour_ago(2);
    let (status, body) = h
        .push(
            &t,
            &push(
                "srv-1",
                vec![batch(
                    1,
                    1,
                    s,
                    s + 60_000,
                    vec![record(
                        "chat",
                        Component::Cpu,
                        SourceKind::Rapl,
                        s,
                        s + 60_000,
                        7_000_003,
                    )],
                )],
            ),
        )
        .await;
    assert_eq!(status, axum::http::StatusCode::OK, "{body}");
    let Harness { dir, store, state } = h;
    drop(state);
    store.close().await;
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_postgresql_lacks_refuses_the_copy_when_it_has_rows_and_is_left_out_when_empty() {
    let Some(url) = empreinte_testkit::postgres::fresh_database() else {
        return;
    };
    let dir = filled().await;
    let db = dir.path().join(DB_FILE);
    let sqlite = rusqlite::Connection::open(&db).unwrap();
    sqlite
        .execute_batch("CREATE TABLE later_things (id INTEGER PRIMARY KEY, what TEXT NOT NULL)")
        .unwrap();
    let pg = PgStore::open(&url, &StoreOptions::default()).await.unwrap();

    // Empty: left out, and everything else copied with equal totals.
    let order = copy::tables_to_copy(&sqlite, &pg).await.unwrap();
    assert!(!order.iter().any(|t| t == "later_things"), "{order:?}");
    for t in copy::TABLES {
        assert!(order.iter().any(|o| o == t), "{t} is copied: {order:?}");
    }
    // Parents before children: the file's tables with foreign keys after their parents.
    if let (Some(parent), Some(child)) = (
        order.iter().position(|t| t == "tariffs"),
        order.iter().position(|t| t == "cost_hourly"),
    ) {
        assert!(parent < child, "{order:?}");
    }

    // With a row: refused, named, nothing written.
    sqlite
        .execute("INSERT INTO later_things (what) VALUES ('x')", [])
        .unwrap();
    let err = copy::copy_from_sqlite(&db, &pg).await.expect_err("refused");
    let text = err.to_string();
    assert!(text.contains("later_things (1 rows)"), "{text}");
    assert!(text.contains("nothing was copied"), "{text}");
    assert!(copy::is_empty(&pg).await.unwrap(), "nothing was written");

    // Emptied again: the copy goes through and every table checks equal.
    sqlite.execute("DELETE FROM later_things", []).unwrap();
    let checks = copy::copy_from_sqlite(&db, &pg).await.unwrap();
    assert!(checks.iter().all(|c| c.equal()), "{checks:?}");
    let hourly = checks
        .iter()
        .find(|c| c.table == "footprint_hourly")
        .unwrap();
    assert_eq!((hourly.sqlite_rows, hourly.postgres_rows), (1, 1));
    assert!(
        hourly
            .totals
            .iter()
            .any(|(c, a, b)| c == "energy_uj" && a == "7000003" && b == "7000003"),
        "{hourly:?}"
    );
    pg.close().await;
}
