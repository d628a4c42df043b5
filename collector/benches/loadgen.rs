//! The collector's load generator: a fleet of N agents pushing to a real collector over
//! loopback, as agents do (one keep-alive connection each, a push timeout, backoff on
//! 429/5xx and timeouts, the same batch names sent again after a failure).
//!
//! It starts the collector binary given by `--collector-bin` on a fresh data directory
//! (tokens are issued in it first), drives it, and prints batches per second, push
//! latency (p50, p99, max, measured from the time each push was *due*, so queueing in
//! an overloaded collector is counted) and the collector's CPU time and memory (from
//! `/proc/PID`). Then it checks through the read API that every batch was stored once.
//!
//! ```text
//! cargo bench -p empreinte-collector --bench loadgen -- \
//!     --collector-bin target/release/empreinte --agents 1000 --batches-per-push 1 \
//!     --rates 1000,2000,5000 --duration 10
//! cargo bench -p empreinte-collector --bench loadgen -- \
//!     --collector-bin target/release/empreinte --agents 1000 --backlog 500
//! cargo bench -p empreinte-collector --bench loadgen -- \
//!     --collector-bin target/release/empreinte --agents 200 --rates 500,1000 \
//!     --database-url postgres://…/empty_db --collectors 3
//! ```
//!
//! With `--database-url` the collectors (`--collectors N`, each with its own data
//! directory `c0`, `c1`… under the run's) share an empty PostgreSQL database, the agents
//! spread over them; without it, one collector on SQLite in `c0`.
//!
//! `--rates` runs open loop (each agent pushes on a fixed schedule whatever the answers
//! take), one step per rate, and stops at the first rate whose p99 is over `--p99-ms` or
//! that the collector cannot keep up with; `--backlog K` gives every agent K batches to
//! deliver at once (closed loop, `--batches-per-push` at a time, 500 like the agent).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use empreinte_collector::clock::now_unix_ms;
use empreinte_collector::store::sqlite::DB_FILE;
use sha2::Digest;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::Instant;

const BATCH_MS: u64 = 15_000;
const PROJECTS: usize = 20;
/// Energy of one record: 1.5 kJ over 15 s (100 W), so a batch is 4 kW for the host.
const RECORD_UJ: u64 = 1_500_000_000;

struct Options {
    collector_bin: PathBuf,
    agents: usize,
    batches_per_push: usize,
    rates: Vec<f64>,
    duration: Duration,
    backlog: usize,
    timeout: Duration,
    p99_ms: f64,
    keep: Option<PathBuf>,
    extra_args: Vec<String>,
    /// Fill a month (`YYYY-MM`, UTC hours from a day before to a day after) with one-hour
    /// batches: every agent, `projects_per_host` of `projects` projects, cpu and gpu.
    fill_month: Option<String>,
    projects: usize,
    projects_per_host: usize,
    /// Read paths timed after the load (with a read token), e.g.
    /// `/api/v1/footprint?month=2026-10&group_by=project`.
    probes: Vec<String>,
    /// PostgreSQL instead of SQLite (`--database-url`), shared by `collectors` collectors
    /// the agents are spread over (agent i pushes to collector i mod N).
    database_url: Option<String>,
    collectors: usize,
    /// The backlog run stops after this long, delivered or not (`--max-seconds`).
    max_seconds: Option<f64>,
}

