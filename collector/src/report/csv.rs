//! The report's rows as CSV: one line per stored hour, host, project, component and
//! source, with the coefficients that made its emissions. Adding a column gives the
//! report's total exactly (integers: µJ and µg).
//!
//! Two dialects: the international one (`,` between fields, `.` in decimals: what
//! programs and English spreadsheets read) and the French one (`;` between fields, `,` in
//! decimals: what a French spreadsheet opens without an import dialog). The columns and
//! their names are the same in both.

use super::{Lang, ReportData, ReportError};

/// A decimal number in the dialect of `lang`.
fn decimal(lang: Lang, text: String) -> String {
    match lang {
        Lang::Fr => text.replace('.', ","),
        Lang::En => text,
    }
}

/// The header, in the order of the columns.
pub const COLUMNS: &[&str] = &[
    "hour_utc",
    "local_day",
    "host",
    "site",
    "zone",
    "project",
    "component",
    "source",
    "measured",
    "energy_uj",
    "pue",
    "facility_energy_uj",
    "intensity_g_per_kwh",
    "intensity_from",
    "location_co2e_ug",
    "market_g_per_kwh",
    "market_co2e_ug",
    "embodied_co2e_ug",
    "pue_coefficient",
    "market_coefficient",
    "embodied_coefficient",
    "energy_uncertainty_pct",
    "location_co2e_uncertainty_pct",
    "market_co2e_uncertainty_pct",
    "embodied_co2e_uncertainty_pct",
];

/// A text cell a spreadsheet will not run: one starting with `=`, `+`, `-`, `@`, a tab
/// or a carriage return gets a leading `'` (the OWASP rule against CSV injection).
pub fn text_cell(s: &str) -> String {
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_string()
    }
}

/// The rows of `data` as CSV in the dialect of `lang` (French: `;` and decimal commas).
pub fn render(data: &ReportData, lang: Lang) -> Result<String, ReportError> {
    let delimiter = match lang {
        Lang::Fr => b';',
        Lang::En => b',',
    };
    let mut w = csv::WriterBuilder::new()
        .delimiter(delimiter)
        .from_writer(Vec::new());
    let d = |v: String| decimal(lang, v);
    let err = |e: csv::Error| ReportError::Render(format!("cannot write the CSV: {e}"));
    w.write_record(COLUMNS).map_err(err)?;
    let opt = |v: Option<i64>| v.map(|x| x.to_string()).unwrap_or_default();
    for r in &data.rows {
        let pct = crate::uncertainty::row_pct(r, &data.coefficients, &data.coefficient_pcts);
        w.write_record([
            text_cell(&r.hour),
            text_cell(&r.day),
            text_cell(&r.host),
            text_cell(&r.site),
            text_cell(&r.zone),
            text_cell(&r.project),
            text_cell(&r.component),
            text_cell(&r.source),
            r.measured.to_string(),
            r.energy_uj.to_string(),
            d(r.pue.to_string()),
            r.facility_energy_uj.to_string(),
            d(r.intensity_g_per_kwh.to_string()),
            text_cell(&r.intensity_from),
            r.location_co2e_ug.to_string(),
            r.market_g_per_kwh
                .map(|v| d(v.to_string()))
                .unwrap_or_default(),
            r.market_co2e_ug.to_string(),
            r.embodied_co2e_ug.to_string(),
            r.pue_coef.to_string(),
            opt(r.market_coef),
            opt(r.embodied_coef),
            d(format!("{:.1}", pct.energy)),
            d(format!("{:.1}", pct.location)),
            d(format!("{:.1}", pct.market)),
            d(format!("{:.1}", pct.embodied)),
        ])
        .map_err(err)?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| ReportError::Render(format!("cannot write the CSV: {e}")))?;
    String::from_utf8(bytes).map_err(|e| ReportError::Render(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::text_cell;

    #[test]
    fn formulas_are_neutralised_and_plain_text_kept() {
        for (given, want) in [
            (
                "=HYPERLINK(\"http://x\",\"y\")",
                "'=HYPERLINK(\"http://x\",\"y\")",
            ),
            ("+1+2", "'+1+2"),
            ("-2+3", "'-2+3"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\tcmd", "'\tcmd"),
            ("\rcmd", "'\rcmd"),
            ("chat-bot", "chat-bot"),
            ("a=b", "a=b"),
            ("", ""),
        ] {
            assert_eq!(text_cell(given), want, "{given:?}");
        }
    }
}
