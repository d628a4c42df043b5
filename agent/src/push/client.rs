//! Sends the spool's unacknowledged batches to the collector and moves the cursor past
//! what it acknowledged.
//!
//! One push is one `POST {collector}/api/v1/ingest` of up to `max_batches_per_push`
//! batches, oldest first. Delivery never blocks on one batch:
//! - 200 with a [`PushAck`]: the cursor moves past exactly those batches, and the next
//!   push may be twice as large again (up to `max_batches_per_push`).
//! - No answer, 5xx or 429: everything stays, and the next try waits longer (1 s
//!   doubling to 2 min, with jitter). A 429 or 503 with `Retry-After: N` (seconds) is
//!   tried again after N to 1.25 × N seconds (at most 2 min), without doubling: the
//!   collector spreads the agents it turns away over the time it needs to serve them.
//! - 401 or 403: the token is wrong; everything stays, logged at error level, tried
//!   again every 2 min.
//! - 413 or another 4xx for a push of several batches: the push is halved and sent again
//!   at once, so that bisection finds the batch refused on its own.
//! - Another 4xx (413 included) for one batch: it is set aside in the spool's
//!   `rejected/` with the collector's message, counted with its energy, and delivery
//!   goes on with the next batches.

use std::sync::atomic::{AtomicUsize, Ordering};
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
    /// Batches in the next push: halved by a refusal of several, doubled back by success.
    push_size: AtomicUsize,
}

/// How one push went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing was waiting.
    Idle,
    /// Stored: `sent` batches, of which the collector had `ack.duplicates` already.
    Stored { sent: u64, ack: PushAck },
    /// No answer, 5xx or 429: try again later (after `retry_after`, when the collector
    /// said when).
    Failed {
        sent: u64,
        error: String,
        retry_after: Option<Duration>,
    },
    /// 401 or 403: the token is wrong; the batches wait until it is fixed.
    Refused {
        sent: u64,
        status: u16,
        message: String,
    },
    /// A push of several was refused (413 or another 4xx): the next push is half as
    /// large, until the batch refused on its own is found.
    Halved {
        sent: u64,
        status: u16,
        message: String,
    },
    /// One batch refused on its own, set aside in `rejected/`; delivery goes on.
    SetAside {
        run_id: String,
        seq: u64,
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
            push_size: AtomicUsize::new(max_batches.max(1)),
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

    /// How many batches the next push carries at most.
    pub fn push_size(&self) -> usize {
        self.push_size.load(Ordering::Relaxed)
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// One push of the oldest unacknowledged batches (blocking: call it from
    /// `spawn_blocking`). The pipeline's lock is not held while the request is in
    /// flight.
    pub fn push_once(&self, pipeline: &Mutex<Pipeline>) -> Outcome {
        let size = self.push_size();
        let read = {
            let p = pipeline.lock().unwrap_or_else(|e| e.into_inner());
            p.spool()
                .read_pending(size)
                .map(|pending| (pending, p.spool().status(), p.spool().cursor()))
        };
        let (pending, spool, cursor) = match read {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the push spool");
                return Outcome::Failed {
                    sent: 0,
                    error: e.to_string(),
                    retry_after: None,
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
        let mut outcome = self.send(&push, sent);
        let mut p = pipeline.lock().unwrap_or_else(|e| e.into_inner());
        if let Outcome::SetAside {
            status, message, ..
        } = &outcome
        {
            // Set aside only if the cursor is still where the batch was read (the limits
            // may have dropped it meanwhile: it is not counted twice).
            let batch = &push.batches[0];
            let result = if p.spool().cursor() == cursor {
                p.spool_mut()
                    .set_aside(batch, Some(*status), message, Some(pending.end))
            } else {
                Ok(())
            };
            if let Err(e) = result {
                tracing::error!(error = %e, "cannot set aside the refused batch; it stays in the spool and is sent again");
                outcome = Outcome::Failed {
                    sent,
                    error: format!("refused ({status}: {message}), and {e}"),
                    retry_after: None,
                };
            }
        }
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
                Outcome::Halved { .. } => m.halved_total += sent,
                Outcome::SetAside { .. } => m.set_aside_total += sent,
            }
        }
        match &outcome {
            Outcome::Stored { .. } => {
                if let Err(e) = p.spool_mut().ack(pending.end) {
                    tracing::error!(error = %e, "cannot record the collector's acknowledgement; the batches will be sent again (the collector ignores them)");
                }
                let grown = size.saturating_mul(2).min(self.max_batches);
                self.push_size.store(grown, Ordering::Relaxed);
            }
            Outcome::Halved { .. } => {
                let half = usize::try_from(sent / 2).unwrap_or(1).max(1);
                self.push_size.store(half, Ordering::Relaxed);
            }
            _ => {}
        }
        p.publish();
        outcome
    }

    fn send(&self, push: &Push, sent: u64) -> Outcome {
        let body = match serde_json::to_vec(push) {
            Ok(b) => b,
            Err(e) => {
                return Outcome::Failed {
                    sent,
                    error: format!("cannot encode the push: {e}"),
                    retry_after: None,
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
                    retry_after: None,
                };
            }
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
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
                    retry_after: None,
                },
            },
            429 | 503 => Outcome::Failed {
                sent,
                error: format!("status {status}: {}", snippet(&text)),
                retry_after,
            },
            500..=599 => Outcome::Failed {
                sent,
                error: format!("status {status}: {}", snippet(&text)),
                retry_after: None,
            },
            401 | 403 => Outcome::Refused {
                sent,
                status,
                message: snippet(&text),
            },
            400..=499 if sent > 1 => Outcome::Halved {
                sent,
                status,
                message: snippet(&text),
            },
            400..=499 => {
                let (run_id, seq) = push
                    .batches
                    .first()
                    .map(|b| (b.run_id.clone(), b.seq))
                    .unwrap_or_default();
                Outcome::SetAside {
                    run_id,
                    seq,
                    status,
                    message: snippet(&text),
                }
            }
            _ => Outcome::Failed {
                sent,
                error: format!("unexpected status {status}: {}", snippet(&text)),
                retry_after: None,
            },
        }
    }
}

