//! Validation of the collector's configuration: every problem at once, each with the
//! key it is about and what is allowed.

use std::time::Duration;

use super::{CollectorConfig, ConfigProblem, parse_month};

impl CollectorConfig {
    /// Every problem of this configuration.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        let mut problem = |key: String, message: String| out.push(ConfigProblem { key, message });
        organisation(self, &mut problem);
        limits(self, &mut problem);
        tls(self, &mut problem);
        sites(self, &mut problem);
        inventory(self, &mut problem);
        objectives(self, &mut problem);
        out
    }
}

/// The organisation and the store.
fn organisation(c: &CollectorConfig, problem: &mut impl FnMut(String, String)) {
    if jiff::tz::TimeZone::get(&c.organisation.timezone).is_err() {
        problem(
            "organisation.timezone".into(),
            format!(
                "{:?} is not a known IANA time zone (e.g. Europe/Paris, America/Cayenne, Indian/Reunion)",
                c.organisation.timezone
            ),
        );
    }
    if !matches!(c.organisation.language.as_str(), "fr" | "en") {
        problem(
            "organisation.language".into(),
            format!(
                "{:?}: allowed are \"fr\" and \"en\"",
                c.organisation.language
            ),
        );
    }
    if let Some(g) = c.organisation.upstream_g_per_kwh {
        if !(g.is_finite() && g > 0.0 && g < 2_000.0) {
            problem(
                "organisation.upstream_g_per_kwh".into(),
                format!("{g}: a factor in gCO2e/kWh, above 0 and below 2,000"),
            );
        }
        if c.organisation
            .upstream_source
            .as_deref()
            .unwrap_or("")
            .trim()
            .is_empty()
        {
            problem(
                "organisation.upstream_source".into(),
                "required with upstream_g_per_kwh: the database, identifier and year of the factor"
                    .into(),
            );
        }
    }
    for (key, message) in c.store.problems() {
        problem(key, message);
    }
}

/// The limits of what the collector accepts.
fn limits(c: &CollectorConfig, problem: &mut impl FnMut(String, String)) {
    let l = &c.limits;
    if !(1024..=1024 * 1024 * 1024).contains(&l.max_body_bytes) {
        problem(
            "limits.max_body_bytes".into(),
            format!("{} is outside 1024..=1073741824", l.max_body_bytes),
        );
    }
    if l.max_batches_per_push == 0 {
        problem(
            "limits.max_batches_per_push".into(),
            "must be at least 1".into(),
        );
    }
    if l.max_records_per_batch == 0 {
        problem(
            "limits.max_records_per_batch".into(),
            "must be at least 1".into(),
        );
    }
    if !(l.max_host_power_watts.is_finite() && l.max_host_power_watts > 0.0) {
        problem(
            "limits.max_host_power_watts".into(),
            format!(
                "{} must be a positive number of watts",
                l.max_host_power_watts
            ),
        );
    }
    if !(1..=1_000_000).contains(&l.max_connections) {
        problem(
            "limits.max_connections".into(),
            format!("{} is outside 1..=1000000", l.max_connections),
        );
    }
    if !(1..=1024).contains(&l.max_ingests_in_flight) {
        problem(
            "limits.max_ingests_in_flight".into(),
            format!("{} is outside 1..=1024", l.max_ingests_in_flight),
        );
    }
    if !(l.max_body_bytes..=(1usize << 32)).contains(&l.max_ingest_bytes_in_flight) {
        problem(
            "limits.max_ingest_bytes_in_flight".into(),
            format!(
                "{} is outside max_body_bytes ({})..=4 GiB: a push of max_body_bytes must fit",
                l.max_ingest_bytes_in_flight, l.max_body_bytes
            ),
        );
    }
    if !(1..=64).contains(&l.max_pdf_renders) {
        problem(
            "limits.max_pdf_renders".into(),
            format!("{} is outside 1..=64", l.max_pdf_renders),
        );
    }
    for (key, d) in [
        ("limits.header_timeout", l.header_timeout),
        ("limits.body_timeout", l.body_timeout),
        ("limits.pdf_queue_timeout", l.pdf_queue_timeout),
    ] {
        if d.is_zero() || d > Duration::from_secs(3600) {
            problem(
                key.into(),
                format!(
                    "{} is outside 1ms..=1h",
                    humantime_serde::re::humantime::format_duration(d)
                ),
            );
        }
    }
}

