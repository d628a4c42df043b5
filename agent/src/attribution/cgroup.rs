//! Parsing of `/proc/PID/cgroup`: the systemd unit, the container and the Kubernetes pod
//! a process runs in.
//!
//! cgroup v2 has one line `0::/PATH`; cgroup v1 has a line per hierarchy
//! (`N:controllers:/PATH`), of which the `name=systemd` one (else `cpu`, `cpuacct`,
//! `memory`, else the first) is used. Segments are recognised wherever they appear in the
//! path, so nested layouts (kind, a runtime's own slice) are handled as well.

/// The container runtime, from the cgroup naming.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    Docker,
    Podman,
    Containerd,
    CriO,
    /// A container id under a Kubernetes pod, runtime not named (cgroupfs driver).
    Unknown,
}

/// A container the process runs in.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ContainerRef {
    pub runtime: Runtime,
    /// The full container id (hexadecimal).
    pub id: String,
}

/// The Kubernetes quality-of-service class of a pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Qos {
    Guaranteed,
    Burstable,
    BestEffort,
}

/// A Kubernetes pod the process runs in.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PodRef {
    /// The pod UID with dashes, as the API server writes it.
    pub uid: String,
    pub qos: Qos,
}

/// What a process's cgroup says about it.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CgroupRef {
    pub path: String,
    /// The path ended with ` (deleted)`: the cgroup was removed (the process is exiting).
    pub deleted: bool,
    /// The systemd service unit (`vllm.service`), not set for container scopes and user
    /// sessions (`session-N.scope` says nothing about a project).
    pub unit: Option<String>,
    pub container: Option<ContainerRef>,
    pub pod: Option<PodRef>,
}

/// Parses the content of `/proc/PID/cgroup`. Never fails: unknown content gives an empty
/// [`CgroupRef`].
pub fn parse_proc_cgroup(content: &str) -> CgroupRef {
    let mut v2 = None;
    let mut v1: Vec<(&str, &str)> = Vec::new();
    for line in content.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if id == "0" && controllers.is_empty() {
            v2 = Some(path);
        } else {
            v1.push((controllers, path));
        }
    }
    let path = v2.or_else(|| {
        let pick = |want: &str| {
            v1.iter()
                .find(|(c, _)| c.split(',').any(|x| x == want))
                .map(|(_, p)| *p)
        };
        pick("name=systemd")
            .or_else(|| pick("cpu"))
            .or_else(|| pick("cpuacct"))
            .or_else(|| pick("memory"))
            .or_else(|| v1.first().map(|(_, p)| *p))
    });
    let Some(path) = path else {
        return CgroupRef::default();
    };
    let (path, deleted) = match path.strip_suffix(" (deleted)") {
        Some(p) => (p, true),
        None => (path, false),
    };
    let mut r = CgroupRef {
        path: path.to_string(),
        deleted,
        ..CgroupRef::default()
    };
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    for (i, seg) in segments.iter().enumerate() {
        // The containerd/CRI-O systemd-driver form `POD.slice:RUNTIME:ID`.
        let mut colon = seg.split(':');
        if let (Some(slice), Some(runtime), Some(id), None) =
            (colon.next(), colon.next(), colon.next(), colon.next())
        {
            r.pod = pod_segment(slice, None).or(r.pod.take());
            let runtime = match runtime {
                "cri-containerd" => Runtime::Containerd,
                "crio" => Runtime::CriO,
                "docker" => Runtime::Docker,
                _ => Runtime::Unknown,
            };
            if is_hex_id(id) {
                r.container = Some(ContainerRef {
                    runtime,
                    id: id.to_string(),
                });
            }
            continue;
        }
        if let Some(pod) = pod_segment(seg, i.checked_sub(1).and_then(|j| segments.get(j)).copied())
        {
            r.pod = Some(pod);
            // cgroupfs driver: the container id is the next segment.
            if let Some(next) = segments.get(i + 1) {
                if r.container.is_none() && is_hex_id(next) {
                    r.container = Some(ContainerRef {
                        runtime: Runtime::Unknown,
                        id: (*next).to_string(),
                    });
                }
            }
        } else if let Some(c) =
            container_segment(seg, i.checked_sub(1).and_then(|j| segments.get(j)).copied())
        {
            r.container = Some(c);
        } else if let Some(unit) = seg.strip_suffix(".service") {
            // The innermost service wins, but a container's runtime service (containerd,
            // docker) is not the workload's unit.
            if r.container.is_none() && r.pod.is_none() && !unit.is_empty() {
                r.unit = Some((*seg).to_string());
            }
        }
    }
    if r.container.is_some() || r.pod.is_some() {
        r.unit = None;
    }
    r
}

