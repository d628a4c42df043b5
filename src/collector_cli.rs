//! `empreinte collector` and `empreinte token`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use empreinte_collector::config::{CollectorConfig, Overrides};
use empreinte_collector::store::pg::DatabaseUrl;
use empreinte_collector::store::sqlite::SqliteStore;
use empreinte_collector::store::{OpenStore, TokenKind};

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct CollectorCommand {
    #[command(subcommand)]
    action: Option<CollectorAction>,
    #[command(flatten)]
    flags: CollectorFlags,
}

#[derive(Subcommand)]
enum CollectorAction {
    /// Print the default configuration file, commented.
    DefaultConfig,
}

#[derive(Args, Clone, Default)]
pub struct CollectorFlags {
    /// Configuration file (TOML). Flags override its values.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address of the HTTP server [default: 0.0.0.0:9820].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Where the database lives [default: /var/lib/empreinte].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// PostgreSQL instead of the SQLite file in the data directory
    /// (postgres://USER:PASSWORD@HOST/DATABASE; docs/postgresql.md). Prefer the
    /// environment variable: a command line is visible to every user of the host.
    #[arg(
        long,
        value_name = "URL",
        env = "EMPREINTE_DATABASE_URL",
        hide_env_values = true
    )]
    pub database_url: Option<DatabaseUrl>,
    /// Serve HTTPS with this certificate chain (PEM; reloaded on SIGHUP).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl CollectorFlags {
    pub fn load(&self) -> anyhow::Result<CollectorConfig> {
        Ok(CollectorConfig::load(
            self.config.as_deref(),
            &Overrides {
                listen: self.listen,
                data_dir: self.data_dir.clone(),
                database_url: self.database_url.clone(),
                tls_cert: self.tls_cert.clone(),
                tls_key: self.tls_key.clone(),
            },
        )?)
    }
}

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

