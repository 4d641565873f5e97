//! The RTMP publish server: `rtmp://HOST:PORT/APP/STREAM_KEY`.
//!
//! One thread per connection (a publisher sends one stream; the work per byte is small
//! next to decoding, which happens in the stream's decode child). The protocol is
//! `rml_rtmp` behind [`ChunkGuard`]; a panic inside the library ends only that
//! connection. The key is checked at publish, before any media is accepted; the
//! worker then admits the stream (or refuses it, e.g. at its stream limit). Declared
//! metadata over the limits ends the publish before anything is decoded.

use super::guard::ChunkGuard;
use super::keys::StreamKeys;
use crate::flv;
use crate::isolate::FlvTag;
use crate::metrics::METRICS;
use crate::{LimitsConfig, SampleConfig};
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult, StreamMetadata};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

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
    admission: Arc<dyn Admission>,
    connections: AtomicUsize,
    max_connections: usize,
}

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
            admission,
            connections: AtomicUsize::new(0),
            max_connections: media.limits.max_streams as usize * 2,
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

fn accept(sock: TcpStream, peer: SocketAddr, ctx: &Arc<Context>) {
    if ctx.connections.fetch_add(1, Relaxed) >= ctx.max_connections {
        ctx.connections.fetch_sub(1, Relaxed);
        METRICS.errors.with_label_values(&["rtmp_busy"]).inc();
        tracing::warn!(%peer, "rtmp: refused, too many connections");
        return;
    }
    let conn_ctx = ctx.clone();
    let spawned =
        std::thread::Builder::new().name("vigil-rtmp-conn".into()).stack_size(CONNECTION_STACK).spawn(move || {
            let ctx = conn_ctx;
            let mut conn = Connection { ctx: &ctx, peer, published: None, name: None };
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| conn.serve(sock)));
            let reason = match outcome {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e),
                Err(_) => Some("the RTMP library failed on this connection's input".into()),
            };
            if let Some(r) = &reason {
                METRICS.errors.with_label_values(&["rtmp"]).inc();
                tracing::warn!(%peer, stream = conn.name.as_deref().unwrap_or("-"), "rtmp: {r}");
            }
            if let Some(p) = conn.published.take() {
                p.end(reason);
            }
            ctx.connections.fetch_sub(1, Relaxed);
        });
    if spawned.is_err() {
        ctx.connections.fetch_sub(1, Relaxed);
    }
}

struct Connection<'a> {
    ctx: &'a Context,
    peer: SocketAddr,
    published: Option<Box<dyn PublishedStream>>,
    name: Option<String>,
}

type Step = Result<(), String>;

impl Connection<'_> {
    fn serve(&mut self, mut sock: TcpStream) -> Step {
        sock.set_nonblocking(false).map_err(|e| e.to_string())?;
        sock.set_read_timeout(Some(self.ctx.idle)).map_err(|e| e.to_string())?;
        sock.set_write_timeout(Some(self.ctx.idle)).map_err(|e| e.to_string())?;
        let _ = sock.set_nodelay(true);
        let mut buf = vec![0u8; 64 * 1024];
        let read = |sock: &mut TcpStream, buf: &mut [u8]| match sock.read(buf) {
            Ok(n) => Ok(n),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                Err("the publisher went silent".to_string())
            }
            Err(e) => Err(e.to_string()),
        };
        let mut handshake = Handshake::new(PeerType::Server);
        let remaining = loop {
            let n = read(&mut sock, &mut buf)?;
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
            let n = read(&mut sock, &mut buf)?;
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
                let name = match self.ctx.keys.check(&stream_key, super::unix_secs()) {
                    Ok(name) => name,
                    Err(why) => {
                        METRICS.errors.with_label_values(&["rtmp_key"]).inc();
                        let _ = session.reject_request(request_id, "NetStream.Publish.BadName", &why.to_string());
                        // The key itself is never logged.
                        return Err(format!("refused publish: {why}"));
                    }
                };
                self.name = Some(name.clone());
                let request = PublishRequest { app: app_name, name, peer: self.peer };
                match self.ctx.admission.admit(&request) {
                    Ok(p) => {
                        self.published = Some(p);
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
                    Some(tag) => p.push(tag),
                    None => METRICS.errors.with_label_values(&["rtmp_video"]).inc(),
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
