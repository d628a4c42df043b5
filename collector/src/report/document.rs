//! The report as a document: one list of [`Block`]s, written once from the data, then
//! rendered as Markdown or as a self-contained HTML page (inline CSS and SVG charts,
//! A4 print rules) so that both say exactly the same thing.

use std::fmt::Write as _;

use jiff::tz::TimeZone;

use super::i18n::{Lang, Texts, month_name};
use super::{ReportData, sections, summary};

/// A piece of the document.
#[derive(Clone, Debug, PartialEq)]
pub enum Block {
    Title(String),
    Heading(String),
    Subheading(String),
    Para(String),
    /// A sentence that must not be missed (no data, month not over, estimated figures).
    Notice(String),
    /// The headline sentence, in large type.
    Lead(String),
    /// A note in small type (sources, definitions).
    Small(String),
    /// What follows starts a new page (HTML/PDF; a rule in Markdown).
    PageBreak,
    List(Vec<String>),
    /// `(label, value)` lines.
    Facts(Vec<(String, String)>),
    /// Header, rows; columns after the first are right-aligned.
    Table(Vec<String>, Vec<Vec<String>>),
    /// An SVG chart (HTML only) with its caption.
    Chart(String, String),
}

/// What every section reads: the data, the language and its words, the time zone.
pub struct Ctx<'a> {
    pub data: &'a ReportData,
    pub lang: Lang,
    pub t: &'static Texts,
    pub tz: TimeZone,
    /// Whether charts are drawn (HTML) or left out (Markdown).
    pub charts: bool,
}

/// A section adds its blocks to the document.
pub type Section = fn(&Ctx, &mut Vec<Block>);

/// The document's sections, in order: the first page for a reader in a hurry (headline,
/// banner, objectives at a glance, top uses), then the detail, explained. A new section
/// is one line here and a function in its own file.
pub const SECTIONS: &[Section] = &[
    summary::first_page,
    summary::for_readers,
    sections::perimeter,
    sections::totals,
    sections::projects,
    sections::objectives,
    sections::breakdowns,
    super::inference::section,
    super::register::section,
    sections::trend,
    sections::measured,
    sections::coefficients,
    super::history::section,
    sections::method,
];

/// The document of `data` in `lang`; charts are included when `with_charts` is true.
pub fn blocks(data: &ReportData, lang: Lang, with_charts: bool) -> Vec<Block> {
    let cx = Ctx {
        data,
        lang,
        t: lang.texts(),
        tz: TimeZone::get(&data.timezone).unwrap_or(TimeZone::UTC),
        charts: with_charts,
    };
    let mut b = Vec::new();
    for section in SECTIONS {
        section(&cx, &mut b);
    }
    b
}

/// Cells that stand where a figure would be.
const NO_FIGURE: &[&str] = &["pas de données", "no data", "n.d.", "n/a"];

/// Which columns hold figures (right-aligned): those whose every cell starts like one.
fn numeric_columns(head: &[String], rows: &[Vec<String>]) -> Vec<bool> {
    (0..head.len())
        .map(|i| {
            i > 0
                && !rows.is_empty()
                && rows.iter().all(|r| {
                    r.get(i)
                        .and_then(|c| c.chars().next())
                        .is_some_and(|c| c.is_ascii_digit() || "+−—".contains(c))
                        || r.get(i).is_some_and(|c| NO_FIGURE.contains(&c.as_str()))
                })
        })
        .collect()
}

fn md_cell(s: &str) -> String {
    md_text(s).replace('|', "\\|").replace('\n', " ")
}

/// Text for Markdown that a renderer shows as text: no HTML (`<img onerror>`), no
/// entity tricks, no links (`[x](javascript:…)`).
pub fn md_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '[' => out.push_str("\\["),
            ']' => out.push_str("\\]"),
            c => out.push(c),
        }
    }
    out
}

/// The report as Markdown (no charts).
pub fn markdown(data: &ReportData, lang: Lang) -> String {
    markdown_of(blocks(data, lang, false), lang)
}

