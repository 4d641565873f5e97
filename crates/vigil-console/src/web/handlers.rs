//! Request handlers: who asks (session or proxy), what they may do (role), then the
//! page or the action.

use super::auth::{self, Caller, Who};
use super::pages::{self, esc, esc_attr, url_arg};
use crate::actions::{self, ActionError};
use crate::metrics::METRICS;
use crate::model::{Resolution, Role, now_ms};
use crate::state::Shared;
use crate::store::StoreError;
use axum::extract::{ConnectInfo, Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

pub(super) type S = State<Arc<Shared>>;

pub(super) fn store_down(e: StoreError) -> Response {
    METRICS.store_errors.inc();
    tracing::error!("store: {e}");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Html(pages::layout(
            "Store unavailable",
            None,
            None,
            "<p>The console's store does not answer; try again shortly.</p>",
        )),
    )
        .into_response()
}

/// The caller, or the response that sends them to sign in.
pub(super) async fn caller(
    shared: &Shared,
    headers: &HeaderMap,
    peer: SocketAddr,
    uri: &str,
) -> Result<Caller, Response> {
    match auth::who(shared, headers, peer).await.map_err(store_down)? {
        Who::Caller(c) => Ok(c),
        Who::NewProxySession(cookie) => Err(([(header::SET_COOKIE, cookie)], Redirect::to(uri)).into_response()),
        Who::Nobody => {
            auth::refused("no_session");
            Err(Redirect::to("/login").into_response())
        }
    }
}

fn banner(shared: &Shared) -> Option<String> {
    shared.stale_since().map(|since| {
        if shared.outbound.is_none() {
            "No Kafka cluster is configured: this console shows what its store holds, and nothing new arrives.".to_string()
        } else {
            format!(
                "Stale: the Kafka cluster has not answered since {}. New alerts and outcomes are not arriving; what is shown may be out of date.",
                esc(&pages::time(since))
            )
        }
    })
}

/// A refusal for a signed-in caller: a page with navigation, the reason, and a way back.
pub(super) fn refusal(shared: &Shared, c: &Caller, status: StatusCode, why: &str, back: (&str, &str)) -> Response {
    let body = format!(
        "<p class=\"banner\" role=\"alert\">{}</p><p><a href=\"{}\">{}</a></p>",
        esc(why),
        esc_attr(back.0),
        esc(back.1)
    );
    let mut r = page(shared, c, "Not done", &body);
    *r.status_mut() = status;
    r
}

pub(super) fn page(shared: &Shared, c: &Caller, title: &str, body: &str) -> Response {
    Html(pages::layout(title, Some(c), banner(shared).as_deref(), body)).into_response()
}

