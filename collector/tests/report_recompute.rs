#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Configuration history and `recompute` (issue 16, item 4), on both engines: October
//! 2025 (Paris) is stored with PUE 1.3 and a 20 g/h embodied rate; the configuration is
//! then corrected to PUE 1.1 and 30 g/h from 15 October, and recomputed. Every figure
//! of the month (facility energy, location- and market-based, embodied, euros) then
//! equals the hand computation with each plan over its own period; pushes that arrive
//! afterwards get the plan in force at their hour; the month records what it was; the
//! report says the month was recomputed and which configuration made its figures.

mod common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{KWH, TestDefaults, batch, push, record};
use empreinte_collector::config::CollectorConfig;
use empreinte_collector::history::{self, RecomputeJob};
use empreinte_collector::period::month;
use empreinte_collector::plan::Planner;
use empreinte_collector::server::{AppState, router};
use empreinte_collector::store::pg::DatabaseUrl;
use empreinte_collector::store::{OpenStore, Store, TokenKind};
use empreinte_shared::wire::Batch;
use empreinte_shared::{Component, SourceKind};
use http_body_util::BodyExt;
use tower::ServiceExt;

fn config(pue: f64, server_kg: f64) -> CollectorConfig {
    CollectorConfig::from_toml(&format!(
        r#"
[organisation]
name = "Ville de Test"
timezone = "Europe/Paris"
language = "fr"

[limits]
max_batch_age = "36500days"

[[site]]
name = "mairie"
zone = "FR"
pue = {pue}
pue_source = "facilities measurement"
hosts = ["srv-*"]
market_g_per_kwh = 12.0
market_source = "guarantees of origin contract"
tariff_eur_per_kwh = 0.20
tariff_source = "contract 2025"

[[inventory]]
hosts = ["srv-1"]
server_kgco2e = {server_kg}
server_lifetime_years = 1.0
server_source = "test figure"
gpus = [{{ model = "test-gpu", count = 1 }}]
"#
    ))
    .unwrap()
}

struct Engine {
    name: &'static str,
    _dir: tempfile::TempDir,
    opened: OpenStore,
    store: Arc<dyn Store>,
}

impl Engine {
    async fn open(name: &'static str, url: Option<String>) -> Engine {
        let dir = tempfile::tempdir().unwrap();
        let c = config(1.3, 87.6);
        let url: Option<DatabaseUrl> = url.map(|u| u.parse().unwrap());
        let opened = OpenStore::open(
            dir.path(),
            url.as_ref(),
            &c.store
                .options(&c.organisation.timezone, c.limits.max_host_power_watts),
        )
        .await
        .unwrap();
        let store = opened.store();
        Engine {
            name,
            _dir: dir,
            opened,
            store,
        }
    }

    /// A collector started with `c` at `now_ms` (it records its plan), as `server::run`.
    async fn state(&self, c: &CollectorConfig, now_ms: u64) -> AppState {
        let h = history::record(self.store.as_ref(), c, None, now_ms)
            .await
            .unwrap();
        let configs = history::configs(&h, c).unwrap();
        let planner = Planner::with_history(Arc::new(c.clone()), Arc::new(TestDefaults), configs);
        AppState::new(self.store.clone(), Arc::new(planner)).unwrap()
    }

    /// `empreinte recompute --from`, as `src/recompute_cli.rs` does it.
    async fn recompute(
        &self,
        c: &CollectorConfig,
        from_s: i64,
        now_ms: u64,
    ) -> history::Recomputation {
        let h = history::record(self.store.as_ref(), c, Some(from_s), now_ms)
            .await
            .unwrap();
        let configs = history::configs(&h, c).unwrap();
        let planner = Planner::with_history(Arc::new(c.clone()), Arc::new(TestDefaults), configs);
        let job = RecomputeJob {
            from_s,
            now_ms,
            plans: Arc::new(planner),
        };
        self.store.recompute(&job).await.unwrap()
    }
}

