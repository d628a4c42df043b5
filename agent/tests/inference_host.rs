//! Inference servers on a host the test builds: a fake powercap tree, a fake procfs
//! whose processes listen on the fake servers' ports, and the real attribution. The
//! energy of a process serving two models is split between them by output tokens and
//! conserved to the microjoule; a `vllm serve` process is found and read without any
//! configuration; `agent check` lists the servers and how each maps to a project and
//! models.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::Duration;

use empreinte_agent::attribution;
use empreinte_agent::check::CheckReport;
use empreinte_agent::clock::{MonotonicClock, SampleTime};
use empreinte_agent::config::{AgentConfig, EstimateMode, InferenceEntry, NvmlLibrary};
use empreinte_agent::inference::{self, Inference, Origin, records};
use empreinte_agent::push::batcher::Batcher;
use empreinte_agent::sampler::Sampler;
use empreinte_agent::sources::rapl::Rapl;
use empreinte_shared::wire::{Batch, InferenceServerKind, Limits};
use empreinte_testkit::inference::FakeInferenceServer;
use empreinte_testkit::powercap::FakePowercap;
use empreinte_testkit::procfs::{FakeProcess, FakeProcfs};
use empreinte_testkit::wait::{PATIENCE, wait_for, wait_until};

const BASE_MS: u64 = 1_790_000_000_000;

fn host_config(procfs: &FakeProcfs, fp: &FakePowercap) -> AgentConfig {
    let mut c = AgentConfig {
        procfs_root: procfs.root().to_path_buf(),
        ..AgentConfig::default()
    };
    c.rapl.root = fp.root().to_path_buf();
    c.nvml.library = NvmlLibrary::Off;
    c.estimate.mode = EstimateMode::Off;
    c.inference_scrape.interval = Duration::from_millis(100);
    c.inference_scrape.timeout = Duration::from_millis(100);
    c
}

fn serving_process(procfs: &FakeProcfs, pid: u32, cmdline: &str, project: &str, port: u16) {
    procfs.add(&FakeProcess {
        pid,
        start_ticks: 5_000,
        cpu_ticks: 0,
        cmdline,
        environ: &[("EMPREINTE_PROJECT", project)],
        cgroup: "0::/system.slice/inference.service\n",
    });
    procfs.listen(pid, port);
}

fn reads(inference: &Inference) -> u64 {
    inference.servers().0.iter().map(|s| s.scrapes_total).sum()
}

/// A Triton process serving two models on one CPU: the project's energy is all the
/// process's, split 3:1 by output tokens; every record of the project names its model,
/// the inference records are flagged as allocated, and the batches add up to the
/// host's energy exactly.
#[test]
fn two_models_behind_one_process_share_its_energy_exactly() {
    let mut fp = FakePowercap::intel_two_socket();
    let procfs = FakeProcfs::new();
    let server = FakeInferenceServer::start(InferenceServerKind::Triton, &["llama", "mistral"]);
    serving_process(
        &procfs,
        4242,
        "/opt/tritonserver/bin/tritonserver --model-repository /models",
        "chatbot",
        server.port(),
    );
    let mut config = host_config(&procfs, &fp);
    // Configured without a project: the attribution's project of the process that
    // listens on the port. Discovery finds the same process and does not read it twice.
    config.inference.push(InferenceEntry {
        kind: "triton".into(),
        url: server.url(),
        project: None,
        model: None,
    });
    config.validate("test").unwrap();
    let inference = Inference::start(&config, MonotonicClock::start())
        .unwrap()
        .unwrap();
    wait_for("the server is read", PATIENCE, || {
        inference
            .servers()
            .0
            .iter()
            .any(|s| s.up && s.pid == Some(4242))
    });
    assert_eq!(inference.servers().0.len(), 1, "read once, not twice");

    let rapl = Rapl::open(fp.root()).source.unwrap();
    let mut sampler =
        Sampler::new(vec![Box::new(rapl)]).with_attribution(attribution::build(&config).unwrap());
    sampler.cycle(SampleTime::from_monotonic(Duration::ZERO));
    inference.take(BASE_MS);
    let mut batcher = Batcher::new("0123456789abcdef0123456789abcdef".into(), 5_000);
    let mut batches: Vec<Batch> = Vec::new();
    let steps = 12u64;
    for step in 1..=steps {
        server.serve("llama", 3, 600, 30);
        server.serve("mistral", 1, 200, 10);
        let before = reads(&inference);
        wait_for("two reads after serving", PATIENCE, || {
            reads(&inference) >= before + 2
        });
        for z in fp.zones() {
            fp.advance(&z, 40.0 + step as f64, Duration::from_secs(1));
        }
        procfs.set_ticks(4242, 5_000, 50 * step);
        procfs.set_host_stat(50 * step, 150 * step);
        let end = BASE_MS + 1_000 * step;
        let takes = inference.take(end);
        sampler.set_model_weights(inference::model_weights(&takes));
        sampler.cycle(SampleTime::from_monotonic(Duration::from_secs(step)));
        let recs = records::build(
            &takes,
            end - 1_000,
            end,
            &|pid| sampler.project_of(pid),
            "unassigned",
        );
        let a = sampler.host().attribution.clone().unwrap();
        batches.extend(
            batcher.fold_all(
                end,
                1_000,
                a.projects
                    .iter()
                    .map(|p| (&p.project, p.component, p.source, p.last_uj)),
                &a.models,
                recs,
                &mut |_| 0,
            ),
        );
    }
    batches.extend(batcher.seal());

    // Channels with a component (subzones inside a package's figure have none).
    let host_uj: u64 = sampler
        .host()
        .channels
        .iter()
        .filter(|c| c.channel.component.is_some())
        .map(|c| c.total.0)
        .sum();
    let mut records_uj = 0u64;
    let mut by_model: BTreeMap<Option<String>, u64> = BTreeMap::new();
    let mut counts: BTreeMap<String, (u64, u64, bool)> = BTreeMap::new();
    for b in &batches {
        assert_eq!(b.problems(&Limits::default()), vec![]);
        for r in &b.records {
            records_uj += r.energy_uj;
            if r.project == "chatbot" {
                *by_model.entry(r.model.clone()).or_default() += r.energy_uj;
            } else {
                assert_eq!(r.model, None, "{r:?}");
            }
        }
        for i in &b.inference {
            assert_eq!(i.project, "chatbot", "the attribution's project: {i:?}");
            let c = counts.entry(i.model.clone()).or_default();
            c.0 += i.requests.unwrap_or(0);
            c.1 += i.output_tokens.unwrap_or(0);
            c.2 |= i.allocated;
        }
    }
    assert_eq!(
        records_uj, host_uj,
        "the batches hold the host's energy exactly"
    );
    assert!(host_uj > 0);
    assert_eq!(
        counts,
        BTreeMap::from([
            ("llama".to_string(), (3 * steps, 30 * steps, true)),
            ("mistral".to_string(), (steps, 10 * steps, true)),
        ])
    );
    let (llama, mistral) = (
        by_model[&Some("llama".to_string())],
        by_model[&Some("mistral".to_string())],
    );
    assert_eq!(
        by_model.get(&None),
        None,
        "all of the project's energy is its process's, so all of it has a model: {by_model:?}"
    );
    // 3:1 in every interval, up to a microjoule of rounding per channel and interval.
    let slack = 8 * steps;
    assert!(
        llama.abs_diff(3 * mistral) <= 3 * slack,
        "llama {llama} µJ, mistral {mistral} µJ"
    );
}