pub async fn readyz(State(shared): S) -> Response {
    // A store that does not answer within a probe's patience is not there.
    let ping = match tokio::time::timeout(std::time::Duration::from_secs(2), shared.store.ping()).await {
        Ok(answer) => answer.map_err(|e| e.to_string()),
        Err(_) => Err("no answer within 2 s".to_string()),
    };
    match ping {
        Ok(()) if shared.store_up() => {
            // Still ready, with the warning said (a test cluster's unsigned records).
            let warning = shared.outbound.as_ref().and_then(|o| o.trust.warning());
            let body = warning.map_or_else(|| "ready\n".to_string(), |w| format!("ready; warning: {w}\n"));
            (StatusCode::OK, body).into_response()
        }
        Ok(()) => (StatusCode::SERVICE_UNAVAILABLE, "not ready: intake cannot write to the store\n").into_response(),
        Err(e) => {
            shared.set_store_up(false);
            (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: the store does not answer: {e}\n")).into_response()
        }
    }
}

pub async fn metrics(State(shared): S) -> Response {
    use prometheus::Encoder;
    let mut out = Vec::new();
    let _ = prometheus::TextEncoder::new().encode(&shared.registry.gather(), &mut out);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

pub async fn login_page() -> Response {
    Html(pages::login(None)).into_response()
}

/// Password sign-in: the origin, then the throttle (a refusal runs no argon2), then the
/// password through the bounded argon2 queue. Every failure is audited (the name as
/// typed, escaped, and the address; never the password).
pub async fn login(
    State(shared): S,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if !auth::same_origin(&shared, &headers) {
        auth::refused("origin");
        return (StatusCode::FORBIDDEN, "cross-origin sign-in refused\n").into_response();
    }
    let (user, password) = (form.get("user").map(|s| s.trim()).unwrap_or(""), form.get("password").map_or("", |s| s));
    let address = auth::client_addr(&shared, &headers, peer);
    let now = now_ms();
    if let Err(secs) = shared.sign_in.throttle.check(user, address, now) {
        // Counted, not audited: no password was checked, and an entry per refusal would
        // let anyone grow the log.
        METRICS.logins.with_label_values(&["throttled"]).inc();
        let msg = format!("Too many failed sign-ins from here or for this account: try again in {secs} s.");
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, secs.to_string())],
            Html(pages::login(Some(&msg))),
        )
            .into_response();
    }
    let account = match shared.store.user(user).await {
        Ok(a) => a,
        Err(e) => return store_down(e),
    };
    let hash = account.as_ref().and_then(|a| a.password_hash.clone());
    // The same argon2 work whether or not the user exists.
    let hash = hash.unwrap_or_else(|| auth::decoy_hash().to_string());
    let verified = match shared.sign_in.gate.verify(password.to_string(), hash).await {
        Ok(v) => v,
        Err(super::throttle::Busy) => {
            METRICS.logins.with_label_values(&["busy"]).inc();
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "1".to_string())],
                Html(pages::login(Some("Too many sign-ins at once: try again in a moment."))),
            )
                .into_response();
        }
    };
    let why = match &account {
        None => Some("unknown user"),
        Some(a) if a.password_hash.is_none() => Some("no password (an auth-proxy account)"),
        Some(_) if !verified => Some("wrong password"),
        Some(a) if a.disabled => Some("disabled"),
        Some(_) => None,
    };
    if let Some(why) = why {
        shared.sign_in.throttle.failed(user, address, now);
        METRICS.logins.with_label_values(&["refused"]).inc();
        let typed = auth::escaped_user(user);
        tracing::warn!(user = %typed, %address, "sign-in refused");
        let detail = serde_json::json!({ "user": typed, "address": address.to_string(), "why": why });
        if let Err(e) = shared.store.audit("anonymous", "login.failed", "console", &detail, now).await {
            return store_down(e);
        }
        return (StatusCode::UNAUTHORIZED, Html(pages::login(Some("Wrong user name or password.")))).into_response();
    }
    shared.sign_in.throttle.succeeded(user);
    METRICS.logins.with_label_values(&["ok"]).inc();
    let detail = serde_json::json!({ "via": "password", "address": address.to_string() });
    if let Err(e) = shared.store.audit(user, "login", "console", &detail, now).await {
        return store_down(e);
    }
    match auth::start_session(&shared, user).await {
        Ok(cookie) => ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response(),
        Err(e) => store_down(e),
    }
}

pub async fn logout(
    State(shared): S,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if let Err(refusal) = poster(&shared, &headers, peer, &form, Role::Viewer).await {
        return refusal;
    }
    if let Some(t) = auth::session_token(&shared, &headers) {
        let _ = shared.store.delete_session(&auth::token_hash(&t)).await;
    }
    let cleared = auth::session_cookie(&shared, "", 0);
    ([(header::SET_COOKIE, cleared)], Redirect::to("/login")).into_response()
}

/// The caller of a POST, after the CSRF, origin and role checks.
pub(super) async fn poster(
    shared: &Shared,
    headers: &HeaderMap,
    peer: SocketAddr,
    form: &HashMap<String, String>,
    need: Role,
) -> Result<Caller, Response> {
    let c = caller(shared, headers, peer, "/").await?;
    match check_post(shared, headers, &c, form, need) {
        Some(refusal) => Err(refusal),
        None => Ok(c),
    }
}

