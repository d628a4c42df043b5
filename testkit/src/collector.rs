//! A fake Empreinte collector: a loopback HTTP server that takes agents' pushes
//! (`POST /api/v1/ingest`), checks them against the wire format, stores each batch once
//! by its name `(agent_id, run_id, seq)` and answers with a `PushAck`, as the real one
//! does. It can be made to fail for a while (`503`), or to store a push and then fail
//! (an acknowledgement lost on the way back), to exercise the agent's spool.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use empreinte_shared::wire::{AgentInfo, Batch, INGEST_PATH, Limits, Push, PushAck};
use empreinte_shared::{Component, SourceKind};

/// The agent a test pushes as: id and hostname `name`, version `test`.
pub fn test_agent(name: &str) -> AgentInfo {
    AgentInfo {
        agent_id: name.into(),
        hostname: name.into(),
        agent_version: "test".into(),
    }
}

/// How the fake answers pushes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Store, then answer 200 with the acknowledgement.
    Healthy,
    /// Store nothing; answer 503.
    Down,
    /// Store, then answer 503: the agent never learns that it was stored.
    LoseAcks,
    /// Store nothing; answer 401 with a message.
    Refuse,
    /// Store nothing; answer 503 with `Retry-After` of this many seconds (a collector
    /// at its queue bound).
    Busy(u64),
}

#[derive(Default)]
struct Inner {
    mode: Option<Mode>,
    /// Limits other than the default (a stricter collector).
    limits: Option<Limits>,
    /// Bodies larger than this are refused with 413 (the real collector's body limit).
    max_body: Option<usize>,
    /// The receiver's clock; by default the newest batch's end.
    now_unix_ms: Option<u64>,
    /// Answers by status, for the statistics of a test.
    statuses: BTreeMap<u16, u64>,
    /// Stored energy per (project, component, source).
    energy: BTreeMap<(String, Component, SourceKind), u64>,
    /// Keep only each batch's name (not its records and counters), for long runs whose
    /// memory is measured.
    names_only: bool,
    stored: BTreeMap<(String, String, u64), Batch>,
    requests: u64,
    duplicates: u64,
    authorizations: Vec<Option<String>>,
    problems: Vec<String>,
}

/// The fake collector; it stops with the test process.
pub struct FakeCollector {
    /// The base URL to give the agent (`--collector`).
    pub url: String,
    inner: Arc<Mutex<Inner>>,
}

impl FakeCollector {
    pub fn start() -> FakeCollector {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let inner = Arc::new(Mutex::new(Inner::default()));
        let shared = inner.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let shared = shared.clone();
                std::thread::spawn(move || serve(stream, &shared));
            }
        });
        FakeCollector { url, inner }
    }

    pub fn set_mode(&self, mode: Mode) {
        self.inner.lock().unwrap().mode = Some(mode);
    }

    /// Checks pushes against `limits` instead of the defaults (a collector configured
    /// more strictly than the agent knows).
    pub fn set_limits(&self, limits: Limits) {
        self.inner.lock().unwrap().limits = Some(limits);
    }

    /// Refuses bodies over `bytes` with 413, as the real collector's body limit does.
    pub fn set_max_body(&self, bytes: usize) {
        self.inner.lock().unwrap().max_body = Some(bytes);
    }

    /// Checks batch times against this clock (Unix ms) instead of the newest batch's end.
    pub fn set_now(&self, now_unix_ms: u64) {
        self.inner.lock().unwrap().now_unix_ms = Some(now_unix_ms);
    }

    /// Keeps only the names of the batches stored (their energy is still summed), so
    /// that a long run measures the agent's memory, not this fake's.
    pub fn keep_names_only(&self) {
        self.inner.lock().unwrap().names_only = true;
    }

    /// How many answers of each HTTP status were given.
    pub fn statuses(&self) -> BTreeMap<u16, u64> {
        self.inner.lock().unwrap().statuses.clone()
    }

    /// Every batch stored, by name `(agent_id, run_id, seq)`.
    pub fn stored(&self) -> BTreeMap<(String, String, u64), Batch> {
        self.inner.lock().unwrap().stored.clone()
    }

    /// Energy stored per (project, component, source), in µJ.
    pub fn energy_uj(&self) -> BTreeMap<(String, Component, SourceKind), u64> {
        self.inner.lock().unwrap().energy.clone()
    }

    /// All energy stored, in µJ.
    pub fn total_uj(&self) -> u64 {
        self.energy_uj().values().sum()
    }

    /// Pushes received (any answer).
    pub fn requests(&self) -> u64 {
        self.inner.lock().unwrap().requests
    }

    /// Batches received again after they were stored, and ignored.
    pub fn duplicates(&self) -> u64 {
        self.inner.lock().unwrap().duplicates
    }

    /// The `Authorization` header of every push.
    pub fn authorizations(&self) -> Vec<Option<String>> {
        self.inner.lock().unwrap().authorizations.clone()
    }

    /// Wire problems found in pushes (refused with 400); a correct agent causes none.
    pub fn problems(&self) -> Vec<String> {
        self.inner.lock().unwrap().problems.clone()
    }
}

