//! Energy per request from end to end: the real agent binary on a host the test builds
//! (a fake powercap tree, a fake NVML library, a fake procfs in which a server process
//! listens on the port of a fake inference server speaking its kind's text format)
//! pushes to the real collector.
//!
//! - A `vllm serve` process: `/api/v1/inference` gives the requests and tokens exactly
//!   (the server restarts, counters back to 0, and is unreachable for 30 s of its
//!   counting mid-run), every joule the host was given is stored, and the joules per
//!   request and watt-hours per 1,000 output tokens are within 1 % of the ground truth:
//!   the energy the test gave the host over the requests and tokens it served. A v1 push
//!   (an agent not upgraded yet) to the same collector is stored exactly beside.
//! - A `tritonserver` process serving two models: each model's counts exact, both
//!   flagged as allocated, their energy adding up to the host's to the microjoule, split
//!   by output tokens within 1 % of the test's computation.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use empreinte_shared::wire::InferenceServerKind;
use empreinte_testkit::inference::FakeInferenceServer;
use empreinte_testkit::load::{Load, TWO_SOCKET_STEPS_UJ, given_uj, step};
use empreinte_testkit::nvml::{self, FakeGpu, FakeNvml, Scenario};
use empreinte_testkit::powercap::FakePowercap;
use empreinte_testkit::procfs::{FakeProcess, FakeProcfs};
use serde_json::Value;

const PID: u32 = 4242;
const MODEL: &str = "llama-3.1-8b";
/// GPU energy per load step, mJ (450 W over 20 ms).
const GPU_STEP_MJ: u64 = 9_000;

/// What the server answers per load step, for one model.
#[derive(Clone, Copy)]
struct Serve {
    model: &'static str,
    requests: u64,
    input: u64,
    output: u64,
}

/// The vLLM test's one model.
const VLLM_SERVES: [Serve; 1] = [Serve {
    model: MODEL,
    requests: 1,
    input: 517,
    output: 131,
}];

/// The fake host and what the test gave it: the ground truth.
struct Host {
    fp: FakePowercap,
    nvml: FakeNvml,
    scenario: Scenario,
    procfs: FakeProcfs,
    server: FakeInferenceServer,
    serves: Vec<Serve>,
    ticks: u64,
    gpu_mj: u64,
    /// Per model: requests, input tokens, output tokens served so far.
    counted: BTreeMap<&'static str, (u64, u64, u64)>,
}

impl Host {
    /// One step of load: the serving process uses the CPU (all the host's busy time),
    /// the packages, DRAM and GPU draw energy, and the server answers requests.
    ///
    /// The host's `/proc/stat` stays still: the process's CPU time alone splits the CPU
    /// energy (two files written one after the other could be read between the two
    /// writes). Its time is written before the energy.
    fn step(&mut self) {
        self.ticks += 2;
        self.procfs.set_ticks(PID, 1_000, self.ticks);
        step(&mut self.fp, &TWO_SOCKET_STEPS_UJ, 1);
        self.gpu_mj += GPU_STEP_MJ;
        self.scenario.gpus[0].energy_mj = Some(self.gpu_mj);
        self.nvml.play(&self.scenario);
        for s in &self.serves {
            self.server.serve(s.model, s.requests, s.input, s.output);
            let c = self.counted.entry(s.model).or_default();
            c.0 += s.requests;
            c.1 += s.input;
            c.2 += s.output;
        }
    }

    fn given_uj(&self) -> u64 {
        given_uj(&self.fp, &TWO_SOCKET_STEPS_UJ) + self.gpu_mj * 1_000
    }

    fn counts(&self, model: &str) -> (u64, u64, u64) {
        self.counted.get(model).copied().unwrap_or_default()
    }
}

