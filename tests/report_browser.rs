#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The report in a real browser: a collector holding a month of two hosts and three
//! projects; `empreinte report` fetches the HTML from the collector (read token) and
//! prints the PDF from the data directory; headless Chromium renders the page at A4
//! width, takes a screenshot, and a script in the page checks that every chart is drawn
//! (bars with a size and a colour) and that nothing is wider than the page. The PDF has
//! as many pages as the page's height needs. The PDF's pages, read back as text and
//! rendered as PNG (poppler-utils), carry their page numbers and running header, and the
//! first page the headline and the banner; the charts' labels sit on their bars and no
//! text is clipped. The French and English PDFs' pages match their golden images
//! (`report_pages`).
//!
//! Just over 600 lines, kept whole: one month of fixture data, printed once, feeds every
//! check (the page script's JavaScript alone is a third of the file).
//!
//! Needs Chromium (`chromium` on PATH or $EMPREINTE_CHROMIUM). In CI (`CI=true`) a
//! missing Chromium fails the test; elsewhere the test says so and stops.

mod common;
mod report_pages;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use empreinte_collector::report::pdf;

const CONFIG: &str = r#"
[organisation]
name = "Communauté d'agglomération de Test"
timezone = "Europe/Paris"
language = "fr"

[limits]
max_batch_age = "36500days"

[[site]]
name = "hotel-de-ville"
zone = "FR"
pue = 1.6
pue_source = "facilities measurement 2025"
hosts = ["srv-*"]

[[site]]
name = "datacentre-regional"
zone = "FR"
hosts = ["gpu-*"]

[[inventory]]
hosts = ["gpu-*"]
server = "gpu-server-8gpu-base"
gpus = [{ model = "nvidia-h100", count = 4 }]

[[objective]]
project = "assistant-citoyen"
monthly_energy_kwh = 300.0

[[objective]]
project = "traduction"
monthly_co2e_kg = 50.0
"#;

/// A4 at 96 dpi: 210 mm = 794 px; the page's content box is 182 mm = 688 px wide and
/// 297 − 31 = 266 mm = 1005 px high (see the report's `@page` margins).
const A4_WIDTH_PX: u32 = 794;
const CONTENT_HEIGHT_PX: f64 = 266.0 / 25.4 * 96.0;

fn chromium() -> Option<PathBuf> {
    match pdf::find_chromium(None) {
        Ok(p) => Some(p),
        Err(e) => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("CI=true and no Chromium: {e} (scripts/setup-chromium installs it)");
            }
            eprintln!("note: skipping the browser test: {e}");
            None
        }
    }
}

fn push(base: &str, token: &str, body: serde_json::Value) {
    let mut r = ureq::post(&format!("{base}/api/v1/ingest"))
        .header("Authorization", &format!("Bearer {token}"))
        .header("Content-Type", "application/json")
        .send(serde_json::to_vec(&body).unwrap().as_slice())
        .unwrap_or_else(|e| panic!("push: {e}"));
    assert_eq!(
        r.status().as_u16(),
        200,
        "{}",
        r.body_mut().read_to_string().unwrap()
    );
}

/// A month of hourly batches for `host`: `(project, component, source, Wh per hour)`.
fn fill(
    base: &str,
    token: &str,
    host: &str,
    run: u8,
    from_s: i64,
    to_s: i64,
    parts: &[(&str, &str, &str, u64)],
) {
    let hours: Vec<i64> = (from_s..to_s).step_by(3600).collect();
    for (c, chunk) in hours.chunks(400).enumerate() {
        let batches: Vec<serde_json::Value> = chunk
            .iter()
            .enumerate()
            .map(|(i, &h)| {
                let (s, e) = (h as u64 * 1000, h as u64 * 1000 + 3_600_000);
                // Days vary: a weekly rhythm, so the chart has a shape.
                let day = (h / 86_400) % 7;
                let factor = if day < 5 { 1.0 } else { 0.4 };
                let records: Vec<serde_json::Value> = parts
                    .iter()
                    .map(|(p, comp, src, wh)| {
                        serde_json::json!({
                            "project": p, "component": comp, "source": src,
                            "start_unix_ms": s, "end_unix_ms": e,
                            "energy_uj": (*wh as f64 * factor * 3.6e9) as u64,
                        })
                    })
                    .collect();
                serde_json::json!({
                    "run_id": format!("{run:032x}"), "seq": (c * 400 + i + 1) as u64,
                    "start_unix_ms": s, "end_unix_ms": e, "records": records, "counters": [],
                })
            })
            .collect();
        push(
            base,
            token,
            serde_json::json!({
                "version": 1,
                "agent": { "agent_id": host, "hostname": host, "agent_version": "test" },
                "spool": { "batches": 0, "bytes": 0, "oldest_start_unix_ms": null, "dropped_batches_total": 0 },
                "batches": batches,
            }),
        );
    }
}

