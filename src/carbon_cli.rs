//! `empreinte carbon`: the coefficients table, and imports of grid intensity series.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use empreinte_collector::carbon::{Coefficients, IntensitySeries, parse_intensity};
use empreinte_collector::plan::load_coefficients;
use empreinte_collector::store::{IntensityImport, Store};

use crate::collector_cli::{CollectorFlags, runtime};

#[derive(Args)]
pub struct CarbonCommand {
    #[command(subcommand)]
    action: CarbonAction,
}

#[derive(Subcommand)]
enum CarbonAction {
    /// List the coefficients (grid intensity, PUE, embodied) with their source and year.
    Factors {
        #[command(flatten)]
        flags: CollectorFlags,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Import grid intensity time series into the store: RTE eCO2mix exports (ODRÉ CSV or
    /// the eCO2mix download) or Electricity Maps history (CSV or JSON). The format is
    /// recognised from the content. Hours already stored are recomputed.
    Import {
        #[command(flatten)]
        flags: CollectorFlags,
        /// The files to import.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
}

pub fn carbon(cmd: CarbonCommand) -> anyhow::Result<ExitCode> {
    match cmd.action {
        CarbonAction::Factors { flags, json } => {
            let config = flags.load()?;
            let c = load_coefficients(&config)?;
            if json {
                println!("{}", factors_json(&c)?);
            } else {
                print!("{}", factors_text(&c));
            }
            Ok(ExitCode::SUCCESS)
        }
        CarbonAction::Import { flags, files } => {
            let config = flags.load()?;
            runtime()?.block_on(async {
                let opened = crate::collector_cli::open_for_command(&config).await?;
                let store = opened.store();
                let mut failed = false;
                for file in &files {
                    match import_file(store.as_ref(), file).await {
                        Ok(()) => {}
                        Err(e) => {
                            eprintln!("error: {}: {e:#}", file.display());
                            failed = true;
                        }
                    }
                }
                opened.close().await;
                Ok(if failed {
                    ExitCode::from(1)
                } else {
                    ExitCode::SUCCESS
                })
            })
        }
    }
}

/// The hourly means of a series: `(hour_s, g_per_kwh, covered share)`.
pub fn hourly_means(series: &IntensitySeries) -> Vec<(i64, f64, f64)> {
    let (Some(first), Some(last)) = (series.points.first(), series.points.last()) else {
        return Vec::new();
    };
    let start = first.start_unix_s - first.start_unix_s.rem_euclid(3600);
    let end = last.start_unix_s + i64::from(last.duration_s);
    (start..end)
        .step_by(3600)
        .filter_map(|h| series.mean_over(h, h + 3600).map(|(g, c)| (h, g, c)))
        .collect()
}

async fn import_file(store: &dyn Store, path: &std::path::Path) -> anyhow::Result<()> {
    let file = std::fs::File::open(path).context("cannot open the file")?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes} ({eta})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(format!("reading {}", path.display()));
    let series = parse_intensity(std::io::BufReader::new(file), &mut |read| {
        bar.set_position(read)
    });
    bar.finish_and_clear();
    let series = series?;
    let hours = hourly_means(&series);
    let r = &series.report;
    let outcome = store
        .import_intensity(&IntensityImport {
            zone: series.zone.clone(),
            source: series.source.clone(),
            kind: series.kind.as_str().to_string(),
            file: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            now_ms: empreinte_collector::clock::now_unix_ms(),
            hours,
        })
        .await?;
    println!(
        "{}: {} ({} factors), zone {}, {} s steps: {} rows read, {} points, {} hours stored, {} footprint rows recomputed",
        path.display(),
        series.source,
        series.kind.as_str(),
        series.zone,
        series.step_s,
        r.rows_read,
        r.points,
        outcome.hours,
        outcome.rows_updated
    );
    println!(
        "  zero or empty intensity: {}, other rows skipped: {}, duplicate instants: {}, DST repeats placed: {}, missing steps: {}",
        r.zeros_skipped, r.skipped_total, r.duplicates_resolved, r.dst_repeats_resolved, r.gaps
    );
    for (line, reason) in r.skipped.iter().take(10) {
        println!("  line {line}: {reason}");
    }
    if r.skipped.len() > 10 {
        println!("  … {} more skipped rows", r.skipped_total - 10);
    }
    Ok(())
}

fn factors_text(c: &Coefficients) -> String {
    let mut out = String::from("Grid carbon intensity (gCO2e/kWh)\n");
    for g in c.grid_factors() {
        let chosen = c.grid(&g.zone).is_some_and(|d| std::ptr::eq(d, g));
        out.push_str(&format!(
            "  {} {:<6} {:>7.1}  {:<9} {}  {}{}\n",
            if chosen { "*" } else { " " },
            g.zone,
            g.g_per_kwh.0,
            g.kind.as_str(),
            g.year,
            g.source,
            if g.is_default {
                ""
            } else {
                " (organisation's own)"
            }
        ));
    }
    out.push_str("PUE\n");
    for p in c.pue_all() {
        out.push_str(&format!(
            "    {:<20} {:>5.2}  {}  {}\n",
            format!("{:?}", p.kind),
            p.pue,
            p.year,
            p.source
        ));
    }
    out.push_str("Embodied (manufacturing, kgCO2e)\n");
    for e in c.embodied_all() {
        out.push_str(&format!(
            "    {:<24} {:>8.0}  {} years  {}  {}\n",
            e.id, e.kgco2e.0, e.lifetime_years, e.year, e.source
        ));
    }
    out.push_str("* the factor used for a zone\n");
    out
}

fn factors_json(c: &Coefficients) -> anyhow::Result<String> {
    let v = serde_json::json!({
        "grid": c.grid_factors().iter().map(|g| serde_json::json!({
            "zone": g.zone, "name_fr": g.name_fr, "name_en": g.name_en,
            "g_per_kwh": g.g_per_kwh.0, "year": g.year, "kind": g.kind.as_str(),
            "source": g.source, "url": g.url, "is_default": g.is_default,
            "used_for_zone": c.grid(&g.zone).is_some_and(|d| std::ptr::eq(d, g)),
        })).collect::<Vec<_>>(),
        "pue": c.pue_all().iter().map(|p| serde_json::json!({
            "kind": format!("{:?}", p.kind), "pue": p.pue, "year": p.year, "source": p.source,
            "is_default": p.is_default,
        })).collect::<Vec<_>>(),
        "embodied": c.embodied_all().iter().map(|e| serde_json::json!({
            "id": e.id, "name": e.name, "kgco2e": e.kgco2e.0, "lifetime_years": e.lifetime_years,
            "year": e.year, "source": e.source, "is_default": e.is_default,
        })).collect::<Vec<_>>(),
    });
    serde_json::to_string_pretty(&v).context("cannot encode the coefficients")
}
