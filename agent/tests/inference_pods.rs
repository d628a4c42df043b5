#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Inference servers in Kubernetes pods: a fake API server lists this node's pods, one
//! annotated `empreinte.io/inference: "vllm:<port>"` whose process (in the pod's cgroup,
//! with a command line no host scan recognises) listens on the port of a fake vLLM
//! server. The server is found from the annotation alone, read at the pod IP, counted
//! exactly under the project the attribution gives the pod (its namespace) with the
//! model's energy tagged; a pod whose annotation does not read is named with the reason;
//! a pod gone from the list stops being read; `agent check` lists it all.

use std::time::Duration;

use empreinte_agent::attribution;
use empreinte_agent::check::CheckReport;
use empreinte_agent::clock::{MonotonicClock, SampleTime};
use empreinte_agent::config::{AgentConfig, EstimateMode, KubeMode, NvmlLibrary};
use empreinte_agent::inference::{self, Inference, Origin, records};
use empreinte_agent::sampler::Sampler;
use empreinte_agent::sources::rapl::Rapl;
use empreinte_shared::wire::InferenceServerKind;
use empreinte_testkit::inference::FakeInferenceServer;
use empreinte_testkit::kube::FakeApiServer;
use empreinte_testkit::powercap::FakePowercap;
use empreinte_testkit::procfs::{FakeProcess, FakeProcfs};
use empreinte_testkit::wait::{PATIENCE, wait_for, wait_until};

const BASE_MS: u64 = 1_790_000_000_000;
const UID: &str = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
const BAD_UID: &str = "11111111-2222-3333-4444-555555555555";
const PENDING_UID: &str = "66666666-7777-8888-9999-aaaaaaaaaaaa";
const MODEL: &str = "meta-llama/Llama-3.1-8B-Instruct";
const PID: u32 = 4343;

fn pod_cgroup(uid: &str, container: char) -> String {
    format!(
        "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{}.scope\n",
        uid.replace('-', "_"),
        container.to_string().repeat(64)
    )
}

fn pods_json(port: u16, with_server: bool) -> String {
    let server = format!(
        r#"{{"metadata":{{"uid":"{UID}","namespace":"chatbot","name":"vllm-0","labels":{{"app":"vllm"}},
            "annotations":{{"empreinte.io/inference":"vllm:{port}"}}}},
          "status":{{"phase":"Running","podIP":"127.0.0.1"}}}}"#
    );
    let bad = format!(
        r#"{{"metadata":{{"uid":"{BAD_UID}","namespace":"search","name":"ollama-0",
            "annotations":{{"empreinte.io/inference":"ollama:11434"}}}},
          "status":{{"podIP":"127.0.0.2"}}}}"#
    );
    let pending = format!(
        r#"{{"metadata":{{"uid":"{PENDING_UID}","namespace":"chatbot","name":"tgi-0",
            "annotations":{{"empreinte.io/inference":"tgi:3000"}}}},"status":{{"phase":"Pending"}}}}"#
    );
    match with_server {
        true => format!("[{server},{bad},{pending}]"),
        false => format!("[{bad},{pending}]"),
    }
}

