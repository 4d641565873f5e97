//! The incident page: facts, actions, the timeline of samples, the rule, the stream's
//! lifecycle, commands and outcomes, allowlist entries and the audit trail, on one
//! screen. Hashes, scores and times only.

use super::auth::Caller;
use super::pages::{duration, esc, esc_attr, form_start, time};
use crate::model::{IncidentState, InterruptState, Resolution, Role, StreamEvent, UnixMs};
use crate::store::{AuditEntry, FpProposal, IncidentDetail};
use serde_json::{Value, json};

/// Audit entries per page of the incident's trail.
pub const AUDIT_PER_PAGE: i64 = 50;

/// One page of an incident's audit trail, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditTrail {
    pub entries: Vec<AuditEntry>,
    /// Entries about the incident in all.
    pub total: i64,
    /// 0 for the newest [`AUDIT_PER_PAGE`].
    pub page: i64,
}

/// What the incident page shows besides the incident itself.
pub struct View<'a> {
    /// The stream's lifecycle around the detection.
    pub events: &'a [StreamEvent],
    pub trail: &'a AuditTrail,
    /// A false positive waiting for a second reviewer.
    pub proposal: Option<&'a FpProposal>,
    /// What the action just done did.
    pub notice: Option<&'static str>,
    /// The paging channels an escalation may name.
    pub channels: &'a [crate::model::Channel],
    /// Who an incident may be assigned to (enabled reviewers and admins).
    pub assignable: &'a [String],
    /// The stream's page on the platform (`stream_url_template`).
    pub platform_link: Option<String>,
}

pub fn render(d: &IncidentDetail, view: &View<'_>, c: &Caller, now: UnixMs) -> String {
    let (events, trail) = (view.events, view.trail);
    let i = &d.incident;
    let holder = i.holder_at(now);
    let opt = |v: &Option<String>| esc(v.as_deref().unwrap_or("—"));
    // "TIME by USER: NOTE", or a dash when it has not happened.
    let step = |at: Option<UnixMs>, by: &Option<String>, what: Option<&str>, note: &Option<String>| match at {
        None => "—".to_string(),
        Some(t) => {
            let mut s = format!("{} by {}", time(t), esc(by.as_deref().unwrap_or("?")));
            if let Some(w) = what {
                s.push_str(&format!(" ({})", esc(&w.replace('_', " "))));
            }
            if let Some(n) = note.as_deref().filter(|n| !n.is_empty()) {
                s.push_str(&format!(": {}", esc(n)));
            }
            s
        }
    };
    let version = format!(
        "{:?}|{}|{}|{}|{}|{}|{:?}|{}",
        i,
        d.alerts.len(),
        d.commands.len(),
        d.outcomes.len(),
        events.len(),
        trail.total,
        view.proposal,
        i.interrupt_state.not_found(d.last_command_ms(), d.seen_ms(), now)
    );
    let notice = view.notice.map(|n| format!("<p class=\"notice\" role=\"status\">{}</p>", esc(n))).unwrap_or_default();
    let mut h = format!(
        "{}{notice}<p><a href=\"/\">Back to the queue</a> · <a href=\"/incident/export?id={}\">Export (JSON)</a></p>\
         <dl><dt>Incident</dt><dd><code>{}</code></dd><dt>Stream</dt><dd>{}{}</dd><dt>Account</dt><dd>{}</dd>\
         <dt>Session</dt><dd>{}</dd><dt>Worker</dt><dd>{}</dd><dt>Decision</dt><dd><strong>{}</strong></dd><dt>Rule</dt><dd>{}</dd>\
         <dt>Detected</dt><dd>{} ({} ago)</dd><dt>State</dt><dd><strong>{}</strong></dd><dt>Held by</dt><dd>{}</dd>\
         <dt>Interrupt</dt><dd><strong>{}</strong></dd><dt>Acknowledged</dt><dd>{}</dd><dt>Escalated</dt><dd>{}</dd>\
         <dt>Resolved</dt><dd>{}</dd><dt>Assigned to</dt><dd>{}</dd></dl>",
        super::pages::version_marker(&version),
        super::pages::url_arg(&i.id),
        esc(&i.id),
        esc(&i.stream_id),
        view.platform_link
            .as_deref()
            .map(|u| format!(" · <a href=\"{}\" rel=\"noopener noreferrer\">on the platform</a>", esc_attr(u)))
            .unwrap_or_default(),
        opt(&i.account_id),
        opt(&i.session_id),
        esc(&i.worker_id),
        esc(&crate::model::decision_shown(&i.decision, i.origin.as_deref())),
        esc(&i.rule),
        time(i.detected_ms),
        duration(now - i.detected_ms),
        i.state.as_str(),
        esc(holder.unwrap_or("nobody")),
        esc(&i.interrupt_state.shown(d.last_command_ms(), d.seen_ms(), now)),
        step(i.acknowledged_ms, &i.acknowledged_by, None, &None),
        step(i.escalated_ms, &i.escalated_by, None, &i.escalation_note),
        step(i.resolved_ms, &i.resolved_by, i.resolution.map(Resolution::as_str), &i.resolution_note),
        esc(i.assignee.as_deref().unwrap_or("nobody")),
    );
    if let Some(p) = view.proposal {
        h.push_str(&proposal(p, c, &i.id));
    }
    if c.role >= Role::Reviewer && i.state != IncidentState::Resolved {
        h.push_str(&actions(d, c, holder, view.proposal.is_some(), view.channels));
        h.push_str(&assign_form(d, c, view.assignable));
        h.push_str(super::pages::SHORTCUTS);
    }
    h.push_str(&timeline(d));
    h.push_str(&lifecycle(d, events));
    h.push_str(&commands(d));
    h.push_str(&allow_entries(d, c));
    h.push_str(&audit(&d.incident.id, trail));
    h
}

