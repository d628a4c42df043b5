#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Imports of grid intensity series from files in the real formats
//! (`tests/fixtures/carbon/`), checked against values computed by hand.

use std::path::PathBuf;

use empreinte_collector::carbon::eco2mix::parse_eco2mix;
use empreinte_collector::carbon::electricitymaps::parse_electricitymaps;
use empreinte_collector::carbon::{FactorKind, ImportError, IntensitySeries, parse_intensity};

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/carbon")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn eco2mix(bytes: &[u8]) -> Result<IntensitySeries, ImportError> {
    parse_eco2mix(bytes, &mut |_| {})
}

fn emaps(bytes: &[u8]) -> Result<IntensitySeries, ImportError> {
    parse_electricitymaps(bytes, &mut |_| {})
}

/// (start, duration, g/kWh) of every point.
fn triples(s: &IntensitySeries) -> Vec<(i64, u32, f64)> {
    s.points
        .iter()
        .map(|p| (p.start_unix_s, p.duration_s, p.g_per_kwh))
        .collect()
}

fn assert_close(got: f64, want: f64) {
    assert!((got - want).abs() < 1e-9, "got {got}, want {want}");
}

fn assert_sorted_without_overlap(s: &IntensitySeries) {
    for w in s.points.windows(2) {
        assert!(
            w[0].start_unix_s + i64::from(w[0].duration_s) <= w[1].start_unix_s,
            "{:?} overlaps {:?}",
            w[0],
            w[1]
        );
    }
}

// Instants computed by hand (and checked with `date -u -d @…`).
const ODRE_2024_10_26T23Z: i64 = 1_729_983_600;
const ODRE_2024_10_27T00Z: i64 = 1_729_987_200;
const ODRE_2024_10_27T01Z: i64 = 1_729_990_800;
const RTE_2025_10_25T22Z: i64 = 1_761_429_600;
const RTE_2025_10_26T00Z: i64 = 1_761_436_800;
const RTE_2025_10_26T01Z: i64 = 1_761_440_400;
const EM_2024_01_01T00Z: i64 = 1_704_067_200;
const EM_2025_03_10T08Z: i64 = 1_741_593_600;
const H: i64 = 3600;
const Q: i64 = 900;

#[test]
fn odre_csv_across_the_autumn_change_is_continuous_in_utc() {
    // Local 01:00+02:00 … 03:30+01:00 on 2024-10-27, newest first, 15-minute steps;
    // 02:45+02:00 is absent and 02:15+01:00 is zero.
    let s = eco2mix(&fixture("eco2mix_odre_2024-10-27.csv")).unwrap();
    assert_eq!(
        (s.zone.as_str(), s.kind, s.step_s),
        ("FR", FactorKind::Direct, 900)
    );
    let t0 = ODRE_2024_10_26T23Z;
    let want: Vec<(i64, u32, f64)> = [
        (0, 18.0),
        (1, 18.0),
        (2, 19.0),
        (3, 19.0),
        (4, 20.0), // 02:00+02:00
        (5, 22.0),
        (6, 24.0), // 02:30+02:00; 02:45+02:00 missing
        (8, 30.0), // 02:00+01:00; 02:15+01:00 is zero
        (10, 32.0),
        (11, 34.0),
        (12, 21.0), // 03:00+01:00
        (13, 21.0),
        (14, 20.0),
    ]
    .iter()
    .map(|&(i, g)| (t0 + i * Q, 900, g))
    .collect();
    assert_eq!(triples(&s), want);
    assert_eq!(s.points[4].start_unix_s, ODRE_2024_10_27T00Z);
    assert_eq!(s.points[7].start_unix_s, ODRE_2024_10_27T01Z);
    let r = &s.report;
    assert_eq!(
        (
            r.rows_read,
            r.points,
            r.zeros_skipped,
            r.gaps,
            r.duplicates_resolved
        ),
        (14, 13, 1, 2, 0)
    );
    assert_eq!((r.skipped_total, r.skipped.len()), (0, 0));
    assert_sorted_without_overlap(&s);

    // The two UTC hours behind the repeated local 02:00–02:59, each missing a quarter.
    let (mean, covered) = s
        .mean_over(ODRE_2024_10_27T00Z, ODRE_2024_10_27T00Z + H)
        .unwrap();
    assert_close(mean, (20.0 + 22.0 + 24.0) / 3.0);
    assert_close(covered, 0.75);
    let (mean, covered) = s
        .mean_over(ODRE_2024_10_27T01Z, ODRE_2024_10_27T01Z + H)
        .unwrap();
    assert_close(mean, (30.0 + 32.0 + 34.0) / 3.0);
    assert_close(covered, 0.75);
    let (mean, covered) = s.mean_over(t0, t0 + H).unwrap();
    assert_close(mean, (18.0 + 18.0 + 19.0 + 19.0) / 4.0);
    assert_close(covered, 1.0);
}

