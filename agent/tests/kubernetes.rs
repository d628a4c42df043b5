//! Pod metadata from a fake Kubernetes API server, and pod processes attributed to
//! projects by the default rules (pod label, then namespace).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use empreinte_agent::attribution::engine::Attributor;
use empreinte_agent::attribution::kube::PodCache;
use empreinte_agent::attribution::procs::ProcFs;
use empreinte_agent::attribution::rules::Resolver;
use empreinte_agent::attribution::users::UserNames;
use empreinte_agent::config::AttributionConfig;
use empreinte_agent::config::{KubeMode, KubernetesConfig};
use empreinte_agent::interval::{ChannelInterval, IntervalEnergy};
use empreinte_shared::{Component, MicroJoules, SourceKind};
use empreinte_testkit::kube::{FakeApiServer, FakePod};
use empreinte_testkit::procfs::{FakeProcess, FakeProcfs};
use empreinte_testkit::wait::wait_until;

const UID_A: &str = "11111111-2222-3333-4444-555555555555";
const UID_B: &str = "66666666-7777-8888-9999-aaaaaaaaaaaa";
const UID_NEW: &str = "bbbbbbbb-cccc-dddd-eeee-ffffffffffff";

fn config(server: &FakeApiServer, token: &std::path::Path) -> KubernetesConfig {
    KubernetesConfig {
        mode: KubeMode::Api,
        url: server.url.clone(),
        token_file: Some(token.to_path_buf()),
        ca_file: None,
        node_name: Some("worker-1".into()),
        refresh: Duration::from_millis(200),
        ..KubernetesConfig::default()
    }
}

#[test]
fn pods_are_listed_for_this_node_with_the_token_cached_and_refreshed_on_a_miss() {
    let server = FakeApiServer::start();
    server.set_pods(&[FakePod {
        uid: UID_A,
        namespace: "chatbot",
        name: "vllm-0",
        labels: &[("app", "vllm")],
    }]);
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cr3t\n").unwrap();
    let mut cache = PodCache::new(&config(&server, &token)).unwrap().unwrap();

    // The list is fetched at start, in the background.
    let pod = wait_until("the first pod list", Duration::from_secs(10), || {
        cache.pod(UID_A)
    });
    assert_eq!(
        (pod.namespace.as_str(), pod.name.as_str()),
        ("chatbot", "vllm-0")
    );
    assert_eq!(pod.labels["app"], "vllm");
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    assert!(
        requests[0].starts_with("GET /api/v1/pods?fieldSelector=spec.nodeName%3Dworker-1 "),
        "{}",
        requests[0]
    );
    assert!(requests[0].contains("Bearer s3cr3t"), "{}", requests[0]);

    // A hit asks nothing; a miss asks the background thread, which lists again at most
    // every `refresh`; the lookup itself answers at once.
    cache.pod(UID_A).unwrap();
    assert_eq!(server.requests().len(), 1);
    server.set_pods(&[FakePod {
        uid: UID_NEW,
        namespace: "batch",
        name: "job-1",
        labels: &[],
    }]);
    let pod = wait_until("the new pod", Duration::from_secs(10), || {
        cache.pod(UID_NEW)
    });
    assert_eq!(pod.namespace, "batch");
    assert_eq!(server.requests().len(), 2, "misses coalesce into one list");
}

#[test]
fn a_bad_kubernetes_setting_is_a_clear_error() {
    let cfg = KubernetesConfig {
        mode: KubeMode::Api,
        node_name: None,
        ..KubernetesConfig::default()
    };
    // Only meaningful where NODE_NAME is unset (it is in CI); elsewhere the API mode
    // legitimately takes the node name from it.
    if std::env::var("NODE_NAME").is_err() {
        let e = PodCache::new(&cfg).err().unwrap();
        assert!(e.contains("node_name"), "{e}");
    }
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, "not a certificate").unwrap();
    let cfg = KubernetesConfig {
        mode: KubeMode::Kubelet,
        ca_file: Some(ca),
        ..KubernetesConfig::default()
    };
    assert!(
        PodCache::new(&cfg)
            .err()
            .unwrap()
            .contains("no certificate")
    );
}

