//! Opening NVML and its GPUs (what `agent check` says of each), and opening it again
//! after a GPU was lost or the driver reloaded.

use std::path::Path;

use empreinte_shared::{Component, SourceKind};
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::{Device, Nvml};

use super::gpu::Gpu;
use super::{
    CounterCheck, DEFAULT_GPU_CEILING_WATTS, DRIFT_THRESHOLD, FIRST_CHECK, GpuFacts, GpuMethod,
    MIG_SPLIT_RULE, NvmlSource, RECHECK_EVERY, REINIT_BACKOFF_MAX, REINIT_BACKOFF_MIN,
};
use crate::clock::SampleTime;
use crate::counter::{Ceiling, CumulativeCounter, Rollover};
use crate::sources::{Channel, Diagnosis, GpuIdentity, Opened};

const FIX_LIBRARY: &str = "install the NVIDIA driver (it provides libnvidia-ml.so.1), or set --nvml-library PATH / nvml.library, or \"off\" on hosts without NVIDIA GPUs";
const FIX_POWER: &str = "check the driver with `nvidia-smi -q -d POWER`";

pub(super) fn init(library: &Path) -> Result<Nvml, NvmlError> {
    Nvml::builder().lib_path(library.as_os_str()).init()
}

fn on_off(b: Option<bool>) -> &'static str {
    match b {
        Some(true) => "on",
        Some(false) => "off",
        None => "unknown",
    }
}

/// NVML and its GPU count, or the one diagnosis that says why not.
fn init_and_count(library: &Path) -> Result<(Nvml, u32), Diagnosis> {
    let subject = format!("NVML library {}", library.display());
    let nvml = init(library).map_err(|e| {
        let problem = match &e {
            NvmlError::LibloadingError(_) => format!(
                "cannot load {}: {e} (no NVIDIA driver on this host?)",
                library.display()
            ),
            NvmlError::DriverNotLoaded => "the NVIDIA kernel driver is not loaded".to_string(),
            NvmlError::NoPermission => "no permission to talk to the NVIDIA driver".to_string(),
            other => format!("NVML initialisation failed: {other}"),
        };
        Diagnosis::unusable(
            SourceKind::Nvml,
            subject.clone(),
            problem,
            Some(FIX_LIBRARY.into()),
        )
    })?;
    let count = nvml.device_count().map_err(|e| {
        Diagnosis::unusable(
            SourceKind::Nvml,
            subject.clone(),
            format!("cannot count GPUs: {e}"),
            None,
        )
    })?;
    if count == 0 {
        return Err(Diagnosis::unusable(
            SourceKind::Nvml,
            subject,
            "NVML loaded, but this host has no NVIDIA GPU",
            Some(
                "nothing to fix on a host without GPUs; set nvml.library = \"off\" to skip NVML"
                    .into(),
            ),
        ));
    }
    Ok((nvml, count))
}

impl NvmlSource {
    pub fn open(library: &Path) -> Opened<NvmlSource> {
        let (nvml, count) = match init_and_count(library) {
            Ok(found) => found,
            Err(diagnosis) => {
                return Opened {
                    source: None,
                    diagnoses: vec![diagnosis],
                };
            }
        };
        let driver = nvml.sys_driver_version().ok();
        let mut channels = Vec::new();
        let mut gpus = Vec::new();
        let mut diagnoses = Vec::new();
        for index in 0..count {
            match nvml.device_by_index(index) {
                Ok(device) => match open_gpu(index, &device, driver.as_deref()) {
                    Ok((channel, gpu, diagnosis)) => {
                        channels.push(channel);
                        gpus.push(gpu);
                        diagnoses.push(diagnosis);
                    }
                    Err(diagnosis) => diagnoses.push(diagnosis),
                },
                Err(e) => diagnoses.push(Diagnosis::unusable(
                    SourceKind::Nvml,
                    format!("GPU {index}"),
                    format!("cannot open: {e}"),
                    None,
                )),
            }
        }
        let source = (!gpus.is_empty()).then_some(NvmlSource {
            library: library.to_path_buf(),
            nvml,
            channels,
            gpus,
            lost_since: None,
            next_reinit: None,
            backoff: REINIT_BACKOFF_MIN,
            reinits: 0,
        });
        Opened { source, diagnoses }
    }

    /// Initialises NVML again and finds each GPU by UUID. On failure, backs off.
    pub(super) fn try_reinit(&mut self, at: SampleTime) -> Result<(), String> {
        let result = init(&self.library)
            .map_err(|e| e.to_string())
            .and_then(|nvml| {
                let count = nvml.device_count().map_err(|e| e.to_string())?;
                let mut found = Vec::new();
                for i in 0..count {
                    if let Ok(uuid) = nvml.device_by_index(i).and_then(|d| d.uuid()) {
                        found.push((uuid, i));
                    }
                }
                Ok((nvml, found))
            });
        self.next_reinit = Some(SampleTime::from_monotonic(
            at.since_start().saturating_add(self.backoff),
        ));
        self.backoff = (self.backoff * 2).min(REINIT_BACKOFF_MAX);
        let (nvml, found) =
            result.map_err(|e| format!("NVML cannot be initialised again yet: {e}"))?;
        for g in &mut self.gpus {
            if let Some((_, i)) = found.iter().find(|(u, _)| *u == g.uuid) {
                g.index = *i;
            }
        }
        // The new handle replaces the old one; dropping the old shuts it down.
        self.nvml = nvml;
        self.reinits = self.reinits.saturating_add(1);
        tracing::info!(
            reinits = self.reinits,
            "NVML initialised again; GPUs found by UUID"
        );
        Ok(())
    }

