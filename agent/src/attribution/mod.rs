//! Per-project attribution: which project each process belongs to, and how each
//! interval's energy is split between projects.

pub mod cgroup;
pub mod procs;
pub mod rules;
pub mod split;
