//! The agent daemon: samples on its own schedule and serves `/metrics`.

use std::sync::{Arc, Mutex};

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::time::MissedTickBehavior;

use crate::clock::{self, MonotonicClock};
use crate::config::{AgentConfig, PushConfig};
use crate::metrics::{self, AgentInfo};
use crate::push::client::{self, Client};
use crate::push::{Pipeline, SharedPushMetrics};
use crate::sampler::{Sampler, SharedState};
use crate::sources;

/// What the HTTP handlers read.
#[derive(Clone)]
pub struct AppState {
    pub host: SharedState,
    pub info: Arc<AgentInfo>,
    /// Present when pushing to a collector is configured.
    pub push: Option<SharedPushMetrics>,
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
    /// GPU identity, MIG mode, persistence, driver and the split rule of a MIG GPU.
    gpu: Option<&'a crate::sources::GpuIdentity>,
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
            gpu: c.channel.gpu.as_ref(),
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
    let push = state.push.as_ref().map(|p| p.lock().clone());
    let rendered = {
        let host = state.host.lock();
        metrics::render_with_push(
            &host,
            &state.info,
            push.as_ref().map(|p| (p, crate::clock::unix_ms())),
        )
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
    let push = match &config.push.collector {
        Some(collector) => Some(setup_push(&config.push, collector)?),
        None => None,
    };
    let state = AppState {
        host: sampler.state(),
        info: Arc::new(AgentInfo {
            interval_seconds: config.interval.as_secs_f64(),
        }),
        push: push
            .as_ref()
            .map(|(p, _)| p.lock().unwrap_or_else(|e| e.into_inner()).metrics()),
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

    let clock = MonotonicClock::start();
    let sampler = Arc::new(Mutex::new(sampler));
    let pipeline = push.as_ref().map(|(p, _)| p.clone());
    let sampling = tokio::spawn(sample_forever(
        sampler.clone(),
        clock,
        config.interval,
        pipeline.clone(),
    ));
    let pushing = push.as_ref().map(|(p, c)| {
        let sealed = p.lock().unwrap_or_else(|e| e.into_inner()).sealed_notify();
        tokio::spawn(client::push_forever(
            p.clone(),
            c.clone(),
            config.push.batch_interval,
            sealed,
        ))
    });
    let served = axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown_signal())
        .await;
    sampling.abort();
    if let Some(task) = pushing {
        task.abort();
    }
    if let Some((pipeline, client)) = push {
        // One last cycle, so the energy up to now is in the last batch, then seal it and
        // try to deliver what waits.
        let last = {
            let (s, p) = (sampler.clone(), pipeline.clone());
            tokio::task::spawn_blocking(move || {
                cycle(&s, &clock, config.interval, Some(&p));
                let mut p = p.lock().unwrap_or_else(|e| e.into_inner());
                p.seal(clock::unix_ms())
            })
            .await
        };
        match last {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "cannot seal the last batch"),
            Err(e) => tracing::error!(error = %e, "the last sampling cycle panicked"),
        }
        match client::final_push(pipeline, client, FINAL_PUSH_DEADLINE).await {
            None | Some(client::Outcome::Idle) => {}
            Some(outcome) => {
                tracing::warn!(outcome = ?outcome, "not everything reached the collector before shutdown; it stays in the spool for the next start")
            }
        }
    }
    served.context("the HTTP server failed")
}

/// How long the agent tries to deliver its spool when it stops.
pub const FINAL_PUSH_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

type SharedPipeline = Arc<Mutex<Pipeline>>;

/// Opens the spool and builds the client; errors say which setting to fix.
fn setup_push(cfg: &PushConfig, collector: &str) -> anyhow::Result<(SharedPipeline, Arc<Client>)> {
    let token = match &cfg.token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| {
                    format!(
                        "cannot read the agent token {} (push.token_file)",
                        path.display()
                    )
                })?
                .trim()
                .to_string(),
        ),
        None => std::env::var("EMPREINTE_AGENT_TOKEN")
            .ok()
            .map(|t| t.trim().to_string()),
    }
    .filter(|t| !t.is_empty());
    if token.is_none() {
        tracing::warn!(
            collector,
            "no agent token (push.token_file or EMPREINTE_AGENT_TOKEN): pushing without one"
        );
    }
    let hostname = crate::push::hostname();
    let agent_id = cfg.agent_id.clone().unwrap_or_else(|| hostname.clone());
    empreinte_shared::wire::check_name(&agent_id).map_err(|m| {
        anyhow::anyhow!("the agent id {agent_id:?} (push.agent_id, else the host name) {m}")
    })?;
    let run_id = crate::push::batcher::new_run_id().map_err(|e| {
        anyhow::anyhow!("cannot draw a run id from the system's random source: {e}")
    })?;
    let pipeline = Pipeline::open(cfg, run_id, clock::unix_ms()).with_context(|| {
        format!(
            "cannot open the push spool in {} (push.spool_dir, --spool-dir)",
            cfg.spool_dir.display()
        )
    })?;
    let client = Client::new(
        collector,
        token,
        empreinte_shared::wire::AgentInfo {
            agent_id: agent_id.clone(),
            hostname,
            agent_version: metrics::VERSION.to_string(),
        },
        cfg.timeout,
        cfg.max_batches_per_push,
    );
    tracing::info!(collector = %client.url(), agent_id, run_id = pipeline.run_id(), spool = %cfg.spool_dir.display(), batches_waiting = pipeline.spool().batches(), "pushing to the collector");
    Ok((Arc::new(Mutex::new(pipeline)), Arc::new(client)))
}

async fn sample_forever(
    sampler: Arc<Mutex<Sampler>>,
    clock: MonotonicClock,
    interval: std::time::Duration,
    pipeline: Option<SharedPipeline>,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let (s, p) = (Arc::clone(&sampler), pipeline.clone());
        let done =
            tokio::task::spawn_blocking(move || cycle(&s, &clock, interval, p.as_ref())).await;
        if let Err(e) = done {
            tracing::error!(error = %e, "sampling cycle panicked; continuing");
        }
    }
}

/// One sampling cycle, then its per-project energy into the push pipeline.
fn cycle(
    sampler: &Mutex<Sampler>,
    clock: &MonotonicClock,
    interval: std::time::Duration,
    pipeline: Option<&SharedPipeline>,
) {
    let mut s = sampler.lock().unwrap_or_else(|p| p.into_inner());
    let at = clock.now();
    let wall = clock::unix_ms();
    s.cycle(at);
    if let Some(p) = pipeline {
        let host = s.host();
        let length = host.last_interval.unwrap_or(interval);
        let projects = host
            .attribution
            .as_ref()
            .map_or(&[][..], |a| a.projects.as_slice());
        let mut p = p.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = p.on_cycle(wall, length, projects) {
            tracing::error!(error = %e, "cannot write to the push spool; this cycle's energy may not reach the collector");
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
