//! `empreinte`: one binary, with a subcommand per part of the system.

mod carbon_cli;
mod collector_cli;
mod db_cli;
mod recompute_cli;
mod register_cli;
mod report_cli;
mod up_cli;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use empreinte_agent::check::CheckReport;
use empreinte_agent::config::{AgentConfig, EstimateMode, NvmlLibrary, Overrides};

#[derive(Parser)]
#[command(
    name = "empreinte",
    version,
    about = "Energy and carbon monitor for AI workloads"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a collector with its embedded store and this host's agent pushing to it, in
    /// one process, and print where the metrics, the API and this month's figures are.
    Up(up_cli::UpCommand),
    /// Run the agent: measure this host's energy and serve it on /metrics.
    Agent(AgentCommand),
    /// Run the collector: receive the agents' energy, store it, turn it into CO2e and
    /// serve the footprint (API, /metrics).
    Collector(collector_cli::CollectorCommand),
    /// Create, revoke and list the collector's access tokens.
    Token(collector_cli::TokenCommand),
    /// Carbon coefficients: list them, import grid intensity time series.
    Carbon(carbon_cli::CarbonCommand),
    /// A consistent copy of the collector's database, taken while it runs
    /// (docs/operations.md says how to restore it).
    Backup(collector_cli::BackupCommand),
    /// The store's database: move a SQLite store into PostgreSQL (`db migrate`).
    Db(db_cli::DbCommand),
    /// The monthly footprint report (HTML, PDF, CSV, JSON or Markdown; French or
    /// English), from a data directory or a running collector.
    Report(report_cli::ReportCommand),
    /// The register of AI uses: `register check` validates it.
    Register(register_cli::RegisterCommand),
    /// After a correction of the configuration (PUE, site, zone, factors, tariffs,
    /// inventory): apply it from a local month or day and recompute the stored hours
    /// since, keeping the earlier plans and coefficients.
    Recompute(recompute_cli::RecomputeCommand),
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
struct AgentCommand {
    #[command(subcommand)]
    action: Option<AgentAction>,
    #[command(flatten)]
    flags: AgentFlags,
}

#[derive(Subcommand)]
enum AgentAction {
    /// Say, per source and per zone or GPU, what is usable, what it measures, and how
    /// to fix what is not.
    Check {
        #[command(flatten)]
        flags: Box<AgentFlags>,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Print the default configuration file, commented.
    DefaultConfig,
}

/// How the agent measures: shared by `agent`, `agent check` and `up`, declared once.
#[derive(Args, Clone, Default)]
pub(crate) struct MeasureFlags {
    /// Sampling interval, e.g. "1s", "500ms" [default: 1s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub interval: Option<Duration>,
    /// Root of the powercap sysfs tree, where RAPL counters are read [default:
    /// /sys/class/powercap].
    #[arg(long, value_name = "DIR")]
    pub powercap_root: Option<PathBuf>,
    /// NVML library to load, or "off" [default: libnvidia-ml.so.1].
    #[arg(long, value_name = "PATH|off")]
    pub nvml_library: Option<NvmlLibrary>,
    /// Root of procfs: the processes and their CPU time (attribution), the CPU's
    /// utilisation and model and the memory size (estimate) [default: /proc].
    #[arg(long, value_name = "DIR")]
    pub procfs_root: Option<PathBuf>,
}

#[derive(Args, Clone, Default)]
struct AgentFlags {
    /// Configuration file (TOML). Flags override its values.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address for /metrics [default: 0.0.0.0:9810].
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    #[command(flatten)]
    measure: MeasureFlags,
    /// Estimate what nothing measures ("fallback") or leave it out ("off").
    #[arg(long, value_name = "MODE", value_parser = parse_estimate_mode)]
    estimate: Option<EstimateMode>,
    /// Push per-project energy to this collector (http:// or https:// base URL).
    #[arg(long, value_name = "URL")]
    collector: Option<String>,
    /// File holding this agent's token for the collector [default:
    /// $EMPREINTE_AGENT_TOKEN].
    #[arg(long, value_name = "PATH")]
    token_file: Option<PathBuf>,
    /// Where unacknowledged batches wait [default: /var/lib/empreinte/spool].
    #[arg(long, value_name = "DIR")]
    spool_dir: Option<PathBuf>,
    /// This host's name in the footprint [default: the host name].
    #[arg(long, value_name = "NAME")]
    agent_id: Option<String>,
    /// Trust this CA (PEM) for an https:// collector, besides the system's store.
    #[arg(long, value_name = "FILE")]
    collector_ca: Option<PathBuf>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("{e}: expected a duration such as \"1s\" or \"500ms\""))
}

