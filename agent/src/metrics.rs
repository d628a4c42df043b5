//! Prometheus exposition of the host's state.
//!
//! Counters are rendered at scrape time from the integer microjoule totals of
//! [`HostState`], so the exported value is exact (up to `f64` display) and never drifts.
//! Names follow Prometheus conventions: base units, `_total` for counters.

use empreinte_shared::Component;
use empreinte_shared::exposition::Family;
use prometheus::proto::{MetricFamily, MetricType};
use prometheus::{Encoder, TextEncoder};

use crate::attribution::engine::AttributionState;
use crate::push::PushMetrics;
use crate::sampler::{ChannelState, HostState};

/// Version of this build, for `empreinte_agent_build_info`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Static facts the agent exports alongside the state.
#[derive(Clone, Debug)]
pub struct ExportInfo {
    pub interval_seconds: f64,
}

/// Labels of a host series: component, device, source, and for GPUs gpu, uuid, model.
fn host_labels<'a>(
    c: &'a ChannelState,
    component: Component,
    gpu_index: &'a str,
) -> Vec<(&'a str, &'a str)> {
    let mut labels = vec![
        ("component", component.as_str()),
        ("device", c.channel.device.as_str()),
        ("source", c.channel.source.as_str()),
    ];
    if let Some(g) = &c.channel.gpu {
        labels.push(("gpu", gpu_index));
        labels.push(("uuid", g.uuid.as_str()));
        labels.push(("model", g.model.as_str()));
    }
    labels
}

/// The metric families for `host` (without the text encoding).
pub fn families(host: &HostState, info: &ExportInfo) -> Vec<MetricFamily> {
    let mut all: Vec<Family> = Vec::new();
    all.extend(host_families(host));
    all.extend(source_families(host));
    all.extend(sampling_families(host, info));
    all.push(gpu_unaccounted(host));
    if let Some(a) = &host.attribution {
        all.extend(project_families(host, a));
        all.extend(attribution_families(a));
    }
    all.into_iter()
        .map(|f| f.0)
        .filter(|f| !f.get_metric().is_empty())
        .collect()
}

/// The host's energy and power per part, RAPL zones, counter corrections.
fn host_families(host: &HostState) -> [Family; 4] {
    use MetricType::{COUNTER, GAUGE};
    let mut energy = Family::new(
        "empreinte_host_energy_joules_total",
        "Energy used by a non-overlapping part of the host (component cpu, dram or gpu) since the agent started, in joules; source says whether it was measured (rapl, nvml) or estimated.",
        COUNTER,
    );
    let mut power = Family::new(
        "empreinte_host_power_watts",
        "Mean power of a part of the host over the last sampling interval, in watts.",
        GAUGE,
    );
    let mut zones = Family::new(
        "empreinte_rapl_zone_energy_joules_total",
        "Energy of every RAPL powercap zone since the agent started, in joules, including zones that overlap others (core and uncore inside a package, psys around the platform): do not sum across zones.",
        COUNTER,
    );
    let mut corrections = Family::new(
        "empreinte_energy_reading_corrections_total",
        "Readings of a hardware energy counter that went backwards or jumped, by kind: wrap (wrapped past its maximum: the energy across the wrap is counted), reset (restarted from zero, e.g. a GPU driver reload: the energy since the restart is counted), glitch (a step no power within the zone's ceiling explains: no energy is taken from it).",
        COUNTER,
    );
    for c in &host.channels {
        let gpu_index = c
            .channel
            .gpu
            .as_ref()
            .map(|g| g.index.to_string())
            .unwrap_or_default();
        if let Some(component) = c.channel.component {
            let labels = host_labels(c, component, &gpu_index);
            energy.push(&labels, c.total.as_joules());
            power.push(&labels, c.last_power.0);
        }
        if let Some(zone) = &c.channel.zone {
            zones.push(
                &[
                    ("zone", zone.id.as_str()),
                    ("name", zone.name.as_str()),
                    ("device", c.channel.device.as_str()),
                ],
                c.total.as_joules(),
            );
        }
        let zone_or_device = c
            .channel
            .zone
            .as_ref()
            .map_or(c.channel.device.as_str(), |z| z.id.as_str());
        let k = &c.corrections;
        for (kind, n) in [
            ("wrap", k.wraps),
            ("reset", k.resets),
            ("glitch", k.glitches),
        ] {
            if n > 0 {
                corrections.push(
                    &[
                        ("source", c.channel.source.as_str()),
                        ("device", zone_or_device),
                        ("kind", kind),
                    ],
                    n as f64,
                );
            }
        }
    }

    [energy, power, zones, corrections]
}

