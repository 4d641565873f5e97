//! The admin HTTP server, on its own thread and runtime so it answers while the worker
//! is loaded (linkerd2-proxy's habit). Open and read-only: `/healthz`, `/readyz`,
//! `/metrics` (probes and Prometheus). Behind the admin bearer token ([`super::auth`]):
//! `/streams`, `POST /admin/banks/reload`, `POST /admin/banks/{name}/accept-shrink`,
//! `POST /admin/drain` — on the same address, or
//! on `admin.control_listen` when set, so the control routes can stay off the network
//! that probes reach. It also catches SIGTERM/SIGINT and starts the graceful shutdown.

use super::auth::{AdminToken, require_token};
use super::streams::Streams;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use axum::routing::{get, post};
use prometheus::Encoder;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use vigil_hash::BankStore;
use vigil_media::ingest::http::{HttpLimits, serve};

pub struct AdminState {
    /// `None` when the worker could not start its pipeline (see `not_ready`).
    pub streams: Option<Arc<Streams>>,
    /// Why the worker can never become ready (a model failed to load).
    pub not_ready: Option<String>,
    pub banks: Arc<BankStore>,
    pub registry: prometheus::Registry,
    pub shutdown: Arc<AtomicBool>,
    pub token: AdminToken,
    /// The Kafka sink's health (producer fatal error, spool fill), when Kafka is on.
    pub sink_health: Option<vigil_sink::KafkaHealth>,
}

/// Requests refused by the admin token check, by why (`no_token`, `bad_token`).
static REFUSED: LazyLock<prometheus::IntCounterVec> = LazyLock::new(|| {
    prometheus::IntCounterVec::new(
        prometheus::Opts::new(
            "vigil_admin_requests_refused_total",
            "Admin requests refused by the token check, by why",
        ),
        &["why"],
    )
    .expect("valid metric")
});

/// Counts (and logs, at debug: a scanner must not flood the log) a refused request.
pub fn refused(why: &'static str) {
    REFUSED.with_label_values(&[why]).inc();
    tracing::debug!(why, "admin: request refused");
}

/// Where the admin server listens: (open routes, control routes if apart).
pub struct AdminAddrs {
    pub open: SocketAddr,
    pub control: Option<SocketAddr>,
}

/// Binds `listen` (and `control_listen`, when set) and serves until the process ends.
pub fn start(listen: &str, control_listen: Option<&str>, state: Arc<AdminState>) -> anyhow::Result<AdminAddrs> {
    state.registry.register(Box::new(REFUSED.clone()))?;
    if !state.token.is_set() {
        tracing::warn!("no admin token configured: /streams and /admin/* answer 403");
    }
    let bind = |addr: &str| -> anyhow::Result<std::net::TcpListener> {
        let l = std::net::TcpListener::bind(addr)?;
        l.set_nonblocking(true)?;
        Ok(l)
    };
    let open_listener = bind(listen)?;
    let control_listener = control_listen.map(bind).transpose()?;
    let addrs = AdminAddrs {
        open: open_listener.local_addr()?,
        control: control_listener.as_ref().map(|l| l.local_addr()).transpose()?,
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::Builder::new().name("vigil-admin".into()).spawn(move || {
        runtime.block_on(async move {
            tokio::spawn(watch_signals(state.shutdown.clone()));
            let open = Router::new()
                .route("/healthz", get(|| async { "ok\n" }))
                .route("/readyz", get(ready))
                .route("/metrics", get(metrics))
                .with_state(state.clone());
            let control = Router::new()
                .route("/streams", get(streams))
                .route("/admin/banks/reload", post(reload_banks))
                .route("/admin/banks/{name}/accept-shrink", post(accept_shrink))
                .route("/admin/drain", post(drain))
                .route_layer(axum::middleware::from_fn_with_state(state.token.clone(), require_token))
                .with_state(state);
            match control_listener {
                Some(c) => {
                    tokio::spawn(serve_on(c, control));
                    serve_on(open_listener, open).await
                }
                None => serve_on(open_listener, open.merge(control)).await,
            }
        })
    })?;
    Ok(addrs)
}

/// Serves until the process exits; the same hardened loop as WHIP.
async fn serve_on(listener: std::net::TcpListener, app: Router) {
    match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => serve(l, app, HttpLimits::default(), std::future::pending()).await,
        Err(e) => tracing::error!("admin server: {e}"),
    }
}

async fn watch_signals(shutdown: Arc<AtomicBool>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot watch SIGTERM/SIGINT");
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("shutting down: draining streams");
    shutdown.store(true, Relaxed);
}

/// Ready when not draining and every bank loaded (models were warmed up before the
/// server started: a worker whose models fail to load never becomes ready).
async fn ready(State(s): State<Arc<AdminState>>) -> impl IntoResponse {
    let mut reasons: Vec<String> = s.not_ready.iter().cloned().collect();
    if s.streams.as_ref().is_some_and(|st| st.draining.load(Relaxed)) || s.shutdown.load(Relaxed) {
        reasons.push("draining".to_string());
    }
    reasons.extend(s.streams.as_ref().and_then(|st| st.at_capacity()));
    for b in s.banks.status() {
        if !b.is_ready() {
            reasons.push(format!("bank {}: {:?} {}", b.name, b.state, b.detail.unwrap_or_default()));
        }
    }
    reasons.extend(s.sink_health.iter().flat_map(vigil_sink::KafkaHealth::not_ready));
    let code = if reasons.is_empty() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (
        code,
        Json(
            json!({"ready": reasons.is_empty(), "reasons": reasons, "streams": s.streams.as_ref().map_or(0, |st| st.len())}),
        ),
    )
}

async fn metrics(State(s): State<Arc<AdminState>>) -> impl IntoResponse {
    let mut buf = Vec::new();
    let _ = prometheus::TextEncoder::new().encode(&s.registry.gather(), &mut buf);
    ([("content-type", "text/plain; version=0.0.4")], buf)
}

async fn streams(State(s): State<Arc<AdminState>>) -> impl IntoResponse {
    Json(s.streams.as_ref().map(|st| st.list()).unwrap_or_default())
}

/// Reloads every bank now (built aside, swapped atomically; a shrinking reload is
/// refused and shows in the status).
async fn reload_banks(State(s): State<Arc<AdminState>>) -> impl IntoResponse {
    let banks = s.banks.clone();
    let result = tokio::task::spawn_blocking(move || {
        let bad = banks.reload(true);
        json!({"bad_lines": bad.len(), "banks": banks.status()})
    })
    .await;
    match result {
        Ok(v) => (StatusCode::OK, Json(v)),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"error": e.to_string()}))),
    }
}

/// Accepts that a bank shrank on purpose: it is reloaded now whatever its size, and its
/// high-water mark restarts from it (a partial file is still refused).
async fn accept_shrink(State(s): State<Arc<AdminState>>, Path(name): Path<String>) -> impl IntoResponse {
    if let Err(e) = s.banks.accept_shrink(&name) {
        return (StatusCode::NOT_FOUND, Json(json!({"error": e.to_string()})));
    }
    let banks = s.banks.clone();
    match tokio::task::spawn_blocking(move || (banks.reload(false), banks.status())).await {
        Ok((bad, st)) => (StatusCode::OK, Json(json!({"bad_lines": bad.len(), "banks": st}))),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"error": e.to_string()}))),
    }
}

async fn drain(State(s): State<Arc<AdminState>>) -> impl IntoResponse {
    s.shutdown.store(true, Relaxed);
    (StatusCode::ACCEPTED, Json(json!({"draining": true})))
}
