//! The WHIP endpoint (RFC 9725): WebRTC publishes over plain HTTP.
//!
//! - `POST /whip` with `Authorization: Bearer STREAM_KEY` and an `application/sdp`
//!   offer → `201 Created`, the SDP answer, and `Location: /whip/session/ID`.
//! - `DELETE /whip/session/ID` (same bearer key) ends the publish.
//! - `PATCH` → 405: the answer already carries every ICE candidate (no trickle).
//!
//! The key is checked like an RTMP stream key (the same static or signed keys); the
//! stream is named by the key's name, `whip/NAME`. The worker never parses the offer:
//! it checks only its size and shape here, and the stream's confined decode child
//! (where `webrtcbin` runs) parses it and answers. Session ids are 128 random bits.

use super::keys::{KeyError, StreamKeys};
use crate::isolate::StreamHandle;
use crate::metrics::METRICS;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// Largest offer accepted (browsers send 4–10 KiB).
pub const MAX_OFFER_BYTES: usize = 64 * 1024;
/// Most media sections (m= lines) in an offer: a video, an audio, some spare.
pub const MAX_MEDIA_SECTIONS: usize = 8;

/// A publish whose key was valid, for the worker to admit.
#[derive(Debug, Clone)]
pub struct WhipRequest {
    /// The stream's name (from the key), never the key.
    pub name: String,
    pub peer: SocketAddr,
    pub offer: String,
}

/// Why a publish was not taken, and the HTTP status that says so.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub status: u16,
    pub reason: String,
}

/// Admits WHIP publishes: starts the stream and returns the child's answer.
pub trait WhipAdmission: Send + Sync + 'static {
    /// Blocking: waits for the answer (the server calls it off its async threads).
    fn publish(&self, request: WhipRequest) -> Result<(String, Arc<StreamHandle>), Refusal>;
}

struct Session {
    name: String,
    handle: Arc<StreamHandle>,
}

struct Endpoint {
    keys: StreamKeys,
    admission: Arc<dyn WhipAdmission>,
    sessions: Mutex<HashMap<String, Session>>,
}

pub struct WhipServer {
    pub local_addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WhipServer {
    pub fn start(
        cfg: &super::WhipConfig,
        keys: StreamKeys,
        admission: Arc<dyn WhipAdmission>,
    ) -> std::io::Result<WhipServer> {
        let listener = std::net::TcpListener::bind(&cfg.listen)?;
        listener.set_nonblocking(true)?;
        let local_addr = listener.local_addr()?;
        let endpoint = Arc::new(Endpoint { keys, admission, sessions: Mutex::new(HashMap::new()) });
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new().name("vigil-whip".into()).spawn(move || {
            runtime.block_on(async move {
                let app = Router::new()
                    .route("/whip", post(publish).options(options))
                    .route("/whip/session/{id}", delete(end).patch(no_trickle))
                    .layer(DefaultBodyLimit::max(MAX_OFFER_BYTES))
                    .with_state(endpoint);
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => return tracing::error!("whip: {e}"),
                };
                let serve = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
                    .with_graceful_shutdown(async {
                        let _ = rx.await;
                    });
                if let Err(e) = serve.await {
                    tracing::error!("whip: {e}");
                }
            })
        })?;
        tracing::info!(%local_addr, "whip: listening");
        Ok(WhipServer { local_addr, shutdown: Some(tx), thread: Some(thread) })
    }

    /// Stops taking publishes (sessions in progress go on until they end).
    pub fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for WhipServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn plain(status: StatusCode, text: impl Into<String>) -> Response {
    let mut body = text.into();
    body.push('\n');
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

fn unauthorized(why: &str) -> Response {
    METRICS.errors.with_label_values(&["whip_key"]).inc();
    (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], format!("{why}\n")).into_response()
}

/// The stream name the request's bearer key stands for, or a 401 saying why not.
fn authorize(keys: &StreamKeys, headers: &HeaderMap) -> Result<String, Box<Response>> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or("a bearer stream key is required");
    let checked = token.and_then(|t| {
        keys.check(t, crate::ingest::unix_secs()).map_err(|e| match e {
            KeyError::Expired => "the stream key expired",
            KeyError::Unknown | KeyError::Malformed => "unknown stream key",
        })
    });
    checked.map_err(|why| Box::new(unauthorized(why)))
}

