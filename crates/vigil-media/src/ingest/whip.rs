//! The WHIP endpoint (RFC 9725): WebRTC publishes over plain HTTP.
//!
//! - `POST /whip` with `Authorization: Bearer STREAM_KEY` and an `application/sdp`
//!   offer → `201 Created`, the SDP answer, and `Location: /whip/session/ID`.
//! - `DELETE /whip/session/ID` (same bearer key) ends the publish.
//! - `PATCH` → 405: the answer already carries every ICE candidate (no trickle).
//!
//! The key is checked like an RTMP stream key (the same static or signed keys) before
//! the body is read; the stream is named by the key's name, `whip/NAME`. The worker
//! never parses the offer with C code: it checks its size and shape here and drops ICE
//! candidates it will not contact (see [`crate::isolate::candidates`]: only UDP to
//! public IP literals, private ones when allowed; a publisher must not make the worker
//! probe its own network); the stream's confined decode child (where `webrtcbin` runs)
//! parses it, applies the same rule to the candidates GStreamer parsed, and answers.
//! Session ids are 128 random bits.

use super::keys::{KeyError, KeyFailures, StreamKeys};
use crate::isolate::StreamHandle;
use crate::isolate::candidates::{self, DroppedCounts, Pass};
use axum::Router;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

/// Largest offer accepted (browsers send 4–10 KiB).
pub const MAX_OFFER_BYTES: usize = 64 * 1024;
/// Most media sections (m= lines) in an offer: a video, an audio, some spare.
pub const MAX_MEDIA_SECTIONS: usize = 8;
pub use crate::isolate::candidates::MAX_CANDIDATES;
/// Longest line accepted in an offer (browsers' longest are about 200 bytes). GStreamer's
/// parser cuts attribute keys at 8 KiB, possibly inside a UTF-8 character.
pub const MAX_LINE_BYTES: usize = 4096;
/// How long a publisher may take to send its offer.
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long `stop` waits for requests in flight before leaving them to the exit.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

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
    /// The key the session was accepted with, checked again against revocations.
    key: String,
    handle: Arc<StreamHandle>,
}

struct Endpoint {
    keys: StreamKeys,
    /// Wrong keys per address: a guesser is refused for a while (as on RTMP).
    key_failures: KeyFailures,
    private_candidates: bool,
    admission: Arc<dyn WhipAdmission>,
    sessions: Mutex<HashMap<String, Session>>,
}

pub struct WhipServer {
    pub local_addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    finished: Option<std::sync::mpsc::Receiver<()>>,
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
        let endpoint = Arc::new(Endpoint {
            keys,
            key_failures: KeyFailures::default(),
            private_candidates: cfg.private_candidates,
            admission,
            sessions: Mutex::new(HashMap::new()),
        });
        let per_ip = cfg.max_connections_per_ip;
        let cors = cors_layer(&cfg.cors_allowed_origins);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::Builder::new().name("vigil-whip".into()).spawn(move || {
            runtime.block_on(async move {
                tokio::spawn(close_revoked_sessions(endpoint.clone()));
                let app = Router::new()
                    .route("/whip", post(publish).options(options))
                    .route("/whip/session/{id}", delete(end).patch(no_trickle).options(session_options))
                    .with_state(endpoint);
                let app = match cors {
                    Some(cors) => app.layer(cors),
                    None => app,
                };
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => return tracing::error!("whip: {e}"),
                };
                // Drains within stop()'s wait, so a clean drain is not reported as stuck.
                let drain_timeout = STOP_GRACE.saturating_sub(std::time::Duration::from_secs(1));
                let limits =
                    vigil_http::HttpLimits { drain_timeout, max_connections_per_ip: per_ip, ..Default::default() };
                vigil_http::serve(listener, app, limits, async {
                    let _ = rx.await;
                })
                .await;
            });
            let _ = done_tx.send(());
        })?;
        tracing::info!(%local_addr, "whip: listening");
        Ok(WhipServer { local_addr, shutdown: Some(tx), finished: Some(done_rx) })
    }

    /// Stops taking publishes (sessions in progress go on until they end). Requests in
    /// flight get a few seconds; a client that trickles its bytes cannot hold up the
    /// worker's drain.
    pub fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(done) = self.finished.take()
            && done.recv_timeout(STOP_GRACE).is_err()
        {
            tracing::warn!("whip: requests still in flight at stop; leaving them to the exit");
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
    crate::events::ingest_refused(crate::events::IngestRefusal::WhipKey);
    (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], format!("{why}\n")).into_response()
}

