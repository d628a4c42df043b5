//! The report's first page, for a reader in a hurry (an elected official): the title, the
//! headline sentence, the banner when a share of the figures is estimated, the change
//! against the previous month and the same month a year before, the objectives at a
//! glance and the top uses.

use jiff::tz::TimeZone;

use super::document::{Block, Ctx};
use super::i18n::month_name;

fn local_time(tz: &TimeZone, s: i64) -> String {
    match jiff::Timestamp::from_second(s) {
        Ok(t) => t
            .to_zoned(tz.clone())
            .strftime("%Y-%m-%d %H:%M")
            .to_string(),
        Err(_) => String::new(),
    }
}

fn parse_s(instant: &str) -> i64 {
    instant
        .parse::<jiff::Timestamp>()
        .map(|t| t.as_second())
        .unwrap_or_default()
}

fn local_date(tz: &TimeZone, s: i64) -> String {
    jiff::Timestamp::from_second(s)
        .map(|ts| ts.to_zoned(tz.clone()).date().to_string())
        .unwrap_or_default()
}

/// The title, what the report covers and the notices that must not be missed.
pub fn first_page(cx: &Ctx, b: &mut Vec<Block>) {
    let (lang, t, data, tz) = (cx.lang, cx.t, cx.data, &cx.tz);
    b.push(Block::Title(format!(
        "{} — {}",
        t.title,
        month_name(lang, &data.month)
    )));
    let from = local_date(tz, parse_s(&data.from));
    let last_day = local_date(tz, parse_s(&data.to) - 1);
    b.push(Block::Facts(vec![
        (t.organisation.into(), data.organisation.clone()),
        (
            t.period.into(),
            format!(
                "{} ({from} → {last_day}, {} {})",
                month_name(lang, &data.month),
                t.time_zone,
                data.timezone
            ),
        ),
        (
            t.generated.into(),
            format!("{} ({})", local_time(tz, data.generated_s), data.timezone),
        ),
    ]));
    if !data.complete {
        b.push(Block::Notice(t.month_to_date.into()));
    }
    if !data.has_data {
        b.push(Block::Notice(t.no_data.into()));
    }
}