fn parse_options() -> Options {
    let mut o = Options {
        collector_bin: PathBuf::from("target/release/empreinte"),
        agents: 100,
        batches_per_push: 1,
        rates: Vec::new(),
        duration: Duration::from_secs(10),
        backlog: 0,
        timeout: Duration::from_secs(10),
        p99_ms: 20.0,
        keep: None,
        extra_args: Vec::new(),
        fill_month: None,
        projects: 50,
        projects_per_host: 3,
        probes: Vec::new(),
        database_url: None,
        collectors: 1,
        max_seconds: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--bench" => {}
            "--collector-bin" => o.collector_bin = value().into(),
            "--agents" => o.agents = value().parse().expect("--agents N"),
            "--batches-per-push" => o.batches_per_push = value().parse().expect("a number"),
            "--rates" => {
                o.rates = value()
                    .split(',')
                    .map(|r| r.parse().expect("--rates R1,R2,… (batches/s)"))
                    .collect()
            }
            "--duration" => o.duration = Duration::from_secs_f64(value().parse().expect("s")),
            "--backlog" => o.backlog = value().parse().expect("--backlog K"),
            "--timeout" => o.timeout = Duration::from_secs_f64(value().parse().expect("s")),
            "--p99-ms" => o.p99_ms = value().parse().expect("ms"),
            "--keep" => o.keep = Some(value().into()),
            "--collector-arg" => o.extra_args.push(value()),
            "--fill-month" => o.fill_month = Some(value()),
            "--probe" => o.probes.push(value()),
            "--database-url" => o.database_url = Some(value()),
            "--collectors" => o.collectors = value().parse().expect("--collectors N"),
            "--max-seconds" => o.max_seconds = Some(value().parse().expect("--max-seconds S")),
            "--projects" => o.projects = value().parse().expect("a number"),
            "--projects-per-host" => o.projects_per_host = value().parse().expect("a number"),
            other => panic!(
                "unknown argument {other}: --collector-bin --agents --batches-per-push --rates --duration --backlog --timeout --p99-ms --keep --collector-arg --fill-month --projects --projects-per-host --probe --database-url --collectors --max-seconds"
            ),
        }
    }
    o
}

/// One simulated agent: its name, token and run.
struct Agent {
    id: String,
    token: String,
    run_id: String,
    /// Start of its first batch.
    t0_ms: u64,
    next_seq: u64,
}