#[test]
fn classic_rte_download_places_the_repeated_hour_by_order_of_appearance() {
    // Latin-1, tab separated, local time without offsets, rows every 15 minutes with
    // `Taux de Co2` at :00 and :30 only; 02:00–02:45 appears twice; a disclaimer ends it.
    let bytes = fixture("eCO2mix_RTE_2025-10-26.xls");
    assert!(
        std::str::from_utf8(&bytes).is_err(),
        "the fixture must be Latin-1"
    );
    let s = eco2mix(&bytes).unwrap();
    assert_eq!(
        (s.zone.as_str(), s.kind, s.step_s),
        ("FR", FactorKind::Direct, 1800)
    );
    // Local 00:00+02:00 is 22:00Z the day before; every half hour from there to
    // 04:00+01:00 (03:00Z), no hole and no overlap.
    let values = [
        24.0, 24.0, 25.0, 26.0, 30.0, 32.0, 26.0, 28.0, 22.0, 21.0, 20.0,
    ];
    let want: Vec<(i64, u32, f64)> = values
        .iter()
        .enumerate()
        .map(|(i, &g)| (RTE_2025_10_25T22Z + i as i64 * 1800, 1800, g))
        .collect();
    assert_eq!(triples(&s), want);
    let r = &s.report;
    assert_eq!(r.rows_read, 22);
    assert_eq!(r.zeros_skipped, 10, "quarter-hour rows have no Taux de Co2");
    assert_eq!(r.dst_repeats_resolved, 4);
    assert_eq!((r.gaps, r.duplicates_resolved), (0, 0));
    assert_eq!(r.skipped_total, 1);
    assert!(
        r.skipped[0]
            .1
            .starts_with("not a data row: \"RTE ne saurait"),
        "{:?}",
        r.skipped
    );
    assert_eq!(r.skipped[0].0, 23);

    // First 02:00–02:59 (summer time) is 00:00Z, the second (winter time) 01:00Z.
    let (mean, covered) = s
        .mean_over(RTE_2025_10_26T00Z, RTE_2025_10_26T00Z + H)
        .unwrap();
    assert_close(mean, (30.0 + 32.0) / 2.0);
    assert_close(covered, 1.0);
    let (mean, covered) = s
        .mean_over(RTE_2025_10_26T01Z, RTE_2025_10_26T01Z + H)
        .unwrap();
    assert_close(mean, (26.0 + 28.0) / 2.0);
    assert_close(covered, 1.0);
}

#[test]
fn classic_download_with_crlf_line_ends_reads_the_same() {
    let bytes = fixture("eCO2mix_RTE_2025-10-26.xls");
    let mut crlf = Vec::new();
    for &b in &bytes {
        if b == b'\n' {
            crlf.push(b'\r');
        }
        crlf.push(b);
    }
    assert_eq!(
        triples(&eco2mix(&crlf).unwrap()),
        triples(&eco2mix(&bytes).unwrap())
    );
}

#[test]
fn the_spring_hour_that_does_not_exist_is_skipped_and_time_stays_continuous() {
    // 2025-03-30: 02:00 local does not exist; 01:30+01:00 is 00:30Z, 03:00+02:00 is 01:00Z.
    let text = "Périmètre\tNature\tDate\tHeures\tTaux de Co2\n\
                France\tDonnées temps réel\t2025-03-30\t01:30\t30\n\
                France\tDonnées temps réel\t2025-03-30\t02:00\t31\n\
                France\tDonnées temps réel\t2025-03-30\t03:00\t32\n\
                France\tDonnées temps réel\t2025-03-30\t03:30\t33\n";
    let s = eco2mix(text.as_bytes()).unwrap();
    let at_0030z = 1_743_294_600;
    assert_eq!(
        triples(&s),
        vec![
            (at_0030z, 1800, 30.0),
            (at_0030z + 1800, 1800, 32.0),
            (at_0030z + 3600, 1800, 33.0),
        ]
    );
    assert_eq!(s.report.skipped.len(), 1);
    assert_eq!(s.report.skipped[0].0, 3);
    assert!(
        s.report.skipped[0].1.contains("does not exist"),
        "{:?}",
        s.report.skipped
    );
}

