//! Shared pieces of the collector's tests: a store in a temp dir, a router, pushes.
#![allow(dead_code)]

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
use empreinte_shared::wire::{Batch, Push, Record, SpoolStatus, WIRE_VERSION};
use empreinte_shared::{Component, SourceKind};
use empreinte_testkit::collector::test_agent;
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
            SqliteStore::open_with(dir.path(), &store_options(&config))
                .await
                .unwrap(),
        );
        let state = app_state(config, store.clone());
        Harness { dir, store, state }
    }
}

/// The store options the collector opens its store with for `config`: rollups in the
/// organisation's time zone.
pub fn store_options(config: &CollectorConfig) -> StoreOptions {
    config.store.options(
        &config.organisation.timezone,
        config.limits.max_host_power_watts,
    )
}

/// A collector's state over `store` for `config` (which must have no problems), with the
/// tests' coefficients ([`TestDefaults`]).
pub fn app_state(config: CollectorConfig, store: Arc<dyn Store>) -> AppState {
    assert_eq!(config.problems(), vec![]);
    let planner = Arc::new(Planner::new(Arc::new(config), Arc::new(TestDefaults)));
    assert_eq!(planner.problems(), vec![]);
    AppState::new(store, planner).unwrap()
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

    /// `GET path` with `token`: the status and the body as it came.
    pub async fn get_text(&self, token: &str, path: &str) -> (StatusCode, String) {
        self.call(
            Request::get(path)
                .header("authorization", format!("Bearer {token}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
    }

    /// `GET path` with `token`: the status and the body as JSON (a string when it is not).
    pub async fn get(&self, token: &str, path: &str) -> (StatusCode, serde_json::Value) {
        let (status, body) = self.get_text(token, path).await;
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
    config_toml: String,
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

    /// A restarted collector: the store closed, then a new collector with the same
    /// configuration on the same data.
    pub async fn restart(self) -> Engine {
        self.opened.close().await;
        let Engine {
            harness: Harness { dir, .. },
            name,
            url,
            config_toml,
            ..
        } = self;
        Engine::open_in(name, &config_toml, dir, url).await
    }

    /// A collector on the store of `dir` (SQLite) or `url` (PostgreSQL), opened as the
    /// collector opens it for `config_toml`.
    async fn open_in(
        name: &'static str,
        config_toml: &str,
        dir: tempfile::TempDir,
        url: Option<DatabaseUrl>,
    ) -> Engine {
        let config = CollectorConfig::from_toml(config_toml).unwrap();
        let opened = OpenStore::open(dir.path(), url.as_ref(), &store_options(&config))
            .await
            .unwrap();
        let store = opened.store();
        let state = app_state(config, store.clone());
        Engine {
            harness: Harness { dir, store, state },
            name,
            url,
            opened,
            config_toml: config_toml.to_string(),
        }
    }
}

/// The suites' engines: SQLite, and PostgreSQL (a fresh database in the cluster that
/// `scripts/test` starts; always in CI, where a missing cluster fails the test), each
/// opened as the collector opens it for `config_toml`.
pub async fn engines(config_toml: &str) -> Vec<Engine> {
    let sqlite = tempfile::tempdir().unwrap();
    let mut out = vec![Engine::open_in("sqlite", config_toml, sqlite, None).await];
    if let Some(url) = empreinte_testkit::postgres::fresh_database() {
        let dir = tempfile::tempdir().unwrap();
        let url = Some(url.parse().unwrap());
        out.push(Engine::open_in("postgresql", config_toml, dir, url).await);
    }
    out
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
        agent: test_agent(agent),
        spool: SpoolStatus::default(),
        batches,
    }
}

/// Now, in Unix ms, rounded down to the hour, less `hours_ago` hours.
pub fn hour_ago(hours_ago: u64) -> u64 {
    let now = empreinte_collector::clock::now_unix_ms();
    now - now % 3_600_000 - hours_ago * 3_600_000
}

/// A kilowatt-hour in microjoules.
pub const KWH: u64 = 3_600_000_000_000;

pub fn paris() -> jiff::tz::TimeZone {
    jiff::tz::TimeZone::get("Europe/Paris").unwrap()
}

/// The instant (Unix seconds) of a local time in Paris, `2025-10-01T00:00`.
pub fn paris_at(text: &str) -> i64 {
    text.parse::<jiff::civil::DateTime>()
        .unwrap()
        .to_zoned(paris())
        .unwrap()
        .timestamp()
        .as_second()
}
