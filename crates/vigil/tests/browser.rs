//! A real browser publishing over WHIP: Debian's Chromium, driven by Debian's
//! chromedriver, inside the test's network namespace (ICE skips loopback). The page is
//! served from another origin than the WHIP endpoint, as a platform's studio page would
//! be, so CORS must let it POST, read `Location` and DELETE. Once connected the browser
//! must be given what any WHIP server gives it: congestion feedback (transport-cc) and
//! receiver reports at the usual rate, so that it sends the camera's full resolution,
//! and keyframe requests as PLI.

mod common;

use common::netns::{Netns, within};
use common::worker::*;
use common::{wait_until, wait_until_or};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const KEY: &str = "studio-key-0001";
const SOURCE: (u64, u64) = (1280, 720);

/// The studio page: camera (Chromium's fake device) → RTCPeerConnection → WHIP POST to
/// another origin; then it samples its own sender's statistics twice a second.
fn page(whip: &str) -> String {
    format!(
        r#"<!doctype html><meta charset="utf-8"><title>studio</title>
<script>
window.vigil = {{ samples: [], errors: [] }};
async function publish() {{
  const media = await navigator.mediaDevices.getUserMedia({{ video: {{ width: {w}, height: {h}, frameRate: 30 }} }});
  const track = media.getVideoTracks()[0];
  window.vigil.source = track.getSettings();
  const pc = new RTCPeerConnection();
  pc.addTransceiver(track, {{ direction: "sendonly" }});
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise(done => {{
    if (pc.iceGatheringState === "complete") return done();
    pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && done();
    setTimeout(done, 3000);
  }});
  const resp = await fetch("{whip}", {{
    method: "POST",
    headers: {{ "Content-Type": "application/sdp", "Authorization": "Bearer {KEY}" }},
    body: pc.localDescription.sdp,
  }});
  window.vigil.status = resp.status;
  window.vigil.location = resp.headers.get("Location");
  const answer = await resp.text();
  window.vigil.answer = answer;
  if (resp.status !== 201) return;
  await pc.setRemoteDescription({{ type: "answer", sdp: answer }});
  window.vigil.connectedAt = null;
  pc.onconnectionstatechange = () => {{
    if (pc.connectionState === "connected" && !window.vigil.connectedAt) window.vigil.connectedAt = performance.now();
  }};
  setInterval(async () => {{
    const stats = await pc.getStats();
    const s = {{ t: performance.now() }};
    stats.forEach(r => {{
      if (r.type === "outbound-rtp" && r.kind === "video") {{
        Object.assign(s, {{ width: r.frameWidth, height: r.frameHeight, bytes: r.bytesSent,
          target: r.targetBitrate, limit: r.qualityLimitationReason, pli: r.pliCount, fir: r.firCount }});
      }}
      if (r.type === "remote-inbound-rtp" && r.kind === "video") {{
        s.reports = r.roundTripTimeMeasurements;
      }}
    }});
    window.vigil.samples.push(s);
  }}, 500);
  window.vigil.end = async () => {{
    const url = new URL(window.vigil.location, "{whip}").href;
    const r = await fetch(url, {{ method: "DELETE", headers: {{ "Authorization": "Bearer {KEY}" }} }});
    window.vigil.deleted = r.status;
    pc.close();
  }};
}}
publish().catch(e => window.vigil.errors.push(String(e)));
</script>"#,
        w = SOURCE.0,
        h = SOURCE.1
    )
}

/// Serves the page (every GET) from a listener of its own: another origin.
fn serve_page(listener: TcpListener, html: String) {
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                html.len()
            );
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(html.as_bytes());
        }
    });
}

