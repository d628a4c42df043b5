//! The collector's HTTP server: `fn router(state)` (tests call it without a socket),
//! one [`AppError`] that gives clients a clear message, and `run` with graceful
//! shutdown on SIGTERM.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use empreinte_shared::wire::{INGEST_PATH, Limits, WireProblem};
use jiff::tz::TimeZone;
use serde::Serialize;

use crate::api;
use crate::auth::AuthError;
use crate::clock::now_unix_ms;
use crate::config::CollectorConfig;
use crate::ingest;
use crate::metrics::Metrics;
use crate::objectives;
use crate::period::month_of;
use crate::plan::Planner;
use crate::store::{Store, StoreError};

/// Everything a request needs.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub planner: Arc<Planner>,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    pub tz: TimeZone,
    pub max_body_bytes: usize,
    /// A push's body must arrive within this time.
    pub body_timeout: Duration,
    /// Pushes being read or stored now (`limits.max_ingests_in_flight`).
    pub ingest_slots: Arc<tokio::sync::Semaphore>,
    /// KiB of push bodies being read or stored now (`limits.max_ingest_bytes_in_flight`).
    pub ingest_kib: Arc<tokio::sync::Semaphore>,
    /// When pushes turned away by these bounds should come back (`Retry-After`).
    pub ingest_pacer: Arc<crate::ingest::pacing::Pacer>,
    /// Chromium processes printing now (`limits.max_pdf_renders`).
    pub pdf_slots: Arc<tokio::sync::Semaphore>,
    pub pdf_queue_timeout: Duration,
    /// `/metrics` without a token (`[metrics] public`).
    pub metrics_public: bool,
    /// The register of AI uses (reloaded on SIGHUP).
    pub register: Arc<crate::register::Live>,
}

impl AppState {
    pub fn new(store: Arc<dyn Store>, planner: Arc<Planner>) -> Result<AppState, String> {
        let config = planner.config();
        let tz = TimeZone::get(&config.organisation.timezone)
            .map_err(|e| format!("organisation.timezone: {e}"))?;
        let l = &config.limits;
        Ok(AppState {
            store,
            limits: l.wire(),
            max_body_bytes: l.max_body_bytes,
            body_timeout: l.body_timeout,
            ingest_slots: Arc::new(tokio::sync::Semaphore::new(l.max_ingests_in_flight.max(1))),
            ingest_kib: Arc::new(tokio::sync::Semaphore::new(
                (l.max_ingest_bytes_in_flight / 1024).max(1),
            )),
            ingest_pacer: Arc::new(crate::ingest::pacing::Pacer::new()),
            pdf_slots: Arc::new(tokio::sync::Semaphore::new(l.max_pdf_renders.max(1))),
            pdf_queue_timeout: l.pdf_queue_timeout,
            metrics_public: config.metrics.public,
            register: Arc::new(crate::register::Live::open(config).map_err(|e| e.to_string())?),
            planner,
            metrics: Arc::new(Metrics::new()),
            tz,
        })
    }
}

/// The collector's routes. `collector/openapi.json` documents exactly these: its test
/// asks this router (every documented operation answers, anything else is 404 or 405).
pub fn router(state: AppState) -> Router {
    let limit = state.max_body_bytes;
    Router::new()
        .route("/", get(index))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route(INGEST_PATH, post(ingest::handle))
        .route("/api/v1/openapi.json", get(api::openapi))
        .route("/api/v1/projects", get(api::projects))
        .route("/api/v1/footprint", get(api::footprint))
        .route("/api/v1/objectives", get(api::objectives))
        .route("/api/v1/agents", get(api::agents))
        .route("/api/v1/coefficients", get(api::coefficients))
        .route("/api/v1/uses", get(crate::register::api::uses))
        .route("/api/v1/costs", get(crate::cost::api::costs))
        .route("/api/v1/inference", get(crate::inference::api::inference))
        .route("/reports/{file}", get(crate::report::http::report))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

async fn index() -> &'static str {
    "Empreinte collector\n  POST /api/v1/ingest      agents push here (agent token)\n  GET  /api/v1/...         footprint API (read token); see /api/v1/openapi.json\n  GET  /reports/YYYY-MM.html  monthly report (read token; also .pdf .csv .json .md, ?lang=fr|en)\n  GET  /metrics            Prometheus metrics (read token unless [metrics] public)\n  GET  /healthz            liveness\n"
}