/// The shape checks the worker makes before a child parses the offer for real.
pub fn check_offer(body: &[u8]) -> Result<String, String> {
    let text = std::str::from_utf8(body).map_err(|_| "the offer is not UTF-8 text".to_string())?;
    if !text.starts_with("v=0") {
        return Err("the offer is not SDP (it must start with v=0)".into());
    }
    if text.bytes().any(|b| b == 0 || (b < 0x20 && b != b'\r' && b != b'\n' && b != b'\t')) {
        return Err("the offer holds control characters".into());
    }
    let media: Vec<&str> = text.lines().filter(|l| l.starts_with("m=")).collect();
    if media.len() > MAX_MEDIA_SECTIONS {
        return Err(format!("the offer has {} media sections, the limit is {MAX_MEDIA_SECTIONS}", media.len()));
    }
    if !media.iter().any(|m| m.starts_with("m=video ")) {
        return Err("the offer has no video".into());
    }
    Ok(text.to_string())
}

async fn options() -> Response {
    (StatusCode::NO_CONTENT, [("accept-post", "application/sdp")]).into_response()
}

async fn no_trickle() -> Response {
    plain(StatusCode::METHOD_NOT_ALLOWED, "trickle ICE is not supported: the answer carries every candidate")
}

async fn publish(
    State(ep): State<Arc<Endpoint>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let name = match authorize(&ep.keys, &headers) {
        Ok(n) => n,
        Err(resp) => return *resp,
    };
    let sdp_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !sdp_type.trim().eq_ignore_ascii_case("application/sdp") {
        return plain(StatusCode::UNSUPPORTED_MEDIA_TYPE, "the offer must be sent as application/sdp");
    }
    let offer = match check_offer(&body) {
        Ok(o) => o,
        Err(reason) => {
            METRICS.errors.with_label_values(&["whip_offer"]).inc();
            return plain(StatusCode::BAD_REQUEST, reason);
        }
    };
    ep.sessions.lock().unwrap_or_else(|p| p.into_inner()).retain(|_, s| s.handle.is_running());
    let request = WhipRequest { name: name.clone(), peer, offer };
    let admission = ep.admission.clone();
    let admitted = match tokio::task::spawn_blocking(move || admission.publish(request)).await {
        Ok(r) => r,
        Err(e) => Err(Refusal { status: 500, reason: format!("the publish failed: {e}") }),
    };
    let (answer, handle) = match admitted {
        Ok(a) => a,
        Err(r) => {
            tracing::warn!(stream = %name, %peer, "whip: refused: {}", r.reason);
            let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return plain(status, r.reason);
        }
    };
    let id = match session_id() {
        Ok(id) => id,
        Err(e) => {
            handle.stop_because("the worker could not make a session id".into());
            return plain(StatusCode::INTERNAL_SERVER_ERROR, format!("session id: {e}"));
        }
    };
    tracing::info!(stream = %name, %peer, "whip: publishing");
    ep.sessions.lock().unwrap_or_else(|p| p.into_inner()).insert(id.clone(), Session { name, handle });
    (
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, "application/sdp".to_string()), (header::LOCATION, format!("/whip/session/{id}"))],
        answer,
    )
        .into_response()
}

async fn end(State(ep): State<Arc<Endpoint>>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let name = match authorize(&ep.keys, &headers) {
        Ok(n) => n,
        Err(resp) => return *resp,
    };
    let session = {
        let mut sessions = ep.sessions.lock().unwrap_or_else(|p| p.into_inner());
        // Another stream's key cannot end this one; both cases look like "not found".
        match sessions.get(&id) {
            Some(s) if s.name == name => sessions.remove(&id),
            _ => None,
        }
    };
    let Some(Session { handle, .. }) = session else { return plain(StatusCode::NOT_FOUND, "no such session") };
    // Stopping joins the stream's supervisor: off the async threads.
    let _ = tokio::task::spawn_blocking(move || handle.stop_because("the publisher ended the session".into())).await;
    plain(StatusCode::OK, "ended")
}

/// 128 random bits from the kernel, in hex: a session URL nobody can guess.
fn session_id() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers_are_checked_for_shape_before_any_parser_sees_them() {
        let ok = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n";
        assert!(check_offer(ok.as_bytes()).is_ok());
        assert!(check_offer(b"\xff\xfe").unwrap_err().contains("UTF-8"));
        assert!(check_offer(b"hello").unwrap_err().contains("not SDP"));
        assert!(check_offer(b"v=0\r\nm=audio 9 RTP/AVP 0\r\n").unwrap_err().contains("no video"));
        assert!(check_offer(b"v=0\r\nm=video 9 x\x01\r\n").unwrap_err().contains("control"));
        let many = format!("v=0\r\n{}", "m=video 9 UDP/TLS/RTP/SAVPF 96\r\n".repeat(9));
        assert!(check_offer(many.as_bytes()).unwrap_err().contains("media sections"));
    }

    #[test]
    fn session_ids_are_long_and_distinct() {
        let (a, b) = (session_id().unwrap(), session_id().unwrap());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }
}
