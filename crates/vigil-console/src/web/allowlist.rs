//! `/allowlist` (admins): every false-positive allowlist entry, newest first, searched;
//! what each covers, until when, whether the workers have it, and a way to revoke it.

use super::handlers::{S, caller, page, refusal, store_down};
use super::pages::{self, esc, esc_attr, form_start, time, url_arg};
use crate::model::{Role, now_ms};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use std::collections::HashMap;
use std::net::SocketAddr;

/// Entries shown at most (the search narrows them).
const SHOWN: i64 = 500;

pub async fn list(
    State(shared): S,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let c = match caller(&shared, &headers, peer, "/allowlist").await {
        Ok(c) => c,
        Err(r) => return r,
    };
    if c.role < Role::Admin {
        super::auth::refused("role");
        return refusal(&shared, &c, StatusCode::FORBIDDEN, "this needs the admin role", ("/", "Back to the queue"));
    }
    let text = q.get("q").map(|t| t.trim()).filter(|t| !t.is_empty() && t.len() <= 500);
    let (entries, revoked) = match shared.store.allow_entries_listed(text, SHOWN).await {
        Ok(r) => r,
        Err(e) => return store_down(e),
    };
    let now = now_ms();
    let mut body = format!(
        "<form method=\"get\" action=\"/allowlist\" role=\"search\" aria-label=\"Search the allowlist\">\
         <label>Search <input type=\"search\" name=\"q\" value=\"{}\" placeholder=\"entry, bank or rule, note, author, incident\"></label>\
         <button type=\"submit\">Show</button> <a href=\"/allowlist\">Clear</a></form>\
         <table><caption>{} allowlist entr{}, newest first</caption><thead><tr><th scope=\"col\">Scope</th>\
         <th scope=\"col\">Frames</th><th scope=\"col\">Note</th><th scope=\"col\">By</th><th scope=\"col\">Expires</th>\
         <th scope=\"col\">Sent to workers</th><th scope=\"col\">State</th></tr></thead><tbody>",
        esc_attr(text.unwrap_or("")),
        entries.len(),
        if entries.len() == 1 { "y" } else { "ies" },
    );
    for e in &entries {
        let state = if revoked.contains(&e.id) {
            "<strong>revoked</strong>".to_string()
        } else if e.expires_ms <= now {
            "expired".to_string()
        } else {
            format!(
                "live, {} left{}<input type=\"hidden\" name=\"entry\" value=\"{}\"><button type=\"submit\" class=\"danger\">Revoke</button></form>",
                pages::duration(e.expires_ms - now),
                form_start("revoke-allow", &c.csrf, &e.incident_id, "Revoke the entry"),
                esc_attr(&e.id)
            )
        };
        body.push_str(&format!(
            "<tr><td>{} {} <a href=\"/incident?id={}\" title=\"{}\">incident</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{state}</td></tr>",
            esc(&e.scope_kind),
            esc(&e.scope),
            url_arg(&e.incident_id),
            esc_attr(&e.id),
            e.hashes.len(),
            esc(&e.note),
            esc(&e.created_by),
            time(e.expires_ms),
            e.published_ms.map_or("not yet (retrying)".to_string(), time),
        ));
    }
    body.push_str("</tbody></table>");
    if entries.is_empty() {
        body.push_str("<p class=\"ok\">No entries.</p>");
    }
    page(&shared, &c, "Allowlist", &body)
}
