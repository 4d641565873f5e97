//! The RTMP publish server: `rtmp://HOST:PORT/APP/STREAM_KEY`.
//!
//! One thread per connection (a publisher sends one stream; the work per byte is small
//! next to decoding, which happens in the stream's decode child). The protocol is
//! `rml_rtmp` behind [`ChunkGuard`]; a panic inside the library ends only that
//! connection. The key is checked at publish, before any media is accepted; the
//! worker then admits the stream (or refuses it, e.g. at its stream limit). Declared
//! metadata over the limits ends the publish before anything is decoded.
//!
//! Slots: a connection must publish within `publish_deadline_secs`; one address holds
//! at most `max_connections_per_ip` connections and all addresses together at most
//! `max_pending_connections` that are not publishing yet; publishing connections count
//! only against the stream limit. A video message that cannot reach the decoder closes
//! the connection, and so does the end of the stream's analysis (for any reason, a cut
//! included): a publisher never streams on unwatched.

use super::guard::ChunkGuard;
use super::keys::{KeyError, StreamKeys};
use crate::events::{self, IngestRefusal};
use crate::flv;
use crate::isolate::FlvTag;
use crate::{LimitsConfig, SampleConfig};
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult, StreamMetadata};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A publish the key allowed, for the worker to admit.
#[derive(Debug, Clone)]
pub struct PublishRequest {
    pub app: String,
    /// The stream's name (from the key table or the signed key), never the key.
    pub name: String,
    pub peer: SocketAddr,
}

/// The worker's side of a publish.
pub trait PublishedStream: Send {
    fn push(&self, tag: FlvTag);
    /// The publisher stopped (or the connection ended): `reason` when it was ended.
    fn end(&self, reason: Option<String>);
    /// `Some(why)` once the stream's analysis has ended (the worker cut the stream, its
    /// decoder gave up, the worker stops): the connection is then closed.
    fn analysis_ended(&self) -> Option<String>;
}

/// Admits publishes: returns where the stream's tags go, or why it is refused.
pub trait Admission: Send + Sync + 'static {
    fn admit(&self, request: &PublishRequest) -> Result<Box<dyn PublishedStream>, String>;
}

/// What connection threads share.
struct Context {
    app: String,
    keys: StreamKeys,
    max_input_px: u32,
    limits: LimitsConfig,
    idle: Duration,
    publish_deadline: Duration,
    admission: Arc<dyn Admission>,
    /// Connections that have not started publishing.
    pending: AtomicUsize,
    max_pending: usize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    max_per_ip: usize,
    /// Refusals are counted always and logged at most once a second.
    refusal_log: RateLimitedLog,
    key_failures: super::keys::KeyFailures,
}

/// A log line at most once per `every` (the rest are counted by the metric that goes
/// with them): a flood of refused connections must not flood the log as well.
pub(crate) struct RateLimitedLog {
    last_ms: AtomicU64,
    every: Duration,
    start: Instant,
}

impl RateLimitedLog {
    pub(crate) fn new(every: Duration) -> Self {
        Self { last_ms: AtomicU64::new(0), every, start: Instant::now() }
    }

    /// Whether a line may be logged now.
    pub(crate) fn allow(&self) -> bool {
        // Milliseconds since start, plus one so that 0 can mean "never logged".
        let now = self.start.elapsed().as_millis() as u64 + 1;
        let last = self.last_ms.load(Relaxed);
        (last == 0 || now >= last + self.every.as_millis() as u64)
            && self.last_ms.compare_exchange(last, now, Relaxed, Relaxed).is_ok()
    }
}

/// How often a connection's read wakes up to check its deadlines and its stream.
const POLL: Duration = Duration::from_millis(250);

