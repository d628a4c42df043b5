//! `empreinte report --format csv`: every hourly row of the month, streamed to its
//! destination as it is read, so memory stays constant whatever the month's size (a
//! 1,000-host month is about 700 MB of text; BENCHMARKS.md).
//!
//! From the data directory the rows are read page by page from the store
//! ([`report::write_csv`]); from a collector (`--collector`) its streamed answer is copied
//! through. A file (`-o`) is written beside itself as `NAME.partial`, synced, then
//! renamed: a report that fails half-way leaves no truncated file under the name asked.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use empreinte_collector::report::{self, Format};

use super::ReportCommand;

/// Bytes buffered before a write to the file or standard output.
const BUFFER_BYTES: usize = 256 * 1024;

pub(super) fn csv(cmd: &ReportCommand) -> anyhow::Result<ExitCode> {
    let mut out = Output::open(cmd.output.as_deref())?;
    let written = match &cmd.collector {
        Some(url) => remote(cmd, url, &mut out),
        None => local(cmd, &mut out),
    };
    match written {
        Ok(month) => {
            out.finish()?;
            if let Some(path) = &cmd.output {
                eprintln!("report for {month} written to {}", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            out.abandon();
            Err(e)
        }
    }
}

/// From the data directory; gives the month's label.
fn local(cmd: &ReportCommand, out: &mut Output) -> anyhow::Result<String> {
    let setup = super::local_setup(cmd)?;
    let runtime = crate::collector_cli::runtime()?;
    runtime.block_on(async {
        let opened = crate::collector_cli::open_for_command(&setup.config).await?;
        let store = opened.store();
        let written = async {
            let data = report::build_summary(
                store.as_ref(),
                &setup.config,
                &setup.tz,
                &setup.month,
                setup.now,
            )
            .await?;
            let month = data.month.clone();
            report::write_csv(store.clone(), data, setup.tz.clone(), setup.lang, out).await?;
            anyhow::Ok(month)
        }
        .await;
        opened.close().await;
        written
    })
}

/// From a running collector: its answer copied through as it arrives.
fn remote(cmd: &ReportCommand, url: &str, out: &mut Output) -> anyhow::Result<String> {
    let config = empreinte_collector::config::CollectorConfig::load(
        cmd.config.as_deref(),
        &empreinte_collector::config::Overrides::default(),
    )?;
    let label = super::month_label(cmd, &config)?;
    let (address, mut response) = super::fetch(cmd, url, &label, Format::Csv)?;
    let mut body = response.body_mut().as_reader();
    std::io::copy(&mut body, out)
        .with_context(|| format!("cannot copy the collector's CSV from {address}"))?;
    Ok(label)
}

/// Standard output, or a file written as `NAME.partial` and renamed when complete.
enum Output {
    Stdout(BufWriter<std::io::Stdout>),
    File {
        writer: BufWriter<File>,
        partial: PathBuf,
        path: PathBuf,
    },
}

impl Output {
    fn open(path: Option<&Path>) -> anyhow::Result<Output> {
        let Some(path) = path else {
            return Ok(Output::Stdout(BufWriter::with_capacity(
                BUFFER_BYTES,
                std::io::stdout(),
            )));
        };
        let mut name = path.as_os_str().to_owned();
        name.push(".partial");
        let partial = PathBuf::from(name);
        let file = File::create(&partial)
            .with_context(|| format!("cannot write the report to {}", path.display()))?;
        Ok(Output::File {
            writer: BufWriter::with_capacity(BUFFER_BYTES, file),
            partial,
            path: path.to_path_buf(),
        })
    }

    /// Flushes; a file is synced and takes its name.
    fn finish(self) -> anyhow::Result<()> {
        match self {
            Output::Stdout(mut w) => w
                .flush()
                .context("cannot write the report to standard output"),
            Output::File {
                writer,
                partial,
                path,
            } => {
                let done = writer
                    .into_inner()
                    .map_err(|e| e.into_error())
                    .and_then(|f| f.sync_all())
                    .and_then(|()| std::fs::rename(&partial, &path));
                if let Err(e) = done {
                    let _ = std::fs::remove_file(&partial);
                    return Err(e)
                        .with_context(|| format!("cannot write the report to {}", path.display()));
                }
                Ok(())
            }
        }
    }

    /// After a failure: a partial file is removed.
    fn abandon(self) {
        if let Output::File {
            writer, partial, ..
        } = self
        {
            drop(writer);
            let _ = std::fs::remove_file(&partial);
        }
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Output::Stdout(w) => w.write(buf),
            Output::File { writer, .. } => writer.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Output::Stdout(w) => w.flush(),
            Output::File { writer, .. } => writer.flush(),
        }
    }
}