/// Blocks as Markdown (charts left out).
pub fn markdown_of(blocks: Vec<Block>, lang: Lang) -> String {
    let mut out = String::new();
    for block in blocks {
        match block {
            Block::Title(s) => {
                let _ = writeln!(out, "# {}\n", md_text(&s));
            }
            Block::Heading(s) => {
                let _ = writeln!(out, "## {}\n", md_text(&s));
            }
            Block::Subheading(s) => {
                let _ = writeln!(out, "### {}\n", md_text(&s));
            }
            Block::Para(s) => {
                let _ = writeln!(out, "{}\n", md_text(&s));
            }
            Block::Notice(s) => {
                let _ = writeln!(out, "> **{}**\n", md_text(&s));
            }
            Block::Lead(s) => {
                let _ = writeln!(out, "**{}**\n", md_text(&s));
            }
            Block::Small(s) => {
                let _ = writeln!(out, "_{}_\n", md_text(&s));
            }
            Block::PageBreak => out.push_str("---\n\n"),
            Block::List(items) => {
                for i in items {
                    let _ = writeln!(out, "- {}", md_text(&i));
                }
                out.push('\n');
            }
            Block::Facts(facts) => {
                for (k, v) in facts {
                    let sep = if lang == Lang::Fr { "\u{202F}:" } else { ":" };
                    let _ = writeln!(out, "- **{}**{sep} {}", md_text(&k), md_text(&v));
                }
                out.push('\n');
            }
            Block::Table(head, rows) => {
                let _ = writeln!(
                    out,
                    "| {} |",
                    head.iter()
                        .map(|h| md_cell(h))
                        .collect::<Vec<_>>()
                        .join(" | ")
                );
                let _ = writeln!(
                    out,
                    "|{}|",
                    numeric_columns(&head, &rows)
                        .iter()
                        .map(|n| if *n { "---:" } else { "---" })
                        .collect::<Vec<_>>()
                        .join("|")
                );
                for r in rows {
                    let _ = writeln!(
                        out,
                        "| {} |",
                        r.iter().map(|c| md_cell(c)).collect::<Vec<_>>().join(" | ")
                    );
                }
                out.push('\n');
            }
            Block::Chart(..) => {}
        }
    }
    while out.ends_with("\n\n") {
        out.pop();
    }
    out
}

