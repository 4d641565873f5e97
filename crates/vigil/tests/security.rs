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
    // The camera is not there: its decode child fails (and logs) before the checks.
    wait_until("a failed connection to the camera", 30, || w.metric("vigil_media_decoder_restarts_total", "") >= 1.0);
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
    let w = Worker::start(
        "[media]\nsampling = \"keyframes\"\n\
         [ingest.rtmp]\nlisten = \"127.0.0.1:0\"\npublish_deadline_secs = 6\nmax_connections_per_ip = 4\n\
         [ingest.rtmp.stream_keys]\nalice = \"alice-key-123\"\n",
        &[],
        &[],
    );
    let addr = w.rtmp.clone().unwrap();
    let mut hogs: Vec<_> = (0..6).map(|_| dribbler(&addr)).collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(4);
    let refused = loop {
        let refused = hogs.iter_mut().map(closed).filter(|&c| c).count();
        if refused >= 2 || std::time::Instant::now() > deadline {
            break refused;
        }
    };
    assert_eq!(refused, 2, "the address holds at most 4 connections");
    // Many more, refused at once: counted every time, logged at a bounded rate.
    for _ in 0..40 {
        let mut s = dribbler(&addr);
        assert!(closed_within(&mut s, std::time::Duration::from_secs(3)), "a connection past the cap is refused");
    }
    // Dripping a byte a second does not hold a slot past the publish deadline.
    wait_until("every hog's slot closed by the publish deadline", 12, || hogs.iter_mut().all(closed));
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
    let w = Worker::start(
        "[ingest.rtmp]\nlisten = \"127.0.0.1:0\"\n[ingest.rtmp.stream_keys]\nalice = \"alice-key-123\"\n",
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

/// The secret of the tests' HMAC-signed stream keys (`hmac_secret_env`).
const HMAC_SECRET: &str = "test-hmac-secret-0123456789";

/// A signed key for `name`, good for an hour.
fn signed_key(name: &str) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    vigil_media::ingest::keys::StreamKeys::sign(HMAC_SECRET.as_bytes(), name, now + 3600)
}

/// Other spellings of the signed key `key` that decode to the same name, expiry and
/// signature: an upper-case or mixed-case signature, `+EXPIRY`, `0EXPIRY`.
fn other_spellings(key: &str) -> Vec<String> {
    let mut parts = key.rsplitn(3, '.');
    let (sig, expiry, name) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
    let mixed: String =
        sig.chars().enumerate().map(|(i, c)| if i % 2 == 0 { c.to_ascii_uppercase() } else { c }).collect();
    vec![
        format!("{name}.{expiry}.{}", sig.to_ascii_uppercase()),
        format!("{name}.{expiry}.{mixed}"),
        format!("{name}.+{expiry}.{sig}"),
        format!("{name}.0{expiry}.{sig}"),
    ]
}

/// Replaces `path` the way docs/matching.md asks operators to (write aside, then rename).
fn replace_file(path: &std::path::Path, text: &str) {
    let aside = path.with_extension("new");
    std::fs::write(&aside, text).unwrap();
    std::fs::rename(&aside, path).unwrap();
}

