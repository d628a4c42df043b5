#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The report's "per model and per functional unit" section against a month built and
//! computed by hand: March 2025 (UTC), a chatbot model on a host with embodied
//! emissions and idle GPU time, and a second model whose server counts output tokens
//! but not requests, split from a shared process (allocated), with an hour of energy
//! the server did not count. The JSON's figures are the hand computation; the French
//! and English sections are compared with inline goldens (expect-test). Both engines
//! (SQLite, and PostgreSQL where the cluster is there: always in CI) give the same.

mod common;

use axum::http::StatusCode;
use common::*;
use empreinte_collector::report::{self, Format, Lang, ReportData};
use empreinte_collector::store::TokenKind;
use empreinte_shared::wire::{Batch, InferenceRecord, InferenceServerKind, Record};
use empreinte_shared::{Component, SourceKind};
use serde_json::Value;

const CONFIG: &str = r#"
[organisation]
name = "Ville de Bourg-Test"
timezone = "UTC"

[limits]
max_batch_age = "36500days"

[[site]]
name = "dc"
zone = "FR"
pue = 1.5
pue_source = "measured"
hosts = ["gpu-*"]

[[inventory]]
hosts = ["gpu-01"]
# 43.8 kg over one year (8,760 h): 5 g per hour.
server_kgco2e = 43.8
server_lifetime_years = 1.0
server_source = "test figure"
# 87.6 kg per card over one year: 10 g per hour per card.
gpus = [{ model = "test-gpu", count = 2 }]
"#;

/// 2025-03-10T10:00:00Z.
const T0_S: u64 = 1_741_600_800;
/// 2025-04-05T00:00:00Z: March is over.
const NOW_S: i64 = 1_743_811_200;
const J: u64 = 1_000_000;

fn rec(project: &str, model: Option<&str>, c: Component, s: u64, uj: u64) -> Record {
    let source = if c == Component::Gpu {
        SourceKind::Nvml
    } else {
        SourceKind::Rapl
    };
    Record {
        model: model.map(str::to_string),
        ..record(project, c, source, s, s + 60_000, uj)
    }
}

fn counted(
    project: &str,
    model: &str,
    s: u64,
    requests: Option<u64>,
    output: u64,
    allocated: bool,
) -> InferenceRecord {
    InferenceRecord {
        project: project.into(),
        model: model.into(),
        server: if allocated {
            InferenceServerKind::Triton
        } else {
            InferenceServerKind::Vllm
        },
        start_unix_ms: s,
        end_unix_ms: s + 60_000,
        requests,
        input_tokens: requests.map(|r| r * 300),
        cached_input_tokens: None,
        output_tokens: Some(output),
        gap_ms: 0,
        resets: 0,
        allocated,
    }
}

fn minute(seq: u64, s: u64, records: Vec<Record>, inference: Vec<InferenceRecord>) -> Batch {
    Batch {
        inference,
        ..batch(1, seq, s, s + 60_000, records)
    }
}

async fn march(h: &Engine) -> ReportData {
    let t0 = T0_S * 1000;
    // gpu-01, two minutes: each 36,000 J of GPU and 4,000 J of CPU tagged with the
    // chatbot's model, 12,000 J of idle GPU; 100 requests and 40,000 output tokens.
    let chat = |seq: u64| {
        let s = t0 + (seq - 1) * 60_000;
        minute(
            seq,
            s,
            vec![
                rec("chat", Some("llama-3-8b"), Component::Gpu, s, 36_000 * J),
                rec("chat", Some("llama-3-8b"), Component::Cpu, s, 4_000 * J),
                rec("idle", None, Component::Gpu, s, 12_000 * J),
            ],
            vec![counted("chat", "llama-3-8b", s, Some(100), 40_000, false)],
        )
    };
    let token = h.token(TokenKind::Agent, Some("gpu-01")).await;
    let (status, body) = h
        .push(&token, &push("gpu-01", vec![chat(1), chat(2)]))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // gpu-02: 7,200 J of GPU for 50,000 output tokens (requests not counted), then two
    // hours later 800 J the server did not count (no inference record).
    let later = t0 + 2 * 3_600_000;
    let token = h.token(TokenKind::Agent, Some("gpu-02")).await;
    let p = push(
        "gpu-02",
        vec![
            minute(
                1,
                t0,
                vec![rec(
                    "rag",
                    Some("mistral-7b"),
                    Component::Gpu,
                    t0,
                    7_200 * J,
                )],
                vec![counted("rag", "mistral-7b", t0, None, 50_000, true)],
            ),
            minute(
                2,
                later,
                vec![rec(
                    "rag",
                    Some("mistral-7b"),
                    Component::Gpu,
                    later,
                    800 * J,
                )],
                vec![],
            ),
        ],
    );
    let (status, body) = h.push(&token, &p).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let tz = h.state.tz.clone();
    let m = report::parse_report_month(&tz, "2025-03", NOW_S).unwrap();
    report::build_summary(h.store.as_ref(), h.state.planner.config(), &tz, &m, NOW_S)
        .await
        .unwrap()
}