/// The stream name and key the request's bearer key stands for, or the refusal: 401
/// for a missing, wrong or expired key, 403 for a revoked one, 429 for an address that
/// has used up its failed attempts.
fn authorize(ep: &Endpoint, peer: IpAddr, headers: &HeaderMap) -> Result<(String, String), Box<Response>> {
    if ep.key_failures.blocked(peer) {
        crate::events::ingest_refused(crate::events::IngestRefusal::WhipKeyLimited);
        let mut resp = plain(StatusCode::TOO_MANY_REQUESTS, "too many failed stream keys from this address");
        resp.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("60"));
        return Err(Box::new(resp));
    }
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .ok_or("a bearer stream key is required");
    let token = token.map_err(|why| {
        ep.key_failures.failed(peer, &KeyError::Malformed);
        Box::new(unauthorized(why))
    })?;
    match ep.keys.check(token, crate::ingest::unix_secs()) {
        Ok(name) => Ok((name, token.to_string())),
        Err(KeyError::Revoked) => {
            crate::events::ingest_refused(crate::events::IngestRefusal::WhipKeyRevoked);
            Err(Box::new(plain(StatusCode::FORBIDDEN, "the stream key was revoked")))
        }
        Err(why) => {
            ep.key_failures.failed(peer, &why);
            Err(Box::new(unauthorized(match why {
                KeyError::Expired => "the stream key expired",
                KeyError::TooLong => "the stream key is valid for too long",
                _ => "unknown stream key",
            })))
        }
    }
}

/// An offer that passed the shape checks, less the candidates the worker will not
/// contact.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedOffer {
    pub sdp: String,
    pub dropped: DroppedCounts,
}

/// The shape checks the worker makes before a child parses the offer for real; returns
/// the offer with the candidates it will not contact removed. The child filters again
/// on what GStreamer parsed: this pass keeps hostile lines from reaching C code at all.
pub fn check_offer(body: &[u8], private_candidates: bool) -> Result<CheckedOffer, String> {
    let text = std::str::from_utf8(body).map_err(|_| "the offer is not UTF-8 text".to_string())?;
    if !text.starts_with("v=0") {
        return Err("the offer is not SDP (it must start with v=0)".into());
    }
    if text.bytes().any(|b| b == 0 || (b < 0x20 && b != b'\r' && b != b'\n' && b != b'\t')) {
        return Err("the offer holds control characters".into());
    }
    if text.split('\n').any(|l| l.len() > MAX_LINE_BYTES) {
        return Err(format!("the offer has a line over {MAX_LINE_BYTES} bytes"));
    }
    // GStreamer skips whitespace at the start of a line, so the count does too.
    let media: Vec<&str> =
        text.lines().map(|l| l.trim_start_matches(sdp_space)).filter(|l| l.starts_with("m=")).collect();
    if media.len() > MAX_MEDIA_SECTIONS {
        return Err(format!("the offer has {} media sections, the limit is {MAX_MEDIA_SECTIONS}", media.len()));
    }
    if !media.iter().any(|m| m.starts_with("m=video ")) {
        return Err("the offer has no video".into());
    }
    let mut filter = candidates::Filter::new(private_candidates);
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        if let Some(value) = candidate_value(line)
            && !filter.admit(value)
        {
            continue;
        }
        out.push_str(line);
    }
    Ok(CheckedOffer { sdp: out, dropped: filter.dropped })
}

/// Whitespace as GStreamer's SDP parser skips it (`g_ascii_isspace`: Rust's ASCII
/// whitespace plus vertical tab).
fn sdp_space(c: char) -> bool {
    c.is_ascii_whitespace() || c == '\x0b'
}

