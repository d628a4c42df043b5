//! Per-project attribution: which project each process belongs to, and how each
//! interval's energy is split between projects (see [`engine`] for the rule).

pub mod cgroup;
pub mod docker;
pub mod engine;
pub mod gpu;
pub mod kube;
pub mod models;
pub mod procs;
pub mod projects;
pub mod rules;
pub mod state;
pub mod users;

use crate::config::AgentConfig;

/// The attributor the configuration describes: rules, the host's procfs, user names and,
/// where configured, the Kubernetes pod lookup.
pub fn build(config: &AgentConfig) -> Result<engine::Attributor, String> {
    let a = &config.attribution;
    let resolver = rules::Resolver::new(a)?;
    let pods = kube::PodCache::new(&a.kubernetes)?;
    if resolver.needs_pods() && pods.is_none() {
        tracing::debug!(
            "pod rules are configured but attribution.kubernetes.mode is off: they match no process"
        );
    }
    let containers = resolver
        .needs_containers()
        .then(|| docker::ContainerCache::new(&a.docker_root));
    Ok(engine::Attributor::new(
        a,
        resolver,
        Box::new(procs::ProcFs::new(&config.procfs_root)),
        users::UserNames::load(&a.passwd_file),
        pods,
    )
    .with_containers(containers))
}