/// HTTPS files that go together.
fn tls(c: &CollectorConfig, problem: &mut impl FnMut(String, String)) {
    match (&c.tls.cert_file, &c.tls.key_file) {
        (Some(_), None) => problem(
            "tls.key_file".into(),
            "a certificate needs its private key (tls.key_file or --tls-key)".into(),
        ),
        (None, Some(_)) => problem(
            "tls.cert_file".into(),
            "a private key needs its certificate (tls.cert_file or --tls-cert)".into(),
        ),
        _ => {}
    }
    if c.tls.client_ca_file.is_some() && !c.tls.enabled() {
        problem(
            "tls.client_ca_file".into(),
            "client certificates need TLS: set tls.cert_file and tls.key_file".into(),
        );
    }
}

/// The default site and the sites: zones, PUEs, market factors, hosts.
fn sites(c: &CollectorConfig, problem: &mut impl FnMut(String, String)) {
    check_pue(problem, "default_site.pue", c.default_site.pue);
    c.default_site.tariff().problems("default_site", problem);
    if c.default_site.zone.trim().is_empty() {
        problem(
            "default_site.zone".into(),
            "must name a grid zone such as FR".into(),
        );
    }
    let mut names = std::collections::BTreeSet::new();
    names.insert(c.default_site.name.clone());
    for (i, site) in c.sites.iter().enumerate() {
        let key = |k: &str| format!("site[{i}].{k}");
        if site.name.trim().is_empty() {
            problem(key("name"), "must not be empty".into());
        } else if !names.insert(site.name.clone()) {
            problem(key("name"), format!("{:?} is used by two sites", site.name));
        }
        if site.zone.trim().is_empty() {
            problem(key("zone"), "must name a grid zone such as FR".into());
        }
        check_pue(problem, &key("pue"), site.pue);
        site.tariff().problems(&format!("site[{i}]"), problem);
        if let Some(f) = site.market_g_per_kwh {
            if !(f.is_finite() && (0.0..=2000.0).contains(&f)) {
                problem(
                    key("market_g_per_kwh"),
                    format!("{f} is outside 0..=2000 gCO2e/kWh"),
                );
            }
            if site
                .market_source
                .as_deref()
                .is_none_or(|s| s.trim().is_empty())
            {
                problem(
                    key("market_source"),
                    "a market-based factor needs its source (contract, certificates, year)".into(),
                );
            }
        }
        if site.hosts.is_empty() {
            problem(
                key("hosts"),
                "list at least one host name or pattern".into(),
            );
        }
        for (j, h) in site.hosts.iter().enumerate() {
            if let Err(m) = check_glob(h) {
                problem(format!("site[{i}].hosts[{j}]"), m);
            }
        }
    }
}

