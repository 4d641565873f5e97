//! `/accounts`, for admins: local accounts (argon2id), their roles, and disabling one
//! (which ends its sessions). Every change is audited. Proxy users appear here too, with
//! the role their proxy gave them last.

use super::auth;
use super::handlers::{caller, page, poster, refusal, store_down};
use super::pages::{esc, esc_attr};
use crate::model::{Role, now_ms};
use crate::state::Shared;
use axum::extract::{ConnectInfo, Form, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

pub async fn list(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let c = match caller(&shared, &headers, peer, "/accounts").await {
        Ok(c) => c,
        Err(r) => return r,
    };
    if c.role < Role::Admin {
        auth::refused("role");
        return refusal(&shared, &c, StatusCode::FORBIDDEN, "this needs the admin role", ("/", "Back to the queue"));
    }
    let users = match shared.store.users().await {
        Ok(u) => u,
        Err(e) => return store_down(e),
    };
    let mut body = String::from(
        "<table><caption>Accounts</caption><thead><tr><th scope=\"col\">User</th><th scope=\"col\">Role</th>\
         <th scope=\"col\">Sign-in</th><th scope=\"col\">State</th><th scope=\"col\">Change</th></tr></thead><tbody>",
    );
    for u in &users {
        let (label, to) = if u.disabled { ("Enable", "false") } else { ("Disable", "true") };
        body.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><form method=\"post\" action=\"/accounts/disable\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\"><input type=\"hidden\" name=\"name\" value=\"{}\">\
             <input type=\"hidden\" name=\"disabled\" value=\"{to}\"><button type=\"submit\">{label} {}</button></form></td></tr>",
            esc(&u.name),
            u.role.as_str(),
            if u.password_hash.is_some() { "password" } else { "auth proxy" },
            if u.disabled { "disabled" } else { "active" },
            esc_attr(&c.csrf),
            esc_attr(&u.name),
            esc(&u.name),
        ));
    }
    body.push_str("</tbody></table>");
    let roles: String = Role::ALL.iter().map(|r| format!("<option value=\"{0}\">{0}</option>", r.as_str())).collect();
    body.push_str(&format!(
        "<h2>Add an account, or change one</h2><form method=\"post\" action=\"/accounts\" style=\"max-width:24rem\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <label for=\"acct-name\">User name</label><input id=\"acct-name\" name=\"name\" required maxlength=\"200\">\
         <label for=\"acct-role\">Role</label><select id=\"acct-role\" name=\"role\">{roles}</select>\
         <label for=\"acct-password\">Password (at least 12 characters; empty keeps the current one)</label>\
         <input id=\"acct-password\" name=\"password\" type=\"password\" autocomplete=\"new-password\" minlength=\"12\">\
         <p><button type=\"submit\">Save the account</button></p></form>",
        esc_attr(&c.csrf)
    ));
    page(&shared, &c, "Accounts", &body)
}

/// A refusal as a page with navigation (and the reason), never bare text.
fn refused(shared: &Shared, c: &auth::Caller, status: StatusCode, why: &str) -> Response {
    refusal(shared, c, status, why, ("/accounts", "Back to the accounts"))
}

/// The refusal when `name`, an enabled admin now, is the only one (the console must
/// keep one) and is about to stop being an admin; `None` when it may.
async fn keep_an_admin(shared: &Shared, c: &auth::Caller, name: &str) -> Option<Response> {
    let users = match shared.store.users().await {
        Ok(u) => u,
        Err(e) => return Some(store_down(e)),
    };
    let is_admin = |u: &crate::store::User| u.role == Role::Admin && !u.disabled;
    let last =
        users.iter().any(|u| u.name == name && is_admin(u)) && !users.iter().any(|u| u.name != name && is_admin(u));
    last.then(|| {
        let why = format!("{name} is the last admin: make another admin first");
        refused(shared, c, StatusCode::CONFLICT, &why)
    })
}

pub async fn save(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let c = match poster(&shared, &headers, peer, &form, Role::Admin).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let name = form.get("name").map_or("", |s| s.trim());
    if name.is_empty() || name.len() > 200 || name.chars().any(|ch| ch.is_control() || ch.is_whitespace()) {
        return refused(
            &shared,
            &c,
            StatusCode::BAD_REQUEST,
            "the user name must be 1 to 200 characters, without spaces",
        );
    }
    let Some(role) = form.get("role").and_then(|r| Role::parse(r)) else {
        return refused(&shared, &c, StatusCode::BAD_REQUEST, "choose a role: viewer, reviewer or admin");
    };
    if role < Role::Admin
        && let Some(refusal) = keep_an_admin(&shared, &c, name).await
    {
        return refusal;
    }
    let password = form.get("password").map_or("", |s| s.as_str());
    let existing = match shared.store.user(name).await {
        Ok(u) => u,
        Err(e) => return store_down(e),
    };
    let hash = match (password.is_empty(), &existing) {
        (true, Some(_)) => None,
        (true, None) => return refused(&shared, &c, StatusCode::BAD_REQUEST, "a new account needs a password"),
        (false, _) if password.chars().count() < 12 => {
            return refused(&shared, &c, StatusCode::BAD_REQUEST, "the password must have at least 12 characters");
        }
        (false, _) => match auth::hash_password(password) {
            Ok(h) => Some(h),
            Err(e) => return refused(&shared, &c, StatusCode::INTERNAL_SERVER_ERROR, &e),
        },
    };
    let detail =
        serde_json::json!({ "role": role.as_str(), "password_changed": hash.is_some(), "new": existing.is_none() });
    if let Err(e) = shared.store.upsert_user(name, hash.as_deref(), role).await {
        return store_down(e);
    }
    if let Err(e) = shared.store.audit(&c.user, "account", name, &detail, now_ms()).await {
        return store_down(e);
    }
    Redirect::to("/accounts").into_response()
}

pub async fn disable(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let c = match poster(&shared, &headers, peer, &form, Role::Admin).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let name = form.get("name").map_or("", |s| s.as_str());
    let disabled = form.get("disabled").is_some_and(|d| d == "true");
    if name == c.user && disabled {
        return refused(&shared, &c, StatusCode::CONFLICT, "an admin cannot disable their own account");
    }
    if disabled && let Some(refusal) = keep_an_admin(&shared, &c, name).await {
        return refusal;
    }
    match shared.store.set_user_disabled(name, disabled).await {
        Ok(()) => {}
        Err(crate::store::StoreError::NotFound(what)) => {
            return refused(&shared, &c, StatusCode::NOT_FOUND, &format!("{what} not found"));
        }
        Err(e) => return store_down(e),
    }
    let action = if disabled { "account.disable" } else { "account.enable" };
    if let Err(e) = shared.store.audit(&c.user, action, name, &serde_json::json!({}), now_ms()).await {
        return store_down(e);
    }
    Redirect::to("/accounts").into_response()
}

/// Any signed-in account chooses UTC or local time for the times its pages show.
pub async fn times(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let c = match poster(&shared, &headers, peer, &form, Role::Viewer).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let local = form.get("local").is_some_and(|v| v == "1");
    match shared.store.set_local_time(&c.user, local).await {
        Ok(()) => Redirect::to("/").into_response(),
        Err(crate::store::StoreError::NotFound(_)) => {
            refusal(&shared, &c, StatusCode::CONFLICT, "this account has no settings here", ("/", "Back to the queue"))
        }
        Err(e) => store_down(e),
    }
}
