//! A real Prometheus (Debian's package) scrapes the real collector, two real agents on
//! fake hardware (one measured by RAPL and a fake NVML GPU, one on the estimate whose
//! pushes the collector refuses), a target that is down; host A reads a fake vLLM server
//! (a process of project alpha) and pushes its counts, which the inference dashboard
//! reads from the collector (no scrape of the server). It loads deploy/prometheus/rules.yml. Every expression of every dashboard panel and
//! variable, in both languages, and every rule, returns data through Prometheus's HTTP
//! API; every alert fires or is pending; and the dashboards' energy figures equal what
//! the agents measured and what the collector stored.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod dashgen;
mod tools;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::Duration;

use common::*;
use empreinte_testkit::load::{Load, TWO_SOCKET_STEPS_UJ, step};
use empreinte_testkit::nvml::{FakeGpu, FakeNvml, Scenario};
use empreinte_testkit::powercap::FakePowercap;
use serde_json::Value;

/// Millijoules the fake GPU draws per load step.
const GPU_STEP_MJ: u64 = 12_345;

/// A Prometheus server on a free port with its own storage, killed on drop.
struct Prometheus {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(binary: &str, config: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn prometheus");
        let mut p = Prometheus {
            child,
            base: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        for _ in 0..400 {
            if ureq::get(&format!("{}/-/ready", p.base)).call().is_ok() {
                return p;
            }
            if let Some(status) = p.child.try_wait().unwrap() {
                let log = std::fs::read_to_string(p._dir.path().join("prometheus.log"))
                    .unwrap_or_default();
                panic!("prometheus exited with {status}: {log}");
            }
            sleep(Duration::from_millis(50));
        }
        panic!("prometheus not ready within 20 s");
    }

    fn api(&self, path: &str, query: Option<&str>) -> Value {
        let mut req = ureq::get(&format!("{}{path}", self.base));
        if let Some(q) = query {
            req = req.query("query", q);
        }
        let text = match req.call() {
            Ok(mut r) => r.body_mut().read_to_string().unwrap(),
            Err(ureq::Error::StatusCode(code)) => {
                panic!("{path} {query:?}: HTTP {code} (a malformed expression?)")
            }
            Err(e) => panic!("{path}: {e}"),
        };
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["status"], "success", "{path} {query:?}: {text}");
        v["data"].clone()
    }

    /// The instant vector of `expr` now: each series' labels and value.
    fn query(&self, expr: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        let data = self.api("/api/v1/query", Some(expr));
        match data["resultType"].as_str().unwrap() {
            "vector" => data["result"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    let labels = serde_json::from_value(s["metric"].clone()).unwrap();
                    (labels, s["value"][1].as_str().unwrap().parse().unwrap())
                })
                .collect(),
            "scalar" => vec![(
                BTreeMap::new(),
                data["result"][1].as_str().unwrap().parse().unwrap(),
            )],
            other => panic!("{expr}: result type {other}"),
        }
    }

    fn scalar(&self, expr: &str) -> f64 {
        let r = self.query(expr);
        assert_eq!(r.len(), 1, "{expr}: {r:?}");
        r[0].1
    }

    /// Waits until Prometheus has scraped every target matching `selector` after now.
    fn wait_scrape_after_now(&self, selector: &str) {
        let now = self.scalar("time()");
        for _ in 0..400 {
            let ts = self.query(&format!("timestamp(up{{{selector}}})"));
            if !ts.is_empty() && ts.iter().all(|(_, t)| *t > now) {
                return;
            }
            sleep(Duration::from_millis(50));
        }
        panic!("no scrape of {{{selector}}} within 20 s");
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A vLLM server in a process of its own, of project alpha (`EMPREINTE_PROJECT`): every
/// read of its /metrics finds 10 more successful requests and 2,500 more generated
/// tokens of model llama-3.1-8b, and it keeps a CPU a tenth busy, so that the agent that
/// reads it has energy to tag with the model. Killed on drop.
struct FakeVllm {
    child: Child,
    port: u16,
}

const FAKE_VLLM: &str = r##"
import http.server, sys, threading, time
reads = [0]
class Metrics(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        reads[0] += 1
        n = reads[0]
        body = ("# HELP vllm:request_success_total Count of successfully processed requests.\n"
                "# TYPE vllm:request_success_total counter\n"
                'vllm:request_success_total{finished_reason="stop",model_name="llama-3.1-8b"} %d\n'
                "# HELP vllm:generation_tokens_total Number of generation tokens processed.\n"
                "# TYPE vllm:generation_tokens_total counter\n"
                'vllm:generation_tokens_total{model_name="llama-3.1-8b"} %d\n') % (n * 10, n * 2500)
        body = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
def work():
    while True:
        end = time.monotonic() + 0.005
        while time.monotonic() < end:
            pass
        time.sleep(0.045)
server = http.server.HTTPServer(("127.0.0.1", 0), Metrics)
threading.Thread(target=work, daemon=True).start()
print(server.server_address[1], flush=True)
server.serve_forever()
"##;

impl FakeVllm {
    fn start() -> FakeVllm {
        let mut child = Command::new("python3")
            .args(["-c", FAKE_VLLM])
            .env("EMPREINTE_PROJECT", "alpha")
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs the fake vLLM server (Debian package python3)");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{line:?}: {e}"));
        FakeVllm { child, port }
    }
}