/// chromedriver inside the namespace, and its WebDriver session.
struct Browser {
    driver: Child,
    ns: String,
    port: u16,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start(ns: &Netns) -> Browser {
        let port = common::nginx::free_port();
        let driver = ns
            .command("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (make setup installs chromium-driver)");
        let profile = tempfile::tempdir().unwrap();
        let mut b = Browser { driver, ns: ns.name.clone(), port, session: String::new(), _profile: profile };
        wait_until("chromedriver to come up", 20, || {
            b.call("GET", "/status", None).get("value").and_then(|v| v.get("ready")) == Some(&json!(true))
        });
        let caps = json!({ "capabilities": { "alwaysMatch": { "browserName": "chrome", "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                format!("--user-data-dir={}", b._profile.path().display()),
                "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                "--disable-features=WebRtcHideLocalIpsWithMdns",
            ],
        }}}});
        let created = b.call("POST", "/session", Some(caps));
        b.session = created["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {created}")).into();
        b
    }

    /// One WebDriver call (JSON over HTTP/1.1 to chromedriver, inside the namespace).
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (port, method, path) = (self.port, method.to_string(), path.to_string());
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let text = within(&self.ns, move || {
            let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return String::new() };
            s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
            let req = format!(
                "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(req.as_bytes());
            common::webdriver::read_response(&mut s)
        });
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        serde_json::from_str(body).unwrap_or(Value::Null)
    }

    fn eval(&self, script: &str) -> Value {
        let path = format!("/session/{}/execute/sync", self.session);
        self.call("POST", &path, Some(json!({ "script": script, "args": [] })))["value"].clone()
    }

    fn open(&self, url: &str) {
        let path = format!("/session/{}/url", self.session);
        self.call("POST", &path, Some(json!({ "url": url })));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let path = format!("/session/{}", self.session);
            self.call("DELETE", &path, None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[test]
fn a_browser_on_another_origin_publishes_at_its_camera_resolution() {
    let ns = Netns::create();
    let page_listener = within(&ns.name, || TcpListener::bind("127.0.0.1:0").unwrap());
    let page_origin = format!("http://127.0.0.1:{}", page_listener.local_addr().unwrap().port());
    let w = Worker::start_in(
        Some(&ns),
        &format!(
            "[media]\nsampling = \"keyframes\"\nsample_fps = 1.0\n\
             [ingest]\ncut_direct_publishers = false\n\
             [ingest.whip]\nlisten = \"127.0.0.1:0\"\nprivate_candidates = true\n\
             cors_allowed_origins = [\"{page_origin}\"]\nstream_keys = {{ studio = \"{KEY}\" }}\n"
        ),
        &[],
        &[],
    );
    let endpoint = w.whip.clone().expect("the worker announces its WHIP endpoint");
    let addr = endpoint.trim_start_matches("http://").trim_end_matches("/whip").to_string();

    // The preflight, as a browser sends it: allowed for the studio's origin only.
    let preflight = |origin: &str| {
        let headers = [
            ("Origin", origin),
            ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", "authorization,content-type"),
        ];
        w.request(&addr, "OPTIONS", "/whip", &headers, b"").1.to_ascii_lowercase()
    };
    let allowed = preflight(&page_origin);
    assert!(allowed.contains(&format!("access-control-allow-origin: {page_origin}")), "{allowed}");
    assert!(allowed.contains("authorization") && allowed.contains("post"), "{allowed}");
    let other = preflight("http://elsewhere.example");
    assert!(!other.contains("access-control-allow-origin"), "another origin is not allowed: {other}");
    let (status, _, _) = w.request(&addr, "OPTIONS", "/whip/session/anything", &[], b"");
    assert!((200..300).contains(&status), "OPTIONS on a session URL: {status}");

    serve_page(page_listener, page(&endpoint));
    let browser = Browser::start(&ns);
    browser.open(&format!("{page_origin}/"));

    // Published, then followed until it sends its full picture (or a minute passed):
    // the sender's own view of what it sends, twice a second.
    let started = Instant::now();
    let deadline = started + Duration::from_secs(60);
    let full_size = |s: &Value| (s["width"].as_u64(), s["height"].as_u64()) == (Some(SOURCE.0), Some(SOURCE.1));
    let state = loop {
        let v = browser.eval("return window.vigil");
        assert!(v["errors"].as_array().is_none_or(|e| e.is_empty()), "the page failed: {v}");
        if v["status"].is_number() && v["status"] != 201 {
            panic!("the WHIP POST from another origin failed: {v}");
        }
        let samples = v["samples"].as_array().cloned().unwrap_or_default();
        let full_for = samples.iter().rev().take_while(|s| full_size(s)).count();
        if full_for >= 6 || Instant::now() > deadline {
            break v;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    eprintln!("followed the browser for {:?}", started.elapsed());
    assert_eq!(state["status"], 201, "{state}");
    assert!(state["location"].as_str().is_some_and(|l| l.starts_with("/whip/session/")), "Location exposed: {state}");
    let answer = state["answer"].as_str().unwrap();
    assert!(answer.contains("transport-wide-cc"), "the answer keeps transport-cc: {answer}");
    assert!(answer.contains("transport-cc\r\n"), "and its RTCP feedback: {answer}");
    assert!(!answer.contains("ccm fir"), "keyframes are asked for by PLI: {answer}");

    let samples = state["samples"].as_array().unwrap();
    let source = (state["source"]["width"].as_u64().unwrap(), state["source"]["height"].as_u64().unwrap());
    assert_eq!(source, SOURCE, "the fake camera gives what was asked");
    let full =
        samples.iter().position(|s| (s["width"].as_u64(), s["height"].as_u64()) == (Some(source.0), Some(source.1)));
    let summary: Vec<String> = samples
        .iter()
        .map(|s| {
            format!("{}x{} {}kbit/s {}", s["width"], s["height"], s["target"].as_f64().unwrap_or(0.0) / 1e3, s["limit"])
        })
        .collect();
    eprintln!("sender over time: {summary:?}");
    let full = full.unwrap_or_else(|| panic!("the browser never sent its camera's resolution: {summary:?}"));
    // Chromium starts a session at 300 kbit/s and a quarter of the picture, and climbs a
    // step every few seconds (1280x720 after about 20 s here); starved of feedback it
    // stayed at 480x270 for good. The answer's start bitrate lets it send the camera's
    // resolution from the first seconds (measured here: from the first sample).
    eprintln!("full resolution after {:.1} s", full as f64 / 2.0);
    assert!(full <= 10, "full resolution only after {:.1} s: {summary:?}", full as f64 / 2.0);
    // Receiver reports at the usual rate (about one a second), not one every 5 s.
    let last = samples.last().unwrap();
    let first_with_reports = samples.iter().find(|s| s["reports"].as_u64().unwrap_or(0) > 0).unwrap();
    let secs = (last["t"].as_f64().unwrap() - first_with_reports["t"].as_f64().unwrap()) / 1000.0;
    let reports = last["reports"].as_u64().unwrap() - first_with_reports["reports"].as_u64().unwrap();
    assert!(reports as f64 >= secs * 0.6, "{reports} receiver reports in {secs:.1} s");
    // Keyframes were asked for (keyframe sampling), as PLI.
    assert!(last["pli"].as_u64().unwrap_or(0) >= 1 && last["fir"].as_u64().unwrap_or(0) == 0, "{last}");

    eprintln!("checks done at {:?}", started.elapsed());
    // The worker analysed it.
    let records = w.wait_for("frames of the browser's stream", 20, |r| stream_frames(r, "whip/studio") >= 3);
    assert!(stream_frames(&records, "whip/studio") >= 3);

    // The page ends its session: a cross-origin DELETE to the exposed Location.
    browser.eval("window.vigil.end(); return true");
    wait_until_or(
        "the DELETE to succeed",
        10,
        || browser.eval("return window.vigil.deleted") == json!(200),
        || browser.eval("return window.vigil").to_string(),
    );
    w.wait_for("the browser's stream to end", 20, |r| ended(r, "whip/studio").is_some());
    eprintln!("ended at {:?}", started.elapsed());
}
