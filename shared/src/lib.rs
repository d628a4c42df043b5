//! Units and labels that the agent and the collector share.
//!
//! This crate knows no I/O: no files, no sockets, no clock. Energy is accounted in
//! integer microjoules ([`MicroJoules`]) so that sums over projects, components and
//! hosts are exact; power is a derived figure ([`Watts`]). [`wire`] is the agent-to-
//! collector format.

#[cfg(feature = "exposition")]
pub mod exposition;
pub mod labels;
pub mod split;
pub mod units;
pub mod wire;

pub use labels::{Component, SourceKind};
pub use units::{MicroJoules, MilliJoules, MilliWatts, Watts};
