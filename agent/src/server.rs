//! The agent daemon: samples on its own schedule and serves `/metrics`.

use std::sync::{Arc, Mutex};

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::time::MissedTickBehavior;

use crate::clock::MonotonicClock;
use crate::config::AgentConfig;
use crate::metrics::{self, AgentInfo};
use crate::sampler::{Sampler, SharedState};
use crate::sources;

/// What the HTTP handlers read.
#[derive(Clone)]
pub struct AppState {
    pub host: SharedState,
    pub info: Arc<AgentInfo>,
}

/// The agent's HTTP routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/debug/attribution", get(debug_attribution))
        .with_state(state)
}

async fn index() -> &'static str {
    "Empreinte agent\n  /metrics             Prometheus metrics\n  /debug/attribution   JSON: per-channel and per-project energy in microjoules, top processes of the last interval and the rule that placed each\n  /healthz             liveness\n"
}

/// A channel's totals, for the debug endpoint (integers: exact).
#[derive(serde::Serialize)]
struct ChannelDebug<'a> {
    component: Option<empreinte_shared::Component>,
    source: empreinte_shared::SourceKind,
    device: &'a str,
    total_uj: u64,
    last_uj: u64,
}

async fn debug_attribution(State(state): State<AppState>) -> Response {
    let host = state.host.lock();
    let channels: Vec<ChannelDebug> = host
        .channels
        .iter()
        .filter(|c| c.channel.component.is_some())
        .map(|c| ChannelDebug {
            component: c.channel.component,
            source: c.channel.source,
            device: &c.channel.device,
            total_uj: c.total.0,
            last_uj: c.last_energy.0,
        })
        .collect();
    let body = serde_json::json!({
        "cycles": host.cycles_total,
        "channels": channels,
        "attribution": host.attribution,
    });
    axum::Json(body).into_response()
}

async fn metrics_handler(State(state): State<AppState>) -> Response {
    let rendered = {
        let host = state.host.lock();
        metrics::render(&host, &state.info)
    };
    match rendered {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode metrics");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot encode metrics: {e}\n"),
            )
                .into_response()
        }
    }
}

/// Opens the sources, then samples every `config.interval` and serves `/metrics` on
/// `config.listen` until SIGTERM or Ctrl-C.
pub async fn run(config: AgentConfig) -> anyhow::Result<()> {
    let opened = sources::open_all(&config);
    for d in &opened.diagnoses {
        if d.usable {
            tracing::info!(source = %d.source, subject = %d.subject, measures = d.measures.as_deref().unwrap_or(""), "energy source ready");
        } else {
            tracing::warn!(source = %d.source, subject = %d.subject, problem = d.problem.as_deref().unwrap_or(""), fix = d.fix.as_deref().unwrap_or(""), "energy source unusable");
        }
    }
    if opened.sources.is_empty() {
        tracing::warn!(
            "no energy source is usable: the agent serves only its own metrics; run `empreinte agent check`"
        );
    }
    let attributor = crate::attribution::build(&config)
        .map_err(|e| anyhow::anyhow!("cannot set up the attribution: {e}"))?;
    let sampler = Sampler::new(opened.sources).with_attribution(attributor);
    let state = AppState {
        host: sampler.state(),
        info: Arc::new(AgentInfo {
            interval_seconds: config.interval.as_secs_f64(),
        }),
    };
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
    tracing::info!(address = %local, interval = ?config.interval, "agent serving /metrics");

    let sampling = tokio::spawn(sample_forever(sampler, config.interval));
    let served = axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown_signal())
        .await;
    sampling.abort();
    served.context("the HTTP server failed")
}

async fn sample_forever(sampler: Sampler, interval: std::time::Duration) {
    let clock = MonotonicClock::start();
    let sampler = Arc::new(Mutex::new(sampler));
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let s = Arc::clone(&sampler);
        let done = tokio::task::spawn_blocking(move || {
            let mut s = s.lock().unwrap_or_else(|p| p.into_inner());
            s.cycle(clock.now())
        })
        .await;
        if let Err(e) = done {
            tracing::error!(error = %e, "sampling cycle panicked; continuing");
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}