#[test]
fn a_revoked_key_is_refused_and_its_live_publish_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let revoked = dir.path().join("revoked.txt");
    std::fs::write(&revoked, "# nothing revoked yet\n").unwrap();
    let w = Worker::start(
        &format!(
            "[ingest]\nrevoked_keys_file = {revoked:?}\nrevoked_keys_poll_secs = 1\n\
             [ingest.rtmp]\nlisten = \"127.0.0.1:0\"\n\
             [ingest.rtmp.stream_keys]\nalice = \"alice-key-123\"\nbob = \"bob-key-4567\"\n"
        ),
        &[],
        &[],
    );
    let addr = w.rtmp.clone().unwrap();
    let mut alice = common::nginx::publish(&format!("rtmp://{addr}/live/alice-key-123"), 60, "ball");
    let mut bob = common::nginx::publish(&format!("rtmp://{addr}/live/bob-key-4567"), 60, "ball");
    w.wait_for("both streams analysed", 30, |r| {
        stream_frames(r, "rtmp/live/alice") > 0 && stream_frames(r, "rtmp/live/bob") > 0
    });
    // Alice's key leaks: the platform revokes it by digest (the key never in the file).
    let digest = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(b"alice-key-123"))
    };
    replace_file(&revoked, &format!("sha256:{digest}\n"));
    let revoked_at = std::time::Instant::now();
    wait_until("the revoked publisher's disconnection", 15, || alice.try_wait().unwrap().is_some());
    eprintln!("revoked publisher closed {:?} after the file changed", revoked_at.elapsed());
    assert!(bob.try_wait().unwrap().is_none(), "only the revoked key's publish is closed");
    let mut again = common::nginx::publish(&format!("rtmp://{addr}/live/alice-key-123"), 2, "ball");
    assert!(!again.wait().unwrap().success(), "a revoked key cannot publish again");
    assert!(w.metric("vigil_media_errors_total", "kind=\"rtmp_key_revoked\"") >= 1.0);
    // Revoking is not guessing: the address is not locked out for it.
    assert_eq!(w.metric("vigil_media_errors_total", "kind=\"rtmp_key_limited\""), 0.0);

    // A file caught half-written (no final newline) keeps the list in force.
    replace_file(&revoked, "sha256:");
    wait_until("the half-written file read (and refused)", 15, || {
        w.metric("vigil_media_errors_total", "kind=\"revoked_keys_reload\"") >= 1.0
    });
    let mut still = common::nginx::publish(&format!("rtmp://{addr}/live/alice-key-123"), 2, "ball");
    assert!(!still.wait().unwrap().success(), "a cut-short list must not un-revoke keys");
    assert!(w.metric("vigil_media_errors_total", "kind=\"revoked_keys_reload\"") >= 1.0);
    let _ = bob.kill();
    drop(w);

    // A signed key revoked as `key:NAME.EXP.SIG` is refused in every other spelling that
    // passes the signature check (upper-case signature, `+EXP`, `0EXP`) as revoked,
    // not as a guess.
    let carol = signed_key("carol");
    replace_file(&revoked, &format!("key:{carol}\n"));
    let w = Worker::start(
        &format!(
            "[ingest]\nrevoked_keys_file = {revoked:?}\n\
             [ingest.rtmp]\nlisten = \"127.0.0.1:0\"\nhmac_secret_env = \"VIGIL_TEST_HMAC_SECRET\"\n"
        ),
        &[],
        &[("VIGIL_TEST_HMAC_SECRET", HMAC_SECRET)],
    );
    let addr = w.rtmp.clone().unwrap();
    let spellings = other_spellings(&carol);
    for spelling in &spellings {
        let mut p = common::nginx::publish(&format!("rtmp://{addr}/live/{spelling}"), 1, "ball");
        assert!(!p.wait().unwrap().success(), "another spelling of a revoked key: {spelling}");
    }
    // Refused as revoked, each one (a refusal as malformed would count `rtmp_key` only).
    let refused = w.metric("vigil_media_errors_total", "kind=\"rtmp_key_revoked\"");
    assert_eq!(refused, spellings.len() as f64, "{}", tail(&w.stderr(), 20));
    assert_eq!(w.metric("vigil_media_errors_total", "kind=\"rtmp_key_limited\""), 0.0);
    assert!(!w.records().iter().any(|r| r["stream"] == "rtmp/live/carol"));
}

