//! A collector on each store engine: SQLite, and PostgreSQL when the test cluster is
//! there (always in CI, see `empreinte_testkit::postgres`), for tests that hold both
//! engines to the same ground truth through the router.

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
use tower::ServiceExt;

pub struct OnEngine {
    pub engine: &'static str,
    _dir: tempfile::TempDir,
    _opened: OpenStore,
    pub store: Arc<dyn Store>,
    pub state: AppState,
}

impl OnEngine {
    async fn open(engine: &'static str, config_toml: &str, url: Option<String>) -> OnEngine {
        let dir = tempfile::tempdir().unwrap();
        let config = CollectorConfig::from_toml(config_toml).unwrap();
        assert_eq!(config.problems(), vec![]);
        let url: Option<DatabaseUrl> = url.map(|u| u.parse().unwrap());
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
        let planner = Arc::new(Planner::new(
            Arc::new(config),
            Arc::new(super::TestDefaults),
        ));
        assert_eq!(planner.problems(), vec![]);
        let state = AppState::new(store.clone(), planner).unwrap();
        OnEngine {
            engine,
            _dir: dir,
            _opened: opened,
            store,
            state,
        }
    }

    pub async fn call(&self, req: Request<Body>) -> (StatusCode, String) {
        let resp = router(self.state.clone()).oneshot(req).await.unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    pub async fn push(&self, token: &str, push: &Push) -> (StatusCode, String) {
        self.call(
            Request::post("/api/v1/ingest")
                .header("content-type", "application/json")
                .header("authorization", format!("Bearer {token}"))
                .body(Body::from(serde_json::to_vec(push).unwrap()))
                .unwrap(),
        )
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

    pub async fn token(&self, kind: TokenKind, agent: Option<&str>) -> String {
        empreinte_collector::auth::issue(self.store.as_ref(), kind, agent, "test", 1)
            .await
            .unwrap()
            .token
    }
}

/// The collector on SQLite, and on PostgreSQL when the cluster is there.
pub async fn engines(config_toml: &str) -> Vec<OnEngine> {
    let mut out = vec![OnEngine::open("sqlite", config_toml, None).await];
    if let Some(url) = empreinte_testkit::postgres::fresh_database() {
        out.push(OnEngine::open("postgresql", config_toml, Some(url)).await);
    }
    out
}
