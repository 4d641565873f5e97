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
use vigil_http::{HttpLimits, serve};

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
    /// What `/readyz` shows while still ready (unsigned records believed, say).
    pub warnings: Vec<String>,
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

/// 1 while `/readyz` answers ready, refreshed every second.
pub static READY: LazyLock<prometheus::IntGauge> = LazyLock::new(|| {
    prometheus::IntGauge::new("vigil_worker_ready", "1 when the worker is ready (warm, not draining, below capacity)")
        .expect("valid metric")
});
/// 1 once a drain started.
pub static DRAINING: LazyLock<prometheus::IntGauge> = LazyLock::new(|| {
    prometheus::IntGauge::new("vigil_worker_draining", "1 once the worker is draining").expect("valid metric")
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
    for why in ["no_token", "bad_token"] {
        let _ = REFUSED.with_label_values(&[why]);
    }
    state.registry.register(Box::new(REFUSED.clone()))?;
    state.registry.register(Box::new(READY.clone()))?;
    state.registry.register(Box::new(DRAINING.clone()))?;
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
            tokio::spawn(publish_readiness(state.clone()));
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
                .route("/admin/streams", post(start_stream))
                .route("/admin/streams/{*id}", axum::routing::delete(stop_stream))
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

/// Why the worker is not ready now (none: ready). Ready means warm (models loaded and
/// run once before the server started), not draining, below capacity, every bank
/// loaded, and the Kafka sink taking interrupt commands (an outage short of refusing
/// them is a warning: see `KafkaHealth::warnings`).
fn not_ready(s: &AdminState) -> Vec<String> {
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
    reasons
}

async fn ready(State(s): State<Arc<AdminState>>) -> impl IntoResponse {
    let reasons = not_ready(&s);
    let mut warnings = s.warnings.clone();
    warnings.extend(s.sink_health.iter().flat_map(vigil_sink::KafkaHealth::warnings));
    let code = if reasons.is_empty() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (
        code,
        Json(json!({
            "ready": reasons.is_empty(),
            "reasons": reasons,
            "warnings": warnings,
            "streams": s.streams.as_ref().map_or(0, |st| st.len()),
        })),
    )
}

/// Keeps `vigil_worker_ready` current, probed or not (alerting rules read it).
async fn publish_readiness(s: Arc<AdminState>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tick.tick().await;
        let state = s.clone();
        if let Ok(reasons) = tokio::task::spawn_blocking(move || not_ready(&state)).await {
            READY.set(i64::from(reasons.is_empty()));
        }
    }
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

/// `POST /admin/streams` with `{"stream_id", "source_url", "account_id"?}`: pulls one
/// stream on this worker, by hand (the same checks as a fleet lifecycle event).
async fn start_stream(State(s): State<Arc<AdminState>>, body: axum::body::Bytes) -> impl IntoResponse {
    let Some(streams) = s.streams.clone() else {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"error": "the worker has no pipeline"})));
    };
    let mut event: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return (StatusCode::BAD_REQUEST, Json(json!({"error": format!("not JSON: {e}")}))),
    };
    if let Some(o) = event.as_object_mut() {
        o.insert("event".into(), json!("start"));
    }
    let (id, wanted) = match super::fleet::parse_event(None, Some(event.to_string().as_bytes())) {
        Ok((id, Some(w))) => (id, w),
        Ok((_, None)) => unreachable!("a start event"),
        Err(reason) => return (StatusCode::BAD_REQUEST, Json(json!({"error": reason.as_str()}))),
    };
    let shown = vigil_core::redact::uri(&wanted.uri);
    let started = tokio::task::spawn_blocking(move || {
        streams.start(&id, vigil_media::isolate::ChildSource::Uri(wanted.uri), shown, wanted.account_id).map(|_| id)
    })
    .await;
    use super::streams::StartError;
    match started {
        Ok(Ok(id)) => (StatusCode::CREATED, Json(json!({"started": id}))),
        Ok(Err(e @ StartError::AlreadyLive(_))) => (StatusCode::CONFLICT, Json(json!({"error": e.to_string()}))),
        Ok(Err(e @ (StartError::Draining | StartError::Full(_) | StartError::AtCapacity(_)))) => {
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"error": e.to_string()})))
        }
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"error": e.to_string()}))),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"error": e.to_string()}))),
    }
}

/// `DELETE /admin/streams/{id}`: stops one stream on this worker, by hand.
async fn stop_stream(State(s): State<Arc<AdminState>>, Path(id): Path<String>) -> impl IntoResponse {
    let Some(streams) = s.streams.clone() else {
        return (StatusCode::NOT_FOUND, Json(json!({"error": "no such stream"})));
    };
    let reason = "stopped by an operator (admin API)";
    match tokio::task::spawn_blocking(move || streams.stop(&id, reason).then_some(id)).await {
        Ok(Some(id)) => (StatusCode::OK, Json(json!({"stopped": id}))),
        Ok(None) => (StatusCode::NOT_FOUND, Json(json!({"error": "no such stream"}))),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"error": e.to_string()}))),
    }
}
