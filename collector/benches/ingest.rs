//! The collector's ingest, through the real router (JSON parsing, token check,
//! validation, hourly split, one SQLite transaction with `synchronous = FULL`), without
//! a socket: a steady push (one 15 s batch of 30 records) and a backlog replay (500
//! batches in one push).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use criterion::{Criterion, criterion_group, criterion_main};
use empreinte_collector::auth;
use empreinte_collector::config::CollectorConfig;
use empreinte_collector::plan::Planner;
use empreinte_collector::server::{AppState, router};
use empreinte_collector::store::TokenKind;
use empreinte_collector::store::sqlite::SqliteStore;
use empreinte_shared::wire::{AgentInfo, Batch, Push, Record, SpoolStatus, WIRE_VERSION};
use empreinte_shared::{Component, SourceKind};
use tower::ServiceExt;

fn push(seq: &mut u64, batches: usize, now_ms: u64) -> Vec<u8> {
    let start = now_ms - now_ms % 15_000 - 3_600_000;
    let batches = (0..batches)
        .map(|_| {
            *seq += 1;
            let s = start + (*seq % 200) * 15_000;
            let records = (0..30)
                .map(|i| Record {
                    project: format!("project-{}", i / 3),
                    component: [Component::Cpu, Component::Dram, Component::Gpu][i % 3],
                    source: SourceKind::Rapl,
                    start_unix_ms: s,
                    end_unix_ms: s + 15_000,
                    energy_uj: 100_000_000 + i as u64,
                    model: None,
                })
                .collect();
            Batch {
                run_id: "ab".repeat(16),
                seq: *seq,
                start_unix_ms: s,
                end_unix_ms: s + 15_000,
                records,
                counters: vec![],
                inference: vec![],
            }
        })
        .collect();
    serde_json::to_vec(&Push {
        version: WIRE_VERSION,
        agent: AgentInfo {
            agent_id: "bench".into(),
            hostname: "bench".into(),
            agent_version: "bench".into(),
        },
        spool: SpoolStatus::default(),
        batches,
    })
    .unwrap()
}

fn ingest(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (state, token) = rt.block_on(async {
        let store = Arc::new(SqliteStore::open(dir.path()).await.unwrap());
        let config = Arc::new(CollectorConfig::default());
        let defaults = Arc::new(empreinte_collector::carbon::Coefficients::built_in().unwrap());
        let planner = Arc::new(Planner::new(config, defaults));
        let token = auth::issue(store.as_ref(), TokenKind::Agent, Some("bench"), "", 1)
            .await
            .unwrap()
            .token;
        (AppState::new(store, planner).unwrap(), token)
    });
    let now = empreinte_collector::clock::now_unix_ms();
    let mut seq = 0u64;
    let mut send = |body: Vec<u8>| {
        let req = Request::post("/api/v1/ingest")
            .header("authorization", format!("Bearer {token}"))
            .body(Body::from(body))
            .unwrap();
        let resp = rt.block_on(router(state.clone()).oneshot(req)).unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    };
    let mut group = c.benchmark_group("ingest");
    group.sample_size(30);
    group.bench_function("push of 1 batch x 30 records", |b| {
        b.iter_batched(
            || push(&mut seq, 1, now),
            &mut send,
            criterion::BatchSize::SmallInput,
        )
    });
    let mut seq2 = 1_000_000_000u64;
    group.sample_size(10);
    group.bench_function("push of 500 batches x 30 records (backlog)", |b| {
        b.iter_batched(
            || push(&mut seq2, 500, now),
            &mut send,
            criterion::BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, ingest);
criterion_main!(benches);
