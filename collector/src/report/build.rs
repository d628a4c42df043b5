//! Reading a month from the store into a [`ReportData`]: the aggregate lines summed by
//! every key, the days, the projects with their objectives, the trend and the perimeter.

use std::collections::{BTreeMap, BTreeSet};

use jiff::tz::TimeZone;

use super::{
    DayLine, GpuCount, Line, MonthLine, Perimeter, ProjectLine, ReportData, ReportError, ReportRow,
    SCHEMA, instant,
};
use crate::api::Figures;
use crate::config::CollectorConfig;
use crate::objectives::{self, ObjectiveStatus};
use crate::period::{Month, local_day, month};
use crate::store::{AggregateLine, FootprintQuery, Grouping, Store, StoreError, Sums};

pub(super) fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

fn lines(map: BTreeMap<String, Sums>, total: u64) -> Vec<Line> {
    let mut v: Vec<Line> = map
        .into_iter()
        .map(|(key, s)| Line {
            key,
            share: share(s.energy_uj, total),
            figures: Figures::from(&s),
        })
        .collect();
    v.sort_by(|a, b| {
        b.figures
            .exact
            .energy_uj
            .cmp(&a.figures.exact.energy_uj)
            .then_with(|| a.key.cmp(&b.key))
    });
    v
}

async fn month_sums(
    store: &dyn Store,
    m: &Month,
    group: Grouping,
) -> Result<Vec<(String, Sums)>, StoreError> {
    store
        .footprint(&FootprintQuery {
            from_s: m.from_s,
            to_s: m.to_s,
            project: None,
            host: None,
            group,
        })
        .await
}

/// The GPU model label of a host, from the inventory.
fn gpu_models_of(config: &CollectorConfig, host: &str) -> Vec<(String, u64)> {
    match config.inventory_of(host) {
        Some(item) => item
            .gpus
            .iter()
            .map(|g| {
                (
                    g.model
                        .clone()
                        .unwrap_or_else(|| "gpu (organisation's figure)".into()),
                    u64::from(g.count),
                )
            })
            .collect(),
        None => Vec::new(),
    }
}

/// Reads the month `m` from the store and computes the report, as of `now_s`, with
/// every hourly row (for the CSV export).
pub async fn build(
    store: &dyn Store,
    config: &CollectorConfig,
    tz: &TimeZone,
    m: &Month,
    now_s: i64,
) -> Result<ReportData, ReportError> {
    build_with(store, config, tz, m, now_s, true).await
}

/// The report without the hourly rows: what every format but CSV needs. It reads
/// pre-summed rows (monthly and daily rollups), so its memory does not grow with the
/// month's hours.
pub async fn build_summary(
    store: &dyn Store,
    config: &CollectorConfig,
    tz: &TimeZone,
    m: &Month,
    now_s: i64,
) -> Result<ReportData, ReportError> {
    build_with(store, config, tz, m, now_s, false).await
}

/// The month's aggregate lines summed six ways, and the site of every host.
#[derive(Default)]
struct Tally {
    total: Sums,
    by_project: BTreeMap<String, Sums>,
    by_site: BTreeMap<String, Sums>,
    by_host: BTreeMap<String, Sums>,
    by_component: BTreeMap<String, Sums>,
    by_source: BTreeMap<String, Sums>,
    by_gpu: BTreeMap<String, Sums>,
    host_sites: BTreeMap<String, String>,
}

/// The GPU models of a host, as one key ("not in the inventory" when it has none).
fn gpu_key(config: &CollectorConfig, host: &str) -> String {
    let models = gpu_models_of(config, host);
    match models.as_slice() {
        [] => "not in the inventory".to_string(),
        [(m, _)] => m.clone(),
        many => many
            .iter()
            .map(|(m, _)| m.as_str())
            .collect::<Vec<_>>()
            .join(" + "),
    }
}

fn tally(config: &CollectorConfig, month_lines: &[AggregateLine]) -> Tally {
    let mut t = Tally::default();
    let mut gpu_keys: BTreeMap<String, String> = BTreeMap::new();
    for l in month_lines {
        let s = &l.sums;
        t.total.add(s);
        t.by_project.entry(l.project.clone()).or_default().add(s);
        t.by_site.entry(l.site.clone()).or_default().add(s);
        t.by_host.entry(l.host.clone()).or_default().add(s);
        t.by_component
            .entry(l.component.clone())
            .or_default()
            .add(s);
        t.by_source.entry(l.source.clone()).or_default().add(s);
        if l.component == "gpu" {
            let key = gpu_keys
                .entry(l.host.clone())
                .or_insert_with(|| gpu_key(config, &l.host));
            t.by_gpu.entry(key.clone()).or_default().add(s);
        }
        t.host_sites.insert(l.host.clone(), l.site.clone());
    }
    t
}

