//! `POST /api/v1/ingest`: an agent's push, checked whole, then stored in one
//! transaction, then acknowledged.
//!
//! Order of checks, the cheap ones before any body byte is read: token from the headers
//! (401/403), declared size (413), a free ingest slot (503 with `Retry-After` when
//! `limits.max_ingests_in_flight` pushes, or `limits.max_ingest_bytes_in_flight` bytes
//! of bodies, are in flight); then the body, within
//! `limits.body_timeout` (408) and `limits.max_body_bytes` (413); JSON shape (400, with
//! the path of the bad field), values (422, every problem with its path), the token's
//! agent against the push's (403). Nothing of a refused push is stored.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, header};
use empreinte_shared::wire::{Push, PushAck};

use crate::auth;
use crate::clock::{Stopwatch, now_unix_ms};
use crate::footprint::batch_deltas;
use crate::server::{AppError, AppState};
use crate::store::{IngestSet, StoreError, TokenKind};

pub mod pacing;

pub async fn handle(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
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

/// Reads `body` whole, within the time and size limits.
async fn read_body(state: &AppState, body: Body) -> Result<Bytes, AppError> {
    let limit = state.max_body_bytes;
    match tokio::time::timeout(state.body_timeout, axum::body::to_bytes(body, limit)).await {
        Err(_) => Err(AppError::BodyTimeout(state.body_timeout.as_secs())),
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => {
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            while let Some(s) = source {
                if s.is::<http_body_util::LengthLimitError>() {
                    return Err(AppError::TooLarge { limit });
                }
                source = s.source();
            }
            Err(AppError::Malformed(format!("cannot read the body: {e}")))
        }
    }
}

/// Reads and drops the body of an authenticated push turned away before its body was
/// read (within `body_timeout` and `max_body_bytes`, a chunk at a time: nothing is
/// kept). An agent sends its whole body before it reads the answer: closing at once would
/// reset its connection, and it would never see the 503 and its `Retry-After`.
async fn discard(state: &AppState, body: Body) {
    use futures_util::StreamExt;
    let mut stream = body.into_data_stream();
    let mut left = state.max_body_bytes;
    let _ = tokio::time::timeout(state.body_timeout, async {
        while let Some(Ok(chunk)) = stream.next().await {
            if chunk.len() >= left {
                break;
            }
            left -= chunk.len();
        }
    })
    .await;
}

/// The push in `body`. Parsed once without tracking where it is (parsing through the
/// tracking was a fifth of the HTTP workers' time); a body that does not parse is parsed
/// again with it, so that the answer names the bad field.
fn parse_push(body: &[u8]) -> Result<Push, AppError> {
    if let Ok(push) = serde_json::from_slice::<Push>(body) {
        return Ok(push);
    }
    let mut de = serde_json::Deserializer::from_slice(body);
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
    Ok(push)
}

async fn ingest(state: &AppState, headers: &HeaderMap, body: Body) -> Result<PushAck, AppError> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let token = auth::verify(state.store.as_ref(), authorization, TokenKind::Agent).await?;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > state.max_body_bytes as u64) {
        return Err(AppError::TooLarge {
            limit: state.max_body_bytes,
        });
    }
    let kib = declared.map_or(state.max_body_bytes as u64, |n| n) / 1024 + 1;
    // A push turned away is told when to come back: the pushes turned away are spread
    // over the time the collector needs to store them (`pacing`).
    let come_back = || state.ingest_pacer.retry_after_s(kib * 1024);
    let Ok(_slot) = state.ingest_slots.clone().try_acquire_owned() else {
        state.metrics.saturated("ingests");
        discard(state, body).await;
        return Err(AppError::Saturated {
            what: "this collector is storing as many pushes as it accepts at once (limits.max_ingests_in_flight)".into(),
            retry_after_s: come_back(),
        });
    };
    let bytes = u32::try_from(kib)
        .ok()
        .and_then(|kib| state.ingest_kib.clone().try_acquire_many_owned(kib).ok());
    let Some(_bytes) = bytes else {
        state.metrics.saturated("ingest_bytes");
        discard(state, body).await;
        return Err(AppError::Saturated {
            what: "this collector is reading as many push bytes as it accepts at once (limits.max_ingest_bytes_in_flight)".into(),
            retry_after_s: come_back(),
        });
    };
    let body = read_body(state, body).await?;
    let push = parse_push(&body)?;
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
    let watch = Stopwatch::start();
    let outcome = match store_by_plan(state, &push, now_ms).await {
        Ok(o) => o,
        Err(AppError::Store(StoreError::Busy { retry_after_s })) => {
            return Err(AppError::Store(StoreError::Busy {
                retry_after_s: retry_after_s.max(come_back()),
            }));
        }
        Err(e) => return Err(e),
    };
    state.ingest_pacer.stored(body.len() as u64);
    state.metrics.stored(
        &plan.site,
        &outcome.added,
        outcome.ack.accepted,
        outcome.ack.duplicates,
        watch.elapsed_seconds(),
    );
    if !state.metrics.returning().is_empty() {
        let state = state.clone();
        tokio::spawn(async move {
            if let Err(e) = crate::metrics::reseed_returning(&state).await {
                tracing::warn!(error = %e, "cannot read the stored totals of projects back after an hour without energy; their counters wait for the next try");
            }
        });
    }
    tracing::debug!(
        agent = %push.agent.agent_id,
        accepted = outcome.ack.accepted,
        duplicates = outcome.ack.duplicates,
        "push stored"
    );
    Ok(outcome.ack)
}

/// Stores a push, each batch with the plan in force at its start (the configuration
/// history: a change applies from an instant on the hour, and batches do not cross hours
/// when the batch interval divides an hour); a push across a change is stored as one
/// set per plan (each batch is stored once by its name whatever the split).
async fn store_by_plan(
    state: &AppState,
    push: &Push,
    now_ms: u64,
) -> Result<crate::store::IngestOutcome, AppError> {
    let plan_of = |b: &empreinte_shared::wire::Batch| {
        let start_s = i64::try_from(b.start_unix_ms / 1000).unwrap_or(i64::MAX);
        state.planner.host_at(&push.agent.agent_id, start_s)
    };
    let first = push
        .batches
        .first()
        .map(plan_of)
        .unwrap_or_else(|| state.planner.host(&push.agent.agent_id));
    let mut outcome: Option<crate::store::IngestOutcome> = None;
    let mut rest: &[empreinte_shared::wire::Batch] = &push.batches;
    loop {
        let plan = rest.first().map(plan_of).unwrap_or_else(|| first.clone());
        let n = rest
            .iter()
            .position(|b| !std::sync::Arc::ptr_eq(&plan_of(b), &plan))
            .unwrap_or(rest.len());
        let (these, later) = rest.split_at(n);
        let set = IngestSet {
            agent: &push.agent,
            spool: &push.spool,
            plan: &plan,
            now_ms,
            batches: these
                .iter()
                .map(|b| (b, batch_deltas(b, plan.embodied.as_ref())))
                .collect(),
        };
        let o = state.store.ingest(&set).await?;
        outcome = Some(match outcome {
            None => o,
            Some(mut acc) => {
                acc.ack.accepted += o.ack.accepted;
                acc.ack.duplicates += o.ack.duplicates;
                acc.added.extend(o.added);
                acc
            }
        });
        rest = later;
        if rest.is_empty() {
            break;
        }
    }
    outcome.ok_or_else(|| AppError::Malformed("a push without batches".into()))
}