/// CSRF, origin and role, for every POST.
fn check_post(
    shared: &Shared,
    headers: &HeaderMap,
    c: &Caller,
    form: &HashMap<String, String>,
    need: Role,
) -> Option<Response> {
    let back = ("/", "Back to the queue");
    if !auth::same_origin(shared, headers) {
        auth::refused("origin");
        return Some(refusal(shared, c, StatusCode::FORBIDDEN, "cross-origin request refused", back));
    }
    if !auth::csrf_ok(c, form.get("csrf").map_or("", |s| s)) {
        auth::refused("csrf");
        let why = "the form's token is missing or stale: reload the page";
        return Some(refusal(shared, c, StatusCode::FORBIDDEN, why, back));
    }
    if c.role < need {
        auth::refused("role");
        let why = format!("this needs the {} role", need.as_str());
        return Some(refusal(shared, c, StatusCode::FORBIDDEN, &why, back));
    }
    None
}

#[derive(serde::Deserialize)]
pub struct IdQuery {
    id: String,
}

#[derive(serde::Deserialize)]
pub struct IncidentQuery {
    id: String,
    /// The action just done, for its message (only known actions are shown).
    #[serde(default)]
    done: Option<String>,
    /// The page of the audit trail: 0 (the newest entries, the default), 1, 2, ...
    #[serde(default)]
    audit_page: Option<String>,
}

pub async fn incident(
    State(shared): S,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<IncidentQuery>,
) -> Response {
    let c = match caller(&shared, &headers, peer, &format!("/incident?id={}", url_arg(&q.id))).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let d = match shared.store.incident(&q.id).await {
        Ok(Some(d)) => d,
        Ok(None) => {
            return (
                StatusCode::NOT_FOUND,
                page(&shared, &c, "No such incident", "<p><a href=\"/\">Back to the queue</a></p>"),
            )
                .into_response();
        }
        Err(e) => return store_down(e),
    };
    // Every view is on the record: one entry per viewer and incident per hour.
    if let Err(e) = shared.store.audit_view(&c.user, &q.id, now_ms()).await {
        return store_down(e);
    }
    let wanted = q.audit_page.as_deref().and_then(|p| p.parse::<i64>().ok()).unwrap_or(0).clamp(0, 1_000_000);
    let trail = match shared.store.audit_page(&q.id, wanted, super::incident_page::AUDIT_PER_PAGE).await {
        Ok((entries, total)) => super::incident_page::AuditTrail { entries, total, page: wanted },
        Err(e) => return store_down(e),
    };
    // The stream's lifecycle from an hour before the detection on.
    let events = match shared.store.stream_events(&d.incident.stream_id, d.incident.detected_ms - 3_600_000).await {
        Ok(e) => e,
        Err(e) => return store_down(e),
    };
    let proposal = match shared.store.false_positive_proposal(&q.id).await {
        Ok(p) => p,
        Err(e) => return store_down(e),
    };
    let channels = shared.paging.config.channels();
    let platform_link = shared.cfg.stream_url(&d.incident.stream_id, d.incident.account_id.as_deref());
    let assignable: Vec<String> = match shared.store.users().await {
        Ok(users) => users.into_iter().filter(|u| !u.disabled && u.role >= Role::Reviewer).map(|u| u.name).collect(),
        Err(e) => return store_down(e),
    };
    let notice = q.done.as_deref().and_then(|d| super::confirm::done_message(d, !channels.is_empty()));
    let view = super::incident_page::View {
        events: &events,
        trail: &trail,
        proposal: proposal.as_ref(),
        notice,
        channels: &channels,
        assignable: &assignable,
        platform_link,
    };
    page(
        &shared,
        &c,
        &format!("Incident on {}", d.incident.stream_id),
        &super::incident_page::render(&d, &view, &c, now_ms()),
    )
}

pub async fn export(
    State(shared): S,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<IdQuery>,
) -> Response {
    let c = match caller(&shared, &headers, peer, "/").await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let mut d = match shared.store.incident(&q.id).await {
        Ok(Some(d)) => d,
        Ok(None) => return StatusCode::NOT_FOUND.into_response(),
        Err(e) => return store_down(e),
    };
    // The export carries the whole trail, views included, oldest first.
    d.audit = match shared.store.audit_entries(Some(&q.id), i64::MAX).await {
        Ok(mut all) => {
            all.reverse();
            all
        }
        Err(e) => return store_down(e),
    };
    if let Err(e) =
        shared.store.audit(&c.user, "export", &q.id, &serde_json::json!({ "format": "json" }), now_ms()).await
    {
        return store_down(e);
    }
    METRICS.actions.with_label_values(&["export"]).inc();
    let name = format!("attachment; filename=\"incident-{}.json\"", url_arg(&q.id));
    (
        [(header::CONTENT_TYPE, "application/json".to_string()), (header::CONTENT_DISPOSITION, name)],
        axum::Json(super::incident_page::export_json(&d)),
    )
        .into_response()
}

