//! Empreinte's agent: measures how much energy a host's CPUs, memory and GPUs use,
//! and exports it as Prometheus counters.
//!
//! Hardware is reached only through roots and library paths that come from
//! [`config::AgentConfig`]; sources are handed the time of each sample
//! ([`clock::SampleTime`]) and never read the clock themselves.

pub mod attribution;
pub mod check;
pub mod clock;
pub mod config;
pub mod counter;
pub mod inference;
pub mod interval;
pub mod metrics;
pub mod procfs;
pub mod push;
pub mod sampler;
pub mod server;
pub mod sources;