async fn metrics(
    axum::extract::State(state): axum::extract::State<AppState>,
    headers: axum::http::HeaderMap,
) -> Response {
    if !state.metrics_public {
        let authorization = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if let Err(e) = crate::auth::verify(
            state.store.as_ref(),
            authorization,
            crate::store::TokenKind::Read,
        )
        .await
        {
            return AppError::Auth(e).into_response();
        }
    }
    // The footprint counters are the store's totals (monthly rollups) at scrape time:
    // exactly what a restart starts from, so they never go back across one.
    if let Err(e) = seed_metrics(&state).await {
        return AppError::Unavailable(format!("cannot read the stored totals: {e}"))
            .into_response();
    }
    match state.store.agents().await {
        Ok(agents) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            state.metrics.render(&agents, now_unix_ms()) + &register_series(&state).await,
        )
            .into_response(),
        Err(e) => AppError::Store(e).into_response(),
    }
}

/// The register's and the costs' series (`crate::register::api::prometheus`,
/// `crate::cost::api::prometheus`); a store error leaves them out and is logged.
async fn register_series(state: &AppState) -> String {
    let mut out = String::new();
    for part in [
        crate::register::api::prometheus(state).await,
        crate::cost::api::prometheus(state).await,
        crate::cost::hardware_api::prometheus(state).await,
    ] {
        match part {
            Ok(text) => out.push_str(&text),
            Err(e) => tracing::warn!(error = %e, "cannot read the register's or the costs' series"),
        }
    }
    out
}

/// A request that failed, with what the client should know.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    Auth(#[from] AuthError),
    #[error("this token was issued for agent {token_agent:?}, not {pushed:?}")]
    WrongAgent { token_agent: String, pushed: String },
    #[error(
        "the body is larger than the {limit} bytes this collector accepts (limits.max_body_bytes)"
    )]
    TooLarge { limit: usize },
    #[error("the body is not a valid push: {0}")]
    Malformed(String),
    #[error("the push has {} problem{}; nothing of it was stored", .0.len(), if .0.len() == 1 { "" } else { "s" })]
    Invalid(Vec<WireProblem>),
    #[error("bad query: {0}")]
    BadQuery(String),
    #[error("not found: {0}")]
    NotFound(String),
    /// A store error: 503, except a full write queue (503 with `Retry-After`) and a
    /// push the store refuses (422 with its problems).
    #[error("{}", store_message(.0))]
    Store(#[from] StoreError),
    #[error("{0}")]
    Unavailable(String),
    /// A limit is reached: try again after `retry_after_s`.
    #[error("{what}; try again in {retry_after_s} s")]
    Saturated { what: String, retry_after_s: u64 },
    #[error("the body did not arrive within {0} s (limits.body_timeout)")]
    BodyTimeout(u64),
}

#[derive(Serialize)]
struct ErrorBody {
    error: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    problems: Vec<String>,
}

