//! A collector on either engine (the embedded SQLite store, or PostgreSQL in a database
//! of its own in the cluster `scripts/test` starts), through the real router: for the
//! tests that hold both engines to the same figures.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use empreinte_collector::config::CollectorConfig;
use empreinte_collector::plan::Planner;
use empreinte_collector::server::{AppState, router};
use empreinte_collector::store::pg::DatabaseUrl;
use empreinte_collector::store::{OpenStore, Store, TokenKind};
use empreinte_shared::wire::Push;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

use super::TestDefaults;

/// A collector on one engine: its store, its router's state.
pub struct Harness {
    pub name: &'static str,
    config: String,
    dir: tempfile::TempDir,
    url: Option<DatabaseUrl>,
    opened: OpenStore,
    pub store: Arc<dyn Store>,
    pub state: AppState,
}

impl Harness {
    /// A collector on the store of `dir` (SQLite) or `url` (PostgreSQL).
    pub async fn open(
        name: &'static str,
        config_toml: &str,
        dir: tempfile::TempDir,
        url: Option<DatabaseUrl>,
    ) -> Harness {
        let config = CollectorConfig::from_toml(config_toml).unwrap();
        let options = config.store.options(
            &config.organisation.timezone,
            config.limits.max_host_power_watts,
        );
        let opened = OpenStore::open(dir.path(), url.as_ref(), &options)
            .await
            .unwrap();
        let store = opened.store();
        let planner = Arc::new(Planner::new(Arc::new(config), Arc::new(TestDefaults)));
        let state = AppState::new(store.clone(), planner).unwrap();
        Harness {
            name,
            config: config_toml.to_string(),
            dir,
            url,
            opened,
            store,
            state,
        }
    }

    pub async fn token(&self, kind: TokenKind, agent: Option<&str>) -> String {
        empreinte_collector::auth::issue(self.store.as_ref(), kind, agent, "test", 1)
            .await
            .unwrap()
            .token
    }

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

    pub async fn push(&self, token: &str, p: &Push) -> (StatusCode, String) {
        self.push_raw(Some(token), serde_json::to_vec(p).unwrap())
            .await
    }

    pub async fn get(&self, token: &str, path: &str) -> (StatusCode, Value) {
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
            serde_json::from_str(&body).unwrap_or(Value::String(body)),
        )
    }

    /// Total stored energy and number of stored hourly rows, straight from the store.
    pub async fn stored(&self) -> (u64, u64) {
        let mut energy = 0;
        for a in &self.store.agents().await.unwrap() {
            energy += self.store.agent_balance(&a.agent_id).await.unwrap().1;
        }
        let rows = self.store.hourly_rows(0, i64::MAX).await.unwrap();
        (energy, rows.len() as u64)
    }

    /// A new collector on the same database (a restart).
    pub async fn reopen(self) -> Harness {
        self.opened.close().await;
        let Harness {
            name,
            config,
            dir,
            url,
            ..
        } = self;
        Harness::open(name, &config, dir, url).await
    }
}

/// SQLite, and PostgreSQL when the cluster is there (always in CI).
pub async fn engines(config_toml: &str) -> Vec<Harness> {
    let mut out =
        vec![Harness::open("sqlite", config_toml, tempfile::tempdir().unwrap(), None).await];
    if let Some(url) = empreinte_testkit::postgres::fresh_database() {
        let url = Some(url.parse().unwrap());
        out.push(Harness::open("postgresql", config_toml, tempfile::tempdir().unwrap(), url).await);
    }
    out
}