#[test]
fn pod_processes_resolve_by_label_then_namespace_and_a_late_pod_is_resolved_again() {
    let server = FakeApiServer::start();
    server.set_pods(&[
        FakePod {
            uid: UID_A,
            namespace: "chatbot",
            name: "vllm-0",
            labels: &[("empreinte.io/project", "citizen-chatbot")],
        },
        FakePod {
            uid: UID_B,
            namespace: "translation",
            name: "marian-0",
            labels: &[],
        },
    ]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = AttributionConfig {
        kubernetes: config(&server, &dir.path().join("no-token")),
        ..AttributionConfig::default()
    };
    let procfs = FakeProcfs::new();
    let cgroup = |uid: &str| {
        format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{}.scope\n",
            uid.replace('-', "_"),
            "ab".repeat(32)
        )
    };
    for (pid, uid) in [(10, UID_A), (20, UID_B), (30, UID_NEW)] {
        procfs.add(&FakeProcess {
            pid,
            start_ticks: pid.into(),
            cpu_ticks: 0,
            cmdline: "server",
            environ: &[],
            cgroup: &cgroup(uid),
        });
    }
    let pods = PodCache::new(&cfg.kubernetes).unwrap();
    let mut a = Attributor::new(
        &cfg,
        Resolver::new(&cfg).unwrap(),
        Box::new(ProcFs::new(procfs.root())),
        UserNames::default(),
        pods,
    );
    let project = |a: &mut Attributor, pid: u32| {
        a.resolve_all()
            .unwrap()
            .into_iter()
            .find(|r| r.pid == pid)
            .map(|r| (r.project.to_string(), r.reason.to_string()))
            .unwrap()
    };
    let (p, why) = project(&mut a, 10);
    assert_eq!(p, "citizen-chatbot");
    assert!(
        why.contains("pod label empreinte.io/project=citizen-chatbot"),
        "{why}"
    );
    assert_eq!(project(&mut a, 20).0, "translation");
    assert_eq!(
        project(&mut a, 30).0,
        "unassigned",
        "a pod the API does not list yet"
    );

    // Sampling: pid 30's pod is unknown at first, so its energy goes to `unassigned`;
    // once the pod appears, the tracked process is resolved again on a later cycle.
    let channels = IntervalEnergy::new(
        Some(Duration::from_secs(1)),
        vec![ChannelInterval::new(
            Component::Cpu,
            SourceKind::Rapl,
            "package-0",
            MicroJoules(1_000_000),
        )],
    );
    let project_uj = |a: &Attributor, name: &str| {
        a.state()
            .projects
            .iter()
            .filter(|p| &*p.project == name)
            .map(|p| p.last_uj)
            .sum::<u64>()
    };
    a.attribute(&channels).unwrap();
    procfs.set_ticks(30, 30, 50);
    procfs.set_host_stat(50, 0);
    a.attribute(&channels).unwrap();
    assert_eq!(project_uj(&a, "unassigned"), 1_000_000);
    server.set_pods(&[FakePod {
        uid: UID_NEW,
        namespace: "batch",
        name: "job-1",
        labels: &[],
    }]);
    // The lookup happens in the background: cycles go on, the process is provisional
    // (its energy in `unassigned`) until its pod is known, then its energy moves.
    let mut ticks = 50;
    wait_until("the late pod's energy", Duration::from_secs(10), || {
        ticks += 50;
        procfs.set_ticks(30, 30, ticks);
        procfs.set_host_stat(ticks, 0);
        a.attribute(&channels).unwrap();
        let (batch, unassigned) = (project_uj(&a, "batch"), project_uj(&a, "unassigned"));
        assert_eq!(batch + unassigned, 1_000_000, "every interval is conserved");
        (batch == 1_000_000).then_some(())
    });
    assert_eq!(project_uj(&a, "unassigned"), 0);
}