impl AppError {
    pub fn status(&self) -> StatusCode {
        match self {
            AppError::Auth(AuthError::Store(_) | AuthError::Random(_)) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            AppError::Auth(AuthError::WrongKind { .. }) | AppError::WrongAgent { .. } => {
                StatusCode::FORBIDDEN
            }
            AppError::Auth(_) => StatusCode::UNAUTHORIZED,
            AppError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::Malformed(_) | AppError::BadQuery(_) => StatusCode::BAD_REQUEST,
            AppError::Invalid(_) | AppError::Store(StoreError::Rejected(_)) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::Store(StoreError::Unsupported { .. }) => StatusCode::NOT_IMPLEMENTED,
            AppError::Store(_) | AppError::Unavailable(_) | AppError::Saturated { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            AppError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
        }
    }

    /// The label of `empreinte_collector_refused_pushes_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            AppError::Auth(AuthError::WrongKind { .. }) | AppError::WrongAgent { .. } => {
                "forbidden"
            }
            AppError::Store(StoreError::Rejected(_)) => "invalid",
            AppError::Store(StoreError::Busy { .. }) => "busy",
            AppError::Auth(AuthError::Store(_) | AuthError::Random(_))
            | AppError::Store(_)
            | AppError::Unavailable(_) => "store_error",
            AppError::Auth(_) => "unauthenticated",
            AppError::TooLarge { .. } => "too_large",
            AppError::Malformed(_) | AppError::BadQuery(_) | AppError::NotFound(_) => "malformed",
            AppError::Invalid(_) => "invalid",
            AppError::Saturated { .. } => "saturated",
            AppError::BodyTimeout(_) => "body_timeout",
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        let retry_after = match &self {
            AppError::Saturated { retry_after_s, .. }
            | AppError::Store(StoreError::Busy { retry_after_s }) => Some(*retry_after_s),
            _ => None,
        };
        if retry_after.is_some() {
            tracing::debug!(error = %self, "request refused: a limit is reached");
        } else if status.is_server_error() {
            // The cause stays in the log; the client gets the sentence.
            let cause = match &self {
                AppError::Store(e) => e.to_string(),
                AppError::Auth(e) => e.to_string(),
                other => other.to_string(),
            };
            tracing::error!(error = %cause, "request failed");
        } else {
            tracing::debug!(status = status.as_u16(), error = %self, "request refused");
        }
        let problems = match &self {
            AppError::Invalid(p) | AppError::Store(StoreError::Rejected(p)) => {
                p.iter().map(ToString::to_string).collect()
            }
            _ => Vec::new(),
        };
        let mut response = (
            status,
            axum::Json(ErrorBody {
                error: self.to_string(),
                problems,
            }),
        )
            .into_response();
        if let Some(s) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, axum::http::HeaderValue::from(s));
            // The connection is given back: the client comes back later, and another one
            // waiting for a connection slot (`limits.max_connections`) gets it meanwhile.
            response.headers_mut().insert(
                header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
        }
        if status == StatusCode::UNAUTHORIZED {
            if let Ok(v) = "Bearer realm=\"empreinte\"".parse() {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
        }
        response
    }
}

/// What a client is told of a store error: never a claim about acknowledgements on a
/// read; the refusals that are the client's to fix say what to fix.
fn store_message(e: &StoreError) -> String {
    match e {
        StoreError::Busy { .. } | StoreError::Rejected(_) | StoreError::Unsupported { .. } => {
            e.to_string()
        }
        _ => "the store is unavailable; see the collector's log".to_string(),
    }
}

/// Refreshes the budget and intensity gauges every `period`.
pub async fn refresh_gauges(state: AppState, period: Duration) {
    loop {
        if let Err(e) = refresh_once(&state).await {
            tracing::warn!(error = %e, "cannot refresh the budget and intensity gauges");
        }
        tokio::time::sleep(period).await;
    }
}

/// One refresh of the budget and intensity gauges.
pub async fn refresh_once(state: &AppState) -> Result<(), String> {
    let now_s = i64::try_from(now_unix_ms() / 1000).unwrap_or(i64::MAX);
    let config = state.planner.config();
    let month = month_of(&state.tz, now_s)?;
    let budgets = objectives::evaluate(
        state.store.as_ref(),
        &config.objectives,
        &state.register.get(),
        &state.tz,
        &month,
        now_s,
    )
    .await
    .map_err(|e| e.to_string())?;
    state.metrics.set_budgets(budgets);
    let hour_s = now_s - now_s.rem_euclid(3600);
    let mut zones: Vec<&str> = config.sites.iter().map(|s| s.zone.as_str()).collect();
    zones.push(&config.default_site.zone);
    zones.sort_unstable();
    zones.dedup();
    let mut intensity = BTreeMap::new();
    for zone in zones {
        let g = match state
            .store
            .intensity(zone, hour_s)
            .await
            .map_err(|e| e.to_string())?
        {
            Some(g) => Some(g),
            None => state.planner.defaults().grid(zone).map(|c| c.value),
        };
        if let Some(g) = g {
            intensity.insert(zone.to_string(), g);
        }
    }
    state.metrics.set_intensity(intensity);
    Ok(())
}

/// Serves `state` on `listener` (TLS when `tls` is set) until `shutdown` resolves.
pub async fn serve(
    state: AppState,
    listener: tokio::net::TcpListener,
    tls: Option<Arc<crate::tls::Reloadable>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let refresher = tokio::spawn(refresh_gauges(state.clone(), Duration::from_secs(30)));
    let config = state.planner.config();
    let limits = crate::listen::ConnectionLimits {
        max_connections: config.limits.max_connections,
        header_timeout: config.limits.header_timeout,
    };
    let reloader = tls.clone().map(|t| tokio::spawn(t.reload_on_sighup()));
    let register_reloader = tokio::spawn(
        state
            .register
            .clone()
            .reload_on_sighup(Arc::new(state.planner.config().clone())),
    );
    let metrics = state.metrics.clone();
    let result =
        crate::listen::serve(listener, router(state), tls, limits, metrics, shutdown).await;
    refresher.abort();
    register_reloader.abort();
    if let Some(r) = reloader {
        r.abort();
    }
    result
}