/// The value of the candidate attribute on `line`, if GStreamer's parser could read one
/// there. It skips whitespace before a line's type letter and after `a=`, takes the key
/// up to `:` and the value up to a CR or LF; this matches more loosely still (the key
/// in any case, with whitespace around it), so that no line GStreamer takes for a
/// candidate passes unchecked.
fn candidate_value(line: &str) -> Option<&str> {
    // Leading whitespace first: a line "\r a=candidate:..." is a candidate to GStreamer.
    let content = line.trim_start_matches(sdp_space).split(['\r', '\n']).next().unwrap_or("");
    let attribute = content.strip_prefix("a=")?;
    let (key, value) = attribute.split_once(':').unwrap_or((attribute, ""));
    candidates::is_candidate_key(key).then_some(value)
}

/// How often live sessions are checked against the revocation list.
const REVOCATION_SWEEP: std::time::Duration = std::time::Duration::from_secs(1);

/// Ends the live sessions whose key has been revoked since they were accepted.
async fn close_revoked_sessions(ep: Arc<Endpoint>) {
    let mut tick = tokio::time::interval(REVOCATION_SWEEP);
    loop {
        tick.tick().await;
        let revoked: Vec<Session> = {
            let mut sessions = ep.sessions.lock().unwrap_or_else(|p| p.into_inner());
            let ids: Vec<String> = sessions
                .iter()
                .filter(|(_, s)| ep.keys.is_revoked(&s.key, &s.name))
                .map(|(id, _)| id.clone())
                .collect();
            ids.iter().filter_map(|id| sessions.remove(id)).collect()
        };
        for session in revoked {
            crate::events::ingest_refused(crate::events::IngestRefusal::WhipKeyRevoked);
            tracing::warn!(stream = %session.name, "whip: closing the session: its stream key was revoked");
            let handle = session.handle;
            let _ = tokio::task::spawn_blocking(move || handle.stop_because("the stream key was revoked".into())).await;
        }
    }
}

async fn options() -> Response {
    (StatusCode::NO_CONTENT, [("accept-post", "application/sdp")]).into_response()
}

async fn session_options() -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static("DELETE, OPTIONS"));
    resp
}

/// Checks one configured CORS origin: `*` alone, or `scheme://host[:port]` (what a
/// browser sends in `Origin`: no path, no trailing slash).
pub fn check_origin(origin: &str, count: usize) -> Result<(), &'static str> {
    if origin == "*" {
        return if count == 1 { Ok(()) } else { Err("must be the only entry") };
    }
    let Some((scheme, rest)) = origin.split_once("://") else { return Err("is not scheme://host[:port]") };
    if !matches!(scheme, "http" | "https") {
        return Err("must be http:// or https://");
    }
    if rest.is_empty() || rest.contains(['/', '?', '#', ' ', '@']) {
        return Err("must be scheme://host[:port], with no path, query or user");
    }
    axum::http::HeaderValue::from_str(origin).map(drop).map_err(|_| "is not a valid header value")
}

/// Browsers on other origins may publish when the operator names those origins: the
/// preflight is answered (POST, DELETE, PATCH; the Authorization and Content-Type
/// headers), and every response exposes `Location` (the session URL the page must
/// DELETE) and the other WHIP headers.
fn cors_layer(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use axum::http::{HeaderName, Method};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| header::HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::POST, Method::DELETE, Method::PATCH, Method::OPTIONS])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::IF_MATCH])
            .expose_headers([header::LOCATION, header::ETAG, header::LINK, HeaderName::from_static("accept-patch")])
            .max_age(std::time::Duration::from_secs(600)),
    )
}

async fn no_trickle() -> Response {
    let mut resp =
        plain(StatusCode::METHOD_NOT_ALLOWED, "trickle ICE is not supported: the answer carries every candidate");
    resp.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static("DELETE"));
    resp
}