/// A false positive waiting for a second reviewer: what was proposed, and (for another
/// reviewer) approve or reject.
fn proposal(p: &FpProposal, c: &Caller, id: &str) -> String {
    let mut h = format!(
        "<section class=\"proposal\" aria-labelledby=\"proposal-h\"><h2 id=\"proposal-h\">False positive waiting for a second reviewer</h2>\
         <p>Proposed by <strong>{}</strong> at {}: allow these frames for {} for {} days.</p><blockquote>{}</blockquote>",
        esc(&p.proposed_by),
        time(p.proposed_ms),
        esc(&p.scope.replacen(':', " ", 1)),
        p.expiry_days,
        esc(&p.note)
    );
    if c.role < Role::Reviewer {
    } else if c.user == p.proposed_by {
        h.push_str("<p>You proposed it: another reviewer approves or rejects it.</p>");
    } else {
        h.push_str(&format!(
            "{}<p>Approving releases the stream from review and allow-lists its frames as proposed.</p>\
             <button type=\"submit\" class=\"primary\">Approve false positive</button></form>",
            form_start("approve-false-positive", &c.csrf, id, "Approve false positive")
        ));
        h.push_str(&format!(
            "{}<label for=\"reject-note\">Why not? (required)</label><textarea id=\"reject-note\" name=\"note\" required maxlength=\"2000\"></textarea>\
             <button type=\"submit\">Reject</button></form>",
            form_start("reject-false-positive", &c.csrf, id, "Reject false positive")
        ));
    }
    h.push_str("</section>");
    h
}