fn is_hex_id(s: &str) -> bool {
    s.len() >= 12 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `kubepods-besteffort-pod<uid_with_underscores>.slice`, `kubepods-pod<uid>.slice`,
/// `pod<uid-with-dashes>` (cgroupfs, the QoS from the parent segment is resolved below).
fn pod_segment(seg: &str, prev: Option<&str>) -> Option<PodRef> {
    if let Some(rest) = seg.strip_suffix(".slice") {
        let (qos, uid) = if let Some(u) = rest.strip_prefix("kubepods-besteffort-pod") {
            (Qos::BestEffort, u)
        } else if let Some(u) = rest.strip_prefix("kubepods-burstable-pod") {
            (Qos::Burstable, u)
        } else if let Some(u) = rest.strip_prefix("kubepods-pod") {
            (Qos::Guaranteed, u)
        } else if let Some(u) = rest.strip_prefix("kubelet-kubepods-besteffort-pod") {
            (Qos::BestEffort, u)
        } else if let Some(u) = rest.strip_prefix("kubelet-kubepods-burstable-pod") {
            (Qos::Burstable, u)
        } else if let Some(u) = rest.strip_prefix("kubelet-kubepods-pod") {
            (Qos::Guaranteed, u)
        } else {
            return None;
        };
        let uid = uid.replace('_', "-");
        return is_uid(&uid).then_some(PodRef { uid, qos });
    }
    let uid = seg.strip_prefix("pod")?;
    let qos = match prev {
        Some("besteffort") => Qos::BestEffort,
        Some("burstable") => Qos::Burstable,
        _ => Qos::Guaranteed,
    };
    is_uid(uid).then(|| PodRef {
        uid: uid.to_string(),
        qos,
    })
}

fn is_uid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| {
            if [8, 13, 18, 23].contains(&i) {
                b == b'-'
            } else {
                b.is_ascii_hexdigit()
            }
        })
}

