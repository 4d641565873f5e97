//! The worker's trust boundaries as an attacker on loopback probes them (SECURITY.md maps
//! each defence to its test here): the admin API without or with a wrong token, the
//! control routes on their own address, and credentials in pulled URLs, which must
//! appear nowhere: not on `/streams`, in the log, on alerts, nor on a child's command line.

mod common;

use common::nginx::free_port;
use common::worker::*;
use common::*;

#[test]
fn admin_routes_that_change_or_reveal_the_worker_need_the_token_and_probes_stay_open() {
    let w = Worker::start("", &[], &[]);
    for (method, path) in [("POST", "/admin/drain"), ("POST", "/admin/banks/reload"), ("GET", "/streams")] {
        for token in [None, Some("test-admin-token-012345678"), Some("x")] {
            let (status, body) = w.http_as(token, method, path);
            assert_eq!(status, 401, "{method} {path} with {token:?}: {body}");
        }
    }
    // A Basic header carrying the right token is still not a bearer token.
    let (status, _, _) =
        w.request(&w.admin.clone(), "POST", "/admin/drain", &[("Authorization", &format!("Basic {ADMIN_TOKEN}"))], b"");
    assert_eq!(status, 401);
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(w.http_as(None, "GET", path).0, 200, "{path} is open for probes and Prometheus");
    }
    assert!(w.metric("vigil_admin_requests_refused_total", "bad_token") >= 10.0);
    // Still serving: the refused drains did nothing.
    assert_eq!(w.http_as(None, "GET", "/readyz").0, 200);
    assert_eq!(w.http("GET", "/streams").0, 200);
    let (status, body) = w.http("POST", "/admin/drain");
    assert_eq!(status, 202, "{body}");
    let (status, _) = w.stop();
    assert!(status.success());
}

#[test]
fn without_a_token_the_control_routes_are_closed_and_they_can_live_on_their_own_address() {
    // No token at all: refused (403), never open.
    let w = Worker::start("", &[], &[("VIGIL_ADMIN_TOKEN", "")]);
    assert_eq!(w.http("POST", "/admin/drain").0, 403);
    assert_eq!(w.http_as(None, "GET", "/streams").0, 403);
    assert_eq!(w.http_as(None, "GET", "/readyz").0, 200);
    assert!(w.stderr().contains("no admin token configured"), "{}", tail(&w.stderr(), 10));
    drop(w);

    // A short token is a configuration error.
    let out = vigil_env(&["run"], &[("VIGIL_ADMIN_TOKEN", "short")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("shorter than 16"), "{out:?}");

    let control = format!("127.0.0.1:{}", free_port());
    let w = Worker::start(&format!("control_listen = \"{control}\"\n"), &[], &[]);
    assert_eq!(w.admin_control.as_deref(), Some(control.as_str()));
    assert_eq!(w.http("POST", "/admin/drain").0, 404, "the open address has no control routes");
    assert_eq!(w.http("GET", "/streams").0, 404);
    let (status, _, _) = w.request(&control, "GET", "/metrics", &[], b"");
    assert_eq!(status, 404, "probes and metrics stay on the open address");
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let (status, _, body) = w.request(&control, "GET", "/streams", &[("Authorization", &auth)], b"");
    assert_eq!(status, 200, "{body}");
    let (status, _, _) = w.request(&control, "POST", "/admin/drain", &[], b"");
    assert_eq!(status, 401);
}

#[test]
fn credentials_in_a_pulled_url_show_nowhere() {
    // An RTSP camera that is not there: the worker keeps retrying it, which is when
    // credentials would leak into logs and /streams.
    let port = free_port();
    let secret = "hunter2-camera-password";
    let uri = format!("rtsp://operator:{secret}@127.0.0.1:{port}/stream");
    let w = Worker::start(&format!("[[ingest.pull]]\nname = \"cam\"\nuri = \"{uri}\"\n"), &["--pull", &uri], &[]);
    let records = w.wait_for("both streams to start", 30, |r| {
        r.iter().filter(|x| x["type"] == "stream" && x["event"] == "started").count() >= 2
    });
    std::thread::sleep(std::time::Duration::from_secs(3));
    let (status, streams) = w.http("GET", "/streams");
    assert_eq!(status, 200);
    assert!(!streams.contains(secret), "/streams shows the password: {streams}");
    assert!(streams.contains(&format!("rtsp://***@127.0.0.1:{port}/stream")), "{streams}");
    for r in &records {
        assert!(!r.to_string().contains(secret), "a record shows the password: {r}");
    }
    for (pid, cmdline) in w.decode_children() {
        assert!(!cmdline.contains(secret), "child {pid}'s command line shows the password: {cmdline}");
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let environ = String::from_utf8_lossy(&environ);
        assert!(!environ.contains(ADMIN_TOKEN), "child {pid} inherited the admin token");
    }
    let log = w.stderr();
    assert!(!log.contains(secret), "the log shows the password: {}", tail(&log, 20));
    let (_, records) = w.stop();
    for r in &records {
        assert!(!r.to_string().contains(secret), "a record shows the password: {r}");
    }
}

/// Opens a connection that sends one RTMP handshake byte a second, as a slot hog would;
/// the caller drips the bytes through [`closed`].
fn dribbler(addr: &str) -> std::net::TcpStream {
    let s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_millis(200))).unwrap();
    s
}