#[test]
fn odre_labels_and_local_columns_work_without_date_heure() {
    // Export with labels instead of field names, no `Date - Heure`, decimal commas.
    let text = "Périmètre;Nature;Date;Heure;Taux de CO2 (g/kWh)\n\
                France;Données consolidées;27/10/2024;01:30;19,5\n\
                France;Données consolidées;27/10/2024;02:00;20\n\
                France;Données consolidées;27/10/2024;02:30;21\n\
                France;Données consolidées;27/10/2024;02:00;22\n\
                France;Données consolidées;27/10/2024;02:30;23\n\
                France;Données consolidées;27/10/2024;03:00;24\n";
    let s = eco2mix(text.as_bytes()).unwrap();
    assert_eq!(s.step_s, 1800);
    let got: Vec<f64> = s.points.iter().map(|p| p.g_per_kwh).collect();
    assert_eq!(got, vec![19.5, 20.0, 21.0, 22.0, 23.0, 24.0]);
    assert_eq!(s.points[1].start_unix_s, ODRE_2024_10_27T00Z);
    assert_eq!(s.points[3].start_unix_s, ODRE_2024_10_27T01Z);
    assert_eq!(s.report.dst_repeats_resolved, 2);
    assert_sorted_without_overlap(&s);
}

#[test]
fn exact_duplicates_keep_the_first_and_bad_rows_are_listed_with_their_line() {
    let text = "date_heure;taux_co2\n\
                2024-06-01T12:00:00+02:00;30\n\
                2024-06-01T12:00:00+02:00;99\n\
                2024-06-01T12:15:00+02:00;abc\n\
                2024-06-01T12:30:00+02:00;-4\n\
                2024-06-01T12:45:00+02:00;2500\n\
                2024-06-01T13:00:00+02:00;\n\
                2024-06-01T13:15:00+02:00;0\n\
                2024-06-01T13:30:00+02:00;35\n";
    let s = eco2mix(text.as_bytes()).unwrap();
    let r = &s.report;
    assert_eq!(s.points.len(), 2);
    assert_eq!(s.points[0].g_per_kwh, 30.0);
    assert_eq!(
        (r.duplicates_resolved, r.zeros_skipped, r.skipped_total),
        (1, 2, 3)
    );
    let lines: Vec<u64> = r.skipped.iter().map(|(l, _)| *l).collect();
    assert_eq!(lines, vec![4, 5, 6]);
    assert!(r.skipped[0].1.contains("not a number: \"abc\""));
    assert!(r.skipped[1].1.contains("negative"));
    assert!(r.skipped[2].1.contains("2500 g/kWh is above 2000"));
    // No two points a step apart: the shortest eCO2mix step; 12:15 to 13:15 are holes.
    assert_eq!((s.step_s, r.gaps), (900, 5));
    assert_eq!(s.points[0].duration_s, 900);
}

#[test]
fn the_skipped_list_is_capped_but_counted() {
    let mut text = String::from("date_heure;taux_co2\n2024-06-01T12:00:00+02:00;30\n");
    for _ in 0..120 {
        text.push_str("2024-06-01T12:15:00+02:00;n/a\n");
    }
    let s = eco2mix(text.as_bytes()).unwrap();
    assert_eq!(s.report.skipped.len(), 50);
    assert_eq!(s.report.skipped_total, 120);
    assert_eq!(s.report.rows_read, 121);
}

