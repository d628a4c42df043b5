//! Helpers for the end-to-end tests: run the real `empreinte` binary, scrape it, parse
//! what it serves with a Prometheus text parser.

// `unused_imports`: the re-exports below serve only the test binaries that use them.
#![allow(
    dead_code,
    unused_imports,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub use empreinte_testkit::process::{assert_success, output_ok};
pub use empreinte_testkit::wait::{PATIENCE, wait_for, wait_until};

pub const BIN: &str = env!("CARGO_BIN_EXE_empreinte");

/// A free loopback port (bound then released; good enough on a test machine).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `empreinte ARGS` to completion.
pub fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run empreinte")
}

/// Runs `empreinte ARGS` to completion; [`assert_success`] on its output, which it gives
/// back.
#[track_caller]
pub fn run_ok(args: &[&str]) -> Output {
    let out = run(args);
    assert_success(&out);
    out
}

/// A running `empreinte agent`, killed on drop.
pub struct Agent {
    child: Child,
    pub url: String,
}

impl Agent {
    /// Starts `empreinte agent --listen 127.0.0.1:PORT ARGS` and waits until /metrics answers.
    pub fn spawn(args: &[&str]) -> Agent {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let child = Command::new(BIN)
            .arg("agent")
            .args(["--listen", &listen])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn empreinte agent");
        let mut agent = Agent {
            child,
            url: format!("http://{listen}/metrics"),
        };
        let what = format!("the agent to serve {}", agent.url);
        wait_for(&what, PATIENCE, || {
            if agent.try_scrape().is_some() {
                return true;
            }
            if let Some(status) = agent.child.try_wait().unwrap() {
                let mut err = String::new();
                agent
                    .child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                panic!("agent exited with {status}: {err}");
            }
            false
        });
        agent
    }

    pub fn try_scrape(&self) -> Option<String> {
        ureq::get(&self.url)
            .call()
            .ok()?
            .body_mut()
            .read_to_string()
            .ok()
    }

    pub fn scrape(&self) -> String {
        self.try_scrape().expect("scrape /metrics")
    }

    /// Scrapes and parses with the `prometheus-parse` text parser (which rejects
    /// malformed exposition).
    pub fn samples(&self) -> Vec<prometheus_parse::Sample> {
        parse(&self.scrape())
    }

    /// Waits until the agent has run `n` more sampling cycles.
    pub fn wait_cycles(&self, n: u64) {
        let start = value(
            &self.samples(),
            "empreinte_agent_sampling_cycles_total",
            &[],
        )
        .unwrap_or(0.0) as u64;
        wait_for(
            &format!("the agent to run {n} more cycles"),
            PATIENCE,
            || {
                let now = value(
                    &self.samples(),
                    "empreinte_agent_sampling_cycles_total",
                    &[],
                )
                .unwrap_or(0.0) as u64;
                now >= start + n
            },
        );
    }
}

impl Agent {
    /// Stops the agent with SIGTERM (a graceful shutdown) and waits up to 30 s for it to
    /// exit; returns its status and what it wrote to stderr.
    pub fn terminate(mut self) -> (std::process::ExitStatus, String) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success(), "kill -TERM {pid}");
        let status = wait_until("the agent to exit after SIGTERM", PATIENCE, || {
            self.child.try_wait().unwrap()
        });
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        (status, err)
    }

    /// Sends `signal` (a name such as `STOP` or `CONT`) to the agent.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{signal} {pid}");
    }

    /// Kills the agent with SIGKILL: nothing of it runs after this returns.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn parse(text: &str) -> Vec<prometheus_parse::Sample> {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    prometheus_parse::Scrape::parse(lines)
        .expect("valid Prometheus text")
        .samples
}

/// The value of the series `name` whose labels include all of `labels`; panics if
/// several match.
pub fn value(
    samples: &[prometheus_parse::Sample],
    name: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    let matching: Vec<f64> = samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            ref other => panic!("unexpected value {other:?}"),
        })
        .collect();
    assert!(
        matching.len() <= 1,
        "{name}{labels:?} matches {} series",
        matching.len()
    );
    matching.first().copied()
}

/// promtool, required in CI (a missing tool fails there), optional elsewhere.
pub fn promtool() -> Option<&'static str> {
    let found = Command::new("promtool")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if found {
        return Some("promtool");
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "promtool is required in CI: the test setup (scripts/test) installs it from Debian's `prometheus` package"
        );
    }
    eprintln!("note: promtool not installed, skipping its check (it runs in CI)");
    None
}

