//! `/reports`: response times per day of detection, with the count behind each median,
//! for a chosen range of days; as a page, CSV or JSON (`?format=csv|json`), all from
//! [`crate::store::Store::daily_medians`], so every figure has one source. Live streams
//! only: file scans (`vigil scan --publish`) are left out.

use super::handlers::{S, caller, page, store_down};
use super::pages::{self, esc};
use crate::model::now_ms;
use crate::store::{DailyMedians, days_from_civil};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;

const DAY_MS: i64 = 86_400_000;
/// The range shown when none is asked for.
const DEFAULT_DAYS: i64 = 90;
/// The longest range one request may ask for.
const MAX_DAYS: i64 = 3_660;

#[derive(serde::Deserialize)]
pub struct ReportQuery {
    /// First day, `YYYY-MM-DD` (UTC), included.
    #[serde(default)]
    from: Option<String>,
    /// Last day, included.
    #[serde(default)]
    to: Option<String>,
    /// `html` (the default), `csv` or `json`.
    #[serde(default)]
    format: Option<String>,
}

/// The days asked for: `[from, to]` as days since 1970, or every mistake, named.
fn range(q: &ReportQuery, today: i64) -> Result<(i64, i64), Vec<String>> {
    let mut errors = Vec::new();
    let mut day = |name: &str, v: &Option<String>, default: i64| match v.as_deref().map(str::trim) {
        None | Some("") => default,
        Some(s) => days_from_civil(s).unwrap_or_else(|| {
            errors.push(format!("{name}: {s:?} is not a date like 2026-12-07"));
            default
        }),
    };
    let to = day("to", &q.to, today);
    let from = day("from", &q.from, to - (DEFAULT_DAYS - 1));
    if errors.is_empty() && from > to {
        errors.push("from: the first day is after the last".into());
    }
    if errors.is_empty() && to - from + 1 > MAX_DAYS {
        errors.push(format!("the range is over {MAX_DAYS} days"));
    }
    if errors.is_empty() { Ok((from, to)) } else { Err(errors) }
}

pub async fn reports(
    State(shared): S,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<ReportQuery>,
) -> Response {
    let c = match caller(&shared, &headers, peer, "/reports").await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let format = q.format.as_deref().unwrap_or("html");
    let range = range(&q, now_ms().div_euclid(DAY_MS)).and_then(|r| match format {
        "html" | "csv" | "json" => Ok(r),
        other => Err(vec![format!("format: {other:?} is not html, csv or json")]),
    });
    let (from, to) = match range {
        Ok(r) => r,
        Err(errors) => {
            let list: String = errors.iter().map(|e| format!("<li>{}</li>", esc(e))).collect();
            let body = format!("<p role=\"alert\">The report cannot be made:</p><ul>{list}</ul>{}", form(None));
            let mut r = page(&shared, &c, "Response times", &body);
            *r.status_mut() = StatusCode::BAD_REQUEST;
            return r;
        }
    };
    let days = match shared.store.daily_medians(from * DAY_MS, (to + 1) * DAY_MS).await {
        Ok(d) => d,
        Err(e) => return store_down(e),
    };
    let (first, last) = (crate::store::civil(from), crate::store::civil(to));
    match format {
        "csv" => download("text/csv; charset=utf-8", &format!("vigil-response-times-{first}-{last}.csv"), csv(&days)),
        "json" => {
            let body = serde_json::json!({
                "from": first,
                "to": last,
                "time_zone": "UTC",
                "excludes": "file scans",
                "days": days.iter().map(day_json).collect::<Vec<_>>(),
            });
            download("application/json", &format!("vigil-response-times-{first}-{last}.json"), body.to_string())
        }
        _ => page(&shared, &c, "Response times", &html(&days, &first, &last)),
    }
}

fn download(content_type: &str, name: &str, body: String) -> Response {
    let disposition = format!("attachment; filename=\"{name}\"");
    ([(header::CONTENT_TYPE, content_type.to_string()), (header::CONTENT_DISPOSITION, disposition)], body)
        .into_response()
}

/// The range form: plain GET, works without script.
fn form(range: Option<(&str, &str)>) -> String {
    let (from, to) = range.unwrap_or(("", ""));
    format!(
        "<form method=\"get\" action=\"/reports\" class=\"range\"><label>From <input type=\"date\" name=\"from\" value=\"{}\"></label> \
         <label>To <input type=\"date\" name=\"to\" value=\"{}\"></label> <button type=\"submit\">Show</button></form>",
        pages::esc_attr(from),
        pages::esc_attr(to)
    )
}

