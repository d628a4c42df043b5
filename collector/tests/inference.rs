#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Inference counts through the real router, on both engines (the embedded SQLite store
//! and PostgreSQL, a database of its own in the cluster `scripts/test` starts): a v1 and
//! a v2 agent push to the same collector and both are stored exactly; `/api/v1/inference`
//! gives the counts exactly and the per-request and per-token figures of the hand
//! computation; a replay adds nothing; bad queries get a clear 400; the Prometheus
//! series are the store's totals, across a restart.

mod common;

use axum::http::StatusCode;
use common::Engine;
use common::{batch, hour_ago, push, record};
use empreinte_collector::store::TokenKind;
use empreinte_shared::wire::{Batch, InferenceRecord, InferenceServerKind, Push, Record};
use empreinte_shared::{Component, SourceKind};
use serde_json::Value;

const CONFIG: &str = r#"
[organisation]
name = "Test"
timezone = "UTC"

[[site]]
name = "dc"
zone = "FR"
pue = 1.5
pue_source = "measured"
hosts = ["gpu-*", "old-*"]
"#;

fn tagged(project: &str, model: Option<&str>, c: Component, s: u64, e: u64, uj: u64) -> Record {
    let source = if c == Component::Gpu {
        SourceKind::Nvml
    } else {
        SourceKind::Rapl
    };
    Record {
        model: model.map(str::to_string),
        ..record(project, c, source, s, e, uj)
    }
}

#[allow(clippy::too_many_arguments)]
fn counted(
    model: &str,
    server: InferenceServerKind,
    s: u64,
    e: u64,
    requests: Option<u64>,
    input: Option<u64>,
    output: Option<u64>,
) -> InferenceRecord {
    InferenceRecord {
        project: "chat".into(),
        model: model.into(),
        server,
        start_unix_ms: s,
        end_unix_ms: e,
        requests,
        input_tokens: input,
        cached_input_tokens: None,
        output_tokens: output,
        gap_ms: 0,
        resets: 0,
        allocated: false,
    }
}

fn v2_batch(seq: u64, t0: u64) -> Batch {
    let (s, e) = (t0 + (seq - 1) * 60_000, t0 + seq * 60_000);
    Batch {
        inference: vec![counted(
            "llama-3-8b",
            InferenceServerKind::Vllm,
            s,
            e,
            Some(600),
            Some(25_000),
            Some(120_000),
        )],
        ..batch(
            7,
            seq,
            s,
            e,
            vec![
                // 1,800 J of GPU tagged with the model, 200 J of CPU not tied to a model,
                // 500 J of idle GPU.
                tagged(
                    "chat",
                    Some("llama-3-8b"),
                    Component::Gpu,
                    s,
                    e,
                    1_800_000_000,
                ),
                tagged("chat", None, Component::Cpu, s, e, 200_000_000),
                tagged("idle", None, Component::Gpu, s, e, 500_000_000),
            ],
        )
    }
}

fn month_of(h: &Engine, t_ms: u64) -> String {
    jiff::Timestamp::from_millisecond(t_ms as i64)
        .unwrap()
        .to_zoned(h.state.tz.clone())
        .strftime("%Y-%m")
        .to_string()
}

fn close(got: &Value, want: f64, what: &str) {
    let got = got
        .as_f64()
        .unwrap_or_else(|| panic!("{what} is not a number: {got}"));
    assert!(
        (got - want).abs() <= want.abs() * 1e-9,
        "{what}: {got} vs {want}"
    );
}

#[tokio::test]
async fn a_v1_and_a_v2_agent_are_stored_exactly_and_the_figures_are_the_hand_computation() {
    for h in common::engines(CONFIG).await {
        eprintln!("engine: {}", h.name);
        a_v1_and_a_v2_agent_are_stored_exactly_and_the_figures_are_the_hand_computation_on(h).await;
    }
}