    pub(super) fn reinit_due(&self, at: SampleTime) -> bool {
        self.lost_since.is_some()
            && self
                .next_reinit
                .is_none_or(|t| at.since_start() >= t.since_start())
    }
}

/// One GPU's channel, state and diagnosis; or why it cannot be measured.
fn open_gpu(
    index: u32,
    device: &Device<'_>,
    driver: Option<&str>,
) -> Result<(Channel, Gpu, Diagnosis), Diagnosis> {
    let model = device.name().unwrap_or_else(|_| "unknown".to_string());
    let uuid = device.uuid().unwrap_or_else(|_| format!("unknown-{index}"));
    let subject = format!("GPU {index} {model} ({uuid})");
    let facts = GpuFacts {
        mig: device.mig_mode().ok().map(|m| m.current == 1),
        persistence: device.is_in_persistent_mode().ok(),
        driver: driver.map(str::to_string),
    };
    let power = device.power_usage();
    let method = match (device.total_energy_consumption(), &power) {
        (Ok(_), _) => GpuMethod::EnergyCounter,
        (Err(NvmlError::NotSupported), Ok(_)) => GpuMethod::PowerIntegration,
        (Err(e1), Err(e2)) => {
            return Err(Diagnosis::unusable(
                SourceKind::Nvml,
                subject,
                format!(
                    "neither the energy counter ({e1}) nor the power reading ({e2}) can be read"
                ),
                Some(FIX_POWER.into()),
            ));
        }
        (Err(e), Ok(_)) => {
            return Err(Diagnosis::unusable(
                SourceKind::Nvml,
                subject,
                format!("the energy counter fails: {e}"),
                Some(FIX_POWER.into()),
            ));
        }
    };
    let check = match (method, power.is_ok()) {
        (GpuMethod::EnergyCounter, true) => CounterCheck::Checking,
        _ => CounterCheck::NotApplicable,
    };
    let limit = device
        .power_management_limit()
        .map(|mw| format!(", power limit {} W", mw / 1000))
        .unwrap_or_default();
    let diagnosis = describe(subject, method, check, &limit, &facts);
    let channel = Channel {
        component: Some(Component::Gpu),
        source: SourceKind::Nvml,
        device: format!("gpu{index}"),
        zone: None,
        gpu: Some(GpuIdentity {
            index,
            uuid: uuid.clone(),
            model,
            mig: facts.mig,
            persistence: facts.persistence,
            split: (facts.mig == Some(true)).then(|| MIG_SPLIT_RULE.to_string()),
            driver: facts.driver,
        }),
    };
    let counter = CumulativeCounter::new(
        Rollover::Resets,
        Ceiling::watts_in_millijoules(DEFAULT_GPU_CEILING_WATTS),
    );
    Ok((
        channel,
        Gpu::new(index, uuid, method, check, counter),
        diagnosis,
    ))
}

/// What `agent check` says of a usable GPU: how it is measured, its driver, persistence
/// and MIG modes, and the caveats.
fn describe(
    subject: String,
    method: GpuMethod,
    check: CounterCheck,
    limit: &str,
    facts: &GpuFacts,
) -> Diagnosis {
    let facts_text = format!(
        "; driver {}, persistence mode {}, MIG {}",
        facts.driver.as_deref().unwrap_or("unknown"),
        on_off(facts.persistence),
        on_off(facts.mig),
    );
    let measures = match (method, check) {
        (GpuMethod::EnergyCounter, CounterCheck::Checking) => format!(
            "gpu energy from the cumulative energy counter (mJ), once it agrees within {:.0} % with integrated power over its first {} s (checked again every {} s){limit}{facts_text}",
            DRIFT_THRESHOLD * 100.0,
            FIRST_CHECK.as_secs(),
            RECHECK_EVERY.as_secs()
        ),
        (GpuMethod::EnergyCounter, _) => format!(
            "gpu energy from the cumulative energy counter (mJ), not cross-checked: no power reading{limit}{facts_text}"
        ),
        (GpuMethod::PowerIntegration, _) => format!(
            "gpu energy from power readings integrated each interval (no energy counter on this GPU: pre-Volta){limit}{facts_text}"
        ),
    };
    let mut diagnosis = Diagnosis::usable(SourceKind::Nvml, subject, measures);
    let mut problems = Vec::new();
    if facts.mig == Some(true) {
        problems.push(MIG_SPLIT_RULE.to_string());
    }
    if facts.persistence == Some(false) {
        problems.push("persistence mode is off: the driver may unload between jobs, which restarts the energy counter (`nvidia-smi -pm 1` keeps it loaded)".to_string());
    }
    if !problems.is_empty() {
        diagnosis.problem = Some(problems.join("; "));
    }
    diagnosis
}
