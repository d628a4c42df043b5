//! `empreinte report`: the monthly footprint report, from a data directory or from a
//! running collector (`--collector URL` with a read token).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use empreinte_collector::clock::now_unix_ms;
use empreinte_collector::config::{CollectorConfig, Overrides};
use empreinte_collector::period::month_of;
use empreinte_collector::report::{self, Format, Lang, pdf};

mod csv_out;

#[derive(Args)]
pub struct ReportCommand {
    /// The month, YYYY-MM, in the organisation's time zone [default: last month].
    #[arg(long, value_name = "YYYY-MM")]
    month: Option<String>,
    /// The yearly statement of this calendar year instead (Bilan GES categories, REEN
    /// indicators; html, pdf, json or md; from the data directory).
    #[arg(long, value_name = "YYYY", conflicts_with = "month")]
    year: Option<i16>,
    /// html, pdf, csv, json, md, boamps (one BoAmps file per use, in the -o directory) or
    /// opendata (the month per use, the open-data CSV of docs/opendata.md).
    #[arg(long, value_name = "FORMAT", default_value = "html", value_parser = Format::parse)]
    format: Format,
    /// fr or en [default: the organisation's language, French unless configured].
    #[arg(long, value_name = "LANG", value_parser = Lang::parse)]
    lang: Option<Lang>,
    /// Where to write the report [default: standard output; for a PDF,
    /// empreinte-YYYY-MM-LANG.pdf]; for boamps, a directory.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: Option<PathBuf>,
    /// Read from this running collector (base URL) instead of a data directory.
    #[arg(long, value_name = "URL", conflicts_with = "data_dir")]
    collector: Option<String>,
    /// File holding a read token for --collector [default: $EMPREINTE_READ_TOKEN].
    #[arg(long, value_name = "PATH", requires = "collector")]
    token_file: Option<PathBuf>,
    /// Trust this CA (PEM) for an https:// collector, besides the system's store.
    #[arg(long, value_name = "FILE", requires = "collector")]
    collector_ca: Option<PathBuf>,
    /// The collector's configuration (organisation, time zone, sites, objectives).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The collector's data directory [default: the configuration's, /var/lib/empreinte].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Read from this PostgreSQL store instead of a data directory (docs/postgresql.md).
    #[arg(
        long,
        value_name = "URL",
        env = "EMPREINTE_DATABASE_URL",
        hide_env_values = true,
        conflicts_with = "collector"
    )]
    database_url: Option<empreinte_collector::store::pg::DatabaseUrl>,
    /// Headless Chromium, for PDF [default: $EMPREINTE_CHROMIUM, then chromium-headless-shell or chromium on PATH].
    #[arg(long, value_name = "PATH")]
    chromium: Option<PathBuf>,
}

fn now_s() -> i64 {
    i64::try_from(now_unix_ms() / 1000).unwrap_or(i64::MAX)
}

