#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Costs priced by several collectors at once on one PostgreSQL database: four agents
//! of one project push their one-second batches through three collectors in turn, so
//! the collectors add to the same `(hour, site, project)` cost rows and the same totals
//! concurrently. Every cost row must still be its whole facility energy × its price,
//! rounded once; the totals their rows' sums; each tariff and hardware rate stored once;
//! and each host's amortised hardware cost exactly the price × its reported time /
//! period. Read back with psql.

mod common;

use std::time::Duration;

use common::*;
use empreinte_testkit::postgres::{fresh_database, psql};

const BATCHES: u64 = 600;
/// 8,760 € over one year, in µEUR, and the period in ms.
const PRICE_UEUR: u128 = 8_760_000_000;
const PERIOD_MS: u128 = 8_760 * 3_600_000;

#[test]
fn three_collectors_pricing_the_same_rows_at_once_keep_every_cost_exact() {
    let Some(url) = fresh_database() else { return };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("collector.toml");
    std::fs::write(
        &config,
        "[default_site]\nname = \"lab\"\nzone = \"FR\"\ntariff_eur_per_kwh = 0.2516\ntariff_source = \"test tariff\"\n\n[[inventory]]\nhosts = [\"pg-*\"]\npurchase_price_eur = 8760.0\namortisation_years = 1.0\npurchase_source = \"test invoice\"\n",
    )
    .unwrap();
    let agents = ["pg-a", "pg-b", "pg-c", "pg-d"];
    let tokens: Vec<String> = agents
        .iter()
        .map(|a| create_token_in(["--database-url", &url], "agent", Some(a)))
        .collect();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let collectors: Vec<Collector> = (0..3)
        .map(|i| {
            Collector::spawn(
                dirs[i].path(),
                ports[i],
                &["--database-url", &url, "--config", config.to_str().unwrap()],
            )
        })
        .collect();
    // Twenty minutes ago, so the batches straddle an hour now and then.
    let start_ms = {
        let now = empreinte_collector::clock::now_unix_ms();
        now - now % 1000 - 20 * 60_000
    };
    let pushers: Vec<_> = agents
        .iter()
        .zip(&tokens)
        .enumerate()
        .map(|(a, (agent, tok))| {
            let (agent, tok, ports) = (agent.to_string(), tok.clone(), ports.clone());
            std::thread::spawn(move || {
                let c = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(30)))
                    .build()
                    .new_agent();
                let mut seq = 0u64;
                let mut next = a;
                while seq < BATCHES {
                    let batches: Vec<_> = (seq + 1..=seq + 3)
                        .map(|s| (s, start_ms + s * 1_000, 1_000_003 * (a as u64 + 1) + s))
                        .collect();
                    let body = gpu_push_body(&agent, &batches);
                    next += 1;
                    let mut resp = c
                        .post(&format!(
                            "http://127.0.0.1:{}/api/v1/ingest",
                            ports[next % 3]
                        ))
                        .header("Authorization", &format!("Bearer {tok}"))
                        .header("Content-Type", "application/json")
                        .send(&body)
                        .unwrap();
                    let status = resp.status().as_u16();
                    let text = resp.body_mut().read_to_string().unwrap_or_default();
                    assert_eq!(status, 200, "{agent}: {text}");
                    seq += 3;
                }
            })
        })
        .collect();
    for p in pushers {
        p.join().unwrap();
    }
    let n = |sql: &str| psql(&url, sql);
    // The cost rows price all the facility energy stored, each exactly once.
    assert_eq!(
        n("SELECT SUM(facility_uj) FROM cost_hourly"),
        n("SELECT SUM(facility_uj) FROM footprint_hourly")
    );
    assert_eq!(
        n(
            "SELECT COUNT(*) FROM cost_hourly c JOIN tariffs t ON t.id = c.tariff_id
           WHERE c.cost_ueur <> div(c.facility_uj::numeric * t.price_ueur_per_kwh
               + 1800000000000, 3600000000000)"
        ),
        "0",
        "a cost row that is not its whole facility energy × price, rounded once"
    );
    assert_eq!(
        n("SELECT SUM(facility_uj) || ' ' || SUM(cost_ueur) FROM cost_totals"),
        n("SELECT SUM(facility_uj) || ' ' || SUM(cost_ueur) FROM cost_hourly")
    );
    assert_eq!(n("SELECT COUNT(*) FROM tariffs"), "1");
    // Hardware: each host's contiguous batches cost exactly price × time / period.
    assert_eq!(n("SELECT COUNT(*) FROM hardware_rates"), "4");
    for agent in agents {
        let (first, last) = (start_ms + 1_000, start_ms + (BATCHES + 1) * 1_000);
        let want =
            PRICE_UEUR * u128::from(last) / PERIOD_MS - PRICE_UEUR * u128::from(first) / PERIOD_MS;
        assert_eq!(
            n(&format!(
                "SELECT SUM(cost_ueur) FROM hardware_cost_hourly WHERE host = '{agent}'"
            )),
            want.to_string(),
            "{agent}"
        );
    }
    assert_eq!(
        n("SELECT SUM(cost_ueur) FROM hardware_cost_totals"),
        n("SELECT SUM(cost_ueur) FROM hardware_cost_hourly")
    );
    for (i, c) in collectors.iter().enumerate() {
        let log = std::fs::read_to_string(dirs[i].path().join("collector.log")).unwrap();
        assert!(!log.contains("ERROR"), "collector {i} on {}: {log}", c.port);
    }
}