/// Writes a push of `seqs` as the agent would (20 projects × cpu and gpu, with counters).
fn write_push(out: &mut String, a: &Agent, first_seq: u64, n: usize, waiting: usize) {
    out.clear();
    let _ = write!(
        out,
        r#"{{"version":1,"agent":{{"agent_id":"{id}","hostname":"{id}","agent_version":"loadgen"}},"spool":{{"batches":{waiting},"bytes":{bytes},"oldest_start_unix_ms":{oldest},"dropped_batches_total":0}},"batches":["#,
        id = a.id,
        bytes = waiting * 9000,
        oldest = a.t0_ms + (first_seq - 1) * BATCH_MS,
    );
    for k in 0..n as u64 {
        let seq = first_seq + k;
        let start = a.t0_ms + (seq - 1) * BATCH_MS;
        let end = start + BATCH_MS;
        if k > 0 {
            out.push(',');
        }
        let _ = write!(
            out,
            r#"{{"run_id":"{}","seq":{seq},"start_unix_ms":{start},"end_unix_ms":{end},"records":["#,
            a.run_id
        );
        for p in 0..PROJECTS {
            for (c, comp) in ["cpu", "gpu"].iter().enumerate() {
                if p + c > 0 {
                    out.push(',');
                }
                let _ = write!(
                    out,
                    r#"{{"project":"project-{p:02}","component":"{comp}","source":"{src}","start_unix_ms":{start},"end_unix_ms":{end},"energy_uj":{RECORD_UJ}}}"#,
                    src = if *comp == "cpu" { "rapl" } else { "nvml" },
                );
            }
        }
        out.push_str(r#"],"counters":["#);
        for p in 0..PROJECTS {
            for (c, comp) in ["cpu", "gpu"].iter().enumerate() {
                if p + c > 0 {
                    out.push(',');
                }
                let _ = write!(
                    out,
                    r#"{{"project":"project-{p:02}","component":"{comp}","source":"{src}","total_uj":{total}}}"#,
                    src = if *comp == "cpu" { "rapl" } else { "nvml" },
                    total = seq * RECORD_UJ,
                );
            }
        }
        out.push_str("]}");
    }
    out.push_str("]}");
}

/// One push of one-hour batches `first..first+n` (hour `h` of the fill starts at
/// `t0 + h h`), for the agent's projects.
fn write_fill_push(out: &mut String, a: &Agent, first: u64, n: usize, projects: &[usize]) {
    out.clear();
    let _ = write!(
        out,
        r#"{{"version":1,"agent":{{"agent_id":"{id}","hostname":"{id}","agent_version":"loadgen"}},"spool":{{"batches":{n},"bytes":0,"oldest_start_unix_ms":null,"dropped_batches_total":0}},"batches":["#,
        id = a.id,
    );
    for k in 0..n as u64 {
        let seq = first + k;
        let start = a.t0_ms + (seq - 1) * 3_600_000;
        let end = start + 3_600_000;
        if k > 0 {
            out.push(',');
        }
        let _ = write!(
            out,
            r#"{{"run_id":"{}","seq":{seq},"start_unix_ms":{start},"end_unix_ms":{end},"records":["#,
            a.run_id
        );
        let mut first_rec = true;
        for p in projects {
            for (comp, src) in [("cpu", "rapl"), ("gpu", "nvml")] {
                if !first_rec {
                    out.push(',');
                }
                first_rec = false;
                let _ = write!(
                    out,
                    r#"{{"project":"project-{p:02}","component":"{comp}","source":"{src}","start_unix_ms":{start},"end_unix_ms":{end},"energy_uj":{FILL_RECORD_UJ}}}"#,
                );
            }
        }
        out.push_str(r#"],"counters":[]}"#);
    }
    out.push_str("]}");
}

/// 100 W for an hour.
const FILL_RECORD_UJ: u64 = 360_000_000_000;

/// A keep-alive HTTP/1.1 connection, written by hand so that the client costs little
/// next to the collector it measures.
struct Conn {
    addr: std::net::SocketAddr,
    stream: Option<BufReader<TcpStream>>,
}

#[derive(Debug)]
enum Outcome {
    Ok { accepted: u64, duplicates: u64 },
    Status(u16, Option<u64>),
    Failed,
    TimedOut,
}

impl Conn {
    async fn post(&mut self, token: &str, body: &str, timeout: Duration) -> Outcome {
        match tokio::time::timeout(timeout, self.post_inner(token, body)).await {
            Ok(Some(o)) => o,
            Ok(None) => {
                self.stream = None;
                Outcome::Failed
            }
            Err(_) => {
                // The agent gives up on the request and its connection.
                self.stream = None;
                Outcome::TimedOut
            }
        }
    }

    async fn post_inner(&mut self, token: &str, body: &str) -> Option<Outcome> {
        if self.stream.is_none() {
            let s = TcpStream::connect(self.addr).await.ok()?;
            s.set_nodelay(true).ok()?;
            self.stream = Some(BufReader::new(s));
        }
        let s = self.stream.as_mut()?;
        let head = format!(
            "POST /api/v1/ingest HTTP/1.1\r\nhost: loadgen\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        s.get_mut().write_all(head.as_bytes()).await.ok()?;
        s.get_mut().write_all(body.as_bytes()).await.ok()?;
        let mut line = String::new();
        s.read_line(&mut line).await.ok()?;
        let status: u16 = line.split(' ').nth(1)?.parse().ok()?;
        let mut length = 0usize;
        let mut retry_after = None;
        let mut close = false;
        loop {
            line.clear();
            if s.read_line(&mut line).await.ok()? == 0 {
                return None;
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let (k, v) = l.split_once(':')?;
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().ok()?;
            } else if k.eq_ignore_ascii_case("retry-after") {
                retry_after = v.trim().parse().ok();
            } else if k.eq_ignore_ascii_case("connection") && v.trim() == "close" {
                close = true;
            }
        }
        let mut buf = vec![0; length];
        s.read_exact(&mut buf).await.ok()?;
        if close {
            // The collector gives the connection back (a refused push): the next push
            // opens a new one, as the agent's HTTP client does.
            self.stream = None;
        }
        if status != 200 {
            return Some(Outcome::Status(status, retry_after));
        }
        let ack: serde_json::Value = serde_json::from_slice(&buf).ok()?;
        Some(Outcome::Ok {
            accepted: ack["accepted"].as_u64()?,
            duplicates: ack["duplicates"].as_u64()?,
        })
    }
}

#[derive(Default)]
struct Counts {
    accepted: AtomicU64,
    duplicates: AtomicU64,
    refused: AtomicU64,
    busy: AtomicU64,
    failed: AtomicU64,
    timed_out: AtomicU64,
    /// Bytes of pushes sent and turned away (429/5xx): the cost of retries.
    refused_bytes: AtomicU64,
}

/// A push until it is acknowledged, as the agent does
/// (`empreinte_agent::push::client::failed_wait`): on 429/503 with `Retry-After`, wait
/// that long plus up to a quarter more at random, without doubling; on another 5xx, a
/// timeout or a broken connection, back off 1 s doubling to 2 min with jitter; the same
/// batches again.
async fn deliver(
    conn: &mut Conn,
    a: &Agent,
    body: &str,
    n: usize,
    timeout: Duration,
    counts: &Counts,
    deadline: Option<Instant>,
) -> bool {
    let mut backoff = Duration::from_secs(1);
    let mut rng = a.next_seq ^ (a.t0_ms << 7) ^ a.run_id.len() as u64 ^ conn.addr.port() as u64;
    let mut random = move || {
        rng = rng
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (rng >> 11) as f64 / (1u64 << 53) as f64
    };
    loop {
        let wait = match conn.post(&a.token, body, timeout).await {
            Outcome::Ok {
                accepted,
                duplicates,
            } => {
                counts.accepted.fetch_add(accepted, Ordering::Relaxed);
                counts.duplicates.fetch_add(duplicates, Ordering::Relaxed);
                return true;
            }
            Outcome::Status(s, retry) if s == 429 || s >= 500 => {
                counts.busy.fetch_add(1, Ordering::Relaxed);
                counts
                    .refused_bytes
                    .fetch_add(body.len() as u64, Ordering::Relaxed);
                match retry {
                    Some(r) if s == 429 || s == 503 => {
                        let r = Duration::from_secs(r.clamp(1, 120));
                        (r + r.mul_f64(random() / 4.0)).min(Duration::from_secs(120))
                    }
                    _ => {
                        let w = backoff / 2 + backoff.mul_f64(random() / 2.0);
                        backoff = (backoff * 2).min(Duration::from_secs(120));
                        w
                    }
                }
            }
            Outcome::Status(s, _) => {
                counts.refused.fetch_add(n as u64, Ordering::Relaxed);
                eprintln!("push refused with {s}");
                return false;
            }
            other => {
                if matches!(other, Outcome::TimedOut) {
                    counts.timed_out.fetch_add(1, Ordering::Relaxed);
                } else {
                    counts.failed.fetch_add(1, Ordering::Relaxed);
                }
                let w = backoff / 2 + backoff.mul_f64(random() / 2.0);
                backoff = (backoff * 2).min(Duration::from_secs(120));
                w
            }
        };
        if deadline.is_some_and(|d| Instant::now() + wait > d) {
            return false;
        }
        tokio::time::sleep(wait).await;
    }
}

/// CPU time (user + system, seconds) and VmRSS/VmHWM (MB) of a process.
fn proc_stats(pid: u32) -> (f64, f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 and 15 (utime, stime) are the 12th and 13th after the ')'.
    let cpu = (ticks(11) + ticks(12)) / 100.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (cpu, kb("VmRSS:"), kb("VmHWM:"))
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

async fn http_get(addr: std::net::SocketAddr, token: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nhost: loadgen\r\nauthorization: Bearer {token}\r\nconnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out.split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or(out)
}

struct Collector {
    child: std::process::Child,
    pid: u32,
    addr: std::net::SocketAddr,
}

async fn start_collector(o: &Options, data: &Path) -> Collector {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    std::fs::create_dir_all(data).unwrap();
    let log = std::fs::File::create(data.join("collector.log")).unwrap();
    let child = std::process::Command::new(&o.collector_bin)
        .arg("collector")
        .arg("--listen")
        .arg(addr.to_string())
        .arg("--data-dir")
        .arg(data)
        .args(&o.extra_args)
        .args(
            o.database_url
                .iter()
                .flat_map(|u| ["--database-url", u.as_str()]),
        )
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", o.collector_bin.display()));
    let pid = child.id();
    let until = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < until, "the collector did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Collector { child, pid, addr }
}

/// Agents and a read token written into a PostgreSQL store.
async fn pg_tokens(
    url: &str,
    n: usize,
    token: &dyn Fn(usize) -> (String, String, Vec<u8>),
    now: u64,
) -> (Vec<Agent>, String) {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .unwrap();
    let mut agents = Vec::new();
    for i in 0..n {
        let id = format!("host-{i:05}");
        let (tid, full, hash) = token(i);
        sqlx::query(
            "INSERT INTO tokens (id, kind, agent_id, secret_sha256, note, created_ms) VALUES ($1, 'agent', $2, $3, 'loadgen', $4)",
        )
        .bind(tid)
        .bind(&id)
        .bind(hash)
        .bind(now as i64)
        .execute(&pool)
        .await
        .unwrap();
        agents.push(Agent {
            id,
            token: full,
            run_id: format!("{:032x}", i as u128 + 0xabc0_0000_0000),
            t0_ms: now - now % BATCH_MS - 86_400_000,
            next_seq: 1,
        });
    }
    let (tid, read, hash) = token(n);
    sqlx::query(
        "INSERT INTO tokens (id, kind, agent_id, secret_sha256, note, created_ms) VALUES ($1, 'read', NULL, $2, 'loadgen', $3)",
    )
    .bind(tid)
    .bind(hash)
    .bind(now as i64)
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    (agents, read)
}

async fn main_async(o: Options) {
    let tmp = tempfile::tempdir().unwrap();
    let data = o.keep.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&data).unwrap();
    // The collector creates its database (its own schema version), then the tokens are
    // written into it directly (the tokens table is the same in every version).
    let mut collector = start_collector(&o, &data.join("c0")).await;
    let mut others = Vec::new();
    for i in 1..o.collectors.max(1) {
        others.push(start_collector(&o, &data.join(format!("c{i}"))).await);
    }
    let now = now_unix_ms();
    let token = |n: usize| {
        let id = format!("{:012x}", 0x10_0000_0000u64 + n as u64);
        let secret = format!("{:040x}", 0xfeed_0000_0000_0000u128 + n as u128);
        let hash = sha2::Sha256::digest(secret.as_bytes()).to_vec();
        (id.clone(), format!("emp_{id}_{secret}"), hash)
    };
    let (agents, read_token) = if let Some(url) = &o.database_url {
        pg_tokens(url, o.agents, &token, now).await
    } else {
        let mut db = rusqlite::Connection::open(data.join("c0").join(DB_FILE)).unwrap();
        db.busy_timeout(Duration::from_secs(30)).unwrap();
        let tx = db.transaction().unwrap();
        let mut agents = Vec::new();
        for i in 0..o.agents {
            let id = format!("host-{i:05}");
            let (tid, full, hash) = token(i);
            tx.execute(
                "INSERT INTO tokens (id, kind, agent_id, secret_sha256, note, created_ms) VALUES (?, 'agent', ?, ?, 'loadgen', ?)",
                rusqlite::params![tid, id, hash, now as i64],
            )
            .unwrap();
            // Batches start a day ago (and at most a few hours ahead of that), well
            // inside the accepted window.
            let t0_ms = now - now % BATCH_MS - 86_400_000;
            agents.push(Agent {
                id,
                token: full,
                run_id: format!("{:032x}", i as u128 + 0xabc0_0000_0000),
                t0_ms,
                next_seq: 1,
            });
        }
        let (tid, read, hash) = token(o.agents);
        tx.execute(
            "INSERT INTO tokens (id, kind, agent_id, secret_sha256, note, created_ms) VALUES (?, 'read', NULL, ?, 'loadgen', ?)",
            rusqlite::params![tid, hash, now as i64],
        )
        .unwrap();
        tx.commit().unwrap();
        (agents, read)
    };
    println!(
        "collector {} pid {} on {}, {} agents, {} batch(es) per push, 40 records per batch",
        o.collector_bin.display(),
        collector.pid,
        collector.addr,
        o.agents,
        o.batches_per_push
    );
    if !others.is_empty() {
        println!(
            "{} more collectors on the same database (agents spread over all; CPU and RSS below are the first one's)",
            others.len()
        );
    }
    let addrs: Vec<std::net::SocketAddr> = std::iter::once(collector.addr)
        .chain(others.iter().map(|c| c.addr))
        .collect();
    let agents: Vec<Arc<tokio::sync::Mutex<(Agent, Conn)>>> = agents
        .into_iter()
        .enumerate()
        .map(|(i, a)| {
            Arc::new(tokio::sync::Mutex::new((
                a,
                Conn {
                    addr: addrs[i % addrs.len()],
                    stream: None,
                },
            )))
        })
        .collect();
    let mut sent_batches = 0u64;
    let counts = Arc::new(Counts::default());

    for &rate in &o.rates {
        let (cpu0, _, _) = proc_stats(collector.pid);
        let acc0 = counts.accepted.load(Ordering::Relaxed);
        let per_agent_period =
            Duration::from_secs_f64(o.agents as f64 * o.batches_per_push as f64 / rate);
        let start = Instant::now() + Duration::from_millis(200);
        let end = start + o.duration;
        let mut tasks = Vec::new();
        for (i, a) in agents.iter().enumerate() {
            let a = a.clone();
            let counts = counts.clone();
            let (n, timeout) = (o.batches_per_push, o.timeout);
            let offset = per_agent_period.mul_f64(i as f64 / o.agents as f64);
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut guard = a.lock().await;
                let (agent, conn) = &mut *guard;
                let mut body = String::new();
                let mut due = start + offset;
                let mut sent = 0u64;
                while due < end {
                    tokio::time::sleep_until(due).await;
                    write_push(&mut body, agent, agent.next_seq, n, n);
                    if deliver(conn, agent, &body, n, timeout, &counts, Some(end + timeout)).await {
                        lat.push(due.elapsed().as_micros() as u64);
                    }
                    agent.next_seq += n as u64;
                    sent += n as u64;
                    due += per_agent_period;
                }
                (lat, sent)
            }));
        }
        let mut lat = Vec::new();
        for t in tasks {
            let (l, s) = t.await.unwrap();
            lat.extend(l);
            sent_batches += s;
        }
        let elapsed = start.elapsed().as_secs_f64();
        let (cpu1, rss, hwm) = proc_stats(collector.pid);
        lat.sort_unstable();
        let acked = counts.accepted.load(Ordering::Relaxed) - acc0;
        let p99 = percentile(&lat, 0.99);
        println!(
            "open loop {rate:>8.0} batches/s target: {:>8.0} stored/s, p50 {:>7.1} ms, p99 {:>7.1} ms, max {:>7.1} ms; collector CPU {:>4.0} %, RSS {:>6.1} MB (peak {:.1}); busy {} timeouts {} failed {}",
            acked as f64 / o.duration.as_secs_f64(),
            percentile(&lat, 0.5),
            p99,
            percentile(&lat, 1.0),
            (cpu1 - cpu0) / elapsed * 100.0,
            rss,
            hwm,
            counts.busy.load(Ordering::Relaxed),
            counts.timed_out.load(Ordering::Relaxed),
            counts.failed.load(Ordering::Relaxed),
        );
        if p99 > o.p99_ms || (acked as f64) < 0.95 * rate * o.duration.as_secs_f64() {
            println!(
                "stop: p99 over {} ms or the collector fell behind",
                o.p99_ms
            );
            break;
        }
    }

    if o.backlog > 0 {
        let (cpu0, _, _) = proc_stats(collector.pid);
        let acc0 = counts.accepted.load(Ordering::Relaxed);
        let start = Instant::now();
        let peak = Arc::new(AtomicU64::new(0));
        let pid = collector.pid;
        let watch_peak = peak.clone();
        let watch_counts = counts.clone();
        let watcher = tokio::spawn(async move {
            let mut tick = 0u64;
            loop {
                let (_, rss, _) = proc_stats(pid);
                watch_peak.fetch_max(rss as u64, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
                tick += 1;
                if tick % 100 == 0 {
                    let c = &watch_counts;
                    println!(
                        "  {:>4.0} s: acknowledged {} new, {} duplicates; 503/429 {} ({:.0} MB sent again), timeouts {}, failed {}; RSS {rss:.0} MB (peak {} MB)",
                        start.elapsed().as_secs_f64(),
                        c.accepted.load(Ordering::Relaxed) - acc0,
                        c.duplicates.load(Ordering::Relaxed),
                        c.busy.load(Ordering::Relaxed),
                        c.refused_bytes.load(Ordering::Relaxed) as f64 / 1e6,
                        c.timed_out.load(Ordering::Relaxed),
                        c.failed.load(Ordering::Relaxed),
                        watch_peak.load(Ordering::Relaxed),
                    );
                }
            }
        });
        let deadline = o.max_seconds.map(|s| start + Duration::from_secs_f64(s));
        let mut tasks = Vec::new();
        for a in &agents {
            let a = a.clone();
            let counts = counts.clone();
            let (n, timeout, backlog) = (o.batches_per_push, o.timeout, o.backlog);
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut guard = a.lock().await;
                let (agent, conn) = &mut *guard;
                let mut body = String::new();
                let mut left = backlog;
                while left > 0 {
                    let k = n.min(left);
                    write_push(&mut body, agent, agent.next_seq, k, left);
                    let t = Instant::now();
                    if !deliver(conn, agent, &body, k, timeout, &counts, deadline).await {
                        break;
                    }
                    lat.push(t.elapsed().as_micros() as u64);
                    agent.next_seq += k as u64;
                    left -= k;
                }
                (lat, (backlog - left) as u64)
            }));
        }
        let mut lat = Vec::new();
        for t in tasks {
            let (l, s) = t.await.unwrap();
            lat.extend(l);
            sent_batches += s;
        }
        watcher.abort();
        let elapsed = start.elapsed().as_secs_f64();
        let (cpu1, rss, hwm) = proc_stats(collector.pid);
        lat.sort_unstable();
        let acked = counts.accepted.load(Ordering::Relaxed) - acc0;
        println!(
            "backlog {} × {} batches, {} per push: {} of {} delivered in {:.1} s, {:>8.0} stored/s, push p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; collector CPU {:.0} %, RSS {:.1} MB (peak sampled {} MB, VmHWM {:.1} MB); busy {} ({:.0} MB sent again) timeouts {} failed {} duplicates {}",
            o.agents,
            o.backlog,
            o.batches_per_push,
            acked,
            o.agents * o.backlog,
            elapsed,
            acked as f64 / elapsed,
            percentile(&lat, 0.5),
            percentile(&lat, 0.99),
            percentile(&lat, 1.0),
            (cpu1 - cpu0) / elapsed * 100.0,
            rss,
            peak.load(Ordering::Relaxed),
            hwm,
            counts.busy.load(Ordering::Relaxed),
            counts.refused_bytes.load(Ordering::Relaxed) as f64 / 1e6,
            counts.timed_out.load(Ordering::Relaxed),
            counts.failed.load(Ordering::Relaxed),
            counts.duplicates.load(Ordering::Relaxed),
        );
    }

    let mut expected_fill = 0u64;
    if let Some(month) = &o.fill_month {
        let (y, m) = month.split_once('-').expect("--fill-month YYYY-MM");
        let first = jiff::civil::Date::new(y.parse().unwrap(), m.parse().unwrap(), 1).unwrap();
        let next = first.checked_add(jiff::Span::new().months(1)).unwrap();
        let ms = |d: jiff::civil::Date| {
            d.to_zoned(jiff::tz::TimeZone::UTC)
                .unwrap()
                .timestamp()
                .as_millisecond() as u64
        };
        let (from, to) = (ms(first) - 86_400_000, ms(next) + 86_400_000);
        let hours = ((to - from) / 3_600_000) as usize;
        let start = Instant::now();
        let mut tasks = Vec::new();
        for (i, a) in agents.iter().enumerate() {
            let a = a.clone();
            let counts = counts.clone();
            let projects: Vec<usize> = (0..o.projects_per_host)
                .map(|j| (i * 7 + j * 13) % o.projects)
                .collect();
            expected_fill += (hours * projects.len() * 2) as u64 * FILL_RECORD_UJ;
            let (n, timeout) = (o.batches_per_push.max(1), o.timeout);
            tasks.push(tokio::spawn(async move {
                let mut guard = a.lock().await;
                let (agent, conn) = &mut *guard;
                // A run of its own for the fill.
                agent.run_id = format!("f{}", &agent.run_id[1..]);
                agent.t0_ms = from;
                let mut body = String::new();
                let mut seq = 1u64;
                while (seq as usize) <= hours {
                    let k = n.min(hours + 1 - seq as usize);
                    write_fill_push(&mut body, agent, seq, k, &projects);
                    if !deliver(conn, agent, &body, k, timeout, &counts, None).await {
                        break;
                    }
                    seq += k as u64;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let (_, rss, hwm) = proc_stats(collector.pid);
        println!(
            "filled {month}: {} agents × {hours} one-hour batches × {} projects × 2 components in {:.1} s; collector RSS {rss:.1} MB (peak {hwm:.1})",
            o.agents,
            o.projects_per_host,
            start.elapsed().as_secs_f64()
        );
    }

    for path in &o.probes {
        let mut times = Vec::new();
        let mut size = 0;
        for _ in 0..5 {
            let t = Instant::now();
            size = http_get(collector.addr, &read_token, path).await.len();
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        let (_, rss, hwm) = proc_stats(collector.pid);
        times.sort_by(f64::total_cmp);
        println!(
            "GET {path}: {size} bytes, min {:.1} ms, median {:.1} ms, max {:.1} ms (5 requests); collector RSS {rss:.1} MB (peak {hwm:.1})",
            times[0], times[2], times[4]
        );
    }

    // Stored once: what the API says against what was sent.
    let body = http_get(collector.addr, &read_token, "/api/v1/agents").await;
    let stored: u64 = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            v["agents"]
                .as_array()
                .map(|a| a.iter().filter_map(|x| x["stored_uj"].as_u64()).sum())
        })
        .unwrap_or(0);
    let expected = sent_batches * RECORD_UJ * (PROJECTS as u64) * 2 + expected_fill;
    let accepted = counts.accepted.load(Ordering::Relaxed);
    println!(
        "sent {sent_batches} batches (and the fill), acknowledged as new {accepted}, as duplicates {}, refused {}; stored {} µJ, expected {} µJ: {}",
        counts.duplicates.load(Ordering::Relaxed),
        counts.refused.load(Ordering::Relaxed),
        stored,
        expected,
        if stored == expected && (o.fill_month.is_some() || accepted == sent_batches) {
            "every batch stored once"
        } else {
            "MISMATCH (timeouts or refusals above?)"
        }
    );
    let _ = collector.child.kill();
    let _ = collector.child.wait();
    for mut c in others {
        let _ = c.child.kill();
        let _ = c.child.wait();
    }
}

fn main() {
    let o = parse_options();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(main_async(o));
}
