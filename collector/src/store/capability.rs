//! What only some engines keep, declared by each engine rather than answered with an
//! error by default: [`Engine`] names the engine, [`Capability`] lists what may be
//! missing, [`CostReads`] and [`InferenceReads`] are the reads an engine hands out
//! through `Store::cost_reads`/`Store::inference_reads` when it keeps them. The reads on
//! `dyn Store` answer [`StoreError::Unsupported`] (501, naming the engine) otherwise.

use async_trait::async_trait;
use serde::Serialize;

use super::{Store, StoreError};

/// Stored costs (`crate::cost`): a [`Capability`] an engine declares through
/// [`Store::cost_reads`].
#[async_trait]
pub trait CostReads: Send + Sync {
    /// The costs of `[from_s, to_s)` per hour, site and project, each with its tariff
    /// rate (`crate::cost`).
    async fn costs(&self, from_s: i64, to_s: i64)
    -> Result<Vec<crate::cost::CostLine>, StoreError>;
    /// All-time costs per site and project.
    async fn cost_totals(&self) -> Result<Vec<crate::cost::CostTotal>, StoreError>;
    /// The amortised hardware costs of `[from_s, to_s)` per hour, host and project, each
    /// with its rate (`crate::cost::hardware`).
    async fn hardware_costs(
        &self,
        from_s: i64,
        to_s: i64,
    ) -> Result<Vec<crate::cost::hardware::HardwareLine>, StoreError>;
    /// All-time amortised hardware costs per site and project.
    async fn hardware_cost_totals(&self) -> Result<Vec<crate::cost::CostTotal>, StoreError>;
}

/// Stored inference counts (`crate::inference`): a [`Capability`] an engine declares
/// through [`Store::inference_reads`].
#[async_trait]
pub trait InferenceReads: Send + Sync {
    /// Every hour of `[from_s, to_s)` with inference counts or model-tagged energy, per
    /// host, project and model ([`crate::inference::InferenceUnit`]), ordered by hour,
    /// host, project, model.
    async fn inference_units(
        &self,
        from_s: i64,
        to_s: i64,
    ) -> Result<Vec<crate::inference::InferenceUnit>, StoreError>;
    /// All-time inference counts per project and model, ordered by them.
    async fn inference_totals(&self) -> Result<Vec<crate::inference::InferenceTotal>, StoreError>;
}

/// A database engine behind [`Store`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Sqlite,
    Postgresql,
}

impl Engine {
    /// The engine's name as its users write it.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Sqlite => "SQLite",
            Engine::Postgresql => "PostgreSQL",
        }
    }
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What an engine may keep beyond the footprint, tokens and coefficients that every
/// engine keeps. Each engine declares what it keeps (`Store::cost_reads`,
/// `Store::inference_reads` give `Some`); a read of what it does not keep is
/// [`StoreError::Unsupported`], which the API answers with 501 naming the engine, and
/// which the metrics and reports leave out (said once in the log at start).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    Costs,
    InferenceCounts,
}

impl Capability {
    pub const ALL: [Capability; 2] = [Capability::Costs, Capability::InferenceCounts];

    /// What it keeps, for sentences.
    pub fn what(self) -> &'static str {
        match self {
            Capability::Costs => "costs",
            Capability::InferenceCounts => "inference counts",
        }
    }
}

impl<'a> dyn Store + 'a {
    /// Whether this engine keeps `capability`.
    pub fn keeps(&self, capability: Capability) -> bool {
        match capability {
            Capability::Costs => self.cost_reads().is_some(),
            Capability::InferenceCounts => self.inference_reads().is_some(),
        }
    }

    /// The capabilities this engine does not keep.
    pub fn missing_capabilities(&self) -> Vec<Capability> {
        Capability::ALL
            .into_iter()
            .filter(|c| !self.keeps(*c))
            .collect()
    }

    fn unsupported(&self, capability: Capability) -> StoreError {
        StoreError::Unsupported {
            engine: self.engine(),
            capability,
        }
    }

    /// [`CostReads::costs`], or [`StoreError::Unsupported`] naming the engine.
    pub async fn costs(
        &self,
        from_s: i64,
        to_s: i64,
    ) -> Result<Vec<crate::cost::CostLine>, StoreError> {
        match self.cost_reads() {
            Some(r) => r.costs(from_s, to_s).await,
            None => Err(self.unsupported(Capability::Costs)),
        }
    }

    /// [`CostReads::cost_totals`], or [`StoreError::Unsupported`] naming the engine.
    pub async fn cost_totals(&self) -> Result<Vec<crate::cost::CostTotal>, StoreError> {
        match self.cost_reads() {
            Some(r) => r.cost_totals().await,
            None => Err(self.unsupported(Capability::Costs)),
        }
    }

    /// [`CostReads::hardware_costs`], or [`StoreError::Unsupported`] naming the engine.
    pub async fn hardware_costs(
        &self,
        from_s: i64,
        to_s: i64,
    ) -> Result<Vec<crate::cost::hardware::HardwareLine>, StoreError> {
        match self.cost_reads() {
            Some(r) => r.hardware_costs(from_s, to_s).await,
            None => Err(self.unsupported(Capability::Costs)),
        }
    }

    /// [`CostReads::hardware_cost_totals`], or [`StoreError::Unsupported`].
    pub async fn hardware_cost_totals(&self) -> Result<Vec<crate::cost::CostTotal>, StoreError> {
        match self.cost_reads() {
            Some(r) => r.hardware_cost_totals().await,
            None => Err(self.unsupported(Capability::Costs)),
        }
    }

    /// [`InferenceReads::inference_units`], or [`StoreError::Unsupported`].
    pub async fn inference_units(
        &self,
        from_s: i64,
        to_s: i64,
    ) -> Result<Vec<crate::inference::InferenceUnit>, StoreError> {
        match self.inference_reads() {
            Some(r) => r.inference_units(from_s, to_s).await,
            None => Err(self.unsupported(Capability::InferenceCounts)),
        }
    }

    /// [`InferenceReads::inference_totals`], or [`StoreError::Unsupported`].
    pub async fn inference_totals(
        &self,
    ) -> Result<Vec<crate::inference::InferenceTotal>, StoreError> {
        match self.inference_reads() {
            Some(r) => r.inference_totals().await,
            None => Err(self.unsupported(Capability::InferenceCounts)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;
    use axum::response::IntoResponse;

    /// Whatever the engines keep today, a read of what one does not keep is a 501 that
    /// names the engine and the capability (never a 503 a client would retry).
    #[tokio::test]
    async fn a_capability_not_kept_is_a_501_naming_the_engine() {
        for capability in Capability::ALL {
            for engine in [Engine::Sqlite, Engine::Postgresql] {
                let e =
                    crate::server::AppError::Store(StoreError::Unsupported { engine, capability });
                assert_eq!(e.status(), StatusCode::NOT_IMPLEMENTED);
                let resp = e.into_response();
                assert_eq!(resp.status(), StatusCode::NOT_IMPLEMENTED);
                let body = axum::body::to_bytes(resp.into_body(), 4096).await.unwrap();
                let text = String::from_utf8_lossy(&body);
                assert!(
                    text.contains(&format!(
                        "the {} store does not keep {}",
                        engine.name(),
                        capability.what()
                    )),
                    "{text}"
                );
            }
        }
    }
}