#[test]
fn electricitymaps_csv_prefers_the_lifecycle_column() {
    let s = emaps(&fixture("electricitymaps_FR_2024-01-01.csv")).unwrap();
    assert_eq!(
        (s.zone.as_str(), s.kind, s.step_s),
        ("FR", FactorKind::Lifecycle, 3600)
    );
    let want: Vec<(i64, u32, f64)> = [
        (0, 35.0),
        (1, 34.0),
        (2, 36.5),
        (4, 40.0),
        (5, 42.5),
        (6, 44.0),
    ]
    .iter()
    .map(|&(h, g)| (EM_2024_01_01T00Z + h * H, 3600, g))
    .collect();
    assert_eq!(triples(&s), want);
    assert_eq!((s.report.gaps, s.report.rows_read), (1, 6));
    // 02:30–04:30: half an hour at 36.5, a missing hour, half an hour at 40.
    let (mean, covered) = s
        .mean_over(
            EM_2024_01_01T00Z + 2 * H + 1800,
            EM_2024_01_01T00Z + 4 * H + 1800,
        )
        .unwrap();
    assert_close(mean, (36.5 + 40.0) / 2.0);
    assert_close(covered, 0.5);
}

#[test]
fn electricitymaps_csv_without_lca_values_falls_back_to_direct() {
    let text = "Datetime (UTC),Country,Zone Name,Zone Id,Carbon Intensity gCO₂eq/kWh (direct),Carbon Intensity gCO₂eq/kWh (LCA)\n\
                2024-01-01 00:00:00,France,France,FR,18.2,\n\
                2024-01-01 01:00:00,France,France,FR,17.9,\n";
    let s = emaps(text.as_bytes()).unwrap();
    assert_eq!(s.kind, FactorKind::Direct);
    assert_eq!(
        triples(&s),
        vec![
            (EM_2024_01_01T00Z, 3600, 18.2),
            (EM_2024_01_01T00Z + H, 3600, 17.9)
        ]
    );
}

#[test]
fn electricitymaps_api_json() {
    let s = emaps(&fixture("electricitymaps_DE_history.json")).unwrap();
    assert_eq!(
        (s.zone.as_str(), s.kind, s.step_s),
        ("DE", FactorKind::Lifecycle, 3600)
    );
    let t = EM_2025_03_10T08Z;
    assert_eq!(
        triples(&s),
        vec![
            (t, 3600, 402.0),
            (t + H, 3600, 388.0),
            (t + 3 * H, 3600, 351.0),
            (t + 4 * H, 3600, 340.0)
        ]
    );
    assert_eq!((s.report.zeros_skipped, s.report.gaps), (1, 1));
    let (mean, covered) = s.mean_over(t, t + 2 * H).unwrap();
    assert_close(mean, (402.0 + 388.0) / 2.0);
    assert_close(covered, 1.0);
}

#[test]
fn detection_by_content_picks_the_right_parser() {
    for (name, zone, source) in [
        (
            "eco2mix_odre_2024-10-27.csv",
            "FR",
            "RTE eCO2mix, ODRÉ export (taux_co2)",
        ),
        (
            "eCO2mix_RTE_2025-10-26.xls",
            "FR",
            "RTE eCO2mix, download (Taux de Co2)",
        ),
        (
            "electricitymaps_FR_2024-01-01.csv",
            "FR",
            "Electricity Maps, history export (CSV)",
        ),
        (
            "electricitymaps_DE_history.json",
            "DE",
            "Electricity Maps API, carbon-intensity history",
        ),
    ] {
        let bytes = fixture(name);
        let s = parse_intensity(bytes.as_slice(), &mut |_| {}).unwrap();
        assert_eq!(
            (s.zone.as_str(), s.source.as_str()),
            (zone, source),
            "{name}"
        );
    }
}

#[test]
fn detection_names_both_formats_when_neither_fits() {
    let e = parse_intensity(b"when,value\n2024,3\n".as_slice(), &mut |_| {}).unwrap_err();
    assert_eq!(
        e.to_string(),
        "not a supported intensity export (RTE eCO2mix or Electricity Maps): \
         the first line is neither `;` nor tab separated: \"when,value\""
    );
}

/// A reader that hands out a few bytes at a time, as a slow file would.
struct Trickle<'a>(&'a [u8]);

impl std::io::Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.0.len().min(buf.len()).min(100);
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

#[test]
fn progress_reports_bytes_read_up_to_the_whole_file() {
    let bytes = fixture("eco2mix_odre_2024-10-27.csv");
    let mut seen = Vec::new();
    parse_eco2mix(Trickle(&bytes), &mut |n| seen.push(n)).unwrap();
    assert!(seen.len() > 10, "{seen:?}");
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(seen.last().copied(), Some(bytes.len() as u64));
}