/// Each energy source's health.
fn source_families(host: &HostState) -> [Family; 2] {
    use MetricType::{COUNTER, GAUGE};
    let mut up = Family::new(
        "empreinte_source_up",
        "1 if the energy source's last poll succeeded, 0 otherwise.",
        GAUGE,
    );
    let mut errors = Family::new(
        "empreinte_source_poll_errors_total",
        "Failed polls of an energy source since the agent started.",
        COUNTER,
    );
    for s in &host.sources {
        up.push(&[("source", s.kind.as_str())], if s.up { 1.0 } else { 0.0 });
        errors.push(&[("source", s.kind.as_str())], s.poll_errors_total as f64);
    }

    [up, errors]
}

/// Each project's energy and power.
fn project_families(host: &HostState, a: &AttributionState) -> [Family; 2] {
    use MetricType::{COUNTER, GAUGE};
    let mut energy = Family::new(
        "empreinte_project_energy_joules_total",
        "Energy attributed to a project since the agent started, in joules, per component and source (measured or estimated). Summed over projects it equals empreinte_host_energy_joules_total.",
        COUNTER,
    );
    let mut power = Family::new(
        "empreinte_project_power_watts",
        "Mean power attributed to a project over the last sampling interval, in watts.",
        GAUGE,
    );
    let secs = host.last_interval.map_or(0.0, |d| d.as_secs_f64());
    let mut last_key: Option<(&str, Component)> = None;
    let mut acc = 0u64;
    for p in &a.projects {
        energy.push(
            &[
                ("project", &p.project),
                ("component", p.component.as_str()),
                ("source", p.source.as_str()),
            ],
            p.total_uj as f64 / 1e6,
        );
        // Power per (project, component), over sources; projects are sorted.
        let key = (&*p.project, p.component);
        if last_key.is_some_and(|k| k != key) {
            if let Some((proj, comp)) = last_key {
                power.push(
                    &[("project", proj), ("component", comp.as_str())],
                    watts(acc, secs),
                );
            }
            acc = 0;
        }
        last_key = Some(key);
        acc += p.last_uj;
    }
    if let Some((proj, comp)) = last_key {
        power.push(
            &[("project", proj), ("component", comp.as_str())],
            watts(acc, secs),
        );
    }
    [energy, power]
}

/// How the attribution went: processes, projects, failures.
fn attribution_families(a: &AttributionState) -> [Family; 6] {
    use MetricType::{COUNTER, GAUGE};
    let mut tracked = Family::new(
        "empreinte_attribution_processes",
        "Processes the attribution tracked in the last interval.",
        GAUGE,
    );
    tracked.push(&[], a.processes_seen as f64);
    let mut unreadable = Family::new(
        "empreinte_attribution_unreadable_processes",
        "Processes tracked in the last interval whose environment could not be read (other users' processes; the agent has no CAP_SYS_PTRACE): rules on environment variables such as EMPREINTE_PROJECT cannot place them, they fall to the next rules.",
        GAUGE,
    );
    unreadable.push(&[], a.unreadable_processes as f64);
    let mut projects = Family::new(
        "empreinte_attribution_projects",
        "Projects the attribution holds: active (energy or a live process within attribution.project_window: in memory and in these metrics) or dormant (totals parked, resumed if the project comes back).",
        GAUGE,
    );
    projects.push(&[("state", "active")], a.projects_active as f64);
    projects.push(&[("state", "dormant")], a.projects_dormant as f64);
    let mut forgotten = Family::new(
        "empreinte_attribution_forgotten_projects_total",
        "Dormant projects forgotten because more than attribution.max_dormant_projects were parked; one that comes back starts its counters from zero.",
        COUNTER,
    );
    forgotten.push(&[], a.projects_forgotten_total as f64);
    let mut errors = Family::new(
        "empreinte_attribution_errors_total",
        "Intervals whose attribution failed (processes or /proc/stat could not be read, or read figures that do not add up): their energy went to the unassigned project whole.",
        COUNTER,
    );
    errors.push(&[], a.failed_intervals_total as f64);
    let mut failed = Family::new(
        "empreinte_attribution_failed_energy_joules_total",
        "Energy of the intervals whose attribution failed, given to the unassigned project, in joules.",
        COUNTER,
    );
    failed.push(&[], a.failed_energy_uj_total as f64 / 1e6);
    [tracked, unreadable, projects, forgotten, errors, failed]
}

