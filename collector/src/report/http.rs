//! `GET /reports/YYYY-MM.{html,pdf,csv,json,md}` (read token; `?lang=fr|en`, the
//! organisation's language by default): the same reports as `empreinte report`.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{
    Format, Lang, ReportError, build_summary, csv_stream, parse_report_month, pdf, render_text,
};
use crate::auth;
use crate::clock::now_unix_ms;
use crate::server::{AppError, AppState};
use crate::store::TokenKind;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportParams {
    pub lang: Option<String>,
}

impl From<ReportError> for AppError {
    fn from(e: ReportError) -> AppError {
        match e {
            ReportError::Store(s) => AppError::Store(s),
            ReportError::BadMonth(_) | ReportError::Future { .. } => {
                AppError::BadQuery(e.to_string())
            }
            ReportError::TimeZone(_) | ReportError::Render(_) => {
                AppError::Unavailable(e.to_string())
            }
        }
    }
}

pub async fn report(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(file): Path<String>,
    params: Result<Query<ReportParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, AppError> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    auth::verify(state.store.as_ref(), authorization, TokenKind::Read).await?;
    let Query(p) = params.map_err(|e| AppError::BadQuery(e.body_text()))?;
    let (label, ext) = file.rsplit_once('.').ok_or_else(|| {
        AppError::NotFound(format!(
            "/reports/{file}: reports are named YYYY-MM.html, .pdf, .csv, .json, .md or .opendata"
        ))
    })?;
    let format =
        Format::parse(ext).map_err(|e| AppError::NotFound(format!("/reports/{file}: {e}")))?;
    if format == Format::Boamps {
        return Err(AppError::NotFound(format!(
            "/reports/{file}: BoAmps is one file per use: `empreinte report --format boamps --month YYYY-MM -o DIR`"
        )));
    }
    let config = state.planner.config();
    let lang = Lang::parse(p.lang.as_deref().unwrap_or(&config.organisation.language))
        .map_err(AppError::BadQuery)?;
    let now_s = i64::try_from(now_unix_ms() / 1000).unwrap_or(i64::MAX);
    let m = parse_report_month(&state.tz, label, now_s)?;
    // Building the summary (its store reads and the aggregation) runs on the blocking
    // pool too, so a large month never holds an async worker.
    let handle = tokio::runtime::Handle::current();
    let builder = state.clone();
    let data = off_async(move || {
        let s = &builder;
        handle.block_on(build_summary(
            s.store.as_ref(),
            s.planner.config(),
            &s.tz,
            &m,
            now_s,
        ))
    })
    .await??;
    if format == Format::Csv {
        // Streamed page by page: the month's hourly rows are never all in memory.
        let disposition = format!(
            "inline; filename=\"empreinte-{}-{}.csv\"",
            data.month,
            lang.code()
        );
        let stream = csv_stream(state.store.clone(), data, state.tz.clone(), lang);
        return Ok((
            [
                (header::CONTENT_TYPE, format.content_type().to_string()),
                (header::CONTENT_DISPOSITION, disposition),
            ],
            axum::body::Body::from_stream(stream),
        )
            .into_response());
    }
    let (data, body): (_, Vec<u8>) = if format == Format::Pdf {
        // Wait for a Chromium slot first: a queued request holds no browser.
        let slot = tokio::time::timeout(
            state.pdf_queue_timeout,
            state.pdf_slots.clone().acquire_owned(),
        )
        .await;
        let Ok(Ok(_slot)) = slot else {
            state.metrics.saturated("pdf");
            return Err(AppError::Saturated {
                what: "PDF reports are being printed (limits.max_pdf_renders)".into(),
                retry_after_s: 10,
            });
        };
        let (data, html) = off_async(move || {
            let html = render_text(&data, Format::Html, lang);
            (data, html)
        })
        .await?;
        let chromium = pdf::find_chromium(None)?;
        let pdf = pdf::print(&html?, &chromium).await?;
        (data, pdf)
    } else {
        let (data, text) = off_async(move || {
            let text = render_text(&data, format, lang);
            (data, text)
        })
        .await?;
        (data, text?.into_bytes())
    };
    let disposition = format!(
        "inline; filename=\"empreinte-{}-{}.{}\"",
        data.month,
        lang.code(),
        format.extension()
    );
    Ok((
        [
            (header::CONTENT_TYPE, format.content_type().to_string()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response())
}

/// Runs `f` (report rendering: tables, SVG charts) on the blocking pool, off the async
/// workers that serve the other requests.
async fn off_async<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, AppError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AppError::Unavailable(format!("the report task failed: {e}")))
}