/// Starts the footprint counters from the totals stored over all time (whole months of
/// the organisation's time zone: the monthly rollups answer).
pub async fn seed_metrics(state: &AppState) -> Result<(), String> {
    let from = crate::period::month(&state.tz, 1970, 1)?.from_s;
    let to = crate::period::month(&state.tz, 2200, 1)?.from_s;
    let lines = state
        .store
        .lines(from, to)
        .await
        .map_err(|e| e.to_string())?;
    state.metrics.seed(&lines);
    crate::inference::seed_metrics(state).await;
    Ok(())
}

/// The collector's configuration problems that need the defaults, added to its own.
pub fn all_problems(
    config: &CollectorConfig,
    planner: &Planner,
) -> Vec<crate::config::ConfigProblem> {
    let mut p = config.problems();
    p.extend(planner.problems());
    p
}

/// Opens the store in `config.data_dir`, checks the configuration against the built-in
/// coefficients, and serves on `config.listen` until `shutdown` resolves. `on_ready` is
/// told the address actually bound (port 0 picks one).
pub async fn run(
    config: CollectorConfig,
    defaults: Arc<dyn crate::plan::Defaults>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce(std::net::SocketAddr, &AppState),
) -> anyhow::Result<()> {
    use anyhow::Context;
    let config = Arc::new(config);
    let planner = Planner::new(config.clone(), defaults.clone());
    let problems = all_problems(&config, &planner);
    if !problems.is_empty() {
        return Err(crate::config::ConfigError::Invalid(problems).into());
    }
    let opened = crate::store::OpenStore::open(
        &config.data_dir,
        config.database_url.as_ref(),
        &config.store.options(
            &config.organisation.timezone,
            config.limits.max_host_power_watts,
        ),
    )
    .await
    .with_context(|| match &config.database_url {
        Some(url) => format!("cannot open the store in the PostgreSQL database {url}"),
        None => format!("cannot open the store in {}", config.data_dir.display()),
    })?;
    tracing::info!(database = %opened.describe(), "store open");
    let store = opened.store();
    for missing in store.missing_capabilities() {
        tracing::info!(
            engine = %store.engine(),
            capability = missing.what(),
            "this store engine does not keep these: their API answers 501, their series and report figures are left out"
        );
    }
    // The configuration history: this configuration's plan is recorded (from the next
    // hour when it changed) and every hour gets the plan in force then.
    let history =
        crate::history::record(store.as_ref(), &config, None, crate::clock::now_unix_ms())
            .await
            .context("cannot record the configuration's plan in the store")?;
    let configs = crate::history::configs(&history, &config).map_err(anyhow::Error::msg)?;
    let planner = Arc::new(Planner::with_history(config.clone(), defaults, configs));
    let tls = if config.tls.enabled() {
        Some(Arc::new(crate::tls::Reloadable::open(&config.tls)?))
    } else {
        None
    };
    let state = AppState::new(store.clone(), planner).map_err(anyhow::Error::msg)?;
    seed_metrics(&state).await.map_err(|e| {
        anyhow::anyhow!("cannot read the stored totals for the footprint counters: {e}")
    })?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (set --listen or `listen` in the config)",
                config.listen
            )
        })?;
    let local = listener
        .local_addr()
        .context("cannot read the listening address")?;
    if tls.is_some() {
        tracing::info!(address = %local, "collector serving HTTPS");
    } else if local.ip().is_loopback() {
        tracing::info!(address = %local, "collector serving HTTP on loopback");
    } else {
        tracing::warn!(
            address = %local,
            "collector serving plain HTTP on a network address: tokens and figures travel in clear; set [tls] cert_file and key_file (or --tls-cert and --tls-key)"
        );
    }
    on_ready(local, &state);
    let served = serve(state, listener, tls, shutdown).await;
    opened.close().await;
    served.context("the HTTP server failed")
}
