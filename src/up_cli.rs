//! `empreinte up`: a collector with its embedded store and a local agent pushing to it,
//! in one process. The quickest way to see a host's footprint, and a complete install
//! for a single server.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use empreinte_agent::config::{
    AgentConfig, MAX_BATCH_INTERVAL, MIN_BATCH_INTERVAL, Overrides as AgentOverrides,
};
use empreinte_collector::config::{CollectorConfig, Overrides};
use empreinte_collector::period::month_of;
use empreinte_collector::server::AppState;
use empreinte_collector::store::sqlite::SqliteStore;
use empreinte_collector::store::{Sums, TokenKind};

use crate::collector_cli::runtime;

/// Where `up` keeps its data when neither `--data-dir` nor a configuration says.
pub const DEFAULT_UP_DATA_DIR: &str = "empreinte-data";
pub const DEFAULT_UP_LISTEN: &str = "127.0.0.1:9820";
/// The lock file `up` holds in its data directory.
pub const UP_LOCK: &str = "up.lock";
pub const DEFAULT_UP_AGENT_LISTEN: &str = "127.0.0.1:9810";

#[derive(Args)]
pub struct UpCommand {
    /// Collector configuration file (sites, inventory, objectives…). Flags override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Agent configuration file (attribution rules…). Flags override it.
    #[arg(long, value_name = "FILE")]
    agent_config: Option<PathBuf>,
    /// Address of the collector: API, /metrics [default: 127.0.0.1:9820].
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Where the database, the tokens of `up` and the agent's spool live
    /// [default: ./empreinte-data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Address of the agent's own /metrics [default: 127.0.0.1:9810].
    #[arg(long, value_name = "ADDR")]
    agent_listen: Option<SocketAddr>,
    /// How often the agent seals a batch for the collector [default: 15s].
    #[arg(long, value_name = "DURATION", value_parser = crate::parse_duration)]
    batch_interval: Option<Duration>,
    /// How the local agent measures.
    #[command(flatten)]
    measure: crate::MeasureFlags,
}

/// A token of `up`, kept in a file of the data directory (mode 0600) and created again
/// if it was revoked or lost.
async fn ensure_token(
    store: &SqliteStore,
    path: &Path,
    kind: TokenKind,
    agent: Option<&str>,
) -> anyhow::Result<()> {
    if let Ok(text) = std::fs::read_to_string(path) {
        let header = format!("Bearer {}", text.trim());
        if empreinte_collector::auth::verify(store, Some(&header), kind)
            .await
            .is_ok_and(|t| t.agent_id.as_deref() == agent)
        {
            return Ok(());
        }
    }
    let issued = empreinte_collector::auth::issue(
        store,
        kind,
        agent,
        "created by empreinte up",
        empreinte_collector::clock::now_unix_ms(),
    )
    .await?;
    write_secret(path, &issued.token)
}

fn write_secret(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    writeln!(f, "{text}").with_context(|| format!("cannot write {}", path.display()))
}

/// Month-to-date figures in one line.
async fn month_line(state: &AppState) -> String {
    let now_s = i64::try_from(empreinte_collector::clock::now_unix_ms() / 1000).unwrap_or(0);
    let Ok(m) = month_of(&state.tz, now_s) else {
        return String::new();
    };
    let rows = empreinte_collector::api::month_to_date_by_project(state, &m)
        .await
        .unwrap_or_default();
    let mut total = Sums::default();
    for s in rows.values() {
        total.add(s);
    }
    let measured = if total.energy_uj > 0 {
        100.0 * total.measured_energy_uj as f64 / total.energy_uj as f64
    } else {
        0.0
    };
    let kwh = empreinte_collector::footprint::kwh(total.energy_uj);
    let energy = if kwh < 1.0 {
        format!("{:.3} Wh", kwh * 1e3)
    } else {
        format!("{kwh:.3} kWh")
    };
    format!(
        "{} so far: {energy} ({:.0} % measured), {:.1} gCO2e operational (location-based) + {:.1} gCO2e embodied, {} project(s)",
        m.label(),
        measured,
        total.location_co2e_ug as f64 / 1e6,
        total.embodied_co2e_ug as f64 / 1e6,
        rows.len()
    )
}

/// What `up` runs, once every flag and file has been checked.
struct UpPlan {
    collector_config: CollectorConfig,
    agent_config: AgentConfig,
    coefficients: Arc<empreinte_collector::carbon::Coefficients>,
    data_dir: PathBuf,
    agent_id: String,
    agent_token: PathBuf,
    read_token: PathBuf,
}