fn html(days: &[DailyMedians], from: &str, to: &str) -> String {
    let cell = |v: Option<i64>, n: i64| match v {
        Some(ms) => format!("{} <span class=\"n\">(n = {n})</span>", pages::duration(ms)),
        None => "—".to_string(),
    };
    let arg = pages::url_arg;
    let mut body = format!(
        "<p>Median time from detection, per day of detection (UTC), from {from} to {to}: what regulators ask for. \
         Each median says how many incidents it is of; file scans are not counted.</p>{}\
         <p>Download: <a href=\"/reports?from={}&amp;to={}&amp;format=csv\">CSV</a> · \
         <a href=\"/reports?from={}&amp;to={}&amp;format=json\">JSON</a></p>\
         <table><caption>Median response times</caption><thead><tr><th scope=\"col\">Day</th><th scope=\"col\">Incidents</th>\
         <th scope=\"col\">To acknowledgement</th><th scope=\"col\">To interrupt</th><th scope=\"col\">To resolution</th></tr></thead><tbody>",
        form(Some((from, to))),
        arg(from),
        arg(to),
        arg(from),
        arg(to),
    );
    if days.is_empty() {
        body.push_str("<tr><td colspan=\"5\">No incidents in these days.</td></tr>");
    }
    for d in days {
        body.push_str(&format!(
            "<tr><th scope=\"row\">{}</th><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&d.day),
            d.incidents,
            cell(d.to_acknowledge_ms, d.acknowledged),
            cell(d.to_interrupt_ms, d.interrupted),
            cell(d.to_resolve_ms, d.resolved)
        ));
    }
    body.push_str("</tbody></table>");
    body
}

fn csv(days: &[DailyMedians]) -> String {
    let opt = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_default();
    let mut out = String::from(
        "day,incidents,acknowledged,median_to_acknowledge_ms,interrupted,median_to_interrupt_ms,resolved,median_to_resolve_ms\n",
    );
    for d in days {
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{}\n",
            d.day,
            d.incidents,
            d.acknowledged,
            opt(d.to_acknowledge_ms),
            d.interrupted,
            opt(d.to_interrupt_ms),
            d.resolved,
            opt(d.to_resolve_ms)
        ));
    }
    out
}

fn day_json(d: &DailyMedians) -> serde_json::Value {
    serde_json::json!({
        "day": d.day,
        "incidents": d.incidents,
        "acknowledged": d.acknowledged,
        "median_to_acknowledge_ms": d.to_acknowledge_ms,
        "interrupted": d.interrupted,
        "median_to_interrupt_ms": d.to_interrupt_ms,
        "resolved": d.resolved,
        "median_to_resolve_ms": d.to_resolve_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(from: Option<&str>, to: Option<&str>) -> ReportQuery {
        ReportQuery { from: from.map(Into::into), to: to.map(Into::into), format: None }
    }

    #[test]
    fn a_range_defaults_to_the_last_ninety_days_and_names_every_mistake() {
        let today = days_from_civil("2026-12-07").unwrap();
        assert_eq!(range(&q(None, None), today), Ok((today - 89, today)));
        let (f, t) = (days_from_civil("2026-01-01").unwrap(), days_from_civil("2026-01-31").unwrap());
        assert_eq!(range(&q(Some("2026-01-01"), Some("2026-01-31")), today), Ok((f, t)));
        assert_eq!(range(&q(Some("2026-01-01"), Some("2026-01-01")), today), Ok((f, f)));
        let e = range(&q(Some("yesterday"), Some("2026-02-30")), today).unwrap_err();
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].contains("to: \"2026-02-30\"") && e[1].contains("from: \"yesterday\""), "{e:?}");
        assert!(range(&q(Some("2026-02-01"), Some("2026-01-01")), today).unwrap_err()[0].contains("after the last"));
        assert!(range(&q(Some("1990-01-01"), Some("2026-01-01")), today).unwrap_err()[0].contains("over"));
    }

    #[test]
    fn the_csv_has_a_count_beside_every_median_and_blanks_for_none() {
        let d = DailyMedians {
            day: "2026-12-07".into(),
            day_start_ms: 0,
            incidents: 3,
            to_acknowledge_ms: Some(60_000),
            acknowledged: 3,
            to_interrupt_ms: None,
            interrupted: 0,
            to_resolve_ms: Some(450_000),
            resolved: 2,
        };
        let text = csv(&[d]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1], "2026-12-07,3,3,60000,0,,2,450000");
        assert_eq!(lines[0].split(',').count(), lines[1].split(',').count());
    }
}