/// IT energy per local day and project.
async fn days(
    store: &dyn Store,
    config: &CollectorConfig,
    tz: &TimeZone,
    m: &Month,
) -> Result<Vec<DayLine>, ReportError> {
    let mut days: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for (start_s, project, energy) in store
        .energy_by_day(m.from_s, m.to_s, &config.organisation.timezone)
        .await?
    {
        let e = days
            .entry(local_day(tz, start_s))
            .or_default()
            .entry(project)
            .or_default();
        *e = e.saturating_add(energy);
    }
    Ok(days
        .into_iter()
        .map(|(day, energy_uj)| DayLine { day, energy_uj })
        .collect())
}

/// The projects' lines with their previous month and objectives; projects with an
/// objective but no energy this month are listed too.
fn project_lines(
    config: &CollectorConfig,
    month_lines: &[AggregateLine],
    by_project: BTreeMap<String, Sums>,
    total_uj: u64,
    previous: &BTreeMap<String, Sums>,
    statuses: &[ObjectiveStatus],
) -> Vec<ProjectLine> {
    let objectives_of = |p: &str| -> Vec<ObjectiveStatus> {
        statuses
            .iter()
            .filter(|o| o.project == p)
            .cloned()
            .collect()
    };
    let mut projects: Vec<ProjectLine> = lines(by_project, total_uj)
        .into_iter()
        .map(|l| {
            let prev = previous.get(&l.key).filter(|s| s.energy_uj > 0);
            ProjectLine {
                energy_change: prev.map(|p| {
                    (l.figures.exact.energy_uj as f64 - p.energy_uj as f64) / p.energy_uj as f64
                }),
                previous: prev.map(Figures::from),
                objectives: objectives_of(&l.key),
                uncertainty: crate::uncertainty::of_lines(
                    month_lines.iter().filter(|m| m.project == l.key),
                    config,
                ),
                project: l.key,
                share: l.share,
                figures: l.figures,
                cost_eur: None,
                requests: None,
            }
        })
        .collect();
    let listed: BTreeSet<String> = projects.iter().map(|p| p.project.clone()).collect();
    let without_energy: BTreeSet<String> = statuses
        .iter()
        .filter(|o| o.project != "*" && !listed.contains(&o.project))
        .map(|o| o.project.clone())
        .collect();
    for p in without_energy {
        let prev = previous.get(&p).filter(|s| s.energy_uj > 0);
        projects.push(ProjectLine {
            energy_change: prev.map(|_| -1.0),
            previous: prev.map(Figures::from),
            objectives: objectives_of(&p),
            project: p,
            share: 0.0,
            figures: Figures::default(),
            uncertainty: Default::default(),
            cost_eur: None,
            requests: None,
        });
    }
    projects
}

/// The sums of the month `m` over everything.
async fn month_total(store: &dyn Store, m: &Month) -> Result<Sums, StoreError> {
    let mut s = Sums::default();
    for (_, x) in month_sums(store, m, Grouping::Component).await? {
        s.add(&x);
    }
    Ok(s)
}

/// The totals of the month `m`, or `None` when it has no data or cannot be named.
async fn month_line(
    store: &dyn Store,
    m: Result<Month, String>,
) -> Result<Option<MonthLine>, ReportError> {
    let Ok(m) = m else { return Ok(None) };
    let s = month_total(store, &m).await?;
    Ok((s != Sums::default()).then(|| MonthLine {
        month: m.label(),
        has_data: true,
        figures: Figures::from(&s),
    }))
}

/// Twelve months of trend, `m` (whose total is `total`) last.
async fn trend(
    store: &dyn Store,
    tz: &TimeZone,
    m: &Month,
    total: &Sums,
) -> Result<Vec<MonthLine>, ReportError> {
    let mut cursor = Some(*m);
    let mut months = Vec::new();
    for _ in 0..12 {
        let Some(c) = cursor else { break };
        months.push(c);
        cursor = c.previous(tz).ok();
    }
    months.reverse();
    let mut trend = Vec::new();
    for mo in months {
        let s = if mo == *m {
            total.clone()
        } else {
            month_total(store, &mo).await?
        };
        trend.push(MonthLine {
            month: mo.label(),
            has_data: s != Sums::default(),
            figures: Figures::from(&s),
        });
    }
    Ok(trend)
}

