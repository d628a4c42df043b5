//! One sampling cycle: poll every source at one [`SampleTime`], gather the interval's
//! energy per channel ([`IntervalEnergy`]), add it to the running totals, hand it to the
//! attribution, and publish the host's state for `/metrics`.
//!
//! Architecture invariant: a channel's total only grows (it is a sum of non-negative
//! integer microjoules), so the exported counters never go backwards within a run.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use empreinte_shared::{MicroJoules, SourceKind, Watts};

use crate::attribution::engine::{AttributionState, Attributor};
use crate::clock::{SampleTime, Stopwatch};
use crate::interval::{ChannelInterval, Corrections, IntervalEnergy};
use crate::sources::{Channel, ChannelEnergy, EnergySource, PollError};

/// The host's energy state as the last cycle left it; read by the metrics endpoint.
#[derive(Clone, Debug, Default)]
pub struct HostState {
    pub channels: Vec<ChannelState>,
    pub sources: Vec<SourceState>,
    pub cycles_total: u64,
    /// Wall time spent in sampling cycles, summed.
    pub sampling_seconds_total: f64,
    /// Wall time of the last cycle.
    pub last_cycle_seconds: f64,
    /// Time between the last two samples.
    pub last_interval: Option<Duration>,
    /// The longest time between two consecutive samples since the start: the sampling
    /// interval when no cycle was late.
    pub max_interval: Option<Duration>,
    /// Wall time of the longest cycle since the start.
    pub max_cycle_seconds: f64,
    /// The per-project split, when attribution is on.
    /// (Failed intervals are counted there: `failed_intervals_total`.)
    pub attribution: Option<AttributionState>,
}

/// One channel's counters.
#[derive(Clone, Debug)]
pub struct ChannelState {
    pub channel: Channel,
    /// Energy since the agent started: only ever grows.
    pub total: MicroJoules,
    /// Energy of the last interval.
    pub last_energy: MicroJoules,
    /// Mean power over the last interval.
    pub last_power: Watts,
    /// Counter corrections since the agent started.
    pub corrections: Corrections,
    /// Time since the agent started that the source could not account for at all (see
    /// [`EnergySource::unaccounted_time`]): only ever grows.
    pub unaccounted: Duration,
}

/// One source's health.
#[derive(Clone, Debug)]
pub struct SourceState {
    pub kind: SourceKind,
    /// False after a failed poll, true again after a good one; false for good after a
    /// fatal error.
    pub up: bool,
    pub poll_errors_total: u64,
    pub last_error: Option<String>,
    stopped: bool,
}

/// Shared handle to the host's state.
#[derive(Clone, Debug, Default)]
pub struct SharedState(Arc<Mutex<HostState>>);

impl SharedState {
    /// The state, even if a panicking thread poisoned the lock (the data is plain
    /// counters, always consistent between two statements).
    pub fn lock(&self) -> MutexGuard<'_, HostState> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A source and where its channels start in the host state.
struct PolledSource {
    source: Box<dyn EnergySource>,
    /// Index of this source's first channel in `HostState::channels`.
    first_channel: usize,
}

/// Polls the sources and keeps the counters.
pub struct Sampler {
    polled: Vec<PolledSource>,
    scratch: Vec<ChannelEnergy>,
    /// Published to `state` at the end of each cycle: the lock is held only for that copy,
    /// never while sources are polled or processes scanned, so scrapes do not wait.
    state: SharedState,
    host: HostState,
    last_at: Option<SampleTime>,
    attributor: Option<Attributor>,
    /// The last interval's energy, refilled every cycle.
    interval: IntervalEnergy,
}

/// What one cycle did, for logs and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CycleReport {
    pub errors: Vec<(SourceKind, String)>,
}