/// The hardware inventory: built-in ids or the organisation's own figures.
fn inventory(c: &CollectorConfig, problem: &mut impl FnMut(String, String)) {
    for (i, item) in c.inventory.iter().enumerate() {
        let key = |k: &str| format!("inventory[{i}].{k}");
        if item.hosts.is_empty() {
            problem(
                key("hosts"),
                "list at least one host name or pattern".into(),
            );
        }
        if item.server.is_some() && item.server_kgco2e.is_some() {
            problem(
                key("server"),
                "give either a built-in `server` id or your own `server_kgco2e`, not both".into(),
            );
        }
        if let Some(kg) = item.server_kgco2e {
            check_positive(problem, &key("server_kgco2e"), kg);
            if item.server_lifetime_years.is_none() {
                problem(
                    key("server_lifetime_years"),
                    "needed with server_kgco2e".into(),
                );
            }
            if item.server_source.is_none() {
                problem(key("server_source"), "needed with server_kgco2e".into());
            }
        }
        if let Some(y) = item.server_lifetime_years {
            check_lifetime(problem, &key("server_lifetime_years"), y);
        }
        super::tariff::purchase_problems(i, item, problem);
        for (j, g) in item.gpus.iter().enumerate() {
            let key = |k: &str| format!("inventory[{i}].gpus[{j}].{k}");
            match (&g.model, g.kgco2e) {
                (Some(_), Some(_)) => problem(
                    key("model"),
                    "give either a built-in `model` id or your own `kgco2e`, not both".into(),
                ),
                (None, None) => problem(
                    key("model"),
                    "give a built-in `model` id or your own `kgco2e` with `lifetime_years` and `source`".into(),
                ),
                (None, Some(kg)) => {
                    check_positive(problem, &key("kgco2e"), kg);
                    if g.lifetime_years.is_none() {
                        problem(key("lifetime_years"), "needed with kgco2e".into());
                    }
                    if g.source.is_none() {
                        problem(key("source"), "needed with kgco2e".into());
                    }
                }
                (Some(_), None) => {}
            }
            if let Some(y) = g.lifetime_years {
                check_lifetime(problem, &key("lifetime_years"), y);
            }
            if g.count == 0 {
                problem(key("count"), "must be at least 1".into());
            }
        }
    }
}

/// Sobriety objectives.
fn objectives(c: &CollectorConfig, problem: &mut impl FnMut(String, String)) {
    for (i, o) in c.objectives.iter().enumerate() {
        let key = |k: &str| format!("objective[{i}].{k}");
        let targets = [
            !o.project.trim().is_empty(),
            o.use_id.is_some(),
            o.department.is_some(),
        ];
        if targets.iter().filter(|&&t| t).count() != 1 {
            problem(
                key("project"),
                "name one project (or \"*\" for the organisation), one use or one department"
                    .into(),
            );
        }
        if o.monthly_energy_kwh.is_none()
            && o.monthly_co2e_kg.is_none()
            && o.reduction_percent.is_none()
        {
            problem(
                key("project"),
                "an objective needs monthly_energy_kwh, monthly_co2e_kg or reduction_percent"
                    .into(),
            );
        }
        if let Some(v) = o.monthly_energy_kwh {
            check_positive(problem, &key("monthly_energy_kwh"), v);
        }
        if let Some(v) = o.monthly_co2e_kg {
            check_positive(problem, &key("monthly_co2e_kg"), v);
        }
        match (o.reduction_percent, &o.baseline_month) {
            (Some(p), Some(m)) => {
                if !(p.is_finite() && (0.0..100.0).contains(&p)) {
                    problem(key("reduction_percent"), format!("{p} is outside 0..100"));
                }
                if let Err(e) = parse_month(m) {
                    problem(key("baseline_month"), e);
                }
            }
            (Some(_), None) => problem(
                key("baseline_month"),
                "a reduction target needs the baseline month it is measured against (YYYY-MM)"
                    .into(),
            ),
            (None, Some(_)) => problem(
                key("reduction_percent"),
                "a baseline month is only used with reduction_percent".into(),
            ),
            (None, None) => {}
        }
    }
}

/// Checks that `pattern` is a usable host glob.
fn check_glob(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() {
        Err("an empty host pattern matches nothing".into())
    } else {
        Ok(())
    }
}

fn check_pue(problem: &mut impl FnMut(String, String), key: &str, pue: Option<f64>) {
    if let Some(p) = pue {
        if !(p.is_finite() && (1.0..=4.0).contains(&p)) {
            problem(
                key.into(),
                format!("{p} is not a PUE: a facility's PUE is between 1.0 and 4.0"),
            );
        }
    }
}

fn check_positive(problem: &mut impl FnMut(String, String), key: &str, v: f64) {
    if !(v.is_finite() && v > 0.0) {
        problem(key.into(), format!("{v} must be a positive number"));
    }
}

fn check_lifetime(problem: &mut impl FnMut(String, String), key: &str, years: f64) {
    if !(years.is_finite() && (0.5..=20.0).contains(&years)) {
        problem(key.into(), format!("{years} is outside 0.5..=20 years"));
    }
}