pub struct RtmpServer {
    pub local_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Connection threads get a large stack: the protocol library parses AMF0 recursively
/// (the guard bounds command messages, this is the margin).
const CONNECTION_STACK: usize = 32 * 1024 * 1024;

impl RtmpServer {
    pub fn start(
        cfg: &super::RtmpConfig,
        keys: StreamKeys,
        media: &SampleConfig,
        admission: Arc<dyn Admission>,
    ) -> std::io::Result<RtmpServer> {
        let listener = TcpListener::bind(&cfg.listen)?;
        listener.set_nonblocking(true)?;
        let local_addr = listener.local_addr()?;
        let ctx = Arc::new(Context {
            app: cfg.app.clone(),
            keys,
            max_input_px: media.max_input_px,
            limits: media.limits.clone(),
            idle: Duration::from_secs(cfg.idle_timeout_secs),
            publish_deadline: Duration::from_secs(cfg.publish_deadline_secs),
            admission,
            pending: AtomicUsize::new(0),
            max_pending: cfg.max_pending_connections,
            per_ip: Mutex::new(HashMap::new()),
            max_per_ip: cfg.max_connections_per_ip,
            refusal_log: RateLimitedLog::new(Duration::from_secs(1)),
            key_failures: super::keys::KeyFailures::default(),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new().name("vigil-rtmp".into()).spawn(move || {
            while !stop2.load(Relaxed) {
                match listener.accept() {
                    Ok((sock, peer)) => accept(sock, peer, &ctx),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(50))
                    }
                    Err(e) => tracing::warn!("rtmp: accept: {e}"),
                }
            }
        })?;
        tracing::info!(%local_addr, "rtmp: listening");
        Ok(RtmpServer { local_addr, stop, thread: Some(thread) })
    }

    /// Stops accepting connections (publishes in progress go on until they end).
    pub fn stop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for RtmpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A connection's claim on the server's slots, given back when it is dropped.
struct Slot {
    ctx: Arc<Context>,
    ip: IpAddr,
    pending: bool,
}

impl Slot {
    /// Takes a slot for `peer`, or says why there is none.
    fn take(ctx: &Arc<Context>, peer: SocketAddr) -> Result<Slot, IngestRefusal> {
        let mut per_ip = ctx.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        let held = per_ip.get(&peer.ip()).copied().unwrap_or(0);
        if held >= ctx.max_per_ip {
            return Err(IngestRefusal::RtmpPerIp);
        }
        if ctx.pending.fetch_add(1, Relaxed) >= ctx.max_pending {
            ctx.pending.fetch_sub(1, Relaxed);
            return Err(IngestRefusal::RtmpBusy);
        }
        per_ip.insert(peer.ip(), held + 1);
        Ok(Slot { ctx: ctx.clone(), ip: peer.ip(), pending: true })
    }

    /// The connection publishes: it no longer holds a pending slot.
    fn publishing(&mut self) {
        if std::mem::replace(&mut self.pending, false) {
            self.ctx.pending.fetch_sub(1, Relaxed);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.publishing();
        let mut per_ip = self.ctx.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

fn accept(sock: TcpStream, peer: SocketAddr, ctx: &Arc<Context>) {
    let slot = match Slot::take(ctx, peer) {
        Ok(slot) => slot,
        Err(kind) => {
            events::ingest_refused(kind);
            if ctx.refusal_log.allow() {
                tracing::warn!(%peer, "rtmp: connection refused ({}: too many connections)", kind.as_str());
            }
            return;
        }
    };
    let conn_ctx = ctx.clone();
    let _ = std::thread::Builder::new().name("vigil-rtmp-conn".into()).stack_size(CONNECTION_STACK).spawn(move || {
        let ctx = conn_ctx;
        let mut conn = Connection { ctx: &ctx, peer, published: None, name: None, key: None, slot };
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| conn.serve(sock)));
        let reason = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(_) => Some("the RTMP library failed on this connection's input".into()),
        };
        if let Some(r) = &reason {
            events::ingest_refused(IngestRefusal::Rtmp);
            if ctx.refusal_log.allow() || conn.published.is_some() {
                tracing::warn!(%peer, stream = conn.name.as_deref().unwrap_or("-"), "rtmp: {r}");
            }
        }
        if let Some(p) = conn.published.take() {
            p.end(reason);
        }
    });
    // A failed spawn drops the closure, and with it the slot.
}

struct Connection<'a> {
    ctx: &'a Context,
    peer: SocketAddr,
    published: Option<Box<dyn PublishedStream>>,
    name: Option<String>,
    /// The key the publish was accepted with, checked again against revocations.
    key: Option<String>,
    slot: Slot,
}

type Step = Result<(), String>;

impl Connection<'_> {
    /// Reads what the publisher sent, waking every [`POLL`] to check that the
    /// connection still deserves its slot: publishing by its deadline, not silent for
    /// `idle`, and its stream still analysed.
    fn read(
        &self,
        sock: &mut TcpStream,
        buf: &mut [u8],
        connected: Instant,
        last_data: &mut Instant,
    ) -> Result<usize, String> {
        loop {
            // Checked before every read: a publisher that sends without pause must be
            // closed as promptly as one that pauses.
            if let Some(why) = self.published.as_ref().and_then(|p| p.analysis_ended()) {
                return Err(format!("closed: the stream's analysis ended ({why})"));
            }
            if let (Some(key), Some(name)) = (&self.key, &self.name)
                && self.ctx.keys.is_revoked(key, name)
            {
                events::ingest_refused(IngestRefusal::RtmpKeyRevoked);
                return Err("closed: the stream key was revoked".to_string());
            }
            // Before every read too: a client trickling a byte faster than the poll
            // interval must not keep a slot it never publishes on.
            if self.published.is_none() && connected.elapsed() >= self.ctx.publish_deadline {
                events::ingest_refused(IngestRefusal::RtmpDeadline);
                return Err(format!("no publish within {} s of connecting", self.ctx.publish_deadline.as_secs()));
            }
            match sock.read(buf) {
                Ok(n) => {
                    *last_data = Instant::now();
                    return Ok(n);
                }
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(e) => return Err(e.to_string()),
            }
            if last_data.elapsed() >= self.ctx.idle {
                return Err("the publisher went silent".to_string());
            }
        }
    }

