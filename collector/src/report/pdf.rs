//! The PDF: the HTML report printed by headless Chromium (`--print-to-pdf`), so that the
//! PDF is the same document as the page. Chromium is found from an explicit path, then
//! `$EMPREINTE_CHROMIUM`, then `chromium-headless-shell`, `chromium`, `chromium-browser`,
//! `google-chrome` on `PATH`.
//!
//! The headless shell (Debian's `chromium-headless-shell`, the same engine built without
//! the browser's interface) comes first: it prints the same page in about half the time
//! and half the memory of the full browser (BENCHMARKS.md, session 5), which is what
//! keeps a month's PDF within a second.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use super::ReportError;

/// The environment variable naming the Chromium binary.
pub const CHROMIUM_ENV: &str = "EMPREINTE_CHROMIUM";

/// The binaries looked for on `PATH`, lightest first.
pub const CANDIDATES: &[&str] = &[
    "chromium-headless-shell",
    "chromium",
    "chromium-browser",
    "google-chrome",
];

/// The Chromium to use: `explicit`, else `$EMPREINTE_CHROMIUM`, else the first candidate
/// on `PATH`.
pub fn find_chromium(explicit: Option<&Path>) -> Result<PathBuf, ReportError> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os(CHROMIUM_ENV).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for c in CANDIDATES {
            let p = dir.join(c);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    Err(ReportError::Render(format!(
        "a PDF needs headless Chromium, and none was found: give --chromium PATH, set {CHROMIUM_ENV}, or install it (Debian: apt-get install chromium-headless-shell)"
    )))
}

/// The flags every headless run gets: no sandbox (containers, root), no GPU, no network
/// chatter, a fresh profile.
pub fn headless_args(profile: &Path) -> Vec<String> {
    vec![
        "--headless".into(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--no-first-run".into(),
        "--disable-background-networking".into(),
        "--disable-component-update".into(),
        "--disable-sync".into(),
        "--disable-dev-shm-usage".into(),
        format!("--user-data-dir={}", profile.display()),
    ]
}

/// How long Chromium may take to print before it is killed.
pub const PRINT_TIMEOUT: Duration = Duration::from_secs(120);
/// The most of Chromium's stderr kept for an error message.
const STDERR_KEPT: usize = 16 * 1024;

/// Runs `chromium` with `args` until it exits (killed after [`PRINT_TIMEOUT`], and when
/// the future is dropped). Its stderr is drained while it runs, so a chatty Chromium
/// never blocks on a full pipe; the error carries the first 16 KiB of it.
pub async fn run_chromium(chromium: &Path, args: &[String]) -> Result<(), ReportError> {
    use tokio::io::AsyncReadExt;
    let mut child = tokio::process::Command::new(chromium)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            ReportError::Render(format!(
                "cannot start Chromium ({}): {e}",
                chromium.display()
            ))
        })?;
    let stderr = child.stderr.take();
    let drain = async move {
        let mut kept = Vec::new();
        if let Some(mut s) = stderr {
            let mut buf = [0u8; 4096];
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                let room = STDERR_KEPT.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
        kept
    };
    let run = async { tokio::join!(child.wait(), drain) };
    match tokio::time::timeout(PRINT_TIMEOUT, run).await {
        Ok((Ok(status), err)) => {
            if status.success() {
                Ok(())
            } else {
                Err(ReportError::Render(format!(
                    "Chromium ({}) failed ({status}): {}",
                    chromium.display(),
                    String::from_utf8_lossy(&err).trim()
                )))
            }
        }
        Ok((Err(e), _)) => Err(ReportError::Render(format!(
            "cannot wait for Chromium: {e}"
        ))),
        Err(_) => {
            let _ = child.kill().await;
            Err(ReportError::Render(format!(
                "Chromium did not finish printing within {} s",
                PRINT_TIMEOUT.as_secs()
            )))
        }
    }
}

/// Prints `html` to PDF with `chromium`; gives the PDF's bytes.
pub async fn print(html: &str, chromium: &Path) -> Result<Vec<u8>, ReportError> {
    let dir = tempfile::Builder::new()
        .prefix("empreinte-report-")
        .tempdir()
        .map_err(|e| ReportError::Render(format!("cannot create a temp dir for Chromium: {e}")))?;
    let page = dir.path().join("report.html");
    let out = dir.path().join("report.pdf");
    std::fs::write(&page, html)
        .map_err(|e| ReportError::Render(format!("cannot write {}: {e}", page.display())))?;
    let mut args = headless_args(&dir.path().join("profile"));
    args.push("--no-pdf-header-footer".into());
    args.push(format!("--print-to-pdf={}", out.display()));
    args.push(format!("file://{}", page.display()));
    run_chromium(chromium, &args).await?;
    std::fs::read(&out).map_err(|e| {
        ReportError::Render(format!(
            "Chromium exited but wrote no PDF ({}): {e}",
            out.display()
        ))
    })
}

/// The number of pages of a PDF (its `/Type /Page` objects).
pub fn page_count(pdf: &[u8]) -> usize {
    let text = String::from_utf8_lossy(pdf);
    let mut n = 0;
    for (i, _) in text.match_indices("/Type /Page") {
        let next = text[i + "/Type /Page".len()..].chars().next();
        if next != Some('s') {
            n += 1;
        }
    }
    n
}
