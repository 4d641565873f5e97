//! The console's HTTP side: the queue, the incident page, actions, the response-time
//! report, and `/healthz`, `/readyz`, `/metrics`. Every other request needs a session
//! (the sign-in page and its stylesheet aside); every POST needs the session's CSRF
//! token and a same-origin `Origin`.

mod accounts;
mod allowlist;
pub mod auth;
mod confirm;
mod handlers;
mod incident_page;
pub mod pages;
mod queue;
mod reports;
#[cfg(test)]
mod tests;
pub mod throttle;

use crate::state::Shared;
use axum::Router;
use axum::http::{HeaderValue, header};
use axum::routing::{get, post};
use std::sync::Arc;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(handlers::readyz))
        .route("/metrics", get(handlers::metrics))
        .route("/console.css", get(|| async { ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], pages::CSS) }))
        .route(
            "/console.js",
            get(|| async { ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], pages::SCRIPT) }),
        )
        .route("/login", get(handlers::login_page).post(handlers::login))
        .route("/logout", post(handlers::logout))
        .route("/", get(queue::queue))
        .route("/actions/bulk", post(queue::bulk))
        .route("/incident", get(handlers::incident))
        .route("/incident/export", get(handlers::export))
        .route("/reports", get(reports::reports))
        .route("/actions/{action}", post(handlers::action))
        .route("/accounts", get(accounts::list).post(accounts::save))
        .route("/accounts/disable", post(accounts::disable))
        .route("/allowlist", get(allowlist::list))
        .route("/account/times", post(accounts::times))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(shared)
}

/// Nothing is cached, framed or sniffed; the only script is the console's own file
/// (`/console.js`: self-refresh and shortcuts), never inline.
async fn security_headers(mut r: axum::response::Response) -> axum::response::Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; img-src 'none'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    r
}
