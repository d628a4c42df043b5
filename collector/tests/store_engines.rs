#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! One behaviour, two engines: every scenario here runs against the embedded SQLite store
//! and against PostgreSQL (a database of its own in the cluster `scripts/test` starts),
//! through the collector's router. Each scenario writes a transcript of everything a
//! client or a report sees (acknowledgements, refusals with their problems, every read,
//! the month's report in every text format); the transcripts of the two engines must be
//! equal byte for byte, and each engine is also held to ground truth the test computes
//! (the energy pushed, once per batch).

mod common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{Engine, KWH, batch, engines, push, record};
use empreinte_collector::config::CollectorConfig;
use empreinte_collector::period::month;
use empreinte_collector::plan::Planner;
use empreinte_collector::report::{self, Format, Lang};
use empreinte_collector::server::{AppState, router};
use empreinte_collector::store::pg::DatabaseUrl;
use empreinte_collector::store::{FootprintQuery, Grouping, IntensityImport, OpenStore, TokenKind};
use empreinte_shared::wire::Counter;
use empreinte_shared::{Component, SourceKind};
use tower::ServiceExt;

const CONFIG: &str = r#"
[organisation]
name = "Métropole de Test"
timezone = "Europe/Paris"
language = "fr"

[limits]
max_batch_age = "36500days"

[[site]]
name = "mairie"
zone = "FR"
pue = 1.3
pue_source = "facilities measurement 2025"
hosts = ["srv-*"]
market_g_per_kwh = 12.0
market_source = "guarantees of origin contract 2025"
tariff_eur_per_kwh = 0.2516
tariff_off_peak_eur_per_kwh = 0.1996
tariff_off_peak_hours = ["22-06"]
tariff_source = "Tarif bleu HP/HC, test"
[[site.tariff_change]]
from = "2025-10-02"
eur_per_kwh = 0.2700
off_peak_eur_per_kwh = 0.2100
off_peak_hours = ["22:00-06:00"]
source = "Avenant au contrat, test"

[[site]]
name = "datacentre"
zone = "DE"
hosts = ["gpu-*"]
tariff_eur_per_kwh = 0.18
tariff_source = "Marché public, lot 1, test"

[[inventory]]
hosts = ["gpu-1"]
server_kgco2e = 43.8
server_lifetime_years = 1.0
server_source = "test figure"
purchase_price_eur = 43800.0
amortisation_years = 5.0
purchase_source = "Marché 2025-17, test"
gpus = [{ model = "test-gpu", count = 2 }]

[[objective]]
project = "chat"
monthly_energy_kwh = 20.0
"#;

/// 2025-11-05T10:00:00Z: the reports' "now".
const NOW_S: i64 = 1_762_336_800;

