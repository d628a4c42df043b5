//! Fake hardware that tests build as real artefacts: a powercap sysfs tree in a temp
//! directory ([`powercap`]) and a fake NVML shared library loaded through the real
//! nvml-wrapper ([`nvml`]); and a fake collector for the agent's pushes ([`collector`]).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod collector;
pub mod kube;
pub mod nvml;
pub mod powercap;
pub mod procfs;