/// The actions, the one that moves the incident on first (marked primary): acknowledge
/// while it is open, resolve after. A false positive has one way in (its own form,
/// which allow-lists); resolving offers the other outcomes.
fn actions(
    d: &IncidentDetail,
    c: &Caller,
    holder: Option<&str>,
    proposed: bool,
    channels: &[crate::model::Channel],
) -> String {
    let i = &d.incident;
    let id = &i.id;
    let primary = if i.state == IncidentState::Open { "acknowledge" } else { "resolve" };
    let button = |action: &str, label: &str, class: Option<&str>| {
        let class = if action == primary { Some("primary") } else { class };
        let class = class.map(|c| format!(" class=\"{c}\"")).unwrap_or_default();
        let key = shortcut(action).map(|k| format!(" aria-keyshortcuts=\"{k}\"")).unwrap_or_default();
        format!("<button type=\"submit\"{class}{key}>{label}</button>")
    };
    let mut forms: Vec<(&str, String)> = Vec::new();
    if i.state == IncidentState::Open {
        forms.push((
            "acknowledge",
            format!(
                "{}{}</form>",
                form_start("acknowledge", &c.csrf, id, "Acknowledge"),
                button("acknowledge", "Acknowledge", None)
            ),
        ));
    }
    // Offered again once an issued command went unanswered (nobody held the stream).
    let unanswered = i.interrupt_state.not_found(d.last_command_ms(), d.seen_ms(), crate::model::now_ms());
    let live = i.origin.is_none();
    if live && (!matches!(i.interrupt_state, InterruptState::Issued | InterruptState::CutConfirmed) || unanswered) {
        forms.push((
            "cut",
            format!(
                "{}<p>Sends an interrupt command for this stream now.</p>{}</form>",
                form_start("cut", &c.csrf, id, "Cut now"),
                button("cut", "Cut now", Some("danger"))
            ),
        ));
    }
    let targets = if channels.is_empty() {
        "<option value=\"all\">nobody: no paging channel is configured</option>".to_string()
    } else {
        let mut t = String::from("<option value=\"all\">every paging channel</option>");
        for ch in channels {
            t.push_str(&format!("<option value=\"{0}\">{0}</option>", ch.as_str()));
        }
        t
    };
    forms.push((
        "escalate",
        format!(
            "{}<label for=\"esc-target\">Escalate to</label><select id=\"esc-target\" name=\"target\">{targets}</select>\
             <label for=\"esc-note\">Escalation note (required)</label><textarea id=\"esc-note\" name=\"note\" required maxlength=\"2000\"></textarea>{}</form>",
            form_start("escalate", &c.csrf, id, "Escalate"),
            button("escalate", "Escalate", None)
        ),
    ));
    if !proposed {
        let options: String = crate::actions::offered_scopes(d)
            .iter()
            .map(|s| format!("<option value=\"{}\">{}</option>", esc_attr(s), esc(&s.replacen(':', " ", 1))))
            .collect();
        let four_eyes = if i.decision == "interrupt" {
            "<p>An interrupt-level false positive takes effect once a second reviewer approves it.</p>"
        } else {
            ""
        };
        forms.push((
            "false-positive",
            format!(
                "{}{four_eyes}<label for=\"fp-scope\">Allow these frames for</label><select id=\"fp-scope\" name=\"scope\">{options}</select>\
                 <label for=\"fp-note\">Why is this a false positive? (required)</label><textarea id=\"fp-note\" name=\"note\" required maxlength=\"2000\"></textarea>\
                 <label for=\"fp-days\">Allow for (days)</label><input id=\"fp-days\" name=\"expiry_days\" type=\"number\" min=\"1\" max=\"366\" value=\"30\" required>{}</form>",
                form_start("false-positive", &c.csrf, id, "False positive"),
                button("false-positive", "Mark false positive", None)
            ),
        ));
    }
    let outcomes: String = Resolution::ALL
        .iter()
        .filter(|r| **r != Resolution::FalsePositive)
        .map(|r| format!("<option value=\"{}\">{}</option>", r.as_str(), r.as_str().replace('_', " ")))
        .collect();
    forms.push((
        "resolve",
        format!(
            "{}<label for=\"res-outcome\">Outcome</label><select id=\"res-outcome\" name=\"outcome\">{outcomes}</select>\
             <label for=\"res-note\">Note</label><textarea id=\"res-note\" name=\"note\" maxlength=\"2000\"></textarea>{}</form>",
            form_start("resolve", &c.csrf, id, "Resolve"),
            button("resolve", "Resolve", None)
        ),
    ));
    let mine = holder == Some(c.user.as_str());
    forms.push(if mine {
        (
            "release",
            format!(
                "{}<p>You hold this incident.</p>{}</form>",
                form_start("release", &c.csrf, id, "Release"),
                button("release", "Release", None)
            ),
        )
    } else {
        let who = holder.map(|u| format!("<p>{} holds it now.</p>", esc(u))).unwrap_or_default();
        (
            "hold",
            format!(
                "{}{who}{}</form>",
                form_start("hold", &c.csrf, id, "Hold"),
                button("hold", "Hold for review", None)
            ),
        )
    });
    // The primary action first.
    forms.sort_by_key(|(action, _)| *action != primary);
    let mut h = String::from("<h2 id=\"actions\">Actions</h2><div class=\"actions\">");
    for (_, form) in forms {
        h.push_str(&form);
    }
    h.push_str("</div>");
    h
}

