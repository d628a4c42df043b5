//! The printed report's pages against golden images: each PDF page rendered in grey at
//! 20 dpi (`pdftoppm -gray`, a PGM a test reads without an image library), averaged in
//! 5 × 5 pixel cells and kept as one hexadecimal digit of darkness per cell
//! (`tests/golden/*.pages.txt`, one line per page). A page is like its golden when the
//! mean difference of its cells is small: what moves a chart, a table or a block of text
//! fails; font hinting and the generation date in the footer do not.
//! `UPDATE_EXPECT=1` rewrites the golden file (then look at the PNG pages it was made
//! from: `EMPREINTE_REPORT_ARTEFACTS=DIR` keeps them).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{output_ok, run_ok};

/// Mean difference of a page's cells, in sixteenths of full darkness, above which the
/// page is not its golden. Measured on this fixture: the same page printed twice, 0.000;
/// the French page against the English one, 0.04 to 0.59; a page against itself moved
/// down by 6 mm, 0.43 to 0.86.
pub const MAX_MEAN_DIFFERENCE: f64 = 0.2;

/// The thumbnails of every page of `pdf`: `(width, height, cells)` per page.
pub fn thumbnails(pdf: &Path, dir: &Path) -> Vec<(usize, usize, Vec<u8>)> {
    let files = render_pages(pdf, dir, &["-gray", "-r", "20"], "grey", "pgm");
    files
        .iter()
        .map(|f| cells(&std::fs::read(f).unwrap()))
        .collect()
}

/// Renders every page of `pdf` with `pdftoppm OPTIONS` into `dir` as `NAME-N.EXTENSION`;
/// gives their paths in page order.
pub fn render_pages(
    pdf: &Path,
    dir: &Path,
    options: &[&str],
    name: &str,
    extension: &str,
) -> Vec<PathBuf> {
    output_ok(
        Command::new("pdftoppm")
            .args(options)
            .arg(pdf)
            .arg(dir.join(name)),
    );
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with(&format!("{name}-")) && n.ends_with(&format!(".{extension}"))
            })
        })
        .collect();
    files.sort();
    files
}

/// A binary PGM (P5, 8 bits) in 5 × 5 cells, 0 (white) to 15 (black).
fn cells(pgm: &[u8]) -> (usize, usize, Vec<u8>) {
    let mut fields = Vec::new();
    let mut i = 0;
    while fields.len() < 4 {
        while pgm[i].is_ascii_whitespace() {
            i += 1;
        }
        let start = i;
        while !pgm[i].is_ascii_whitespace() {
            i += 1;
        }
        fields.push(String::from_utf8_lossy(&pgm[start..i]).into_owned());
    }
    assert_eq!(fields[0], "P5", "not a binary PGM");
    let (w, h): (usize, usize) = (fields[1].parse().unwrap(), fields[2].parse().unwrap());
    let px = &pgm[i + 1..];
    assert_eq!(px.len(), w * h, "a PGM of {w} × {h}");
    let (cw, ch) = (w / 5, h / 5);
    let mut out = Vec::with_capacity(cw * ch);
    for cy in 0..ch {
        for cx in 0..cw {
            let mut sum = 0u32;
            for y in 0..5 {
                for x in 0..5 {
                    sum += u32::from(255 - px[(cy * 5 + y) * w + cx * 5 + x]);
                }
            }
            out.push(((sum / 25) / 16) as u8);
        }
    }
    (cw, ch, out)
}

fn line(t: &(usize, usize, Vec<u8>)) -> String {
    let hex: String = t.2.iter().map(|v| format!("{v:x}")).collect();
    format!("{} {} {hex}", t.0, t.1)
}

