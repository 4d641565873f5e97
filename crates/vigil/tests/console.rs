//! The on-call console end to end, in a real browser: a real worker alerts on a banked
//! clip; `vigil console` takes the alert from Kafka (tansu), pages PagerDuty and a
//! signed webhook (a loopback receiver standing in for both); a reviewer signs in with
//! headless Chromium, finds the incident in the queue, acknowledges it with the
//! keyboard alone, and marks it a false positive; the worker applies the allowlist
//! entry within 60 s, and the same clip published again gives no alert. The audit
//! chain verifies. Screenshots go to `target/console-screenshots/` (not committed).
//!
//! Hostile requests through the same interfaces: no session, a forged form (no CSRF
//! token), a cross-origin POST, a viewer trying to act.

mod common;

use common::console::*;
use common::webdriver::Browser;
use common::worker::*;
use common::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vigil_sink::testing::Broker;

const PD_KEY: &str = "0123456789abcdef0123456789abcdef";
const HOOK_SECRET: &str = "a-webhook-secret-of-at-least-32-bytes!";
const PASSWORD: &str = "correct horse battery staple";
const TAB: &str = "\u{E004}";
const ENTER: &str = "\u{E007}";

/// Every page the console sent: (path, body).
type Pages = Arc<Mutex<Vec<(String, Value)>>>;

/// A loopback HTTP receiver answering 202 to everything, recording each request.
fn receiver() -> (String, Pages) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let pages: Pages = Arc::default();
    let seen = pages.clone();
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            let (path, body) = read_request(s);
            if let Ok(v) = serde_json::from_slice(&body) {
                seen.lock().unwrap().push((path, v));
            }
        }
    });
    (addr, pages)
}