/// `Retry-After` in seconds (the HTTP-date form is not used by the collector, and is
/// treated as absent: the agent's own backoff applies).
fn parse_retry_after(text: &str) -> Option<Duration> {
    text.trim().parse::<u64>().ok().map(Duration::from_secs)
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
                    retry_after: None,
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
            Outcome::Failed {
                sent,
                error,
                retry_after,
            } => {
                let w = failed_wait(retry_after, &mut backoff);
                tracing::warn!(collector = %client.url(), batches = sent, error = %error, retry_in = ?w, "push failed; the batches stay in the spool");
                w
            }
            Outcome::Refused {
                sent,
                status,
                message,
            } => {
                tracing::error!(collector = %client.url(), batches = sent, status, message = %message, "the collector refused the agent's token (push.token_file or EMPREINTE_AGENT_TOKEN is wrong, or the token was revoked); the batches stay in the spool until it is fixed");
                backoff = MAX_BACKOFF;
                jitter(MAX_BACKOFF)
            }
            Outcome::Halved {
                sent,
                status,
                message,
            } => {
                tracing::warn!(collector = %client.url(), batches = sent, status, message = %message, next_push = client.push_size(), "the collector refused a push of several batches; sending smaller pushes to find the batch it refuses");
                Duration::ZERO
            }
            // Logged when set aside; the next batches go on at once.
            Outcome::SetAside { .. } => Duration::ZERO,
        };
    }
}

/// The wait after a failed push. With the collector's `Retry-After`: that long, plus up to
/// a quarter more at random, at most [`MAX_BACKOFF`], and `backoff` unchanged (the
/// collector is up and has said when it can serve). Without: `backoff` with jitter, then
/// doubled up to [`MAX_BACKOFF`].
pub fn failed_wait(retry_after: Option<Duration>, backoff: &mut Duration) -> Duration {
    match retry_after {
        Some(r) => {
            let r = r.clamp(MIN_BACKOFF, MAX_BACKOFF);
            let spread = f64::from(getrandom::u32().unwrap_or(0)) / f64::from(u32::MAX);
            (r + r.mul_f64(spread / 4.0)).min(MAX_BACKOFF)
        }
        None => {
            let w = jitter(*backoff);
            *backoff = (*backoff * 2).min(MAX_BACKOFF);
            w
        }
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
            if !matches!(
                outcome,
                Outcome::Stored { .. } | Outcome::Halved { .. } | Outcome::SetAside { .. }
            ) {
                return Some(outcome);
            }
        }
    };
    tokio::time::timeout(deadline, work).await.ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_after_is_honoured_without_doubling_and_bounded() {
        let mut backoff = Duration::from_secs(8);
        for _ in 0..100 {
            let w = failed_wait(Some(Duration::from_secs(7)), &mut backoff);
            assert!(
                w >= Duration::from_secs(7) && w <= Duration::from_millis(8_750),
                "{w:?}"
            );
        }
        assert_eq!(
            backoff,
            Duration::from_secs(8),
            "no doubling after Retry-After"
        );
        // A collector asking for a day is waited for two minutes at most; zero is 1 s.
        assert_eq!(
            failed_wait(Some(Duration::from_secs(86_400)), &mut backoff),
            MAX_BACKOFF
        );
        assert!(failed_wait(Some(Duration::ZERO), &mut backoff) >= MIN_BACKOFF);
    }

    #[test]
    fn without_retry_after_the_backoff_doubles_with_jitter_up_to_two_minutes() {
        let mut backoff = MIN_BACKOFF;
        let mut waits = Vec::new();
        for _ in 0..10 {
            waits.push(failed_wait(None, &mut backoff));
        }
        assert!(waits[0] >= Duration::from_millis(500) && waits[0] <= MIN_BACKOFF);
        assert!(waits[3] >= Duration::from_secs(4) && waits[3] <= Duration::from_secs(8));
        assert_eq!(backoff, MAX_BACKOFF);
        assert!(waits[9] >= MAX_BACKOFF / 2 && waits[9] <= MAX_BACKOFF);
    }

    #[test]
    fn retry_after_is_read_in_seconds_only() {
        assert_eq!(parse_retry_after(" 12 "), Some(Duration::from_secs(12)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-3"), None);
    }
}
