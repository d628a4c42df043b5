//! `empreinte register check [FILE]`: validates the register of AI uses and reports
//! every problem at once. Exit status: 0 valid, 1 problems found, 2 the file (or the
//! collector configuration) cannot be read or parsed.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use empreinte_collector::config::{CollectorConfig, Overrides};
use empreinte_collector::register::{Context, Register, RegisterError};

#[derive(Args)]
pub struct RegisterCommand {
    #[command(subcommand)]
    action: RegisterAction,
}

#[derive(Subcommand)]
enum RegisterAction {
    /// Validate the register: every problem at once, with its key and what is allowed.
    Check {
        /// The register (default: `register_file` of the collector configuration).
        file: Option<PathBuf>,
        /// The collector configuration: on-site uses are checked against its sites.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
}

pub fn register(cmd: RegisterCommand) -> anyhow::Result<ExitCode> {
    let RegisterAction::Check { file, config, json } = cmd.action;
    let collector = match &config {
        Some(path) => Some(CollectorConfig::load(Some(path), &Overrides::default())?),
        None => None,
    };
    let file = file
        .or_else(|| collector.as_ref().and_then(|c| c.register_file.clone()))
        .context("name the register file, or give --config with a register_file")?;
    let cx = collector.as_ref().map(Context::of).unwrap_or_default();
    match Register::load(&file, &cx) {
        Ok(r) => {
            let projects: usize = r.uses.iter().map(|u| u.projects.len()).sum();
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "file": file.display().to_string(),
                        "valid": true,
                        "uses": r.uses.len(),
                        "departments": r.departments(),
                        "projects": projects,
                        "problems": [],
                    })
                );
            } else {
                println!(
                    "{}: valid — {} use{}, {} department{} ({}), {} measured project{}{}",
                    file.display(),
                    r.uses.len(),
                    plural(r.uses.len()),
                    r.departments().len(),
                    plural(r.departments().len()),
                    r.departments().join(", "),
                    projects,
                    plural(projects),
                    if cx.sites.is_none() {
                        "; sites not checked (give --config)"
                    } else {
                        ""
                    }
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(RegisterError::Invalid { path, problems }) => {
            if json {
                let list: Vec<_> = problems
                    .iter()
                    .map(|p| serde_json::json!({"key": p.key, "message": p.message}))
                    .collect();
                println!(
                    "{}",
                    serde_json::json!({"file": path.display().to_string(), "valid": false, "problems": list})
                );
            } else {
                println!("{}", RegisterError::Invalid { path, problems });
            }
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(e.into()),
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