/// A fake procfs with the files the estimate reads: a CPU model, memory size, and a
/// `stat` whose busy and idle ticks the test sets.
pub fn fake_procfs(dir: &Path, model: &str, threads: u32, mem_kib: u64) {
    let mut cpuinfo = String::new();
    for i in 0..threads {
        cpuinfo.push_str(&format!(
            "processor\t: {i}\nmodel name\t: {model}\nphysical id\t: 0\n\n"
        ));
    }
    std::fs::write(dir.join("cpuinfo"), cpuinfo).unwrap();
    std::fs::write(
        dir.join("meminfo"),
        format!("MemTotal:       {mem_kib} kB\n"),
    )
    .unwrap();
    set_proc_stat(dir, 0, 0);
}

pub fn set_proc_stat(dir: &Path, busy: u64, idle: u64) {
    let tmp = dir.join("stat.tmp");
    std::fs::write(&tmp, format!("cpu  {busy} 0 0 {idle} 0 0 0 0 0 0\n")).unwrap();
    std::fs::rename(tmp, dir.join("stat")).unwrap();
}

/// A running `empreinte collector`, killed on drop. Its log goes to `collector.log` in
/// its data directory.
pub struct Collector {
    child: Child,
    pub base: String,
    pub port: u16,
    pub data_dir: std::path::PathBuf,
}

/// How to start `empreinte collector --listen 127.0.0.1:PORT --data-dir DIR …` as a child
/// process: stdout discarded, stderr appended to a log file (by default `collector.log`
/// in the data directory), `RUST_LOG=info` unless told otherwise.
pub struct CollectorCmd {
    args: Vec<OsString>,
    rust_log: String,
    shell_prefix: Option<String>,
    pub log: PathBuf,
}

impl CollectorCmd {
    pub fn new(data_dir: &Path, port: u16) -> CollectorCmd {
        CollectorCmd {
            args: vec![
                "collector".into(),
                "--listen".into(),
                format!("127.0.0.1:{port}").into(),
                "--data-dir".into(),
                data_dir.into(),
            ],
            rust_log: "info".into(),
            shell_prefix: None,
            log: data_dir.join("collector.log"),
        }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> CollectorCmd {
        self.args.push(arg.as_ref().to_os_string());
        self
    }

    pub fn args<A: AsRef<OsStr>>(mut self, args: impl IntoIterator<Item = A>) -> CollectorCmd {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    /// Listen on `addr` instead of 127.0.0.1:PORT.
    pub fn listen(mut self, addr: &str) -> CollectorCmd {
        self.args[2] = addr.into();
        self
    }

    pub fn rust_log(mut self, filter: &str) -> CollectorCmd {
        self.rust_log = filter.into();
        self
    }

    pub fn log(mut self, path: &Path) -> CollectorCmd {
        self.log = path.to_path_buf();
        self
    }

    /// A shell command run before the collector replaces the shell (`umask 000`,
    /// `ulimit -n 64`); the collector's own arguments are passed untouched.
    pub fn shell_prefix(mut self, prefix: &str) -> CollectorCmd {
        self.shell_prefix = Some(prefix.into());
        self
    }

    pub fn spawn(self) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = match &self.shell_prefix {
            None => Command::new(BIN),
            Some(prefix) => {
                let mut sh = Command::new("sh");
                sh.arg("-c")
                    .arg(format!("{prefix} && exec \"$0\" \"$@\""))
                    .arg(BIN);
                sh
            }
        };
        cmd.args(&self.args)
            .env("RUST_LOG", &self.rust_log)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn empreinte collector")
    }
}

impl Collector {
    /// Starts `empreinte collector --listen 127.0.0.1:PORT --data-dir DIR ARGS` and waits
    /// until it answers.
    pub fn spawn(data_dir: &Path, port: u16, args: &[&str]) -> Collector {
        Collector::start(CollectorCmd::new(data_dir, port).args(args), data_dir, port)
    }