fn close(v: &Value, want: f64, what: &str) {
    let got = v.as_f64().unwrap_or_else(|| panic!("{what}: {v}"));
    assert!(
        (got - want).abs() <= want.abs() * 1e-12,
        "{what}: {got} vs {want}"
    );
}

/// The section of a Markdown report: from its heading to the next one of its level.
fn section(md: &str, heading: &str) -> String {
    let start = md.find(heading).unwrap_or_else(|| panic!("no {heading}"));
    let rest = &md[start..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |i| i + 4);
    rest[..end].to_string()
}

#[tokio::test]
async fn the_per_model_figures_are_the_hand_computation() {
    for h in engines(CONFIG).await {
        eprintln!("engine: {}", h.name);
        the_per_model_figures_are_the_hand_computation_on(&march(&h).await);
    }
}

fn the_per_model_figures_are_the_hand_computation_on(data: &ReportData) {
    let json: Value =
        serde_json::from_str(&report::render_text(data, Format::Json, Lang::En).unwrap()).unwrap();
    let inf = &json["inference"];
    assert_eq!(inf["available"], true);
    let lines = inf["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 2, "{inf}");
    let chat = &lines[0];
    assert_eq!(
        (&chat["project"], &chat["model"]),
        (&"chat".into(), &"llama-3-8b".into())
    );
    assert_eq!(chat["requests"], 200);
    assert_eq!(chat["input_tokens"], 60_000);
    assert_eq!(chat["output_tokens"], 80_000);
    assert_eq!(chat["energy_uj"], 80_000 * J);
    // 80,000 J for 200 requests; 80,000 J = 22.2 Wh for 80 thousand tokens.
    close(&chat["joules_per_request"], 400.0, "J per request");
    close(
        &chat["wh_per_1k_output_tokens"],
        80_000.0 / 3_600.0 / 80.0,
        "Wh per 1k tokens",
    );
    // Operational, PUE 1.5 at 50 g/kWh: GPU 72,000 J → 1,500,000 µg; CPU 8,000 J →
    // 166,667 µg. Embodied per minute: server 5 g/h → 83,333 µg shared by energy
    // (36,000 : 4,000 : 12,000 J, largest remainder): chat GPU 57,692, chat CPU 6,410;
    // GPUs 20 g/h → 333,333 µg shared by GPU energy (36,000 : 12,000): chat 250,000.
    // Two minutes: chat GPU 2 × 307,692, chat CPU 2 × 6,410.
    let co2e_ug = 1_500_000 + 166_667 + 2 * 307_692 + 2 * 6_410;
    close(
        &chat["co2e_g_per_request"],
        co2e_ug as f64 / 1e6 / 200.0,
        "gCO2e per request",
    );
    close(&chat["gpu_share"], 0.9, "GPU share");
    // Idle GPU on gpu-01: 24,000 J of 96,000 J of GPU energy.
    close(&chat["idle_gpu_share"], 0.25, "idle GPU share");
    close(&chat["covered_share"], 1.0, "covered");
    assert_eq!(chat["allocated"], false);
    let rag = &lines[1];
    assert_eq!(rag["requests"], Value::Null);
    assert_eq!(rag["joules_per_request"], Value::Null);
    assert_eq!(rag["co2e_g_per_request"], Value::Null);
    assert_eq!(rag["output_tokens"], 50_000);
    // 7,200 J = 2 Wh for 50 thousand tokens; the uncounted hour's 800 J is left out.
    close(&rag["wh_per_1k_output_tokens"], 0.04, "rag Wh per 1k");
    close(&rag["covered_share"], 0.9, "rag covered");
    close(&rag["idle_gpu_share"], 0.0, "rag idle");
    assert_eq!(rag["allocated"], true);
    assert_eq!(rag["servers"], serde_json::json!(["triton"]));
}

#[tokio::test]
async fn the_section_reads_the_same_in_french_and_english() {
    for h in engines(CONFIG).await {
        eprintln!("engine: {}", h.name);
        the_section_reads_the_same_in_french_and_english_on(&march(&h).await);
    }
}

fn the_section_reads_the_same_in_french_and_english_on(data: &ReportData) {
    let fr = report::render_text(data, Format::Md, Lang::Fr).unwrap();
    let en = report::render_text(data, Format::Md, Lang::En).unwrap();
    expect_test::expect![[r#"
        ## Par modèle d'inférence et par unité fonctionnelle

        Énergie au compteur des serveurs (sans PUE) des heures où le serveur d'inférence a compté ses requêtes, divisée par ces requêtes et par les tokens générés ; les émissions incluent le PUE (méthode location) et la fabrication amortie. La part couverte est la part de l'énergie du modèle tombée dans des heures comptées.

        | Usage (projet) | Modèle | Requêtes | Tokens générés | J/requête | Wh/1 000 tokens | gCO2e/requête |
        |---|---|---:|---:|---:|---:|---:|
        | chat | llama-3-8b | 200 | 80 000 | 400 | 0,278 | 0,0115 |
        | rag | mistral-7b (réparti) | — | 50 000 | — | 0,0400 | — |

        | Usage (projet) | Modèle | Part GPU | GPU au repos (hôtes) | Part couverte |
        |---|---|---:|---:|---:|
        | chat | llama-3-8b | 90,0 % | 25,0 % | 100,0 % |
        | rag | mistral-7b (réparti) | 100,0 % | 0,0 % | 90,0 % |

        Empreinte mesure l'énergie des GPU, pas leur taux d'utilisation. « Part GPU » : part de l'énergie du modèle tirée par les GPU ; « GPU au repos (hôtes) » : part de l'énergie des GPU des hôtes qui servent le modèle attribuée au repos (projet idle) ; un GPU peu chargé rend chaque requête et chaque token plus coûteux. « Part couverte » : part de l'énergie du modèle tombée dans des heures où le serveur a compté.

        Réparti : l'énergie du modèle est une part de celle d'un processus qui sert plusieurs modèles, au prorata des tokens générés (ou des requêtes).

    "#]].assert_eq(&section(
        &fr,
        "## Par modèle d'inférence et par unité fonctionnelle",
    ));
    expect_test::expect![[r###"
        ## By inference model and functional unit

        Energy at the servers' meters (without PUE) of the hours in which the inference server counted its requests, divided by those requests and by the generated tokens; emissions include the PUE (location-based) and amortised manufacturing. The covered share is the share of the model's energy that fell in counted hours.

        | Use (project) | Model | Requests | Output tokens | J/request | Wh/1k tokens | gCO2e/request |
        |---|---|---:|---:|---:|---:|---:|
        | chat | llama-3-8b | 200 | 80,000 | 400 | 0.278 | 0.0115 |
        | rag | mistral-7b (allocated) | — | 50,000 | — | 0.0400 | — |

        | Use (project) | Model | GPU share | Idle GPU (hosts) | Covered share |
        |---|---|---:|---:|---:|
        | chat | llama-3-8b | 90.0% | 25.0% | 100.0% |
        | rag | mistral-7b (allocated) | 100.0% | 0.0% | 90.0% |

        Empreinte measures GPU energy, not GPU utilisation. "GPU share": the share of the model's energy drawn by GPUs; "Idle GPU (hosts)": the share of the GPU energy of the hosts serving the model attributed to idle time (project idle): a lightly loaded GPU makes every request and every token more expensive. "Covered share": the share of the model's energy that fell in hours the server counted.

        Allocated: the model's energy is a share of that of a process serving several models, in proportion to generated tokens (or requests).

    "###]]
        .assert_eq(&section(&en, "## By inference model and functional unit"));
}
