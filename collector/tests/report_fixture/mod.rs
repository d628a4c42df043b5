//! The hand-built month of the report tests: October 2025 in Europe/Paris (745 hours),
//! three projects on two hosts in two sites, an hourly French grid series, a contractual
//! factor, embodied emissions, two objectives, and ten kWh in September.
#![allow(dead_code)]

use axum::http::StatusCode;
use empreinte_collector::period::month;
use empreinte_collector::report::{self, ReportData};
use empreinte_collector::store::{IntensityImport, TokenKind};
use empreinte_shared::{Component, SourceKind};

use crate::common::*;
pub use crate::common::{KWH, paris};

pub const CONFIG: &str = r#"
[organisation]
name = "Ville de Bourg-Test"
timezone = "Europe/Paris"
language = "fr"

[limits]
max_batch_age = "36500days"

[[site]]
name = "mairie"
zone = "FR"
pue = 1.2
pue_source = "facilities measurement 2025"
hosts = ["srv-1"]
market_g_per_kwh = 10.0
market_source = "guarantees of origin contract 2025"

[[site]]
name = "datacentre"
zone = "DE"
hosts = ["gpu-*"]

[[inventory]]
hosts = ["gpu-1"]
# 43.8 kg over one year (8,760 h): 5 g per hour.
server_kgco2e = 43.8
server_lifetime_years = 1.0
server_source = "test figure"
# 87.6 kg per card over one year: 10 g per hour per card.
gpus = [{ model = "test-gpu", count = 2 }]

[[objective]]
project = "chat"
monthly_energy_kwh = 700.0

[[objective]]
project = "web"
monthly_energy_kwh = 600.0
"#;

/// The French grid's intensity for the hour starting at `hour_s`: 20 to 77.5 g/kWh.
pub fn intensity(hour_s: i64) -> f64 {
    20.0 + 2.5 * ((hour_s / 3600) % 24) as f64
}

/// 2025-11-05T10:00:00Z: the report's "now" (October is over).
pub const NOW_S: i64 = 1_762_336_800;

/// Fills a SQLite store with the month; gives the harness and October's hours.
pub async fn october() -> (Harness, Vec<i64>) {
    october_in(Harness::new(CONFIG).await).await
}

/// Fills the store of `h` (made for [`CONFIG`], on either engine) with the month.
pub async fn october_in<S: ?Sized>(h: Harness<S>) -> (Harness<S>, Vec<i64>) {
    let m = month(&paris(), 2025, 10).unwrap();
    let hours: Vec<i64> = (m.from_s..m.to_s).step_by(3600).collect();
    assert_eq!(hours.len(), 745, "October 2025 in Paris has the DST hour");
    h.state
        .store
        .import_intensity(&IntensityImport {
            zone: "FR".into(),
            source: "test series".into(),
            kind: "direct".into(),
            file: "test".into(),
            now_ms: 1,
            hours: hours.iter().map(|&h| (h, intensity(h), 1.0)).collect(),
        })
        .await
        .unwrap();
    let srv = h.token(TokenKind::Agent, Some("srv-1")).await;
    let gpu = h.token(TokenKind::Agent, Some("gpu-1")).await;
    let ms = |s: i64| s as u64 * 1000;
    // srv-1: web 0.5 kWh/h (RAPL) all month; batch 0.2 kWh/h (estimated) the first 372 hours.
    let srv_batches: Vec<_> = hours
        .iter()
        .enumerate()
        .map(|(i, &hs)| {
            let (s, e) = (ms(hs), ms(hs) + 3_600_000);
            let mut records = vec![record(
                "web",
                Component::Cpu,
                SourceKind::Rapl,
                s,
                e,
                KWH / 2,
            )];
            if i < 372 {
                records.push(record(
                    "batch",
                    Component::Dram,
                    SourceKind::Estimate,
                    s,
                    e,
                    KWH / 5,
                ));
            }
            batch(1, i as u64 + 1, s, e, records)
        })
        .collect();
    // gpu-1: chat 1 kWh/h (NVML), web 0.25 kWh/h (RAPL), all month.
    let gpu_batches: Vec<_> = hours
        .iter()
        .enumerate()
        .map(|(i, &hs)| {
            let (s, e) = (ms(hs), ms(hs) + 3_600_000);
            batch(
                2,
                i as u64 + 1,
                s,
                e,
                vec![
                    record("chat", Component::Gpu, SourceKind::Nvml, s, e, KWH),
                    record("web", Component::Cpu, SourceKind::Rapl, s, e, KWH / 4),
                ],
            )
        })
        .collect();
    for chunk in srv_batches.chunks(500) {
        let (status, body) = h.push(&srv, &push("srv-1", chunk.to_vec())).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    for chunk in gpu_batches.chunks(500) {
        let (status, body) = h.push(&gpu, &push("gpu-1", chunk.to_vec())).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    // September: chat used 10 kWh in one hour (for the change against the previous month).
    let sep = month(&paris(), 2025, 9).unwrap();
    let s = ms(sep.from_s + 3600 * 100);
    let (status, body) = h
        .push(
            &gpu,
            &push(
                "gpu-1",
                vec![batch(
                    3,
                    1,
                    s,
                    s + 3_600_000,
                    vec![record(
                        "chat",
                        Component::Gpu,
                        SourceKind::Nvml,
                        s,
                        s + 3_600_000,
                        10 * KWH,
                    )],
                )],
            ),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (h, hours)
}

pub async fn build<S: ?Sized>(
    h: &Harness<S>,
    label: &str,
) -> Result<ReportData, report::ReportError> {
    let config = h.state.planner.config();
    let m = report::parse_report_month(&paris(), label, NOW_S)?;
    report::build(h.state.store.as_ref(), config, &paris(), &m, NOW_S).await
}
