#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The register of AI uses over a month measured by two agents: five uses over three
//! departments (one external, one retired, one spanning two projects) and six projects,
//! one of which no use declares. Grouped by use and by department, the figures add up to
//! the project sums to the µJ and µg; the undeclared project is flagged; the external
//! use's estimate is the hand computation from EcoLogits' published model, labelled
//! estimated and kept apart from what was measured. Every test runs on both store
//! engines (SQLite, and PostgreSQL when the test cluster is there: always in CI).

mod common;

use std::collections::BTreeMap;

use axum::http::StatusCode;
use common::*;
use empreinte_collector::period::month_of;
use empreinte_collector::store::TokenKind;
use empreinte_shared::{Component, SourceKind};
use serde_json::Value;

const FIELDS: [&str; 7] = [
    "energy_uj",
    "facility_energy_uj",
    "measured_energy_uj",
    "estimated_energy_uj",
    "location_co2e_ug",
    "market_co2e_ug",
    "embodied_co2e_ug",
];

struct Setup {
    h: Engine,
    reader: String,
    month: String,
    _dir: std::sync::Arc<tempfile::TempDir>,
}

/// The month on each store engine (SQLite, and PostgreSQL when the cluster is there).
async fn setups() -> Vec<Setup> {
    let tz = jiff::tz::TimeZone::get("Europe/Paris").unwrap();
    let now_s = (empreinte_collector::clock::now_unix_ms() / 1000) as i64;
    // Last month: in the past whatever the day, and one month whatever the hour.
    let m = month_of(&tz, now_s).unwrap().previous(&tz).unwrap();
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let register = dir.path().join("register.toml");
    std::fs::write(
        &register,
        include_str!("fixtures/register/five_uses.toml").replace("MONTH", &m.label()),
    )
    .unwrap();
    let config = format!(
        r#"
register_file = "{}"
[[site]]
name = "mairie"
zone = "FR"
pue = 1.37
pue_source = "test"
hosts = ["srv-1"]
market_g_per_kwh = 12.5
market_source = "test contract"
[[inventory]]
hosts = ["srv-1"]
server_kgco2e = 43.8
server_lifetime_years = 1.0
server_source = "test figure"
[[objective]]
use = "chatbot-citoyen"
monthly_energy_kwh = 0.001
[[objective]]
department = "Relation citoyenne"
monthly_energy_kwh = 1000.0
"#,
        register.display()
    );
    let mut out = Vec::new();
    for h in engines(&config).await {
        out.push(month_on(h, &m, dir.clone()).await);
    }
    out
}

