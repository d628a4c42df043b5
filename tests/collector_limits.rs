#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The collector under hostile clients, on loopback, with the real binary: a request
//! without a valid token costs almost nothing, and idle connections cannot keep other
//! clients out (issue 10, item 2).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use empreinte_agent::clock::Stopwatch;

use common::{CollectorCmd, create_token, free_port};

/// A collector started through `sh -c 'ulimit -n N && exec empreinte collector …'`.
struct Limited {
    inner: common::Collector,
    base: String,
    port: u16,
    log: std::path::PathBuf,
}

impl Limited {
    fn spawn(data: &Path, nofile: u32, config: &str) -> Limited {
        let port = free_port();
        let config_path = data.join("collector.toml");
        std::fs::write(&config_path, config).unwrap();
        let cmd = CollectorCmd::new(data, port)
            .arg("--config")
            .arg(&config_path)
            .shell_prefix(&format!("ulimit -n {nofile}"));
        let log = cmd.log.clone();
        let inner = common::Collector::start(cmd, data, port);
        Limited {
            base: inner.base.clone(),
            inner,
            port,
            log,
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.inner.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    fn metric(&self, reader: &str, name: &str) -> f64 {
        let text = ureq::get(&format!("{}/metrics", self.base))
            .header("Authorization", &format!("Bearer {reader}"))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
        common::parse(&text)
            .iter()
            .filter(|s| s.metric == name)
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => 0.0,
            })
            .sum()
    }
}

fn now_ms() -> u64 {
    empreinte_agent::clock::unix_ms()
}

/// A valid push of one batch ending now.
fn push_body(agent: &str, seq: u64) -> String {
    let end = now_ms() - 1_000;
    let start = end - 10_000;
    format!(
        r#"{{"version":1,"agent":{{"agent_id":"{agent}","hostname":"{agent}","agent_version":"0.1.0"}},"spool":{{"batches":0,"bytes":0,"oldest_start_unix_ms":null,"dropped_batches_total":0}},"batches":[{{"run_id":"0123456789abcdef0123456789abcdef","seq":{seq},"start_unix_ms":{start},"end_unix_ms":{end},"records":[{{"project":"chat","component":"cpu","source":"rapl","start_unix_ms":{start},"end_unix_ms":{end},"energy_uj":1000000}}],"counters":[]}}]}}"#
    )
}

fn push(base: &str, token: &str, body: &str) -> (u16, String) {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .new_agent();
    let mut resp = agent
        .post(&format!("{base}/api/v1/ingest"))
        .header("Authorization", &format!("Bearer {token}"))
        .header("Content-Type", "application/json")
        .send(body)
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_to_string().unwrap_or_default())
}

#[test]
fn slow_bodies_without_a_token_cost_almost_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let token = create_token(data, "agent", Some("web-01"));
    let c = Limited::spawn(data, 4096, "");
    let rss_before = c.rss_kib();
    // 200 clients announce 16 MiB bodies without a token and send them a byte at a time.
    let mut slow: Vec<TcpStream> = (0..200)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", c.port)).unwrap();
            s.write_all(
                b"POST /api/v1/ingest HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 16000000\r\n\r\n{",
            )
            .unwrap();
            s
        })
        .collect();
    for s in &mut slow {
        let _ = s.write_all(b"\"");
    }
    // Each is answered 401 from its headers alone.
    for s in &mut slow {
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut head = [0u8; 12];
        s.read_exact(&mut head).unwrap();
        assert_eq!(&head, b"HTTP/1.1 401", "{}", String::from_utf8_lossy(&head));
    }
    // Meanwhile an agent with a token is served at once.
    let start = Stopwatch::start();
    let (status, body) = push(&c.base, &token, &push_body("web-01", 1));
    let took = start.elapsed();
    assert_eq!(status, 200, "{body}");
    assert!(took < Duration::from_secs(1), "the push took {took:?}");
    let rss = c.rss_kib();
    eprintln!(
        "collector RSS: {rss_before} KiB before, {rss} KiB with 200 slow unauthenticated bodies; authenticated push answered in {took:?}"
    );
    assert!(rss < 64 * 1024, "RSS {rss} KiB");
    drop(slow);
}

#[test]
fn idle_connections_cannot_lock_clients_out_under_a_low_open_files_limit() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let reader = create_token(data, "read", None);
    let token = create_token(data, "agent", Some("web-01"));
    // Under an open-files limit of 256 the collector serves at most 192 connections at
    // once; idle ones are closed after 10 s, long enough for 192 of them to be open
    // together even on a loaded machine, so the cap is reached.
    let c = Limited::spawn(data, 256, "[limits]\nheader_timeout = \"10s\"\n");
    // 600 connections that never send a byte (more than the open-files limit).
    let mut idle = Vec::new();
    let t = Stopwatch::start();
    let mut failed = 0;
    while idle.len() < 600 && failed < 20 {
        // Past the accept queue the kernel drops SYNs until idle connections time out
        // and free slots: a connect may take a few retransmissions.
        match TcpStream::connect_timeout(
            &format!("127.0.0.1:{}", c.port).parse().unwrap(),
            Duration::from_secs(15),
        ) {
            Ok(s) => idle.push(s),
            Err(_) => failed += 1,
        }
    }
    eprintln!("{} connections in {:?}", idle.len(), t.elapsed());
    assert!(idle.len() > 256, "only {} connections opened", idle.len());
    // A new client is still served once idle connections have timed out.
    let (status, body) = push(&c.base, &token, &push_body("web-01", 1));
    assert_eq!(status, 200, "{body}");
    let timed_out = c.metric(&reader, "empreinte_collector_connections_closed_total");
    assert!(timed_out >= 1.0, "no connection counted as closed");
    assert!(c.metric(&reader, "empreinte_collector_saturated_total") >= 1.0);
    let log = c.log_text();
    assert!(log.contains("connection limit reached"), "{log}");
    assert!(
        c.metric(&reader, "empreinte_collector_connection_limit") <= 256.0 - 64.0,
        "the cap is not below the open-files limit"
    );
    drop(idle);
}