impl Sampler {
    pub fn new(sources: Vec<Box<dyn EnergySource>>) -> Sampler {
        let mut host = HostState::default();
        let mut polled = Vec::with_capacity(sources.len());
        for source in sources {
            let first_channel = host.channels.len();
            host.channels
                .extend(source.channels().iter().map(|c| ChannelState {
                    channel: c.clone(),
                    total: MicroJoules::ZERO,
                    last_energy: MicroJoules::ZERO,
                    last_power: Watts(0.0),
                    corrections: Corrections::default(),
                    unaccounted: Duration::ZERO,
                }));
            host.sources.push(SourceState {
                kind: source.kind(),
                up: true,
                poll_errors_total: 0,
                last_error: None,
                stopped: false,
            });
            polled.push(PolledSource {
                source,
                first_channel,
            });
        }
        let interval = IntervalEnergy::new(
            None,
            host.channels
                .iter()
                .map(|c| ChannelInterval::of(&c.channel))
                .collect(),
        );
        Sampler {
            polled,
            scratch: Vec::with_capacity(64),
            state: SharedState(Arc::new(Mutex::new(host.clone()))),
            host,
            last_at: None,
            attributor: None,
            interval,
        }
    }

    /// Splits each interval's energy between projects with `attributor`.
    pub fn with_attribution(mut self, attributor: Attributor) -> Sampler {
        self.attributor = Some(attributor);
        self
    }

    /// The model weights of serving processes for the next cycle (see
    /// [`crate::attribution::models`]); nothing without attribution.
    pub fn set_model_weights(
        &mut self,
        weights: std::collections::HashMap<u32, crate::attribution::models::ProcessWeights>,
    ) {
        if let Some(a) = &mut self.attributor {
            a.set_model_weights(weights);
        }
    }

    /// The project the attribution gave a process at the last cycle.
    pub fn project_of(&self, pid: u32) -> Option<Arc<str>> {
        self.attributor.as_ref().and_then(|a| a.project_of(pid))
    }

    /// The host's state as the last cycle left it (the sampler's own copy, no lock).
    pub fn host(&self) -> &HostState {
        &self.host
    }

    /// The state this sampler publishes.
    pub fn state(&self) -> SharedState {
        self.state.clone()
    }

    /// The last interval's energy, as handed to the attribution.
    pub fn interval(&self) -> &IntervalEnergy {
        &self.interval
    }

    /// Polls every source at `at`, adds each channel's energy to its total and hands the
    /// interval to the attribution.
    pub fn cycle(&mut self, at: SampleTime) -> CycleReport {
        let watch = Stopwatch::start();
        let duration = self.last_at.map(|prev| at.since(prev));
        self.last_at = Some(at);
        let report = self.measure(at, duration);
        let Sampler {
            host,
            attributor,
            interval,
            ..
        } = self;
        for (c, i) in host.channels.iter_mut().zip(&interval.channels) {
            c.total += i.energy;
            c.last_energy = i.energy;
            c.corrections.add(&i.corrections);
            if let Some(dt) = duration {
                c.last_power = i.energy.mean_power(dt);
            }
        }
        host.last_interval = duration;
        host.max_interval = host.max_interval.max(duration);
        if let Some(attributor) = attributor {
            if let Err(e) = attributor.attribute(interval) {
                tracing::warn!(error = %e, "attribution failed for this interval: its energy goes to the unassigned project");
            }
            host.attribution = Some(attributor.state().clone());
        }
        host.cycles_total += 1;
        let spent = watch.elapsed().as_secs_f64();
        host.last_cycle_seconds = spent;
        host.max_cycle_seconds = host.max_cycle_seconds.max(spent);
        host.sampling_seconds_total += spent;
        self.state.lock().clone_from(&self.host);
        report
    }

