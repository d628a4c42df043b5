//! `empreinte db migrate`: moves a collector's SQLite store into PostgreSQL, exactly,
//! and checks it before saying so.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use empreinte_collector::store::pg::copy::{self, TableCheck};
use empreinte_collector::store::pg::{DatabaseUrl, PgStore};
use empreinte_collector::store::sqlite::{DB_FILE, SqliteStore};
use empreinte_collector::store::{Store, StoreOptions};

#[derive(Args)]
pub struct DbCommand {
    #[command(subcommand)]
    action: DbAction,
}

#[derive(Subcommand)]
enum DbAction {
    /// Copy a SQLite store (a collector's data directory) into an empty PostgreSQL
    /// database, then check every table's rows and totals. Stop the collector first.
    Migrate {
        /// The collector's data directory (holding empreinte.db).
        #[arg(long, value_name = "DATA_DIR")]
        from: PathBuf,
        /// The PostgreSQL database (postgres://USER:PASSWORD@HOST/DATABASE), empty.
        #[arg(
            long,
            value_name = "URL",
            env = "EMPREINTE_DATABASE_URL",
            hide_env_values = true
        )]
        to: DatabaseUrl,
    },
}

pub fn db(cmd: DbCommand) -> anyhow::Result<ExitCode> {
    match cmd.action {
        DbAction::Migrate { from, to } => migrate(&from, &to),
    }
}

fn migrate(from: &std::path::Path, to: &DatabaseUrl) -> anyhow::Result<ExitCode> {
    let db = from.join(DB_FILE);
    if !db.is_file() {
        anyhow::bail!(
            "no SQLite store at {} (give --from, the collector's data directory)",
            db.display()
        );
    }
    crate::collector_cli::runtime()?.block_on(async {
        // Brings the SQLite file to the latest schema and folds its ingest log (pushes
        // acknowledged before the collector stopped) into its tables: what the copy reads.
        let sqlite = SqliteStore::open_with(
            from,
            &StoreOptions {
                integrity_check: false,
                ingest_log: true,
                ..StoreOptions::default()
            },
        )
        .await
        .with_context(|| format!("cannot open the store in {}", from.display()))?;
        let timezone = sqlite.timezone().to_string();
        let pg = PgStore::open(
            to.secret(),
            &StoreOptions {
                timezone: Some(timezone.clone()),
                ..StoreOptions::default()
            },
        )
        .await
        .with_context(|| format!("cannot open the PostgreSQL database {to}"))?;
        if !copy::is_empty(&pg).await? {
            anyhow::bail!(
                "the PostgreSQL database {to} already holds a store: migrate into an empty database (nothing was copied)"
            );
        }
        sqlite.close().await;
        let checks = copy::copy_from_sqlite(&db, &pg)
            .await
            .with_context(|| format!("cannot copy {} into {to} (nothing was copied)", db.display()))?;
        // The footprint as the collector reads it, over all time, from both stores.
        let sqlite = SqliteStore::open(from).await?;
        let (a, b) = (all_lines(&sqlite, &timezone).await?, all_lines(&pg, &timezone).await?);
        sqlite.close().await;
        pg.close().await;
        print_checks(&checks);
        let lines_equal = a == b;
        eprintln!(
            "footprint lines over all time: {} in SQLite, {} in PostgreSQL, {}",
            a.len(),
            b.len(),
            if lines_equal { "equal" } else { "DIFFERENT" }
        );
        if checks.iter().all(TableCheck::equal) && lines_equal {
            eprintln!("{} copied into {to}: every row count and every total equal", db.display());
            Ok(ExitCode::SUCCESS)
        } else {
            eprintln!("error: the copy in {to} differs from {} (see above); do not switch the collectors to it", db.display());
            Ok(ExitCode::from(1))
        }
    })
}

async fn all_lines(
    store: &dyn Store,
    timezone: &str,
) -> anyhow::Result<Vec<empreinte_collector::store::AggregateLine>> {
    let tz = jiff::tz::TimeZone::get(timezone)?;
    let from = empreinte_collector::period::month(&tz, 1970, 1).map_err(anyhow::Error::msg)?;
    let to = empreinte_collector::period::month(&tz, 2200, 1).map_err(anyhow::Error::msg)?;
    Ok(store.lines(from.from_s, to.from_s).await?)
}

fn print_checks(checks: &[TableCheck]) {
    eprintln!(
        "{:<18} {:>12} {:>12}  totals (SQLite = PostgreSQL)",
        "table", "SQLite", "PostgreSQL"
    );
    for c in checks {
        let totals: Vec<String> = c
            .totals
            .iter()
            .filter(|(col, _, _)| col.ends_with("_uj") || col.ends_with("_ug") || col == "rows")
            .map(|(col, a, b)| {
                if a == b {
                    format!("{col} {a}")
                } else {
                    format!("{col} {a} ≠ {b}")
                }
            })
            .collect();
        eprintln!(
            "{:<18} {:>12} {:>12}  {}{}",
            c.table,
            c.sqlite_rows,
            c.postgres_rows,
            totals.join(", "),
            if c.equal() { "" } else { "  DIFFERENT" }
        );
    }
}