fn parse_estimate_mode(s: &str) -> Result<EstimateMode, String> {
    match s {
        "fallback" => Ok(EstimateMode::Fallback),
        "off" => Ok(EstimateMode::Off),
        other => Err(format!(
            "\"{other}\" is not a mode: expected \"fallback\" or \"off\""
        )),
    }
}

impl AgentFlags {
    fn load(&self) -> anyhow::Result<AgentConfig> {
        let overrides = Overrides {
            listen: self.listen,
            interval: self.measure.interval,
            powercap_root: self.measure.powercap_root.clone(),
            nvml_library: self.measure.nvml_library.clone(),
            procfs_root: self.measure.procfs_root.clone(),
            estimate: self.estimate,
            collector: self.collector.clone(),
            token_file: self.token_file.clone(),
            spool_dir: self.spool_dir.clone(),
            agent_id: self.agent_id.clone(),
            collector_ca: self.collector_ca.clone(),
        };
        Ok(AgentConfig::load(self.config.as_deref(), &overrides)?)
    }
}

fn main() -> ExitCode {
    // Everything this program creates (database, spool, lock, backups, reports) is
    // private to its user, whatever umask it was started with.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(log_filter(std::env::var("RUST_LOG").ok().as_deref()))
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// `RUST_LOG` (default `info`), with the HTTP and TLS libraries capped at `debug`: at
/// `trace` such libraries may write what crosses the wire, and secrets are never logged
/// (ureq's own debug lines leave `Authorization` out). The caps only lower a level: a
/// directive `ureq=debug` added to `warn` would raise ureq to debug, one line per HTTP
/// call of the agent (its pushes, every inference server read).
fn log_filter(rust_log: Option<&str>) -> tracing_subscriber::EnvFilter {
    const CAPS: &str = "ureq=debug,ureq_proto=debug,rustls=debug,hyper=debug,hyper_util=debug";
    let base = rust_log.filter(|s| !s.trim().is_empty()).unwrap_or("info");
    let filter = if base.to_ascii_lowercase().contains("trace") {
        format!("{base},{CAPS}")
    } else {
        base.to_string()
    };
    tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Up(cmd) => up_cli::up(cmd),
        Command::Collector(cmd) => collector_cli::collector(cmd),
        Command::Token(cmd) => collector_cli::token(cmd),
        Command::Backup(cmd) => collector_cli::backup(cmd),
        Command::Db(cmd) => db_cli::db(cmd),
        Command::Carbon(cmd) => carbon_cli::carbon(cmd),
        Command::Report(cmd) => report_cli::report(cmd),
        Command::Register(cmd) => register_cli::register(cmd),
        Command::Recompute(cmd) => recompute_cli::recompute(cmd),
        Command::Agent(AgentCommand {
            action: None,
            flags,
        }) => {
            let config = flags.load()?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(empreinte_agent::server::run(config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Agent(AgentCommand {
            action: Some(AgentAction::Check { flags, json }),
            ..
        }) => {
            let config = flags.load()?;
            let report = CheckReport::run(&config);
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).context("cannot encode the report")?
                );
            } else {
                print!("{}", report.to_text());
            }
            Ok(if report.anything_usable() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Agent(AgentCommand {
            action: Some(AgentAction::DefaultConfig),
            ..
        }) => {
            print!("{}", AgentConfig::example_toml());
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::log_filter;
    use tracing_subscriber::filter::LevelFilter;

    #[test]
    fn library_caps_never_raise_the_level_asked_for() {
        // Before: `warn` plus the caps let ureq log every HTTP call at debug.
        assert_eq!(
            log_filter(Some("warn")).max_level_hint(),
            Some(LevelFilter::WARN)
        );
        assert_eq!(log_filter(None).max_level_hint(), Some(LevelFilter::INFO));
        assert_eq!(
            log_filter(Some("trace")).max_level_hint(),
            Some(LevelFilter::TRACE)
        );
    }
}