/// Runs `steps` load steps at the load's pace and returns the host.
fn run_load(host: Host, steps: u64) -> Host {
    let done = Arc::new(AtomicU64::new(0));
    let load = {
        let done = done.clone();
        Load::start(host, Duration::from_millis(20), move |h| {
            if done.load(Ordering::SeqCst) < steps {
                h.step();
                done.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    wait_for(&format!("{steps} load steps"), PATIENCE, || {
        done.load(Ordering::SeqCst) >= steps
    });
    load.finish()
}

fn model_row(collector: &Collector, reader: &str, model: &str) -> Option<Value> {
    collector.get(reader, "/api/v1/inference?group_by=model")["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == model)
        .cloned()
}

/// Waits until the collector has stored every request and token the server counted, for
/// every model; gives the rows.
fn wait_counted(collector: &Collector, reader: &str, host: &Host) -> BTreeMap<String, Value> {
    wait_until(
        "the collector to count every request and token",
        PATIENCE,
        || {
            let mut rows = BTreeMap::new();
            for s in &host.serves {
                let (requests, input, output) = host.counts(s.model);
                let row = model_row(collector, reader, s.model)?;
                let exact = row["requests"] == requests
                    && row["output_tokens"] == output
                    && row["input_tokens"] == input;
                if !exact {
                    return None;
                }
                rows.insert(s.model.to_string(), row);
            }
            Some(rows)
        },
    )
}

fn host_uj(collector: &Collector, reader: &str, host: &str) -> Option<u64> {
    collector.get(
        reader,
        "/api/v1/footprint?from=2020-01-01&to=2100-01-01&group_by=host",
    )["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == host)
        .map(|r| r["exact"]["energy_uj"].as_u64().unwrap())
}

fn assert_within_1pct(got: &Value, truth: f64, what: &str) {
    let got = got
        .as_f64()
        .unwrap_or_else(|| panic!("{what} is not a number: {got}"));
    assert!(
        (got - truth).abs() <= truth * 0.01,
        "{what}: {got} against the ground truth {truth} (±1 %)"
    );
}

/// A collector, and an agent on a host whose one process (`cmdline`, project `chat`,
/// the GPU's only process) serves `models` with a fake server of `kind`, found by the
/// agent's discovery (no `[[inference]]` configuration).
struct Bench {
    dir: tempfile::TempDir,
    collector: Collector,
    reader: String,
    agent: Agent,
    host: Host,
}

fn bench(kind: InferenceServerKind, cmdline: &str, serves: &[Serve]) -> Bench {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("collector");
    std::fs::create_dir_all(&data).unwrap();
    let collector_config = dir.path().join("collector.toml");
    std::fs::write(
        &collector_config,
        "[default_site]\nname = \"lab\"\nzone = \"FR\"\n",
    )
    .unwrap();
    let port = free_port();
    let token = create_token(&data, "agent", Some("gpu-01"));
    let reader = create_token(&data, "read", None);
    let collector = Collector::spawn(
        &data,
        port,
        &["--config", collector_config.to_str().unwrap()],
    );
    let models: Vec<&str> = serves.iter().map(|s| s.model).collect();
    let server = FakeInferenceServer::start(kind, &models);
    let procfs = FakeProcfs::new();
    let cmdline = cmdline.replace("{port}", &server.port().to_string());
    procfs.add(&FakeProcess {
        pid: PID,
        start_ticks: 1_000,
        cpu_ticks: 0,
        cmdline: &cmdline,
        environ: &[("EMPREINTE_PROJECT", "chat")],
        cgroup: "0::/system.slice/inference.service\n",
    });
    procfs.listen(PID, server.port());
    let fp = FakePowercap::intel_two_socket();
    // No power reading: the counter alone is the ground truth (a fixed power reading
    // would contradict the load's pace, and the agent would rightly distrust it).
    let mut gpu = FakeGpu::new(0, "NVIDIA H100 80GB HBM3");
    gpu.power_mw = None;
    let scenario = Scenario {
        gpus: vec![gpu],
        processes: vec![nvml::FakeProcess::new(0, PID, Some(40 << 30))],
        ..Scenario::default()
    };
    let nvml = FakeNvml::new(&scenario);
    let token_file = dir.path().join("agent.token");
    std::fs::write(&token_file, &token).unwrap();
    let agent_config = dir.path().join("agent.toml");
    std::fs::write(
        &agent_config,
        format!(
            "[push]\ncollector = \"http://127.0.0.1:{port}\"\ntoken_file = \"{}\"\nagent_id = \"gpu-01\"\nbatch_interval = \"1s\"\nspool_dir = \"{}\"\n\n[inference_scrape]\ninterval = \"100ms\"\ntimeout = \"100ms\"\n",
            token_file.display(),
            dir.path().join("spool").display()
        ),
    )
    .unwrap();
    let agent = Agent::spawn(&[
        "--config",
        agent_config.to_str().unwrap(),
        "--interval",
        "200ms",
        "--powercap-root",
        fp.root().to_str().unwrap(),
        "--nvml-library",
        nvml.library().to_str().unwrap(),
        "--procfs-root",
        procfs.root().to_str().unwrap(),
    ]);
    let host = Host {
        fp,
        nvml,
        scenario,
        procfs,
        server,
        serves: serves.to_vec(),
        ticks: 0,
        gpu_mj: 0,
        counted: BTreeMap::new(),
    };
    // The server is found and read (its models known, nothing served yet) before the
    // host draws any energy: every joule given from now on serves the models.
    wait_counted(&collector, &reader, &host);
    Bench {
        dir,
        collector,
        reader,
        agent,
        host,
    }
}

/// Waits until the agent has measured every joule given and the collector stored it;
/// gives the host's energy (µJ).
fn wait_all_stored(collector: &Collector, reader: &str, agent: &Agent, host: &Host) -> u64 {
    agent.wait_cycles(2);
    let measured = measured_uj(agent);
    let given = host.given_uj();
    assert_eq!(
        measured, given,
        "the agent measured what the host was given"
    );
    wait_for("the collector to store every joule", PATIENCE, || {
        host_uj(collector, reader, "gpu-01") == Some(measured)
    });
    given
}

#[test]
fn counts_are_exact_and_energy_per_request_is_within_one_percent_end_to_end() {
    let b = bench(
        InferenceServerKind::Vllm,
        "python3 -m vllm.entrypoints.openai.api_server --model llama-3.1-8b --port {port}",
        &VLLM_SERVES,
    );
    let old_token = create_token(&b.dir.path().join("collector"), "agent", Some("old-01"));
    let Bench {
        dir: _dir,
        collector,
        reader,
        agent,
        mut host,
    } = b;

    // Phase 1; then the server restarts (its counters back to 0) once the collector has
    // every count of phase 1.
    host = run_load(host, 200);
    wait_counted(&collector, &reader, &host);
    host.server.restart();
    // Phase 2, with the server unreachable for 30 s: what it counts meanwhile (60 steps
    // of load, then none) is carried by the next read.
    host = run_load(host, 100);
    host.server.set_reachable(false);
    let down_ms = empreinte_collector::clock::now_unix_ms();
    host = run_load(host, 60);
    let errors = || -> f64 {
        agent
            .samples()
            .iter()
            .filter(|s| s.metric == "empreinte_inference_scrape_errors_total")
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
                ref v => panic!("{v:?}"),
            })
            .sum()
    };
    wait_for("the server to be unreachable for 30 s", PATIENCE, || {
        empreinte_collector::clock::now_unix_ms() >= down_ms + 30_000 && errors() >= 100.0
    });
    host.server.set_reachable(true);
    host = run_load(host, 100);
    wait_counted(&collector, &reader, &host);
    assert_eq!(host.counts(MODEL).0, 460);

    // Every joule the agent measured reaches the collector.
    let given = wait_all_stored(&collector, &reader, &agent, &host);
    let row = model_row(&collector, &reader, MODEL).unwrap();
    let (requests, input, output) = host.counts(MODEL);
    assert_eq!(row["requests"], requests);
    assert_eq!(row["input_tokens"], input);
    assert_eq!(row["output_tokens"], output);
    assert_eq!(row["servers"], serde_json::json!(["vllm"]));
    assert!(
        row["resets"].as_u64().unwrap() >= 1,
        "the restart is seen: {row}"
    );
    // The outage is recorded as a gap: all of it but the part of each sampling cycle
    // that straddles a batch boundary before the boundary (a record is cut to its
    // batch's span, and its gap with it: up to one cycle, 200 ms, per 1 s batch).
    let gap_s = row["gap_s"].as_f64().unwrap();
    assert!(
        (24.0..=32.0).contains(&gap_s),
        "the 30 s outage is recorded as a gap: {row}"
    );
    // The serving process had all the CPU time and was the GPU's only process: all the
    // host's energy serves the model. The ground truth is the energy the test gave the
    // host, over the requests and tokens its server counted.
    let attributed = projects_uj(&debug(&agent))["chat"];
    assert_eq!(
        row["energy_uj"], attributed,
        "every joule of the model stored with its counts"
    );
    let truth_j = given as f64 / 1e6;
    assert_within_1pct(
        &row["joules_per_request"],
        truth_j / requests as f64,
        "J per request",
    );
    assert_within_1pct(
        &row["wh_per_1k_output_tokens"],
        truth_j / 3600.0 / (output as f64 / 1000.0),
        "Wh per 1,000 output tokens",
    );
    assert!(row["co2e_g_per_request"].as_f64().unwrap() > 0.0, "{row}");
    assert_eq!(row["allocated"], false);

    // An agent of version 1 pushes to the same collector: stored exactly beside.
    let s = (empreinte_collector::clock::now_unix_ms() / 1000 - 120) * 1000;
    let v1 = serde_json::json!({
        "version": 1,
        "agent": { "agent_id": "old-01", "hostname": "old-01", "agent_version": "0.1.0" },
        "spool": { "batches": 1, "bytes": 0, "oldest_start_unix_ms": null, "dropped_batches_total": 0 },
        "batches": [{
            "run_id": format!("{:032x}", 1), "seq": 1, "start_unix_ms": s, "end_unix_ms": s + 60_000,
            "records": [{ "project": "web", "component": "cpu", "source": "rapl",
                "start_unix_ms": s, "end_unix_ms": s + 60_000, "energy_uj": 123_456_789u64 }],
            "counters": [],
        }],
    });
    let status = ureq::post(&format!("{}/api/v1/ingest", collector.base))
        .header("Authorization", &format!("Bearer {old_token}"))
        .header("Content-Type", "application/json")
        .send(serde_json::to_vec(&v1).unwrap().as_slice())
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 200);
    assert_eq!(host_uj(&collector, &reader, "old-01"), Some(123_456_789));
    assert_eq!(host_uj(&collector, &reader, "gpu-01"), Some(given));
    let (status, err) = agent.terminate();
    assert!(status.success(), "{status}: {err}");
}

/// A Triton process serving two models, found by its command line: the first model
/// answers three requests for each of the second's, with four times its output tokens.
#[test]
fn two_models_behind_one_process_are_counted_exactly_and_share_its_energy_to_the_microjoule() {
    let serves = [
        Serve {
            model: "llama",
            requests: 3,
            input: 600,
            output: 120,
        },
        Serve {
            model: "mistral",
            requests: 1,
            input: 200,
            output: 30,
        },
    ];
    let Bench {
        dir: _dir,
        collector,
        reader,
        agent,
        mut host,
    } = bench(
        InferenceServerKind::Triton,
        "/opt/tritonserver/bin/tritonserver --model-repository /models --http-port {port}",
        &serves,
    );
    host = run_load(host, 150);
    wait_counted(&collector, &reader, &host);
    let given = wait_all_stored(&collector, &reader, &agent, &host);
    // The models' energy reaches the collector with the last batches.
    let rows = wait_until(
        "the models' energy to add up to the host's",
        PATIENCE,
        || {
            let now = wait_counted(&collector, &reader, &host);
            let sum: u64 = now.values().map(|r| r["energy_uj"].as_u64().unwrap()).sum();
            (sum == given).then_some(now)
        },
    );
    // Counts exact per model, both flagged as allocated shares of one process.
    for s in &serves {
        let row = &rows[s.model];
        let (requests, input, output) = host.counts(s.model);
        assert_eq!(
            (
                row["requests"].as_u64(),
                row["input_tokens"].as_u64(),
                row["output_tokens"].as_u64()
            ),
            (Some(requests), Some(input), Some(output)),
            "{}: {row}",
            s.model
        );
        assert_eq!(row["allocated"], true, "{row}");
        assert_eq!(row["servers"], serde_json::json!(["triton"]));
    }
    // Conserved to the microjoule: the models' energy is the host's, all of it.
    let attributed = projects_uj(&debug(&agent));
    assert_eq!(attributed.get("chat"), Some(&given), "{attributed:?}");
    let by_model: BTreeMap<&str, u64> = serves
        .iter()
        .map(|s| (s.model, rows[s.model]["energy_uj"].as_u64().unwrap()))
        .collect();
    assert_eq!(by_model.values().sum::<u64>(), given, "{by_model:?}");
    // Split by output tokens (120 : 30 per step): the ground truth the test computes.
    let total_output: u64 = serves.iter().map(|s| host.counts(s.model).2).sum();
    for s in &serves {
        let (requests, _, output) = host.counts(s.model);
        let truth_j = given as f64 / 1e6 * output as f64 / total_output as f64;
        assert_within_1pct(
            &rows[s.model]["joules_per_request"],
            truth_j / requests as f64,
            &format!("{} J per request", s.model),
        );
        assert_within_1pct(
            &rows[s.model]["wh_per_1k_output_tokens"],
            truth_j / 3600.0 / (output as f64 / 1000.0),
            &format!("{} Wh per 1,000 output tokens", s.model),
        );
    }
    let (status, err) = agent.terminate();
    assert!(status.success(), "{status}: {err}");
}
