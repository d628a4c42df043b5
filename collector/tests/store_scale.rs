#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The store at scale: rollups that equal the hourly rows to the unit, duplicate
//! detection by run under replays, reordering, refusals and restarts, a store that no
//! push can break (sums past `i64::MAX`, overlapping batches past the host's power),
//! compaction of old hours: each on both engines (SQLite, and PostgreSQL in the test
//! cluster, [`common::engines`]). SQLite's own machinery (the writer's bounded queue, the
//! file's integrity checks at start) is tested on SQLite alone.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{Engine, Harness, batch, engines, hour_ago, push, record};
use empreinte_collector::period::{Month, month_of};
use empreinte_collector::server::{AppState, router};
use empreinte_collector::store::sqlite::{DB_FILE, LOG_FILE, MARKER_FILE, SqliteStore};
use empreinte_collector::store::{
    AggregateLine, IntensityImport, Store, StoreError, StoreOptions, Sums, TokenKind,
};
use empreinte_shared::wire::Counter;
use empreinte_shared::{Component, SourceKind};
use jiff::tz::TimeZone;
use proptest::prelude::*;
use tower::ServiceExt;

const CONFIG: &str = r#"
[organisation]
name = "Test"
timezone = "Europe/Paris"
[[site]]
name = "mairie"
zone = "FR"
pue = 1.2
pue_source = "measured"
hosts = ["srv-*"]
market_g_per_kwh = 10.0
market_source = "contract"
[default_site]
name = "datacentre"
zone = "DE"
[[inventory]]
hosts = ["gpu-1"]
server_kgco2e = 43.8
server_lifetime_years = 1.0
server_source = "test figure"
gpus = [{ model = "test-gpu", count = 2 }]
"#;

const HOSTS: [&str; 3] = ["srv-1", "srv-2", "gpu-1"];
const PROJECTS: [&str; 4] = ["chat", "web", "batch", "ocr"];

type Key = (String, String, String, String, String, String);

fn key(l: &AggregateLine) -> Key {
    (
        l.host.clone(),
        l.project.clone(),
        l.component.clone(),
        l.source.clone(),
        l.site.clone(),
        l.zone.clone(),
    )
}

fn add_lines(into: &mut BTreeMap<Key, Sums>, lines: Vec<AggregateLine>) {
    for l in lines {
        into.entry(key(&l)).or_default().add(&l.sums);
    }
}

/// The sums of the hourly rows themselves (not the rollups), per line.
async fn hourly_sums(store: &dyn Store, from: i64, to: i64) -> BTreeMap<Key, Sums> {
    let mut out: BTreeMap<Key, Sums> = BTreeMap::new();
    for r in store.hourly_rows(from, to).await.unwrap() {
        let measured = r.source != "estimate";
        out.entry((
            r.host.clone(),
            r.project.clone(),
            r.component.clone(),
            r.source.clone(),
            r.site.clone(),
            r.zone.clone(),
        ))
        .or_default()
        .add(&Sums {
            energy_uj: r.energy_uj,
            facility_energy_uj: (r.energy_uj as f64 * r.pue).round() as u64,
            measured_energy_uj: if measured { r.energy_uj } else { 0 },
            estimated_energy_uj: if measured { 0 } else { r.energy_uj },
            location_co2e_ug: r.location_co2e_ug,
            market_co2e_ug: r.market_co2e_ug.unwrap_or(r.location_co2e_ug),
            embodied_co2e_ug: r.embodied_co2e_ug,
        });
    }
    out
}

type PlannedBatch = (usize, u64, u64, Vec<(usize, u8, u64)>);

/// Random batches of 1 to 90 minutes over ~6 weeks (two month boundaries in Paris),
/// some sent twice; an intensity series imported half-way.
#[derive(Clone, Debug)]
struct Plan {
    /// `(host, slot, quarters, [(project, kind, µJ)])`.
    batches: Vec<PlannedBatch>,
    replays: Vec<usize>,
    import_at: usize,
}

fn plans() -> impl Strategy<Value = Plan> {
    let batch = (
        0usize..3,
        // Anywhere in six weeks, or in the first two hours (rows updated many times).
        prop_oneof![0u64..(42 * 24 * 4), 0u64..8],
        1u64..7,
        proptest::collection::vec((0usize..4, 0u8..3, 1u64..5_000_000_000_000), 1..5),
    );
    (
        proptest::collection::vec(batch, 1..40),
        proptest::collection::vec(0usize..40, 0..10),
        0usize..40,
    )
        .prop_map(|(b, replays, import_at)| Plan {
            batches: b,
            replays,
            import_at,
        })
}

