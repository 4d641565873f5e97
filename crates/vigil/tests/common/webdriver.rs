//! Headless Chromium driven by Debian's chromedriver over WebDriver (JSON over HTTP/1.1
//! on loopback): open pages, find, click and type, press keys, take screenshots.

use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub fn start() -> Browser {
        let port = super::nginx::free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (make setup installs chromium-driver)");
        let profile = tempfile::tempdir().unwrap();
        let mut b = Browser { driver, port, session: String::new(), _profile: profile };
        let deadline = Instant::now() + Duration::from_secs(20);
        while b.call("GET", "/status", None).get("value").and_then(|v| v.get("ready")) != Some(&json!(true)) {
            assert!(Instant::now() < deadline, "chromedriver did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
        let caps = json!({ "capabilities": { "alwaysMatch": { "browserName": "chrome", "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000",
                "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
                format!("--user-data-dir={}", b._profile.path().display()),
            ],
        }}}});
        let created = b.call("POST", "/session", Some(caps));
        b.session = created["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {created}")).into();
        b
    }

    /// One WebDriver call.
    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else { return Value::Null };
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = s.write_all(req.as_bytes());
        let text = read_response(&mut s);
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        serde_json::from_str(body).unwrap_or(Value::Null)
    }

    fn session_call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.call(method, &format!("/session/{}{path}", self.session), body)
    }

    /// Sets the window's outer size.
    pub fn resize(&self, width: u32, height: u32) {
        self.session_call("POST", "/window/rect", Some(json!({ "width": width, "height": height })));
    }

    pub fn open(&self, url: &str) {
        self.session_call("POST", "/url", Some(json!({ "url": url })));
    }

    pub fn url(&self) -> String {
        self.session_call("GET", "/url", None)["value"].as_str().unwrap_or_default().to_string()
    }

    pub fn eval(&self, script: &str) -> Value {
        self.session_call("POST", "/execute/sync", Some(json!({ "script": script, "args": [] })))["value"].clone()
    }

    /// Runs an asynchronous script: it ends by calling its last argument with the result.
    pub fn eval_async(&self, script: &str) -> Value {
        self.session_call("POST", "/execute/async", Some(json!({ "script": script, "args": [] })))["value"].clone()
    }

    /// axe-core's serious and critical violations on the page (WCAG 2 A and AA rules), as
    /// "rule: N element(s) (first target)". axe comes from setup (`testdata/axe.min.js`,
    /// pinned by sha256).
    pub fn accessibility_violations(&self, axe: &str) -> Vec<String> {
        self.eval(&format!("{axe}\n;return typeof axe"));
        let v = self.eval_async(
            "var done = arguments[arguments.length - 1];\
             axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] } })\
               .then(function (r) { done(r.violations.filter(function (v) { return v.impact === 'serious' || v.impact === 'critical'; })\
                 .map(function (v) { return v.id + ': ' + v.nodes.length + ' element(s) (' + v.nodes[0].target.join(' ') + ')'; })); })\
               .catch(function (e) { done(['axe failed: ' + e]); });",
        );
        v.as_array()
            .map(|a| a.iter().map(|x| x.as_str().unwrap_or_default().to_string()).collect())
            .unwrap_or_else(|| vec![format!("no answer: {v}")])
    }

    /// The page's visible text.
    pub fn text(&self) -> String {
        self.eval("return document.body ? document.body.innerText : ''").as_str().unwrap_or_default().to_string()
    }

    /// The element a CSS selector finds, waiting up to 10 s for it.
    pub fn find(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let v = self.session_call("POST", "/element", Some(json!({ "using": "css selector", "value": css })));
            if let Some(id) = v["value"][ELEMENT].as_str() {
                return id.to_string();
            }
            assert!(Instant::now() < deadline, "no element {css:?} on {}: {v}\n{}", self.url(), self.text());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn click(&self, css: &str) {
        let id = self.find(css);
        let v = self.session_call("POST", &format!("/element/{id}/click"), Some(json!({})));
        assert!(v["value"].is_null(), "click {css}: {v}");
    }

    pub fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css);
        let v = self.session_call("POST", &format!("/element/{id}/value"), Some(json!({ "text": text })));
        assert!(v["value"].is_null(), "type into {css}: {v}");
    }

    /// Presses keys (WebDriver key codes, e.g. "\u{E004}" for Tab, "\u{E007}" Enter).
    pub fn keys(&self, keys: &str) {
        let mut actions = Vec::new();
        for k in keys.chars() {
            actions.push(json!({ "type": "keyDown", "value": k.to_string() }));
            actions.push(json!({ "type": "keyUp", "value": k.to_string() }));
        }
        self.session_call(
            "POST",
            "/actions",
            Some(json!({ "actions": [{ "type": "key", "id": "keyboard", "actions": actions }] })),
        );
    }

    /// A PNG of the viewport.
    pub fn screenshot(&self) -> Vec<u8> {
        use base64::Engine;
        let v = self.session_call("GET", "/screenshot", None);
        base64::engine::general_purpose::STANDARD.decode(v["value"].as_str().unwrap_or_default()).expect("a PNG")
    }
}

/// One HTTP response, read to its Content-Length (chromedriver keeps the connection
/// open whatever the request said).
pub fn read_response(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if length.is_some_and(|n| buf.len() >= end + 4 + n) {
                break;
            }
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
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