    /// Polls the sources into `self.interval`.
    fn measure(&mut self, at: SampleTime, duration: Option<Duration>) -> CycleReport {
        let mut report = CycleReport::default();
        // GPU processes are read (and their samples drained) only for the attribution.
        let want_gpu = self.attributor.is_some();
        let Sampler {
            polled,
            scratch,
            host,
            interval,
            ..
        } = self;
        interval.duration = duration;
        interval.gpu_activity.clear();
        for c in &mut interval.channels {
            c.energy = MicroJoules::ZERO;
            c.corrections = Corrections::default();
        }
        for (i, polled_source) in polled.iter_mut().enumerate() {
            if host.sources[i].stopped {
                continue;
            }
            scratch.clear();
            let result = polled_source.source.poll(at, scratch);
            for e in scratch.iter() {
                let Some(c) = interval
                    .channels
                    .get_mut(polled_source.first_channel + e.channel)
                else {
                    continue;
                };
                c.energy += e.energy;
                if let Some(correction) = e.correction {
                    c.corrections.count(correction);
                }
            }
            let s = &mut host.sources[i];
            match result {
                Ok(()) => {
                    s.up = true;
                    s.last_error = None;
                }
                Err(e) => {
                    s.up = false;
                    s.poll_errors_total += 1;
                    s.stopped = matches!(e, PollError::Fatal(_));
                    let text = e.to_string();
                    tracing::warn!(source = %s.kind, error = %text, "energy source poll failed");
                    report.errors.push((s.kind, text.clone()));
                    s.last_error = Some(text);
                }
            }
            for ch in 0..polled_source.source.channels().len() {
                if let Some(c) = host.channels.get_mut(polled_source.first_channel + ch) {
                    c.unaccounted = c.unaccounted.max(polled_source.source.unaccounted_time(ch));
                }
            }
            for ch in 0..polled_source.source.channels().len() {
                if !want_gpu {
                    break;
                }
                if polled_source.source.channels()[ch].component
                    == Some(empreinte_shared::Component::Gpu)
                {
                    if let Some(a) = polled_source.source.gpu_activity(ch) {
                        interval
                            .gpu_activity
                            .push((polled_source.first_channel + ch, a));
                    }
                }
            }
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use empreinte_shared::Component;

    /// A source that plays a fixed list of per-poll energies for one channel.
    struct Scripted {
        channels: Vec<Channel>,
        steps: Vec<Result<u64, PollError>>,
    }

    impl EnergySource for Scripted {
        fn kind(&self) -> SourceKind {
            SourceKind::Estimate
        }
        fn channels(&self) -> &[Channel] {
            &self.channels
        }
        fn poll(&mut self, _at: SampleTime, out: &mut Vec<ChannelEnergy>) -> Result<(), PollError> {
            match self.steps.remove(0) {
                Ok(uj) => {
                    out.push(ChannelEnergy {
                        channel: 0,
                        energy: MicroJoules(uj),
                        correction: None,
                    });
                    Ok(())
                }
                Err(e) => Err(e),
            }
        }
    }

    fn scripted(steps: Vec<Result<u64, PollError>>) -> Box<dyn EnergySource> {
        Box::new(Scripted {
            channels: vec![Channel {
                component: Some(Component::Cpu),
                source: SourceKind::Estimate,
                device: "host".into(),
                zone: None,
                gpu: None,
            }],
            steps,
        })
    }

    fn at(ms: u64) -> SampleTime {
        SampleTime::from_monotonic(Duration::from_millis(ms))
    }

    #[test]
    fn totals_accumulate_and_power_is_energy_over_the_interval() {
        let mut s = Sampler::new(vec![scripted(vec![Ok(0), Ok(2_000_000), Ok(3_000_000)])]);
        s.cycle(at(0));
        s.cycle(at(500));
        s.cycle(at(1500));
        let st = s.state();
        let host = st.lock();
        assert_eq!(host.channels[0].total, MicroJoules(5_000_000));
        assert_eq!(host.channels[0].last_power, Watts(3.0));
        assert_eq!(host.cycles_total, 3);
        assert_eq!(host.last_interval, Some(Duration::from_secs(1)));
    }

    #[test]
    fn a_failed_poll_marks_the_source_down_then_up_again() {
        let mut s = Sampler::new(vec![scripted(vec![
            Ok(0),
            Err(PollError::Retry("boom".into())),
            Ok(7),
        ])]);
        s.cycle(at(0));
        let report = s.cycle(at(1000));
        assert_eq!(report.errors.len(), 1);
        assert!(report.errors[0].1.contains("boom"));
        assert!(!s.state().lock().sources[0].up);
        s.cycle(at(2000));
        let st = s.state();
        let host = st.lock();
        assert!(host.sources[0].up);
        assert_eq!(host.sources[0].poll_errors_total, 1);
        assert_eq!(host.channels[0].total, MicroJoules(7));
    }

    #[test]
    fn a_fatal_error_stops_polling_that_source() {
        let mut s = Sampler::new(vec![scripted(vec![
            Ok(0),
            Err(PollError::Fatal("gone".into())),
        ])]);
        s.cycle(at(0));
        s.cycle(at(1000));
        // A third poll would panic on the empty script if the source were still polled.
        s.cycle(at(2000));
        assert!(!s.state().lock().sources[0].up);
    }
}