pub fn report(cmd: ReportCommand) -> anyhow::Result<ExitCode> {
    if let Some(year) = cmd.year {
        return yearly(&cmd, year);
    }
    if cmd.format == Format::Boamps {
        return boamps(&cmd);
    }
    if cmd.format == Format::Csv {
        return csv_out::csv(&cmd);
    }
    let (bytes, month, lang) = match &cmd.collector {
        Some(url) => remote(&cmd, url)?,
        None => local(&cmd)?,
    };
    let out = match (&cmd.output, cmd.format) {
        (Some(p), _) => Some(p.clone()),
        (None, Format::Pdf) => Some(PathBuf::from(format!(
            "empreinte-{month}-{}.pdf",
            lang.map(Lang::code).unwrap_or("report")
        ))),
        (None, _) => None,
    };
    match out {
        Some(path) => {
            std::fs::write(&path, &bytes)
                .with_context(|| format!("cannot write the report to {}", path.display()))?;
            eprintln!("report for {month} written to {}", path.display());
        }
        None => std::io::stdout()
            .write_all(&bytes)
            .context("cannot write the report to standard output")?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `--year YYYY`: the yearly statement, from the data directory.
fn yearly(cmd: &ReportCommand, year: i16) -> anyhow::Result<ExitCode> {
    if cmd.collector.is_some() {
        bail!("--year reads the data directory (--data-dir), not --collector");
    }
    let config = CollectorConfig::load(
        cmd.config.as_deref(),
        &Overrides {
            data_dir: cmd.data_dir.clone(),
            database_url: cmd.database_url.clone(),
            ..Overrides::default()
        },
    )?;
    if config.database_url.is_none() && !config.data_dir.is_dir() {
        bail!(
            "no data directory at {} (give --data-dir)",
            config.data_dir.display()
        );
    }
    let lang = match cmd.lang {
        Some(l) => l,
        None => Lang::parse(&config.organisation.language).map_err(anyhow::Error::msg)?,
    };
    let tz = report::time_zone(&config)?;
    let now = now_s();
    let runtime = crate::collector_cli::runtime()?;
    let data = runtime.block_on(async {
        let opened = crate::collector_cli::open_for_command(&config).await?;
        let store = opened.store();
        let data = report::year::build_year(store.as_ref(), &config, &tz, year, now).await;
        opened.close().await;
        anyhow::Ok(data?)
    })?;
    let text = report::year::render(&data, cmd.format, lang)?;
    let bytes = if cmd.format == Format::Pdf {
        pdf_of(&text, cmd.chromium.as_deref())?
    } else {
        text.into_bytes()
    };
    match &cmd.output {
        Some(path) => {
            std::fs::write(path, &bytes)
                .with_context(|| format!("cannot write the statement to {}", path.display()))?;
            eprintln!("statement for {year} written to {}", path.display());
        }
        None => std::io::stdout()
            .write_all(&bytes)
            .context("cannot write the statement to standard output")?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `--format boamps`: one BoAmps file per use in the `-o` directory, from the data
/// directory.
fn boamps(cmd: &ReportCommand) -> anyhow::Result<ExitCode> {
    let Some(dir) = &cmd.output else {
        bail!("--format boamps writes one file per use: give -o DIR");
    };
    if cmd.collector.is_some() {
        bail!("--format boamps reads the data directory (--data-dir), not --collector");
    }
    let (config, data) = local_data(cmd)?;
    let docs = report::boamps::documents(&data, &config)?;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the directory {}", dir.display()))?;
    for (name, text) in &docs {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    eprintln!(
        "{} BoAmps file(s) for {} written to {}",
        docs.len(),
        data.month,
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The configuration and the month's summary, from the data directory.
fn local_data(cmd: &ReportCommand) -> anyhow::Result<(CollectorConfig, report::ReportData)> {
    let config = CollectorConfig::load(
        cmd.config.as_deref(),
        &Overrides {
            data_dir: cmd.data_dir.clone(),
            database_url: cmd.database_url.clone(),
            ..Overrides::default()
        },
    )?;
    if config.database_url.is_none() && !config.data_dir.is_dir() {
        bail!(
            "no data directory at {} (give --data-dir)",
            config.data_dir.display()
        );
    }
    let tz = report::time_zone(&config)?;
    let label = month_label(cmd, &config)?;
    let now = now_s();
    let m = report::parse_report_month(&tz, &label, now).map_err(|e| match e {
        report::ReportError::Future { .. } => anyhow::anyhow!("--month {e}"),
        other => other.into(),
    })?;
    let runtime = crate::collector_cli::runtime()?;
    let data = runtime.block_on(async {
        let opened = crate::collector_cli::open_for_command(&config).await?;
        let store = opened.store();
        let data = report::build_summary(store.as_ref(), &config, &tz, &m, now).await;
        opened.close().await;
        anyhow::Ok(data?)
    })?;
    Ok((config, data))
}

/// The month asked for, or last month.
fn month_label(cmd: &ReportCommand, config: &CollectorConfig) -> anyhow::Result<String> {
    if let Some(m) = &cmd.month {
        return Ok(m.clone());
    }
    let tz = report::time_zone(config)?;
    let this = month_of(&tz, now_s()).map_err(anyhow::Error::msg)?;
    Ok(this.previous(&tz).map_err(anyhow::Error::msg)?.label())
}

fn pdf_of(html: &str, chromium: Option<&Path>) -> anyhow::Result<Vec<u8>> {
    let chromium = pdf::find_chromium(chromium)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    Ok(runtime.block_on(pdf::print(html, &chromium))?)
}

/// What a report from the data directory needs: the configuration, the language, the
/// time zone, the month and the instant it is made at.
struct LocalSetup {
    config: CollectorConfig,
    lang: Lang,
    tz: jiff::tz::TimeZone,
    month: empreinte_collector::period::Month,
    now: i64,
}

fn local_setup(cmd: &ReportCommand) -> anyhow::Result<LocalSetup> {
    let config = CollectorConfig::load(
        cmd.config.as_deref(),
        &Overrides {
            data_dir: cmd.data_dir.clone(),
            database_url: cmd.database_url.clone(),
            ..Overrides::default()
        },
    )?;
    if config.database_url.is_none() && !config.data_dir.is_dir() {
        bail!(
            "no data directory at {} (give --data-dir, or --collector URL to read from a running collector)",
            config.data_dir.display()
        );
    }
    let lang = match cmd.lang {
        Some(l) => l,
        None => Lang::parse(&config.organisation.language).map_err(anyhow::Error::msg)?,
    };
    let tz = report::time_zone(&config)?;
    let label = month_label(cmd, &config)?;
    let now = now_s();
    let month = report::parse_report_month(&tz, &label, now).map_err(|e| match e {
        report::ReportError::Future { .. } => anyhow::anyhow!("--month {e}"),
        other => other.into(),
    })?;
    Ok(LocalSetup {
        config,
        lang,
        tz,
        month,
        now,
    })
}

fn local(cmd: &ReportCommand) -> anyhow::Result<(Vec<u8>, String, Option<Lang>)> {
    let LocalSetup {
        config,
        lang,
        tz,
        month: m,
        now,
    } = local_setup(cmd)?;
    let runtime = crate::collector_cli::runtime()?;
    let data = runtime.block_on(async {
        let opened = crate::collector_cli::open_for_command(&config).await?;
        let store = opened.store();
        let data = report::build_summary(store.as_ref(), &config, &tz, &m, now).await;
        opened.close().await;
        anyhow::Ok(data?)
    })?;
    let bytes = match cmd.format {
        Format::Pdf => pdf_of(
            &report::render_text(&data, Format::Html, lang)?,
            cmd.chromium.as_deref(),
        )?,
        f => report::render_text(&data, f, lang)?.into_bytes(),
    };
    Ok((bytes, data.month, Some(lang)))
}

fn remote(cmd: &ReportCommand, url: &str) -> anyhow::Result<(Vec<u8>, String, Option<Lang>)> {
    let config = CollectorConfig::load(cmd.config.as_deref(), &Overrides::default())?;
    let label = month_label(cmd, &config)?;
    // A PDF is printed here, from the collector's HTML.
    let fetched = if cmd.format == Format::Pdf {
        Format::Html
    } else {
        cmd.format
    };
    let (address, mut response) = fetch(cmd, url, &label, fetched)?;
    let body = response
        .body_mut()
        .with_config()
        .limit(512 * 1024 * 1024)
        .read_to_vec()
        .with_context(|| format!("cannot read the collector's answer from {address}"))?;
    let bytes = if cmd.format == Format::Pdf {
        pdf_of(&String::from_utf8_lossy(&body), cmd.chromium.as_deref())?
    } else {
        body
    };
    Ok((bytes, label, cmd.lang))
}

/// `GET {url}/reports/{label}.{format}` with the read token: the collector's answer when
/// it is 200 (its body not read yet), else its message as an error.
fn fetch(
    cmd: &ReportCommand,
    url: &str,
    label: &str,
    format: Format,
) -> anyhow::Result<(String, ureq::http::Response<ureq::Body>)> {
    let token = match &cmd.token_file {
        Some(p) => std::fs::read_to_string(p)
            .with_context(|| format!("cannot read the token file {}", p.display()))?
            .trim()
            .to_string(),
        None => std::env::var("EMPREINTE_READ_TOKEN").context(
            "--collector needs a read token: give --token-file or set EMPREINTE_READ_TOKEN",
        )?,
    };
    let mut address = format!(
        "{}/reports/{label}.{}",
        url.trim_end_matches('/'),
        format.extension()
    );
    if let Some(l) = cmd.lang {
        address.push_str(&format!("?lang={}", l.code()));
    }
    let tls = empreinte_agent::push::tls::client_config(cmd.collector_ca.as_deref())
        .map_err(|e| anyhow::anyhow!("--collector-ca: {e}"))?;
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(300)))
        .http_status_as_error(false)
        .tls_config(tls)
        .build()
        .new_agent();
    let mut response = agent
        .get(&address)
        .header("Authorization", &format!("Bearer {token}"))
        .call()
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot reach the collector at {address}: {}",
                empreinte_agent::push::tls::explain(&e, "--collector-ca FILE")
            )
        })?;
    let status = response.status().as_u16();
    if status != 200 {
        let body = response
            .body_mut()
            .with_config()
            .limit(1024 * 1024)
            .read_to_vec()
            .with_context(|| format!("cannot read the collector's answer from {address}"))?;
        let text = String::from_utf8_lossy(&body);
        let message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_else(|| text.trim().to_string());
        let message = message.strip_prefix("bad query: ").unwrap_or(&message);
        if message.contains("is in the future") {
            bail!("--month {message}");
        }
        bail!("the collector refused the report ({status}): {message}");
    }
    Ok((address, response))
}