/// Assign the incident, or hand it over (to another reviewer, or to nobody).
fn assign_form(d: &IncidentDetail, c: &Caller, assignable: &[String]) -> String {
    let current = d.incident.assignee.as_deref();
    let mut options = String::from("<option value=\"\">nobody</option>");
    for u in assignable {
        let sel = if Some(u.as_str()) == current { " selected" } else { "" };
        options.push_str(&format!("<option value=\"{}\"{sel}>{}</option>", esc_attr(u), esc(u)));
    }
    let label = if current.is_some() { "Hand over" } else { "Assign" };
    format!(
        "{}<label for=\"assign-to\">{label} to</label><select id=\"assign-to\" name=\"to\">{options}</select>\
         <button type=\"submit\">{label}</button></form>",
        form_start("assign", &c.csrf, &d.incident.id, label)
    )
}

/// The key that activates an action on the incident page (listed on the page).
pub fn shortcut(action: &str) -> Option<&'static str> {
    Some(match action {
        "acknowledge" => "a",
        "cut" => "c",
        "escalate" => "e",
        "false-positive" => "f",
        _ => return None,
    })
}

fn timeline(d: &IncidentDetail) -> String {
    let mut h = String::from("<h2>Timeline of samples</h2>");
    for a in &d.alerts {
        let x = &a.alert;
        let e = &x.explanation;
        h.push_str(&format!(
            "<h3>{:?} at {} (stream time {:.1}–{:.1} s), rule {} → {:?}</h3><p>Policy {} version {}; models: {}</p><ul>",
            x.event,
            time(x.emitted_at_unix_ms as i64),
            x.started_ms as f64 / 1000.0,
            x.last_seen_ms as f64 / 1000.0,
            esc(&x.rule),
            x.decision,
            esc(&e.policy),
            esc(&e.policy_version),
            esc(&e.models.iter().map(|m| format!("{} {}", m.name, m.version)).collect::<Vec<_>>().join(", ")),
        ));
        for r in &e.reasons {
            h.push_str(&format!("<li>{}</li>", esc(r)));
        }
        h.push_str("</ul><table><caption>Samples</caption><thead><tr><th scope=\"col\">Stream time</th><th scope=\"col\">PDQ hash</th><th scope=\"col\">Conditions</th></tr></thead><tbody>");
        for f in &e.frames {
            h.push_str(&format!(
                "<tr><td>{:.3} s</td><td><code>{}</code></td><td>{}</td></tr>",
                f.pts_ms as f64 / 1000.0,
                esc(f.pdq.as_deref().unwrap_or("—")),
                esc(&f.conditions.join(", "))
            ));
        }
        h.push_str("</tbody></table>");
    }
    h
}