pub fn collector(cmd: CollectorCommand) -> anyhow::Result<ExitCode> {
    match cmd.action {
        Some(CollectorAction::DefaultConfig) => {
            print!("{}", CollectorConfig::example_toml());
            Ok(ExitCode::SUCCESS)
        }
        None => {
            let config = cmd.flags.load()?;
            // One collector (or `up`) per data directory: the second exits naming the
            // first. On PostgreSQL, collectors share the database and keep nothing there.
            let _lock = match config.database_url {
                None => Some(lock_data_dir(&config.data_dir)?),
                Some(_) => None,
            };
            let coefficients = empreinte_collector::plan::load_coefficients(&config)?;
            runtime()?.block_on(empreinte_collector::server::run(
                config,
                std::sync::Arc::new(coefficients),
                empreinte_agent::server::shutdown_signal(),
                |_, _| {},
            ))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[derive(Args)]
pub struct TokenCommand {
    #[command(subcommand)]
    action: TokenAction,
}

#[derive(Subcommand)]
enum TokenAction {
    /// Create a token and print it (only once: only its hash is kept).
    Create {
        #[command(flatten)]
        flags: CollectorFlags,
        /// `agent` (pushes one agent's energy) or `read` (reads the API).
        #[arg(long, value_name = "agent|read", value_parser = parse_kind)]
        kind: TokenKind,
        /// The agent's id (its host name by default), for an agent token.
        #[arg(long, value_name = "NAME")]
        agent: Option<String>,
        /// A note for the list (who holds it).
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Revoke a token by its id.
    Revoke {
        #[command(flatten)]
        flags: CollectorFlags,
        id: String,
    },
    /// List tokens (ids, kinds, agents, dates; never secrets).
    List {
        #[command(flatten)]
        flags: CollectorFlags,
    },
}

fn parse_kind(s: &str) -> Result<TokenKind, String> {
    match s {
        "agent" => Ok(TokenKind::Agent),
        "read" => Ok(TokenKind::Read),
        other => Err(format!(
            "{other:?} is not a token kind: expected agent or read"
        )),
    }
}

async fn open_store(flags: &CollectorFlags) -> anyhow::Result<OpenStore> {
    let config = flags.load()?;
    open_for_command(&config).await
}

/// The store a configuration names (PostgreSQL or the data directory's SQLite file),
/// for a command.
pub async fn open_for_command(config: &CollectorConfig) -> anyhow::Result<OpenStore> {
    OpenStore::open_for_command(&config.data_dir, config.database_url.as_ref())
        .await
        .with_context(|| match &config.database_url {
            Some(url) => format!("cannot open the store in the PostgreSQL database {url}"),
            None => format!("cannot open the store in {}", config.data_dir.display()),
        })
}

fn date(ms: u64) -> String {
    jiff::Timestamp::from_millisecond(i64::try_from(ms).unwrap_or(i64::MAX))
        .map(|t| t.strftime("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default()
}

pub fn token(cmd: TokenCommand) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let now = empreinte_collector::clock::now_unix_ms();
        match cmd.action {
            TokenAction::Create {
                flags,
                kind,
                agent,
                note,
            } => {
                if let Some(a) = &agent {
                    empreinte_shared::wire::check_name(a)
                        .map_err(|e| anyhow::anyhow!("--agent {a:?}: {e}"))?;
                }
                let agent = match (kind, agent) {
                    (TokenKind::Agent, None) => anyhow::bail!(
                        "an agent token is for one agent: give --agent NAME (the agent's id, by default its host name)"
                    ),
                    (TokenKind::Read, Some(_)) => {
                        anyhow::bail!("a read token is not tied to an agent: leave out --agent")
                    }
                    (_, a) => a,
                };
                let store = open_store(&flags).await?;
                let issued = empreinte_collector::auth::issue(
                    store.store().as_ref(),
                    kind,
                    agent.as_deref(),
                    &note,
                    now,
                )
                .await?;
                store.close().await;
                eprintln!(
                    "created {} token {}{}; it is shown once:",
                    kind.as_str(),
                    issued.record.id,
                    agent.map(|a| format!(" for agent {a}")).unwrap_or_default()
                );
                println!("{}", issued.token);
                Ok(ExitCode::SUCCESS)
            }
            TokenAction::Revoke { flags, id } => {
                let store = open_store(&flags).await?;
                let done = store.store().revoke_token(&id, now).await?;
                store.close().await;
                if done {
                    eprintln!("token {id} revoked");
                    Ok(ExitCode::SUCCESS)
                } else {
                    eprintln!("error: no active token has the id {id:?} (see `empreinte token list`)");
                    Ok(ExitCode::from(1))
                }
            }
            TokenAction::List { flags } => {
                let store = open_store(&flags).await?;
                let tokens = store.store().tokens().await?;
                store.close().await;
                println!("{:<14} {:<6} {:<20} {:<22} {:<22} note", "id", "kind", "agent", "created", "revoked");
                for t in tokens {
                    println!(
                        "{:<14} {:<6} {:<20} {:<22} {:<22} {}",
                        t.id,
                        t.kind.as_str(),
                        t.agent_id.as_deref().unwrap_or("-"),
                        date(t.created_ms),
                        t.revoked_ms.map(date).unwrap_or_else(|| "-".into()),
                        t.note
                    );
                }
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}

/// Takes the data directory's lock (the one `up` takes too), making the directory
/// private (0700) if it was not.
pub fn lock_data_dir(dir: &Path) -> anyhow::Result<empreinte_agent::push::lock::DirLock> {
    let lock = empreinte_agent::push::lock::DirLock::acquire(
        dir,
        crate::up_cli::UP_LOCK,
        "the data directory",
    )?;
    make_private(dir)?;
    Ok(lock)
}

/// Sets `dir` to 0700 when group or others may read it (a directory made by an older
/// version, or by hand). A directory this user does not own (a volume mounted by root
/// with a group for the collector) stays as it is, with a warning.
pub fn make_private(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        match std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)) {
            Ok(()) => {
                tracing::info!(dir = %dir.display(), previous = format!("{mode:o}"), "data directory made private (0700)")
            }
            Err(e) => {
                tracing::warn!(dir = %dir.display(), mode = format!("{mode:o}"), error = %e, "the data directory is readable by others and cannot be made private; the files in it are 0600")
            }
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct BackupCommand {
    /// The collector's data directory [default: the configuration's, /var/lib/empreinte].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// The collector's configuration (for its data directory).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// A PostgreSQL store is not copied by this command (see the error it gives).
    #[arg(
        long,
        value_name = "URL",
        env = "EMPREINTE_DATABASE_URL",
        hide_env_values = true
    )]
    database_url: Option<DatabaseUrl>,
    /// Where to write the copy (a new file; it must not exist).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: PathBuf,
}

/// `empreinte backup`: a consistent copy of the database, taken while the collector
/// runs (docs/operations.md says how to restore it).
pub fn backup(cmd: BackupCommand) -> anyhow::Result<ExitCode> {
    let config = CollectorConfig::load(
        cmd.config.as_deref(),
        &Overrides {
            data_dir: cmd.data_dir.clone(),
            database_url: cmd.database_url.clone(),
            ..Overrides::default()
        },
    )?;
    if let Some(url) = &config.database_url {
        anyhow::bail!(
            "the store is in the PostgreSQL database {url}: back it up with PostgreSQL's own tools, `pg_dump --format=custom` for a copy or continuous archiving (PITR) for a point in time; see docs/postgresql.md. `empreinte backup` copies the SQLite store only"
        );
    }
    let db = config
        .data_dir
        .join(empreinte_collector::store::sqlite::DB_FILE);
    if !db.is_file() {
        anyhow::bail!(
            "no database at {} (give --data-dir, the collector's data directory)",
            db.display()
        );
    }
    if cmd.output.exists() {
        anyhow::bail!(
            "{} exists: give a new file to -o (a backup never overwrites)",
            cmd.output.display()
        );
    }
    runtime()?.block_on(async {
        let store = SqliteStore::open(&config.data_dir)
            .await
            .with_context(|| format!("cannot open the store in {}", config.data_dir.display()))?;
        let done = store.backup_into(&cmd.output).await;
        store.close().await;
        if let Err(e) = done {
            let _ = std::fs::remove_file(&cmd.output);
            return Err(anyhow::Error::new(e)
                .context(format!("cannot write the backup {}", cmd.output.display())));
        }
        let file = std::fs::File::open(&cmd.output)
            .with_context(|| format!("cannot reopen {}", cmd.output.display()))?;
        file.sync_all()
            .with_context(|| format!("cannot flush {}", cmd.output.display()))?;
        let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
        eprintln!(
            "backup of {} written to {} ({bytes} bytes); restore: docs/operations.md",
            db.display(),
            cmd.output.display()
        );
        Ok(ExitCode::SUCCESS)
    })
}
