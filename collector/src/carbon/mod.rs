//! Carbon: the coefficients that turn energy into CO2-equivalent, and the imports of grid
//! carbon-intensity time series.
//!
//! - [`factors`]: the built-in coefficients (`collector/data/carbon.toml`: grid factors per
//!   zone, PUE by facility kind, embodied emissions of hardware), each with its source and
//!   year, merged with an organisation's own file. Every coefficient says whether it is a
//!   default (`is_default`) or the organisation's own.
//! - [`import`]: [`IntensitySeries`], the common result of an import, its report, the
//!   time-weighted mean over an interval, and [`parse_intensity`], which detects the format.
//! - [`eco2mix`]: RTE eCO2mix exports (ODRÉ CSV and the classic tab-separated download).
//! - [`electricitymaps`]: Electricity Maps history exports (CSV and API JSON).
//!
//! Pure code: no database, no network, no clock.

pub mod eco2mix;
pub mod electricitymaps;
pub mod factors;
pub mod import;
mod units;

pub use factors::{
    Coefficients, CoefficientsError, EmbodiedDefault, FacilityKind, GridFactor, HardwareKind,
    PueDefault, ResidualMix,
};
pub use import::{ImportError, ImportReport, IntensityPoint, IntensitySeries, parse_intensity};
pub use units::{FactorKind, GramsPerKwh, KgCo2e};