/// The script the test adds to a copy of the page: measures, then writes the verdict
/// into `data-check` (read back from `--dump-dom`).
const CHECK_SCRIPT: &str = r##"<script>
(function () {
  var body = document.body.getBoundingClientRect();
  var widest = 0, culprit = "";
  document.querySelectorAll("body *").forEach(function (el) {
    var r = el.getBoundingClientRect();
    if (r.width > 0 && r.right > widest) { widest = r.right; culprit = el.tagName + "." + el.className; }
  });
  var charts = [];
  document.querySelectorAll("figure.chart svg").forEach(function (svg) {
    var box = svg.getBoundingClientRect();
    var bars = 0;
    svg.querySelectorAll("rect").forEach(function (r) {
      var fill = (r.getAttribute("fill") || "").toUpperCase();
      var b = r.getBBox();
      if (fill !== "#FFFFFF" && fill !== "NONE" && b.width > 0 && b.height > 0) bars++;
    });
    var lines = svg.querySelectorAll("polyline, path").length;
    // Nothing clipped: every text of the chart lies inside the chart's box.
    var clipped = [];
    svg.querySelectorAll("text").forEach(function (t) {
      var r = t.getBoundingClientRect();
      if (r.width > 0 && (r.left < box.left - 0.5 || r.right > box.right + 0.5 || r.top < box.top - 0.5 || r.bottom > box.bottom + 0.5)) {
        clipped.push(t.textContent);
      }
    });
    // Labels aligned with bars: in the objectives chart, every label left of the bars is
    // centred on a bar's row (within 3 px), and every row has its label.
    var misaligned = [], rows = 0, labels = 0;
    if (svg.getAttribute("class") === "chart-objectives") {
      var barRects = [];
      svg.querySelectorAll("rect").forEach(function (r) {
        var fill = (r.getAttribute("fill") || "").toUpperCase();
        var b = r.getBoundingClientRect();
        if (fill !== "#FFFFFF" && fill !== "NONE" && b.width > 0 && b.height > 0) barRects.push(b);
      });
      var left = Math.min.apply(null, barRects.map(function (b) { return b.left; }));
      var centres = [];
      barRects.forEach(function (b) {
        var c = (b.top + b.bottom) / 2;
        if (!centres.some(function (x) { return Math.abs(x - c) < 1; })) centres.push(c);
      });
      rows = centres.length;
      var labelled = {};
      svg.querySelectorAll("text").forEach(function (t) {
        var r = t.getBoundingClientRect();
        if (r.right > left || r.width === 0) return;
        labels++;
        var c = (r.top + r.bottom) / 2;
        var best = centres.map(function (x) { return Math.abs(x - c); });
        var d = Math.min.apply(null, best);
        if (d > 3) misaligned.push(t.textContent + " off by " + d.toFixed(1) + " px");
        else labelled[best.indexOf(d)] = true;
      });
      if (Object.keys(labelled).length !== rows) misaligned.push("rows without a label");
    }
    charts.push({ name: svg.getAttribute("class"), width: box.width, height: box.height, bars: bars, lines: lines,
                  clipped: clipped, misaligned: misaligned, rows: rows, labels: labels });
  });
  document.body.setAttribute("data-check", JSON.stringify({
    viewport: window.innerWidth, scroll_width: document.documentElement.scrollWidth,
    body_left: body.left, body_right: body.right, widest: widest, culprit: culprit,
    height: document.documentElement.scrollHeight, charts: charts
  }));
})();
</script>"##;