impl Drop for FakeVllm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The agent's `[[inference]]` entry for the fake vLLM: no project, no model (the
/// attribution gives the serving process's project, the server's labels the model).
fn inference_config(vllm: &FakeVllm) -> String {
    format!(
        "[inference_scrape]\ninterval = \"500ms\"\ntimeout = \"500ms\"\n\n[[inference]]\nkind = \"vllm\"\nurl = \"http://127.0.0.1:{}/metrics\"\n",
        vllm.port
    )
}

fn push_config(dir: &Path, host: &str, port: u16, token: &str, extra: &str) -> String {
    let token_file = dir.join(format!("{host}.token"));
    std::fs::write(&token_file, token).unwrap();
    let path = dir.join(format!("{host}.toml"));
    std::fs::write(
        &path,
        format!(
            "{extra}\n[push]\ncollector = \"http://127.0.0.1:{port}\"\ntoken_file = \"{}\"\nagent_id = \"{host}\"\nbatch_interval = \"1s\"\nspool_dir = \"{}\"\n",
            token_file.display(),
            dir.join(format!("{host}-spool")).display()
        ),
    )
    .unwrap();
    path.to_str().unwrap().to_string()
}

const REGISTER: &str = r#"
[[use]]
id = "mediatheque"
name = { fr = "Recommandations de la médiathèque", en = "Library recommendations" }
purpose = { fr = "Suggérer des lectures", en = "Suggest books" }
department = "Culture"
service = "Médiathèque"
accountable = "Directrice de la culture"
models = ["llama-3.1-8b"]
status = "pilot"
pilot_from = "2026-01-01"
risk = "minimal"
data = ["public"]
decision = "Comité numérique 2026-01"
hosting = { kind = "on_site", site = "lab" }
projects = ["alpha"]
"#;

/// A dashboard expression as Grafana sends it with every variable at "All".
fn substitute(expr: &str) -> String {
    expr.replace("$__rate_interval", "5s")
        .replace("$__range", "10m")
        .replace("$project", ".*")
        .replace("$site", ".*")
        .replace("$host", ".*")
        .replace("$model", ".*")
        .replace("$department", ".*")
        .replace("$use", ".*")
}

/// `label_values(METRIC, LABEL)` as an instant query, and the label to find.
fn variable_query(expr: &str) -> (String, Option<String>) {
    if let Some(inner) = expr
        .strip_prefix("label_values(")
        .and_then(|r| r.strip_suffix(')'))
    {
        let (metric, label) = inner.rsplit_once(',').unwrap();
        let label = label.trim().to_string();
        (
            format!("count by ({label}) ({})", substitute(metric.trim())),
            Some(label),
        )
    } else {
        (substitute(expr), None)
    }
}

