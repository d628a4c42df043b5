#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The OpenAPI document against the real router: the same routes, and every documented
//! response of the read API validated against its schema (types, required fields,
//! enums, nested objects and arrays) on a store with data.

mod common;

use std::collections::BTreeSet;

use axum::http::StatusCode;
use common::*;
use empreinte_collector::api::OPENAPI;
use empreinte_collector::store::TokenKind;
use empreinte_shared::{Component, SourceKind};
use serde_json::Value;

fn doc() -> Value {
    serde_json::from_str(OPENAPI).unwrap()
}

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r.strip_prefix("#/components/schemas/").unwrap();
            &doc["components"]["schemas"][name]
        }
        None => schema,
    }
}

/// Checks `value` against `schema`; pushes every mismatch with its JSON path.
/// Fields the API sends that the schema does not list are mismatches too (`strict`).
fn validate(doc: &Value, schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    check(doc, schema, value, path, errors, true);
}

fn properties<'a>(doc: &'a Value, schema: &'a Value, out: &mut BTreeSet<&'a str>) {
    let schema = resolve(doc, schema);
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for s in all {
            properties(doc, s, out);
        }
    }
    if let Some(p) = schema.get("properties").and_then(Value::as_object) {
        out.extend(p.keys().map(String::as_str));
    }
}

fn check(
    doc: &Value,
    schema: &Value,
    value: &Value,
    path: &str,
    errors: &mut Vec<String>,
    strict: bool,
) {
    let schema = resolve(doc, schema);
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for s in all {
            check(doc, s, value, path, errors, false);
        }
        if let Some(obj) = value.as_object() {
            let mut known = BTreeSet::new();
            properties(doc, schema, &mut known);
            for k in obj.keys() {
                if !known.contains(k.as_str()) {
                    errors.push(format!("{path}.{k}: not documented"));
                }
            }
        }
        return;
    }
    if value.is_null() {
        if schema.get("nullable") != Some(&Value::Bool(true)) {
            errors.push(format!("{path}: null but not nullable"));
        }
        return;
    }
    let ok = match schema.get("type").and_then(Value::as_str) {
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("integer") => value.is_u64() || value.is_i64(),
        Some("number") => value.is_number(),
        Some("boolean") => value.is_boolean(),
        _ => true,
    };
    if !ok {
        errors.push(format!("{path}: {value} is not of type {}", schema["type"]));
        return;
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array) {
        if !e.contains(value) {
            errors.push(format!("{path}: {value} not in {e:?}"));
        }
    }
    if let Some(req) = schema.get("required").and_then(Value::as_array) {
        for r in req {
            let k = r.as_str().unwrap();
            if value.get(k).is_none() {
                errors.push(format!("{path}: required {k} missing"));
            }
        }
    }
    if let (Some(props), Some(obj)) = (
        schema.get("properties").and_then(Value::as_object),
        value.as_object(),
    ) {
        for (k, v) in obj {
            match props.get(k) {
                Some(s) => check(doc, s, v, &format!("{path}.{k}"), errors, true),
                None if strict => errors.push(format!("{path}.{k}: not documented")),
                None => {}
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), value.as_array()) {
        for (i, v) in arr.iter().enumerate() {
            check(doc, items, v, &format!("{path}[{i}]"), errors, true);
        }
    }
}

/// A concrete path for a documented template (`/reports/{file}` → a real file name).
fn concrete(path: &str) -> String {
    path.replace("{file}", "2026-01.md")
}

/// The real router, asked: every documented operation is routed (it answers with
/// anything but 404 or 405), the other methods on a documented path are 405, and paths
/// the document does not list are 404 — no hand-kept list of routes to drift.
#[tokio::test]
async fn the_router_serves_exactly_the_documented_routes() {
    let h = Harness::new("").await;
    let reader = h.token(TokenKind::Read, None).await;
    let d = doc();
    let call = |method: &str, path: &str| {
        let req = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {reader}"))
            .header("content-type", "application/json")
            .body(axum::body::Body::from("{}"))
            .unwrap();
        h.call(req)
    };
    let mut operations = 0;
    for (path, ops) in d["paths"].as_object().unwrap() {
        let documented: BTreeSet<String> = ops
            .as_object()
            .unwrap()
            .keys()
            .map(|m| m.to_uppercase())
            .collect();
        for method in ["GET", "POST", "PUT", "DELETE", "PATCH"] {
            let (status, body) = call(method, &concrete(path)).await;
            if documented.contains(method) {
                assert!(
                    status != StatusCode::NOT_FOUND && status != StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path} is documented but not routed: {status} {body}"
                );
                operations += 1;
            } else {
                assert_eq!(
                    status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path} is not documented: {body}"
                );
            }
        }
    }
    assert!(operations >= 10, "{operations} documented operations");
    for path in [
        "/api/v1",
        "/api/v1/",
        "/api/v1/nothing",
        "/api/v2/footprint",
        "/api/v1/footprint/extra",
        "/reports",
        "/reports/2026-01.md/x",
        "/debug/attribution",
        "/metrics/extra",
    ] {
        let (status, body) = call("GET", path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "GET {path}: {body}");
    }
}

