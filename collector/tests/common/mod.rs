//! Shared pieces of the collector's tests: a store in a temp dir, a router, pushes.
#![allow(dead_code)]

pub mod engine;
pub mod engines;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use empreinte_collector::auth;
use empreinte_collector::config::CollectorConfig;
use empreinte_collector::footprint::{Coefficient, CoefficientKind};
use empreinte_collector::plan::{Defaults, EmbodiedFigure, Planner};
use empreinte_collector::server::{AppState, router};
use empreinte_collector::store::pg::DatabaseUrl;
use empreinte_collector::store::sqlite::SqliteStore;
use empreinte_collector::store::{OpenStore, Store, StoreError, StoreOptions, TokenKind};
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

/// A collector's state without a socket: the router over a store in a temp dir. `S` is
/// the store's type: [`SqliteStore`] ([`Harness::new`]), or `dyn Store` for the suites
/// that run on both engines ([`engines`]).
pub struct Harness<S: ?Sized = SqliteStore> {
    pub dir: tempfile::TempDir,
    pub store: Arc<S>,
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
}

impl<S: ?Sized> Harness<S> {
    pub async fn token(&self, kind: TokenKind, agent: Option<&str>) -> String {
        auth::issue(self.state.store.as_ref(), kind, agent, "test", 1)
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
        let store = self.state.store.as_ref();
        let agents = store.agents().await.unwrap();
        let mut energy = 0;
        for a in &agents {
            energy += store.agent_balance(&a.agent_id).await.unwrap().1;
        }
        let rows = store.hourly_rows(0, i64::MAX).await.unwrap();
        (energy, rows.len() as u64)
    }
}

/// One engine of the suites that run on both: a [`Harness`] over `dyn Store`, and how to
/// open its store again (a restart, another time zone).
pub struct Engine {
    pub harness: Harness<dyn Store>,
    /// `sqlite` or `postgresql`, for assertion messages.
    pub name: &'static str,
    pub url: Option<DatabaseUrl>,
    pub opened: OpenStore,
}

impl std::ops::Deref for Engine {
    type Target = Harness<dyn Store>;
    fn deref(&self) -> &Harness<dyn Store> {
        &self.harness
    }
}

impl Engine {
    /// The store opened again on the same data (a restarted collector), with `options`.
    pub async fn reopen(&self, options: &StoreOptions) -> Result<OpenStore, StoreError> {
        OpenStore::open(self.dir.path(), self.url.as_ref(), options).await
    }

    /// A collector's state (router) over a store opened again with [`Engine::reopen`].
    pub fn state_over(&self, store: Arc<dyn Store>) -> AppState {
        AppState::new(store, self.state.planner.clone()).unwrap()
    }
}

/// The suites' engines: SQLite, and PostgreSQL (a fresh database in the cluster that
/// `scripts/test` starts; always in CI, where a missing cluster fails the test), each
/// opened as the collector opens it for `config_toml`.
pub async fn engines(config_toml: &str) -> Vec<Engine> {
    let mut out = vec![Engine::open("sqlite", config_toml, None).await];
    if let Some(url) = empreinte_testkit::postgres::fresh_database() {
        out.push(Engine::open("postgresql", config_toml, Some(url.parse().unwrap())).await);
    }
    out
}

impl Engine {
    async fn open(name: &'static str, config_toml: &str, url: Option<DatabaseUrl>) -> Engine {
        let dir = tempfile::tempdir().unwrap();
        let config = CollectorConfig::from_toml(config_toml).unwrap();
        assert_eq!(config.problems(), vec![]);
        let opened = OpenStore::open(
            dir.path(),
            url.as_ref(),
            &config.store.options(
                &config.organisation.timezone,
                config.limits.max_host_power_watts,
            ),
        )
        .await
        .unwrap();
        let store = opened.store();
        let planner = Arc::new(Planner::new(Arc::new(config), Arc::new(TestDefaults)));
        assert_eq!(planner.problems(), vec![]);
        let state = AppState::new(store.clone(), planner).unwrap();
        Engine {
            harness: Harness { dir, store, state },
            name,
            url,
            opened,
        }
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
