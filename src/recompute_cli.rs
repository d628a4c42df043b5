//! `empreinte recompute --from YYYY-MM[-DD]`: after a correction of the configuration
//! (a site's PUE, zone, market factor, tariff, the inventory), the configuration applies
//! from the first instant of that local day or month, and every stored hour since is
//! recomputed with it (`empreinte_collector::history`). The earlier plans, the old
//! coefficients and each month's figures before and after are kept.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use empreinte_collector::config::CollectorConfig;
use empreinte_collector::history::{self, Recomputation, RecomputeJob};
use empreinte_collector::plan::{Planner, load_coefficients};

use crate::collector_cli::{CollectorFlags, runtime};

#[derive(Args)]
pub struct RecomputeCommand {
    #[command(flatten)]
    flags: CollectorFlags,
    /// The first local month (YYYY-MM) or day (YYYY-MM-DD), in the organisation's time
    /// zone, from which the configuration applies and the stored hours are recomputed.
    #[arg(long, value_name = "YYYY-MM[-DD]")]
    from: String,
    /// Print the outcome as JSON.
    #[arg(long)]
    json: bool,
}

/// The first instant of `text` (`YYYY-MM` or `YYYY-MM-DD`, local to `tz`), on the UTC
/// hour (footprint rows are hourly).
pub fn from_instant(tz: &jiff::tz::TimeZone, text: &str) -> anyhow::Result<i64> {
    let day = match text.len() {
        7 => format!("{text}-01"),
        10 => text.to_string(),
        _ => anyhow::bail!("--from {text:?}: expected YYYY-MM or YYYY-MM-DD"),
    };
    let date: jiff::civil::Date = day
        .parse()
        .map_err(|e| anyhow::anyhow!("--from {text:?}: expected YYYY-MM or YYYY-MM-DD ({e})"))?;
    let s = date
        .to_zoned(tz.clone())
        .map_err(|e| anyhow::anyhow!("--from {text:?}: {e}"))?
        .timestamp()
        .as_second();
    Ok(s.div_euclid(3600) * 3600)
}

pub fn recompute(cmd: RecomputeCommand) -> anyhow::Result<ExitCode> {
    let config = cmd.flags.load()?;
    let defaults: Arc<dyn empreinte_collector::plan::Defaults> =
        Arc::new(load_coefficients(&config)?);
    let check = Planner::new(Arc::new(config.clone()), defaults.clone());
    let problems = empreinte_collector::server::all_problems(&config, &check);
    if !problems.is_empty() {
        return Err(empreinte_collector::config::ConfigError::Invalid(problems).into());
    }
    let tz = jiff::tz::TimeZone::get(&config.organisation.timezone)
        .with_context(|| format!("time zone {:?}", config.organisation.timezone))?;
    let from_s = from_instant(&tz, &cmd.from)?;
    // SQLite: the collector must not run (one writer, whose caches would go stale).
    let _lock = match config.database_url {
        None => Some(
            crate::collector_cli::lock_data_dir(&config.data_dir)
                .context("stop the collector (or `empreinte up`) before recomputing")?,
        ),
        Some(_) => None,
    };
    let done = runtime()?.block_on(run(&config, defaults, from_s))?;
    if cmd.json {
        println!("{}", serde_json::to_string_pretty(&done)?);
    } else {
        print!("{}", summary(&done, &tz));
    }
    Ok(ExitCode::SUCCESS)
}

async fn run(
    config: &CollectorConfig,
    defaults: Arc<dyn empreinte_collector::plan::Defaults>,
    from_s: i64,
) -> anyhow::Result<Recomputation> {
    // Opened as the collector opens it: on SQLite, pushes acknowledged but not folded yet
    // (a collector that was killed) are folded first, so none escapes the recomputation.
    let opened = empreinte_collector::store::OpenStore::open(
        &config.data_dir,
        config.database_url.as_ref(),
        &config.store.options(
            &config.organisation.timezone,
            config.limits.max_host_power_watts,
        ),
    )
    .await
    .with_context(|| match &config.database_url {
        Some(url) => format!("cannot open the store in the PostgreSQL database {url}"),
        None => format!("cannot open the store in {}", config.data_dir.display()),
    })?;
    let store = opened.store();
    let now = empreinte_collector::clock::now_unix_ms();
    let out = async {
        let history = history::record(store.as_ref(), config, Some(from_s), now)
            .await
            .context("cannot record the configuration's plan")?;
        let configs = history::configs(&history, config).map_err(anyhow::Error::msg)?;
        let planner = Planner::with_history(Arc::new(config.clone()), defaults, configs);
        let job = RecomputeJob {
            from_s,
            now_ms: now,
            plans: Arc::new(planner),
        };
        store
            .recompute(&job)
            .await
            .context("cannot recompute the stored hours")
    }
    .await;
    opened.close().await;
    out
}

fn summary(r: &Recomputation, tz: &jiff::tz::TimeZone) -> String {
    use std::fmt::Write;
    let from = jiff::Timestamp::from_second(r.from_s)
        .map(|t| {
            t.to_zoned(tz.clone())
                .strftime("%Y-%m-%d %H:%M %Z")
                .to_string()
        })
        .unwrap_or_default();
    let mut out = format!(
        "Recomputed {} hourly rows from {from}: the configuration applies from then on; earlier plans and coefficients are kept.\n",
        r.rows
    );
    let kg = |ug: i64| ug as f64 / 1e9;
    for m in &r.months {
        let month = empreinte_collector::period::month_of(tz, m.month_s)
            .map(|m| m.label())
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{month}: {} rows; location-based {:.3} -> {:.3} kgCO2e, market-based {:.3} -> {:.3}, embodied {:.3} -> {:.3}, facility energy {:.3} -> {:.3} kWh, cost {:.2} -> {:.2} EUR",
            m.rows,
            kg(m.before.location_ug),
            kg(m.after.location_ug),
            kg(m.before.market_ug),
            kg(m.after.market_ug),
            kg(m.before.embodied_ug),
            kg(m.after.embodied_ug),
            m.before.facility_uj as f64 / 3.6e12,
            m.after.facility_uj as f64 / 3.6e12,
            m.before.cost_ueur as f64 / 1e6,
            m.after.cost_ueur as f64 / 1e6,
        );
    }
    out
}