fn lifecycle(d: &IncidentDetail, events: &[StreamEvent]) -> String {
    let i = &d.incident;
    let mut rows = vec![(i.detected_ms, "detected by the worker".to_string())];
    for e in events {
        let mut what = format!("stream {} on {}", e.event, e.worker_id);
        for part in [&e.detail, &e.reason].into_iter().flatten() {
            what.push_str(&format!(" ({part})"));
        }
        rows.push((e.at_unix_ms as i64, what));
    }
    for a in &d.alerts {
        rows.push((
            a.alert.emitted_at_unix_ms as i64,
            format!("alert {:?} (received {})", a.alert.event, time(a.received_ms)),
        ));
    }
    if let Some(t) = i.stream_closed_ms {
        rows.push((t, "the worker closed the incident (the stream calmed or ended)".into()));
    }
    rows.sort_by_key(|r| r.0);
    let mut h = String::from(
        "<h2>Stream lifecycle</h2><table><caption>What the workers reported</caption><thead><tr><th scope=\"col\">When</th><th scope=\"col\">What</th></tr></thead><tbody>",
    );
    for (t, what) in rows {
        h.push_str(&format!("<tr><td>{}</td><td>{}</td></tr>", time(t), esc(&what)));
    }
    h.push_str("</tbody></table>");
    let recent: Vec<(&str, i64)> = events.iter().map(|e| (e.event.as_str(), e.at_unix_ms as i64)).collect();
    h.push_str(&format!("<p>The stream: <strong>{}</strong></p>", esc(&crate::model::liveness(&recent, time))));
    h
}

fn commands(d: &IncidentDetail) -> String {
    let mut h = String::from(
        "<h2>Commands and outcomes</h2><table><caption>Interrupt commands and what the platform did</caption><thead><tr><th scope=\"col\">When</th>\
         <th scope=\"col\">What</th><th scope=\"col\">Detail</th></tr></thead><tbody>",
    );
    for c in &d.commands {
        h.push_str(&format!(
            "<tr><td>{}</td><td>command <code>{}</code> issued by {}</td><td>rule {}</td></tr>",
            time(c.command.issued_at_unix_ms as i64),
            esc(&c.command.command_id),
            esc(&c.issued_by),
            esc(&c.command.rule)
        ));
    }
    for o in &d.outcomes {
        let x = &o.outcome;
        h.push_str(&format!(
            "<tr><td>{}</td><td>{} (attempt {})</td><td>{} {}</td></tr>",
            time(x.at_unix_ms as i64),
            esc(&x.outcome.replace('_', " ")),
            x.attempts,
            esc(x.reason.as_deref().unwrap_or("")),
            esc(&x.detail)
        ));
    }
    if d.commands.is_empty() && d.outcomes.is_empty() {
        h.push_str("<tr><td colspan=\"3\">No command for this incident.</td></tr>");
    }
    h.push_str("</tbody></table>");
    h
}

fn allow_entries(d: &IncidentDetail, c: &Caller) -> String {
    if d.allow_entries.is_empty() {
        return String::new();
    }
    let mut h = String::from(
        "<h2>Allowlist entries</h2><table><caption>False-positive entries sent to the workers</caption><thead><tr><th scope=\"col\">Entry</th>\
         <th scope=\"col\">Scope</th><th scope=\"col\">Frames</th><th scope=\"col\">By</th><th scope=\"col\">Expires</th><th scope=\"col\">Sent to workers</th><th scope=\"col\">Note</th><th scope=\"col\">State</th></tr></thead><tbody>",
    );
    for e in &d.allow_entries {
        let state = if crate::actions::revoked(d, &e.id) {
            "<strong>revoked</strong>".to_string()
        } else if c.role >= Role::Admin {
            format!(
                "{}<input type=\"hidden\" name=\"entry\" value=\"{}\"><button type=\"submit\" class=\"danger\">Revoke</button></form>",
                form_start("revoke-allow", &c.csrf, &d.incident.id, "Revoke the entry"),
                esc_attr(&e.id)
            )
        } else {
            "live until it expires".to_string()
        };
        h.push_str(&format!(
            "<tr><td><code>{}</code></td><td>{} {}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{state}</td></tr>",
            esc(&e.id),
            esc(&e.scope_kind),
            esc(&e.scope),
            e.hashes.len(),
            esc(&e.created_by),
            time(e.expires_ms),
            e.published_ms.map_or("not yet (retrying)".to_string(), time),
            esc(&e.note)
        ));
    }
    h.push_str("</tbody></table>");
    h
}

