//! `GET /api/v1/uses` (read token): the register with each use's measured figures for
//! a month, its estimated external footprint apart, the departments' totals, and the
//! projects with energy that no use declares ("usage non déclaré" / "undeclared use").
//! Also the keys of `group_by=use|department` on `/api/v1/footprint`.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};

use super::external::{self, Estimate};
use super::{Bilingual, Register, UNDECLARED_EN, UNDECLARED_FR, Use};
use crate::api::Figures;
use crate::server::{AppError, AppState};
use crate::store::Sums;

/// The label of a project with energy and no use.
pub fn undeclared_label() -> Bilingual {
    Bilingual {
        fr: UNDECLARED_FR.into(),
        en: UNDECLARED_EN.into(),
    }
}

/// The group of `project` under `group_by` (`use` or `department`), or `None` when no
/// use declares the project.
pub fn group_key(register: &Register, group_by: &str, project: &str) -> Option<String> {
    let u = register.use_of(project)?;
    Some(match group_by {
        "department" => u.department.clone(),
        _ => u.id.clone(),
    })
}

/// A project that has energy and no use.
#[derive(Clone, Debug, Serialize)]
pub struct Undeclared {
    pub project: String,
    pub undeclared_use: bool,
    pub label: Bilingual,
    #[serde(flatten)]
    pub figures: Figures,
}

impl Undeclared {
    pub fn new(project: &str, sums: &Sums) -> Undeclared {
        Undeclared {
            project: project.to_string(),
            undeclared_use: true,
            label: undeclared_label(),
            figures: Figures::from(sums),
        }
    }
}

/// What `group_by=project` rows say of their project's place in the register.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ProjectTags {
    #[serde(rename = "use", skip_serializing_if = "Option::is_none")]
    pub use_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// True when no use declares the project.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub undeclared_use: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<Bilingual>,
}