#[test]
fn malformed_inputs_give_clear_errors() {
    type Parser = fn(&[u8]) -> Result<IntensitySeries, ImportError>;
    let cases: &[(&str, Parser, &[u8], &str)] = &[
        ("empty", eco2mix, b"", "the file is empty"),
        ("blank", emaps, b"  \n\n", "the file is empty"),
        (
            "no taux_co2",
            eco2mix,
            b"perimetre;nature;date;heure;date_heure;consommation\nFrance;x;2024-01-01;00:00;2024-01-01T00:00:00+01:00;50000\n",
            "line 1: column `taux_co2` not found; the header has: perimetre, nature, date, heure, date_heure, consommation",
        ),
        (
            "Electricity Maps given to eCO2mix",
            eco2mix,
            b"Datetime (UTC),Country,Zone Id\n2024-01-01 00:00:00,France,FR\n",
            "not an eCO2mix export (RTE download or ODRÉ CSV): the first line is neither `;` nor tab separated: \"Datetime (UTC),Country,Zone Id\"",
        ),
        (
            "unrelated ; file",
            eco2mix,
            b"a;b\n1;2\n",
            "not an eCO2mix export (RTE download or ODRÉ CSV): line 1 has neither `taux_co2` nor a date column; it has: a, b",
        ),
        (
            "taux but no date",
            eco2mix,
            b"taux_co2;x\n3;4\n",
            "line 1: column `date_heure (or date and heure)` not found",
        ),
        (
            "every value bad",
            eco2mix,
            b"date_heure;taux_co2\n2024-01-01T00:00:00+01:00;abc\n2024-01-01T00:15:00+01:00;-5\nhier;30\n",
            "no usable intensity in 3 row(s); first problems: line 2: `taux_co2` is not a number: \"abc\"; line 3: `taux_co2` is negative or not finite: -5; line 4: `date_heure` is not an ISO 8601 date and time: \"hier\"",
        ),
        ("binary", eco2mix, &[0x00, 0xff, 0x10, 0x80, 0x0a, 0x01], "not an eCO2mix export"),
        (
            "no Zone Id",
            emaps,
            b"Datetime (UTC),Country,Carbon Intensity gCO\xe2\x82\x82eq/kWh (LCA)\n2024-01-01 00:00:00,France,35\n",
            "line 1: column `Zone Id` not found; the header has: Datetime (UTC), Country, Carbon Intensity",
        ),
        (
            "no intensity column",
            emaps,
            b"Datetime (UTC),Zone Id\n2024-01-01 00:00:00,FR\n",
            "line 1: column `Carbon Intensity gCO₂eq/kWh (LCA)` not found",
        ),
        (
            "two zones",
            emaps,
            b"Datetime (UTC),Zone Id,Carbon Intensity gCO\xe2\x82\x82eq/kWh (LCA)\n2024-01-01 00:00:00,FR,35\n2024-01-01 01:00:00,DE,380\n",
            "line 3: zone `DE` differs from `FR` on line 2; import one zone per file",
        ),
        ("truncated JSON", emaps, b"{\"zone\": \"FR\", \"history\": [", "line 1, column 27: not valid JSON"),
        (
            "JSON without history",
            emaps,
            b"{\"zone\": \"FR\", \"rows\": []}",
            "not an Electricity Maps export (history CSV or API JSON): the JSON object has no `history` list; its keys are: rows, zone",
        ),
        (
            "JSON with text intensities",
            emaps,
            b"{\"zone\": \"FR\", \"history\": [{\"datetime\": \"2024-01-01T00:00:00.000Z\", \"carbonIntensity\": \"35\"}]}",
            "no usable intensity in 1 row(s); first problems: line 1: `carbonIntensity` is not a number: \"35\"",
        ),
        (
            "CSV that is not Electricity Maps",
            emaps,
            b"when,value\n2024,3\n",
            "not an Electricity Maps export (history CSV or API JSON): line 1 has no `Datetime (UTC)` column; it has: when, value",
        ),
    ];
    for (name, parse, input, expected) in cases {
        match parse(input) {
            Ok(s) => panic!("{name}: parsed {} points", s.points.len()),
            Err(e) => {
                let message = e.to_string();
                assert!(
                    message.starts_with(expected),
                    "{name}:\n  got      {message}\n  expected {expected}"
                );
            }
        }
    }
}
