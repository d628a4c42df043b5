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

/// The tables that landed on PostgreSQL after `db migrate` was written (costs, amortised
/// hardware, inference counts, configuration history) are copied and checked like the
/// footprint's: every row and every number column's sum equal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn costs_hardware_and_inference_counts_are_copied_with_every_total_equal() {
    use empreinte_shared::wire::{InferenceRecord, InferenceServerKind, Record};
    let Some(url) = empreinte_testkit::postgres::fresh_database() else {
        return;
    };
    let h = Harness::new(
        r#"
[[site]]
name = "dc"
zone = "FR"
pue = 1.5
pue_source = "test"
hosts = ["gpu-*"]
tariff_eur_per_kwh = 0.2516
tariff_off_peak_eur_per_kwh = 0.1996
tariff_off_peak_hours = ["22-06"]
tariff_source = "Tarif bleu HP/HC, test"
[[inventory]]
hosts = ["gpu-1"]
purchase_price_eur = 8760.0
amortisation_years = 1.0
purchase_source = "Facture, test"
"#,
    )
    .await;
    let t = h.token(TokenKind::Agent, Some("gpu-1")).await;
    let s = hour_ago(3);
    let batches = (1..=3u64)
        .map(|q| {
            let (a, b) = (s + (q - 1) * 3_600_000, s + q * 3_600_000);
            empreinte_shared::wire::Batch {
                inference: vec![InferenceRecord {
                    project: "chat".into(),
                    model: "llama-3-8b".into(),
                    server: InferenceServerKind::Vllm,
                    start_unix_ms: a,
                    end_unix_ms: b,
                    requests: Some(600 + q),
                    input_tokens: Some(25_000),
                    cached_input_tokens: None,
                    output_tokens: Some(120_000 + q),
                    gap_ms: 0,
                    resets: 0,
                    allocated: false,
                }],
                ..batch(
                    1,
                    q,
                    a,
                    b,
                    vec![Record {
                        model: Some("llama-3-8b".into()),
                        ..record(
                            "chat",
                            Component::Gpu,
                            SourceKind::Nvml,
                            a,
                            b,
                            1_800_000_007 * q,
                        )
                    }],
                )
            }
        })
        .collect();
    let (status, body) = h.push(&t, &push("gpu-1", batches)).await;
    assert_eq!(status, axum::http::StatusCode::OK, "{body}");
    let Harness { dir, store, state } = h;
    drop(state);
    store.close().await;

    let db = dir.path().join(DB_FILE);
    let pg = PgStore::open(&url, &StoreOptions::default()).await.unwrap();
    let checks = copy::copy_from_sqlite(&db, &pg).await.unwrap();
    assert!(checks.iter().all(|c| c.equal()), "{checks:#?}");
    for table in [
        "cost_hourly",
        "cost_totals",
        "tariffs",
        "inference_hourly",
        "inference_totals",
    ] {
        let c = checks
            .iter()
            .find(|c| c.table == table)
            .unwrap_or_else(|| panic!("{table} is copied: {checks:#?}"));
        assert!(c.sqlite_rows > 0, "{table} has rows to copy: {c:?}");
    }
    // The copy reads back the same: costs and counts from PostgreSQL's reads.
    let sqlite = empreinte_collector::store::sqlite::SqliteStore::open(dir.path())
        .await
        .unwrap();
    use empreinte_collector::store::Store;
    let (a, b): (&dyn Store, &dyn Store) = (&sqlite, &pg);
    assert_eq!(
        a.cost_totals().await.unwrap(),
        b.cost_totals().await.unwrap()
    );
    assert_eq!(
        a.hardware_cost_totals().await.unwrap(),
        b.hardware_cost_totals().await.unwrap()
    );
    assert_eq!(
        a.inference_totals().await.unwrap(),
        b.inference_totals().await.unwrap()
    );
    assert!(!b.inference_totals().await.unwrap().is_empty());
    sqlite.close().await;
    pg.close().await;
}
