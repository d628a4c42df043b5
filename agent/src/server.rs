//! The agent daemon: samples on its own schedule and serves `/metrics`.

use std::sync::{Arc, Mutex};

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::time::MissedTickBehavior;

use crate::clock::{MonotonicClock, SampleTime};
use crate::config::AgentConfig;
use crate::inference::{Inference, records};
use crate::metrics::{self, ExportInfo};
use crate::push::SharedPushMetrics;
use crate::push::wiring::{CycleInput, Feed, PushRuntime};
use crate::sampler::{Sampler, SharedState};
use crate::sources;

/// What the HTTP handlers read.
#[derive(Clone)]
pub struct AppState {
    pub host: SharedState,
    pub info: Arc<ExportInfo>,
    /// Present when pushing to a collector is configured.
    pub push: Option<SharedPushMetrics>,
    /// The sampling clock, which dates the batches (and so their age).
    pub clock: MonotonicClock,
    /// The inference servers' reader, when there is one.
    pub inference: Option<Arc<Inference>>,
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
    let inference = state
        .inference
        .as_ref()
        .map_or_else(Vec::new, |i| i.families());
    let rendered = {
        let host = state.host.lock();
        metrics::render_all(
            &host,
            &state.info,
            push.as_ref()
                .map(|p| (p, state.clock.anchor().unix_ms(state.clock.now()))),
            inference,
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
    let pods = attributor.annotated_pods();
    let sampler = Sampler::new(opened.sources).with_attribution(attributor);
    let clock = MonotonicClock::start();
    let inference = Inference::start_with_pods(&config, clock, pods)?.map(Arc::new);
    let counts = Counts {
        inference: inference.clone(),
        fallback_project: Arc::from(config.attribution.unassigned_project.as_str()),
    };
    let push = match &config.push.collector {
        Some(collector) => Some(PushRuntime::start(
            &config.push,
            collector,
            clock.anchor(),
            clock.anchor().unix_ms(clock.now()),
        )?),
        None => None,
    };
    let state = AppState {
        host: sampler.state(),
        info: Arc::new(ExportInfo {
            interval_seconds: config.interval.as_secs_f64(),
        }),
        push: push.as_ref().map(PushRuntime::metrics),
        clock,
        inference: inference.clone(),
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

    let sampler = Arc::new(Mutex::new(sampler));
    let feed = push.as_ref().map(PushRuntime::feed);
    let sampling = tokio::spawn(sample_forever(
        sampler.clone(),
        clock,
        config.interval,
        feed.clone(),
        counts.clone(),
    ));
    let served = axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown_signal())
        .await;
    sampling.abort();
    if let Some(push) = push {
        // One last cycle, so the energy up to now is in the last batch; the push then
        // seals it and tries to deliver what waits.
        let last = {
            let s = sampler.clone();
            tokio::task::spawn_blocking(move || {
                cycle(&s, &clock, config.interval, feed.as_ref(), &counts)
            })
            .await
        };
        let now = match last {
            Ok(at) => at,
            Err(e) => {
                tracing::error!(error = %e, "the last sampling cycle panicked");
                clock.now()
            }
        };
        push.shutdown(now).await;
    }
    served.context("the HTTP server failed")
}

async fn sample_forever(
    sampler: Arc<Mutex<Sampler>>,
    clock: MonotonicClock,
    interval: std::time::Duration,
    feed: Option<Feed>,
    counts: Counts,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let (s, f, c) = (Arc::clone(&sampler), feed.clone(), counts.clone());
        let done =
            tokio::task::spawn_blocking(move || cycle(&s, &clock, interval, f.as_ref(), &c)).await;
        if let Err(e) = done {
            tracing::error!(error = %e, "sampling cycle panicked; continuing");
        }
    }
}

/// What the sampling cycle reads of the inference servers.
#[derive(Clone)]
struct Counts {
    inference: Option<Arc<Inference>>,
    /// The project of a server whose process the attribution does not know.
    fallback_project: Arc<str>,
}

/// One sampling cycle; its per-project energy (and what the inference servers counted,
/// taken without I/O) is copied out and handed to the push's feed after the sampler's
/// lock is released (the feed never waits on I/O). Returns the cycle's time.
fn cycle(
    sampler: &Mutex<Sampler>,
    clock: &MonotonicClock,
    interval: std::time::Duration,
    feed: Option<&Feed>,
    counts: &Counts,
) -> SampleTime {
    let at = clock.now();
    let end_unix_ms = clock.anchor().unix_ms(at);
    let takes = counts
        .inference
        .as_ref()
        .map(|i| i.take(end_unix_ms))
        .unwrap_or_default();
    let input = {
        let mut s = sampler.lock().unwrap_or_else(|p| p.into_inner());
        s.set_model_weights(crate::inference::model_weights(&takes));
        s.cycle(at);
        let host = s.host();
        let length = host.last_interval.unwrap_or(interval);
        let start =
            end_unix_ms.saturating_sub(u64::try_from(length.as_millis()).unwrap_or(u64::MAX));
        let inference = records::build(
            &takes,
            start,
            end_unix_ms,
            &|pid| s.project_of(pid),
            &counts.fallback_project,
        );
        if let Some(i) = &counts.inference {
            i.carry_gaps(&records::excess_gaps(&takes, start, end_unix_ms));
            i.counted(&inference);
        }
        feed.map(|_| {
            let attribution = host.attribution.as_ref();
            CycleInput {
                end_unix_ms,
                length,
                projects: attribution.map_or_else(Vec::new, |a| a.projects.clone()),
                models: attribution.map_or_else(Vec::new, |a| a.models.clone()),
                inference,
            }
        })
    };
    if let (Some(feed), Some(input)) = (feed, input) {
        feed.send(input);
    }
    at
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
