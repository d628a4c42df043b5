//! Shared pieces of the collector's tests: a store in a temp dir, a router, pushes.
#![allow(dead_code)]

pub mod engines;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use empreinte_collector::auth;
use empreinte_collector::config::CollectorConfig;
use empreinte_collector::footprint::{Coefficient, CoefficientKind};
use empreinte_collector::plan::{Defaults, EmbodiedFigure, Planner};
use empreinte_collector::server::{AppState, router};
use empreinte_collector::store::sqlite::SqliteStore;
use empreinte_collector::store::{Store, TokenKind};
use empreinte_shared::wire::{AgentInfo, Batch, Push, Record, SpoolStatus, WIRE_VERSION};
use empreinte_shared::{Component, SourceKind};
use http_body_util::BodyExt;
use tower::ServiceExt;

/// Coefficients chosen by the tests (not the built-in table), so that expected figures
/// are computed by hand from numbers the test states.
pub struct TestDefaults;

impl Defaults for TestDefaults {
    fn grid(&self, zone: &str) -> Option<Coefficient> {
        let g = match zone {
            "FR" => 50.0,
            "DE" => 400.0,
            _ => return None,
        };
        Some(Coefficient {
            kind: CoefficientKind::GridIntensity,
            subject: zone.into(),
            value: g,
            unit: "gCO2e/kWh",
            source: "test table".into(),
            year: Some(2024),
            is_default: true,
            detail: String::new(),
        })
    }
    fn pue(&self) -> Coefficient {
        Coefficient {
            kind: CoefficientKind::Pue,
            subject: String::new(),
            value: 1.5,
            unit: "",
            source: "test default".into(),
            year: Some(2024),
            is_default: true,
            detail: String::new(),
        }
    }
    fn embodied(&self, id: &str) -> Option<EmbodiedFigure> {
        (id == "test-gpu").then(|| EmbodiedFigure {
            kgco2e: 87.6,
            lifetime_years: 1.0,
            source: "test".into(),
            year: Some(2024),
        })
    }
}

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub store: Arc<SqliteStore>,
    pub state: AppState,
}

impl Harness {
    pub async fn new(config_toml: &str) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let config = CollectorConfig::from_toml(config_toml).unwrap();
        // The store's rollups in the organisation's time zone, as the collector opens it.
        let store = Arc::new(
            SqliteStore::open_with(
                dir.path(),
                &config.store.options(
                    &config.organisation.timezone,
                    config.limits.max_host_power_watts,
                ),
            )
            .await
            .unwrap(),
        );
        assert_eq!(config.problems(), vec![]);
        let planner = Arc::new(Planner::new(Arc::new(config), Arc::new(TestDefaults)));
        assert_eq!(planner.problems(), vec![]);
        let state = AppState::new(store.clone(), planner).unwrap();
        Harness { dir, store, state }
    }

    pub async fn token(&self, kind: TokenKind, agent: Option<&str>) -> String {
        auth::issue(self.store.as_ref(), kind, agent, "test", 1)
            .await
            .unwrap()
            .token
    }

    /// Sends a request through the router (no socket); gives the status and body.
    pub async fn call(&self, req: Request<Body>) -> (StatusCode, String) {
        let resp = router(self.state.clone()).oneshot(req).await.unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    pub async fn push_raw(
        &self,
        token: Option<&str>,
        body: impl Into<Body>,
    ) -> (StatusCode, String) {
        let mut req = Request::post("/api/v1/ingest").header("content-type", "application/json");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        self.call(req.body(body.into()).unwrap()).await
    }

    pub async fn push(&self, token: &str, push: &Push) -> (StatusCode, String) {
        self.push_raw(Some(token), serde_json::to_vec(push).unwrap())
            .await
    }

    pub async fn get(&self, token: &str, path: &str) -> (StatusCode, serde_json::Value) {
        let (status, body) = self
            .call(
                Request::get(path)
                    .header("authorization", format!("Bearer {token}"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        (
            status,
            serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)),
        )
    }

    /// Total stored energy and number of stored batches, straight from the store.
    pub async fn stored(&self) -> (u64, u64) {
        let agents = self.store.agents().await.unwrap();
        let mut energy = 0;
        for a in &agents {
            energy += self.store.agent_balance(&a.agent_id).await.unwrap().1;
        }
        let rows = self.store.hourly_rows(0, i64::MAX).await.unwrap();
        (energy, rows.len() as u64)
    }
}

pub fn record(
    project: &str,
    component: Component,
    source: SourceKind,
    start: u64,
    end: u64,
    uj: u64,
) -> Record {
    Record {
        project: project.into(),
        component,
        source,
        start_unix_ms: start,
        end_unix_ms: end,
        energy_uj: uj,
        model: None,
    }
}

pub fn batch(run: u8, seq: u64, start: u64, end: u64, records: Vec<Record>) -> Batch {
    Batch {
        run_id: format!("{:032x}", run),
        seq,
        start_unix_ms: start,
        end_unix_ms: end,
        records,
        counters: vec![],
        inference: vec![],
    }
}

pub fn push(agent: &str, batches: Vec<Batch>) -> Push {
    Push {
        version: WIRE_VERSION,
        agent: AgentInfo {
            agent_id: agent.into(),
            hostname: agent.into(),
            agent_version: "test".into(),
        },
        spool: SpoolStatus::default(),
        batches,
    }
}

/// Now, in Unix ms, rounded down to the hour, less `hours_ago` hours.
pub fn hour_ago(hours_ago: u64) -> u64 {
    let now = empreinte_collector::clock::now_unix_ms();
    now - now % 3_600_000 - hours_ago * 3_600_000
}