fn read_request(mut s: TcpStream) -> (String, Vec<u8>) {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let (head_end, length) = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let n = head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse().ok());
            break (end + 4, n.unwrap_or(0));
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return (String::new(), Vec::new()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    while buf.len() < head_end + length {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let path = String::from_utf8_lossy(&buf).split_whitespace().nth(1).unwrap_or("").to_string();
    let _ = s.write_all(b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}");
    (path, buf[head_end..].to_vec())
}

fn opened(records: &[Value]) -> Vec<&Value> {
    records.iter().filter(|r| r["type"] == "alert" && r["event"] == "opened").collect()
}

#[test]
fn a_reviewer_acknowledges_and_clears_a_false_positive_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    let shots = common::root().join("target/console-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let bank = dir.path().join("bank.txt");
    std::fs::write(&bank, format!("{}\n", pdq_of(&astronaut()))).unwrap();
    let broker = Broker::start(&["vigil.alerts", "vigil.interrupts", "vigil.actions", "vigil.banks.updates"]);
    let (receiver, pages) = receiver();
    let port = common::nginx::free_port();
    let origin = format!("http://127.0.0.1:{port}");
    let config = dir.path().join("console.toml");
    std::fs::write(
        &config,
        format!(
            "[sink.kafka]\nbrokers = \"{}\"\nspool_path = \"{}\"\n\
             [console]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"{origin}\"\nstate_dir = \"{}\"\n\
             stream_url_template = \"https://platform.example/live/{{stream_id}}\"\n\
             [console.paging]\nqueue_age_page_secs = 3600\n\
             [console.paging.pagerduty]\nurl = \"{receiver}/pd\"\nrouting_key_env = \"VIGIL_TEST_PD_KEY\"\nallow_plain_http = true\n\
             [console.paging.webhook]\nurl = \"{receiver}/hook\"\nsecret_env = \"VIGIL_TEST_HOOK_SECRET\"\nallow_plain_http = true\n",
            broker.addr,
            dir.path().join("console-spool").display(),
            dir.path().join("console").display(),
        ),
    )
    .unwrap();
    for (user, role) in [("alice", "reviewer"), ("bob", "reviewer"), ("victor", "viewer")] {
        let out = vigil_console(&config, &["user", user, "--role", role], &[("VIGIL_CONSOLE_PASSWORD", PASSWORD)])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let console = start_console(
        &config,
        dir.path(),
        port,
        &[("VIGIL_TEST_PD_KEY", PD_KEY), ("VIGIL_TEST_HOOK_SECRET", HOOK_SECRET)],
    );

    // A worker alerts on the banked clip.
    let (w, url) = allowlist_worker(&bank, &broker.addr, dir.path());
    let mut first = common::nginx::publish_astronaut(&url, 20);
    let records = w.wait_for("an alert on the banked clip", 60, |r| !opened(r).is_empty());
    let alert_id = opened(&records)[0]["alert_id"].as_str().unwrap().to_string();
    let _ = first.kill();
    let _ = first.wait();
    // The worker cut the first session; until it has ended, the same key publishing again
    // is refused as a second publisher of a live stream.
    w.wait_for("the first session's end", 30, |r| r.iter().any(|x| x["type"] == "stream" && x["event"] == "ended"));
    wait_until("PagerDuty and the webhook paged", 30, || {
        let p = pages.lock().unwrap();
        p.iter().any(|(path, v)| path == "/pd" && v["event_action"] == "trigger" && v["dedup_key"] == alert_id.as_str())
            && p.iter().any(|(path, v)| path == "/hook" && v["action"] == "trigger")
    });

    // Hostile requests, through the real interface.
    let get = |path: &str| http(&console.addr, &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
    assert_eq!(get("/healthz").0, 200);
    let (status, head) = get("/");
    assert_eq!(status, 303, "no session: sent to sign in");
    assert!(head.contains("location: /login") || head.contains("Location: /login"), "{head}");
    assert_eq!(get(&format!("/incident?id={}", alert_id)).0, 303);
    let (_, scrape) = get("/metrics");
    let body = scrape.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    common::metrics_doc::check_both_ways(
        &common::metrics_doc::exported(body),
        &common::metrics_doc::documented("Console"),
    );

    // Sign in as the reviewer, in Chromium.
    let b = Browser::start();
    b.open(&format!("{origin}/"));
    b.type_into("#user", "alice");
    b.type_into("#password", PASSWORD);
    b.click("form[action='/login'] button");
    wait_until("the queue", 10, || b.text().contains("open incident"));
    let queue = b.text();
    assert!(queue.contains("rtmp/live/alice"), "the queue lists the stream: {queue}");
    // Accessibility: axe-core finds nothing serious or critical on the queue.
    let axe = std::fs::read_to_string(common::cache_dir().join("testdata/axe.min.js")).expect("axe-core (make setup)");
    let found = b.accessibility_violations(&axe);
    assert!(found.is_empty(), "the queue: {found:?}");
    // The check bites: an input without a label is a critical violation.
    b.eval("document.getElementById('main').insertAdjacentHTML('beforeend', '<input id=\"unlabelled\">'); return true");
    let found = b.accessibility_violations(&axe);
    assert!(found.iter().any(|v| v.starts_with("label:")), "axe finds an unlabelled input: {found:?}");
    b.eval("document.getElementById('unlabelled').remove(); return true");
    // The queue leads with the stream and its decision, and does not scroll sideways at
    // 800 px (the incident id is on the incident's page).
    b.resize(800, 900);
    let inner = b.eval("return window.innerWidth").as_u64().unwrap_or(0);
    let scroll = b.eval("return document.documentElement.scrollWidth").as_u64().unwrap_or(u64::MAX);
    assert!(inner > 0 && inner <= 800 && scroll <= inner, "the queue scrolls sideways at {inner} px: {scroll}");
    assert_eq!(b.eval("return document.querySelector('table.queue thead th').textContent"), "Stream and decision");
    // j moves to the first incident in the queue (the keys are listed on the page).
    assert!(queue.contains("Keys:"), "{queue}");
    b.keys("j");
    let focused = b.eval("return document.activeElement.getAttribute('href') || ''");
    assert!(focused.as_str().is_some_and(|h| h.starts_with("/incident?id=")), "{focused}");
    assert!(queue.contains("known_abuse_material") && queue.contains("open"), "{queue}");
    std::fs::write(shots.join("queue.png"), b.screenshot()).unwrap();
    b.click("a[href^='/incident?id=']");
    wait_until("the incident page", 10, || b.text().contains("Timeline of samples"));
    let page = b.text();
    let link = b.eval("var a = document.querySelector('a[rel~=noopener]'); return a ? a.href : ''");
    assert_eq!(link, "https://platform.example/live/rtmp%2Flive%2Falice", "the stream on the platform");
    for want in ["bank known id", "Stream lifecycle", "Commands and outcomes", "Audit trail", "interrupt"] {
        assert!(page.contains(want), "the incident page shows {want:?}:\n{page}");
    }
    assert_eq!(b.eval("return document.images.length"), 0, "no imagery at all");
    // The worker cut its own publisher and said so on vigil.actions.
    let incident_url = b.url();
    wait_until("the cut confirmed", 30, || {
        b.open(&incident_url);
        b.text().contains("Interrupt\ncut confirmed") || b.text().contains("Interrupt cut confirmed")
    });
    // The worker's stream events reached the console: the stream's lifecycle, and that
    // it was cut (issue 29, point 2).
    wait_until("the stream's lifecycle on the incident page", 30, || {
        b.open(&incident_url);
        let t = b.text();
        t.contains("stream started on") && t.contains("stream cut on") && t.contains("The stream: cut at")
    });
    std::fs::write(shots.join("incident.png"), b.screenshot()).unwrap();
    let found = b.accessibility_violations(&axe);
    assert!(found.is_empty(), "the incident page: {found:?}");

    // Acknowledge with the keyboard alone: Tab to the button, Enter.
    b.eval("document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0)");
    let mut reached = false;
    for _ in 0..40 {
        b.keys(TAB);
        if b.eval("return document.activeElement.textContent") == "Acknowledge" {
            reached = true;
            break;
        }
    }
    assert!(reached, "the Acknowledge button is reachable with Tab");
    b.keys(ENTER);
    wait_until("the acknowledgement", 10, || {
        b.text().contains("State\nacknowledged") || b.text().contains("State acknowledged")
    });
    wait_until("PagerDuty acknowledged", 30, || {
        pages
            .lock()
            .unwrap()
            .iter()
            .any(|(p, v)| p == "/pd" && v["event_action"] == "acknowledge" && v["dedup_key"] == alert_id.as_str())
    });

    // A viewer cannot act, even with a valid session and token.
    let cookie = sign_in(&console.addr, &origin, "victor", PASSWORD);
    let post_to = |action: &str, cookie: &str, origin: &str, body: &str| {
        http(
            &console.addr,
            &format!(
                "POST /actions/{action} HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\nOrigin: {origin}\r\n\
                 Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
        )
        .0
    };
    let post = |cookie: &str, origin: &str, body: &str| post_to("resolve", cookie, origin, body);
    let form = format!("incident={}&outcome=no_action&csrf=forged", vigil_console::web::pages::url_arg(&alert_id));
    assert_eq!(post(&cookie, &origin, &form), 403, "a forged CSRF token is refused");
    assert_eq!(post(&cookie, "https://evil.example", &form), 403, "a cross-origin POST is refused");
    let (_, viewer_page) =
        get_as(&console.addr, &cookie, &format!("/incident?id={}", vigil_console::web::pages::url_arg(&alert_id)));
    let csrf =
        viewer_page.split("name=\"csrf\" value=\"").nth(1).and_then(|s| s.split('"').next()).unwrap().to_string();
    assert!(!viewer_page.contains("Mark false positive"), "a viewer sees no actions");
    let form = format!("incident={}&outcome=no_action&csrf={csrf}", vigil_console::web::pages::url_arg(&alert_id));
    assert_eq!(post(&cookie, &origin, &form), 403, "a viewer cannot resolve");

    // Escalation pages again.
    b.type_into("#esc-note", "Second opinion: the match distance is low.");
    b.click("form[action='/actions/escalate'] button");
    wait_until("the escalation", 10, || b.text().contains("by alice: to every paging channel: Second opinion"));
    wait_until("a second PagerDuty trigger", 30, || {
        let p = pages.lock().unwrap();
        p.iter()
            .filter(|(p, v)| p == "/pd" && v["event_action"] == "trigger" && v["dedup_key"] == alert_id.as_str())
            .count()
            >= 2
    });

    // False positive: a required note, an expiry, the bank's scope.
    b.type_into("#fp-note", "A benign test photograph (NASA astronaut portrait), not abuse material.");
    let clicked = Instant::now();
    b.click("form[action='/actions/false-positive'] button");
    // Irreversible: a confirmation page first (no script needed), repeating what was asked.
    wait_until("the confirmation", 10, || b.text().contains("Mark this a false positive?"));
    assert!(b.text().contains("NASA astronaut portrait"), "the note is shown again: {}", b.text());
    std::fs::write(shots.join("confirm.png"), b.screenshot()).unwrap();
    b.click("form[aria-label='Confirm'] button");
    // An interrupt-level false positive needs a second reviewer (four eyes): alice's
    // waits, she cannot approve it herself, and bob does.
    wait_until("the proposal", 10, || b.text().contains("False positive waiting for a second reviewer"));
    assert!(
        b.text().contains("False positive proposed: a second reviewer"),
        "a message after the action: {}",
        b.text()
    );
    assert!(b.text().contains("You proposed it"), "{}", b.text());
    assert_eq!(w.metric("vigil_allowlist_entries", ""), 0.0, "nothing allowed before the approval");
    let incident_path = format!("/incident?id={}", vigil_console::web::pages::url_arg(&alert_id));
    let form_for = |cookie: &str| {
        let (_, page) = get_as(&console.addr, cookie, &incident_path);
        let csrf = page.split("name=\"csrf\" value=\"").nth(1).and_then(|s| s.split('"').next()).unwrap().to_string();
        format!("incident={}&csrf={csrf}&confirm=yes", vigil_console::web::pages::url_arg(&alert_id))
    };
    let alice = sign_in(&console.addr, &origin, "alice", PASSWORD);
    assert_eq!(post_to("approve-false-positive", &alice, &origin, &form_for(&alice)), 409, "not by its proposer");
    let bob = sign_in(&console.addr, &origin, "bob", PASSWORD);
    assert!(get_as(&console.addr, &bob, &incident_path).1.contains("Approve false positive"));
    assert_eq!(post_to("approve-false-positive", &bob, &origin, &form_for(&bob)), 303);
    // Alice's page shows it by itself (it refreshes every 5 s, from /console.js alone:
    // the CSP allows no inline script).
    wait_until("the resolution on alice's page, without a reload", 20, || b.text().contains("by bob (false positive)"));
    assert_eq!(b.eval("return document.querySelectorAll('script:not([src])').length"), 0);
    assert!(b.eval("return document.body.getAttribute('data-refreshed')").is_string(), "refreshed in place");
    let page = b.text();
    assert!(page.contains("proposed by alice, approved by bob"), "{page}");
    assert!(page.contains("Allowlist entries") && page.contains("bank known"), "{page}");
    std::fs::write(shots.join("false-positive.png"), b.screenshot()).unwrap();
    wait_until("the worker applies the entry", 60, || w.metric("vigil_allowlist_entries", "") >= 1.0);
    eprintln!("false positive applied by the worker {:?} after the click", clicked.elapsed());
    wait_until("PagerDuty resolved", 30, || {
        pages
            .lock()
            .unwrap()
            .iter()
            .any(|(p, v)| p == "/pd" && v["event_action"] == "resolve" && v["dedup_key"] == alert_id.as_str())
    });

    // Alice chooses local time: her pages say so, and show it (from /console.js).
    b.click("form[action='/account/times'] button");
    wait_until("the local-time choice", 10, || b.eval("return document.body.getAttribute('data-times')") == "local");
    b.open(&incident_url);
    let detected = b.eval(
        "var d = Array.from(document.querySelectorAll('dt')).find(e => e.textContent === 'Detected'); \
         return d ? d.nextElementSibling.textContent : ''",
    );
    assert!(detected.as_str().is_some_and(|t| t.contains(" local") && !t.contains("UTC")), "{detected}");
    b.click("form[action='/account/times'] button");
    wait_until("back to UTC", 10, || b.eval("return document.body.getAttribute('data-times')").is_null());

    // The regulators' figures: today's medians from detection.
    b.open(&format!("{origin}/reports"));
    let report = b.text();
    let found = b.accessibility_violations(&axe);
    assert!(found.is_empty(), "/reports: {found:?}");
    let today =
        report.lines().find(|l| l.starts_with(&chrono_day())).unwrap_or_else(|| panic!("a row for today: {report}"));
    assert!(
        today.split_whitespace().nth(1) == Some("1") && today.contains(" s"),
        "one incident, with its medians: {today}"
    );

    // The same clip again: no alert.
    let before = w.records().len();
    let mut second = common::nginx::publish_astronaut(&url, 10);
    let _ = second.wait();
    let records = w.wait_for("the second session's end", 60, |r| {
        r[before..].iter().any(|x| x["type"] == "stream" && x["event"] == "ended")
    });
    let later = &records[before..];
    assert!(later.iter().filter(|x| x["type"] == "frame").count() >= 3, "the second session was analysed");
    assert!(opened(later).is_empty(), "no alert for the same clip after the false positive: {:?}", opened(later));

    // Every view and decision is on the hash-chained audit log, which verifies.
    drop(b);
    let out = vigil_console(&config, &["audit", "verify"], &[]).output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && said.contains("intact"), "{said}{}", String::from_utf8_lossy(&out.stderr));
    // Someone edits a decision in the store: the chain names that entry.
    assert!(!console.log().contains("panicked"), "{}", console.log());
    drop(console);
    let db = dir.path().join("console/console.db");
    let edit = std::process::Command::new("python3")
        .args(["-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); \
                      c.execute(\"UPDATE audit_log SET actor='mallory' WHERE seq=(SELECT MIN(seq) FROM audit_log WHERE action='resolve')\"); c.commit()"])
        .arg(&db)
        .status()
        .unwrap();
    assert!(edit.success());
    let out = vigil_console(&config, &["audit", "verify"], &[]).output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "a broken chain fails: {said}");
    assert!(said.contains("BROKEN at entry"), "{said}");
}

/// Today, `YYYY-MM-DD` in UTC (as the report prints it).
fn chrono_day() -> String {
    let out = std::process::Command::new("date").args(["-u", "+%Y-%m-%d"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `vigil console audit verify` reads a store that exists: without one (here no
/// `--config`, so the default state folder, which is empty) it says so and fails, instead
/// of creating an empty store and calling it intact.
#[test]
fn audit_verify_without_a_store_fails_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vigil"))
        .envs(common::trust::env())
        .args(["console", "audit", "verify"])
        .env("VIGIL_STATE_DIR", dir.path())
        .env("VIGIL_CONSOLE_AUDIT_KEY", AUDIT_KEY)
        .env_remove("VIGIL_CONFIG")
        .output()
        .unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(said.contains("there is no console store at") && said.contains("--config"), "{said}");
    assert!(!said.contains("intact"), "{said}");
    assert!(!dir.path().join("console").exists(), "nothing was created");
}
