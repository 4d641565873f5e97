//! WHIP ingest end to end: a real WebRTC publisher (aiortc, from PyPI) sends a clip of
//! the benign astronaut image to the worker's WHIP endpoint; the decode child answers
//! with `webrtcbin`, the stream is sampled on keyframes the child requests, its frames
//! match a bank and raise an alert and an interrupt, and DELETE ends it. Hostile and
//! wrong requests get their status codes, and a publisher that leaves without DELETE
//! ends its stream.
//!
//! WebRTC's ICE never pairs loopback addresses, so the worker and the publisher run
//! inside a network namespace this test creates (see `common::netns`); nothing leaves it.

mod common;

use common::netns::Netns;
use common::worker::*;
use common::*;
use serde_json::Value;
use std::path::Path;

const ALICE: &str = "alice-key-0001";
const BOB: &str = "bob-key-0002";

fn whip_client() -> std::path::PathBuf {
    root().join("tests/peers/whip_publish.py")
}

/// Runs the aiortc publisher inside `ns`; returns its JSON lines.
fn publish(ns: &str, endpoint: &str, clip: &Path, extra: &[&str]) -> Vec<Value> {
    let python = cache_dir().join("venv/bin/python");
    let out = common::netns::command_in(ns, &python)
        .arg(whip_client())
        .args(["--endpoint", endpoint, "--token", ALICE, "--video", clip.to_str().unwrap()])
        .args(extra)
        .output()
        .expect("the WHIP publisher runs (make setup installs aiortc)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "publisher failed:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect()
}

/// Every `ended` notice of a stream name (one per session), in order.
fn endings<'a>(records: &'a [Value], stream: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| r["stream"] == stream && r["event"] == "ended").collect()
}

/// Waits until the worker no longer lists `stream` (its name is free for a new session).
fn wait_gone(w: &Worker, stream: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (_, body) = w.http("GET", "/streams");
        if !body.contains(&format!("\"{stream}\"")) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{stream} is still listed: {body}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn step<'a>(lines: &'a [Value], event: &str) -> &'a Value {
    lines.iter().find(|l| l["event"] == event).unwrap_or_else(|| panic!("no {event} in {lines:?}"))
}

/// A well-formed offer as a browser would send it, minus what webrtcbin needs to
/// connect (no ICE credentials, no DTLS fingerprint).
const HOLLOW_OFFER: &str = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n\
                            c=IN IP4 0.0.0.0\r\na=rtpmap:96 VP8/90000\r\na=sendonly\r\na=mid:0\r\n";