async fn publish(
    State(ep): State<Arc<Endpoint>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let headers = parts.headers;
    // The key first: nobody without one makes the worker read a body.
    let (name, key) = match authorize(&ep, peer.ip(), &headers) {
        Ok(n) => n,
        Err(resp) => return *resp,
    };
    let sdp_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let media_type = sdp_type.split(';').next().unwrap_or("").trim();
    if !media_type.eq_ignore_ascii_case("application/sdp") {
        return plain(StatusCode::UNSUPPORTED_MEDIA_TYPE, "the offer must be sent as application/sdp");
    }
    let body = match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, MAX_OFFER_BYTES)).await {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => {
            return plain(StatusCode::PAYLOAD_TOO_LARGE, format!("the offer is over {MAX_OFFER_BYTES} bytes"));
        }
        Err(_) => return plain(StatusCode::REQUEST_TIMEOUT, "the offer took too long to arrive"),
    };
    let offer = match check_offer(&body, ep.private_candidates) {
        Ok(o) => {
            candidates::record(Pass::Offer, &format!("whip/{name}"), &o.dropped);
            o.sdp
        }
        Err(reason) => {
            crate::events::ingest_refused(crate::events::IngestRefusal::WhipOffer);
            return plain(StatusCode::BAD_REQUEST, reason);
        }
    };
    ep.sessions.lock().unwrap_or_else(|p| p.into_inner()).retain(|_, s| s.handle.is_running());
    // Admission and registration run detached: a publisher that hangs up while its
    // answer is being made still leaves a session the worker knows (and ends).
    match tokio::spawn(admit(ep, name, key, peer, offer)).await {
        Ok(resp) => resp,
        Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, format!("the publish failed: {e}")),
    }
}

async fn admit(ep: Arc<Endpoint>, name: String, key: String, peer: SocketAddr, offer: String) -> Response {
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
            let _ = tokio::task::spawn_blocking(move || handle.stop_because("no session id".into())).await;
            return plain(StatusCode::INTERNAL_SERVER_ERROR, format!("session id: {e}"));
        }
    };
    tracing::info!(stream = %name, %peer, "whip: publishing");
    ep.sessions.lock().unwrap_or_else(|p| p.into_inner()).insert(id.clone(), Session { name, key, handle });
    (
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, "application/sdp".to_string()), (header::LOCATION, format!("/whip/session/{id}"))],
        answer,
    )
        .into_response()
}