fn serve(stream: TcpStream, shared: &Mutex<Inner>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
        return;
    }
    let mut length = None;
    let mut authorization = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            let value = value.trim().to_string();
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.parse::<usize>().ok(),
                "authorization" => authorization = Some(value),
                _ => {}
            }
        }
    }
    let max_body = shared.lock().unwrap().max_body;
    if let (Some(max), Some(len)) = (max_body, length) {
        if len > max {
            // Refused by its length; the body is read and thrown away so that the client
            // gets the answer rather than a reset connection.
            let _ = std::io::copy(&mut (&mut reader).take(len as u64), &mut std::io::sink());
            let answer =
                format!("{{\"error\":\"the push is {len} bytes; at most {max} are accepted\"}}");
            shared.lock().unwrap().requests += 1;
            *shared.lock().unwrap().statuses.entry(413).or_insert(0) += 1;
            let _ = write!(
                &stream,
                "HTTP/1.1 413 X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                answer.len()
            );
            return;
        }
    }
    let mut body = vec![0u8; length.unwrap_or(0)];
    let _ = reader.read_exact(&mut body);
    let (status, answer) = handle(&request_line, length, authorization, &body, shared);
    let retry_after = match shared.lock().unwrap().mode {
        Some(Mode::Busy(s)) if status == 503 => format!("Retry-After: {s}\r\n"),
        _ => String::new(),
    };
    *shared.lock().unwrap().statuses.entry(status).or_insert(0) += 1;
    let _ = write!(
        &stream,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{retry_after}Connection: close\r\n\r\n{answer}",
        answer.len()
    );
}

fn handle(
    request_line: &str,
    length: Option<usize>,
    authorization: Option<String>,
    body: &[u8],
    shared: &Mutex<Inner>,
) -> (u16, String) {
    if request_line.split_whitespace().take(2).collect::<Vec<_>>() != ["POST", INGEST_PATH] {
        return (
            404,
            format!("{{\"error\":\"not found: {}\"}}", request_line.trim()),
        );
    }
    if length.is_none() {
        return (411, "{\"error\":\"Content-Length required\"}".into());
    }
    let mut inner = shared.lock().unwrap();
    inner.requests += 1;
    inner.authorizations.push(authorization);
    let mode = inner.mode.unwrap_or(Mode::Healthy);
    match mode {
        Mode::Down => return (503, "{\"error\":\"down for a test\"}".into()),
        Mode::Refuse => return (401, "{\"error\":\"unknown agent token\"}".into()),
        Mode::Busy(s) => {
            return (
                503,
                format!("{{\"error\":\"busy for a test; try again in {s} s\"}}"),
            );
        }
        Mode::Healthy | Mode::LoseAcks => {}
    }
    let push: Push = match serde_json::from_slice(body) {
        Ok(p) => p,
        Err(e) => {
            inner.problems.push(e.to_string());
            return (400, format!("{{\"error\":{:?}}}", e.to_string()));
        }
    };
    // The receiver's clock is, unless a test sets one, the newest batch's end: this
    // checks the shape, spans, names and power, not the agent's clock.
    let now = inner.now_unix_ms.unwrap_or_else(|| {
        push.batches
            .iter()
            .map(|b| b.end_unix_ms)
            .max()
            .unwrap_or(0)
    });
    let limits = inner.limits.clone().unwrap_or_default();
    let problems = push.problems(&limits, now);
    if !problems.is_empty() {
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        inner.problems.extend(text.iter().cloned());
        // 422, as the real collector answers values it refuses.
        return (422, format!("{{\"error\":{:?}}}", text.join("; ")));
    }
    let mut ack = PushAck {
        accepted: 0,
        duplicates: 0,
    };
    for b in push.batches {
        let name = (push.agent.agent_id.clone(), b.run_id.clone(), b.seq);
        if let Some(before) = inner.stored.get(&name) {
            if !inner.names_only && before != &b {
                let text = format!("{name:?} was sent again with a different content");
                inner.problems.push(text);
            }
            ack.duplicates += 1;
            inner.duplicates += 1;
        } else {
            for r in &b.records {
                *inner
                    .energy
                    .entry((r.project.clone(), r.component, r.source))
                    .or_insert(0) += r.energy_uj;
            }
            let b = if inner.names_only {
                Batch {
                    records: vec![],
                    counters: vec![],
                    ..b
                }
            } else {
                b
            };
            inner.stored.insert(name, b);
            ack.accepted += 1;
        }
    }
    if mode == Mode::LoseAcks {
        return (503, "{\"error\":\"stored, but the answer is lost\"}".into());
    }
    (200, serde_json::to_string(&ack).unwrap())
}