impl ProjectTags {
    pub fn of(register: &Register, project: &str) -> ProjectTags {
        match register.use_of(project) {
            Some(u) => ProjectTags {
                use_id: Some(u.id.clone()),
                department: Some(u.department.clone()),
                service: Some(u.service.clone()),
                undeclared_use: false,
                label: None,
            },
            None => ProjectTags {
                undeclared_use: true,
                label: Some(undeclared_label()),
                ..ProjectTags::default()
            },
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsesParams {
    pub month: Option<String>,
    pub department: Option<String>,
}

#[derive(Serialize)]
pub struct UseEntry {
    #[serde(flatten)]
    pub register: Use,
    /// Measured (and estimated-by-the-agent) energy of the use's projects this month.
    pub measured: Figures,
    /// The month's estimated footprint of an external use, from its declared volume:
    /// never added to `measured`.
    pub estimated: Vec<Estimate>,
    pub estimated_energy_kwh: f64,
}

#[derive(Serialize)]
pub struct DepartmentEntry {
    pub department: String,
    pub uses: Vec<String>,
    pub measured: Figures,
    pub estimated_energy_kwh: f64,
    pub estimated_energy_uj: u64,
}

#[derive(Serialize)]
pub struct UsesResponse {
    pub month: String,
    /// The register file, `null` when none is configured.
    pub register_file: Option<String>,
    pub uses: Vec<UseEntry>,
    pub departments: Vec<DepartmentEntry>,
    /// Projects with energy this month that no use declares: the governance signal.
    pub undeclared: Vec<Undeclared>,
    /// Every measured project's figures, declared or not.
    pub total_measured: Figures,
}

pub async fn uses(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Result<Query<UsesParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<UsesResponse>, AppError> {
    crate::api::reader(&state, &headers).await?;
    let Query(p) = params.map_err(|e| AppError::BadQuery(e.body_text()))?;
    let m = crate::api::resolve_month(&state, p.month.as_deref())?;
    let by_project = crate::api::month_to_date_by_project(&state, &m).await?;
    let register = state.register.get();
    if let Some(d) = &p.department {
        if !register.uses.iter().any(|u| &u.department == d) {
            return Err(AppError::BadQuery(format!(
                "department={d:?} is not a department of the register (known: {})",
                register.departments().join(", ")
            )));
        }
    }
    Ok(Json(build(
        &register,
        &by_project,
        &m.label(),
        p.department.as_deref(),
    )))
}

/// The response from the month's sums per project.
pub fn build(
    register: &Register,
    by_project: &BTreeMap<String, Sums>,
    month: &str,
    department: Option<&str>,
) -> UsesResponse {
    let mut uses = Vec::new();
    let mut departments: BTreeMap<String, (Vec<String>, Sums, u64)> = BTreeMap::new();
    for u in &register.uses {
        if department.is_some_and(|d| d != u.department) {
            continue;
        }
        let mut sums = Sums::default();
        for p in &u.projects {
            if let Some(s) = by_project.get(p) {
                sums.add(s);
            }
        }
        let estimated: Vec<Estimate> = u
            .volumes
            .iter()
            .filter(|v| v.month == month)
            .filter_map(external::estimate)
            .collect();
        let est_uj: u64 = estimated.iter().map(|e| e.estimated_energy_uj).sum();
        let d = departments.entry(u.department.clone()).or_default();
        d.0.push(u.id.clone());
        d.1.add(&sums);
        d.2 = d.2.saturating_add(est_uj);
        uses.push(UseEntry {
            register: u.clone(),
            measured: Figures::from(&sums),
            estimated,
            estimated_energy_kwh: crate::footprint::kwh(est_uj),
        });
    }
    let mut total = Sums::default();
    let mut undeclared = Vec::new();
    for (project, s) in by_project {
        total.add(s);
        if register.use_of(project).is_none() && s.energy_uj > 0 && department.is_none() {
            undeclared.push(Undeclared::new(project, s));
        }
    }
    UsesResponse {
        month: month.to_string(),
        register_file: register.path.as_ref().map(|p| p.display().to_string()),
        uses,
        departments: departments
            .into_iter()
            .map(|(department, (uses, sums, est))| DepartmentEntry {
                department,
                uses,
                measured: Figures::from(&sums),
                estimated_energy_kwh: crate::footprint::kwh(est),
                estimated_energy_uj: est,
            })
            .collect(),
        undeclared,
        total_measured: Figures::from(&total),
    }
}

/// The series' name.
pub const PROJECT_INFO_METRIC: &str = "empreinte_register_project_info";

/// `empreinte_register_project_info{project, use, department, service, undeclared}`:
/// one series (value 1) per project the store or the register knows, for dashboards
/// to group and filter by use and department (`* on (project) group_left (use,
/// department)`); a project no use declares has `undeclared="true"` and empty use and
/// department.
pub async fn prometheus(state: &AppState) -> Result<String, crate::store::StoreError> {
    use std::fmt::Write;
    let register = state.register.get();
    let mut projects: std::collections::BTreeSet<String> = state
        .store
        .projects()
        .await?
        .into_iter()
        .map(|p| p.project)
        .collect();
    for u in &register.uses {
        projects.extend(u.projects.iter().cloned());
    }
    let mut out = String::new();
    if projects.is_empty() {
        return Ok(out);
    }
    let _ = writeln!(
        out,
        "# HELP {PROJECT_INFO_METRIC} The use, department and service a project belongs to in the register of AI uses (undeclared=\"true\": no use declares it).\n# TYPE {PROJECT_INFO_METRIC} gauge"
    );
    let esc = |v: &str| {
        v.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    };
    for p in projects {
        let (id, dept, service) = match register.use_of(&p) {
            Some(u) => (u.id.as_str(), u.department.as_str(), u.service.as_str()),
            None => ("", "", ""),
        };
        let _ = writeln!(
            out,
            "{PROJECT_INFO_METRIC}{{project=\"{}\",use=\"{}\",department=\"{}\",service=\"{}\",undeclared=\"{}\"}} 1",
            esc(&p),
            esc(id),
            esc(dept),
            esc(service),
            id.is_empty()
        );
    }
    Ok(out)
}