/// Compares the pages of `pdf` with `golden` (or rewrites it under `UPDATE_EXPECT`);
/// gives each page's mean difference.
pub fn check(pdf: &Path, golden: &Path, dir: &Path) -> Vec<f64> {
    let pages = thumbnails(pdf, dir);
    let text: String = pages.iter().map(|p| line(p) + "\n").collect();
    if std::env::var_os("UPDATE_EXPECT").is_some() {
        std::fs::write(golden, &text).unwrap();
        return vec![0.0; pages.len()];
    }
    let want = std::fs::read_to_string(golden)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_EXPECT=1 writes it)", golden.display()));
    let want: Vec<&str> = want.lines().collect();
    assert_eq!(
        want.len(),
        pages.len(),
        "{}: {} pages printed, {} in the golden file",
        golden.display(),
        pages.len(),
        want.len()
    );
    let mut diffs = Vec::new();
    for (n, (got, want)) in pages.iter().zip(&want).enumerate() {
        let mut parts = want.split(' ');
        let (w, h) = (
            parts.next().unwrap().parse::<usize>().unwrap(),
            parts.next().unwrap().parse::<usize>().unwrap(),
        );
        assert_eq!((w, h), (got.0, got.1), "page {}: size", n + 1);
        let cells: Vec<u8> = parts
            .next()
            .unwrap()
            .chars()
            .map(|c| c.to_digit(16).unwrap() as u8)
            .collect();
        let diff = got
            .2
            .iter()
            .zip(&cells)
            .map(|(a, b)| f64::from(a.abs_diff(*b)))
            .sum::<f64>()
            / cells.len() as f64;
        eprintln!("{}: page {} differs by {diff:.3}", golden.display(), n + 1);
        assert!(
            diff <= MAX_MEAN_DIFFERENCE,
            "{}: page {} is not its golden (mean difference {diff:.2} > {MAX_MEAN_DIFFERENCE}; UPDATE_EXPECT=1 rewrites it after a wanted change)",
            golden.display(),
            n + 1
        );
        diffs.push(diff);
    }
    diffs
}

/// The French PDF already printed (`fr_pdf`) and the English one printed here from the
/// same data directory, each against its golden pages.
pub fn check_both_languages(fr_pdf: &Path, data: &Path, config: &str, dir: &Path) {
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let en_pdf = dir.join("report.en.pdf");
    run_ok(&[
        "report",
        "--data-dir",
        data.to_str().unwrap(),
        "--config",
        config,
        "--month",
        "2025-10",
        "--format",
        "pdf",
        "--lang",
        "en",
        "-o",
        en_pdf.to_str().unwrap(),
    ]);
    for (lang, pdf) in [("fr", fr_pdf), ("en", en_pdf.as_path())] {
        let sub = dir.join(format!("grey-{lang}"));
        std::fs::create_dir_all(&sub).unwrap();
        check(
            pdf,
            &golden.join(format!("report-2025-10.{lang}.pages.txt")),
            &sub,
        );
    }
}

/// The yearly statement printed as PDF from the same data directory: A4 pages, numbered,
/// with the BEGES table and the paragraph to paste.
pub fn year_pdf(data: &Path, config: &str, dir: &Path) {
    let pdf = dir.join("year.pdf");
    run_ok(&[
        "report",
        "--data-dir",
        data.to_str().unwrap(),
        "--config",
        config,
        "--year",
        "2025",
        "--format",
        "pdf",
        "-o",
        pdf.to_str().unwrap(),
    ]);
    let out = Command::new("pdftotext")
        .args(["-layout"])
        .arg(&pdf)
        .arg("-")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).replace('\u{202F}', " ");
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    for want in [
        "Bilan annuel de l'IA — 2025",
        "Bilan GES (méthode ADEME)",
        "Texte pour le rapport de développement durable",
        "Page 1 sur",
    ] {
        assert!(
            flat.contains(want),
            "the yearly PDF lacks {want:?}: {flat:.3000}"
        );
    }
    let pages = thumbnails(&pdf, &{
        let d = dir.join("grey-year");
        std::fs::create_dir_all(&d).unwrap();
        d
    });
    assert!(!pages.is_empty());
    for (w, h, cells) in &pages {
        assert!(
            ((*h as f64) / (*w as f64) - 297.0 / 210.0).abs() < 0.03,
            "not A4: {w} × {h}"
        );
        assert!(cells.iter().any(|&c| c > 2), "a blank page");
    }
}
