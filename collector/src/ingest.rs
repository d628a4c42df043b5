//! `POST /api/v1/ingest`: an agent's push, checked whole, then stored in one
//! transaction, then acknowledged.
//!
//! Order of checks: size (413), token (401/403), JSON shape (400, with the path of the
//! bad field), values (422, every problem with its path), the token's agent against the
//! push's (403). Nothing of a refused push is stored.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use empreinte_shared::wire::{Push, PushAck};

use crate::auth;
use crate::clock::{Stopwatch, now_unix_ms};
use crate::footprint::batch_deltas;
use crate::server::{AppError, AppState};
use crate::store::{IngestSet, TokenKind};

pub async fn handle(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<PushAck>, AppError> {
    let result = ingest(&state, &headers, body).await;
    if let Err(e) = &result {
        state.metrics.refused(e.reason());
        if e.status().is_client_error() {
            tracing::warn!(status = e.status().as_u16(), error = %e, "push refused");
        }
    }
    result.map(Json)
}

async fn ingest(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<PushAck, AppError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            AppError::TooLarge {
                limit: state.max_body_bytes,
            }
        } else {
            AppError::Malformed(e.body_text())
        }
    })?;
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let token = auth::verify(state.store.as_ref(), authorization, TokenKind::Agent).await?;
    let mut de = serde_json::Deserializer::from_slice(&body);
    let push: Push = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            AppError::Malformed(inner.to_string())
        } else {
            AppError::Malformed(format!("{path}: {inner}"))
        }
    })?;
    de.end().map_err(|e| AppError::Malformed(e.to_string()))?;
    let token_agent = token.agent_id.unwrap_or_default();
    if token_agent != push.agent.agent_id {
        return Err(AppError::WrongAgent {
            token_agent,
            pushed: push.agent.agent_id,
        });
    }
    let now_ms = now_unix_ms();
    let problems = push.problems(&state.limits, now_ms);
    if !problems.is_empty() {
        return Err(AppError::Invalid(problems));
    }
    let plan = state.planner.host(&push.agent.agent_id);
    let batches = push
        .batches
        .iter()
        .map(|b| (b, batch_deltas(b, plan.embodied.as_ref())))
        .collect();
    let set = IngestSet {
        agent: &push.agent,
        spool: &push.spool,
        plan: &plan,
        now_ms,
        batches,
    };
    let watch = Stopwatch::start();
    let outcome = state.store.ingest(&set).await?;
    state.metrics.stored(
        &plan.site,
        &outcome.added,
        outcome.ack.accepted,
        outcome.ack.duplicates,
        watch.elapsed_seconds(),
    );
    tracing::debug!(
        agent = %push.agent.agent_id,
        accepted = outcome.ack.accepted,
        duplicates = outcome.ack.duplicates,
        "push stored"
    );
    Ok(outcome.ack)
}