    fn serve(&mut self, mut sock: TcpStream) -> Step {
        let connected = Instant::now();
        let mut last_data = connected;
        sock.set_nonblocking(false).map_err(|e| e.to_string())?;
        sock.set_read_timeout(Some(POLL)).map_err(|e| e.to_string())?;
        sock.set_write_timeout(Some(self.ctx.idle)).map_err(|e| e.to_string())?;
        let _ = sock.set_nodelay(true);
        let mut buf = vec![0u8; 64 * 1024];
        let mut handshake = Handshake::new(PeerType::Server);
        let remaining = loop {
            let n = self.read(&mut sock, &mut buf, connected, &mut last_data)?;
            if n == 0 {
                return Ok(());
            }
            match handshake.process_bytes(&buf[..n]).map_err(|e| format!("handshake: {e:?}"))? {
                HandshakeProcessResult::InProgress { response_bytes } => {
                    sock.write_all(&response_bytes).map_err(|e| e.to_string())?
                }
                HandshakeProcessResult::Completed { response_bytes, remaining_bytes } => {
                    sock.write_all(&response_bytes).map_err(|e| e.to_string())?;
                    break remaining_bytes;
                }
            }
        };
        let (mut session, initial) =
            ServerSession::new(ServerSessionConfig::new()).map_err(|e| format!("session: {e:?}"))?;
        let mut guard = ChunkGuard::default();
        self.handle(&mut sock, &mut session, initial)?;
        let mut input = remaining;
        loop {
            if !input.is_empty() {
                guard.feed(&input).map_err(|e| format!("protocol: {e}"))?;
                let results = session.handle_input(&input).map_err(|e| format!("protocol: {e:?}"))?;
                if self.handle(&mut sock, &mut session, results)? {
                    return Ok(());
                }
            }
            let n = self.read(&mut sock, &mut buf, connected, &mut last_data)?;
            if n == 0 {
                return Ok(());
            }
            input = buf[..n].to_vec();
        }
    }