async fn send(state: &AppState, token: &str, batches: Vec<Batch>) {
    for chunk in batches.chunks(50) {
        let p = push("srv-1", chunk.to_vec());
        let resp = router(state.clone())
            .oneshot(
                Request::post("/api/v1/ingest")
                    .header("content-type", "application/json")
                    .header("authorization", format!("Bearer {token}"))
                    .body(Body::from(serde_json::to_vec(&p).unwrap()))
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    }
}

/// One hour of srv-1: 1 kWh of CPU and 0.5 kWh of GPU for `chat`.
fn hour(seq: u64, hour_s: i64) -> Batch {
    let (s, e) = (hour_s as u64 * 1000, hour_s as u64 * 1000 + 3_600_000);
    batch(
        1,
        seq,
        s,
        e,
        vec![
            record("chat", Component::Cpu, SourceKind::Rapl, s, e, KWH),
            record("chat", Component::Gpu, SourceKind::Nvml, s, e, KWH / 2),
        ],
    )
}

/// The hand computation of an hour of 1.5 kWh: `[facility µJ, location µg, market µg,
/// embodied µg, cost µEUR]` at `pue` with `embodied_g_per_hour`.
fn by_hand(pue: f64, embodied_g_per_hour: f64) -> [f64; 5] {
    let facility_kwh = 1.5 * pue;
    [
        facility_kwh * KWH as f64,
        facility_kwh * 50.0 * 1e6,
        facility_kwh * 12.0 * 1e6,
        embodied_g_per_hour * 1e6,
        facility_kwh * 0.20 * 1e6,
    ]
}

async fn month_figures(store: &dyn Store, from_s: i64, to_s: i64) -> [f64; 5] {
    let mut out = [0.0; 5];
    for l in store.lines(from_s, to_s).await.unwrap() {
        out[0] += l.sums.facility_energy_uj as f64;
        out[1] += l.sums.location_co2e_ug as f64;
        out[2] += l.sums.market_co2e_ug as f64;
        out[3] += l.sums.embodied_co2e_ug as f64;
    }
    for c in store.costs(from_s, to_s).await.unwrap_or_default() {
        out[4] += c.cost_ueur as f64;
    }
    out
}

fn assert_close(name: &str, what: &str, got: [f64; 5], want: [f64; 5], costs: bool) {
    let labels = [
        "facility µJ",
        "location µg",
        "market µg",
        "embodied µg",
        "cost µEUR",
    ];
    for i in 0..if costs { 5 } else { 4 } {
        // Rows are rounded once each: a few units over a month of rows.
        assert!(
            (got[i] - want[i]).abs() <= 200.0,
            "{name}, {what}: {} is {} (hand computation {})",
            labels[i],
            got[i],
            want[i]
        );
    }
}

async fn scenario(e: &Engine) {
    let tz = jiff::tz::TimeZone::get("Europe/Paris").unwrap();
    let m = month(&tz, 2025, 10).unwrap();
    // 15 October, 00:00 in Paris (UTC+2).
    let change_s = m.from_s + 14 * 86_400;
    let v1 = config(1.3, 87.6); // server 10 g/h + GPU 10 g/h
    let v2 = config(1.1, 175.2); // server 20 g/h + GPU 10 g/h
    let now_ms = (m.to_s as u64 + 5 * 86_400) * 1000;
    let state = e.state(&v1, now_ms).await;
    let token =
        empreinte_collector::auth::issue(e.store.as_ref(), TokenKind::Agent, Some("srv-1"), "t", 1)
            .await
            .unwrap()
            .token;
    // Every third hour of the month, the last two pairs of hours left for later.
    let hours: Vec<i64> = (m.from_s..m.to_s - 6 * 3600).step_by(3 * 3600).collect();
    let batches: Vec<Batch> = hours
        .iter()
        .enumerate()
        .map(|(i, &h)| hour(i as u64 + 1, h))
        .collect();
    send(&state, &token, batches).await;
    let (before_n, after_n) = (
        hours.iter().filter(|&&h| h < change_s).count() as f64,
        hours.iter().filter(|&&h| h >= change_s).count() as f64,
    );
    let all = before_n + after_n;
    let v1_hour = by_hand(1.3, 20.0);
    let stored = month_figures(e.store.as_ref(), m.from_s, m.to_s).await;
    assert_close(e.name, "as stored", stored, v1_hour.map(|v| v * all), true);

    // The correction, from 15 October on.
    let r = e.recompute(&v2, change_s, now_ms + 1000).await;
    assert_eq!(r.rows as f64, after_n * 2.0, "{}: rows recomputed", e.name);
    let v2_hour = by_hand(1.1, 30.0);
    let want: [f64; 5] = std::array::from_fn(|i| v1_hour[i] * before_n + v2_hour[i] * after_n);
    let got = month_figures(e.store.as_ref(), m.from_s, m.to_s).await;
    assert_close(e.name, "recomputed", got, want, true);
    // The daily rollups and the hourly rows agree with the monthly ones.
    let days = e
        .store
        .lines(m.from_s, m.from_s + 20 * 86_400)
        .await
        .unwrap();
    let rows = e
        .store
        .hourly_rows(m.from_s, m.from_s + 20 * 86_400)
        .await
        .unwrap();
    let loc_days: u64 = days.iter().map(|l| l.sums.location_co2e_ug).sum();
    let loc_rows: u64 = rows.iter().map(|r| r.location_co2e_ug).sum();
    assert_eq!(loc_days, loc_rows, "{}: rollups equal their rows", e.name);
    assert!(
        rows.iter()
            .all(|r| (r.pue - if r.hour_s < change_s { 1.3 } else { 1.1 }).abs() < 1e-12)
    );

    // The month says what it was: before and after, with the old coefficients' ids.
    let rec = e.store.recomputations(m.from_s, m.to_s).await.unwrap();
    assert_eq!(rec.len(), 1, "{}", e.name);
    let month_rec = &rec[0].months[0];
    assert_eq!(month_rec.month_s, m.from_s);
    let old_loc = v1_hour[1] * after_n;
    assert!((month_rec.before.location_ug as f64 - old_loc).abs() <= 100.0);
    assert!((month_rec.after.location_ug as f64 - v2_hour[1] * after_n).abs() <= 100.0);
    assert!(!month_rec.coefficients_before.is_empty());
    // Euros too, on both engines: 1.65 kWh × 0.20 € an hour after the correction.
    assert!((month_rec.before.cost_ueur as f64 - v1_hour[4] * after_n).abs() <= 100.0);
    assert!((month_rec.after.cost_ueur as f64 - v2_hour[4] * after_n).abs() <= 100.0);
    let used = e.store.coefficients_used(m.from_s, m.to_s).await.unwrap();
    let pues: Vec<f64> = used
        .iter()
        .filter(|c| c.kind == "pue")
        .map(|c| c.value)
        .collect();
    assert!(
        pues.contains(&1.3) && pues.contains(&1.1),
        "{}: {pues:?}",
        e.name
    );

    // Late pushes, one before the change and one after, from a collector started with v2:
    // each gets the plan in force at its hour, embodied included.
    let state = e.state(&v2, now_ms + 2000).await;
    let late_before = m.from_s + 3600;
    let late_after = m.to_s - 3600;
    send(
        &state,
        &token,
        vec![hour(10_000, late_before), hour(10_001, late_after)],
    )
    .await;
    for (h, pue, emb) in [(late_before, 1.3, 20.0), (late_after, 1.1, 30.0)] {
        let rows = e.store.hourly_rows(h, h + 3600).await.unwrap();
        assert_eq!(rows.len(), 2, "{}", e.name);
        assert!(
            rows.iter().all(|r| (r.pue - pue).abs() < 1e-12),
            "{}",
            e.name
        );
        let emb_ug: u64 = rows.iter().map(|r| r.embodied_co2e_ug).sum();
        assert!(
            (emb_ug as f64 - emb * 1e6).abs() <= 2.0,
            "{}: {emb_ug}",
            e.name
        );
    }
    // The report says the month was recomputed, and which plan made which days.
    let data = empreinte_collector::report::build_summary(
        e.store.as_ref(),
        &v2,
        &tz,
        &m,
        (now_ms / 1000) as i64 + 10,
    )
    .await
    .unwrap();
    let md = empreinte_collector::report::render_text(
        &data,
        empreinte_collector::report::Format::Md,
        empreinte_collector::report::Lang::Fr,
    )
    .unwrap();
    // The first page has the month's euros (the stored costs).
    assert!(
        md.contains(" coûté "),
        "{}: no euros on the first page",
        e.name
    );
    let section = md
        .split("## Configuration qui a produit ces chiffres")
        .nth(1)
        .unwrap_or_else(|| panic!("{}: no configuration section in\n{md}", e.name));
    assert!(
        section.contains("Ce mois a été recalculé le 2025-11-06")
            && section.contains("à partir du 2025-10-15 00:00")
            && section.contains("Du 2025-10-01 00:00 au 2025-10-15 00:00")
            && section.contains("Du 2025-10-15 00:00 au 2025-11-01 00:00")
            && section.contains("| mairie | FR | 1,30 |")
            && section.contains("| mairie | FR | 1,10 |"),
        "{}: {section}",
        e.name
    );
    // The active history: v1 from the beginning, v2 from 15 October.
    let h = e.store.plan_history().await.unwrap();
    assert_eq!(
        h.iter().map(|r| r.from_s).collect::<Vec<_>>(),
        vec![0, change_s],
        "{}",
        e.name
    );
    e.opened.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pue_changed_mid_month_then_recomputed_gives_the_hand_computation_on_both_engines() {
    let mut engines = vec![Engine::open("sqlite", None).await];
    if let Some(url) = empreinte_testkit::postgres::fresh_database() {
        engines.push(Engine::open("postgresql", Some(url)).await);
    }
    for e in &engines {
        scenario(e).await;
    }
}
