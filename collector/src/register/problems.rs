//! Validation of `register.toml`: every problem at once, each with the key it is about
//! (`use[2].status`) and what is allowed, in the style of the collector's configuration.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use super::{
    Bilingual, Context, DataKind, Hosting, RawUse, RawVolume, Register, RegisterFile, Risk, Status,
    Use, Volume,
};

/// One thing wrong with a register.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisterProblem {
    pub key: String,
    pub message: String,
}

impl fmt::Display for RegisterProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

type Sink<'a> = &'a mut dyn FnMut(String, String);

fn nonempty(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// The register, or every problem of the file.
pub fn validate(
    file: &RegisterFile,
    cx: &Context,
    base: &Path,
) -> Result<Register, Vec<RegisterProblem>> {
    let mut out = Vec::new();
    let mut sink = |key: String, message: String| out.push(RegisterProblem { key, message });
    let mut uses = Vec::new();
    let mut ids = BTreeSet::new();
    let mut owners: BTreeMap<&str, &str> = BTreeMap::new();
    for (i, raw) in file.uses.iter().enumerate() {
        let key = |k: &str| format!("use[{i}].{k}");
        if !raw.id.is_empty() && !ids.insert(raw.id.as_str()) {
            sink(key("id"), format!("{:?} is the id of two uses", raw.id));
        }
        for (j, p) in raw.projects.iter().enumerate() {
            if p.trim().is_empty() {
                sink(
                    format!("use[{i}].projects[{j}]"),
                    "must not be empty".into(),
                );
            } else if let Some(other) = owners.insert(p, &raw.id) {
                sink(
                    format!("use[{i}].projects[{j}]"),
                    format!(
                        "project {p:?} already belongs to use {other:?}: a project belongs to one use, so that figures by use add up"
                    ),
                );
            }
        }
        if let Some(u) = one_use(raw, i, cx, base, &mut sink) {
            uses.push(u);
        }
    }
    if out.is_empty() {
        Ok(Register::new(uses))
    } else {
        Err(out)
    }
}

/// One use, or `None` when it has problems (all of them given to `sink`).
fn one_use(raw: &RawUse, i: usize, cx: &Context, base: &Path, sink: Sink<'_>) -> Option<Use> {
    let key = |k: &str| format!("use[{i}].{k}");
    let mut bad = false;
    let mut problem = |k: String, m: String| {
        bad = true;
        sink(k, m)
    };
    if raw.id.is_empty()
        || !raw
            .id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
    {
        problem(
            key("id"),
            format!(
                "{:?}: a stable id of lowercase letters, digits, - and _ is needed",
                raw.id
            ),
        );
    }
    texts(raw, i, &mut problem);
    let status = status_and_dates(raw, i, &mut problem);
    let risk = match raw.risk.as_str() {
        "minimal" => Some(Risk::Minimal),
        "limited" => Some(Risk::Limited),
        "high" => Some(Risk::High),
        "unacceptable" => Some(Risk::Unacceptable),
        other => {
            problem(
                key("risk"),
                format!(
                    "{other:?}: the EU AI Act risk category is one of minimal, limited, high (unacceptable only for a retired use)"
                ),
            );
            None
        }
    };
    if risk == Some(Risk::Unacceptable) && status.as_ref().is_some_and(|s| s.0 != Status::Retired) {
        problem(
            key("risk"),
            "an unacceptable-risk practice is prohibited (EU AI Act art. 5): only a retired use may have it".into(),
        );
    }
    let data = data_kinds(raw, i, &mut problem);
    let hosting = hosting(raw, i, cx, &mut problem);
    let volumes = volumes(raw, i, base, &mut problem);
    if bad {
        return None;
    }
    let (status, pilot_from, production_from, retired_on) = status?;
    Some(Use {
        id: raw.id.clone(),
        name: raw.name.clone(),
        purpose: raw.purpose.clone(),
        department: raw.department.trim().to_string(),
        service: raw.service.trim().to_string(),
        accountable: raw.accountable.clone(),
        models: raw.models.clone(),
        status,
        pilot_from,
        production_from,
        retired_on,
        risk: risk?,
        data,
        decision: raw.decision.clone(),
        hosting: hosting?,
        projects: raw.projects.clone(),
        volumes,
    })
}

fn texts(raw: &RawUse, i: usize, problem: &mut impl FnMut(String, String)) {
    let key = |k: &str| format!("use[{i}].{k}");
    for (k, text) in [("name", &raw.name), ("purpose", &raw.purpose)] {
        let Bilingual { fr, en } = text;
        if fr.trim().is_empty() {
            problem(key(&format!("{k}.fr")), "the French text is needed".into());
        }
        if en.trim().is_empty() {
            problem(key(&format!("{k}.en")), "the English text is needed".into());
        }
    }
    for (k, v, what) in [
        ("department", &raw.department, "the owning department"),
        ("service", &raw.service, "the owning service"),
        (
            "accountable",
            &raw.accountable,
            "the accountable role (a function, e.g. \"Directeur général des services\")",
        ),
        (
            "decision",
            &raw.decision,
            "the reference of the decision that approved the use (deliberation, order, minutes)",
        ),
    ] {
        if v.trim().is_empty() {
            problem(key(k), format!("{what} is needed"));
        }
    }
    if raw.models.is_empty() {
        problem(
            key("models"),
            "list the model(s) the use runs, e.g. [\"mistral-small-3.1\"]".into(),
        );
    }
    for (j, m) in raw.models.iter().enumerate() {
        if m.trim().is_empty() {
            problem(format!("use[{i}].models[{j}]"), "must not be empty".into());
        }
    }
}

type Dates = (
    Status,
    Option<jiff::civil::Date>,
    Option<jiff::civil::Date>,
    Option<jiff::civil::Date>,
);

fn status_and_dates(
    raw: &RawUse,
    i: usize,
    problem: &mut impl FnMut(String, String),
) -> Option<Dates> {
    let key = |k: &str| format!("use[{i}].{k}");
    let mut date = |k: &str, v: &Option<String>| -> Option<jiff::civil::Date> {
        let text = v.as_deref()?;
        match text.parse::<jiff::civil::Date>() {
            Ok(d) if text.len() == 10 => Some(d),
            _ => {
                problem(
                    key(k),
                    format!("{text:?} is not a date: YYYY-MM-DD is expected"),
                );
                None
            }
        }
    };
    let pilot = date("pilot_from", &raw.pilot_from);
    let production = date("production_from", &raw.production_from);
    let retired = date("retired_on", &raw.retired_on);
    let status = match raw.status.as_str() {
        "pilot" => Status::Pilot,
        "production" => Status::Production,
        "retired" => Status::Retired,
        other => {
            problem(
                key("status"),
                format!("{other:?}: allowed are pilot, production, retired"),
            );
            return None;
        }
    };
    let needed = match status {
        Status::Pilot => ("pilot_from", raw.pilot_from.is_some()),
        Status::Production => ("production_from", raw.production_from.is_some()),
        Status::Retired => ("retired_on", raw.retired_on.is_some()),
    };
    if !needed.1 {
        problem(
            key(needed.0),
            format!("a use with status {:?} needs the date of it", raw.status),
        );
    }
    if status == Status::Pilot && (raw.production_from.is_some() || raw.retired_on.is_some()) {
        problem(
            key("status"),
            "a pilot has no production or retirement date yet".into(),
        );
    }
    if status == Status::Production && raw.retired_on.is_some() {
        problem(
            key("status"),
            "a use with a retirement date has status \"retired\"".into(),
        );
    }
    let ordered = [
        ("pilot_from", pilot),
        ("production_from", production),
        ("retired_on", retired),
    ];
    let known: Vec<(&str, jiff::civil::Date)> = ordered
        .iter()
        .filter_map(|(k, d)| d.map(|d| (*k, d)))
        .collect();
    for w in known.windows(2) {
        if w[1].1 < w[0].1 {
            problem(
                key(w[1].0),
                format!("{} comes before {} ({})", w[1].1, w[0].0, w[0].1),
            );
        }
    }
    Some((status, pilot, production, retired))
}

fn data_kinds(raw: &RawUse, i: usize, problem: &mut impl FnMut(String, String)) -> Vec<DataKind> {
    if raw.data.is_empty() {
        problem(
            format!("use[{i}].data"),
            "list the kinds of data processed: personal, sensitive, public".into(),
        );
    }
    let mut out = Vec::new();
    for (j, d) in raw.data.iter().enumerate() {
        match d.as_str() {
            "personal" => out.push(DataKind::Personal),
            "sensitive" => out.push(DataKind::Sensitive),
            "public" => out.push(DataKind::Public),
            other => problem(
                format!("use[{i}].data[{j}]"),
                format!("{other:?}: allowed are personal, sensitive, public"),
            ),
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

fn hosting(
    raw: &RawUse,
    i: usize,
    cx: &Context,
    problem: &mut impl FnMut(String, String),
) -> Option<Hosting> {
    let key = |k: &str| format!("use[{i}].hosting.{k}");
    let h = &raw.hosting;
    match h.kind.as_str() {
        "on_site" => {
            if h.provider.is_some() || h.service.is_some() {
                problem(
                    key("provider"),
                    "provider and service are for an external use".into(),
                );
            }
            if !raw.volumes.is_empty() {
                problem(
                    format!("use[{i}].volume"),
                    "an on-site use is measured by its projects; declared volumes are for external uses".into(),
                );
            }
            let Some(site) = nonempty(&h.site) else {
                problem(
                    key("site"),
                    "an on-site use names its site (a [[site]] of the collector's configuration, or the default site)".into(),
                );
                return None;
            };
            if let Some(sites) = &cx.sites {
                if !sites.iter().any(|s| s == site) {
                    problem(
                        key("site"),
                        format!(
                            "{site:?} is not a site of the collector's configuration (known: {})",
                            sites.join(", ")
                        ),
                    );
                }
            }
            Some(Hosting::OnSite {
                site: site.to_string(),
            })
        }
        "external" => {
            if h.site.is_some() {
                problem(
                    key("site"),
                    "an external use has a provider, not a site".into(),
                );
            }
            if !raw.projects.is_empty() {
                problem(
                    format!("use[{i}].projects"),
                    "an external use has no measured projects: its footprint is estimated from its declared volume".into(),
                );
            }
            let Some(provider) = nonempty(&h.provider) else {
                problem(
                    key("provider"),
                    "an external use names its provider (e.g. \"Mistral AI\")".into(),
                );
                return None;
            };
            Some(Hosting::External {
                provider: provider.to_string(),
                service: nonempty(&h.service).map(str::to_string),
            })
        }
        other => {
            problem(
                key("kind"),
                format!("{other:?}: allowed are on_site and external"),
            );
            None
        }
    }
}

fn volumes(
    raw: &RawUse,
    i: usize,
    base: &Path,
    problem: &mut impl FnMut(String, String),
) -> Vec<Volume> {
    let mut out = Vec::new();
    // Checked whenever the use says it is external, even when its hosting has other
    // problems: every problem at once.
    if raw.hosting.kind != "external" {
        return out;
    }
    let mut months = BTreeSet::new();
    for (j, v) in raw.volumes.iter().enumerate() {
        let key = |k: &str| format!("use[{i}].volume[{j}].{k}");
        if let Err(e) = crate::config::parse_month(&v.month) {
            problem(key("month"), e);
        } else if !months.insert((v.month.clone(), v.factor.clone())) {
            problem(
                key("month"),
                format!("{} is declared twice for factor {:?}", v.month, v.factor),
            );
        }
        let factor = super::external::factor(&v.factor);
        if factor.is_none() {
            problem(
                key("factor"),
                format!(
                    "{:?} is not a per-token factor of collector/data/external_factors.toml (known: {})",
                    v.factor,
                    super::external::factor_ids().join(", ")
                ),
            );
        }
        if let Some(vol) = volume(v, &key, base, problem) {
            if let Some(f) = factor {
                if vol.output_tokens.is_none() && !(vol.requests.is_some() && f.has_per_request()) {
                    problem(
                        key("output_tokens"),
                        format!(
                            "the estimate needs the output tokens (factor {:?} has no per-request figure)",
                            v.factor
                        ),
                    );
                }
            }
            out.push(vol);
        }
    }
    out
}

/// One volume, typed or read from its CSV.
fn volume(
    v: &RawVolume,
    key: &dyn Fn(&str) -> String,
    base: &Path,
    problem: &mut impl FnMut(String, String),
) -> Option<Volume> {
    let typed = v.requests.is_some() || v.input_tokens.is_some() || v.output_tokens.is_some();
    match (&v.csv, typed) {
        (Some(_), true) => {
            problem(
                key("csv"),
                "give the volume by hand or a CSV, not both".into(),
            );
            None
        }
        (None, false) => {
            problem(
                key("output_tokens"),
                "declare output_tokens (and input_tokens, requests), or a csv export of the provider's usage".into(),
            );
            None
        }
        (None, true) => Some(Volume {
            month: v.month.clone(),
            factor: v.factor.clone(),
            requests: v.requests,
            input_tokens: v.input_tokens,
            output_tokens: v.output_tokens,
            origin: "declared".into(),
            source: v.source.clone(),
        }),
        (Some(csv), false) => {
            let path = base.join(csv);
            match super::external::read_usage_csv(&path, &v.month) {
                Ok(u) => Some(Volume {
                    month: v.month.clone(),
                    factor: v.factor.clone(),
                    requests: u.requests,
                    input_tokens: u.input_tokens,
                    output_tokens: u.output_tokens,
                    origin: format!("csv:{}", csv.display()),
                    source: v.source.clone(),
                }),
                Err(e) => {
                    problem(key("csv"), e);
                    None
                }
            }
        }
    }
}