    /// Sends responses and acts on events. Returns true when the publish finished.
    fn handle(
        &mut self,
        sock: &mut TcpStream,
        session: &mut ServerSession,
        results: Vec<ServerSessionResult>,
    ) -> Result<bool, String> {
        let mut finished = false;
        for r in results {
            match r {
                ServerSessionResult::OutboundResponse(p) => sock.write_all(&p.bytes).map_err(|e| e.to_string())?,
                ServerSessionResult::RaisedEvent(e) => {
                    let more = self.on_event(session, e)?;
                    finished |= more.is_none();
                    for r in more.unwrap_or_default() {
                        if let ServerSessionResult::OutboundResponse(p) = r {
                            sock.write_all(&p.bytes).map_err(|e| e.to_string())?;
                        }
                    }
                }
                ServerSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
        Ok(finished)
    }

    /// Returns the responses to send, or `None` when the publish is over.
    fn on_event(
        &mut self,
        session: &mut ServerSession,
        event: ServerSessionEvent,
    ) -> Result<Option<Vec<ServerSessionResult>>, String> {
        let e = |e: rml_rtmp::sessions::ServerSessionError| format!("protocol: {e:?}");
        match event {
            ServerSessionEvent::ConnectionRequested { request_id, app_name } => {
                if app_name != self.ctx.app {
                    let _ = session.reject_request(request_id, "NetConnection.Connect.Rejected", "unknown app");
                    return Err(format!("refused: unknown application {:?}", truncate(&app_name)));
                }
                session.accept_request(request_id).map(Some).map_err(e)
            }
            ServerSessionEvent::PublishStreamRequested { request_id, app_name, stream_key, .. } => {
                if self.published.is_some() {
                    return Err("a second publish on one connection".into());
                }
                if self.ctx.key_failures.blocked(self.peer.ip()) {
                    events::ingest_refused(IngestRefusal::RtmpKeyLimited);
                    let _ = session.reject_request(request_id, "NetStream.Publish.BadName", "too many failed keys");
                    return Err("refused publish: too many failed key attempts from this address".into());
                }
                let name = match self.ctx.keys.check(&stream_key, super::unix_secs()) {
                    Ok(name) => name,
                    Err(why) => {
                        self.ctx.key_failures.failed(self.peer.ip(), &why);
                        events::ingest_refused(IngestRefusal::RtmpKey);
                        if why == KeyError::Revoked {
                            events::ingest_refused(IngestRefusal::RtmpKeyRevoked);
                        }
                        let _ = session.reject_request(request_id, "NetStream.Publish.BadName", &why.to_string());
                        // The key itself is never logged.
                        return Err(format!("refused publish: {why}"));
                    }
                };
                self.name = Some(name.clone());
                self.key = Some(stream_key);
                let request = PublishRequest { app: app_name, name, peer: self.peer };
                match self.ctx.admission.admit(&request) {
                    Ok(p) => {
                        self.published = Some(p);
                        self.slot.publishing();
                        tracing::info!(peer = %self.peer, stream = %request.name, "rtmp: publishing");
                        session.accept_request(request_id).map(Some).map_err(e)
                    }
                    Err(why) => {
                        let _ = session.reject_request(request_id, "NetStream.Publish.Denied", &why);
                        Err(format!("refused publish: {why}"))
                    }
                }
            }
            ServerSessionEvent::StreamMetadataChanged { metadata, .. } => {
                self.check_metadata(&metadata)?;
                Ok(Some(Vec::new()))
            }
            ServerSessionEvent::VideoDataReceived { data, timestamp, .. } => {
                let Some(p) = &self.published else { return Ok(Some(Vec::new())) };
                match flv::video_tag(&data, timestamp.value) {
                    Ok(tag) => p.push(tag),
                    Err(refusal) => {
                        // Nothing the publisher sends may bypass the decoder: a message
                        // that cannot reach it ends the publish.
                        events::ingest_refused(IngestRefusal::RtmpVideo);
                        return Err(format!("refused: {refusal}"));
                    }
                }
                Ok(Some(Vec::new()))
            }
            ServerSessionEvent::PublishStreamFinished { .. } => {
                if let Some(p) = self.published.take() {
                    p.end(None);
                }
                Ok(None)
            }
            _ => Ok(Some(Vec::new())),
        }
    }

    /// What the publisher declares is checked before anything is decoded.
    fn check_metadata(&self, m: &StreamMetadata) -> Step {
        let max_px = self.ctx.max_input_px;
        let (w, h) = (m.video_width.unwrap_or(0), m.video_height.unwrap_or(0));
        if w > max_px || h > max_px {
            return Err(format!("over the limits: declares {w}x{h}, the limit is {max_px}x{max_px}"));
        }
        if let Some(fps) = m.video_frame_rate.filter(|&f| f as f64 > self.ctx.limits.max_fps) {
            return Err(format!("over the limits: declares {fps} fps, the limit is {}", self.ctx.limits.max_fps));
        }
        if let Some(kbps) = m.video_bitrate_kbps.filter(|&k| k as u64 > self.ctx.limits.max_bitrate_kbps) {
            let limit = self.ctx.limits.max_bitrate_kbps;
            return Err(format!("over the limits: declares {kbps} kbit/s, the limit is {limit}"));
        }
        Ok(())
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}
