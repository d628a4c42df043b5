#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Objectives that judge fairly, against months built by hand:
//! - an organisation-wide reduction objective gives no verdict in its own baseline month,
//!   and the next month is judged over every project of the organisation;
//! - a project that starts on the 28th is projected from the 28th at its own pace (the
//!   old projection, from the 1st, would call it on track at half its pace).

mod common;

use axum::http::StatusCode;
use common::*;
use empreinte_collector::objectives::{BudgetKind, ObjectiveStatus, Verdict, evaluate};
use empreinte_collector::period::{Month, month};
use empreinte_collector::register::Register;
use empreinte_collector::store::TokenKind;
use empreinte_shared::{Component, SourceKind};

/// Pushes `kwh_per_hour` for `project` on `host` every hour of `[from_s, to_s)`.
async fn fill(
    h: &Harness,
    host: &str,
    run: u8,
    project: &str,
    from_s: i64,
    to_s: i64,
    kwh_per_hour: u64,
) {
    let token = h.token(TokenKind::Agent, Some(host)).await;
    let batches: Vec<_> = (from_s..to_s)
        .step_by(3600)
        .enumerate()
        .map(|(i, s)| {
            let (s, e) = (s as u64 * 1000, s as u64 * 1000 + 3_600_000);
            batch(
                run,
                i as u64 + 1,
                s,
                e,
                vec![record(
                    project,
                    Component::Cpu,
                    SourceKind::Rapl,
                    s,
                    e,
                    kwh_per_hour * KWH,
                )],
            )
        })
        .collect();
    for chunk in batches.chunks(500) {
        let (status, body) = h.push(&token, &push(host, chunk.to_vec())).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
}

/// A configuration of one site in France holding every host (Paris time), and
/// `objectives`.
fn one_site(objectives: &str) -> String {
    format!(
        r#"
[organisation]
name = "Test"
timezone = "Europe/Paris"

[limits]
max_batch_age = "36500days"

[[site]]
name = "s"
zone = "FR"
hosts = ["*"]
{objectives}"#
    )
}

/// The configured objectives judged over `period` at `now_s`, with no register.
async fn evaluated(h: &Harness, period: &Month, now_s: i64) -> Vec<ObjectiveStatus> {
    evaluate(
        h.store.as_ref(),
        &h.state.planner.config().objectives,
        &Register::default(),
        &paris(),
        period,
        now_s,
    )
    .await
    .unwrap()
}

const ORGANISATION: &str = r#"
[[objective]]
project = "*"
reduction_percent = 20.0
baseline_month = "2025-09"
"#;

#[tokio::test]
async fn a_baseline_month_gives_no_verdict_and_the_organisation_is_judged_as_a_whole() {
    let h = Harness::new(&one_site(ORGANISATION)).await;
    // September: a 3 kWh/h + b 2 kWh/h for 20 hours = 100 kWh.
    let sep = month(&paris(), 2025, 9).unwrap();
    fill(&h, "h1", 1, "a", sep.from_s, sep.from_s + 20 * 3600, 3).await;
    fill(&h, "h2", 2, "b", sep.from_s, sep.from_s + 20 * 3600, 2).await;
    // October: a 3 kWh/h for 20 hours, b 2 kWh/h for 15 hours = 90 kWh (budget: 80).
    let oct = month(&paris(), 2025, 10).unwrap();
    fill(&h, "h1", 3, "a", oct.from_s, oct.from_s + 20 * 3600, 3).await;
    fill(&h, "h2", 4, "b", oct.from_s, oct.from_s + 15 * 3600, 2).await;
    let now = paris_at("2025-11-05T12:00:00");

    let in_baseline = evaluated(&h, &sep, now).await;
    assert_eq!(
        in_baseline.len(),
        2,
        "energy and emissions: {in_baseline:?}"
    );
    for o in &in_baseline {
        assert_eq!(o.verdict, Verdict::Baseline, "{o:?}");
        assert_eq!(o.budget, None, "no budget against itself: {o:?}");
    }
    let energy = in_baseline
        .iter()
        .find(|o| o.kind == BudgetKind::Energy)
        .unwrap();
    assert!((energy.used - 100.0).abs() < 1e-9, "{energy:?}");

    let next = evaluated(&h, &oct, now).await;
    let energy = next.iter().find(|o| o.kind == BudgetKind::Energy).unwrap();
    assert!((energy.budget.unwrap() - 80.0).abs() < 1e-9, "{energy:?}");
    assert!(
        (energy.used - 90.0).abs() < 1e-9,
        "every project counts: {energy:?}"
    );
    assert_eq!(energy.verdict, Verdict::Exceeded, "{energy:?}");
}

const LATE: &str = r#"
[[objective]]
project = "late"
monthly_energy_kwh = 90.0

[[objective]]
project = "early"
monthly_energy_kwh = 1000.0
"#;

#[tokio::test]
async fn a_project_starting_on_the_28th_is_projected_from_the_28th() {
    let h = Harness::new(&one_site(LATE)).await;
    let oct = month(&paris(), 2025, 10).unwrap();
    // "late": 1 kWh/h from the 28th, 00:00, to the 30th, 00:00 (48 kWh); "early" runs
    // from the 1st.
    let (start, now) = (
        paris_at("2025-10-28T00:00:00"),
        paris_at("2025-10-30T00:00:00"),
    );
    fill(&h, "h1", 1, "late", start, now, 1).await;
    fill(&h, "h2", 2, "early", oct.from_s, now, 1).await;
    let statuses = evaluated(&h, &oct, now).await;
    let late = statuses.iter().find(|o| o.project == "late").unwrap();
    // From the 28th to the end of the month: 96 hours, 48 of them gone: 48 / 0.5 = 96 kWh.
    let hours_left = (oct.to_s - start) as f64 / 3600.0;
    assert_eq!(hours_left, 96.0);
    assert!((late.elapsed - 0.5).abs() < 1e-9, "{late:?}");
    assert!((late.used - 48.0).abs() < 1e-9, "{late:?}");
    assert!((late.projected - 96.0).abs() < 1e-6, "{late:?}");
    assert_eq!(
        late.projected_from.as_deref(),
        Some("2025-10-28"),
        "{late:?}"
    );
    assert_eq!(late.verdict, Verdict::ProjectedToExceed, "{late:?}");
    // A project with data from the 1st is projected over the whole month.
    let early = statuses.iter().find(|o| o.project == "early").unwrap();
    assert_eq!(early.projected_from, None, "{early:?}");
    let month_hours = (oct.to_s - oct.from_s) as f64 / 3600.0;
    let used = (now - oct.from_s) as f64 / 3600.0;
    assert!(
        (early.projected - used * month_hours / used).abs() < 1e-6,
        "{early:?}"
    );
}