/// The hosts, sites and GPUs covered, and the agents that stored nothing.
async fn perimeter(
    store: &dyn Store,
    config: &CollectorConfig,
    host_sites: &BTreeMap<String, String>,
) -> Result<Perimeter, ReportError> {
    let mut gpus: BTreeMap<String, u64> = BTreeMap::new();
    for host in host_sites.keys() {
        for (model, n) in gpu_models_of(config, host) {
            *gpus.entry(model).or_default() += n;
        }
    }
    let silent_agents = store
        .agents()
        .await?
        .into_iter()
        .map(|a| a.agent_id)
        .filter(|a| !host_sites.contains_key(a))
        .collect();
    let sites: BTreeSet<String> = host_sites.values().cloned().collect();
    Ok(Perimeter {
        hosts: host_sites.keys().cloned().collect(),
        sites: sites.into_iter().collect(),
        gpus: gpus
            .into_iter()
            .map(|(model, count)| GpuCount { model, count })
            .collect(),
        silent_agents,
    })
}

async fn build_with(
    store: &dyn Store,
    config: &CollectorConfig,
    tz: &TimeZone,
    m: &Month,
    now_s: i64,
    with_rows: bool,
) -> Result<ReportData, ReportError> {
    if m.from_s > now_s {
        return Err(ReportError::Future {
            month: m.label(),
            today: local_day(tz, now_s),
            timezone: config.organisation.timezone.clone(),
        });
    }
    let month_lines = store.lines(m.from_s, m.to_s).await?;
    let t = tally(config, &month_lines);
    let rows: Vec<ReportRow> = if with_rows {
        store
            .hourly_rows(m.from_s, m.to_s)
            .await?
            .iter()
            .map(|r| ReportRow::from_stored(r, tz))
            .collect()
    } else {
        Vec::new()
    };
    let register = crate::register::load_configured(config).unwrap_or_default();
    let statuses = objectives::evaluate(store, &config.objectives, &register, tz, m, now_s).await?;
    let previous: BTreeMap<String, Sums> = match m.previous(tz) {
        Ok(p) => month_sums(store, &p, Grouping::Project)
            .await?
            .into_iter()
            .collect(),
        Err(_) => BTreeMap::new(),
    };
    let total_uj = t.total.energy_uj;
    let projects = project_lines(
        config,
        &month_lines,
        t.by_project,
        total_uj,
        &previous,
        &statuses,
    );
    // Euros where tariffs are configured: the month's and each project's stored costs.
    let mut projects = projects;
    let mut cost_by_project: BTreeMap<String, u64> = BTreeMap::new();
    for c in store.costs(m.from_s, m.to_s).await.unwrap_or_default() {
        *cost_by_project.entry(c.project).or_default() += c.cost_ueur;
    }
    for p in &mut projects {
        p.cost_eur = cost_by_project.get(&p.project).map(|&c| c as f64 / 1e6);
    }
    let cost_ueur: u64 = cost_by_project.values().sum();
    let market_sites = config
        .sites
        .iter()
        .filter(|s| s.market_g_per_kwh.is_some())
        .map(|s| s.name.clone())
        .collect();
    Ok(ReportData {
        schema: SCHEMA,
        organisation: config.organisation.name.clone(),
        timezone: config.organisation.timezone.clone(),
        month: m.label(),
        from: instant(m.from_s),
        to: instant(m.to_s),
        generated_at: instant(now_s),
        generated_s: now_s,
        complete: now_s >= m.to_s,
        has_data: !month_lines.is_empty(),
        perimeter: perimeter(store, config, &t.host_sites).await?,
        totals: Figures::from(&t.total),
        uncertainty: crate::uncertainty::of_lines(&month_lines, config),
        market_sites,
        projects,
        organisation_objectives: statuses.into_iter().filter(|o| o.project == "*").collect(),
        sites: lines(t.by_site, total_uj),
        hosts: lines(t.by_host, total_uj),
        components: lines(t.by_component, total_uj),
        sources: lines(t.by_source, total_uj),
        gpu_models: lines(t.by_gpu, total_uj),
        days: days(store, config, tz, m).await?,
        trend: trend(store, tz, m, &t.total).await?,
        previous_month: month_line(store, m.previous(tz)).await?,
        year_ago: month_line(store, month(tz, m.year - 1, m.month)).await?,
        estimated_hosts: month_lines
            .iter()
            .filter(|l| l.sums.estimated_energy_uj > 0)
            .map(|l| l.host.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
        cost_eur: (!cost_by_project.is_empty()).then(|| cost_ueur as f64 / 1e6),
        inference: super::inference::build(store, tz, (m.from_s, m.to_s), &month_lines).await?,
        register: super::register::gather(store, config, m, &month_lines).await,
        coefficients: store.coefficients_used(m.from_s, m.to_s).await?,
        configuration: super::history::gather(store, config, m).await?,
        intensity_series: store.series_used(m.from_s, m.to_s).await?,
        lines: month_lines,
        rows,
        coefficient_pcts: crate::uncertainty::CoefficientPcts::for_config(config),
    })
}