#[tokio::test]
async fn every_documented_read_response_matches_its_schema() {
    let h = Harness::new(
        "[[site]]\nname='dc'\nzone='DE'\nhosts=['gpu-*']\nmarket_g_per_kwh=10.0\nmarket_source='contract'\ntariff_eur_per_kwh=0.2\ntariff_off_peak_eur_per_kwh=0.1\ntariff_off_peak_hours=['22-06']\ntariff_source='test'\n[[objective]]\nproject='chat'\nmonthly_energy_kwh=1.0\n[[objective]]\nproject='*'\nreduction_percent=10.0\nbaseline_month='2020-01'\n[[inventory]]\nhosts=['gpu-*']\npurchase_price_eur=30000.0\namortisation_years=4.0\npurchase_source='invoice'\n",
    )
    .await;
    let agent = h.token(TokenKind::Agent, Some("gpu-01")).await;
    let reader = h.token(TokenKind::Read, None).await;
    let t0 = hour_ago(1);
    let mut p = push(
        "gpu-01",
        vec![batch(
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
                    5_000_000_000,
                ),
                record(
                    "web",
                    Component::Cpu,
                    SourceKind::Estimate,
                    t0,
                    t0 + 15_000,
                    1_000_000,
                ),
            ],
        )],
    );
    p.batches[0].counters.push(empreinte_shared::wire::Counter {
        project: "chat".into(),
        component: Component::Gpu,
        source: SourceKind::Nvml,
        total_uj: 5_000_000_000,
    });
    // Wire v2: the chat energy serves a model whose server counted requests and tokens.
    p.batches[0].records[0].model = Some("llama".into());
    p.batches[0]
        .inference
        .push(empreinte_shared::wire::InferenceRecord {
            project: "chat".into(),
            model: "llama".into(),
            server: empreinte_shared::wire::InferenceServerKind::Vllm,
            start_unix_ms: t0,
            end_unix_ms: t0 + 15_000,
            requests: Some(12),
            input_tokens: Some(900),
            cached_input_tokens: None,
            output_tokens: Some(2_400),
            gap_ms: 0,
            resets: 0,
            allocated: false,
        });
    let (status, ack) = h.push(&agent, &p).await;
    assert_eq!(status, StatusCode::OK);
    let d = doc();
    let mut checked = 0;
    for (path, ops) in d["paths"].as_object().unwrap() {
        let Some(get) = ops.get("get") else { continue };
        if !path.starts_with("/api/v1/") || path.ends_with("openapi.json") {
            continue;
        }
        let queries: Vec<String> = if path.ends_with("/costs") {
            ["project", "use", "department", "site", "month", "tariff"]
                .iter()
                .map(|g| format!("{path}?group_by={g}"))
                .collect()
        } else if path.ends_with("/footprint") {
            [
                "project",
                "use",
                "department",
                "host",
                "site",
                "component",
                "source",
                "day",
                "hour",
            ]
            .iter()
            .map(|g| format!("{path}?group_by={g}"))
            .collect()
        } else if path.ends_with("/inference") {
            ["project", "model", "host", "day"]
                .iter()
                .map(|g| format!("{path}?group_by={g}"))
                .collect()
        } else {
            vec![path.clone()]
        };
        for q in queries {
            let (status, body) = h.get(&reader, &q).await;
            assert_eq!(status, StatusCode::OK, "{q}: {body}");
            let schema = &get["responses"]["200"]["content"]["application/json"]["schema"];
            let mut errors = Vec::new();
            validate(&d, schema, &body, "$", &mut errors);
            assert!(errors.is_empty(), "{q}: {errors:#?}\n{body}");
            checked += 1;
        }
        // Without a token: 401, as documented.
        let (status, body) = h.get("emp_nope_nope", path).await;
        assert!(
            get["responses"][status.as_str()].is_object(),
            "{path}: {status} undocumented ({body})"
        );
    }
    assert!(checked >= 11, "{checked}");
    // The ingest acknowledgement and a refusal, too.
    let post = &d["paths"]["/api/v1/ingest"]["post"];
    let mut errors = Vec::new();
    validate(
        &d,
        &post["responses"]["200"]["content"]["application/json"]["schema"],
        &serde_json::from_str(&ack).unwrap(),
        "$",
        &mut errors,
    );
    let (status, refusal) = h.push_raw(Some(&agent), "{}").await;
    let refusal: Value = serde_json::from_str(&refusal).unwrap();
    validate(
        &d,
        &post["responses"][status.as_str()]["content"]["application/json"]["schema"],
        &refusal,
        "$",
        &mut errors,
    );
    assert!(errors.is_empty(), "{errors:#?}");
}