async fn a_v1_and_a_v2_agent_are_stored_exactly_and_the_figures_are_the_hand_computation_on(
    h: Engine,
) {
    let v2 = h.token(TokenKind::Agent, Some("gpu-01")).await;
    let v1 = h.token(TokenKind::Agent, Some("old-01")).await;
    let reader = h.token(TokenKind::Read, None).await;
    let t0 = hour_ago(3);
    // v2: two one-minute batches in one hour.
    let p2 = push("gpu-01", vec![v2_batch(1, t0), v2_batch(2, t0)]);
    assert_eq!(p2.version, 2);
    let (status, body) = h.push(&v2, &p2).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // v1: the JSON an agent of version 1 sends (no model, no inference).
    let mut p1 = push(
        "old-01",
        vec![batch(
            1,
            1,
            t0,
            t0 + 60_000,
            vec![record(
                "web",
                Component::Cpu,
                SourceKind::Rapl,
                t0,
                t0 + 60_000,
                123_456_789,
            )],
        )],
    );
    p1.version = 1;
    let json = serde_json::to_string(&p1).unwrap();
    assert!(!json.contains("model") && !json.contains("inference"));
    let (status, body) = h.push_raw(Some(&v1), json).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Both stored exactly.
    let (energy, _) = h.stored().await;
    assert_eq!(energy, 2 * 2_500_000_000 + 123_456_789);
    // A replay of the v2 push adds nothing.
    let (status, body) = h.push(&v2, &p2).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("\"duplicates\":2"), "{body}");

    let month = month_of(&h, t0);
    let (status, json) = h
        .get(
            &reader,
            &format!("/api/v1/inference?month={month}&group_by=project"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let rows = json["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{json}");
    let chat = &rows[0];
    assert_eq!(chat["key"], "chat");
    assert_eq!(chat["requests"], 1_200);
    assert_eq!(chat["input_tokens"], 50_000);
    assert_eq!(chat["cached_input_tokens"], Value::Null);
    assert_eq!(chat["output_tokens"], 240_000);
    assert_eq!(chat["energy_uj"], 3_600_000_000u64);
    // The project's whole energy: 3,600 J of GPU and 400 J of CPU.
    assert_eq!(chat["energy_total_uj"], 4_000_000_000u64);
    close(&chat["covered_share"], 0.9, "covered share");
    // 3,600 J / 1,200 requests.
    close(&chat["joules_per_request"], 3.0, "J per request");
    // 1 Wh / 240 thousand tokens.
    close(
        &chat["wh_per_1k_output_tokens"],
        1.0 / 240.0,
        "Wh per 1k tokens",
    );
    // 3,600 J × PUE 1.5 × 50 g/kWh = 0.075 g, over 1,200 requests.
    close(
        &chat["co2e_g_per_request"],
        0.075 / 1_200.0,
        "gCO2e per request",
    );
    assert_eq!(chat["servers"], serde_json::json!(["vllm"]));
    assert_eq!(chat["allocated"], false);

    // By model: the model's own energy is the whole; by host and by day the same counts.
    for (group_by, key) in [("model", "llama-3-8b"), ("host", "gpu-01"), ("day", "")] {
        let (status, json) = h
            .get(
                &reader,
                &format!("/api/v1/inference?month={month}&group_by={group_by}"),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{json}");
        let rows = json["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 1, "{group_by}: {json}");
        if !key.is_empty() {
            assert_eq!(rows[0]["key"], key);
        }
        assert_eq!(rows[0]["requests"], 1_200, "{group_by}");
        assert_eq!(rows[0]["output_tokens"], 240_000, "{group_by}");
        close(&rows[0]["joules_per_request"], 3.0, group_by);
        assert_eq!(json["total"]["requests"], 1_200, "{group_by}");
    }
    let (_, json) = h
        .get(
            &reader,
            &format!("/api/v1/inference?month={month}&group_by=model"),
        )
        .await;
    close(
        &json["rows"][0]["covered_share"],
        1.0,
        "model's covered share",
    );
}

#[tokio::test]
async fn a_v1_push_carrying_a_v2_field_is_refused_and_nothing_is_stored() {
    for h in common::engines(CONFIG).await {
        eprintln!("engine: {}", h.name);
        a_v1_push_carrying_a_v2_field_is_refused_and_nothing_is_stored_on(h).await;
    }
}

async fn a_v1_push_carrying_a_v2_field_is_refused_and_nothing_is_stored_on(h: Engine) {
    let token = h.token(TokenKind::Agent, Some("gpu-01")).await;
    let t0 = hour_ago(3);
    let mut p: Push = push("gpu-01", vec![v2_batch(1, t0)]);
    p.version = 1;
    let (status, body) = h.push(&token, &p).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body.contains("model") || body.contains("inference"),
        "{body}"
    );
    assert_eq!(h.stored().await, (0, 0));
    assert!(
        h.store
            .inference_units(0, i64::MAX)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn bad_queries_get_a_clear_400_and_no_token_a_401() {
    for h in common::engines(CONFIG).await {
        eprintln!("engine: {}", h.name);
        bad_queries_get_a_clear_400_and_no_token_a_401_on(h).await;
    }
}

async fn bad_queries_get_a_clear_400_and_no_token_a_401_on(h: Engine) {
    let reader = h.token(TokenKind::Read, None).await;
    for (query, says) in [
        ("group_by=site", "allowed are project, model, host, day"),
        ("month=2025-13", "month"),
        ("month=2025-10&project=chat", "allowed parameters are month"),
    ] {
        let (status, json) = h.get(&reader, &format!("/api/v1/inference?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {json}");
        let text = json["error"].as_str().unwrap_or_default();
        assert!(text.contains(says), "{query}: {text}");
    }
    let (status, _) = h.get("not-a-token", "/api/v1/inference").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_prometheus_series_are_the_stored_totals_across_a_restart() {
    for h in common::engines(CONFIG).await {
        eprintln!("engine: {}", h.name);
        the_prometheus_series_are_the_stored_totals_across_a_restart_on(h).await;
    }
}

async fn the_prometheus_series_are_the_stored_totals_across_a_restart_on(h: Engine) {
    let token = h.token(TokenKind::Agent, Some("gpu-01")).await;
    let reader = h.token(TokenKind::Read, None).await;
    let t0 = hour_ago(3);
    let (status, body) = h
        .push(
            &token,
            &push("gpu-01", vec![v2_batch(1, t0), v2_batch(2, t0)]),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let expect = [
        r#"empreinte_inference_requests_total{project="chat",model="llama-3-8b"} 1200"#,
        r#"empreinte_inference_tokens_total{project="chat",model="llama-3-8b",kind="input"} 50000"#,
        r#"empreinte_inference_tokens_total{project="chat",model="llama-3-8b",kind="output"} 240000"#,
        r#"empreinte_inference_energy_joules_total{project="chat",model="llama-3-8b"} 3600"#,
    ];
    let metrics = |h: &Engine| {
        let h = h.state.clone();
        let reader = reader.clone();
        async move {
            let req = axum::http::Request::get("/metrics")
                .header("authorization", format!("Bearer {reader}"))
                .body(axum::body::Body::empty())
                .unwrap();
            let resp = tower::ServiceExt::oneshot(empreinte_collector::server::router(h), req)
                .await
                .unwrap();
            let body = http_body_util::BodyExt::collect(resp.into_body())
                .await
                .unwrap()
                .to_bytes();
            String::from_utf8(body.to_vec()).unwrap()
        }
    };
    let text = metrics(&h).await;
    for line in expect {
        assert!(text.contains(line), "{line} missing from:\n{text}");
    }
    // Not counted by the server: no series rather than a 0.
    assert!(!text.contains("kind=\"cached_input\""), "{text}");
    // A new collector on the same database starts from the stored totals.
    let again = h.restart().await;
    let text = metrics(&again).await;
    for line in expect {
        assert!(text.contains(line), "after a restart, {line} missing");
    }
}
