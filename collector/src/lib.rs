//! Empreinte's collector: receives the agents' per-project energy without loss, stores
//! it, converts it to CO2e with coefficients a person can check, tracks sobriety
//! objectives and serves the footprint (Prometheus, JSON API).

pub mod api;
pub mod auth;
pub mod carbon;
pub mod clock;
pub mod config;
pub mod cost;
pub mod footprint;
pub mod history;
pub mod inference;
pub mod ingest;
pub mod listen;
pub mod metrics;
pub mod objectives;
pub mod period;
pub mod plan;
pub mod register;
pub mod report;
pub mod server;
pub mod store;
pub mod tls;
pub mod uncertainty;