    /// Starts `cmd` (for `data_dir` and `port`) and waits until it answers over HTTP.
    pub fn start(cmd: CollectorCmd, data_dir: &Path, port: u16) -> Collector {
        let log_path = cmd.log.clone();
        let child = cmd.spawn();
        let mut c = Collector {
            child,
            base: format!("http://127.0.0.1:{port}"),
            port,
            data_dir: data_dir.to_path_buf(),
        };
        let what = format!("the collector to answer on {}", c.base);
        wait_for(&what, PATIENCE, || {
            if ureq::get(&format!("{}/healthz", c.base)).call().is_ok() {
                return true;
            }
            if let Some(status) = c.child.try_wait().unwrap() {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                panic!("collector exited with {status}: {log}");
            }
            false
        });
        c
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// GET `path` with a bearer token; the JSON body.
    pub fn get(&self, token: &str, path: &str) -> serde_json::Value {
        let text = ureq::get(&format!("{}{path}", self.base))
            .header("Authorization", &format!("Bearer {token}"))
            .call()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
            .body_mut()
            .read_to_string()
            .unwrap();
        serde_json::from_str(&text).unwrap()
    }

    /// `/metrics`, with a read token.
    pub fn metrics(&self, token: &str) -> Vec<prometheus_parse::Sample> {
        parse(
            &ureq::get(&format!("{}/metrics", self.base))
                .header("Authorization", &format!("Bearer {token}"))
                .call()
                .unwrap()
                .body_mut()
                .read_to_string()
                .unwrap(),
        )
    }

    /// Kills the collector with SIGKILL.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `empreinte token create ...` in `data_dir`: the token.
pub fn create_token(data_dir: &Path, kind: &str, agent: Option<&str>) -> String {
    create_token_in(["--data-dir", data_dir.to_str().unwrap()], kind, agent)
}

/// `empreinte token create ...` in the store `store` names (`["--data-dir", DIR]` or
/// `["--database-url", URL]`): the token.
pub fn create_token_in(store: [&str; 2], kind: &str, agent: Option<&str>) -> String {
    let mut args = vec!["token", "create", "--kind", kind];
    args.extend(store);
    if let Some(a) = agent {
        args.extend(["--agent", a]);
    }
    let out = run_ok(&args);
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The JSON body of one push of `agent`'s run: one-second `batches` `(seq, start_ms,
/// energy_uj)`, each a record of project `chat` on the GPU.
pub fn gpu_push_body(agent: &str, batches: &[(u64, u64, u64)]) -> String {
    let items: Vec<String> = batches
        .iter()
        .map(|(seq, start, uj)| {
            let end = start + 1_000;
            format!(
                r#"{{"run_id":"{:0>32}","seq":{seq},"start_unix_ms":{start},"end_unix_ms":{end},"records":[{{"project":"chat","component":"gpu","source":"nvml","start_unix_ms":{start},"end_unix_ms":{end},"energy_uj":{uj}}}],"counters":[]}}"#,
                agent.len()
            )
        })
        .collect();
    format!(
        r#"{{"version":1,"agent":{{"agent_id":"{agent}","hostname":"{agent}","agent_version":"0.1.0"}},"spool":{{"batches":0,"bytes":0,"oldest_start_unix_ms":null,"dropped_batches_total":0}},"batches":[{}]}}"#,
        items.join(",")
    )
}

/// `empreinte db migrate --from DATA_DIR --to URL`, which must succeed and say that every
/// row count and every total are equal on both sides; gives its stderr.
#[track_caller]
pub fn db_migrate(data_dir: &Path, url: &str) -> String {
    let out = run(&[
        "db",
        "migrate",
        "--from",
        data_dir.to_str().unwrap(),
        "--to",
        url,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("every row count and every total equal"),
        "{stderr}"
    );
    stderr
}

/// The agent's `/debug/attribution` JSON.
pub fn debug(agent: &Agent) -> serde_json::Value {
    let url = agent.url.replace("/metrics", "/debug/attribution");
    let text = ureq::get(&url)
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The energy the agent has measured, in µJ, all channels.
pub fn measured_uj(agent: &Agent) -> u64 {
    debug(agent)["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["total_uj"].as_u64().unwrap())
        .sum()
}

/// µJ per project (all components) from a `/debug/attribution` document.
pub fn projects_uj(d: &serde_json::Value) -> std::collections::BTreeMap<String, u64> {
    let mut out = std::collections::BTreeMap::new();
    for p in d["attribution"]["projects"].as_array().unwrap() {
        *out.entry(p["project"].as_str().unwrap().to_string())
            .or_default() += p["total_uj"].as_u64().unwrap();
    }
    out
}

/// Runs `promtool check metrics` on an exposition and fails the test on any complaint.
pub fn promtool_check(promtool: &str, text: &str) {
    use std::io::Write;
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A shell spinning on one CPU, with `EMPREINTE_PROJECT=project`; killed on drop.
pub struct Busy(Child);

impl Busy {
    pub fn spawn(project: &str) -> Busy {
        Busy(
            Command::new("sh")
                .args(["-c", "while :; do :; done"])
                .env("EMPREINTE_PROJECT", project)
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }

    /// CPU time used so far (user + system), in clock ticks, from `/proc/PID/stat`.
    pub fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.0.id())).unwrap();
        let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = after_comm.split_whitespace().collect();
        // Fields 14 and 15 of stat(5), counted from `state` (field 3) here.
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
