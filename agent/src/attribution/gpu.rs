//! Per-process GPU weights and the program name shown for a process.

use crate::sources::GpuActivity;

/// The program name of a command line (the first word's last path segment): what the
/// debug endpoint and `check` show unless full command lines are enabled, since
/// arguments can hold secrets.
pub fn program(cmdline: &str) -> &str {
    let first = cmdline.split(' ').next().unwrap_or("");
    first.rsplit('/').next().unwrap_or(first)
}

/// Per-process weights on one GPU for one interval: the sum of SM utilisation samples
/// when any process has one; else used GPU memory; else equal shares. Sorted by PID.
pub fn gpu_process_weights(activity: &GpuActivity) -> Vec<(u32, u64)> {
    let mut by_pid: std::collections::BTreeMap<u32, u64> = std::collections::BTreeMap::new();
    for s in &activity.samples {
        *by_pid.entry(s.pid).or_default() += u64::from(s.sm_util);
    }
    if by_pid.values().any(|&w| w > 0) {
        return by_pid.into_iter().collect();
    }
    let memory: Vec<(u32, u64)> = activity
        .processes
        .iter()
        .map(|p| (p.pid, p.used_gpu_memory.unwrap_or(0)))
        .collect();
    let mut out: Vec<(u32, u64)> = if memory.iter().any(|(_, m)| *m > 0) {
        memory
    } else {
        activity.processes.iter().map(|p| (p.pid, 1)).collect()
    };
    out.sort_unstable();
    out.dedup_by_key(|(pid, _)| *pid);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_program_name_is_shown_by_default() {
        assert_eq!(
            program("/usr/bin/python3 serve.py --api-key s3cr3t"),
            "python3"
        );
        assert_eq!(program("[kthreadd]"), "[kthreadd]");
        assert_eq!(program(""), "");
    }

    #[test]
    fn gpu_weights_prefer_samples_then_memory_then_equal_shares() {
        use crate::sources::{GpuProcess, GpuSample};
        let procs = vec![
            GpuProcess {
                pid: 2,
                used_gpu_memory: Some(300),
            },
            GpuProcess {
                pid: 1,
                used_gpu_memory: Some(100),
            },
        ];
        let samples = vec![
            GpuSample {
                pid: 2,
                timestamp_us: 1,
                sm_util: 10,
            },
            GpuSample {
                pid: 2,
                timestamp_us: 2,
                sm_util: 30,
            },
        ];
        let a = GpuActivity {
            processes: procs.clone(),
            samples,
        };
        assert_eq!(gpu_process_weights(&a), [(2, 40)]);
        let a = GpuActivity {
            processes: procs.clone(),
            samples: Vec::new(),
        };
        assert_eq!(gpu_process_weights(&a), [(1, 100), (2, 300)]);
        let none: Vec<GpuProcess> = procs
            .iter()
            .map(|p| GpuProcess {
                used_gpu_memory: None,
                ..*p
            })
            .collect();
        assert_eq!(
            gpu_process_weights(&GpuActivity {
                processes: none,
                samples: Vec::new()
            }),
            [(1, 1), (2, 1)]
        );
    }
}