#[test]
fn whip_refuses_revoked_keys_and_addresses_that_keep_guessing() {
    let dir = tempfile::tempdir().unwrap();
    let revoked = dir.path().join("revoked.txt");
    std::fs::write(&revoked, "name:mallory\n").unwrap();
    let port = free_port();
    let w = Worker::start(
        &format!(
            "[ingest]\nrevoked_keys_file = {revoked:?}\n\
             [ingest.whip]\nlisten = \"127.0.0.1:{port}\"\n\
             [ingest.whip.stream_keys]\nalice = \"alice-key-123\"\nmallory = \"mallory-key-9\"\n"
        ),
        &[],
        &[],
    );
    let addr = format!("127.0.0.1:{port}");
    let post = |key: &str| {
        let auth = format!("Bearer {key}");
        let headers = [("Authorization", auth.as_str()), ("Content-Type", "application/sdp")];
        w.request(&addr, "POST", "/whip", &headers, b"v=0\r\n")
    };
    let (status, _, body) = post("mallory-key-9");
    assert_eq!(status, 403, "a revoked key: {body}");
    assert!(body.contains("revoked"), "{body}");
    for guess in 0..5 {
        let (status, _, _) = post(&format!("guess-{guess}-key"));
        assert_eq!(status, 401);
    }
    // The sixth try is refused before its key is checked, the right key too.
    let (status, head, _) = post("alice-key-123");
    assert_eq!(status, 429, "{head}");
    assert!(head.to_ascii_lowercase().contains("retry-after: 60"), "{head}");
    let (status, _, _) =
        w.request(&addr, "DELETE", "/whip/session/anything", &[("Authorization", "Bearer alice-key-123")], b"");
    assert_eq!(status, 429, "ending a session is no way around the limit");
    assert_eq!(w.metric("vigil_media_errors_total", "kind=\"whip_key_limited\""), 2.0);
    drop(w);

    // A signed key revoked as `key:NAME.EXP.SIG`: every other spelling of it gets 403.
    let carol = signed_key("carol");
    replace_file(&revoked, &format!("key:{carol}\n"));
    let port = free_port();
    let w = Worker::start(
        &format!(
            "[ingest]\nrevoked_keys_file = {revoked:?}\n\
             [ingest.whip]\nlisten = \"127.0.0.1:{port}\"\nhmac_secret_env = \"VIGIL_TEST_HMAC_SECRET\"\n"
        ),
        &[],
        &[("VIGIL_TEST_HMAC_SECRET", HMAC_SECRET)],
    );
    let addr = format!("127.0.0.1:{port}");
    for spelling in std::iter::once(carol.clone()).chain(other_spellings(&carol)) {
        let auth = format!("Bearer {spelling}");
        let headers = [("Authorization", auth.as_str()), ("Content-Type", "application/sdp")];
        let (status, _, body) = w.request(&addr, "POST", "/whip", &headers, b"v=0\r\n");
        assert_eq!(status, 403, "{spelling}: {body}");
    }
    assert_eq!(w.metric("vigil_media_errors_total", "kind=\"whip_key_limited\""), 0.0);
}

#[test]
fn a_malformed_revocation_list_stops_the_worker_at_start_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let revoked = dir.path().join("revoked.txt");
    std::fs::write(&revoked, "name:alice\nsha256:abc\n").unwrap();
    let config = dir.path().join("vigil.toml");
    std::fs::write(&config, format!("[ingest]\nrevoked_keys_file = {revoked:?}\n")).unwrap();
    let out = vigil(&["validate", config.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("ingest.revoked_keys_file") && text.contains("line 2"), "{text}");
}

/// The error number of a call the seccomp policy refuses.
const EPERM: i64 = 1;

#[test]
fn a_decode_child_taken_over_cannot_reach_the_worker_or_the_host() {
    // The probe confines itself exactly as a decode child of each source kind, then
    // attacks a real (non-dumpable) worker: signals, its memory, its limits, its CPUs,
    // raw and unexpected sockets, exec, namespaces. It also checks what decoding needs
    // still works, so a policy that refused everything would fail here too.
    let w = Worker::start("", &[], &[]);
    for kind in ["pushed", "whip", "pulled"] {
        let out = vigil(&["media-child", "--probe", kind, "--target", &w.pid().to_string()]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let results: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert!(results.len() >= 20, "{kind}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
        for r in &results {
            let call = r["call"].as_str().unwrap();
            assert_eq!(r["allowed"], r["must_allow"], "{kind}: {call}: {r}");
            // Refused by the seccomp policy (EPERM), except reading the worker's memory,
            // which the kernel refuses (EACCES): the worker is not dumpable and the
            // child holds no capability over it.
            if r["allowed"] == false && !call.contains("/mem") {
                assert_eq!(r["errno"], EPERM, "{kind}: {call} must be refused by the policy: {r}");
            }
        }
        for expected in ["execve", "kill(worker, 0)", "pidfd_open(worker)", "socket(packet)", "socket(raw icmp)"] {
            assert!(results.iter().any(|r| r["call"] == expected), "{kind} tried {expected}");
        }
        assert!(out.status.success(), "{kind}: {stdout}");
    }
}