/// Whether the server has closed `s` (a read sees the end, or a reset) within 200 ms.
fn closed(s: &mut std::net::TcpStream) -> bool {
    closed_within(s, std::time::Duration::from_millis(200))
}

fn closed_within(s: &mut std::net::TcpStream, wait: std::time::Duration) -> bool {
    s.set_read_timeout(Some(wait)).unwrap();
    use std::io::{Read, Write};
    let _ = s.write_all(&[3]);
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return false;
            }
            Err(_) => return true,
        }
    }
}

#[test]
fn connections_that_never_publish_lose_their_slot_and_a_real_publisher_gets_in() {
    let port = free_port();
    let w = Worker::start(
        &format!(
            "[media]\nsampling = \"keyframes\"\n\
             [ingest.rtmp]\nlisten = \"127.0.0.1:{port}\"\npublish_deadline_secs = 6\nmax_connections_per_ip = 4\n\
             [ingest.rtmp.stream_keys]\nalice = \"alice-key-123\"\n"
        ),
        &[],
        &[],
    );
    let addr = w.rtmp.clone().unwrap();
    let mut hogs: Vec<_> = (0..6).map(|_| dribbler(&addr)).collect();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let refused = hogs.iter_mut().map(closed).filter(|&c| c).count();
    assert_eq!(refused, 2, "the address holds at most 4 connections");
    // Many more, refused at once: counted every time, logged at a bounded rate.
    for _ in 0..40 {
        let mut s = dribbler(&addr);
        assert!(closed_within(&mut s, std::time::Duration::from_secs(3)), "a connection past the cap is refused");
    }
    // Dripping a byte a second does not hold a slot past the publish deadline.
    let started = std::time::Instant::now();
    while hogs.iter_mut().any(|s| !closed(s)) {
        assert!(started.elapsed() < std::time::Duration::from_secs(12), "a hog still holds its slot");
        std::thread::sleep(std::time::Duration::from_millis(800));
    }
    // Faster than the server's read poll: the deadline still holds.
    let mut fast = dribbler(&addr);
    let started = std::time::Instant::now();
    let cut_after = loop {
        use std::io::Write;
        if fast.write_all(&[3]).is_err() {
            break started.elapsed();
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(started.elapsed() < std::time::Duration::from_secs(14), "a fast dribbler kept its slot");
    };
    assert!(cut_after >= std::time::Duration::from_secs(5), "closed by the deadline, not at once: {cut_after:?}");
    assert!(w.metric("vigil_media_errors_total", "kind=\"rtmp_deadline\"") >= 5.0);
    assert!(w.metric("vigil_media_errors_total", "kind=\"rtmp_per_ip\"") >= 42.0);
    let logged = w.stderr().matches("rtmp: connection refused").count();
    assert!(logged <= 10, "{logged} refusal lines for 42 refusals");
    // The slots are free again: a real publisher gets in and is analysed.
    let mut publisher = common::nginx::publish(&format!("rtmp://{addr}/live/alice-key-123"), 4, "ball");
    assert!(publisher.wait().unwrap().success());
    w.wait_for("frames of the publish", 30, |r| stream_frames(r, "rtmp/live/alice") >= 2);
}

#[test]
fn an_address_guessing_stream_keys_is_refused_for_a_while() {
    let port = free_port();
    let w = Worker::start(
        &format!(
            "[ingest.rtmp]\nlisten = \"127.0.0.1:{port}\"\n[ingest.rtmp.stream_keys]\nalice = \"alice-key-123\"\n"
        ),
        &[],
        &[],
    );
    let addr = w.rtmp.clone().unwrap();
    for guess in 0..5 {
        let mut p = common::nginx::publish(&format!("rtmp://{addr}/live/guess-{guess}"), 1, "ball");
        assert!(!p.wait().unwrap().success());
    }
    // The sixth attempt is refused before its key is even checked, the right key too.
    let mut p = common::nginx::publish(&format!("rtmp://{addr}/live/alice-key-123"), 1, "ball");
    assert!(!p.wait().unwrap().success(), "an address that keeps guessing waits out its window");
    assert_eq!(w.metric("vigil_media_errors_total", "kind=\"rtmp_key\""), 5.0);
    assert_eq!(w.metric("vigil_media_errors_total", "kind=\"rtmp_key_limited\""), 1.0);
    assert!(!w.records().iter().any(|r| r["stream"] == "rtmp/live/alice"));
}
