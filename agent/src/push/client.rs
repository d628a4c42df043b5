//! Sends the spool's unacknowledged batches to the collector and moves the cursor past
//! what it acknowledged.
//!
//! One push is one `POST {collector}/api/v1/ingest` of up to `max_batches_per_push`
//! batches, oldest first. 200 with a [`PushAck`]: the cursor moves past exactly those
//! batches. No answer, 5xx or 429: everything stays, and the next try waits longer
//! (1 s doubling to 2 min, with jitter). Another 4xx: the collector refused the push
//! (a bad token, a batch it finds invalid): logged at error level with its message,
//! counted, and kept for an operator; tries go on every 2 min.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use empreinte_shared::wire::{AgentInfo, INGEST_PATH, Push, PushAck, WIRE_VERSION};

use super::Pipeline;
use crate::clock;

/// The first wait after a failed push, and the longest.
pub const MIN_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(120);

/// An HTTP client for one collector.
pub struct Client {
    agent: ureq::Agent,
    url: String,
    token: Option<String>,
    info: AgentInfo,
    max_batches: usize,
}

/// How one push went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing was waiting.
    Idle,
    /// Stored: `sent` batches, of which the collector had `ack.duplicates` already.
    Stored { sent: u64, ack: PushAck },
    /// No answer, 5xx or 429: try again later.
    Failed { sent: u64, error: String },
    /// Refused (another 4xx): the batches wait for an operator.
    Refused {
        sent: u64,
        status: u16,
        message: String,
    },
}

impl Client {
    /// A client pushing to `collector` (a base URL) as `info.agent_id`, with `token` as
    /// the bearer token when there is one.
    pub fn new(
        collector: &str,
        token: Option<String>,
        info: AgentInfo,
        timeout: Duration,
        max_batches: usize,
    ) -> Client {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .build()
            .new_agent();
        Client {
            agent,
            url: format!("{}{INGEST_PATH}", collector.trim_end_matches('/')),
            token,
            info,
            max_batches: max_batches.max(1),
        }
    }

    /// The same client, trusting what `tls` trusts (see [`super::tls::client_config`]).
    pub fn with_tls(mut self, tls: ureq::tls::TlsConfig) -> Client {
        self.agent = ureq::Agent::config_builder()
            .timeout_global(self.agent.config().timeouts().global)
            .http_status_as_error(false)
            .tls_config(tls)
            .build()
            .new_agent();
        self
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// One push of the oldest unacknowledged batches (blocking: call it from
    /// `spawn_blocking`). The pipeline's lock is not held while the request is in
    /// flight.
    pub fn push_once(&self, pipeline: &Mutex<Pipeline>) -> Outcome {
        let read = {
            let p = pipeline.lock().unwrap_or_else(|e| e.into_inner());
            p.spool()
                .read_pending(self.max_batches)
                .map(|pending| (pending, p.spool().status(), p.spool().cursor()))
        };
        let (pending, spool, cursor) = match read {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the push spool");
                return Outcome::Failed {
                    sent: 0,
                    error: e.to_string(),
                };
            }
        };
        if pending.batches.is_empty() {
            if pending.end != cursor {
                // Only unreadable lines: step over them.
                let mut p = pipeline.lock().unwrap_or_else(|e| e.into_inner());
                let _ = p.spool_mut().ack(pending.end);
                p.publish();
            }
            return Outcome::Idle;
        }
        let sent = pending.batches.len() as u64;
        let push = Push {
            version: WIRE_VERSION,
            agent: self.info.clone(),
            spool,
            batches: pending.batches,
        };
        let outcome = self.send(&push, sent);
        let mut p = pipeline.lock().unwrap_or_else(|e| e.into_inner());
        {
            let mut m = p.metrics.lock();
            match &outcome {
                Outcome::Idle => {}
                Outcome::Stored { ack, .. } => {
                    m.accepted_total += ack.accepted;
                    m.duplicate_total += ack.duplicates;
                    m.last_success_unix_ms = Some(clock::unix_ms());
                }
                Outcome::Failed { .. } => m.failed_total += sent,
                Outcome::Refused { .. } => m.refused_total += sent,
            }
        }
        if matches!(outcome, Outcome::Stored { .. }) {
            if let Err(e) = p.spool_mut().ack(pending.end) {
                tracing::error!(error = %e, "cannot record the collector's acknowledgement; the batches will be sent again (the collector ignores them)");
            }
            p.publish();
        }
        outcome
    }

