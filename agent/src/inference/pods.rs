//! Inference servers in Kubernetes pods: the node's pods annotated
//! `empreinte.io/inference: "<kind>:<port>"` (from the attribution's pod lookup, no
//! request of its own), read at `http://<pod IP>:<port>/metrics`.
//!
//! A pod's series is identified by its UID and serving process: a container restarted
//! in the same pod is a reset (its counters start again), a new pod a new series. The
//! serving process is found under the configured procfs root (the agent runs with the
//! host's PID namespace): among the processes whose cgroup names the pod, the one that
//! listens on the port (in its own network namespace, `/proc/PID/net/tcp`), else one
//! whose command line is a known server, else the pod's first process. Its project is
//! then the attribution's (pod label, namespace… rules), and its energy is split between
//! the models it serves like any serving process's.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Mutex;

use empreinte_shared::wire::InferenceServerKind;

use super::{Origin, PodRef, Server, ServerInfo, Servers, Unread, discovery};
use crate::attribution::cgroup::parse_proc_cgroup;
use crate::attribution::kube::{AnnotatedPod, AnnotatedPods, INFERENCE_ANNOTATION};
use crate::inference::series::Tracker;

/// `"<kind>:<port>"` read: the kind and the port, or what is wrong and what is allowed.
pub fn parse_annotation(value: &str) -> Result<(InferenceServerKind, u16), String> {
    let allowed = || {
        InferenceServerKind::ALL
            .iter()
            .map(|k| k.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let Some((kind, port)) = value.trim().split_once(':') else {
        return Err(format!(
            "{INFERENCE_ANNOTATION}: {value:?} is not \"<kind>:<port>\" (kind one of {})",
            allowed()
        ));
    };
    let kind = InferenceServerKind::parse(kind.trim()).ok_or_else(|| {
        format!(
            "{INFERENCE_ANNOTATION}: unknown server kind {kind:?} (allowed: {})",
            allowed()
        )
    })?;
    let port = port
        .trim()
        .parse::<u16>()
        .ok()
        .filter(|&p| p > 0)
        .ok_or_else(|| {
            format!("{INFERENCE_ANNOTATION}: {port:?} is not a TCP port (1 to 65535)")
        })?;
    Ok((kind, port))
}

/// The metrics URL of a pod's server.
fn url(ip: &str, port: u16) -> String {
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) => format!("http://[{v6}]:{port}/metrics"),
        _ => format!("http://{ip}:{port}/metrics"),
    }
}

/// The process serving `port` in the pod `uid`, with its start time (see the module's
/// rule), under `root`.
pub fn pod_process(root: &Path, uid: &str, port: u16) -> Option<(u32, u64)> {
    let dir = std::fs::read_dir(root).ok()?;
    let mut in_pod: Vec<(u32, u64, Vec<String>)> = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cgroup) = std::fs::read_to_string(entry.path().join("cgroup")) else {
            continue;
        };
        if parse_proc_cgroup(&cgroup).pod.is_some_and(|p| p.uid == uid) {
            if let Some((start, args)) = discovery::process(root, pid) {
                in_pod.push((pid, start, args));
            }
        }
    }
    in_pod.sort_by_key(|p| p.0);
    let listens = |pid: u32| {
        // The process's own network namespace; the root's where it has none (a fake).
        let own = root.join(pid.to_string());
        let mut sockets: HashMap<u64, SocketAddr> = discovery::listening_sockets(&own);
        if sockets.is_empty() {
            sockets = discovery::listening_sockets(root);
        }
        sockets.retain(|_, a| a.port() == port);
        !sockets.is_empty() && !discovery::ports_of(root, pid, &sockets).is_empty()
    };
    let known = |args: &[String]| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        discovery::server_kind(&refs).is_some()
    };
    in_pod
        .iter()
        .find(|p| listens(p.0))
        .or_else(|| in_pod.iter().find(|p| known(&p.2)))
        .or_else(|| in_pod.first())
        .map(|p| (p.0, p.1))
}

