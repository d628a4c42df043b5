//! Tests of the wire format ([`super`]): kept apart so that `wire.rs` reads as the
//! format itself.

use super::*;

const NOW: u64 = 1_790_000_000_000;

fn push(energy_uj: u64, span_ms: u64) -> Push {
    Push {
        version: WIRE_VERSION,
        agent: AgentInfo {
            agent_id: "web-01".into(),
            hostname: "web-01".into(),
            agent_version: "0.1.0".into(),
        },
        spool: SpoolStatus::default(),
        batches: vec![Batch {
            run_id: "0123456789abcdef0123456789abcdef".into(),
            seq: 1,
            start_unix_ms: NOW - span_ms,
            end_unix_ms: NOW,
            records: vec![Record {
                project: "chatbot".into(),
                component: Component::Gpu,
                source: SourceKind::Nvml,
                start_unix_ms: NOW - span_ms,
                end_unix_ms: NOW,
                energy_uj,
                model: None,
            }],
            counters: vec![],
            inference: vec![],
        }],
    }
}

#[test]
fn a_plausible_push_has_no_problem() {
    // 700 W for 15 s.
    assert_eq!(
        push(10_500_000_000, 15_000).problems(&Limits::default(), NOW),
        vec![]
    );
}

#[test]
fn more_power_than_a_host_can_draw_is_named() {
    // 100 kW for 10 s.
    let p = push(1_000_000_000_000, 10_000).problems(&Limits::default(), NOW);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].path, "batches[0].records");
    assert!(p[0].message.contains("100000 W"), "{}", p[0]);
}

#[test]
fn every_problem_is_reported_with_its_path() {
    let mut p = push(1, 1_000);
    p.version = 9;
    p.batches[0].run_id = "nope".into();
    p.batches[0].seq = 0;
    p.batches[0].records[0].project = String::new();
    p.batches[0].records[0].start_unix_ms = NOW - 5_000;
    p.batches[0].end_unix_ms = NOW + 3_600_000;
    let paths: Vec<String> = p
        .problems(&Limits::default(), NOW)
        .into_iter()
        .map(|p| p.path)
        .collect();
    for expected in [
        "version",
        "batches[0].run_id",
        "batches[0].seq",
        "batches[0].end_unix_ms",
        "batches[0].records[0].project",
        "batches[0].records[0].start_unix_ms",
    ] {
        assert!(
            paths.iter().any(|p| p == expected),
            "{expected} missing from {paths:?}"
        );
    }
}

#[test]
fn values_past_what_is_stored_are_refused_with_their_path() {
    let mut p = push(10_500_000_000, 15_000);
    p.batches[0].seq = u64::MAX;
    p.batches[0].counters.push(Counter {
        project: "chatbot".into(),
        component: Component::Gpu,
        source: SourceKind::Nvml,
        total_uj: u64::MAX,
    });
    p.agent.hostname = "web\u{1b}[2J".into();
    let paths: Vec<String> = p
        .problems(&Limits::default(), NOW)
        .into_iter()
        .map(|p| p.path)
        .collect();
    assert_eq!(
        paths,
        [
            "agent.hostname",
            "batches[0].seq",
            "batches[0].counters[0].total_uj"
        ]
    );
    // i64::MAX itself is fine.
    let mut ok = push(10_500_000_000, 15_000);
    ok.batches[0].seq = MAX_STORED;
    assert_eq!(ok.problems(&Limits::default(), NOW), vec![]);
}

#[test]
fn names_are_measured_in_bytes_and_fitted_to_the_wire() {
    let e100 = "é".repeat(100);
    assert_eq!(e100.chars().count(), 100);
    assert!(check_name(&e100).is_err(), "200 bytes");
    let fitted = fit_name(&e100);
    assert_eq!(fitted.len(), 128);
    assert_eq!(fitted, "é".repeat(64));
    assert_eq!(check_name(&fitted), Ok(()));
    assert_eq!(fit_name("a\u{7}b"), "a_b");
    assert_eq!(fit_name(""), "_");
    assert!(matches!(
        fit_name("chatbot"),
        std::borrow::Cow::Borrowed("chatbot")
    ));
    // A batch carrying such a name has a problem alone, by any clock.
    let mut p = push(1, 1_000);
    p.batches[0].records[0].project = e100;
    let problems = p.batches[0].problems(&Limits::default());
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].path, "batches[0].records[0].project");
    // 200 kJ in one second: 200 kW, more than a host draws.
    let p = push(200_000_000_000, 1_000);
    assert_eq!(p.batches[0].problems(&Limits::default()).len(), 1);
    assert_eq!(
        push(1, 1_000).batches[0].problems(&Limits::default()),
        vec![]
    );
}