/// The sampling loop's own health, and the build.
fn sampling_families(host: &HostState, info: &ExportInfo) -> [Family; 7] {
    use MetricType::{COUNTER, GAUGE};
    let mut cycles = Family::new(
        "empreinte_agent_sampling_cycles_total",
        "Sampling cycles run since the agent started.",
        COUNTER,
    );
    cycles.push(&[], host.cycles_total as f64);
    let mut spent = Family::new(
        "empreinte_agent_sampling_seconds_total",
        "Wall time spent in sampling cycles since the agent started, in seconds.",
        COUNTER,
    );
    spent.push(&[], host.sampling_seconds_total);
    let mut last = Family::new(
        "empreinte_agent_sampling_duration_seconds",
        "Wall time of the last sampling cycle, in seconds.",
        GAUGE,
    );
    last.push(&[], host.last_cycle_seconds);
    let mut longest = Family::new(
        "empreinte_agent_sampling_duration_max_seconds",
        "Wall time of the longest sampling cycle since the agent started, in seconds.",
        GAUGE,
    );
    longest.push(&[], host.max_cycle_seconds);
    let mut gap = Family::new(
        "empreinte_agent_sampling_gap_max_seconds",
        "Longest time between two consecutive samples since the agent started, in seconds: the sampling interval when no cycle was late (minus it: the worst lateness).",
        GAUGE,
    );
    if let Some(g) = host.max_interval {
        gap.push(&[], g.as_secs_f64());
    }
    let mut interval = Family::new(
        "empreinte_agent_sampling_interval_seconds",
        "Configured sampling interval, in seconds.",
        GAUGE,
    );
    interval.push(&[], info.interval_seconds);
    let mut build = Family::new(
        "empreinte_agent_build_info",
        "Always 1; the labels say which build of the agent runs.",
        GAUGE,
    );
    build.push(&[("version", VERSION)], 1.0);

    [cycles, spent, last, longest, gap, interval, build]
}

/// `empreinte_gpu_unaccounted_seconds_total`: per GPU, the time its energy could not be
/// accounted for at all (`EnergySource::unaccounted_time`).
fn gpu_unaccounted(host: &HostState) -> Family {
    let mut unaccounted = Family::new(
        "empreinte_gpu_unaccounted_seconds_total",
        "Time since the agent started during which a GPU's energy could not be accounted for at all (NVML lost the GPU or the driver reloaded, and neither the energy counter nor the power readings cover the gap), in seconds: that energy is missing from the totals.",
        MetricType::COUNTER,
    );
    for c in &host.channels {
        if let Some(g) = &c.channel.gpu {
            let index = g.index.to_string();
            unaccounted.push(
                &[
                    ("device", c.channel.device.as_str()),
                    ("gpu", index.as_str()),
                    ("uuid", g.uuid.as_str()),
                    ("model", g.model.as_str()),
                ],
                c.unaccounted.as_secs_f64(),
            );
        }
    }
    unaccounted
}

fn watts(uj: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        uj as f64 / 1e6 / secs
    } else {
        0.0
    }
}

pub use crate::push::metrics::push_families;

/// The Prometheus text exposition of `host`.
pub fn render(host: &HostState, info: &ExportInfo) -> Result<String, prometheus::Error> {
    render_with_push(host, info, None)
}

/// The Prometheus text exposition of `host`, and of the push when `push` is given (with
/// the current Unix time in ms).
pub fn render_with_push(
    host: &HostState,
    info: &ExportInfo,
    push: Option<(&PushMetrics, u64)>,
) -> Result<String, prometheus::Error> {
    render_all(host, info, push, Vec::new())
}

/// [`render_with_push`] with `more` families (the inference servers').
pub fn render_all(
    host: &HostState,
    info: &ExportInfo,
    push: Option<(&PushMetrics, u64)>,
    more: Vec<MetricFamily>,
) -> Result<String, prometheus::Error> {
    let mut families = families(host, info);
    if let Some((m, now)) = push {
        families.extend(push_families(m, now));
    }
    families.extend(more);
    let mut buf = Vec::with_capacity(4096);
    TextEncoder::new().encode(&families, &mut buf)?;
    String::from_utf8(buf).map_err(|e| prometheus::Error::Msg(e.to_string()))
}
