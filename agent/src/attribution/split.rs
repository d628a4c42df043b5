//! Exact integer splitting lives in the shared crate (the collector shares embodied
//! emissions with it too).

pub use empreinte_shared::split::split_exact;