fn assert_close(got: f64, want: f64, what: &str) {
    assert!(
        (got - want).abs() <= 1e-9 * want.abs().max(1.0),
        "{what}: Prometheus says {got}, the agents measured {want}"
    );
}

/// Alerts on energy lost or set aside by an agent: this healthy scenario loses nothing,
/// so they are checked for errors here and shown firing by `rules.test.yml`.
const LOSS_ALERTS: [&str; 2] = ["EmpreinteEnergyLost", "EmpreinteBatchesSetAside"];

#[test]
fn dashboards_and_rules_evaluate_on_a_real_prometheus_and_agree_with_the_agents() {
    let Some(prometheus) = tools::tool("prometheus", "--version", "Debian package prometheus")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("collector");
    std::fs::create_dir_all(&data).unwrap();
    let port = free_port();
    // A budget that the first joules exceed: project alpha is over it from the start.
    let collector_config = dir.path().join("collector.toml");
    // The register declares alpha (department "Culture"); beta is an undeclared use.
    let register = dir.path().join("register.toml");
    std::fs::write(&register, REGISTER).unwrap();
    std::fs::write(
        &collector_config,
        format!("register_file = {:?}\n", register.to_str().unwrap()) + "[default_site]\nname = \"lab\"\nzone = \"FR\"\ntariff_eur_per_kwh = 0.2516\ntariff_source = \"test tariff\"\n\n[[objective]]\nproject = \"alpha\"\nmonthly_energy_kwh = 0.000001\n\n[[inventory]]\nhosts = [\"host-a\"]\npurchase_price_eur = 8760.0\namortisation_years = 1.0\npurchase_source = \"test invoice\"\n",
    )
    .unwrap();
    let collector_args = ["--config", collector_config.to_str().unwrap()];
    let token_a = create_token(&data, "agent", Some("host-a"));
    let token_seed = create_token(&data, "agent", Some("seed"));
    // A well-formed token this collector never issued: host-b's pushes are refused.
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let token_b = create_token(&elsewhere, "agent", Some("host-b"));
    // Prometheus scrapes the collector with a read token, as deploy/prometheus does.
    let scrape_token = dir.path().join("collector-read");
    std::fs::write(&scrape_token, create_token(&data, "read", None)).unwrap();
    let _busy = [Busy::spawn("alpha"), Busy::spawn("beta")];

    // The collector refreshes its budget gauges at start, then every 30 s: a first run
    // stores some of alpha's energy so that the second one starts over budget.
    {
        let collector = Collector::spawn(&data, port, &collector_args);
        let seed_fp = FakePowercap::intel_two_socket();
        let seed = Agent::spawn(&[
            "--config",
            &push_config(dir.path(), "seed", port, &token_seed, ""),
            "--interval",
            "200ms",
            "--powercap-root",
            seed_fp.root().to_str().unwrap(),
            "--nvml-library",
            "off",
        ]);
        seed.wait_cycles(3);
        let mut seed_fp = seed_fp;
        step(&mut seed_fp, &TWO_SOCKET_STEPS_UJ, 10);
        seed.wait_cycles(3);
        let (status, err) = seed.terminate();
        assert!(status.success(), "{status}: {err}");
        collector.kill();
    }
    let collector = Collector::spawn(&data, port, &collector_args);

    let vllm = FakeVllm::start();
    let fp = FakePowercap::intel_two_socket();
    // No power reading: the load thread advances the counter at its own pace, which a
    // fixed power reading would contradict (the agent cross-checks the two and would
    // rightly distrust the counter); the counter alone is the ground truth here.
    let mut gpu = FakeGpu::new(0, "NVIDIA H100 80GB HBM3");
    gpu.power_mw = None;
    let scenario = Scenario {
        gpus: vec![gpu],
        ..Scenario::default()
    };
    let nvml = FakeNvml::new(&scenario);
    let agent_a = Agent::spawn(&[
        "--config",
        &push_config(
            dir.path(),
            "host-a",
            port,
            &token_a,
            &inference_config(&vllm),
        ),
        "--interval",
        "200ms",
        "--powercap-root",
        fp.root().to_str().unwrap(),
        "--nvml-library",
        nvml.library().to_str().unwrap(),
    ]);
    let no_rapl = tempfile::tempdir().unwrap();
    let agent_b = Agent::spawn(&[
        "--config",
        &push_config(
            dir.path(),
            "host-b",
            port,
            &token_b,
            "[estimate]\ncpu_tdp_watts = 100.0\n",
        ),
        "--interval",
        "200ms",
        "--powercap-root",
        no_rapl.path().to_str().unwrap(),
        "--nvml-library",
        "off",
    ]);
    let port_of = |url: &str| {
        url.split(':')
            .nth(2)
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .to_string()
    };
    let (port_a, port_b) = (port_of(&agent_a.url), port_of(&agent_b.url));
    let down = free_port();
    let rules = tools::root().join("deploy/prometheus/rules.yml");
    let prom = Prometheus::start(
        &prometheus,
        &format!(
            r#"global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: ["{rules}"]
scrape_configs:
  - job_name: empreinte-agent
    static_configs:
      - targets: ["127.0.0.1:{port_a}"]
        labels: {{instance: host-a, site: lab}}
      - targets: ["127.0.0.1:{port_b}"]
        labels: {{instance: host-b, site: lab}}
      - targets: ["127.0.0.1:{down}"]
        labels: {{instance: host-c, site: lab}}
  - job_name: empreinte-collector
    authorization: {{credentials_file: "{scrape_token}"}}
    static_configs:
      - targets: ["127.0.0.1:{port}"]
        labels: {{instance: collector}}
"#,
            rules = rules.display(),
            scrape_token = scrape_token.display()
        ),
    );

    // Host A draws power on every RAPL zone and its GPU until told to stop.
    agent_a.wait_cycles(2);
    let load = Load::start(
        (fp, nvml, scenario, 0),
        Duration::from_millis(50),
        |(fp, nvml, scenario, gpu_mj)| {
            step(fp, &TWO_SOCKET_STEPS_UJ, 1);
            *gpu_mj += GPU_STEP_MJ;
            scenario.gpus[0].energy_mj = Some(*gpu_mj);
            nvml.play(scenario);
        },
    );

    // Every query of every dashboard and every rule returns finite numbers, and every
    // rule evaluates without error, every alert pending or firing.
    let queries = dashgen::committed_queries();
    assert!(queries.len() > 80, "{} queries", queries.len());
    let rules = dashgen::rules();
    let mut missing: Vec<String> = Vec::new();
    for _ in 0..120 {
        missing.clear();
        // Host B retries its refused pushes at a slow pace: a client with a wrong token
        // keeps the refusals coming while Prometheus watches.
        let refused = ureq::post(&format!("{}/api/v1/ingest", collector.base))
            .header("Authorization", "Bearer not-a-token")
            .send("{}");
        assert!(
            matches!(refused, Err(ureq::Error::StatusCode(401))),
            "{refused:?}"
        );
        for q in &queries {
            let (expr, label) = variable_query(&q.expr);
            let result = prom.query(&expr);
            let ok = !result.is_empty()
                && result.iter().all(|(labels, v)| {
                    v.is_finite()
                        && label
                            .as_ref()
                            .is_none_or(|l| labels.get(l).is_some_and(|x| !x.is_empty()))
                });
            if !ok {
                missing.push(format!("{} «{}»: {expr} -> {result:?}", q.file, q.panel));
            }
        }
        for (name, expr) in &rules {
            if LOSS_ALERTS.contains(&name.as_str()) {
                continue;
            }
            let result = prom.query(expr);
            if result.is_empty() || result.iter().any(|(_, v)| !v.is_finite()) {
                missing.push(format!("rule {name}: {expr} -> {result:?}"));
            }
        }
        for group in prom.api("/api/v1/rules", None)["groups"]
            .as_array()
            .unwrap()
        {
            for r in group["rules"].as_array().unwrap() {
                let name = r["name"].as_str().unwrap();
                assert_ne!(r["health"], "err", "rule {name}: {}", r["lastError"]);
                if r["health"] != "ok" {
                    missing.push(format!("rule {name} not evaluated yet"));
                } else if r["type"] == "alerting"
                    && r["state"] == "inactive"
                    && !LOSS_ALERTS.contains(&name)
                {
                    missing.push(format!("alert {name} is inactive"));
                }
            }
        }
        if missing.is_empty() {
            break;
        }
        sleep(Duration::from_millis(500));
    }
    assert!(
        missing.is_empty(),
        "no data after 60 s:\n{}",
        missing.join("\n")
    );
    let loaded: usize = prom.api("/api/v1/rules", None)["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["rules"].as_array().unwrap().len())
        .sum();
    assert_eq!(loaded, rules.len(), "rules loaded by Prometheus");

    // Host A's figures, once it stops drawing power: exactly what it measured.
    let (_fp, _nvml, _, _) = load.finish();
    let mut stable = measured_uj(&agent_a);
    for _ in 0..100 {
        agent_a.wait_cycles(2);
        let now = measured_uj(&agent_a);
        if now == stable {
            break;
        }
        stable = now;
    }
    let own = agent_a.samples();
    let b_before: f64 = agent_b
        .samples()
        .iter()
        .filter(|s| s.metric == "empreinte_host_energy_joules_total")
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) => v,
            ref v => panic!("{v:?}"),
        })
        .sum();
    prom.wait_scrape_after_now(r#"instance=~"host-a|host-b""#);
    let checks = dashgen::checked_exprs();
    let host = prom.query(&substitute(&checks["host_energy_kwh"]));
    let mut host_a = 0.0;
    let mut host_b = 0.0;
    for (labels, kwh) in &host {
        let joules = kwh * 3.6e6;
        match labels["instance"].as_str() {
            "host-a" => {
                let want: f64 = own
                    .iter()
                    .filter(|x| {
                        x.metric == "empreinte_host_energy_joules_total"
                            && x.labels.get("component") == Some(labels["component"].as_str())
                            && x.labels.get("source") == Some(labels["source"].as_str())
                    })
                    .map(|x| match x.value {
                        prometheus_parse::Value::Counter(v) => v,
                        ref v => panic!("{v:?}"),
                    })
                    .sum();
                assert!(want > 0.0, "{labels:?} not on host-a");
                assert_close(joules, want, &format!("host-a {labels:?}"));
                host_a += joules;
            }
            "host-b" => {
                assert_eq!(labels["source"], "estimate", "{labels:?}");
                host_b += joules;
            }
            other => panic!("unexpected instance {other}"),
        }
    }
    assert_close(host_a, stable as f64 / 1e6, "host-a, all components");
    let components: Vec<&str> = host
        .iter()
        .filter(|(l, _)| l["instance"] == "host-a")
        .map(|(l, _)| l["component"].as_str())
        .collect();
    assert!(
        components.contains(&"gpu") && components.contains(&"dram"),
        "{components:?}"
    );
    let b_after: f64 = agent_b
        .samples()
        .iter()
        .filter(|s| s.metric == "empreinte_host_energy_joules_total")
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) => v,
            ref v => panic!("{v:?}"),
        })
        .sum();
    assert!(
        b_before > 0.0 && b_before <= host_b * (1.0 + 1e-12) && host_b <= b_after * (1.0 + 1e-12),
        "host-b: Prometheus says {host_b} J, the agent said {b_before} J before the scrape and {b_after} J after"
    );

    // Per project, on the footprint dashboard: what host A attributed.
    let projects = prom.query(&substitute(&checks["project_energy_kwh"]));
    let mut per_project: BTreeMap<String, f64> = BTreeMap::new();
    for (labels, kwh) in &projects {
        if labels["instance"] == "host-a" {
            *per_project.entry(labels["project"].clone()).or_default() += kwh * 3.6e6;
        }
    }
    let attributed = projects_uj(&debug(&agent_a));
    assert_eq!(
        per_project.keys().collect::<Vec<_>>(),
        attributed.keys().collect::<Vec<_>>()
    );
    for (p, uj) in &attributed {
        assert_close(per_project[p], *uj as f64 / 1e6, &format!("project {p}"));
    }
    assert!(
        attributed.get("alpha").copied().unwrap_or(0) > 0,
        "{attributed:?}"
    );

    // The variables filter what they name: project alpha alone, host-b alone.
    let alpha = prom.query(&substitute(
        &checks["project_energy_kwh"].replace("$project", "alpha"),
    ));
    assert!(
        !alpha.is_empty() && alpha.iter().all(|(l, _)| l["project"] == "alpha"),
        "{alpha:?}"
    );
    let b = prom.query(&substitute(
        &checks["host_energy_kwh"].replace("$host", "host-b"),
    ));
    assert!(
        !b.is_empty() && b.iter().all(|(l, _)| l["instance"] == "host-b"),
        "{b:?}"
    );

    // Host A delivers its last batch on SIGTERM: the collector's counters, as Prometheus
    // reads them, hold exactly what it measured, per project (host B's were refused).
    let (status, err) = agent_a.terminate();
    assert!(status.success(), "{status}: {err}");
    let reader = create_token(&data, "read", None);
    let stored = collector.get(
        &reader,
        "/api/v1/footprint?from=2020-01-01&to=2100-01-01&group_by=project&host=host-a",
    );
    assert_eq!(
        stored["total"]["exact"]["energy_uj"].as_u64().unwrap(),
        stable,
        "stored by the collector against measured by host-a"
    );
    let per_project_stored = |query: &str| -> BTreeMap<String, u64> {
        collector.get(&reader, query)["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["key"].as_str().unwrap().to_string(),
                    r["exact"]["energy_uj"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(
        per_project_stored(
            "/api/v1/footprint?from=2020-01-01&to=2100-01-01&group_by=project&host=host-a"
        ),
        attributed,
        "stored per project against attributed by host-a"
    );
    // The footprint counters start from the stored totals (they survive the restart
    // after the seed run): they hold everything stored, the seed host's energy too.
    let all =
        per_project_stored("/api/v1/footprint?from=2020-01-01&to=2100-01-01&group_by=project");
    assert!(all.len() >= attributed.len(), "{all:?}");
    prom.wait_scrape_after_now(r#"job="empreinte-collector""#);
    let footprint = prom.query("sum by (project) (empreinte_footprint_energy_joules_total)");
    let footprint: BTreeMap<String, f64> = footprint
        .into_iter()
        .map(|(l, j)| (l["project"].clone(), j))
        .collect();
    assert_eq!(
        footprint.keys().collect::<Vec<_>>(),
        all.keys().collect::<Vec<_>>()
    );
    for (p, uj) in &all {
        assert_close(footprint[p], *uj as f64 / 1e6, &format!("stored for {p}"));
    }
    // Euros: the cost counters are the stored costs (facility energy × the lab's tariff).
    let costs: BTreeMap<String, u64> = collector.get(
        &reader,
        "/api/v1/costs?from=2020-01-01&to=2100-01-01&group_by=project",
    )["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["key"].as_str().unwrap().to_string(),
                r["cost_ueur"].as_u64().unwrap(),
            )
        })
        .collect();
    let euros: BTreeMap<String, f64> = prom
        .query("sum by (project) (empreinte_footprint_cost_euros_total{site=\"lab\"})")
        .into_iter()
        .map(|(l, v)| (l["project"].clone(), v))
        .collect();
    assert_eq!(
        euros.keys().collect::<Vec<_>>(),
        costs.keys().collect::<Vec<_>>()
    );
    for (p, ueur) in &costs {
        assert_close(euros[p], *ueur as f64 / 1e6, &format!("cost of {p}"));
    }
    // The amortised hardware cost (host-a: 1 €/h), apart: its own counters, equal to
    // the API's hardware rows.
    let hardware: BTreeMap<String, u64> = collector.get(
        &reader,
        "/api/v1/costs?from=2020-01-01&to=2100-01-01&group_by=project",
    )["hardware"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["key"].as_str().unwrap().to_string(),
                r["cost_ueur"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(!hardware.is_empty(), "host-a's time is charged");
    let amortised: BTreeMap<String, f64> = prom
        .query("sum by (project) (empreinte_footprint_hardware_cost_euros_total{site=\"lab\"})")
        .into_iter()
        .map(|(l, v)| (l["project"].clone(), v))
        .collect();
    assert_eq!(
        amortised.keys().collect::<Vec<_>>(),
        hardware.keys().collect::<Vec<_>>()
    );
    for (p, ueur) in &hardware {
        assert_close(
            amortised[p],
            *ueur as f64 / 1e6,
            &format!("hardware cost of {p}"),
        );
    }
    inference_series_are_the_stored_counts(&prom, &collector, &reader);
    let refused =
        prom.scalar(r#"sum(empreinte_collector_refused_pushes_total{reason="unauthenticated"})"#);
    assert!(refused >= 1.0, "host-b's pushes refused: {refused}");
    drop(prom);
}

/// The inference series Prometheus reads from the collector (what the inference dashboard
/// shows) are the counts the collector stored for alpha's model, exactly, and carry the
/// model's energy.
fn inference_series_are_the_stored_counts(prom: &Prometheus, collector: &Collector, reader: &str) {
    // Every month the run may touch, whatever the organisation's time zone.
    let now = jiff::Timestamp::now();
    let mut stored = (0u64, 0u64);
    for days in [-31i64, 0, 31] {
        let month = (now + jiff::SignedDuration::from_hours(24 * days))
            .strftime("%Y-%m")
            .to_string();
        let json = collector.get(
            reader,
            &format!("/api/v1/inference?month={month}&group_by=model"),
        );
        for r in json["rows"].as_array().unwrap() {
            if r["key"] == "llama-3.1-8b" {
                stored.0 += r["requests"].as_u64().unwrap();
                stored.1 += r["output_tokens"].as_u64().unwrap();
            }
        }
    }
    assert!(stored.0 > 0, "no inference counts stored");
    // The collector's stored counts (the agent exports same-named series of its own
    // reads, as the rules' `job` filter also says).
    let one = |expr: &str| {
        let r = prom.query(expr);
        assert_eq!(r.len(), 1, "{expr}: {r:?}");
        assert_eq!(r[0].0["project"], "alpha", "{expr}: {r:?}");
        r[0].1
    };
    let requests = one(
        r#"empreinte_inference_requests_total{job="empreinte-collector",model="llama-3.1-8b"}"#,
    );
    let tokens = one(
        r#"empreinte_inference_tokens_total{job="empreinte-collector",model="llama-3.1-8b",kind="output"}"#,
    );
    assert_eq!(
        (requests as u64, tokens as u64),
        stored,
        "requests and output tokens"
    );
    assert_eq!(
        stored.1,
        stored.0 * 250,
        "the server's 250 tokens per request"
    );
    let joules = one(
        r#"empreinte_inference_energy_joules_total{job="empreinte-collector",model="llama-3.1-8b"}"#,
    );
    assert!(joules > 0.0, "the model's energy: {joules} J");
}