fn headless(chromium: &Path, profile: &Path, extra: &[String]) -> std::process::Output {
    let mut args = pdf::headless_args(profile);
    args.extend(extra.iter().cloned());
    let out = Command::new(chromium).args(&args).output().unwrap();
    assert!(
        out.status.success(),
        "chromium {extra:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn the_html_report_draws_its_charts_within_a4_and_the_pdf_has_its_pages() {
    let Some(chromium) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let config = dir.path().join("collector.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let cfg = config.to_str().unwrap();
    let srv = create_token(&data, "agent", Some("srv-1"));
    let gpu = create_token(&data, "agent", Some("gpu-1"));
    let read = create_token(&data, "read", None);
    let token_file = dir.path().join("read.token");
    std::fs::write(&token_file, &read).unwrap();
    let collector = Collector::spawn(&data, free_port(), &["--config", cfg]);

    // October 2025, Paris: 2025-09-30T22:00Z to 2025-10-31T23:00Z.
    let (from_s, to_s) = (1_759_269_600, 1_761_951_600);
    fill(
        &collector.base,
        &gpu,
        "gpu-1",
        1,
        from_s,
        to_s,
        &[
            ("assistant-citoyen", "gpu", "nvml", 450),
            ("traduction", "gpu", "nvml", 120),
            ("assistant-citoyen", "cpu", "rapl", 60),
        ],
    );
    fill(
        &collector.base,
        &srv,
        "srv-1",
        2,
        from_s,
        to_s,
        &[
            ("recherche-documentaire", "cpu", "estimate", 40),
            ("traduction", "dram", "estimate", 10),
        ],
    );
    // September for the change against the previous month.
    fill(
        &collector.base,
        &gpu,
        "gpu-1",
        3,
        from_s - 30 * 86_400,
        from_s,
        &[("assistant-citoyen", "gpu", "nvml", 400)],
    );

    // Wire v2: one minute of the citizen assistant's model, with its server's counts,
    // for the per-model section.
    let s = (from_s as u64 + 86_400) * 1000;
    push(
        &collector.base,
        &gpu,
        serde_json::json!({
            "version": 2,
            "agent": { "agent_id": "gpu-1", "hostname": "gpu-1", "agent_version": "test" },
            "spool": { "batches": 0, "bytes": 0, "oldest_start_unix_ms": null, "dropped_batches_total": 0 },
            "batches": [{
                "run_id": format!("{:032x}", 4), "seq": 1, "start_unix_ms": s, "end_unix_ms": s + 60_000,
                "records": [{ "project": "assistant-citoyen", "model": "mistral-small-24b", "component": "gpu",
                    "source": "nvml", "start_unix_ms": s, "end_unix_ms": s + 60_000, "energy_uj": 21_600_000_000u64 }],
                "counters": [],
                "inference": [{ "project": "assistant-citoyen", "model": "mistral-small-24b", "server": "vllm",
                    "start_unix_ms": s, "end_unix_ms": s + 60_000, "requests": 120, "input_tokens": 96_000,
                    "cached_input_tokens": 12_000, "output_tokens": 48_000, "gap_ms": 0, "resets": 0,
                    "allocated": false }],
            }],
        }),
    );

    // The HTML from the collector (English), the PDF from the data directory (French).
    let html_path = dir.path().join("report.html");
    run_ok(&[
        "report",
        "--collector",
        &collector.base,
        "--token-file",
        token_file.to_str().unwrap(),
        "--config",
        cfg,
        "--month",
        "2025-10",
        "--format",
        "html",
        "--lang",
        "en",
        "-o",
        html_path.to_str().unwrap(),
    ]);
    let html = std::fs::read_to_string(&html_path).unwrap();
    assert!(html.contains("<html lang=\"en\">") && html.contains("October 2025"));
    // The per-model section, with the figures of that minute: 21,600 J for 120 requests.
    assert!(
        html.contains("By inference model and functional unit")
            && html.contains("mistral-small-24b")
            && html.contains(">180<"),
        "no per-model section"
    );
    assert_eq!(
        html.matches("<figure class=\"chart\">").count(),
        4,
        "days, shares, objectives, trend"
    );
    // Self-contained: no script, no stylesheet or image to fetch (only SVG namespaces).
    let outside = html.replace("http://www.w3.org/", "");
    for fetch in ["<script", "<link", "<img", "http://", "https://"] {
        assert!(!outside.contains(fetch), "the page needs {fetch}");
    }

    let pdf_path = dir.path().join("report.pdf");
    run_ok(&[
        "report",
        "--data-dir",
        data.to_str().unwrap(),
        "--config",
        cfg,
        "--month",
        "2025-10",
        "--format",
        "pdf",
        "-o",
        pdf_path.to_str().unwrap(),
    ]);
    let pdf_bytes = std::fs::read(&pdf_path).unwrap();
    assert!(pdf_bytes.starts_with(b"%PDF-"), "not a PDF");
    let pages = pdf::page_count(&pdf_bytes);
    drop(collector);

    // The page at A4 width: a screenshot, and the measurements of the script.
    let probe = dir.path().join("probe.html");
    std::fs::write(
        &probe,
        html.replace("</body>", &format!("{CHECK_SCRIPT}</body>")),
    )
    .unwrap();
    let url = format!("file://{}", probe.display());
    let shot = dir.path().join("shot.png");
    headless(
        &chromium,
        &dir.path().join("p1"),
        &[
            format!("--window-size={A4_WIDTH_PX},1123"),
            format!("--screenshot={}", shot.display()),
            "--hide-scrollbars".into(),
            url.clone(),
        ],
    );
    let png = std::fs::read(&shot).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    assert_eq!(width, A4_WIDTH_PX, "the screenshot is A4 wide");
    assert!(
        png.len() > 20_000,
        "a blank screenshot is a few kB: {} bytes",
        png.len()
    );
    if let Ok(keep) = std::env::var("EMPREINTE_REPORT_ARTEFACTS") {
        std::fs::create_dir_all(&keep).unwrap();
        for (from, name) in [
            (&shot, "report.png"),
            (&pdf_path, "report.pdf"),
            (&html_path, "report.html"),
        ] {
            std::fs::copy(from, Path::new(&keep).join(name)).unwrap();
        }
    }
    let dom = headless(
        &chromium,
        &dir.path().join("p2"),
        &[
            format!("--window-size={A4_WIDTH_PX},1123"),
            "--dump-dom".into(),
            url,
        ],
    );
    let dom = String::from_utf8_lossy(&dom.stdout);
    let attr = dom
        .split("data-check=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_else(|| panic!("the script did not run: {:.500}", dom));
    let check: serde_json::Value =
        serde_json::from_str(&attr.replace("&quot;", "\"").replace("&amp;", "&")).unwrap();
    eprintln!("browser check: {check}; PDF pages: {pages}");

    // Nothing wider than the page's content box (182 mm = 688 px), nothing scrolls sideways.
    let f = |k: &str| check[k].as_f64().unwrap();
    assert!(f("scroll_width") <= f("viewport"), "{check}");
    assert!(f("body_right") - f("body_left") <= 688.5, "{check}");
    assert!(
        f("widest") <= f("body_right") + 0.5,
        "something overflows the page: {check}"
    );
    // Every chart drawn, with bars (and the trend its line).
    let charts = check["charts"].as_array().unwrap();
    assert_eq!(charts.len(), 4, "{check}");
    for c in charts {
        assert!(
            c["width"].as_f64().unwrap() > 300.0 && c["height"].as_f64().unwrap() > 80.0,
            "{c}"
        );
        assert!(
            c["bars"].as_u64().unwrap() >= 2,
            "a chart without bars: {c}"
        );
    }
    let days = charts.iter().find(|c| c["name"] == "chart-days").unwrap();
    assert!(
        days["bars"].as_u64().unwrap() >= 31 * 3,
        "31 days stacked by 3 projects or more: {days}"
    );
    let trend = charts.iter().find(|c| c["name"] == "chart-trend").unwrap();
    assert!(trend["lines"].as_u64().unwrap() >= 1, "{trend}");
    // No text cut off at a chart's edge ("160 %"), labels on their bars' rows.
    for c in charts {
        assert_eq!(c["clipped"], serde_json::json!([]), "clipped text: {c}");
    }
    let objectives = charts
        .iter()
        .find(|c| c["name"] == "chart-objectives")
        .unwrap();
    assert_eq!(
        objectives["rows"], 2,
        "two objectives, two rows: {objectives}"
    );
    assert_eq!(objectives["labels"], 2, "{objectives}");
    assert_eq!(
        objectives["misaligned"],
        serde_json::json!([]),
        "{objectives}"
    );

    // The PDF: A4 pages (595 × 842 pt)…
    let text = String::from_utf8_lossy(&pdf_bytes);
    let boxes: Vec<Vec<f64>> = text
        .split("/MediaBox [")
        .skip(1)
        .map(|s| {
            s.split(']')
                .next()
                .unwrap()
                .split_whitespace()
                .map(|v| v.parse().unwrap())
                .collect()
        })
        .collect();
    assert_eq!(boxes.len(), pages, "one MediaBox per page");
    for b in &boxes {
        assert!(
            (b[2] - 595.28).abs() < 1.0 && (b[3] - 841.89).abs() < 1.0,
            "not A4: {b:?}"
        );
    }
    // …as many as the page's height needs as the page's height needs, give or take the page breaks
    // that keep tables' rows and charts whole.
    let needed = (f("height") / CONTENT_HEIGHT_PX).ceil() as usize;
    assert!(
        (needed..=needed + 2).contains(&pages),
        "{pages} pages for a page {} px high ({needed} A4 pages of content)",
        f("height")
    );

    pdf_pages_read_as_a_person_would(&pdf_bytes, pages, dir.path());
    if poppler("pdftoppm") {
        report_pages::check_both_languages(&pdf_path, &data, cfg, dir.path());
        report_pages::year_pdf(&data, cfg, dir.path());
    }
}

/// A poppler tool (`pdftotext`, `pdftoppm`, Debian's poppler-utils): required in CI.
fn poppler(tool: &str) -> bool {
    let found = Command::new(tool).arg("-v").output().is_ok();
    if !found {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("CI=true and no {tool} (scripts/test installs poppler-utils)");
        }
        eprintln!("note: skipping the PDF page checks: no {tool} (poppler-utils)");
    }
    found
}

/// The PDF's pages as text and as PNG images: every page has its number ("Page 2 sur 5")
/// and, after the first, the running header; the first page carries the headline and the
/// banner; every page renders to a non-blank A4 image.
fn pdf_pages_read_as_a_person_would(pdf_bytes: &[u8], pages: usize, dir: &Path) {
    if !poppler("pdftotext") || !poppler("pdftoppm") {
        return;
    }
    let pdf_path = dir.join("pages.pdf");
    std::fs::write(&pdf_path, pdf_bytes).unwrap();
    for page in 1..=pages {
        let out = Command::new("pdftotext")
            .args(["-layout", "-f", &page.to_string(), "-l", &page.to_string()])
            .arg(&pdf_path)
            .arg("-")
            .output()
            .unwrap();
        assert!(out.status.success(), "pdftotext page {page}");
        let text = String::from_utf8_lossy(&out.stdout).replace('\u{202F}', " ");
        assert!(
            text.contains(&format!("Page {page} sur {pages}")),
            "page {page} has no number: {text:.2000}"
        );
        if page == 1 {
            let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
            assert!(
                flat.contains("En octobre 2025, les usages d'IA de Communauté d'agglomération de Test ont consommé"),
                "no headline on the first page: {flat:.2000}"
            );
            assert!(
                flat.contains("de ces chiffres sont estimés, voici pourquoi"),
                "no banner on the first page: {flat:.2000}"
            );
            assert!(flat.contains("km en voiture thermique"), "{flat:.2000}");
        } else {
            assert!(
                text.contains("Empreinte énergétique et carbone de l'IA — Communauté d'agglomération de Test — octobre 2025"),
                "no running header on page {page}: {text:.1000}"
            );
        }
    }
    let pngs = report_pages::render_pages(&pdf_path, dir, &["-png", "-r", "40"], "page", "png");
    assert_eq!(pngs.len(), pages, "one image per page");
    for png_path in &pngs {
        let png = std::fs::read(png_path).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        let w = u32::from_be_bytes(png[16..20].try_into().unwrap()) as f64;
        let h = u32::from_be_bytes(png[20..24].try_into().unwrap()) as f64;
        assert!((h / w - 297.0 / 210.0).abs() < 0.01, "not A4: {w} × {h}");
        // A blank 40 dpi page compresses to well under 2 kB.
        assert!(
            png.len() > 4_000,
            "{} looks blank ({} bytes)",
            png_path.display(),
            png.len()
        );
        if let Ok(keep) = std::env::var("EMPREINTE_REPORT_ARTEFACTS") {
            std::fs::create_dir_all(&keep).unwrap();
            std::fs::copy(
                png_path,
                Path::new(&keep).join(png_path.file_name().unwrap()),
            )
            .unwrap();
        }
    }
}