async fn month_on(
    h: Engine,
    m: &empreinte_collector::period::Month,
    dir: std::sync::Arc<tempfile::TempDir>,
) -> Setup {
    let reader = h.token(TokenKind::Read, None).await;
    // Six projects on two hosts, over hours that cross hour boundaries, with odd energies.
    let start = (m.from_s as u64 + 10 * 3600) * 1000 + 1_234;
    let span = 2_700_000; // 45 min
    let projects_1 = [
        ("chat", Component::Gpu, SourceKind::Nvml, 7_777_777_777u64),
        ("chat-rag", Component::Cpu, SourceKind::Rapl, 3_333_333_331),
        ("ocr", Component::Cpu, SourceKind::Rapl, 1_000_000_003),
        ("shadow", Component::Gpu, SourceKind::Nvml, 2_222_222_227),
    ];
    let projects_2 = [
        (
            "translate",
            Component::Cpu,
            SourceKind::Estimate,
            999_999_997u64,
        ),
        ("plans", Component::Cpu, SourceKind::Rapl, 4_444_444_441),
        ("shadow", Component::Cpu, SourceKind::Rapl, 555_555_557),
    ];
    for (agent, projects) in [("srv-1", &projects_1[..]), ("srv-2", &projects_2[..])] {
        let token = h.token(TokenKind::Agent, Some(agent)).await;
        let batches = (0..3u64)
            .map(|i| {
                let (s, e) = (start + i * span, start + (i + 1) * span);
                let records = projects
                    .iter()
                    .map(|(p, c, src, uj)| record(p, *c, *src, s, e, uj + i))
                    .collect();
                batch(1, i + 1, s, e, records)
            })
            .collect();
        let (status, body) = h.push(&token, &push(agent, batches)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    Setup {
        h,
        reader,
        month: m.label(),
        _dir: dir,
    }
}

fn exact(v: &Value) -> [u64; 7] {
    FIELDS.map(|f| {
        v["exact"][f]
            .as_u64()
            .unwrap_or_else(|| panic!("{f} in {v}"))
    })
}

fn add(a: &mut [u64; 7], b: [u64; 7]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x += y;
    }
}

async fn grouped(s: &Setup, by: &str) -> Value {
    let (status, v) =
        s.h.get(
            &s.reader,
            &format!("/api/v1/footprint?month={}&group_by={by}", s.month),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v
}

#[tokio::test]
async fn figures_group_exactly_by_use_and_department_and_the_undeclared_project_is_flagged() {
    for s in setups().await {
        eprintln!("engine: {}", s.h.name);
        let by_project = grouped(&s, "project").await;
        let projects: BTreeMap<String, [u64; 7]> = by_project["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["key"].as_str().unwrap().to_string(), exact(r)))
            .collect();
        assert_eq!(projects.len(), 6, "{by_project}");
        // The ground truth: the register's projects per use and per department.
        let uses = [
            (
                "chatbot-citoyen",
                "Relation citoyenne",
                &["chat", "chat-rag"][..],
            ),
            ("ocr-courrier", "Finances", &["ocr"][..]),
            ("traduction", "Relation citoyenne", &["translate"][..]),
            ("plu-analyse", "Urbanisme", &["plans"][..]),
        ];
        let mut want_use: BTreeMap<&str, [u64; 7]> = BTreeMap::new();
        let mut want_dept: BTreeMap<&str, [u64; 7]> = BTreeMap::new();
        for (id, dept, ps) in uses {
            for p in ps {
                add(want_use.entry(id).or_default(), projects[*p]);
                add(want_dept.entry(dept).or_default(), projects[*p]);
            }
        }
        for (by, want) in [("use", &want_use), ("department", &want_dept)] {
            let v = grouped(&s, by).await;
            let got: BTreeMap<&str, [u64; 7]> = v["rows"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| (r["key"].as_str().unwrap(), exact(r)))
                .collect();
            assert_eq!(&got, want, "group_by={by}: {v}");
            // The undeclared project is apart, flagged, and everything adds up to the total.
            let und = v["undeclared"].as_array().unwrap();
            assert_eq!(und.len(), 1, "{v}");
            assert_eq!(und[0]["project"], "shadow");
            assert_eq!(und[0]["undeclared_use"], true);
            assert_eq!(und[0]["label"]["fr"], "usage non déclaré");
            assert_eq!(und[0]["label"]["en"], "undeclared use");
            assert_eq!(exact(&und[0]), projects["shadow"]);
            let mut sum = exact(&und[0]);
            got.values().for_each(|x| add(&mut sum, *x));
            assert_eq!(sum, exact(&v["total"]), "group_by={by}");
            assert_eq!(exact(&v["total"]), exact(&by_project["total"]));
        }
        // Project rows say their use and department, or that no use declares them.
        let row = |p: &str| {
            by_project["rows"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["key"] == p)
                .unwrap()
                .clone()
        };
        assert_eq!(row("chat-rag")["use"], "chatbot-citoyen");
        assert_eq!(row("chat-rag")["department"], "Relation citoyenne");
        assert_eq!(row("shadow")["undeclared_use"], true);
        assert!(row("chat").get("undeclared_use").is_none());
    }
}

#[tokio::test]
async fn the_uses_endpoint_serves_the_register_with_measured_and_estimated_apart() {
    for s in setups().await {
        eprintln!("engine: {}", s.h.name);
        let (status, v) =
            s.h.get(&s.reader, &format!("/api/v1/uses?month={}", s.month))
                .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        let uses = v["uses"].as_array().unwrap();
        assert_eq!(uses.len(), 5);
        let get = |id: &str| uses.iter().find(|u| u["id"] == id).unwrap();
        let chat = get("chatbot-citoyen");
        assert_eq!(chat["name"]["fr"], "Assistant conversationnel citoyen");
        assert_eq!(chat["hosting"]["kind"], "on_site");
        assert_eq!(chat["status"], "production");
        assert_eq!(chat["risk"], "limited");
        assert_eq!(get("traduction")["status"], "retired");
        assert_eq!(get("traduction")["retired_on"], "2025-12-31");
        let by_use = grouped(&s, "use").await;
        for u in uses {
            let id = u["id"].as_str().unwrap();
            let row = by_use["rows"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["key"] == id);
            match row {
                Some(r) => assert_eq!(exact(&u["measured"]), exact(r), "{id}"),
                None => assert_eq!(u["measured"]["exact"]["energy_uj"], 0, "{id}"),
            }
        }
        assert_eq!(v["departments"].as_array().unwrap().len(), 3);
        assert_eq!(v["undeclared"][0]["project"], "shadow");

        // The external use: 2,000,000 output tokens of a 24 B dense model (bf16: 57.6 GB,
        // one 80 GB GPU), by hand from EcoLogits' constants:
        let gpu_wh: f64 = 8.91e-5 * 24.0 + 1.43e-3;
        let latency_s: f64 = 8.02e-4 * 24.0 + 2.23e-2;
        let server_wh = latency_s * 1000.0 * 1.0 / 8.0 / 3600.0;
        let wh = 2_000_000.0 * 1.2 * (server_wh + gpu_wh);
        assert!((wh - 12_026.493_333).abs() < 1e-3, "{wh}"); // about 12.03 kWh
        let red = get("redaction");
        assert_eq!(red["measured"]["exact"]["energy_uj"], 0);
        let est = &red["estimated"][0];
        assert_eq!(est["estimated"], true);
        assert_eq!(est["basis"], "output_tokens");
        assert_eq!(est["quantity"], 2_000_000);
        assert_eq!(
            est["estimated_energy_uj"].as_u64().unwrap(),
            (wh * 3.6e9).round() as u64
        );
        assert!(est["factor_source"].as_str().unwrap().contains("EcoLogits"));
        assert!((red["estimated_energy_kwh"].as_f64().unwrap() - wh / 1000.0).abs() < 1e-9);
        // Kept apart: the measured total is the projects' total, without the estimate.
        assert_eq!(exact(&v["total_measured"]), exact(&by_use["total"]));
    }
}

#[tokio::test]
async fn the_uses_endpoint_needs_a_read_token_and_checks_its_query() {
    for s in setups().await {
        eprintln!("engine: {}", s.h.name);
        let (status, _) = s.h.get("nope", "/api/v1/uses").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, v) = s.h.get(&s.reader, "/api/v1/uses?department=Nope").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(v["error"].as_str().unwrap().contains("Finances"), "{v}");
        let (status, v) =
            s.h.get(
                &s.reader,
                &format!("/api/v1/uses?month={}&department=Finances", s.month),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(v["uses"].as_array().unwrap().len(), 2, "{v}");
    }
}

#[tokio::test]
async fn the_report_has_the_uses_departments_and_the_undeclared_project_french_first() {
    for s in setups().await {
        eprintln!("engine: {}", s.h.name);
        let (status, md) =
            s.h.get(&s.reader, &format!("/reports/{}.md?lang=fr", s.month))
                .await;
        assert_eq!(status, StatusCode::OK);
        let md = md.as_str().unwrap();
        let section = &md[md.find("Usages de l'IA, directions et coûts").expect(md)..];
        for want in [
            "Assistant conversationnel citoyen",
            "Relation citoyenne",
            "Urbanisme",
            "Usage non déclaré",
            "shadow",
            "Services d'IA externes (estimé)",
            "(estimé)",
            "EcoLogits",
        ] {
            assert!(section.contains(want), "{want} missing in:\n{section}");
        }
        let (_, en) =
            s.h.get(&s.reader, &format!("/reports/{}.md?lang=en", s.month))
                .await;
        let en = en.as_str().unwrap();
        assert!(
            en.contains("Undeclared use") && en.contains("(estimated)"),
            "{en}"
        );
    }
}

#[tokio::test]
async fn objectives_are_set_per_use_and_per_department() {
    for s in setups().await {
        eprintln!("engine: {}", s.h.name);
        let (status, v) =
            s.h.get(&s.reader, &format!("/api/v1/objectives?month={}", s.month))
                .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        let by_use = grouped(&s, "use").await;
        let by_dept = grouped(&s, "department").await;
        let kwh = |g: &Value, k: &str| {
            g["rows"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["key"] == k)
                .unwrap()["energy_kwh"]
                .as_f64()
                .unwrap()
        };
        let status_of = |label: &str| {
            v["objectives"]
                .as_array()
                .unwrap()
                .iter()
                .find(|o| o["project"] == label && o["kind"] == "energy")
                .unwrap_or_else(|| panic!("{label} in {v}"))
                .clone()
        };
        let u = status_of("use:chatbot-citoyen");
        assert!((u["used"].as_f64().unwrap() - kwh(&by_use, "chatbot-citoyen")).abs() < 1e-12);
        assert_eq!(u["verdict"], "exceeded");
        let d = status_of("department:Relation citoyenne");
        assert!((d["used"].as_f64().unwrap() - kwh(&by_dept, "Relation citoyenne")).abs() < 1e-12);
        assert_eq!(d["verdict"], "met");
    }
}