pub async fn action(
    State(shared): S,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(action): Path<String>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let c = match poster(&shared, &headers, peer, &form, Role::Reviewer).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let id = form.get("incident").cloned().unwrap_or_default();
    let field = |k: &str| form.get(k).map_or("", |s| s.as_str());
    // What cannot be undone is asked twice: a page that says what will happen, whose
    // form repeats the first one's fields with confirm=yes. No script needed.
    if let Some(question) = super::confirm::question(&action)
        && field("confirm") != "yes"
    {
        let mut fields: Vec<(String, String)> = form.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        fields.sort();
        return page(&shared, &c, "Confirm", &super::confirm::page(&action, question, &fields));
    }
    let mut done = action.clone();
    let result = match action.as_str() {
        "hold" => actions::hold(&shared, &id, &c.user).await,
        "release" => actions::release(&shared, &id, &c.user).await,
        "assign" => actions::assign(&shared, &id, &c.user, field("to")).await,
        "acknowledge" => actions::acknowledge(&shared, &id, &c.user).await,
        "cut" => actions::cut_now(&shared, &id, &c.user).await,
        "escalate" => match actions::escalate(&shared, &id, &c.user, field("note"), field("target")).await {
            Ok(paged) => {
                if !paged {
                    done = "escalate-unpaged".into();
                }
                Ok(())
            }
            Err(e) => Err(e),
        },
        // A false positive has one way in (its own action: it allow-lists, and needs four
        // eyes on an interrupt); never a plain resolution.
        "resolve" => match Resolution::parse(field("outcome")).filter(|r| *r != Resolution::FalsePositive) {
            Some(r) => actions::resolve(&shared, &id, &c.user, r, field("note")).await,
            None => Err(ActionError::Refused("choose an outcome".into())),
        },
        "false-positive" => {
            let days = field("expiry_days").parse().unwrap_or(0);
            match actions::false_positive(&shared, &id, &c.user, field("scope"), field("note"), days).await {
                Ok(actions::FalsePositive::Proposed) => {
                    done = "proposed".into();
                    Ok(())
                }
                Ok(actions::FalsePositive::Done(_)) => Ok(()),
                Err(e) => Err(e),
            }
        }
        "approve-false-positive" => actions::approve_false_positive(&shared, &id, &c.user).await.map(|_| ()),
        "reject-false-positive" => actions::reject_false_positive(&shared, &id, &c.user, field("note")).await,
        "revoke-allow" if c.role < Role::Admin => {
            auth::refused("role");
            let back = format!("/incident?id={}", url_arg(&id));
            return refusal(
                &shared,
                &c,
                StatusCode::FORBIDDEN,
                "this needs the admin role",
                (&back, "Back to the incident"),
            );
        }
        "revoke-allow" => actions::revoke_allow_entry(&shared, &id, field("entry"), &c.user).await,
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    let back = format!("/incident?id={}", url_arg(&id));
    let status = match &result {
        // The incident page then says what was done (a fixed message per action).
        Ok(()) => return Redirect::to(&format!("{back}&done={}", url_arg(&done))).into_response(),
        Err(ActionError::Store(StoreError::NotFound(_))) => StatusCode::NOT_FOUND,
        // The reviewer's to fix (a missing note, someone else's hold, a wrong state).
        Err(ActionError::Refused(_) | ActionError::Store(StoreError::Conflict(_) | StoreError::Invalid(_))) => {
            StatusCode::CONFLICT
        }
        Err(e) => {
            tracing::error!(action = ?action, incident = ?id, "action failed: {e}");
            StatusCode::SERVICE_UNAVAILABLE
        }
    };
    let why = result.err().map(|e| e.to_string()).unwrap_or_default();
    let body = format!(
        "<p class=\"banner\" role=\"alert\">{}</p><p><a href=\"{}\">Back to the incident</a></p>",
        esc(&why),
        esc_attr(&back)
    );
    (status, page(&shared, &c, "Not done", &body)).into_response()
}
