//! `empreinte agent check`: per source and per zone or GPU, whether it is usable, what it
//! measures, and if not, why not and how to fix it.

use serde::Serialize;

use crate::config::AgentConfig;
use crate::sources::{self, Diagnosis};

/// The whole check, as printed or as JSON.
#[derive(Clone, Debug, Serialize)]
pub struct CheckReport {
    pub diagnoses: Vec<Diagnosis>,
    /// Components covered, each with the source that covers it.
    pub coverage: Vec<Coverage>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Coverage {
    pub component: empreinte_shared::Component,
    pub sources: Vec<empreinte_shared::SourceKind>,
    pub measured: bool,
}

impl CheckReport {
    /// Opens every configured source as the agent would, and reports.
    pub fn run(config: &AgentConfig) -> CheckReport {
        let opened = sources::open_all(config);
        let coverage = empreinte_shared::Component::ALL
            .iter()
            .filter_map(|&component| {
                let mut kinds: Vec<_> = opened
                    .sources
                    .iter()
                    .filter(|s| s.channels().iter().any(|c| c.component == Some(component)))
                    .map(|s| s.kind())
                    .collect();
                kinds.dedup();
                (!kinds.is_empty()).then(|| Coverage {
                    component,
                    measured: kinds.iter().all(|k| k.is_measured()),
                    sources: kinds,
                })
            })
            .collect();
        CheckReport {
            diagnoses: opened.diagnoses,
            coverage,
        }
    }

    /// True when at least one component is measured or estimated.
    pub fn anything_usable(&self) -> bool {
        !self.coverage.is_empty()
    }

    pub fn to_text(&self) -> String {
        let mut out = String::from("Energy sources\n");
        for d in &self.diagnoses {
            out.push_str(&format!("{d}\n"));
        }
        out.push_str("\nCoverage\n");
        if self.coverage.is_empty() {
            out.push_str("  nothing is measured or estimated on this host\n");
        }
        for c in &self.coverage {
            let sources: Vec<&str> = c.sources.iter().map(|s| s.as_str()).collect();
            out.push_str(&format!(
                "  {:<5} {} ({})\n",
                c.component.as_str(),
                if c.measured { "measured" } else { "ESTIMATED" },
                sources.join(", ")
            ));
        }
        out
    }
}
