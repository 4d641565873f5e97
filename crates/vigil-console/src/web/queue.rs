//! The queue: open incidents, or the history, searched and filtered, one page at a
//! time; grouped by stream or account; several acknowledged or resolved at once under
//! one note.

use super::handlers::{S, caller, page, poster, store_down};
use super::pages::{self, esc, esc_attr, url_arg};
use crate::actions::{self, ActionError};
use crate::model::{IncidentState, Resolution, Role, now_ms};
use crate::store::{QueueFilter, QueueRow, days_from_civil};
use axum::extract::{ConnectInfo, Form, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

/// Incidents per page.
const PAGE: i64 = 50;
/// Incidents one bulk action takes at most.
const MAX_BULK: usize = 200;
const DAY_MS: i64 = 86_400_000;

/// The queue's query: every field optional, every mistake named.
fn filter(q: &HashMap<String, String>) -> Result<(QueueFilter, Option<String>), Vec<String>> {
    let get = |k: &str| q.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    let mut f = QueueFilter { text: get("q").map(Into::into), ..QueueFilter::default() };
    let mut errors = Vec::new();
    match get("decision") {
        None => {}
        Some(d @ ("review" | "interrupt")) => f.decision = Some(d.into()),
        Some(d) => errors.push(format!("decision: {d:?} is not review or interrupt")),
    }
    match get("state") {
        None | Some("unresolved") => {}
        Some("all") => (f.any_state, f.newest_first) = (true, true),
        Some(s) => match IncidentState::parse(s) {
            Some(state) => {
                f.state = Some(state);
                // The history reads newest first.
                f.newest_first = state == IncidentState::Resolved;
            }
            None => errors.push(format!("state: {s:?} is not open, acknowledged, escalated, resolved or all")),
        },
    }
    for (key, slot) in [("rule", &mut f.rule), ("bank", &mut f.bank), ("worker", &mut f.worker)] {
        if let Some(v) = get(key) {
            if v.len() > 200 || v.chars().any(char::is_control) {
                errors.push(format!("{key}: too long or not printable"));
            } else {
                *slot = Some(v.into());
            }
        }
    }
    if f.text.as_deref().is_some_and(|t| t.len() > 500) {
        errors.push("q: over 500 characters".into());
    }
    for (key, end) in [("from", false), ("to", true)] {
        if let Some(v) = get(key) {
            match days_from_civil(v) {
                Some(day) => {
                    let ms = (day + i64::from(end)) * DAY_MS;
                    if end { f.to_ms = Some(ms) } else { f.from_ms = Some(ms) }
                }
                None => errors.push(format!("{key}: {v:?} is not a date like 2026-12-07")),
            }
        }
    }
    if let Some(a) = get("after") {
        match a.split_once(':').and_then(|(t, id)| Some((t.parse::<i64>().ok()?, id.to_string()))) {
            Some(after) => f.after = Some(after),
            None => errors.push("after: not a page of this queue".into()),
        }
    }
    let group = match get("group") {
        None => None,
        Some(g @ ("stream" | "account")) => Some(g.to_string()),
        Some(g) => {
            errors.push(format!("group: {g:?} is not stream or account"));
            None
        }
    };
    if errors.is_empty() { Ok((f, group)) } else { Err(errors) }
}

/// The filter form (plain GET), filled in with what was asked.
fn form(q: &HashMap<String, String>) -> String {
    let v = |k: &str| esc_attr(q.get(k).map_or("", String::as_str));
    let select = |name: &str, label: &str, options: &[(&str, &str)]| {
        let chosen = q.get(name).map_or("", String::as_str);
        let opts: String = options
            .iter()
            .map(|(value, text)| {
                let sel = if *value == chosen { " selected" } else { "" };
                format!("<option value=\"{value}\"{sel}>{text}</option>")
            })
            .collect();
        format!("<label>{label} <select name=\"{name}\">{opts}</select></label>")
    };
    format!(
        "<form method=\"get\" action=\"/\" class=\"filters\" role=\"search\" aria-label=\"Search the queue\">\
         <label>Search <input type=\"search\" name=\"q\" value=\"{}\" placeholder=\"stream, account, incident or PDQ hash\"></label>\
         {}{}<label>Rule <input name=\"rule\" value=\"{}\"></label><label>Bank <input name=\"bank\" value=\"{}\"></label>\
         <label>Worker <input name=\"worker\" value=\"{}\"></label>\
         <label>From <input type=\"date\" name=\"from\" value=\"{}\"></label><label>To <input type=\"date\" name=\"to\" value=\"{}\"></label>\
         {}<button type=\"submit\">Show</button> <a href=\"/\">Clear</a></form>",
        v("q"),
        select("decision", "Decision", &[("", "any"), ("review", "review"), ("interrupt", "interrupt")]),
        select(
            "state",
            "State",
            &[
                ("", "unresolved"),
                ("open", "open"),
                ("acknowledged", "acknowledged"),
                ("escalated", "escalated"),
                ("resolved", "resolved (history)"),
                ("all", "all"),
            ]
        ),
        v("rule"),
        v("bank"),
        v("worker"),
        v("from"),
        v("to"),
        select("group", "Group by", &[("", "nothing"), ("stream", "stream"), ("account", "account")]),
    )
}

pub async fn queue(
    State(shared): S,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let c = match caller(&shared, &headers, peer, "/").await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let (f, group) = match filter(&q) {
        Ok(f) => f,
        Err(errors) => {
            let list: String = errors.iter().map(|e| format!("<li>{}</li>", esc(e))).collect();
            let body = format!("<p role=\"alert\">The queue cannot show that:</p><ul>{list}</ul>{}", form(&q));
            let mut r = page(&shared, &c, "Queue", &body);
            *r.status_mut() = StatusCode::BAD_REQUEST;
            return r;
        }
    };
    let now = now_ms();
    let result = match shared.store.search(&f, PAGE, now).await {
        Ok(p) => p,
        Err(e) => return store_down(e),
    };
    let mut rows = result.rows;
    let mut recent = Vec::with_capacity(rows.len());
    for r in &rows {
        match shared.store.recent_stream_events(&r.stream_id).await {
            Ok(l) => recent.push(l),
            Err(e) => return store_down(e),
        }
    }
    let mut lives: BTreeMap<String, String> = BTreeMap::new();
    for (r, recent) in rows.iter().zip(&recent) {
        let recent: Vec<(&str, i64)> = recent.iter().map(|(e, t)| (e.as_str(), *t)).collect();
        let live = match r.origin.as_deref() {
            Some("file_scan") => "a file scan".to_string(),
            _ => crate::model::liveness(&recent, pages::time),
        };
        lives.insert(r.id.clone(), live);
    }
    let key = |r: &QueueRow| match group.as_deref() {
        Some("stream") => r.stream_id.clone(),
        Some("account") => r.account_id.clone().unwrap_or_else(|| "no account".into()),
        _ => String::new(),
    };
    if group.is_some() {
        // Stable: within a group, the page's order.
        rows.sort_by_key(|r| key(r));
    }
    let what = match (f.any_state, f.state) {
        (true, _) => "incident(s), newest first".to_string(),
        (false, Some(IncidentState::Resolved)) => "resolved incident(s), newest first".to_string(),
        (false, Some(s)) => format!("{} incident(s), oldest first", s.as_str()),
        (false, None) => "open incident(s), oldest first".to_string(),
    };
    let bulk = c.role >= Role::Reviewer;
    let mut body = form(&q);
    if bulk {
        body.push_str(&format!(
            "<form method=\"post\" action=\"/actions/bulk\" aria-label=\"Several incidents at once\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">",
            esc_attr(&c.csrf)
        ));
    }
    body.push_str(&format!(
        "<table class=\"queue\"><caption>{} {what}{}</caption><thead><tr><th scope=\"col\">Stream and decision</th>\
         <th scope=\"col\">Rule</th><th scope=\"col\">Account</th><th scope=\"col\">Age</th>\
         <th scope=\"col\">State</th><th scope=\"col\">Interrupt</th><th scope=\"col\">Stream now</th></tr></thead><tbody>",
        rows.len(),
        if result.next.is_some() { " (more on the next page)" } else { "" },
    ));
    let columns = 7;
    let mut version = String::new();
    let mut last_group: Option<String> = None;
    for r in &rows {
        let live = lives.get(&r.id).cloned().unwrap_or_default();
        if group.is_some() {
            let k = key(r);
            if last_group.as_ref() != Some(&k) {
                let n = rows.iter().filter(|x| key(x) == k).count();
                body.push_str(&format!(
                    "<tr class=\"group\"><th scope=\"rowgroup\" colspan=\"{columns}\">{} · {n} incident(s)</th></tr>",
                    esc(&k)
                ));
                last_group = Some(k);
            }
        }
        version.push_str(&format!(
            "{}|{}|{:?}|{:?}|{}|{}|{};",
            r.id,
            r.state.as_str(),
            r.holder,
            r.assignee,
            r.interrupt_state.as_str(),
            r.interrupt_state.not_found(r.last_command_ms, r.seen_ms, now),
            live
        ));
        let mut held = r.holder.as_deref().map(|h| format!(", held by {}", esc(h))).unwrap_or_default();
        if let Some(a) = &r.assignee {
            held.push_str(&format!(", assigned to {}", esc(a)));
        }
        let check = if bulk && r.state != IncidentState::Resolved {
            format!(
                "<input type=\"checkbox\" name=\"incident\" value=\"{}\" aria-label=\"Select {}\"> ",
                esc_attr(&r.id),
                esc_attr(&r.stream_id)
            )
        } else {
            String::new()
        };
        // The stream and its decision lead (the incident id is on its page).
        body.push_str(&format!(
            "<tr><td>{check}<a href=\"/incident?id={}\" title=\"{}\">{}</a> <strong>{}</strong></td><td>{}</td><td>{}</td><td>{}</td><td>{}{held}</td><td>{}</td><td>{}</td></tr>",
            url_arg(&r.id),
            esc_attr(&r.id),
            esc(&r.stream_id),
            esc(&crate::model::decision_shown(&r.decision, r.origin.as_deref())),
            esc(&r.rule),
            esc(r.account_id.as_deref().unwrap_or("—")),
            pages::duration(r.age_ms),
            esc(r.state.as_str()),
            esc(&r.interrupt_state.shown(r.last_command_ms, r.seen_ms, now)),
            esc(&live),
        ));
    }
    body.push_str("</tbody></table>");
    if rows.is_empty() {
        body.push_str("<p class=\"ok\">Nothing matches.</p>");
    }
    if bulk && !rows.is_empty() {
        let outcomes: String = Resolution::ALL
            .iter()
            .filter(|r| **r != Resolution::FalsePositive)
            .map(|r| {
                format!("<option value=\"resolve:{}\">resolve: {}</option>", r.as_str(), r.as_str().replace('_', " "))
            })
            .collect();
        body.push_str(&format!(
            "<fieldset><legend>The selected incidents</legend><label>Do <select name=\"op\">\
             <option value=\"acknowledge\">acknowledge</option>{outcomes}</select></label>\
             <label>Note (required) <textarea name=\"note\" required maxlength=\"2000\"></textarea></label>\
             <button type=\"submit\">Apply to the selected</button></fieldset>"
        ));
    }
    if bulk {
        body.push_str("</form>");
    }
    if let Some((at, id)) = &result.next {
        let mut args: Vec<String> = q
            .iter()
            .filter(|(k, v)| k.as_str() != "after" && !v.is_empty())
            .map(|(k, v)| format!("{}={}", url_arg(k), url_arg(v)))
            .collect();
        args.sort();
        args.push(format!("after={}", url_arg(&format!("{at}:{id}"))));
        body.push_str(&format!("<p><a href=\"/?{}\" rel=\"next\">Next page</a></p>", esc_attr(&args.join("&"))));
    }
    body.push_str(pages::SHORTCUTS);
    body.insert_str(0, &pages::version_marker(&version));
    page(&shared, &c, "Queue", &body)
}

/// Several incidents acknowledged, or resolved with one outcome, under one note.
pub async fn bulk(
    State(shared): S,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(fields): Form<Vec<(String, String)>>,
) -> Response {
    let single: HashMap<String, String> = fields.iter().filter(|(k, _)| k != "incident").cloned().collect();
    let c = match poster(&shared, &headers, peer, &single, Role::Reviewer).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let back = ("/", "Back to the queue");
    let ids: Vec<&str> = fields.iter().filter(|(k, _)| k == "incident").map(|(_, v)| v.as_str()).collect();
    let op = single.get("op").map_or("", String::as_str);
    let note = single.get("note").map_or("", String::as_str);
    let refuse = |why: &str| super::handlers::refusal(&shared, &c, StatusCode::CONFLICT, why, back);
    if ids.is_empty() {
        return refuse("select at least one incident");
    }
    if ids.len() > MAX_BULK {
        return refuse(&format!("at most {MAX_BULK} incidents at once"));
    }
    if note.trim().is_empty() {
        return refuse("a note is required: it goes on every incident");
    }
    let resolution = match op.split_once(':') {
        None if op == "acknowledge" => None,
        Some(("resolve", r)) => match Resolution::parse(r).filter(|r| *r != Resolution::FalsePositive) {
            Some(r) => Some(r),
            None => return refuse("a false positive is marked on its incident (it allow-lists its frames)"),
        },
        _ => return refuse("choose acknowledge or a resolution"),
    };
    if resolution.is_some() && single.get("confirm").map(String::as_str) != Some("yes") {
        let question = "Resolve these incidents? They leave the queue for the history.";
        return page(&shared, &c, "Confirm", &super::confirm::page("bulk", question, &fields));
    }
    let mut done = 0;
    let mut failed = Vec::new();
    for id in &ids {
        let r = match resolution {
            None => match actions::acknowledge(&shared, id, &c.user).await {
                Ok(()) => shared
                    .store
                    .audit(&c.user, "note", id, &serde_json::json!({ "note": note }), now_ms())
                    .await
                    .map(|_| ())
                    .map_err(ActionError::from),
                Err(e) => Err(e),
            },
            Some(r) => actions::resolve(&shared, id, &c.user, r, note).await,
        };
        match r {
            Ok(()) => done += 1,
            Err(e) => failed.push(format!("{id}: {e}")),
        }
    }
    let verb = if resolution.is_some() { "Resolved" } else { "Acknowledged" };
    let mut body = format!("<p class=\"notice\" role=\"status\">{verb} {done} of {} incident(s).</p>", ids.len());
    if !failed.is_empty() {
        let list: String = failed.iter().map(|f| format!("<li>{}</li>", esc(f))).collect();
        body.push_str(&format!("<p role=\"alert\">Not done:</p><ul>{list}</ul>"));
    }
    body.push_str("<p><a href=\"/\">Back to the queue</a></p>");
    let status = if failed.is_empty() { StatusCode::OK } else { StatusCode::CONFLICT };
    let mut r = page(&shared, &c, "Done", &body);
    *r.status_mut() = status;
    r.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn the_query_becomes_a_filter_and_every_mistake_is_named() {
        let (f, group) = filter(&q(&[])).unwrap();
        assert_eq!((f, group), (QueueFilter::default(), None));
        let (f, group) = filter(&q(&[
            ("q", " live/a "),
            ("decision", "interrupt"),
            ("state", "resolved"),
            ("rule", "known_abuse_material"),
            ("from", "2026-12-01"),
            ("to", "2026-12-07"),
            ("after", "1700000000000:live/a@1#1"),
            ("group", "account"),
        ]))
        .unwrap();
        assert_eq!(f.text.as_deref(), Some("live/a"));
        assert_eq!((f.state, f.newest_first), (Some(IncidentState::Resolved), true));
        assert_eq!(f.to_ms.unwrap() - f.from_ms.unwrap(), 7 * DAY_MS, "to is the last day, included");
        assert_eq!(f.after, Some((1_700_000_000_000, "live/a@1#1".into())));
        assert_eq!(group.as_deref(), Some("account"));
        let e = filter(&q(&[("decision", "x"), ("state", "gone"), ("from", "soon"), ("after", "x"), ("group", "y")]))
            .unwrap_err();
        assert_eq!(e.len(), 5, "{e:?}");
    }
}
