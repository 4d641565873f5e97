//! The accept loop every Vigil HTTP listener runs: the worker's WHIP ingest and admin
//! server, the on-call console and the actuator's health server.
//!
//! `axum::serve` installs no timer, so hyper's header-read timeout never fires: a client
//! that opens a connection and dribbles a request head (or sends nothing) holds it for
//! ever, and enough of them starve the listener (slowloris). Here each connection is
//! served by hyper's HTTP/1 builder with a Tokio timer, so a request head must arrive
//! whole within `header_read_timeout` (idle keep-alive connections included);
//! connections are capped, a connection past the cap waiting in the kernel's backlog
//! rather than in memory, and one address may hold only `max_connections_per_ip` of
//! them (so a few hosts opening silent sockets cannot lock every publisher out); and on
//! shutdown the loop stops accepting and in-flight requests get `drain_timeout` to
//! finish.

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;

#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// A request head must arrive whole within this.
    pub header_read_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// Connections one peer address may hold at once; more are closed on accept.
    pub max_connections_per_ip: usize,
    /// On shutdown, how long requests in flight may still take.
    pub drain_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 256,
            max_connections_per_ip: 16,
            drain_timeout: Duration::from_secs(5),
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains. Handlers see the
/// peer address through axum's `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: HttpLimits,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let per_ip = Arc::new(PerIp { limit: limits.max_connections_per_ip.max(1), held: Mutex::new(HashMap::new()) });
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) if out_of_resources(&e) => {
                    // Out of descriptors or memory: back off instead of spinning.
                    tracing::warn!("http: accept failed: {e}");
                    tokio::select! {
                        _ = &mut shutdown => break,
                        _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                    }
                }
                // A connection reset before it was accepted, and the like.
                Err(e) => {
                    tracing::debug!("http: accept: {e}");
                    continue;
                }
            },
        };
        let Some(slot) = PerIp::take(&per_ip, peer.ip()) else {
            tracing::debug!(%peer, "http: refused, the address holds too many connections");
            continue;
        };
        let router = app.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            let mut router = router.clone();
            async move { tower_service::Service::call(&mut router, request).await }
        });
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            let _held = (permit, slot);
            if let Err(e) = connection.await {
                tracing::debug!(%peer, "http: connection ended: {e}");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.drain_timeout, graceful.shutdown()).await.is_err() {
        tracing::warn!("http: requests still in flight after {:?}; leaving them", limits.drain_timeout);
    }
}

fn out_of_resources(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}

/// Connections held per peer address.
struct PerIp {
    limit: usize,
    held: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's share of its address's count, given back on drop.
struct IpSlot {
    owner: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    fn take(this: &Arc<PerIp>, ip: IpAddr) -> Option<IpSlot> {
        let mut held = this.held.lock().unwrap_or_else(|e| e.into_inner());
        let count = held.entry(ip).or_insert(0);
        if *count >= this.limit {
            return None;
        }
        *count += 1;
        Some(IpSlot { owner: this.clone(), ip })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut held = self.owner.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = held.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use std::io::{Read, Write};
    use std::net::SocketAddr;
    use std::net::TcpStream;
    use std::time::Instant;

    /// Starts `serve` on a loopback port in its own runtime thread; returns the address
    /// and the sender that stops it.
    fn start(limits: HttpLimits) -> (SocketAddr, tokio::sync::oneshot::Sender<()>, std::thread::JoinHandle<()>) {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let app = Router::new()
                    .route("/peer", get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }));
                let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
                serve(listener, app, limits, async {
                    let _ = rx.await;
                })
                .await;
            });
        });
        (addr, tx, thread)
    }

    fn get_peer(addr: SocketAddr) -> (String, SocketAddr) {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let local = s.local_addr().unwrap();
        s.write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        (out, local)
    }

    /// Reads until the server closes; how long that took.
    fn time_to_close(mut s: TcpStream) -> Duration {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let started = Instant::now();
        let mut buf = [0u8; 512];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return started.elapsed(),
                Ok(_) => {}
            }
        }
    }

    #[test]
    fn serves_with_the_peer_address_and_closes_a_dribbling_client() {
        let limits = HttpLimits { header_read_timeout: Duration::from_secs(1), ..HttpLimits::default() };
        let (addr, stop, thread) = start(limits);
        let (response, local) = get_peer(addr);
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.ends_with(&local.to_string()), "handler sees the peer: {response}");

        // Half a request head, then nothing: closed at the deadline, not held.
        let mut slow = TcpStream::connect(addr).unwrap();
        slow.write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\n").unwrap();
        let waited = time_to_close(slow);
        assert!(waited < Duration::from_secs(5), "a dribbling client was held {waited:?}");
        // A connection that never sends a byte is closed too.
        let waited = time_to_close(TcpStream::connect(addr).unwrap());
        assert!(waited < Duration::from_secs(5), "a silent client was held {waited:?}");

        // The loop returns on shutdown (the thread would hang otherwise).
        stop.send(()).unwrap();
        thread.join().unwrap();
    }

    #[test]
    fn one_address_cannot_hold_every_connection() {
        let limits = HttpLimits {
            max_connections_per_ip: 2,
            header_read_timeout: Duration::from_secs(30),
            ..HttpLimits::default()
        };
        let (addr, stop, thread) = start(limits);
        let held: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(addr).unwrap()).collect();
        std::thread::sleep(Duration::from_millis(200));
        let waited = time_to_close(TcpStream::connect(addr).unwrap());
        assert!(waited < Duration::from_secs(5), "a third connection from one address was kept");
        drop(held);
        std::thread::sleep(Duration::from_millis(200));
        let (response, _) = get_peer(addr);
        assert!(response.starts_with("HTTP/1.1 200"), "served again once they closed: {response}");
        stop.send(()).unwrap();
        thread.join().unwrap();
    }

    #[test]
    fn connections_past_the_cap_wait_until_one_ends() {
        let limits =
            HttpLimits { max_connections: 1, header_read_timeout: Duration::from_secs(30), ..HttpLimits::default() };
        let (addr, stop, thread) = start(limits);
        // The one permitted connection is held open (complete request not yet sent).
        let mut holder = TcpStream::connect(addr).unwrap();
        holder.write_all(b"GET /peer HTTP/1.1\r\n").unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let waiting = std::thread::spawn(move || get_peer(addr).0);
        std::thread::sleep(Duration::from_millis(500));
        assert!(!waiting.is_finished(), "a second connection was served past the cap");
        holder.write_all(b"Host: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut first = String::new();
        holder.read_to_string(&mut first).unwrap();
        assert!(first.starts_with("HTTP/1.1 200"), "{first}");
        let second = waiting.join().unwrap();
        assert!(second.starts_with("HTTP/1.1 200"), "served once the first ended: {second}");
        stop.send(()).unwrap();
        thread.join().unwrap();
    }
}