/// `body` (JSON) without the ids of tariff and hardware rates, and those rates in the
/// order of what they say: ids are given in the order rates were first stored, which
/// differs between engines (and between collectors on one PostgreSQL). The figures
/// that refer to them stay.
fn without_ids(body: &str) -> String {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(o) => {
                for k in ["id", "tariff_ids", "rate_ids"] {
                    o.remove(k);
                }
                for (k, x) in o.iter_mut() {
                    strip(x);
                    if let ("tariffs" | "rates", serde_json::Value::Array(a)) = (k.as_str(), x) {
                        a.sort_by_key(|r| r.to_string());
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    match serde_json::from_str::<serde_json::Value>(body) {
        Ok(mut v) => {
            strip(&mut v);
            v.to_string()
        }
        Err(_) => body.to_string(),
    }
}

/// Asserts that every engine wrote the same transcript, naming the first difference.
fn same_transcripts(runs: &[(&str, Vec<String>)]) {
    let (first, base) = &runs[0];
    for (name, t) in &runs[1..] {
        for (i, (a, b)) in base.iter().zip(t).enumerate() {
            if a != b {
                // The first differing line, for a readable failure.
                let line = a.lines().zip(b.lines()).find(|(x, y)| x != y);
                eprintln!("entry {i}, first differing line: {line:?}");
            }
            assert_eq!(a, b, "entry {i} differs between {first} and {name}");
        }
        assert_eq!(
            base.len(),
            t.len(),
            "{first} and {name} wrote transcripts of different lengths"
        );
    }
}

fn ms(s: i64) -> u64 {
    s as u64 * 1000
}

/// October 2025 (Paris) days 1–3 on two hosts, pushed out of order with replays, two
/// refused pushes, intensity series imported before and after: the transcript of every
/// answer and read, and the month's report in each format.
async fn october_transcript(e: &Engine) -> Vec<String> {
    let mut t = Vec::new();
    let tz = jiff::tz::TimeZone::get("Europe/Paris").unwrap();
    let m = month(&tz, 2025, 10).unwrap();
    let hours: Vec<i64> = (m.from_s..m.from_s + 72 * 3600).step_by(3600).collect();
    let imp = |first: usize, n: usize, base: f64| IntensityImport {
        zone: "FR".into(),
        source: "test series".into(),
        kind: "direct".into(),
        file: "test.csv".into(),
        now_ms: 1,
        hours: hours[first..first + n]
            .iter()
            .map(|&h| (h, base + ((h / 3600) % 24) as f64 * 1.7, 1.0))
            .collect(),
    };
    t.push(format!(
        "{:?}",
        e.store.import_intensity(&imp(0, 24, 20.0)).await.unwrap()
    ));
    let srv = e.token(TokenKind::Agent, Some("srv-1")).await;
    let gpu = e.token(TokenKind::Agent, Some("gpu-1")).await;
    let read = e.token(TokenKind::Read, None).await;
    let mut expected_uj: u64 = 0;
    let mut srv_batches = Vec::new();
    let mut gpu_batches = Vec::new();
    for (i, &hs) in hours.iter().enumerate() {
        let (s, end) = (ms(hs), ms(hs) + 3_600_000);
        let web = KWH / 3 + i as u64 * 1_234_567;
        let est = KWH / 7 + i as u64 * 7;
        let mut b = batch(
            1,
            i as u64 + 1,
            s,
            end,
            vec![
                record("web", Component::Cpu, SourceKind::Rapl, s, end, web),
                record("batch", Component::Dram, SourceKind::Estimate, s, end, est),
            ],
        );
        b.counters = vec![Counter {
            project: "web".into(),
            component: Component::Cpu,
            source: SourceKind::Rapl,
            total_uj: web * (i as u64 + 1),
        }];
        srv_batches.push(b);
        let chat = KWH / 2 + i as u64 * 999;
        // Half-hour batches: two per hour, so rows are added to.
        for half in 0..2u64 {
            let (a, z) = (s + half * 1_800_000, s + (half + 1) * 1_800_000);
            gpu_batches.push(batch(
                2,
                2 * i as u64 + half + 1,
                a,
                z,
                vec![
                    record("chat", Component::Gpu, SourceKind::Nvml, a, z, chat / 2),
                    record("web", Component::Cpu, SourceKind::Rapl, a, z, KWH / 20),
                ],
            ));
            expected_uj += chat / 2 + KWH / 20;
        }
        expected_uj += web + est;
    }
    // Out of order: the last chunks first, then the first, with replays between.
    let srv_chunks: Vec<_> = srv_batches.chunks(10).collect();
    let gpu_chunks: Vec<_> = gpu_batches.chunks(25).collect();
    for c in srv_chunks.iter().rev() {
        let r = e.push(&srv, &push("srv-1", c.to_vec())).await;
        t.push(format!("push srv {r:?}"));
    }
    for (i, c) in gpu_chunks.iter().enumerate() {
        let r = e.push(&gpu, &push("gpu-1", c.to_vec())).await;
        t.push(format!("push gpu {r:?}"));
        if i % 2 == 1 {
            // Replayed whole, and mixed with the next chunk's first batch.
            let r = e.push(&gpu, &push("gpu-1", c.to_vec())).await;
            t.push(format!("replay gpu {r:?}"));
        }
    }
    let r = e
        .push(&srv, &push("srv-1", srv_batches[3..15].to_vec()))
        .await;
    t.push(format!("replay srv {r:?}"));
    // Refused whole: a counter past the largest stored value, then more than the host
    // can draw in an hour; neither leaves a trace.
    let s = ms(hours[5]);
    let mut bad = batch(
        7,
        1,
        s,
        s + 3_600_000,
        vec![record(
            "web",
            Component::Cpu,
            SourceKind::Rapl,
            s,
            s + 3_600_000,
            1,
        )],
    );
    bad.counters = vec![Counter {
        project: "web".into(),
        component: Component::Cpu,
        source: SourceKind::Rapl,
        total_uj: u64::MAX,
    }];
    let r = e.push(&srv, &push("srv-1", vec![bad])).await;
    assert_eq!(r.0, StatusCode::UNPROCESSABLE_ENTITY, "{}: {}", e.name, r.1);
    t.push(format!("refused {r:?}"));
    let over: Vec<_> = (1..=20)
        .map(|k| {
            batch(
                8,
                k,
                s,
                s + 3_600_000,
                vec![record(
                    "chat",
                    Component::Gpu,
                    SourceKind::Nvml,
                    s,
                    s + 3_600_000,
                    45_000 * KWH / 20,
                )],
            )
        })
        .collect();
    let r = e.push(&gpu, &push("gpu-1", over)).await;
    assert_eq!(r.0, StatusCode::UNPROCESSABLE_ENTITY, "{}: {}", e.name, r.1);
    t.push(format!("refused {r:?}"));
    // A second series over hours that already have rows: their emissions are recomputed.
    let outcome = e.store.import_intensity(&imp(24, 30, 35.0)).await.unwrap();
    assert!(outcome.rows_updated > 0, "{}", e.name);
    t.push(format!("{outcome:?}"));
    // Ground truth: what was pushed, once per batch.
    let lines = e.store.lines(m.from_s, m.to_s).await.unwrap();
    let stored: u64 = lines.iter().map(|l| l.sums.energy_uj).sum();
    assert_eq!(stored, expected_uj, "{}: stored energy", e.name);
    let rows = e.store.hourly_rows(m.from_s, m.to_s).await.unwrap();
    assert_eq!(
        rows.iter().map(|r| r.energy_uj).sum::<u64>(),
        expected_uj,
        "{}",
        e.name
    );
    let mut balance = 0;
    for a in ["gpu-1", "srv-1"] {
        let b = e.store.agent_balance(a).await.unwrap();
        t.push(format!("balance {a} {b:?}"));
        balance += b.1;
    }
    assert_eq!(balance, expected_uj, "{}: the runs' stored energy", e.name);
    // Every read, at each level (month: monthly rollups; days; hours).
    let day = 86_400;
    for (from, to) in [
        (m.from_s, m.to_s),
        (m.from_s, m.from_s + 2 * day),
        (m.from_s + 3600 * 5, m.from_s + 3600 * 50),
    ] {
        for g in [
            Grouping::Project,
            Grouping::Host,
            Grouping::Site,
            Grouping::Component,
            Grouping::Source,
            Grouping::Hour,
            Grouping::Day,
        ] {
            for (project, host) in [(None, None), (Some("web"), None), (None, Some("gpu-1"))] {
                let q = FootprintQuery {
                    from_s: from,
                    to_s: to,
                    project: project.map(Into::into),
                    host: host.map(Into::into),
                    group: g,
                };
                t.push(format!(
                    "footprint {q:?} {:?}",
                    e.store.footprint(&q).await.unwrap()
                ));
            }
        }
        t.push(format!(
            "lines {:?}",
            e.store.lines(from, to).await.unwrap()
        ));
        t.push(format!(
            "by day {:?}",
            e.store
                .energy_by_day(from, to, "Europe/Paris")
                .await
                .unwrap()
        ));
        t.push(format!(
            "by day UTC {:?}",
            e.store.energy_by_day(from, to, "UTC").await.unwrap()
        ));
        t.push(format!(
            "series {:?}",
            e.store.series_used(from, to).await.unwrap()
        ));
        t.push(format!(
            "coefficients {:?}",
            e.store.coefficients_used(from, to).await.unwrap()
        ));
        t.push(format!(
            "intensity {:?}",
            e.store.intensity("FR", from + 3600 * 30).await.unwrap()
        ));
    }
    t.push(format!("projects {:?}", e.store.projects().await.unwrap()));
    for a in e.store.agents().await.unwrap() {
        // The push times are the collector's clock: left out.
        t.push(format!(
            "agent {} {} {} {:?} {} {} {}",
            a.agent_id,
            a.hostname,
            a.agent_version,
            a.last_batch_end_ms,
            a.spool_batches,
            a.spool_bytes,
            a.spool_dropped
        ));
    }
    let mut after = None;
    loop {
        let page = e
            .store
            .hourly_rows_after(m.from_s, m.to_s, after.as_ref(), 37)
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.key());
        t.push(format!("page {page:?}"));
    }
    for path in [
        "/api/v1/footprint?month=2025-10&group_by=project",
        "/api/v1/footprint?from=2025-10-01&to=2025-10-03&group_by=day",
        "/api/v1/projects",
        "/api/v1/costs?month=2025-10&group_by=project",
        "/api/v1/costs?month=2025-10&group_by=site",
        // (group_by=tariff keys rows by the rates' ids: not compared.)
        "/api/v1/inference?month=2025-10",
    ] {
        let (status, body) = e.get_text(&read, path).await;
        t.push(format!("GET {path} {status} {}", without_ids(&body)));
    }
    // Costs were priced (both tariffs, the change on the 2nd) and the GPU host's purchase
    // is amortised: the comparison above is not of empty answers.
    let (status, costs) = e
        .get_text(&read, "/api/v1/costs?month=2025-10&group_by=tariff")
        .await;
    assert_eq!(status, StatusCode::OK, "{}: {costs}", e.name);
    assert!(
        costs.contains("Avenant au contrat, test"),
        "{}: {costs}",
        e.name
    );
    assert!(
        costs.contains("Marché 2025-17, test"),
        "{}: {costs}",
        e.name
    );
    // The month's report, in every text format.
    let config = e.state.planner.config();
    let m10 = report::parse_report_month(&tz, "2025-10", NOW_S).unwrap();
    let data = report::build(e.store.as_ref(), config, &tz, &m10, NOW_S)
        .await
        .unwrap();
    for (format, lang) in [
        (Format::Json, Lang::En),
        (Format::Md, Lang::Fr),
        (Format::Md, Lang::En),
        (Format::Html, Lang::Fr),
        (Format::Csv, Lang::Fr),
    ] {
        t.push(report::render_text(&data, format, lang).unwrap());
    }
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_month_pushed_out_of_order_with_replays_and_refusals_reads_the_same_on_both_engines() {
    let mut runs = Vec::new();
    for e in engines(CONFIG).await {
        let t = october_transcript(&e).await;
        e.opened.close().await;
        runs.push((e.name, t));
    }
    same_transcripts(&runs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacting_old_hours_leaves_the_months_report_identical_on_both_engines() {
    let mut runs = Vec::new();
    for e in engines(CONFIG).await {
        let tz = jiff::tz::TimeZone::get("Europe/Paris").unwrap();
        let m = month(&tz, 2025, 10).unwrap();
        let agent = e.token(TokenKind::Agent, Some("srv-2")).await;
        let batches: Vec<_> = (0..60)
            .map(|i| {
                let s = ms(m.from_s + 3600 * (i * 11));
                batch(
                    1,
                    i as u64 + 1,
                    s,
                    s + 3_600_000,
                    vec![record(
                        "web",
                        Component::Cpu,
                        SourceKind::Rapl,
                        s,
                        s + 3_600_000,
                        KWH / 9 + i as u64,
                    )],
                )
            })
            .collect();
        let (status, body) = e.push(&agent, &push("srv-2", batches)).await;
        assert_eq!(status, StatusCode::OK, "{}: {body}", e.name);
        let config = e.state.planner.config();
        let m10 = report::parse_report_month(&tz, "2025-10", NOW_S).unwrap();
        let render =
            |data: &report::ReportData| report::render_text(data, Format::Md, Lang::En).unwrap();
        let before = render(
            &report::build_summary(e.store.as_ref(), config, &tz, &m10, NOW_S)
                .await
                .unwrap(),
        );
        let deleted = e.opened.compact_hourly(m.to_s).await.unwrap();
        assert!(deleted >= 50, "{}: {deleted} rows compacted", e.name);
        assert!(
            e.store
                .hourly_rows(m.from_s, m.to_s)
                .await
                .unwrap()
                .is_empty(),
            "{}",
            e.name
        );
        let after = render(
            &report::build_summary(e.store.as_ref(), config, &tz, &m10, NOW_S)
                .await
                .unwrap(),
        );
        assert_eq!(before, after, "{}", e.name);
        e.opened.close().await;
        runs.push((e.name, vec![format!("{deleted}"), after]));
    }
    same_transcripts(&runs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_found_listed_and_revoked_the_same_way_on_both_engines() {
    let mut runs = Vec::new();
    for e in engines(CONFIG).await {
        let mut t = Vec::new();
        let agent = e.token(TokenKind::Agent, Some("srv-1")).await;
        let tokens = e.store.tokens().await.unwrap();
        assert_eq!(tokens.len(), 1, "{}", e.name);
        let id = tokens[0].id.clone();
        let found = e.store.find_token(&id).await.unwrap().unwrap();
        assert_eq!(found, tokens[0], "{}", e.name);
        t.push(format!(
            "{:?} {:?} {}",
            found.kind,
            found.agent_id,
            found.secret_sha256.len()
        ));
        t.push(format!("{:?}", e.store.find_token("nope").await.unwrap()));
        let ok = e.push(&agent, &push("srv-1", vec![])).await;
        t.push(format!("{ok:?}"));
        t.push(format!("{}", e.store.revoke_token(&id, 5).await.unwrap()));
        t.push(format!("{}", e.store.revoke_token(&id, 6).await.unwrap()));
        t.push(format!(
            "{:?}",
            e.store.find_token(&id).await.unwrap().unwrap().revoked_ms
        ));
        let refused = e.push(&agent, &push("srv-1", vec![])).await;
        assert_eq!(refused.0, StatusCode::UNAUTHORIZED, "{}", e.name);
        t.push(format!("{refused:?}").replace(&id, "ID"));
        e.opened.close().await;
        runs.push((e.name, t));
    }
    same_transcripts(&runs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_time_zone_rebuilds_the_rollups_the_same_way_on_both_engines() {
    let utc = CONFIG.replace("Europe/Paris", "UTC");
    let mut runs = Vec::new();
    let sqlite_dir = tempfile::tempdir().unwrap();
    let pg = empreinte_testkit::postgres::fresh_database();
    let places: Vec<(&str, Option<String>)> = std::iter::once(("sqlite", None))
        .chain(pg.map(|u| ("postgresql", Some(u))))
        .collect();
    for (name, url) in places {
        let url: Option<DatabaseUrl> = url.map(|u| u.parse().unwrap());
        let open = |tz: &'static str| {
            let url = url.clone();
            let dir = sqlite_dir.path().join(name);
            async move {
                let config =
                    CollectorConfig::from_toml(&CONFIG.replace("Europe/Paris", tz)).unwrap();
                OpenStore::open(&dir, url.as_ref(), &config.store.options(tz, 50_000.0))
                    .await
                    .unwrap()
            }
        };
        let first = open("UTC").await;
        let planner = Arc::new(Planner::new(
            Arc::new(CollectorConfig::from_toml(&utc).unwrap()),
            Arc::new(common::TestDefaults),
        ));
        let state = AppState::new(first.store(), planner).unwrap();
        let token = empreinte_collector::auth::issue(
            first.store().as_ref(),
            TokenKind::Agent,
            Some("srv-1"),
            "t",
            1,
        )
        .await
        .unwrap()
        .token;
        let paris_tz = jiff::tz::TimeZone::get("Europe/Paris").unwrap();
        let start = month(&paris_tz, 2025, 10).unwrap().from_s;
        let batches: Vec<_> = (0..30)
            .map(|i| {
                let s = ms(start + 3600 * i);
                batch(
                    1,
                    i as u64 + 1,
                    s,
                    s + 3_600_000,
                    vec![record(
                        "web",
                        Component::Cpu,
                        SourceKind::Rapl,
                        s,
                        s + 3_600_000,
                        KWH / 4 + i as u64,
                    )],
                )
            })
            .collect();
        let body = serde_json::to_vec(&push("srv-1", batches)).unwrap();
        let resp = router(state)
            .oneshot(
                Request::post("/api/v1/ingest")
                    .header("content-type", "application/json")
                    .header("authorization", format!("Bearer {token}"))
                    .body(Body::from(body))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{name}");
        first.close().await;
        let paris = open("Europe/Paris").await;
        let s = paris.store();
        assert_eq!(s.rollup_timezone(), "Europe/Paris", "{name}");
        let q = FootprintQuery {
            from_s: start,
            to_s: start + 2 * 86_400,
            project: None,
            host: None,
            group: Grouping::Day,
        };
        let days = s.footprint(&q).await.unwrap();
        assert_eq!(days.len(), 2, "{name}: {days:?}");
        let total: u64 = days.iter().map(|d| d.1.energy_uj).sum();
        assert_eq!(total, (0..30).map(|i| KWH / 4 + i).sum::<u64>(), "{name}");
        runs.push((
            name,
            vec![
                format!("{days:?}"),
                format!(
                    "{:?}",
                    s.coefficients_used(start, start + 86_400).await.unwrap()
                ),
            ],
        ));
        paris.close().await;
    }
    same_transcripts(&runs);
}

/// What an engine keeps beyond the footprint is declared: an endpoint it cannot serve
/// answers 501 naming the engine (never a 503 that a client would retry), its series are
/// left out of `/metrics` without an error, and its report reads as a month without
/// them; an engine that keeps it answers 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_an_engine_does_not_keep_answers_501_naming_the_engine() {
    use empreinte_collector::store::Capability;
    for e in engines(CONFIG).await {
        let reader = e.token(TokenKind::Read, None).await;
        let engine = e.store.engine().name();
        assert_eq!(engine == "SQLite", e.name == "sqlite", "{engine}");
        for (capability, path, series) in [
            (
                Capability::Costs,
                "/api/v1/costs?month=2025-10",
                "empreinte_footprint_cost_euros_total",
            ),
            (
                Capability::InferenceCounts,
                "/api/v1/inference?month=2025-10",
                "empreinte_inference_requests_total",
            ),
        ] {
            let (status, body) = e.get_text(&reader, path).await;
            if e.store.keeps(capability) {
                assert_eq!(status, StatusCode::OK, "{engine} {path}: {body}");
            } else {
                assert_eq!(
                    status,
                    StatusCode::NOT_IMPLEMENTED,
                    "{engine} {path}: {body}"
                );
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                let msg = v["error"].as_str().unwrap();
                assert!(
                    msg.contains(&format!(
                        "the {engine} store does not keep {}",
                        capability.what()
                    )),
                    "{msg}"
                );
            }
            let (status, metrics) = e.get_text(&reader, "/metrics").await;
            assert_eq!(status, StatusCode::OK, "{engine}: {metrics}");
            if !e.store.keeps(capability) {
                assert!(!metrics.contains(series), "{engine}: {metrics}");
            }
        }
        // Both engines keep everything today (docs/postgresql.md's table); the 501 is
        // also checked apart from the engines (`store::capability` unit test).
        assert_eq!(e.store.missing_capabilities(), vec![], "{engine}");
        e.opened.close().await;
    }
}

/// Inference counts (wire v2), two models behind one host, replays and a split push: the
/// inference API by every grouping, the metrics' inference series and the month's report
/// read the same from both engines, and the counts equal what was pushed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inference_counts_read_the_same_on_both_engines() {
    use empreinte_shared::wire::{Batch, InferenceRecord, InferenceServerKind, Record};
    let tz = jiff::tz::TimeZone::get("Europe/Paris").unwrap();
    let from = month(&tz, 2025, 10).unwrap().from_s;
    let mut runs = Vec::new();
    for e in engines(CONFIG).await {
        let agent = e.token(TokenKind::Agent, Some("gpu-1")).await;
        let read = e.token(TokenKind::Read, None).await;
        let batches: Vec<Batch> = (1..=6u64)
            .map(|q| {
                let (a, b) = (
                    ms(from + 3600 * 30) + (q - 1) * 1_200_000,
                    ms(from + 3600 * 30) + q * 1_200_000,
                );
                let model = if q % 2 == 0 {
                    "llama-3-8b"
                } else {
                    "mistral-7b"
                };
                Batch {
                    inference: vec![InferenceRecord {
                        project: "chat".into(),
                        model: model.into(),
                        server: InferenceServerKind::Vllm,
                        start_unix_ms: a,
                        end_unix_ms: b,
                        requests: Some(100 + q),
                        input_tokens: Some(10_000 * q),
                        cached_input_tokens: Some(q),
                        output_tokens: Some(50_000 + q),
                        gap_ms: 0,
                        resets: 0,
                        allocated: true,
                    }],
                    ..batch(
                        4,
                        q,
                        a,
                        b,
                        vec![Record {
                            model: Some(model.into()),
                            ..record(
                                "chat",
                                Component::Gpu,
                                SourceKind::Nvml,
                                a,
                                b,
                                900_000_011 * q,
                            )
                        }],
                    )
                }
            })
            .collect();
        let mut t = Vec::new();
        for chunk in [&batches[..4], &batches[2..]] {
            let (status, body) = e.push(&agent, &push("gpu-1", chunk.to_vec())).await;
            assert_eq!(status, StatusCode::OK, "{}: {body}", e.name);
            t.push(body);
        }
        let totals = e.store.inference_totals().await.unwrap();
        let requests: u64 = totals.iter().map(|x| x.counts.requests.unwrap_or(0)).sum();
        assert_eq!(
            requests,
            (1..=6).map(|q| 100 + q).sum::<u64>(),
            "{}",
            e.name
        );
        t.push(format!("{totals:?}"));
        for by in ["project", "model", "host", "day"] {
            let path = format!("/api/v1/inference?month=2025-10&group_by={by}");
            t.push(format!("GET {path} {:?}", e.get_text(&read, &path).await));
        }
        let (_, metrics) = e.get_text(&read, "/metrics").await;
        let mut series: Vec<&str> = metrics
            .lines()
            .filter(|l| l.starts_with("empreinte_inference_"))
            .collect();
        series.sort();
        assert!(!series.is_empty(), "{}: {metrics}", e.name);
        t.push(series.join("\n"));
        let config = e.state.planner.config();
        let m10 = report::parse_report_month(&tz, "2025-10", NOW_S).unwrap();
        let data = report::build(e.store.as_ref(), config, &tz, &m10, NOW_S)
            .await
            .unwrap();
        for (format, lang) in [(Format::Json, Lang::En), (Format::Md, Lang::Fr)] {
            let text = report::render_text(&data, format, lang).unwrap();
            assert!(
                text.contains("mistral-7b"),
                "{}: the report's models",
                e.name
            );
            t.push(text);
        }
        e.opened.close().await;
        runs.push((e.name, t));
    }
    same_transcripts(&runs);
}