async fn end(
    State(ep): State<Arc<Endpoint>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let (name, _) = match authorize(&ep, peer.ip(), &headers) {
        Ok(n) => n,
        Err(resp) => return *resp,
    };
    let session = {
        let mut sessions = ep.sessions.lock().unwrap_or_else(|p| p.into_inner());
        // Another stream's key cannot end this one; both cases look like "not found".
        match sessions.get(&id) {
            Some(s) if s.name == name && s.handle.is_running() => sessions.remove(&id),
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
    vigil_core::ids::random_hex(16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isolate::candidates::Dropped;

    #[test]
    fn offers_are_checked_for_shape_before_any_parser_sees_them() {
        let ok = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n";
        assert_eq!(check_offer(ok.as_bytes(), false).unwrap().sdp, ok);
        assert!(check_offer(b"\xff\xfe", false).unwrap_err().contains("UTF-8"));
        assert!(check_offer(b"hello", false).unwrap_err().contains("not SDP"));
        assert!(check_offer(b"v=0\r\nm=audio 9 RTP/AVP 0\r\n", false).unwrap_err().contains("no video"));
        assert!(check_offer(b"v=0\r\nm=video 9 x\x01\r\n", false).unwrap_err().contains("control"));
        let many = format!("v=0\r\n{}", "m=video 9 UDP/TLS/RTP/SAVPF 96\r\n".repeat(9));
        assert!(check_offer(many.as_bytes(), false).unwrap_err().contains("media sections"));
        // Indented m-lines are media sections to GStreamer too.
        let hidden = format!("v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n{}", " m=audio 9 RTP/AVP 0\r\n".repeat(8));
        assert!(check_offer(hidden.as_bytes(), false).unwrap_err().contains("media sections"));
        let long = format!("{ok}a=x-long:{}\r\n", "\u{e9}".repeat(MAX_LINE_BYTES / 2));
        assert!(check_offer(long.as_bytes(), false).unwrap_err().contains("line over"));
    }

    fn offer(lines: &[&str]) -> String {
        let mut o = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n".to_string();
        for l in lines {
            o.push_str(l);
            o.push_str("\r\n");
        }
        o
    }

    /// Lines GStreamer's parser reads as candidates the worker must not contact. The
    /// first seven passed the old text filter (it matched `a=candidate:` only at the
    /// very start of a line, and kept names ending in `.local`) and reached webrtcbin.
    const HOSTILE: [&str; 20] = [
        " a=candidate:1 1 UDP 2122252543 127.0.0.1 5000 typ host",
        "a= candidate:1 1 UDP 2122252543 127.0.0.1 5000 typ host",
        "a=\tcandidate:1 1 udp 2122252543 169.254.169.254 5000 typ host",
        "a=candidate:1 1 UDP 2122252543 4a3f-0c1d.local 5000 typ host",
        "a=candidate:1 1 UDP 2122252543 vigil.default.svc.cluster.local 5000 typ host",
        "\t a=candidate:1 1 UDP 2122252543 10.0.0.1 5000 typ host",
        "\r a=candidate:1 1 UDP 2122252543 127.0.0.1 5000 typ host",
        "a=candidate:\t1 1 UDP 2122252543 169.254.1.1 5000 typ host",
        "a=candidate:1 1 UDP 2122252543  127.0.0.1  5000 typ host",
        "a=candidate: 1 1 udp 2122252543 127.0.0.1 5000 typ host",
        "a=CANDIDATE:1 1 UDP 2122252543 127.0.0.1 5000 typ host",
        "a=candidate :1 1 UDP 2122252543 127.0.0.1 5000 typ host",
        // libnice splits on spaces only: to it the address here is 127.0.0.1.
        "a=candidate:1 1 UDP 2\t1.2.3.4 127.0.0.1 5000 typ host",
        "a=candidate:1 1 UDP 2122252543 127.1 5000 typ host",
        "a=candidate:1 1 TCP 2122252543 1.2.3.5 9 typ host tcptype active",
        "a=candidate:1 1 UDP 2122252543 192.168.1.2 5000 typ host",
        "a=candidate:1 1 UDP 2122252543 fe80::1 5000 typ host",
        "a=candidate:1 1 UDP 2122252543 ::1 5000 typ host",
        "a=candidate:1 1 UDP 2122252543 ::ffff:127.0.0.1 5000 typ host",
        "a=candidate:garbage",
    ];

    #[test]
    fn candidates_the_worker_must_not_contact_are_dropped_however_written() {
        let public = "a=candidate:1 1 UDP 2122252543 1.2.3.4 5000 typ host";
        for line in HOSTILE {
            let checked = check_offer(offer(&[line, public]).as_bytes(), false).unwrap();
            assert_eq!(checked.sdp, offer(&[public]), "{line:?} was kept");
            assert_eq!(checked.dropped.values().sum::<u32>(), 1, "{line:?}");
        }
        let all = check_offer(offer(&HOSTILE).as_bytes(), false).unwrap();
        let count = |r| all.dropped.get(&r).copied().unwrap_or(0);
        assert_eq!(count(Dropped::Hostname), 3, "{:?}", all.dropped);
        assert_eq!(count(Dropped::Transport), 1);
        assert_eq!(count(Dropped::Private), 2);
        assert_eq!(count(Dropped::Mapped), 1);
        assert_eq!(count(Dropped::LinkLocal), 2);
        assert_eq!(count(Dropped::Malformed), 3);
        assert_eq!(count(Dropped::Loopback), 8);
    }

    #[test]
    fn private_candidates_only_when_allowed_and_at_most_sixteen() {
        let lan = [
            "a=candidate:1 1 UDP 2122252543 10.1.2.3 5000 typ host",
            "a=candidate:2 1 udp 2122252543 192.168.1.2 5000 typ host",
            "a=candidate:3 1 UDP 2122252543 100.64.0.1 5000 typ host",
            "a=candidate:4 1 UDP 2122252543 fd00::1 5000 typ host",
        ];
        let refused = check_offer(offer(&lan).as_bytes(), false).unwrap();
        assert_eq!((refused.sdp, refused.dropped.get(&Dropped::Private)), (offer(&[]), Some(&4)));
        assert_eq!(check_offer(offer(&lan).as_bytes(), true).unwrap().sdp, offer(&lan));
        let flood: Vec<String> = (0..40).map(|i| format!("a=candidate:{i} 1 UDP 1 1.2.3.{i} 5000 typ host")).collect();
        let flood: Vec<&str> = flood.iter().map(String::as_str).collect();
        let kept = check_offer(offer(&flood).as_bytes(), false).unwrap();
        assert_eq!(kept.sdp, offer(&flood[..MAX_CANDIDATES]));
        assert_eq!(kept.dropped.get(&Dropped::OverLimit), Some(&24));
    }

    #[test]
    fn session_ids_are_long_and_distinct() {
        let (a, b) = (session_id().unwrap(), session_id().unwrap());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }
}