/// The collector's and the agent's configurations, checked before anything starts.
fn plan(cmd: UpCommand) -> anyhow::Result<UpPlan> {
    let default_listen: SocketAddr = DEFAULT_UP_LISTEN
        .parse()
        .context("the default listen address")?;
    let collector_config = CollectorConfig::load(
        cmd.config.as_deref(),
        &Overrides {
            listen: cmd.listen.or(if cmd.config.is_none() {
                Some(default_listen)
            } else {
                None
            }),
            data_dir: cmd.data_dir.clone().or(if cmd.config.is_none() {
                Some(PathBuf::from(DEFAULT_UP_DATA_DIR))
            } else {
                None
            }),
            ..Overrides::default()
        },
    )?;
    let data_dir = collector_config.data_dir.clone();
    let agent_token = data_dir.join("up").join("agent.token");
    let read_token = data_dir.join("up").join("read.token");
    if let Some(b) = cmd.batch_interval {
        if !(MIN_BATCH_INTERVAL..=MAX_BATCH_INTERVAL).contains(&b) {
            anyhow::bail!(
                "--batch-interval {}: allowed are {} to {}",
                humantime::format_duration(b),
                humantime::format_duration(MIN_BATCH_INTERVAL),
                humantime::format_duration(MAX_BATCH_INTERVAL)
            );
        }
    }
    let default_agent_listen: SocketAddr = DEFAULT_UP_AGENT_LISTEN
        .parse()
        .context("the default agent address")?;
    let agent_overrides = AgentOverrides {
        listen: Some(cmd.agent_listen.unwrap_or(default_agent_listen)),
        interval: cmd.measure.interval,
        powercap_root: cmd.measure.powercap_root.clone(),
        nvml_library: cmd.measure.nvml_library.clone(),
        procfs_root: cmd.measure.procfs_root.clone(),
        estimate: None,
        // The collector's address is known once it listens; this one only passes checks.
        collector: Some("http://127.0.0.1:9820".into()),
        token_file: Some(agent_token.clone()),
        spool_dir: Some(data_dir.join("spool")),
        agent_id: None,
        collector_ca: None,
    };
    let mut agent_config = AgentConfig::load(cmd.agent_config.as_deref(), &agent_overrides)?;
    if let Some(b) = cmd.batch_interval {
        agent_config.push.batch_interval = b;
    }
    let agent_id = agent_config
        .push
        .agent_id
        .clone()
        .unwrap_or_else(empreinte_agent::push::hostname);
    let coefficients = Arc::new(empreinte_collector::plan::load_coefficients(
        &collector_config,
    )?);
    Ok(UpPlan {
        collector_config,
        agent_config,
        coefficients,
        data_dir,
        agent_id,
        agent_token,
        read_token,
    })
}

pub fn up(cmd: UpCommand) -> anyhow::Result<ExitCode> {
    let plan = plan(cmd)?;
    // One `up` per data directory, for the life of the process: a second one exits 2
    // naming the first one's PID, before it touches the store or the spool.
    let _lock = empreinte_agent::push::lock::DirLock::acquire(
        &plan.data_dir,
        UP_LOCK,
        "the data directory",
    )
    .context("another `empreinte up` uses this data directory (--data-dir)")?;
    runtime()?.block_on(run(plan))
}

/// Where to reach what `up` started, printed once it serves.
fn print_banner(
    agent_id: &str,
    agent_listen: SocketAddr,
    host: &str,
    read_token: &Path,
    month: &str,
) {
    println!("Empreinte is up: a collector and this host's agent ({agent_id}).");
    println!("  Agent metrics      http://{agent_listen}/metrics");
    println!("  Collector metrics  http://{host}/metrics  (read token)");
    println!("  API                http://{host}/api/v1/  (OpenAPI: /api/v1/openapi.json)");
    println!("  Read token         {}", read_token.display());
    println!(
        "  This month         curl -H \"Authorization: Bearer $(cat {})\" 'http://{host}/api/v1/footprint?month={month}'",
        read_token.display()
    );
}

/// The collector, then the agent pushing to it; the agent stops first (on SIGTERM) so
/// that its last batch reaches the collector before the collector closes.
async fn run(plan: UpPlan) -> anyhow::Result<ExitCode> {
    let UpPlan {
        collector_config,
        mut agent_config,
        coefficients,
        data_dir,
        agent_id,
        agent_token,
        read_token,
    } = plan;
    {
        let store = SqliteStore::open(&data_dir)
            .await
            .with_context(|| format!("cannot open the store in {}", data_dir.display()))?;
        ensure_token(&store, &agent_token, TokenKind::Agent, Some(&agent_id)).await?;
        ensure_token(&store, &read_token, TokenKind::Read, None).await?;
        store.close().await;
    }
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<(SocketAddr, AppState)>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let collector = tokio::spawn(empreinte_collector::server::run(
        collector_config,
        coefficients,
        async move {
            let _ = stop_rx.await;
        },
        move |addr, state| {
            let _ = ready_tx.send((addr, state.clone()));
        },
    ));
    let (addr, state) = match ready_rx.await {
        Ok(v) => v,
        Err(_) => {
            return match collector.await {
                Ok(Err(e)) => Err(e),
                Ok(Ok(())) => Err(anyhow::anyhow!("the collector stopped before it served")),
                Err(e) => Err(anyhow::anyhow!("the collector failed: {e}")),
            };
        }
    };
    let host = if addr.ip().is_unspecified() {
        format!("127.0.0.1:{}", addr.port())
    } else {
        addr.to_string()
    };
    agent_config.push.collector = Some(format!("http://{host}"));
    let agent_listen = agent_config.listen;
    let agent = tokio::spawn(empreinte_agent::server::run(agent_config));
    let now_s = i64::try_from(empreinte_collector::clock::now_unix_ms() / 1000).unwrap_or(0);
    let month = month_of(&state.tz, now_s)
        .map(|m| m.label())
        .unwrap_or_default();
    print_banner(&agent_id, agent_listen, &host, &read_token, &month);
    println!("  Data               {}", data_dir.display());
    println!("{}", month_line(&state).await);
    let summary = {
        let state = state.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_secs(600));
            ticks.tick().await;
            loop {
                ticks.tick().await;
                println!("{}", month_line(&state).await);
            }
        })
    };
    let agent_result = agent.await;
    summary.abort();
    let _ = stop_tx.send(());
    let collector_result = collector.await;
    println!("{}", month_line(&state).await);
    match agent_result {
        Ok(r) => r.context("the agent failed")?,
        Err(e) => anyhow::bail!("the agent failed: {e}"),
    }
    match collector_result {
        Ok(r) => r.context("the collector failed")?,
        Err(e) => anyhow::bail!("the collector failed: {e}"),
    }
    Ok(ExitCode::SUCCESS)
}