/// One round: new annotated pods become servers, pods gone mark theirs gone, a pod's
/// serving process is looked for (again) when unknown or ended; an annotation that does
/// not read is listed with its reason.
pub(super) fn discover(shared: &Mutex<Servers>, root: &Path, pods: &AnnotatedPods, max: usize) {
    let Some(list) = pods.list() else {
        return;
    };
    let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
    let round = s.rounds;
    for srv in &mut s.servers {
        if let Some(pod) = srv.info.pod.as_ref() {
            srv.gone |= !list.iter().any(|p| p.uid == pod.uid);
        }
    }
    s.unread.retain(|u| u.pid != 0);
    let mut pending = false;
    for pod in &list {
        let (kind, port) = match parse_annotation(&pod.value) {
            Ok(kp) => kp,
            Err(reason) => {
                s.unread.push(unread(pod, None, reason));
                continue;
            }
        };
        let Some(ip) = pod.ip.as_deref() else {
            // Pending: no IP yet; a later list gives it.
            pending = true;
            continue;
        };
        let at = url(ip, port);
        if let Some(srv) = s
            .servers
            .iter_mut()
            .find(|srv| srv.info.pod.as_ref().is_some_and(|p| p.uid == pod.uid))
        {
            // Looking through every process's cgroup costs: a pod whose process is not
            // seen is looked at again every LOCATE_EVERY rounds only.
            let lost = match srv.info.pid.zip(srv.info.start_ticks) {
                Some((pid, start)) => !discovery::alive(root, pid, start),
                None => round % super::LOCATE_EVERY == 0,
            };
            if lost {
                let owner = pod_process(root, &pod.uid, port);
                srv.info.pid = owner.map(|o| o.0);
                srv.info.start_ticks = owner.map(|o| o.1);
            }
            continue;
        }
        if s.servers.iter().filter(|srv| !srv.gone).count() >= max {
            s.unread.push(unread(
                pod,
                Some(kind),
                format!("{at} not read: inference_scrape.max_servers = {max} are read already"),
            ));
            continue;
        }
        let owner = pod_process(root, &pod.uid, port);
        // The pod's process, read already as a process of the host: the pod's entry
        // replaces it (same counters, identified by the pod).
        if let Some((pid, _)) = owner {
            for srv in &mut s.servers {
                if srv.info.origin == Origin::Discovered && srv.info.pid == Some(pid) {
                    srv.gone = true;
                }
            }
        }
        tracing::info!(pod = %format!("{}/{}", pod.namespace, pod.name), kind = %kind, server = %at, pid = ?owner.map(|o| o.0), "inference server found in an annotated pod");
        let id = s.next_id;
        s.next_id += 1;
        s.servers.push(Server {
            id,
            info: ServerInfo {
                kind,
                url: at,
                origin: Origin::Kubernetes,
                project: None,
                model: None,
                pod: Some(PodRef {
                    uid: pod.uid.clone(),
                    namespace: pod.namespace.clone(),
                    name: pod.name.clone(),
                }),
                pid: owner.map(|o| o.0),
                start_ticks: owner.map(|o| o.1),
                models: Vec::new(),
                up: false,
                last_error: None,
                scrapes_total: 0,
                scrape_errors_total: 0,
            },
            tracker: Tracker::default(),
            asked_info: false,
            gone: false,
        });
    }
    if pending {
        pods.refresh();
    }
}

/// An annotated pod that is not read, and why (listed by `agent check`; `pid` 0: a pod).
fn unread(pod: &AnnotatedPod, kind: Option<InferenceServerKind>, reason: String) -> Unread {
    Unread {
        pid: 0,
        kind: kind.unwrap_or(InferenceServerKind::Vllm),
        cmdline: format!(
            "pod {}/{} ({INFERENCE_ANNOTATION}: {:?})",
            pod.namespace, pod.name, pod.value
        ),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotations_are_read_and_every_mistake_named() {
        assert_eq!(
            parse_annotation("vllm:8000"),
            Ok((InferenceServerKind::Vllm, 8000))
        );
        assert_eq!(
            parse_annotation(" triton : 8002 "),
            Ok((InferenceServerKind::Triton, 8002))
        );
        for (value, says) in [
            ("vllm", "is not \"<kind>:<port>\""),
            (
                "ollama:11434",
                "unknown server kind \"ollama\" (allowed: vllm, sglang",
            ),
            ("vllm:http", "\"http\" is not a TCP port"),
            ("vllm:0", "is not a TCP port"),
            ("vllm:70000", "is not a TCP port"),
        ] {
            let e = parse_annotation(value).unwrap_err();
            assert!(e.contains(says), "{value}: {e}");
            assert!(e.contains(INFERENCE_ANNOTATION), "{value}: {e}");
        }
    }

    #[test]
    fn an_ipv6_pod_ip_is_bracketed() {
        assert_eq!(url("10.1.2.3", 8000), "http://10.1.2.3:8000/metrics");
        assert_eq!(url("fd00::5", 8000), "http://[fd00::5]:8000/metrics");
    }
}
