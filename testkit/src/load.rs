//! Fake hosts that draw power in the background while a test watches the real agent:
//! one harness for the end-to-end tests instead of a loop copied into each.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::powercap::FakePowercap;

/// Non-overlapping zones of [`FakePowercap::intel_two_socket`] (packages and DRAM) and
/// the microjoules each one draws per load step. Odd figures, so that a lost or doubled
/// step shows in the totals.
pub const TWO_SOCKET_STEPS_UJ: [(&str, u64); 4] = [
    ("intel-rapl:0", 3_000_000),
    ("intel-rapl:1", 2_000_000),
    ("intel-rapl:0:2", 250_003),
    ("intel-rapl:1:2", 150_001),
];

/// The energy the test has given `zones` of `fp` so far: the ground truth.
pub fn given_uj(fp: &FakePowercap, zones: &[(&str, u64)]) -> u64 {
    zones
        .iter()
        .map(|(z, _)| fp.truth_uj(&fp.zone(z)) as u64)
        .sum()
}

/// Advances every zone of `steps` by `factor` times its step.
pub fn step(fp: &mut FakePowercap, steps: &[(&str, u64)], factor: u64) {
    for (z, uj) in steps {
        let zone = fp.zone(z);
        fp.advance_uj(&zone, uj * factor);
    }
}

/// A background thread that applies `step` to its state every `period` until
/// [`Load::finish`], which returns the state (the fakes, with their ground truth).
pub struct Load<T: Send + 'static> {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<T>,
}

impl<T: Send + 'static> Load<T> {
    pub fn start(
        mut state: T,
        period: Duration,
        mut step: impl FnMut(&mut T) + Send + 'static,
    ) -> Load<T> {
        let stop = Arc::new(AtomicBool::new(false));
        let handle = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    step(&mut state);
                    // Pacing the fake hardware (power is energy over time), not waiting
                    // for a condition.
                    std::thread::sleep(period);
                }
                state
            })
        };
        Load { stop, handle }
    }

    /// Stops after the step in progress and returns the state.
    pub fn finish(self) -> T {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap()
    }
}