/// A `vllm serve` process listening on a port is found, read and counted without any
/// configuration; `agent check` lists it with its project and model, and names what it
/// could not read.
#[test]
fn a_vllm_process_is_found_without_configuration_and_check_lists_it() {
    let fp = FakePowercap::intel_two_socket();
    let procfs = FakeProcfs::new();
    let model = "mistralai/Mistral-7B-Instruct-v0.3";
    let vllm = FakeInferenceServer::start(InferenceServerKind::Vllm, &[model]);
    serving_process(
        &procfs,
        5151,
        &format!(
            "/usr/bin/python3 /usr/local/bin/vllm serve {model} --port {}",
            vllm.port()
        ),
        "assistant",
        vllm.port(),
    );
    // A llama.cpp server started without --metrics: found, answers no metrics.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    drop(silent);
    serving_process(
        &procfs,
        6161,
        "./llama-server -m model.gguf",
        "docs",
        silent_port,
    );
    // A process of no known kind, listening too: never probed.
    serving_process(&procfs, 7171, "nginx -g daemon off;", "web", 8080);
    let mut config = host_config(&procfs, &fp);
    config.inference.push(InferenceEntry {
        kind: "tgi".into(),
        url: format!("http://127.0.0.1:{silent_port}/metrics"),
        project: Some("summaries".into()),
        model: Some("falcon".into()),
    });
    config.validate("test").unwrap();

    let inference = Inference::start(&config, MonotonicClock::start())
        .unwrap()
        .unwrap();
    let found = wait_until("the vllm process is found and read", PATIENCE, || {
        inference
            .servers()
            .0
            .into_iter()
            .find(|s| s.origin == Origin::Discovered && s.up)
    });
    assert_eq!(found.kind, InferenceServerKind::Vllm);
    assert_eq!(found.pid, Some(5151));
    assert_eq!(
        found.url,
        format!("http://127.0.0.1:{}/metrics", vllm.port())
    );
    inference.take(BASE_MS);
    vllm.serve(model, 7, 700, 70);
    let mut output = 0;
    wait_for("the counts are taken", PATIENCE, || {
        for t in inference.take(BASE_MS) {
            if t.info.pid == Some(5151) {
                output += t.taken.models.get(model).map_or(0, |c| c.counts[3]);
            }
        }
        output >= 70
    });
    assert_eq!(output, 70);
    let unread = inference.servers().1;
    assert_eq!(unread.len(), 1, "{unread:?}");
    assert_eq!(unread[0].pid, 6161);

    let report = CheckReport::run(&config);
    let text = report.to_text();
    let section = &text[text.find("Inference servers").unwrap()..];
    let url = format!("http://127.0.0.1:{}/metrics", vllm.port());
    for expected in [
        format!("vllm      {url}  (found: pid 5151)"),
        "      project  assistant  (".to_string(),
        format!("      model    {model}\n"),
        format!("tgi       http://127.0.0.1:{silent_port}/metrics  (configured)"),
        "      project  summaries  (configured ([[inference]] project))".to_string(),
        "      NOT READ: ".to_string(),
        "llamacpp  pid 6161 ./llama-server -m model.gguf".to_string(),
        "llama-server --metrics".to_string(),
    ] {
        assert!(
            section.contains(&expected),
            "{expected:?} missing from:\n{section}"
        );
    }
    assert!(!section.contains("nginx"), "{section}");
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(
        json["inference"][1]["resolved_project"], "assistant",
        "{json}"
    );
}
