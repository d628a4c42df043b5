//! Units and kinds shared by the coefficients and the imports.

use serde::{Deserialize, Serialize};

/// Grams of CO2-equivalent per kilowatt-hour of electricity.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GramsPerKwh(pub f64);

/// Kilograms of CO2-equivalent.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KgCo2e(pub f64);

/// What a grid intensity counts. The two are not comparable: lifecycle figures are higher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FactorKind {
    /// Upstream emissions included (fuel extraction, plant construction): ADEME Base
    /// Empreinte, Ember / Our World in Data, Electricity Maps "lifecycle".
    Lifecycle,
    /// Combustion at the power plant only: RTE's `taux_co2`, Electricity Maps "direct".
    Direct,
}

impl FactorKind {
    /// The name used in the data file and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            FactorKind::Lifecycle => "lifecycle",
            FactorKind::Direct => "direct",
        }
    }
}

impl std::fmt::Display for FactorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