/// Escapes text for HTML.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The page's style: A4, print rules, nothing wider than the page.
pub const CSS: &str = r#"
@page { size: A4; margin: 15mm 14mm 16mm 14mm; }
* { box-sizing: border-box; }
html { font-family: "DejaVu Sans", "Liberation Sans", Arial, sans-serif; font-size: 10pt; color: #1d2327; }
body { margin: 0 auto; max-width: 182mm; padding: 0; line-height: 1.35; }
h1 { font-size: 17pt; margin: 0 0 8pt; color: #0b4f3c; }
h2 { font-size: 13pt; margin: 16pt 0 6pt; color: #0b4f3c; border-bottom: 1px solid #9cc5b4; break-after: avoid; }
h3 { font-size: 10.5pt; margin: 10pt 0 3pt; break-after: avoid; }
p, ul { margin: 0 0 6pt; }
.lead { font-size: 14pt; line-height: 1.35; margin: 10pt 0 10pt; color: #0b4f3c; }
.small { font-size: 8pt; color: #4b5563; }
.page-break { break-after: page; }
.notice { border-left: 4px solid #c2410c; background: #fff4ec; padding: 5pt 8pt; font-weight: bold; }
dl.facts { display: grid; grid-template-columns: 62mm 1fr; gap: 2pt 8pt; margin: 0 0 6pt; }
dl.facts dt { font-weight: bold; }
dl.facts dd { margin: 0; overflow-wrap: anywhere; }
table { border-collapse: collapse; width: 100%; margin: 0 0 8pt; table-layout: auto; font-size: 8.5pt; }
th, td { border-bottom: 1px solid #d5dfdb; padding: 2pt 4pt; text-align: left; vertical-align: top; overflow-wrap: break-word; hyphens: auto; }
th.num, td.num { text-align: right; white-space: nowrap; }
th { background: #e8f2ee; }
tr { break-inside: avoid; }
figure { margin: 6pt 0 10pt; break-inside: avoid; }
figure svg { display: block; width: 100%; height: auto; max-width: 100%; }
figcaption { font-size: 8.5pt; color: #4b5563; margin-top: 2pt; }
.legend { font-size: 8pt; margin: 2pt 0 0; padding: 0; list-style: none; display: flex; flex-wrap: wrap; gap: 2pt 10pt; }
.legend span { display: inline-block; width: 8pt; height: 8pt; margin-right: 3pt; vertical-align: middle; }
@media print { body { max-width: none; } a { color: inherit; } }
"#;

/// Text for a CSS string (`content: "…"`): no quote, backslash or `<` can end it or the
/// style element.
fn css_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\22 "),
            '\\' => out.push_str("\\5C "),
            '<' => out.push_str("\\3C "),
            '>' => out.push_str("\\3E "),
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The printed pages' running header (title, organisation, month; not on the first
/// page, which has them in large type) and footer (generation date, page N of M), as CSS
/// page-margin boxes that Chromium prints.
fn running_header_footer(page: &Page, lang: Lang) -> String {
    let t = lang.texts();
    let header = format!("{} — {} — {}", page.title, page.organisation, page.period);
    let generated = format!(
        "Empreinte — {} {}",
        t.generated.to_lowercase(),
        page.generated_at.get(..10).unwrap_or_default()
    );
    let (page, of) = match lang {
        Lang::Fr => ("Page ", " sur "),
        Lang::En => ("Page ", " of "),
    };
    let small = "font-family: \"DejaVu Sans\", \"Liberation Sans\", Arial, sans-serif; font-size: 7.5pt; color: #4b5563;";
    format!(
        "<style>\n@page {{\n  @top-left {{ content: {}; {small} }}\n  @bottom-left {{ content: {}; {small} }}\n  @bottom-right {{ content: {} counter(page) {} counter(pages); {small} }}\n}}\n@page :first {{ @top-left {{ content: none; }} }}\n</style>\n</head>\n<body>\n",
        css_string(&header),
        css_string(&generated),
        css_string(page),
        css_string(of),
    )
}

/// What the printed pages' header and footer say.
pub struct Page<'a> {
    pub title: &'a str,
    pub organisation: &'a str,
    /// The period in words: `octobre 2025`, `année 2025`.
    pub period: String,
    /// RFC 3339.
    pub generated_at: &'a str,
}

/// The report as one self-contained HTML page.
pub fn html(data: &ReportData, lang: Lang) -> String {
    let page = Page {
        title: lang.texts().title,
        organisation: &data.organisation,
        period: month_name(lang, &data.month),
        generated_at: &data.generated_at,
    };
    html_of(&page, blocks(data, lang, true), lang)
}

/// Blocks as one self-contained HTML page.
pub fn html_of(page: &Page, blocks: Vec<Block>, lang: Lang) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"{}\">\n<head>\n<meta charset=\"utf-8\">\n<title>{} — {} — {}</title>\n<style>{CSS}</style>\n",
        lang.code(),
        escape(page.title),
        escape(page.organisation),
        escape(&page.period)
    );
    out.push_str(&running_header_footer(page, lang));
    for block in blocks {
        match block {
            Block::Title(s) => {
                let _ = writeln!(out, "<h1>{}</h1>", escape(&s));
            }
            Block::Heading(s) => {
                let _ = writeln!(out, "<h2>{}</h2>", escape(&s));
            }
            Block::Subheading(s) => {
                let _ = writeln!(out, "<h3>{}</h3>", escape(&s));
            }
            Block::Para(s) => {
                let _ = writeln!(out, "<p>{}</p>", escape(&s));
            }
            Block::Notice(s) => {
                let _ = writeln!(out, "<p class=\"notice\">{}</p>", escape(&s));
            }
            Block::Lead(s) => {
                let _ = writeln!(out, "<p class=\"lead\">{}</p>", escape(&s));
            }
            Block::Small(s) => {
                let _ = writeln!(out, "<p class=\"small\">{}</p>", escape(&s));
            }
            Block::PageBreak => out.push_str("<div class=\"page-break\"></div>\n"),
            Block::List(items) => {
                out.push_str("<ul>\n");
                for i in items {
                    let _ = writeln!(out, "<li>{}</li>", escape(&i));
                }
                out.push_str("</ul>\n");
            }
            Block::Facts(facts) => {
                out.push_str("<dl class=\"facts\">\n");
                for (k, v) in facts {
                    let _ = writeln!(out, "<dt>{}</dt><dd>{}</dd>", escape(&k), escape(&v));
                }
                out.push_str("</dl>\n");
            }
            Block::Table(head, rows) => {
                let numeric = numeric_columns(&head, &rows);
                let class = |i: usize| {
                    if numeric.get(i).copied().unwrap_or(false) {
                        " class=\"num\""
                    } else {
                        ""
                    }
                };
                out.push_str("<table>\n<thead><tr>");
                for (i, h) in head.iter().enumerate() {
                    let _ = write!(out, "<th{}>{}</th>", class(i), escape(h));
                }
                out.push_str("</tr></thead>\n<tbody>\n");
                for r in rows {
                    out.push_str("<tr>");
                    for (i, c) in r.iter().enumerate() {
                        let _ = write!(out, "<td{}>{}</td>", class(i), escape(c));
                    }
                    out.push_str("</tr>\n");
                }
                out.push_str("</tbody>\n</table>\n");
            }
            Block::Chart(caption, svg) => {
                let _ = writeln!(
                    out,
                    "<figure class=\"chart\">{svg}<figcaption>{}</figcaption></figure>",
                    escape(&caption)
                );
            }
        }
    }
    out.push_str("</body>\n</html>\n");
    out
}