#[test]
fn a_whip_publisher_is_scanned_on_requested_keyframes_matched_and_ended_by_delete() {
    let ns = Netns::create();
    let dir = tempfile::tempdir().unwrap();
    let clip = still_clip(dir.path(), &astronaut(), "astronaut.mp4", 10, 2000, 480, "mp4mux");
    let bank = dir.path().join("bank.txt");
    std::fs::write(&bank, format!("{}\n", pdq_of(&astronaut()))).unwrap();
    // The worker would cut the publisher at its first match; this test follows a whole
    // session (keyframe cadence, DELETE), so the platform is left to make the cut.
    let w = Worker::start_in(
        Some(&ns),
        &format!(
            "[media]\nsampling = \"keyframes\"\nsample_fps = 1.0\n\
             [hash]\n[[hash.banks]]\nname = \"known\"\npath = \"{}\"\naction = \"interrupt\"\n\
             [ingest]\ncut_direct_publishers = false\n\
             [ingest.whip]\nlisten = \"127.0.0.1:0\"\nprivate_candidates = true\n\
             stream_keys = {{ alice = \"{ALICE}\", bob = \"{BOB}\" }}\n",
            bank.display()
        ),
        &[],
        &[],
    );
    let endpoint = w.whip.clone().expect("the worker announces its WHIP endpoint");
    let addr = endpoint.trim_start_matches("http://").trim_end_matches("/whip").to_string();
    let post = |headers: &[(&str, &str)], body: &[u8]| w.request(&addr, "POST", "/whip", headers, body);
    let bearer = format!("Bearer {ALICE}");
    let sdp = ("Content-Type", "application/sdp");

    // Refused before any child starts: who, what type, what shape, how big.
    let (status, head, _) = post(&[sdp], HOLLOW_OFFER.as_bytes());
    assert_eq!(status, 401);
    assert!(head.to_ascii_lowercase().contains("www-authenticate: bearer"), "{head}");
    assert_eq!(post(&[sdp, ("Authorization", "Bearer not-a-key-123")], HOLLOW_OFFER.as_bytes()).0, 401);
    let auth = ("Authorization", bearer.as_str());
    assert_eq!(post(&[auth, ("Content-Type", "text/plain")], HOLLOW_OFFER.as_bytes()).0, 415);
    let (status, _, body) = post(&[auth, sdp], b"hello");
    assert_eq!((status, body.trim()), (400, "the offer is not SDP (it must start with v=0)"));
    let (status, _, body) = post(&[auth, sdp], b"v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n");
    assert_eq!((status, body.trim()), (400, "the offer has no video"));
    assert_eq!(post(&[auth, sdp], &vec![b'a'; 70 * 1024]).0, 413);
    // Well-shaped, but webrtcbin (in the child) cannot use it: its reason comes back.
    // Its candidates are ones the worker must not contact, however they are written
    // (GStreamer's parser skips the leading whitespace): dropped and counted.
    let hostile = format!(
        "{HOLLOW_OFFER} a=candidate:1 1 UDP 2122252543 127.0.0.1 5000 typ host\r\n\
         a= candidate:2 1 udp 2122252543 169.254.169.254 5000 typ host\r\n\
         a=candidate:3 1 UDP 2122252543 kube-dns.kube-system.svc.cluster.local 53 typ host\r\n"
    );
    let (status, _, body) = post(&[auth, sdp], hostile.as_bytes());
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("set-remote-description") && body.contains("fingerprint"), "{body}");
    let dropped = |reason: &str| {
        w.metric("vigil_media_whip_candidates_dropped_total", &format!("filter=\"offer\",reason=\"{reason}\""))
    };
    assert_eq!((dropped("loopback"), dropped("link_local"), dropped("hostname")), (1.0, 1.0, 1.0));
    w.wait_for("the refused offer's stream to end", 30, |r| ended(r, "whip/alice").is_some());
    wait_gone(&w, "whip/alice");
    // DELETE needs the key, and a session that exists.
    let session = "/whip/session/00000000000000000000000000000000";
    assert_eq!(w.request(&addr, "DELETE", session, &[], b"").0, 401);
    assert_eq!(w.request(&addr, "DELETE", session, &[auth], b"").0, 404);
    assert_eq!(w.metric("vigil_media_errors_total", "kind=\"whip_key\""), 3.0);
    assert_eq!(w.metric("vigil_media_errors_total", "kind=\"whip_offer\""), 2.0);

    // The real publisher, while the test checks the stream from the worker's side.
    let client = {
        let (ns_name, endpoint, clip) = (ns.name.clone(), endpoint.clone(), clip.clone());
        std::thread::spawn(move || publish(&ns_name, &endpoint, &clip, &["--secs", "7", "--wrong-key", BOB]))
    };
    w.wait_for("frames of the WHIP stream", 60, |r| stream_frames(r, "whip/alice") >= 2);
    // The same stream name cannot be published twice at once.
    let (status, _, body) = post(&[auth, sdp], HOLLOW_OFFER.as_bytes());
    assert_eq!(status, 409, "{body}");
    // The decode child is confined like any other (it may open sockets: ICE needs them).
    let children = w.decode_children();
    assert_eq!(children.len(), 1, "{children:?}");
    let status = std::fs::read_to_string(format!("/proc/{}/status", children[0].0)).unwrap();
    assert!(status.contains("Seccomp:\t2") && status.contains("NoNewPrivs:\t1"), "{status}");
    assert!(!children[0].1.contains("v=0"), "the offer never appears on a command line");

    let lines = client.join().unwrap();
    let answer = step(&lines, "answer");
    assert_eq!(answer["status"], 201, "{lines:?}");
    assert!(answer["candidates"].as_u64().unwrap() >= 1, "the answer carries its candidates: {answer}");
    let location = answer["location"].as_str().unwrap();
    let id = location.strip_prefix("/whip/session/").expect(location);
    assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{location}");
    assert!(lines.iter().any(|l| l["event"] == "state" && l["state"] == "connected"), "{lines:?}");
    assert_eq!(step(&lines, "deleted_with_wrong_key")["status"], 404, "bob's key cannot end alice's stream");
    assert_eq!(step(&lines, "deleted")["status"], 200);
    assert_eq!(step(&lines, "patched")["status"], 405, "no trickle ICE: the answer had every candidate");
    // The child's own pass found nothing the worker's pass had let through.
    assert_eq!(w.metric("vigil_media_whip_candidates_dropped_total", "filter=\"decoder\""), 0.0);

    let records = w.wait_for("the stream to end", 30, |r| {
        endings(r, "whip/alice").iter().any(|e| e["reason"] == "the publisher ended the session")
    });
    let stream = of_stream(&records, "whip/alice");
    let decoding = stream.iter().rev().find(|r| r["event"] == "decoding").expect("a decoding notice");
    assert!(decoding["detail"].as_str().unwrap().contains("vp8dec"), "{decoding}");
    // aiortc makes a keyframe every 3000 frames unless asked (a PLI): one frame a
    // second on keyframes alone shows the child's requests reach the publisher.
    let pts: Vec<u64> = stream
        .iter()
        .filter(|r| r["type"] == "frame" && r["pdq"].is_object())
        .map(|r| r["pts_ms"].as_u64().unwrap())
        .collect();
    assert!(pts.len() >= 4, "frames at {pts:?}");
    assert!(pts.windows(2).all(|p| p[1] >= p[0] + 900), "at most one frame a second: {pts:?}");
    let alert = records.iter().find(|r| r["type"] == "alert" && r["stream_id"] == "whip/alice");
    let alert = alert.unwrap_or_else(|| panic!("an alert for the matched stream: {stream:?}"));
    assert!(schema_violations(alert).is_empty(), "{:?}", schema_violations(alert));
    assert!(records.iter().any(|r| r["type"] == "interrupt" && r["stream_id"] == "whip/alice"));

    // A publisher that vanishes (no DELETE) ends its stream with the reason.
    wait_gone(&w, "whip/alice");
    let lines = publish(&ns.name, &endpoint, &clip, &["--secs", "3", "--no-delete"]);
    assert_eq!(step(&lines, "answer")["status"], 201, "{lines:?}");
    let records = w.wait_for("the abandoned stream to end", 40, |r| endings(r, "whip/alice").len() >= 3);
    let last = endings(&records, "whip/alice")[2];
    assert!(last["reason"].as_str().unwrap().contains("left without ending the session"), "{last}");
    // UPnP is off: libnice never went looking for routers to open ports on.
    assert!(!w.stderr().contains("gupnp"), "{}", tail(&w.stderr(), 20));
    let (status, _) = w.stop();
    assert!(status.success());
}