fn months_between(tz: &TimeZone, from_s: i64, to_s: i64) -> Vec<Month> {
    let mut m = month_of(tz, from_s).unwrap();
    let mut out = Vec::new();
    while m.from_s < to_s {
        out.push(m);
        let (y, mo) = if m.month == 12 {
            (m.year + 1, 1)
        } else {
            (m.year, m.month + 1)
        };
        m = empreinte_collector::period::month(tz, y, mo).unwrap();
    }
    out
}

async fn exactness_case(plan: Plan) {
    for e in engines(CONFIG).await {
        eprintln!("on {}", e.name);
        exactness_on(&e, &plan).await;
    }
}

async fn exactness_on(e: &Engine, plan: &Plan) {
    let h: &Harness<dyn Store> = e;
    let tokens: Vec<String> = {
        let mut t = Vec::new();
        for host in HOSTS {
            t.push(h.token(TokenKind::Agent, Some(host)).await);
        }
        t
    };
    // Fifteen-minute slots from 60 days ago.
    let base = hour_ago(60 * 24);
    let mut seqs = [0u64; 3];
    let mut sent = Vec::new();
    for (i, (host, slot, quarters, records)) in plan.batches.iter().enumerate() {
        if i == plan.import_at {
            // Every hour of the period in France, 30 to 90 g/kWh.
            let hours = (0..60 * 24)
                .map(|k| {
                    let hs = (base / 1000) as i64 + k * 3600;
                    (hs, 30.0 + (k % 7) as f64 * 10.0, 1.0)
                })
                .collect();
            h.store
                .import_intensity(&IntensityImport {
                    zone: "FR".into(),
                    source: "test".into(),
                    kind: "lifecycle".into(),
                    file: "t.csv".into(),
                    now_ms: 1,
                    hours,
                })
                .await
                .unwrap();
        }
        seqs[*host] += 1;
        let start = base + slot * 900_000;
        let end = start + quarters * 900_000;
        let recs = records
            .iter()
            .map(|&(p, c, uj)| {
                let (component, source) = match c {
                    0 => (Component::Cpu, SourceKind::Rapl),
                    1 => (Component::Gpu, SourceKind::Nvml),
                    _ => (Component::Cpu, SourceKind::Estimate),
                };
                record(PROJECTS[p], component, source, start, end, uj)
            })
            .collect();
        let b = batch(1, seqs[*host], start, end, recs);
        let p = push(HOSTS[*host], vec![b]);
        let (status, body) = push_as_an_agent(h, &tokens[*host], &p).await;
        // A host's hour may go past the power bound with random overlaps: refused whole.
        assert!(
            status == StatusCode::OK || status == StatusCode::UNPROCESSABLE_ENTITY,
            "{status} {body}"
        );
        sent.push((*host, p));
    }
    for r in &plan.replays {
        if let Some((host, p)) = sent.get(*r) {
            let (status, _) = push_as_an_agent(h, &tokens[*host], p).await;
            assert!(status == StatusCode::OK || status == StatusCode::UNPROCESSABLE_ENTITY);
        }
    }
    let tz = TimeZone::get("Europe/Paris").unwrap();
    let from = (base / 1000) as i64 - 86_400;
    let to = from + 70 * 86_400;
    let months = months_between(&tz, from, to);
    let (all_from, all_to) = (months[0].from_s, months[months.len() - 1].to_s);
    let hourly = hourly_sums(h.store.as_ref(), all_from, all_to).await;
    let mut monthly = BTreeMap::new();
    for m in &months {
        add_lines(&mut monthly, h.store.lines(m.from_s, m.to_s).await.unwrap());
    }
    let mut daily = BTreeMap::new();
    let mut day = all_from;
    while day < all_to {
        let next = jiff::Timestamp::from_second(day)
            .unwrap()
            .to_zoned(tz.clone())
            .tomorrow()
            .unwrap()
            .start_of_day()
            .unwrap()
            .timestamp()
            .as_second();
        add_lines(&mut daily, h.store.lines(day, next).await.unwrap());
        day = next;
    }
    assert_eq!(hourly, daily, "hourly rows against daily rollups");
    assert_eq!(hourly, monthly, "hourly rows against monthly rollups");
    // The API's month by project reads the monthly rollup: the same totals.
    let mut by_project: BTreeMap<String, u64> = BTreeMap::new();
    for ((_, project, ..), s) in &hourly {
        *by_project.entry(project.clone()).or_default() += s.energy_uj;
    }
    let mut api: BTreeMap<String, u64> = BTreeMap::new();
    for m in &months {
        for (p, s) in h
            .store
            .footprint(&empreinte_collector::store::FootprintQuery {
                from_s: m.from_s,
                to_s: m.to_s,
                project: None,
                host: None,
                group: empreinte_collector::store::Grouping::Project,
            })
            .await
            .unwrap()
        {
            *api.entry(p).or_default() += s.energy_uj;
        }
    }
    assert_eq!(by_project, api);
    // And a store reopened (rollups rebuilt for another time zone, then back) agrees.
    let rebuilt = e
        .reopen(&StoreOptions {
            timezone: Some("UTC".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .store();
    let mut utc_monthly = BTreeMap::new();
    let utc = TimeZone::UTC;
    for m in months_between(&utc, all_from - 86_400 * 31, all_to + 86_400 * 31) {
        add_lines(
            &mut utc_monthly,
            rebuilt.lines(m.from_s, m.to_s).await.unwrap(),
        );
    }
    assert_eq!(hourly, utc_monthly, "rollups rebuilt in UTC");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]
    #[test]
    fn hourly_daily_and_monthly_sums_are_equal_to_the_unit(plan in plans()) {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(exactness_case(plan));
    }
}

/// Pushes as an agent does: a 503 is back-pressure (nothing of the push was stored, the
/// agent sends it again after `Retry-After`), so it is sent again; any other answer is
/// returned.
async fn push_as_an_agent(
    h: &Harness<dyn Store>,
    token: &str,
    p: &empreinte_shared::wire::Push,
) -> (StatusCode, String) {
    for _ in 0..100 {
        let (status, body) = h.push(token, p).await;
        if status != StatusCode::SERVICE_UNAVAILABLE {
            return (status, body);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the collector answered 503 to 100 pushes in a row");
}

fn ack(body: &str) -> (u64, u64) {
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    (
        v["accepted"].as_u64().unwrap(),
        v["duplicates"].as_u64().unwrap(),
    )
}

fn one(seq: u64, start: u64) -> empreinte_shared::wire::Batch {
    batch(
        7,
        seq,
        start,
        start + 60_000,
        vec![record(
            "chat",
            Component::Cpu,
            SourceKind::Rapl,
            start,
            start + 60_000,
            1_000_000 * (seq % 1_000),
        )],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_stored_once_under_replays_reordering_refusals_and_restarts() {
    for e in engines(CONFIG).await {
        eprintln!("on {}", e.name);
        stored_once_on(&e).await;
    }
}

async fn stored_once_on(e: &Engine) {
    let h: &Harness<dyn Store> = e;
    let t = h.token(TokenKind::Agent, Some("srv-1")).await;
    let s = hour_ago(3);
    let at = |seq: u64| s + seq * 60_000;
    // Out of order: 3, then 1, then all three again with 2.
    let (st, b) = h.push(&t, &push("srv-1", vec![one(3, at(3))])).await;
    assert_eq!((st, ack(&b)), (StatusCode::OK, (1, 0)));
    let (st, b) = h.push(&t, &push("srv-1", vec![one(1, at(1))])).await;
    assert_eq!((st, ack(&b)), (StatusCode::OK, (1, 0)));
    let all: Vec<_> = (1..=3).map(|q| one(q, at(q))).collect();
    let (st, b) = h.push(&t, &push("srv-1", all.clone())).await;
    assert_eq!((st, ack(&b)), (StatusCode::OK, (1, 2)));
    // The same batch twice in one push counts once.
    let (st, b) = h
        .push(&t, &push("srv-1", vec![one(4, at(4)), one(4, at(4))]))
        .await;
    assert_eq!((st, ack(&b)), (StatusCode::OK, (1, 1)));
    // A refused push (one bad batch) stores nothing, not even its good batch's name.
    let mut bad = one(6, at(6));
    bad.records[0].end_unix_ms = bad.records[0].start_unix_ms;
    let (st, _) = h.push(&t, &push("srv-1", vec![one(5, at(5)), bad])).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    let (st, b) = h
        .push(&t, &push("srv-1", vec![one(5, at(5)), one(6, at(6))]))
        .await;
    assert_eq!((st, ack(&b)), (StatusCode::OK, (2, 0)));
    // A hole (8 before 7) survives a restart of the store.
    let (st, b) = h.push(&t, &push("srv-1", vec![one(8, at(8))])).await;
    assert_eq!((st, ack(&b)), (StatusCode::OK, (1, 0)));
    let expected: u64 = (1..=6).chain([8]).map(|q| 1_000_000 * q).sum();
    assert_eq!(h.store.agent_balance("srv-1").await.unwrap().1, expected);

    let reopened = e
        .reopen(&StoreOptions {
            timezone: Some("Europe/Paris".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .store();
    let state = e.state_over(reopened.clone());
    let send = |p: empreinte_shared::wire::Push| {
        let (state, t) = (state.clone(), t.clone());
        async move {
            let resp = post_push(state, &t, &p).await;
            let status = resp.status();
            let body = http_body_util::BodyExt::collect(resp.into_body())
                .await
                .unwrap()
                .to_bytes();
            (status, String::from_utf8_lossy(&body).into_owned())
        }
    };
    let replay: Vec<_> = (1..=8).map(|q| one(q, at(q))).collect();
    let (st, b) = send(push("srv-1", replay.clone())).await;
    assert_eq!(
        (st, ack(&b)),
        (StatusCode::OK, (1, 7)),
        "only 7 was missing"
    );
    let (st, b) = send(push("srv-1", replay)).await;
    assert_eq!((st, ack(&b)), (StatusCode::OK, (0, 8)));
    let expected: u64 = (1..=8).map(|q| 1_000_000 * q).sum();
    assert_eq!(reopened.agent_balance("srv-1").await.unwrap().1, expected);
    let rows: u64 = reopened
        .hourly_rows(0, i64::MAX)
        .await
        .unwrap()
        .iter()
        .map(|r| r.energy_uj)
        .sum();
    assert_eq!(rows, expected);
}

/// Every read endpoint and the month's report: 200, and the totals they show.
async fn reads(h: &Harness<dyn Store>, read: &str) -> Vec<serde_json::Value> {
    let month = jiff::Timestamp::from_second((hour_ago(0) / 1000) as i64)
        .unwrap()
        .to_zoned(TimeZone::get("Europe/Paris").unwrap())
        .strftime("%Y-%m")
        .to_string();
    let mut out = Vec::new();
    for path in [
        "/api/v1/projects".to_string(),
        "/api/v1/footprint?group_by=project".to_string(),
        "/api/v1/footprint?group_by=day".to_string(),
        "/api/v1/footprint?group_by=host".to_string(),
        "/api/v1/agents".to_string(),
        "/api/v1/objectives".to_string(),
        "/api/v1/coefficients".to_string(),
        format!("/reports/{month}.json"),
        format!("/reports/{month}.csv"),
        format!("/reports/{month}.md"),
    ] {
        let (status, mut body) = h.get(read, &path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        // When a report was generated is not a figure: it moves with the clock.
        if let Some(o) = body.as_object_mut() {
            o.remove("generated_at");
        }
        if let Some(text) = body.as_str() {
            let kept: Vec<&str> = text
                .lines()
                .filter(|l| !l.starts_with("- **Généré le**") && !l.starts_with("- **Generated"))
                .collect();
            body = serde_json::Value::String(kept.join("\n"));
        }
        out.push(body);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_past_i64_max_are_refused_and_every_read_still_answers() {
    for e in engines(CONFIG).await {
        eprintln!("on {}", e.name);
        counters_past_i64_max_on(&e).await;
    }
}

async fn counters_past_i64_max_on(h: &Harness<dyn Store>) {
    let t = h.token(TokenKind::Agent, Some("srv-1")).await;
    let read = h.token(TokenKind::Read, None).await;
    let s = hour_ago(2);
    let (st, _) = h.push(&t, &push("srv-1", vec![one(1, s)])).await;
    assert_eq!(st, StatusCode::OK);
    let before = reads(h, &read).await;
    for seq in [2, 3] {
        let mut b = one(seq, s + seq * 60_000);
        b.counters = vec![Counter {
            project: "chat".into(),
            component: Component::Cpu,
            source: SourceKind::Rapl,
            total_uj: u64::MAX,
        }];
        let (st, body) = h.push(&t, &push("srv-1", vec![b])).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(
            body.contains("batches[0].counters[0].total_uj"),
            "the path is named: {body}"
        );
    }
    // A sequence number or a spool figure past i64::MAX: refused too, with its path.
    let (st, body) = h
        .push(&t, &push("srv-1", vec![one(1u64 << 63, s + 300_000)]))
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.contains("batches[0].seq"), "{body}");
    let mut p = push("srv-1", vec![one(4, s + 240_000)]);
    p.spool.bytes = u64::MAX;
    let (st, body) = h.push(&t, &p).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.contains("spool.bytes"), "{body}");
    assert_eq!(reads(h, &read).await, before, "nothing changed");
    let agents = &before[4]["agents"][0];
    assert_eq!(agents["stored_uj"], 1_000_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_batches_past_the_hosts_power_are_refused_and_every_read_still_answers() {
    for e in engines(CONFIG).await {
        eprintln!("on {}", e.name);
        overlapping_on(&e).await;
    }
}

async fn overlapping_on(h: &Harness<dyn Store>) {
    let t = h.token(TokenKind::Agent, Some("srv-1")).await;
    let read = h.token(TokenKind::Read, None).await;
    let hour = hour_ago(3);
    // 49.9 kW for one hour: under the 50 kW bound alone.
    let uj = 49_900 * 3_600 * 1_000_000u64;
    let full = |seq: u64| {
        batch(
            9,
            seq,
            hour,
            hour + 3_600_000,
            vec![record(
                "chat",
                Component::Gpu,
                SourceKind::Nvml,
                hour,
                hour + 3_600_000,
                uj,
            )],
        )
    };
    let (st, body) = h.push(&t, &push("srv-1", vec![full(1)])).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let before = reads(h, &read).await;
    let mut seq = 1;
    for _ in 0..60 {
        let batches = (0..20)
            .map(|_| {
                seq += 1;
                full(seq)
            })
            .collect();
        let (st, body) = h.push(&t, &push("srv-1", batches)).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(body.contains("batches[0].records"), "{body}");
        assert!(body.contains("max_host_power_watts"), "{body}");
    }
    assert_eq!(reads(h, &read).await, before, "nothing changed");
    assert_eq!(h.store.agent_balance("srv-1").await.unwrap().1, uj);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// SQLite alone: its writer's queue (PostgreSQL has none: each push is its own
/// transaction, a pool without a free connection answers the same 503).
async fn a_full_write_queue_answers_503_with_retry_after_and_stores_nothing_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = empreinte_collector::config::CollectorConfig::from_toml(CONFIG).unwrap();
    let store = Arc::new(
        SqliteStore::open_with(
            dir.path(),
            &StoreOptions {
                timezone: Some("Europe/Paris".into()),
                max_queued_batches: 1,
                ..Default::default()
            },
        )
        .await
        .unwrap(),
    );
    let state = common::app_state(config, store.clone());
    let t =
        empreinte_collector::auth::issue(store.as_ref(), TokenKind::Agent, Some("srv-1"), "", 1)
            .await
            .unwrap()
            .token;
    let send = |p: empreinte_shared::wire::Push| {
        let (state, t) = (state.clone(), t.clone());
        async move {
            let resp = post_push(state, &t, &p).await;
            let status = resp.status();
            let retry = resp.headers().get("retry-after").cloned();
            (status, retry)
        }
    };
    // Another connection holds the ingest log's write lock: the writer waits, its queue
    // fills.
    let blocker = rusqlite::Connection::open(dir.path().join(LOG_FILE)).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let s = hour_ago(2);
    let first = tokio::spawn(send(push("srv-1", vec![one(1, s)])));
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while store.queued_batches() < 1 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the first push waits in the queue");
    let (status, retry) = send(push("srv-1", vec![one(2, s + 60_000)])).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let retry: u64 = retry.unwrap().to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry));
    blocker.execute_batch("COMMIT").unwrap();
    assert_eq!(first.await.unwrap().0, StatusCode::OK);
    assert_eq!(store.agent_balance("srv-1").await.unwrap().1, 1_000_000);
    assert_eq!(store.queued_batches(), 0);
}

async fn seeded_dir() -> tempfile::TempDir {
    let h = Harness::new(CONFIG).await;
    let t = h.token(TokenKind::Agent, Some("srv-1")).await;
    for seq in 1..=200 {
        let (st, _) = h
            .push(
                &t,
                &push("srv-1", vec![one(seq, hour_ago(5) + seq * 60_000)]),
            )
            .await;
        assert_eq!(st, StatusCode::OK);
    }
    assert!(h.dir.path().join(MARKER_FILE).exists());
    let Harness { dir, store, state } = h;
    drop(state);
    store.close().await;
    drop(store);
    // `close` checkpoints: what was stored is in the database file itself, and the WAL
    // (which the test deletes) holds nothing.
    let wal = dir.path().join(format!("{DB_FILE}-wal"));
    assert!(
        std::fs::metadata(&wal).map_or(0, |m| m.len()) == 0,
        "the WAL still holds {} bytes after close",
        std::fs::metadata(&wal).map_or(0, |m| m.len())
    );
    dir
}

fn refused(err: StoreError, dir: &std::path::Path, what: &str) {
    let text = err.to_string();
    assert!(
        matches!(err, StoreError::Integrity { .. }),
        "{what}: {text}"
    );
    assert!(
        text.contains(&dir.join(DB_FILE).display().to_string()),
        "{what}: the file is named: {text}"
    );
    assert!(text.contains("to restore"), "{what}: {text}");
    assert!(text.contains("empreinte backup"), "{what}: {text}");
}

/// SQLite alone: the file in the data directory (PostgreSQL keeps its own integrity).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_an_emptied_or_a_lost_database_is_refused_at_start() {
    // Damaged: pages overwritten in the middle of the file.
    let dir = seeded_dir().await;
    let db = dir.path().join(DB_FILE);
    for ext in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.path().join(format!("{DB_FILE}{ext}")));
    }
    let mut bytes = std::fs::read(&db).unwrap();
    assert!(bytes.len() > 6 * 4096, "{} bytes", bytes.len());
    let end = bytes.len() - 4096;
    for (i, b) in bytes[2 * 4096..end].iter_mut().enumerate() {
        *b = (i * 7 + 13) as u8;
    }
    std::fs::write(&db, &bytes).unwrap();
    let err = SqliteStore::open_with(dir.path(), &StoreOptions::default())
        .await
        .err()
        .expect("refused");
    refused(err, dir.path(), "damaged");

    // Emptied.
    let dir = seeded_dir().await;
    let db = dir.path().join(DB_FILE);
    for ext in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.path().join(format!("{DB_FILE}{ext}")));
    }
    std::fs::write(&db, b"").unwrap();
    let err = SqliteStore::open(dir.path()).await.err().expect("refused");
    refused(err, dir.path(), "empty");
    assert_eq!(std::fs::metadata(&db).unwrap().len(), 0, "not recreated");

    // Gone.
    std::fs::remove_file(&db).unwrap();
    let err = SqliteStore::open(dir.path()).await.err().expect("refused");
    refused(err, dir.path(), "missing");
    assert!(!db.exists(), "not recreated");

    // A first start (no token ever issued) creates it.
    let fresh = tempfile::tempdir().unwrap();
    SqliteStore::open(fresh.path()).await.unwrap();
    assert!(fresh.path().join(DB_FILE).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacting_old_hourly_rows_leaves_an_old_months_report_identical() {
    for e in engines(CONFIG).await {
        eprintln!("on {}", e.name);
        compaction_on(&e).await;
    }
}

async fn compaction_on(e: &Engine) {
    let h: &Harness<dyn Store> = e;
    let read = h.token(TokenKind::Read, None).await;
    let tz = TimeZone::get("Europe/Paris").unwrap();
    // Six weeks of data ending a week ago, three hosts, a batch every 3 hours.
    let mut seq = [0u64; 3];
    for (i, host) in HOSTS.iter().enumerate() {
        let t = h.token(TokenKind::Agent, Some(host)).await;
        let batches: Vec<_> = (0..(42 * 8))
            .map(|k| {
                seq[i] += 1;
                let start = hour_ago(24 * 49) + k * 3 * 3_600_000;
                batch(
                    2,
                    seq[i],
                    start,
                    start + 3_600_000,
                    vec![
                        record(
                            PROJECTS[k as usize % 4],
                            Component::Cpu,
                            SourceKind::Rapl,
                            start,
                            start + 3_600_000,
                            1_000_003 * (k + 1),
                        ),
                        record(
                            PROJECTS[(k as usize + i) % 4],
                            Component::Gpu,
                            SourceKind::Nvml,
                            start,
                            start + 1_800_000,
                            7_000_001 * (k + 1),
                        ),
                    ],
                )
            })
            .collect();
        let (st, body) = h.push(&t, &push(host, batches)).await;
        assert_eq!(st, StatusCode::OK, "{body}");
    }
    let config = h.state.planner.config().clone();
    let now_s = (hour_ago(0) / 1000) as i64;
    let old = month_of(&tz, (hour_ago(24 * 45) / 1000) as i64).unwrap();
    let report = |store: Arc<dyn Store>| {
        let config = config.clone();
        let tz = tz.clone();
        async move {
            let data = empreinte_collector::report::build_summary(
                store.as_ref(),
                &config,
                &tz,
                &old,
                now_s,
            )
            .await
            .unwrap();
            (
                empreinte_collector::report::to_json(&data).unwrap(),
                empreinte_collector::report::document::markdown(
                    &data,
                    empreinte_collector::report::Lang::Fr,
                ),
            )
        }
    };
    let before = report(h.store.clone()).await;
    let api_before = reads(h, &read).await;
    let rows_before = h.store.hourly_rows(0, i64::MAX).await.unwrap().len();
    // Everything before the start of today (local) goes.
    let deleted = e.opened.compact_hourly(now_s).await.unwrap();
    assert!(
        deleted > 0 && deleted as usize <= rows_before,
        "{deleted} of {rows_before}"
    );
    assert!(h.store.hourly_rows(0, old.to_s).await.unwrap().is_empty());
    let after = report(h.store.clone()).await;
    assert_eq!(before.0, after.0, "the month's JSON report");
    assert_eq!(before.1, after.1, "the month's Markdown report");
    // The current month's API figures are unchanged too.
    let api_after = reads(h, &read).await;
    // Projects keep their span: after compaction, their first and last hours are the
    // starts of the local days that held them (every hour here was compacted).
    let day_of = |v: &serde_json::Value| -> String {
        let t: jiff::Timestamp = v.as_str().unwrap().parse().unwrap();
        let d = t.to_zoned(tz.clone()).start_of_day().unwrap().timestamp();
        jiff::Timestamp::from_second(d.as_second())
            .unwrap()
            .to_string()
    };
    let (before_p, after_p) = (&api_before[0]["projects"], &api_after[0]["projects"]);
    assert_eq!(after_p.as_array().unwrap().len(), 4, "{after_p}");
    for (b, a) in before_p
        .as_array()
        .unwrap()
        .iter()
        .zip(after_p.as_array().unwrap())
    {
        assert_eq!(a["project"], b["project"]);
        assert_eq!(a["first_hour"], day_of(&b["first_hour"]), "{a} {b}");
        assert_eq!(a["last_hour"], day_of(&b["last_hour"]), "{a} {b}");
    }
    assert_eq!(api_before[1], api_after[1], "footprint by project");
    assert_eq!(
        api_before[2], api_after[2],
        "footprint by day (daily rollups)"
    );
    assert_eq!(api_before[4], api_after[4], "agents");
    // The rollups cannot be rebuilt in another time zone any more: refused, clearly.
    let err = e
        .reopen(&StoreOptions {
            timezone: Some("UTC".into()),
            ..Default::default()
        })
        .await
        .err()
        .expect("refused");
    assert!(
        err.to_string()
            .contains("set organisation.timezone back to Europe/Paris"),
        "{err}"
    );
}

/// `POST /api/v1/ingest` of `p` with `token` (no content type, as the tests above send
/// it) through the router over `state`: the response.
async fn post_push(
    state: AppState,
    token: &str,
    p: &empreinte_shared::wire::Push,
) -> axum::response::Response {
    router(state)
        .oneshot(
            Request::post("/api/v1/ingest")
                .header("authorization", format!("Bearer {token}"))
                .body(Body::from(serde_json::to_vec(p).unwrap()))
                .unwrap(),
        )
        .await
        .unwrap()
}
