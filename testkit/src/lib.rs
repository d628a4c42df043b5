//! Fake hardware that tests build as real artefacts: a powercap sysfs tree in a temp
//! directory ([`powercap`]) and a fake NVML shared library loaded through the real
//! nvml-wrapper ([`nvml`]); a fake collector for the agent's pushes ([`collector`]);
//! the tests' PostgreSQL databases ([`postgres`]); commands that must succeed
//! ([`process::output_ok`]); and [`wait::wait_until`], how every
//! test waits for a condition instead of sleeping.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod collector;
pub mod fuzz;
pub mod inference;
pub mod kube;
pub mod load;
pub mod nvml;
pub mod postgres;
pub mod powercap;
pub mod process;
pub mod procfs;
pub mod register;
pub mod wait;