    fn send(&self, push: &Push, sent: u64) -> Outcome {
        let body = match serde_json::to_vec(push) {
            Ok(b) => b,
            Err(e) => {
                return Outcome::Failed {
                    sent,
                    error: format!("cannot encode the push: {e}"),
                };
            }
        };
        let mut req = self
            .agent
            .post(&self.url)
            .header("Content-Type", "application/json");
        if let Some(t) = &self.token {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        let mut response = match req.send(&body[..]) {
            Ok(r) => r,
            Err(e) => {
                return Outcome::Failed {
                    sent,
                    error: super::tls::explain(&e, "[push] ca_file or --collector-ca FILE"),
                };
            }
        };
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(1024 * 1024)
            .read_to_string()
            .unwrap_or_default();
        match status {
            200..=299 => match serde_json::from_str::<PushAck>(&text) {
                Ok(ack) => Outcome::Stored { sent, ack },
                Err(e) => Outcome::Failed {
                    sent,
                    error: format!(
                        "status {status} but not an acknowledgement ({e}): {}",
                        snippet(&text)
                    ),
                },
            },
            429 | 500..=599 => Outcome::Failed {
                sent,
                error: format!("status {status}: {}", snippet(&text)),
            },
            _ => Outcome::Refused {
                sent,
                status,
                message: snippet(&text),
            },
        }
    }
}

fn snippet(text: &str) -> String {
    let t = text.trim();
    match t.char_indices().nth(500) {
        Some((i, _)) => format!("{}…", &t[..i]),
        None => t.to_string(),
    }
}

/// Pushes every `interval`, right after a batch is sealed, and after failures with an
/// exponential backoff, until the task is aborted.
pub async fn push_forever(
    pipeline: Arc<Mutex<Pipeline>>,
    client: Arc<Client>,
    interval: Duration,
    sealed: Arc<tokio::sync::Notify>,
) {
    let mut backoff = MIN_BACKOFF;
    let mut wait = Duration::ZERO;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = sealed.notified(), if wait == interval => {}
        }
        let (p, c) = (pipeline.clone(), client.clone());
        let outcome = match tokio::task::spawn_blocking(move || c.push_once(&p)).await {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(error = %e, "push task panicked; trying again later");
                Outcome::Failed {
                    sent: 0,
                    error: e.to_string(),
                }
            }
        };
        wait = match outcome {
            Outcome::Idle => interval,
            Outcome::Stored { sent, ack } => {
                tracing::debug!(
                    batches = sent,
                    accepted = ack.accepted,
                    duplicates = ack.duplicates,
                    "pushed"
                );
                backoff = MIN_BACKOFF;
                // More may be waiting (a backlog after an outage): go on at once.
                Duration::ZERO
            }
            Outcome::Failed { sent, error } => {
                let w = jitter(backoff);
                tracing::warn!(collector = %client.url(), batches = sent, error = %error, retry_in = ?w, "push failed; the batches stay in the spool");
                backoff = (backoff * 2).min(MAX_BACKOFF);
                w
            }
            Outcome::Refused {
                sent,
                status,
                message,
            } => {
                tracing::error!(collector = %client.url(), batches = sent, status, message = %message, "the collector refused the push; the batches stay in the spool until this is fixed");
                backoff = MAX_BACKOFF;
                jitter(MAX_BACKOFF)
            }
        };
    }
}

/// Between half and all of `d`, at random, so that agents do not retry in step.
fn jitter(d: Duration) -> Duration {
    let r = getrandom::u32().unwrap_or(u32::MAX / 2);
    d / 2 + d.mul_f64(f64::from(r) / f64::from(u32::MAX) / 2.0)
}

/// On shutdown: pushes what is waiting until the spool is empty, a push fails, or
/// `deadline` passes. Returns the last outcome.
pub async fn final_push(
    pipeline: Arc<Mutex<Pipeline>>,
    client: Arc<Client>,
    deadline: Duration,
) -> Option<Outcome> {
    let work = async move {
        loop {
            let (p, c) = (pipeline.clone(), client.clone());
            let outcome = tokio::task::spawn_blocking(move || c.push_once(&p))
                .await
                .ok()?;
            if !matches!(outcome, Outcome::Stored { .. }) {
                return Some(outcome);
            }
        }
    };
    tokio::time::timeout(deadline, work).await.ok().flatten()
}
