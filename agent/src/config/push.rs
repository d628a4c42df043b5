//! `[push]`: pushing per-project energy to a collector (issue 4). Off unless `collector`
//! is set.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigProblem;

/// Default directory of the push spool (systemd's `StateDirectory=empreinte`).
pub const DEFAULT_SPOOL_DIR: &str = "/var/lib/empreinte/spool";
/// Shortest and longest batch interval accepted.
pub const MIN_BATCH_INTERVAL: Duration = Duration::from_secs(1);
pub const MAX_BATCH_INTERVAL: Duration = Duration::from_secs(3600);
/// The smallest spool accepted.
pub const MIN_SPOOL_BYTES: u64 = 64 * 1024;
/// The shortest spool age limit accepted.
pub const MIN_SPOOL_AGE: Duration = Duration::from_secs(3600);
/// The most batches a collector accepts in one push (the wire's default limit).
pub const MAX_BATCHES_PER_PUSH: usize = 1_000;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PushConfig {
    /// The collector's base URL (`http://` or `https://`); unset: no push, no spool.
    pub collector: Option<String>,
    /// A file holding this agent's token; else the `EMPREINTE_AGENT_TOKEN` variable.
    pub token_file: Option<PathBuf>,
    /// The host's name in the footprint; by default the host name.
    pub agent_id: Option<String>,
    /// Batches are sealed at multiples of this interval of Unix time.
    #[serde(with = "humantime_serde")]
    pub batch_interval: Duration,
    /// Where sealed, unacknowledged batches wait.
    pub spool_dir: PathBuf,
    /// The spool's size limit: past it the oldest batches are dropped (and counted).
    pub spool_max_bytes: u64,
    /// The spool's age limit: older batches are dropped (and counted).
    #[serde(with = "humantime_serde")]
    pub spool_max_age: Duration,
    /// Timeout of one push request.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// The most batches sent in one request.
    pub max_batches_per_push: usize,
    /// A CA certificate file (PEM) trusted for an `https://` collector, in addition to
    /// the system's store (an internal CA, a self-signed collector).
    pub ca_file: Option<PathBuf>,
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig {
            collector: None,
            token_file: None,
            agent_id: None,
            batch_interval: Duration::from_secs(15),
            spool_dir: PathBuf::from(DEFAULT_SPOOL_DIR),
            spool_max_bytes: 256 * 1024 * 1024,
            spool_max_age: Duration::from_secs(8 * 86_400),
            timeout: Duration::from_secs(10),
            max_batches_per_push: 500,
            ca_file: None,
        }
    }
}

impl PushConfig {
    pub(super) fn check(&self, problems: &mut Vec<ConfigProblem>) {
        let mut bad = |key: &str, message: String| {
            problems.push(ConfigProblem::new(&format!("push.{key}"), message))
        };
        if let Some(url) = &self.collector {
            if let Err(m) = check_collector_url(url) {
                bad("collector", m);
            }
        }
        if let Some(id) = &self.agent_id {
            if let Err(m) = empreinte_shared::wire::check_name(id) {
                bad("agent_id", format!("{id:?} {m}"));
            }
        }
        let fmt = humantime::format_duration;
        if self.batch_interval < MIN_BATCH_INTERVAL || self.batch_interval > MAX_BATCH_INTERVAL {
            bad(
                "batch_interval",
                format!(
                    "{} is out of range: allowed from {} to {}",
                    fmt(self.batch_interval),
                    fmt(MIN_BATCH_INTERVAL),
                    fmt(MAX_BATCH_INTERVAL)
                ),
            );
        }
        if self.spool_dir.as_os_str().is_empty() {
            bad(
                "spool_dir",
                format!("empty path: give the spool directory (default {DEFAULT_SPOOL_DIR})"),
            );
        }
        if self.spool_max_bytes < MIN_SPOOL_BYTES {
            bad(
                "spool_max_bytes",
                format!(
                    "{} bytes is too small: at least {MIN_SPOOL_BYTES} bytes",
                    self.spool_max_bytes
                ),
            );
        }
        if self.spool_max_age < MIN_SPOOL_AGE {
            bad(
                "spool_max_age",
                format!(
                    "{} is too short: at least {} (the default, 8 days, covers a long weekend of collector outage)",
                    fmt(self.spool_max_age),
                    fmt(MIN_SPOOL_AGE)
                ),
            );
        }
        if self.timeout.is_zero() || self.timeout > Duration::from_secs(300) {
            bad(
                "timeout",
                format!(
                    "{} is out of range: allowed above 0 and up to 5m",
                    fmt(self.timeout)
                ),
            );
        }
        if !(1..=MAX_BATCHES_PER_PUSH).contains(&self.max_batches_per_push) {
            bad(
                "max_batches_per_push",
                format!(
                    "{} is out of range: allowed from 1 to {MAX_BATCHES_PER_PUSH} (the collector's limit)",
                    self.max_batches_per_push
                ),
            );
        }
    }
}

/// Checks a collector (or API server) URL: `http://` or `https://`, then a host.
pub fn check_collector_url(text: &str) -> Result<(), String> {
    let parsed = url::Url::parse(text).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("{text:?} is not an http:// or https:// URL"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("{text:?} has no host"));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(format!(
            "{text:?}: give the base URL, without query or fragment"
        ));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(format!(
            "{text:?}: no credentials in the URL (the token goes in token_file)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collector_urls() {
        assert_eq!(check_collector_url("http://127.0.0.1:9811"), Ok(()));
        assert_eq!(check_collector_url("https://c.example/prefix/"), Ok(()));
        assert!(check_collector_url("c.example").is_err());
        assert!(check_collector_url("https://").is_err());
        assert!(check_collector_url("https://c.example/?a=b").is_err());
        assert!(check_collector_url("https://c.example/#top").is_err());
        assert!(check_collector_url("ftp://c.example/").is_err());
        assert!(check_collector_url("https://user:secret@c.example/").is_err());
        assert!(check_collector_url("https://c example/").is_err());
    }
}