/// `docker-<id>.scope`, `libpod-<id>.scope`, `cri-containerd-<id>.scope`, `crio-<id>.scope`,
/// and `/docker/<id>` (cgroupfs driver: `prev` is `docker`).
fn container_segment(seg: &str, prev: Option<&str>) -> Option<ContainerRef> {
    if let Some(rest) = seg.strip_suffix(".scope") {
        // crio-conmon-<id>.scope is CRI-O's monitor process, not the container: it is
        // left to the pod (no container id).
        let (runtime, id) = if let Some(id) = rest.strip_prefix("docker-") {
            (Runtime::Docker, id)
        } else if let Some(id) = rest.strip_prefix("libpod-") {
            (Runtime::Podman, id)
        } else if let Some(id) = rest.strip_prefix("cri-containerd-") {
            (Runtime::Containerd, id)
        } else if let Some(id) = rest.strip_prefix("crio-") {
            (Runtime::CriO, id)
        } else {
            return None;
        };
        return is_hex_id(id).then(|| ContainerRef {
            runtime,
            id: id.to_string(),
        });
    }
    match prev {
        Some("docker") if is_hex_id(seg) => Some(ContainerRef {
            runtime: Runtime::Docker,
            id: seg.to_string(),
        }),
        Some("libpod_parent") if is_hex_id(seg) => Some(ContainerRef {
            runtime: Runtime::Podman,
            id: seg.to_string(),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ID: &str = "4f9a1c3e5b7d2f8a6c0e4b1d3f5a7c9e2b4d6f8a0c1e3b5d7f9a2c4e6b8d0f1a";
    const UID: &str = "0a1b2c3d-4e5f-6789-abcd-ef0123456789";
    const UID_: &str = "0a1b2c3d_4e5f_6789_abcd_ef0123456789";

    /// (content, unit, container (runtime, id), pod (uid, qos), deleted)
    type Case = (
        String,
        Option<&'static str>,
        Option<(Runtime, &'static str)>,
        Option<Qos>,
        bool,
    );

    fn cases() -> Vec<Case> {
        use Qos::*;
        use Runtime::*;
        vec![
            (
                "0::/system.slice/vllm.service\n".into(),
                Some("vllm.service"),
                None,
                None,
                false,
            ),
            (
                "0::/system.slice/vllm.service/worker\n".into(),
                Some("vllm.service"),
                None,
                None,
                false,
            ),
            (
                "0::/user.slice/user-1000.slice/session-3.scope\n".into(),
                None,
                None,
                None,
                false,
            ),
            (
                "0::/user.slice/user-1000.slice/user@1000.service/app.slice/ollama.service\n"
                    .into(),
                Some("ollama.service"),
                None,
                None,
                false,
            ),
            (
                format!("0::/system.slice/docker-{ID}.scope\n"),
                None,
                Some((Docker, ID)),
                None,
                false,
            ),
            (
                format!("0::/docker/{ID}\n"),
                None,
                Some((Docker, ID)),
                None,
                false,
            ),
            (
                format!("0::/machine.slice/libpod-{ID}.scope/container\n"),
                None,
                Some((Podman, ID)),
                None,
                false,
            ),
            (
                format!("0::/system.slice/cri-containerd-{ID}.scope\n"),
                None,
                Some((Containerd, ID)),
                None,
                false,
            ),
            (
                format!("0::/system.slice/crio-{ID}.scope\n"),
                None,
                Some((CriO, ID)),
                None,
                false,
            ),
            // Kubernetes, systemd driver, cgroup v2, each QoS class.
            (
                format!(
                    "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/cri-containerd-{ID}.scope\n"
                ),
                None,
                Some((Containerd, ID)),
                Some(BestEffort),
                false,
            ),
            (
                format!(
                    "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/crio-{ID}.scope\n"
                ),
                None,
                Some((CriO, ID)),
                Some(Burstable),
                false,
            ),
            (
                format!("0::/kubepods.slice/kubepods-pod{UID_}.slice/docker-{ID}.scope\n"),
                None,
                Some((Docker, ID)),
                Some(Guaranteed),
                false,
            ),
            // CRI-O's conmon belongs to the pod, not to a container.
            (
                format!(
                    "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/crio-conmon-{ID}.scope\n"
                ),
                None,
                None,
                Some(Burstable),
                false,
            ),
            // Kubernetes, cgroupfs driver, cgroup v1, each QoS class.
            (
                format!(
                    "12:memory:/kubepods/besteffort/pod{UID}/{ID}\n11:cpu,cpuacct:/kubepods/besteffort/pod{UID}/{ID}\n"
                ),
                None,
                Some((Unknown, ID)),
                Some(BestEffort),
                false,
            ),
            (
                format!(
                    "4:cpu,cpuacct:/kubepods/burstable/pod{UID}/{ID}\n1:name=systemd:/kubepods/burstable/pod{UID}/{ID}\n"
                ),
                None,
                Some((Unknown, ID)),
                Some(Burstable),
                false,
            ),
            (
                format!("3:cpu,cpuacct:/kubepods/pod{UID}/{ID}\n"),
                None,
                Some((Unknown, ID)),
                Some(Guaranteed),
                false,
            ),
            // kind: the kubelet's own slice around the pods.
            (
                format!(
                    "0::/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_}.slice/cri-containerd-{ID}.scope\n"
                ),
                None,
                Some((Containerd, ID)),
                Some(BestEffort),
                false,
            ),
            // A containerd service prefix does not make the workload a systemd unit.
            (
                format!(
                    "0::/system.slice/containerd.service/kubepods-burstable-pod{UID_}.slice:cri-containerd:{ID}\n"
                ),
                None,
                Some((Containerd, ID)),
                Some(Burstable),
                false,
            ),
            // cgroup v1 with systemd: the name=systemd line wins.
            (
                "12:pids:/system.slice/x.service\n1:name=systemd:/system.slice/tgi.service\n"
                    .into(),
                Some("tgi.service"),
                None,
                None,
                false,
            ),
            (
                "0::/system.slice/vllm.service (deleted)\n".into(),
                Some("vllm.service"),
                None,
                None,
                true,
            ),
            (
                format!("0::/system.slice/docker-{ID}.scope (deleted)\n"),
                None,
                Some((Docker, ID)),
                None,
                true,
            ),
            ("0::/\n".into(), None, None, None, false),
            ("".into(), None, None, None, false),
            ("garbage without colons\n".into(), None, None, None, false),
        ]
    }

    #[test]
    fn cgroup_paths_of_every_supported_layout() {
        for (content, unit, container, qos, deleted) in cases() {
            let r = parse_proc_cgroup(&content);
            assert_eq!(r.unit.as_deref(), unit, "unit of {content:?}");
            assert_eq!(
                r.container.as_ref().map(|c| (c.runtime, c.id.as_str())),
                container,
                "container of {content:?}"
            );
            assert_eq!(r.pod.as_ref().map(|p| p.qos), qos, "pod of {content:?}");
            if let Some(p) = &r.pod {
                assert_eq!(p.uid, UID, "the pod uid is given with dashes: {content:?}");
            }
            assert_eq!(r.deleted, deleted, "deleted of {content:?}");
        }
    }

    proptest! {
        #[test]
        fn any_input_is_parsed_without_panic(s in "\\PC{0,300}") {
            let _ = parse_proc_cgroup(&s);
        }
    }
}
