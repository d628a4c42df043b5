#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The ingest endpoint through the real router, on each engine (SQLite, and PostgreSQL
//! in the test cluster): exact totals, replays ignored, and every kind of bad push
//! refused with a clear 4xx and nothing stored.

mod common;

use axum::http::StatusCode;
use common::*;
use empreinte_collector::store::{Store, TokenKind};
use empreinte_shared::{Component, SourceKind};

const CONFIG: &str = r#"
[[site]]
name = "dc"
zone = "DE"
pue = 1.2
pue_source = "measured"
hosts = ["gpu-*"]
"#;

#[tokio::test]
async fn stored_totals_are_exact_and_a_replay_counts_once() {
    for e in engines(CONFIG).await {
        eprintln!("on {}", e.name);
        stored_totals_are_exact_and_a_replay_counts_once_on(&e).await;
    }
}

async fn stored_totals_are_exact_and_a_replay_counts_once_on(h: &Harness<dyn Store>) {
    let token = h.token(TokenKind::Agent, Some("gpu-01")).await;
    let reader = h.token(TokenKind::Read, None).await;
    let t0 = hour_ago(3);
    // Two batches; the second crosses an hour boundary.
    let p = push(
        "gpu-01",
        vec![
            batch(
                1,
                1,
                t0,
                t0 + 15_000,
                vec![
                    record(
                        "chat",
                        Component::Gpu,
                        SourceKind::Nvml,
                        t0,
                        t0 + 15_000,
                        4_500_000_007,
                    ),
                    record(
                        "web",
                        Component::Cpu,
                        SourceKind::Rapl,
                        t0,
                        t0 + 15_000,
                        900_000_001,
                    ),
                ],
            ),
            batch(
                1,
                2,
                t0 + 3_590_000,
                t0 + 3_605_000,
                vec![
                    record(
                        "chat",
                        Component::Gpu,
                        SourceKind::Nvml,
                        t0 + 3_590_000,
                        t0 + 3_605_000,
                        3_000_000_003,
                    ),
                    record(
                        "idle",
                        Component::Cpu,
                        SourceKind::Estimate,
                        t0 + 3_590_000,
                        t0 + 3_605_000,
                        11,
                    ),
                ],
            ),
        ],
    );
    let (status, body) = h.push(&token, &p).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["accepted"],
        2
    );
    // The same push again (a lost acknowledgement): ignored.
    let (status, body) = h.push(&token, &p).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let ack: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (ack["accepted"].as_u64(), ack["duplicates"].as_u64()),
        (Some(0), Some(2))
    );

    let from = jiff::Timestamp::from_millisecond(t0 as i64).unwrap();
    let to = jiff::Timestamp::from_millisecond(t0 as i64 + 7_200_000).unwrap();
    let (status, f) = h
        .get(
            &reader,
            &format!("/api/v1/footprint?from={from}&to={to}&group_by=project"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{f}");
    let exact = |key: &str| {
        f["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["key"] == key)
            .unwrap()["exact"]["energy_uj"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(exact("chat"), 7_500_000_010);
    assert_eq!(exact("web"), 900_000_001);
    assert_eq!(exact("idle"), 11);
    assert_eq!(f["total"]["exact"]["energy_uj"], 8_400_000_022u64);
    assert_eq!(f["total"]["exact"]["estimated_energy_uj"], 11);
    // DE at 400 g/kWh and PUE 1.2, row by row: the chat GPU rows are 4,500,000,007 µJ
    // and 2,000,000,002 + 1,000,000,001 µJ across the hour boundary.
    let ug = |uj: f64| (uj * 1.2 * 400.0 / 3.6e6).round() as u64;
    let expected = ug(4_500_000_007.0)
        + ug(900_000_001.0)
        + ug(2_000_000_002.0)
        + ug(1_000_000_001.0)
        + ug(7.0)
        + ug(4.0);
    assert_eq!(
        f["total"]["exact"]["location_co2e_ug"].as_u64().unwrap(),
        expected
    );
    let (by_hour_status, by_hour) = h
        .get(
            &reader,
            &format!("/api/v1/footprint?from={from}&to={to}&group_by=hour"),
        )
        .await;
    assert_eq!(by_hour_status, StatusCode::OK);
    assert_eq!(by_hour["rows"].as_array().unwrap().len(), 2, "{by_hour}");
}

#[tokio::test]
async fn bad_pushes_are_refused_clearly_and_nothing_is_stored() {
    for e in engines(CONFIG).await {
        eprintln!("on {}", e.name);
        bad_pushes_are_refused_clearly_and_nothing_is_stored_on(&e).await;
    }
}

async fn bad_pushes_are_refused_clearly_and_nothing_is_stored_on(h: &Harness<dyn Store>) {
    let token = h.token(TokenKind::Agent, Some("gpu-01")).await;
    let other = h.token(TokenKind::Agent, Some("gpu-02")).await;
    let reader = h.token(TokenKind::Read, None).await;
    let t0 = hour_ago(1);
    let good_batch = || {
        batch(
            1,
            1,
            t0,
            t0 + 10_000,
            vec![record(
                "chat",
                Component::Gpu,
                SourceKind::Nvml,
                t0,
                t0 + 10_000,
                1_000_000,
            )],
        )
    };
    let good = push("gpu-01", vec![good_batch()]);
    let good_json = serde_json::to_string(&good).unwrap();
    // A good batch next to a bad one: the whole push is refused.
    let mut over = push(
        "gpu-01",
        vec![
            good_batch(),
            batch(
                1,
                2,
                t0 + 10_000,
                t0 + 20_000,
                vec![
                    // 100 kW for 10 s.
                    record(
                        "chat",
                        Component::Gpu,
                        SourceKind::Nvml,
                        t0 + 10_000,
                        t0 + 20_000,
                        1_000_000_000_000,
                    ),
                ],
            ),
        ],
    );
    let over_json = serde_json::to_string(&over).unwrap();
    over.batches.truncate(1);
    let cases: Vec<(&str, Option<&str>, String, StatusCode, &str)> = vec![
        (
            "no token",
            None,
            good_json.clone(),
            StatusCode::UNAUTHORIZED,
            "Authorization: Bearer",
        ),
        (
            "a read token",
            Some(&reader),
            good_json.clone(),
            StatusCode::FORBIDDEN,
            "needs an agent token",
        ),
        (
            "another agent's token",
            Some(&other),
            good_json.clone(),
            StatusCode::FORBIDDEN,
            "issued for agent",
        ),
        (
            "not JSON",
            Some(&token),
            "{\"version\": 1,".into(),
            StatusCode::BAD_REQUEST,
            "not a valid push",
        ),
        (
            "negative energy",
            Some(&token),
            good_json.replace("\"energy_uj\":1000000", "\"energy_uj\":-5"),
            StatusCode::BAD_REQUEST,
            "batches[0].records[0].energy_uj",
        ),
        (
            "NaN energy",
            Some(&token),
            good_json.replace("\"energy_uj\":1000000", "\"energy_uj\":NaN"),
            StatusCode::BAD_REQUEST,
            "not a valid push",
        ),
        (
            "a float energy",
            Some(&token),
            good_json.replace("\"energy_uj\":1000000", "\"energy_uj\":1.5e300"),
            StatusCode::BAD_REQUEST,
            "energy_uj",
        ),
        (
            "an unknown field",
            Some(&token),
            good_json.replace("\"seq\":1", "\"seq\":1,\"joules\":3"),
            StatusCode::BAD_REQUEST,
            "joules",
        ),
        (
            "an unknown component",
            Some(&token),
            good_json.replace("\"gpu\"", "\"fan\""),
            StatusCode::BAD_REQUEST,
            "fan",
        ),
        (
            "another version",
            Some(&token),
            good_json.replace(
                &format!("\"version\":{}", empreinte_shared::wire::WIRE_VERSION),
                "\"version\":7",
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "accepts versions [1, 2]",
        ),
        (
            "more power than a host can draw",
            Some(&token),
            over_json,
            StatusCode::UNPROCESSABLE_ENTITY,
            "more than the 50000 W",
        ),
        (
            "a batch in the future",
            Some(&token),
            good_json.replace(
                &format!("\"end_unix_ms\":{}", t0 + 10_000),
                &format!("\"end_unix_ms\":{}", t0 + 10 * 86_400_000),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "in the future",
        ),
        (
            "oversized",
            Some(&token),
            format!("{{\"pad\":\"{}\"}}", "x".repeat(17 * 1024 * 1024)),
            StatusCode::PAYLOAD_TOO_LARGE,
            "larger than",
        ),
    ];
    for (what, tok, body, status, needle) in cases {
        let (got, text) = h.push_raw(tok, body).await;
        assert_eq!(got, status, "{what}: {text}");
        assert!(text.contains(needle), "{what}: {needle:?} not in {text}");
        assert_eq!(h.stored().await, (0, 0), "{what} stored something");
    }
    // And the good push still goes through afterwards.
    let (status, body) = h.push(&token, &good).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(h.stored().await, (1_000_000, 1));
    // /metrics shows per-project figures: a read token is needed, as for the API.
    let metrics_with = |auth: Option<String>| {
        let mut req = axum::http::Request::get("/metrics");
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        h.call(req.body(axum::body::Body::empty()).unwrap())
    };
    let (status, body) = metrics_with(None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, body) = metrics_with(Some(format!("Bearer {token}"))).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "an agent token reads no figures: {body}"
    );
    let reader = h.token(TokenKind::Read, None).await;
    let (status, metrics) = metrics_with(Some(format!("Bearer {reader}"))).await;
    assert_eq!(status, StatusCode::OK, "{metrics}");
    let refused: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("empreinte_collector_refused_pushes_total"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(refused, 13.0, "{metrics}");
}

/// A request body whose bytes never come (a client that sent its headers only).
struct NeverBody;

impl http_body::Body for NeverBody {
    type Data = axum::body::Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::task::Poll::Pending
    }
}

#[tokio::test]
async fn pushes_past_the_in_flight_limit_get_503_with_retry_after_and_slow_bodies_408() {
    for e in engines("[limits]\nmax_ingests_in_flight = 1\nbody_timeout = \"300ms\"\n").await {
        eprintln!("on {}", e.name);
        pushes_past_the_in_flight_limit_get_503_with_retry_after_and_slow_bodies_408_on(&e).await;
    }
}

async fn pushes_past_the_in_flight_limit_get_503_with_retry_after_and_slow_bodies_408_on(
    h: &Harness<dyn Store>,
) {
    let token = h.token(TokenKind::Agent, Some("gpu-01")).await;
    let request = |body: axum::body::Body| {
        axum::http::Request::post("/api/v1/ingest")
            .header("authorization", format!("Bearer {token}"))
            .body(body)
            .unwrap()
    };
    // No token: refused from the headers, the body is never read.
    let (status, text) = h
        .call(
            axum::http::Request::post("/api/v1/ingest")
                .body(axum::body::Body::new(NeverBody))
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{text}");
    // One push whose body never arrives holds the only slot…
    let app = empreinte_collector::server::router(h.state.clone());
    let slow = tokio::spawn(tower::ServiceExt::oneshot(
        app,
        request(axum::body::Body::new(NeverBody)),
    ));
    testkit_wait(|| h.state.ingest_slots.available_permits() == 0).await;
    // …so the next one is told to come back.
    let resp = tower::ServiceExt::oneshot(
        empreinte_collector::server::router(h.state.clone()),
        request(axum::body::Body::from("{}")),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()["retry-after"], "1");
    // The slow one runs out of time (408) and frees its slot.
    let resp = slow.await.unwrap().unwrap();
    assert_eq!(resp.status(), StatusCode::REQUEST_TIMEOUT);
    assert_eq!(h.state.ingest_slots.available_permits(), 1);
    let good = push(
        "gpu-01",
        vec![batch(
            1,
            1,
            hour_ago(1),
            hour_ago(1) + 10_000,
            vec![record(
                "chat",
                Component::Gpu,
                SourceKind::Nvml,
                hour_ago(1),
                hour_ago(1) + 10_000,
                1_000_000,
            )],
        )],
    );
    let (status, body) = h.push(&token, &good).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Waits (up to 10 s) until `cond` holds.
async fn testkit_wait(cond: impl Fn() -> bool) {
    for _ in 0..1000 {
        if cond() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("condition not met within 10 s");
}

#[tokio::test]
async fn values_past_what_is_stored_are_refused_and_reads_keep_answering() {
    for e in engines("").await {
        eprintln!("on {}", e.name);
        values_past_what_is_stored_are_refused_and_reads_keep_answering_on(&e).await;
    }
}

async fn values_past_what_is_stored_are_refused_and_reads_keep_answering_on(
    h: &Harness<dyn Store>,
) {
    let token = h.token(TokenKind::Agent, Some("gpu-01")).await;
    let reader = h.token(TokenKind::Read, None).await;
    let t0 = hour_ago(1);
    let one = |seq: u64, total_uj: u64| {
        let mut p = push(
            "gpu-01",
            vec![batch(
                1,
                seq,
                t0,
                t0 + 10_000,
                vec![record(
                    "chat",
                    Component::Gpu,
                    SourceKind::Nvml,
                    t0,
                    t0 + 10_000,
                    1_000_000,
                )],
            )],
        );
        p.batches[0].counters.push(empreinte_shared::wire::Counter {
            project: "chat".into(),
            component: Component::Gpu,
            source: SourceKind::Nvml,
            total_uj,
        });
        p
    };
    let (status, body) = h.push(&token, &one(1, 1_000_000)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, before) = h.get(&reader, "/api/v1/agents").await;
    for seq in [2, 3] {
        let (status, body) = h.push(&token, &one(seq, u64::MAX)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(body.contains("batches[0].counters[0].total_uj"), "{body}");
    }
    let (status, body) = h.push(&token, &one(u64::MAX, 1_000_000)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.contains("batches[0].seq"), "{body}");
    for path in ["/api/v1/agents", "/api/v1/projects", "/api/v1/footprint"] {
        let (status, body) = h.get(&reader, path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
    }
    let (_, after) = h.get(&reader, "/api/v1/agents").await;
    assert_eq!(before, after);
}

#[tokio::test]
async fn reports_neutralise_formulas_and_html_in_names() {
    for e in engines("").await {
        eprintln!("on {}", e.name);
        reports_neutralise_formulas_and_html_in_names_on(&e).await;
    }
}

async fn reports_neutralise_formulas_and_html_in_names_on(h: &Harness<dyn Store>) {
    let token = h.token(TokenKind::Agent, Some("gpu-01")).await;
    let reader = h.token(TokenKind::Read, None).await;
    let t0 = hour_ago(1);
    let names = [
        "=HYPERLINK(\"http://evil.example\",\"x\")",
        "<img src=x onerror=alert(1)>",
        "[click](javascript:alert(1))",
    ];
    let records = names
        .iter()
        .map(|n| {
            record(
                n,
                Component::Cpu,
                SourceKind::Rapl,
                t0,
                t0 + 10_000,
                1_000_000,
            )
        })
        .collect();
    let (status, body) = h
        .push(
            &token,
            &push("gpu-01", vec![batch(1, 1, t0, t0 + 10_000, records)]),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let tz = jiff::tz::TimeZone::get("Europe/Paris").unwrap();
    let month = empreinte_collector::period::month_of(&tz, (t0 / 1000) as i64)
        .unwrap()
        .label();
    let (status, csv) = h
        .call(
            axum::http::Request::get(format!("/reports/{month}.csv"))
                .header("authorization", format!("Bearer {reader}"))
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{csv}");
    // The organisation speaks French: the CSV's dialect has ';' between fields.
    let mut rows = csv::ReaderBuilder::new()
        .delimiter(b';')
        .from_reader(csv.as_bytes());
    let projects: Vec<String> = rows
        .records()
        .map(|r| r.unwrap().get(5).unwrap().to_string())
        .collect();
    assert!(!projects.is_empty(), "{csv}");
    for p in &projects {
        assert!(
            !p.starts_with(['=', '+', '-', '@', '\t', '\r']),
            "a live formula in the CSV: {p}"
        );
    }
    assert!(
        projects.iter().any(|p| p.starts_with("'=HYPERLINK")),
        "{projects:?}"
    );
    for lang in ["fr", "en"] {
        let (status, md) = h
            .call(
                axum::http::Request::get(format!("/reports/{month}.md?lang={lang}"))
                    .header("authorization", format!("Bearer {reader}"))
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{md}");
        assert!(md.contains("&lt;img src=x onerror=alert(1)&gt;"), "{md}");
        assert!(!md.contains("<img"), "{md}");
        // No link: every bracket is escaped.
        assert!(!md.replace("\\]", "").contains("](javascript:"), "{md}");
        assert!(md.contains("\\[click\\](javascript:alert(1))"), "{md}");
    }
}

/// The fold thread runs below the threads that acknowledge pushes: its own nice value,
/// `FOLD_NICE` above the process's (Linux keeps a nice value per thread).
#[tokio::test]
async fn the_fold_thread_yields_the_cores_to_the_acknowledgements() {
    use empreinte_collector::store::StoreOptions;
    use empreinte_collector::store::sqlite::{SqliteStore, writer::FOLD_NICE};
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open_with(dir.path(), &StoreOptions::default())
        .await
        .unwrap();
    // /proc/…/stat: the fields after the command's closing parenthesis start at the
    // third (the state); the nice value is the nineteenth.
    let nice = |stat: String| -> i64 {
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        after.split(' ').nth(19 - 3).unwrap().parse().unwrap()
    };
    let own = nice(std::fs::read_to_string("/proc/thread-self/stat").unwrap());
    let expected = (own + i64::from(FOLD_NICE)).min(19);
    // A new thread names itself and lowers its priority once it runs: wait for it.
    let folds = || -> Vec<i64> {
        let mut folds = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").unwrap() {
            let task = task.unwrap().path();
            let comm = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
            if comm.trim() == "store-fold" {
                folds.push(nice(std::fs::read_to_string(task.join("stat")).unwrap()));
            }
        }
        folds
    };
    let waited = empreinte_collector::clock::Stopwatch::start();
    loop {
        let seen = folds();
        if !seen.is_empty() && seen.iter().all(|&n| n == expected) {
            break;
        }
        assert!(
            waited.elapsed_seconds() < 10.0,
            "fold threads' nice values {seen:?}, expected {expected}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    store.close().await;
}