fn audit(id: &str, trail: &AuditTrail) -> String {
    let pages = (trail.total + AUDIT_PER_PAGE - 1) / AUDIT_PER_PAGE;
    let first = trail.page * AUDIT_PER_PAGE + 1;
    let shown = if trail.entries.is_empty() {
        format!("none of {} on this page", trail.total)
    } else {
        format!("{}–{} of {}, newest first", first, first + trail.entries.len() as i64 - 1, trail.total)
    };
    let mut h = format!(
        "<h2 id=\"audit\">Audit trail</h2><table><caption>Who did what to this incident (hash-chained; a viewer's views \
         within an hour are one entry): {shown}</caption><thead><tr><th scope=\"col\">#</th><th scope=\"col\">When</th>\
         <th scope=\"col\">Who</th><th scope=\"col\">What</th></tr></thead><tbody>"
    );
    for a in &trail.entries {
        h.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            a.seq,
            time(a.at_ms),
            esc(&a.actor),
            esc(&a.action)
        ));
    }
    h.push_str("</tbody></table>");
    let link = |page: i64, label: &str| {
        format!("<a href=\"/incident?id={}&amp;audit_page={page}#audit\">{label}</a>", super::pages::url_arg(id))
    };
    let mut nav = Vec::new();
    if trail.page > 0 {
        nav.push(link(0, "Newest entries"));
        nav.push(link(trail.page - 1, "Newer entries"));
    }
    if trail.page + 1 < pages {
        nav.push(link(trail.page + 1, "Older entries"));
    }
    if !nav.is_empty() {
        h.push_str(&format!("<p>{}</p>", nav.join(" · ")));
    }
    h
}

/// The export: what the page shows, as JSON (no pixels exist to export).
pub fn export_json(d: &IncidentDetail) -> Value {
    let i = &d.incident;
    json!({
        "incident": {
            "id": i.id, "stream_id": i.stream_id, "account_id": i.account_id, "session_id": i.session_id,
            "worker_id": i.worker_id, "decision": i.decision, "rule": i.rule, "detected_ms": i.detected_ms,
            "state": i.state.as_str(), "interrupt_state": i.interrupt_state.as_str(),
            "acknowledged_ms": i.acknowledged_ms, "acknowledged_by": i.acknowledged_by,
            "escalated_ms": i.escalated_ms, "escalated_by": i.escalated_by, "escalation_note": i.escalation_note,
            "resolved_ms": i.resolved_ms, "resolved_by": i.resolved_by, "resolution": i.resolution.map(Resolution::as_str),
            "resolution_note": i.resolution_note, "stream_closed_ms": i.stream_closed_ms,
        },
        "alerts": d.alerts.iter().map(|a| json!({ "received_ms": a.received_ms, "alert": a.alert })).collect::<Vec<_>>(),
        "commands": d.commands.iter().map(|c| json!({ "issued_by": c.issued_by, "received_ms": c.received_ms, "command": c.command })).collect::<Vec<_>>(),
        "outcomes": d.outcomes.iter().map(|o| json!({ "received_ms": o.received_ms, "outcome": o.outcome })).collect::<Vec<_>>(),
        "allow_entries": d.allow_entries.iter().map(|e| json!({
            "id": e.id, "scope_kind": e.scope_kind, "scope": e.scope, "hashes": e.hashes, "note": e.note,
            "created_by": e.created_by, "created_ms": e.created_ms, "expires_ms": e.expires_ms, "published_ms": e.published_ms,
        })).collect::<Vec<_>>(),
        "audit": d.audit.iter().map(|a| json!({ "seq": a.seq, "at_ms": a.at_ms, "actor": a.actor, "action": a.action, "hash": a.hash })).collect::<Vec<_>>(),
    })
}