#[test]
fn an_annotated_pod_is_found_read_and_attributed_and_check_lists_it() {
    let api = FakeApiServer::start();
    let vllm = FakeInferenceServer::start(InferenceServerKind::Vllm, &[MODEL]);
    api.set_items_json(&pods_json(vllm.port(), true));
    let procfs = FakeProcfs::new();
    // The pod's pause container, then its server: a command line no scan of the host
    // would recognise; the annotation alone says it serves.
    procfs.add(&FakeProcess {
        pid: PID - 43,
        start_ticks: 900,
        cpu_ticks: 0,
        cmdline: "/pause",
        environ: &[],
        cgroup: &pod_cgroup(UID, 'a'),
    });
    procfs.add(&FakeProcess {
        pid: PID,
        start_ticks: 1_000,
        cpu_ticks: 0,
        cmdline: "/usr/bin/python3 /app/serve.py --port 8000",
        environ: &[],
        cgroup: &pod_cgroup(UID, 'b'),
    });
    procfs.listen(PID, vllm.port());
    let mut fp = FakePowercap::intel_two_socket();
    let mut config = AgentConfig {
        procfs_root: procfs.root().to_path_buf(),
        ..AgentConfig::default()
    };
    config.rapl.root = fp.root().to_path_buf();
    config.nvml.library = NvmlLibrary::Off;
    config.estimate.mode = EstimateMode::Off;
    config.inference_scrape.interval = Duration::from_millis(100);
    config.inference_scrape.timeout = Duration::from_millis(100);
    let k = &mut config.attribution.kubernetes;
    k.mode = KubeMode::Api;
    k.url = api.url.clone();
    k.token_file = None;
    k.node_name = Some("worker-1".into());
    k.refresh = Duration::from_millis(100);
    config.validate("test").unwrap();

    // One pod lookup for both: the attribution's, which the reader shares.
    let attributor = attribution::build(&config).unwrap();
    let pods = attributor.annotated_pods();
    assert!(pods.is_some(), "the pod lookup is on");
    let inference = Inference::start_with_pods(&config, MonotonicClock::start(), pods)
        .unwrap()
        .unwrap();
    let found = wait_until("the annotated pod's server is read", PATIENCE, || {
        inference
            .servers()
            .0
            .into_iter()
            .find(|s| s.origin == Origin::Kubernetes && s.up)
    });
    assert_eq!(found.kind, InferenceServerKind::Vllm);
    assert_eq!(
        found.url,
        format!("http://127.0.0.1:{}/metrics", vllm.port())
    );
    assert_eq!(found.pid, Some(PID), "the pod's process that listens");
    let pod = found.pod.clone().unwrap();
    assert_eq!(
        (pod.uid.as_str(), pod.namespace.as_str(), pod.name.as_str()),
        (UID, "chatbot", "vllm-0")
    );
    assert_eq!(
        inference.servers().0.len(),
        1,
        "one server: {:?}",
        inference.servers().0
    );
    let unread = inference.servers().1;
    assert_eq!(unread.len(), 1, "{unread:?}");
    assert!(unread[0].cmdline.contains("search/ollama-0"), "{unread:?}");
    assert!(
        unread[0].reason.contains("unknown server kind \"ollama\""),
        "{unread:?}"
    );

    // Counted exactly, under the pod's project, the model's energy tagged.
    let rapl = Rapl::open(fp.root()).source.unwrap();
    let mut sampler = Sampler::new(vec![Box::new(rapl)]).with_attribution(attributor);
    sampler.cycle(SampleTime::from_monotonic(Duration::ZERO));
    inference.take(BASE_MS);
    let (mut requests, mut output, mut model_uj) = (0u64, 0u64, 0u64);
    for step in 1..=5u64 {
        vllm.serve(MODEL, 4, 400, 80);
        let before: u64 = inference.servers().0.iter().map(|s| s.scrapes_total).sum();
        wait_for("a read after serving", PATIENCE, || {
            inference
                .servers()
                .0
                .iter()
                .map(|s| s.scrapes_total)
                .sum::<u64>()
                >= before + 2
        });
        for z in fp.zones() {
            fp.advance(&z, 60.0, Duration::from_secs(1));
        }
        procfs.set_ticks(PID, 1_000, 40 * step);
        procfs.set_host_stat(40 * step, 160 * step);
        let end = BASE_MS + 1_000 * step;
        let takes = inference.take(end);
        sampler.set_model_weights(inference::model_weights(&takes));
        sampler.cycle(SampleTime::from_monotonic(Duration::from_secs(step)));
        for r in records::build(
            &takes,
            end - 1_000,
            end,
            &|pid| sampler.project_of(pid),
            "unassigned",
        ) {
            assert_eq!(r.project, "chatbot", "the pod's namespace: {r:?}");
            assert_eq!(r.model, MODEL);
            requests += r.requests.unwrap_or(0);
            output += r.output_tokens.unwrap_or(0);
        }
        let a = sampler.host().attribution.clone().unwrap();
        model_uj += a
            .models
            .iter()
            .filter(|m| &*m.project == "chatbot" && &*m.model == MODEL)
            .map(|m| m.last_uj)
            .sum::<u64>();
    }
    assert_eq!((requests, output), (20, 400));
    assert!(model_uj > 0, "the pod's process energy is the model's");

    // `agent check` lists the pod's server with its project and model, and the pod whose
    // annotation does not read.
    let report = CheckReport::run(&config);
    let text = report.to_text();
    let section = &text[text.find("Inference servers").unwrap()..];
    for expected in [
        format!(
            "vllm      http://127.0.0.1:{}/metrics  (pod chatbot/vllm-0: annotated, pid {PID})",
            vllm.port()
        ),
        "      project  chatbot  (".to_string(),
        format!("      model    {MODEL}\n"),
        "pod search/ollama-0 (empreinte.io/inference: \"ollama:11434\")".to_string(),
        "NOT READ: empreinte.io/inference: unknown server kind \"ollama\"".to_string(),
    ] {
        assert!(
            section.contains(&expected),
            "{expected:?} missing from:\n{section}"
        );
    }

    // The pod leaves the node: its server is no longer read.
    api.set_items_json(&pods_json(vllm.port(), false));
    // A miss asks the lookup for a new list, as a new process would.
    procfs.add(&FakeProcess {
        pid: 5555,
        start_ticks: 2_000,
        cpu_ticks: 0,
        cmdline: "/pause",
        environ: &[],
        cgroup: &pod_cgroup(PENDING_UID, 'c'),
    });
    wait_for("the pod's server leaves", PATIENCE, || {
        sampler.cycle(SampleTime::from_monotonic(Duration::from_secs(10)));
        inference.take(BASE_MS + 10_000);
        inference.servers().0.is_empty()
    });
}