#[test]
fn the_json_form_is_stable() {
    let text = serde_json::to_string(&push(5, 1_000)).unwrap_or_default();
    assert!(
        text.contains(r#""component":"gpu","source":"nvml""#),
        "{text}"
    );
    let back: Push = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(back, push(5, 1_000));
    // Negative energy cannot be represented.
    let negative = text.replace(r#""energy_uj":5"#, r#""energy_uj":-5"#);
    assert!(serde_json::from_str::<Push>(&negative).is_err());
}

fn inference(start: u64, end: u64) -> InferenceRecord {
    InferenceRecord {
        project: "chatbot".into(),
        model: "mistral-7b".into(),
        server: InferenceServerKind::Vllm,
        start_unix_ms: start,
        end_unix_ms: end,
        requests: Some(12),
        input_tokens: Some(3_000),
        cached_input_tokens: None,
        output_tokens: Some(900),
        gap_ms: 0,
        resets: 0,
        allocated: false,
    }
}

#[test]
fn a_v2_push_with_models_and_inference_records_is_accepted() {
    let mut p = push(10_500_000_000, 15_000);
    p.batches[0].records[0].model = Some("mistral-7b".into());
    p.batches[0].inference.push(inference(NOW - 15_000, NOW));
    assert_eq!(p.version, 2);
    assert_eq!(p.problems(&Limits::default(), NOW), vec![]);
    let text = serde_json::to_string(&p).unwrap_or_default();
    assert!(text.contains(r#""server":"vllm""#), "{text}");
    assert!(text.contains(r#""cached_input_tokens":null"#), "{text}");
    let back: Push = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(back, p);
    // Every kind spells as the configuration and the wire name it.
    for kind in InferenceServerKind::ALL {
        let json = serde_json::to_string(&kind).unwrap_or_default();
        assert_eq!(json, format!("\"{kind}\""));
        assert_eq!(InferenceServerKind::parse(kind.as_str()), Some(kind));
    }
    assert_eq!(InferenceServerKind::parse("ollama"), None);
}

#[test]
fn a_v1_push_is_accepted_and_written_without_v2_fields() {
    let mut p = push(10_500_000_000, 15_000);
    p.version = 1;
    assert_eq!(p.problems(&Limits::default(), NOW), vec![]);
    let text = serde_json::to_string(&p).unwrap_or_default();
    assert!(!text.contains("model"), "{text}");
    assert!(!text.contains("inference"), "{text}");
    // What a v1 agent wrote (no v2 field at all) reads back.
    let back: Push = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(back, p);
    // A v1 push carrying a v2 field is refused, naming the field.
    p.batches[0].records[0].model = Some("mistral-7b".into());
    p.batches[0].inference.push(inference(NOW - 15_000, NOW));
    let paths: Vec<String> = p
        .problems(&Limits::default(), NOW)
        .into_iter()
        .map(|p| p.path)
        .collect();
    assert_eq!(
        paths,
        ["batches[0].inference", "batches[0].records[0].model"]
    );
    p.version = 3;
    let problems = p.problems(&Limits::default(), NOW);
    assert_eq!(problems[0].path, "version");
    assert!(problems[0].message.contains("[1, 2]"), "{}", problems[0]);
}

#[test]
fn every_problem_of_an_inference_record_is_named() {
    let mut p = push(10_500_000_000, 15_000);
    p.batches[0].records[0].model = Some(String::new());
    let mut bad = inference(NOW - 20_000, NOW - 15_000);
    bad.project = "a\u{7}".into();
    bad.model = "m".repeat(200);
    bad.gap_ms = 6_000;
    bad.requests = Some(u64::MAX);
    bad.input_tokens = Some(10);
    bad.cached_input_tokens = Some(11);
    bad.output_tokens = Some(MAX_STORED + 1);
    p.batches[0].inference.push(bad);
    let mut empty = inference(NOW - 1_000, NOW - 1_000);
    empty.input_tokens = None;
    empty.cached_input_tokens = Some(5);
    p.batches[0].inference.push(empty);
    let paths: Vec<String> = p
        .problems(&Limits::default(), NOW)
        .into_iter()
        .map(|p| p.path)
        .collect();
    assert_eq!(
        paths,
        [
            "batches[0].records[0].model",
            "batches[0].inference[0].project",
            "batches[0].inference[0].model",
            "batches[0].inference[0].start_unix_ms",
            "batches[0].inference[0].gap_ms",
            "batches[0].inference[0].requests",
            "batches[0].inference[0].output_tokens",
            "batches[0].inference[0].cached_input_tokens",
            "batches[0].inference[1].end_unix_ms",
        ]
    );
    let limits = Limits {
        max_records_per_batch: 1,
        ..Limits::default()
    };
    let mut p = push(10_500_000_000, 15_000);
    p.batches[0].inference = vec![inference(NOW - 15_000, NOW); 2];
    let problems = p.problems(&limits, NOW);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].path, "batches[0].inference");
    // Unknown fields in an inference record are refused like everywhere else.
    let text = serde_json::to_string(&p).unwrap_or_default().replacen(
        r#""allocated":false"#,
        r#""allocated":false,"watts":3"#,
        1,
    );
    assert!(serde_json::from_str::<Push>(&text).is_err());
}
