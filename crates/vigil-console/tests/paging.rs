//! Paging end to end on loopback: real HTTP to local receivers that check every body
//! they get against the channel's JSON Schema, the webhook signature, Slack escaping,
//! retries (500, 429 with Retry-After), refusals, timeouts and config validation.

use serde_json::Value;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vigil_console::model::{Channel, OutboxItem, PageAction, PageSubject, now_ms};
use vigil_console::paging::{
    self, Delivery, DeliveryError, PagingConfig, ResolvedPaging, VerifyError, deliver_one, items_for, verify_webhook,
};

const PAGERDUTY_SCHEMA: &str = include_str!("../schema/pagerduty-event-v2.schema.json");
const WEBHOOK_SCHEMA: &str = include_str!("../schema/page-webhook-v1.schema.json");
const SLACK_SCHEMA: &str = include_str!("../schema/slack-message.schema.json");

const ROUTING_KEY: &str = "R0UT1NGKEY0123456789abcdefABCDEF";
const HOOK_SECRET: &str = "a-webhook-secret-of-more-than-32-bytes";
const SLACK_PATH: &str = "/services/T0SECRET/B0SECRET/XSECRETXSECRET";

// ---- a loopback HTTP/1.1 receiver -------------------------------------------------

#[derive(Clone)]
struct Answer {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
}

fn answer(status: u16) -> Answer {
    Answer { status, headers: Vec::new(), body: r#"{"status":"success","message":"Event processed"}"#.into() }
}

#[derive(Debug, Clone)]
struct Received {
    method: String,
    path: String,
    /// Lower-case names.
    headers: HashMap<String, String>,
    body: Vec<u8>,
    json: Value,
}

struct Receiver {
    port: u16,
    received: Arc<Mutex<Vec<Received>>>,
    /// Bodies that broke the schema or requests that broke HTTP: checked on drop.
    violations: Arc<Mutex<Vec<String>>>,
}

impl Receiver {
    /// Answers `answers` in order, then the last one again; checks every body against
    /// `schema`.
    fn start(schema: &'static str, answers: Vec<Answer>) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let violations = Arc::new(Mutex::new(Vec::new()));
        let (rec, vio) = (received.clone(), violations.clone());
        std::thread::spawn(move || {
            let schema: Value = serde_json::from_str(schema).unwrap();
            let validator = jsonschema::options().should_validate_formats(true).build(&schema).unwrap();
            for (n, conn) in listener.incoming().enumerate() {
                let Ok(mut conn) = conn else { continue };
                let a = answers[n.min(answers.len() - 1)].clone();
                match read_request(&mut conn) {
                    Ok(r) => {
                        let errors: Vec<String> = validator.iter_errors(&r.json).map(|e| e.to_string()).collect();
                        if !errors.is_empty() {
                            vio.lock().unwrap().push(format!("{} violates the schema: {errors:?}", r.json));
                        }
                        if r.method != "POST"
                            || r.headers.get("content-type").map(String::as_str) != Some("application/json")
                        {
                            vio.lock().unwrap().push(format!("not a JSON POST: {} {:?}", r.method, r.headers));
                        }
                        rec.lock().unwrap().push(r);
                    }
                    Err(e) => vio.lock().unwrap().push(format!("unreadable request: {e}")),
                }
                let mut head = format!(
                    "HTTP/1.1 {} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
                    a.status,
                    a.body.len()
                );
                for (k, v) in &a.headers {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                let _ = conn.write_all(format!("{head}\r\n{}", a.body).as_bytes());
            }
        });
        Receiver { port, received, violations }
    }

    /// Accepts connections and never answers.
    fn hanging() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for conn in listener.incoming().flatten() {
                held.push(conn);
            }
        });
        Receiver { port, received: Default::default(), violations: Default::default() }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn received(&self) -> Vec<Received> {
        let v = self.violations.lock().unwrap().clone();
        assert!(v.is_empty(), "{v:#?}");
        self.received.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let v = self.violations.lock().unwrap();
            assert!(v.is_empty(), "{v:#?}");
        }
    }
}

fn read_request(conn: &mut TcpStream) -> Result<Received, String> {
    conn.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
    let mut r = BufReader::new(conn);
    let mut line = String::new();
    r.read_line(&mut line).map_err(|e| e.to_string())?;
    let mut parts = line.split_whitespace();
    let (method, path, version) = (parts.next(), parts.next(), parts.next());
    if version != Some("HTTP/1.1") {
        return Err(format!("request line {line:?}"));
    }
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).map_err(|e| e.to_string())?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':').ok_or(format!("header {h:?}"))?;
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    let len: usize = headers.get("content-length").ok_or("no content-length")?.parse().map_err(|_| "content-length")?;
    let mut body = vec![0; len];
    r.read_exact(&mut body).map_err(|e| e.to_string())?;
    let json = serde_json::from_slice(&body).map_err(|e| format!("body is not JSON: {e}"))?;
    Ok(Received { method: method.unwrap_or("").into(), path: path.unwrap_or("").into(), headers, body, json })
}

// ---- helpers -----------------------------------------------------------------------

fn subject(id: &str, decision: &str, stream: &str) -> PageSubject {
    PageSubject {
        incident_id: id.into(),
        stream_id: stream.into(),
        account_id: Some("acct-42".into()),
        decision: decision.into(),
        rule: "bank_match".into(),
        detected_at_ms: 1_798_401_273_120,
        link: format!("https://console.example/incidents/{id}"),
    }
}

fn config(toml: &str) -> PagingConfig {
    let c: PagingConfig = toml::from_str(toml).unwrap();
    assert_eq!(c.validate("paging"), Vec::<String>::new());
    c
}

fn env(name: &str) -> Option<String> {
    match name {
        "PD_KEY" => Some(ROUTING_KEY.into()),
        "HOOK_SECRET" => Some(HOOK_SECRET.into()),
        _ => None,
    }
}

fn resolve(c: &PagingConfig) -> ResolvedPaging {
    c.resolve_secrets_from(env).unwrap()
}

fn pagerduty_config(r: &Receiver) -> PagingConfig {
    config(&format!(
        "[pagerduty]\nurl = \"{}\"\nrouting_key_env = \"PD_KEY\"\nallow_plain_http = true\n",
        r.url("/v2/enqueue")
    ))
}

fn webhook_config(r: &Receiver, extra: &str) -> PagingConfig {
    config(&format!(
        "{extra}\n[webhook]\nurl = \"{}\"\nsecret_env = \"HOOK_SECRET\"\nallow_plain_http = true\n",
        r.url("/hooks/vigil")
    ))
}

fn one(c: &PagingConfig, action: PageAction, s: &PageSubject) -> OutboxItem {
    let mut items = items_for(c, action, s, now_ms());
    assert_eq!(items.len(), 1);
    items.remove(0)
}

/// `Retry`'s delay, bounded by the clock before and after the call.
async fn retry_of(cfg: &ResolvedPaging, item: &OutboxItem) -> (std::ops::RangeInclusive<i64>, DeliveryError) {
    let before = now_ms();
    let d = deliver_one(cfg, item).await;
    let after = now_ms();
    match d {
        Delivery::Retry { next_attempt_ms, error } => ((next_attempt_ms - after)..=(next_attempt_ms - before), error),
        Delivery::Delivered => panic!("{} was delivered, expected a retry", item.id),
    }
}

fn overlaps(measured: &std::ops::RangeInclusive<i64>, lo: i64, hi: i64) -> bool {
    *measured.end() >= lo && *measured.start() <= hi
}

// ---- PagerDuty ---------------------------------------------------------------------

#[tokio::test]
async fn pagerduty_gets_trigger_acknowledge_resolve_on_the_incidents_dedup_key() {
    let r = Receiver::start(PAGERDUTY_SCHEMA, vec![answer(202)]);
    let cfg = pagerduty_config(&r);
    let resolved = resolve(&cfg);
    let cases = [("inc-interrupt", "interrupt", "critical"), ("inc-review", "review", "error")];
    for (id, decision, _) in cases {
        let s = subject(id, decision, "rtmp/live/stream-1");
        for action in PageAction::ALL {
            assert_eq!(deliver_one(&resolved, &one(&cfg, action, &s)).await, Delivery::Delivered);
        }
    }
    let got = r.received();
    assert_eq!(got.len(), 6);
    for (n, (id, decision, severity)) in cases.into_iter().enumerate() {
        let [trigger, ack, resolve] = [&got[3 * n], &got[3 * n + 1], &got[3 * n + 2]];
        for e in [trigger, ack, resolve] {
            assert_eq!(e.path, "/v2/enqueue");
            assert_eq!(e.json["dedup_key"], id);
            assert_eq!(e.json["routing_key"], ROUTING_KEY);
        }
        assert_eq!(trigger.json["event_action"], "trigger");
        assert_eq!(ack.json["event_action"], "acknowledge");
        assert_eq!(resolve.json["event_action"], "resolve");
        assert_eq!(ack.json.as_object().unwrap().len(), 3, "{}", ack.json);
        assert_eq!(resolve.json.as_object().unwrap().len(), 3, "{}", resolve.json);
        let p = &trigger.json["payload"];
        assert_eq!(p["severity"], severity);
        assert_eq!(p["summary"], format!("Vigil {decision}: stream rtmp/live/stream-1, rule bank_match"));
        assert_eq!(p["source"], "vigil");
        assert_eq!(p["component"], "vigil");
        assert_eq!(p["class"], "bank_match");
        assert_eq!(p["timestamp"], "2026-12-27T19:54:33.120Z");
        let d = &p["custom_details"];
        assert_eq!(
            (&d["incident_id"], &d["stream_id"], &d["account_id"], &d["decision"], &d["rule"], &d["detected_at"]),
            (
                &Value::from(id),
                &Value::from("rtmp/live/stream-1"),
                &Value::from("acct-42"),
                &Value::from(decision),
                &Value::from("bank_match"),
                &Value::from("2026-12-27T19:54:33.120Z")
            )
        );
        let link = format!("https://console.example/incidents/{id}");
        assert_eq!(trigger.json["links"][0]["href"], link);
        assert_eq!(trigger.json["links"][0]["text"], "Open in the Vigil console");
        assert_eq!(trigger.json["client_url"], link);
    }
}

#[tokio::test]
async fn a_queue_age_page_is_an_alert_of_its_own_on_every_channel() {
    let pd = Receiver::start(PAGERDUTY_SCHEMA, vec![answer(202)]);
    let hook = Receiver::start(WEBHOOK_SCHEMA, vec![answer(200)]);
    let mut cfg = webhook_config(&hook, "");
    cfg.pagerduty = pagerduty_config(&pd).pagerduty;
    let resolved = resolve(&cfg);
    let s = subject("inc-old", "review", "whip/abc");
    let items = paging::queue_age_items(&cfg, &s, now_ms());
    assert_eq!(
        items.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
        ["queue-age/inc-old/pagerduty", "queue-age/inc-old/webhook"]
    );
    for i in &items {
        assert_eq!(deliver_one(&resolved, i).await, Delivery::Delivered);
    }
    let e = &pd.received()[0].json;
    assert_eq!(e["dedup_key"], "queue-age/inc-old");
    assert_eq!(e["payload"]["class"], "queue_age");
    assert!(e["payload"]["summary"].as_str().unwrap().contains("unacknowledged since 2026-12-27T19:54:33.120Z"));
    let w = &hook.received()[0].json;
    assert_eq!(w["kind"], "queue_age");
    assert_eq!(w["action"], "trigger");
    assert_eq!(w["page_id"], "queue-age/inc-old/webhook");
}

// ---- the signed webhook ----------------------------------------------------------

#[tokio::test]
async fn the_webhook_signature_verifies_and_fails_on_any_change() {
    let r = Receiver::start(WEBHOOK_SCHEMA, vec![answer(204)]);
    let cfg = webhook_config(&r, "");
    let item = one(&cfg, PageAction::Trigger, &subject("inc-1", "interrupt", "rtmp/live/s"));
    let sent_after = now_ms();
    assert_eq!(deliver_one(&resolve(&cfg), &item).await, Delivery::Delivered);
    let got = r.received().remove(0);
    let j = &got.json;
    assert_eq!(got.path, "/hooks/vigil");
    assert_eq!(j["schema"], "vigil.page");
    assert_eq!(j["schema_version"], 1);
    assert_eq!(j["page_id"], item.id);
    assert_eq!(j["page_id"], "inc-1/trigger/webhook");
    assert_eq!(j["action"], "trigger");
    assert_eq!(j["kind"], "incident");
    assert_eq!(j["decision"], "interrupt");
    assert_eq!(j["detected_at_unix_ms"], 1_798_401_273_120i64);
    let sent_at = j["sent_at_unix_ms"].as_i64().unwrap();
    assert!(sent_at >= sent_after && sent_at <= now_ms());

    let ts = got.headers["vigil-signature-timestamp"].clone();
    let sig = got.headers["vigil-signature"].clone();
    assert!(sig.starts_with("v1=") && sig.len() == 3 + 64, "{sig}");
    let t: i64 = ts.parse().unwrap();
    assert_eq!(t, sent_at / 1000);
    let secret = HOOK_SECRET.as_bytes();
    let body = got.body.as_slice();
    assert_eq!(verify_webhook(secret, &ts, &sig, body, t, 300), Ok(()));
    assert_eq!(verify_webhook(secret, &ts, &sig, body, t + 300, 300), Ok(()));
    assert_eq!(verify_webhook(secret, &ts, &sig, body, t - 300, 300), Ok(()));

    // Any change to what was signed.
    let tampered = String::from_utf8(got.body.clone()).unwrap().replace("rtmp/live/s", "rtmp/live/t");
    assert_eq!(verify_webhook(secret, &ts, &sig, tampered.as_bytes(), t, 300), Err(VerifyError::Mismatch));
    let mut flipped = got.body.clone();
    *flipped.last_mut().unwrap() ^= 1;
    assert_eq!(verify_webhook(secret, &ts, &sig, &flipped, t, 300), Err(VerifyError::Mismatch));
    assert_eq!(verify_webhook(secret, &(t + 1).to_string(), &sig, body, t, 300), Err(VerifyError::Mismatch));
    assert_eq!(
        verify_webhook(b"another-secret-of-more-than-32-bytes", &ts, &sig, body, t, 300),
        Err(VerifyError::Mismatch)
    );
    // Outside the replay window, either way.
    assert_eq!(verify_webhook(secret, &ts, &sig, body, t + 301, 300), Err(VerifyError::OutsideWindow { skew_s: -301 }));
    assert_eq!(verify_webhook(secret, &ts, &sig, body, t - 301, 300), Err(VerifyError::OutsideWindow { skew_s: 301 }));
    // Malformed headers.
    for bad_ts in ["", "abc", "-5", "1.5", " "] {
        assert_eq!(
            verify_webhook(secret, bad_ts, &sig, body, t, 300),
            Err(VerifyError::MalformedTimestamp),
            "{bad_ts:?}"
        );
    }
    for bad_sig in ["", "v1=", "v1=zz", "sha256=00", &sig[3..], &sig[..40]] {
        assert_eq!(
            verify_webhook(secret, &ts, bad_sig, body, t, 300),
            Err(VerifyError::MalformedSignature),
            "{bad_sig:?}"
        );
    }

    python_recipe_agrees(secret, &ts, &sig, body);
}

/// The Python recipe in docs/paging.md, run as written, accepts the page and refuses it
/// tampered.
fn python_recipe_agrees(secret: &[u8], ts: &str, sig: &str, body: &[u8]) {
    let doc = include_str!("../../../docs/paging.md");
    let start = doc.find("```python\n").expect("docs/paging.md has a python block") + "```python\n".len();
    let recipe = &doc[start..start + doc[start..].find("```").unwrap()];
    let harness = format!(
        "{recipe}\nimport sys\nprint(verify_vigil_page(bytes.fromhex(sys.argv[1]), sys.argv[2], sys.argv[3], bytes.fromhex(sys.argv[4])))\n"
    );
    let run = |body: &[u8]| {
        let out = match std::process::Command::new("python3")
            .args(["-c", &harness, &hex::encode(secret), ts, sig, &hex::encode(body)])
            .output()
        {
            Ok(o) => o,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                eprintln!("python3 is not installed: the docs recipe was not run");
                return None;
            }
            Err(e) => panic!("{e}"),
        };
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        Some(String::from_utf8(out.stdout).unwrap().trim().to_string())
    };
    if let Some(good) = run(body) {
        assert_eq!(good, "True");
        let mut bad = body.to_vec();
        bad[0] ^= 1;
        assert_eq!(run(&bad).as_deref(), Some("False"));
    }
}

// ---- Slack -------------------------------------------------------------------------

#[tokio::test]
async fn slack_shows_hostile_ids_escaped_and_never_obeys_them() {
    let r = Receiver::start(SLACK_SCHEMA, vec![answer(200)]);
    let cfg = config("[slack]\nurl_env = \"SLACK_URL\"\nallow_plain_http = true\n");
    let url = r.url(SLACK_PATH);
    let resolved = cfg.resolve_secrets_from(|v| (v == "SLACK_URL").then(|| url.clone())).unwrap();
    let mut s = subject("inc-x", "interrupt", "<!channel> & <@U123>");
    s.rule = "<https://evil.example|click here>".into();
    s.account_id = Some("<!here>".into());
    for action in PageAction::ALL {
        assert_eq!(deliver_one(&resolved, &one(&cfg, action, &s)).await, Delivery::Delivered);
    }
    let got = r.received();
    assert_eq!(got.len(), 3);
    for m in &got {
        assert_eq!(m.path, SLACK_PATH);
        let raw = String::from_utf8(m.body.clone()).unwrap();
        for hostile in ["<!channel>", "<@U123>", "<!here>", "<https://evil"] {
            assert!(!raw.contains(hostile), "{hostile} reached Slack unescaped: {raw}");
        }
        assert_eq!(m.json["blocks"][1]["elements"][0]["url"], "https://console.example/incidents/inc-x");
    }
    let trigger = &got[0].json;
    assert_eq!(
        trigger["text"],
        "Vigil interrupt: stream &lt;!channel&gt; &amp; &lt;@U123&gt;, rule &lt;https://evil.example|click here&gt;"
    );
    let fields: Vec<&str> =
        trigger["blocks"][0]["fields"].as_array().unwrap().iter().map(|f| f["text"].as_str().unwrap()).collect();
    assert!(fields.contains(&"*Stream*\n&lt;!channel&gt; &amp; &lt;@U123&gt;"), "{fields:?}");
    assert!(fields.contains(&"*Account*\n&lt;!here&gt;"), "{fields:?}");
}

#[tokio::test]
async fn a_slack_failure_never_reveals_the_webhook_url() {
    let r = Receiver::start(SLACK_SCHEMA, vec![answer(500)]);
    let cfg = config("[slack]\nurl_env = \"SLACK_URL\"\nallow_plain_http = true\n");
    let item = one(&cfg, PageAction::Trigger, &subject("inc-1", "review", "rtmp/live/s"));
    // Answered 500, then nobody listening.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    for url in [r.url(SLACK_PATH), format!("http://127.0.0.1:{closed}{SLACK_PATH}")] {
        let resolved = cfg.resolve_secrets_from(|v| (v == "SLACK_URL").then(|| url.clone())).unwrap();
        let (_, error) = retry_of(&resolved, &item).await;
        let shown = format!("{error} {error:?} {resolved:?}");
        assert!(!shown.contains("SECRET"), "{shown}");
    }
    assert_eq!(r.received().len(), 1);
}

// ---- retries, refusals, timeouts -----------------------------------------------------

#[tokio::test]
async fn a_500_is_retried_with_doubling_backoff_until_delivered() {
    let r = Receiver::start(WEBHOOK_SCHEMA, vec![answer(500), answer(503), answer(202)]);
    let cfg = webhook_config(&r, "retry = { initial_ms = 1000, max_ms = 60000 }");
    let resolved = resolve(&cfg);
    let mut item = one(&cfg, PageAction::Trigger, &subject("inc-1", "interrupt", "rtmp/live/s"));

    let (delay, error) = retry_of(&resolved, &item).await;
    assert!(matches!(error, DeliveryError::Unavailable { status: 500, retry_after: None, .. }), "{error:?}");
    assert!(!error.is_refusal());
    assert!(overlaps(&delay, 500, 1000), "first retry in {delay:?} ms, expected 500..=1000");
    item.attempts = 1;

    let (delay, error) = retry_of(&resolved, &item).await;
    assert!(matches!(error, DeliveryError::Unavailable { status: 503, .. }), "{error:?}");
    assert!(overlaps(&delay, 1000, 2000), "second retry in {delay:?} ms, expected 1000..=2000");
    item.attempts = 2;

    assert_eq!(deliver_one(&resolved, &item).await, Delivery::Delivered);
    let got = r.received();
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|g| g.json["page_id"] == "inc-1/trigger/webhook"), "one page id on every attempt");
}

#[tokio::test]
async fn a_429_waits_for_retry_after() {
    let mut throttled = answer(429);
    throttled.headers.push(("retry-after", "7".into()));
    let r = Receiver::start(PAGERDUTY_SCHEMA, vec![throttled, answer(202)]);
    let cfg = pagerduty_config(&r);
    let resolved = resolve(&cfg);
    let item = one(&cfg, PageAction::Trigger, &subject("inc-1", "interrupt", "rtmp/live/s"));
    let (delay, error) = retry_of(&resolved, &item).await;
    assert_eq!(error.kind(), "throttled");
    assert!(
        matches!(error, DeliveryError::Unavailable { status: 429, retry_after: Some(d), .. } if d == Duration::from_secs(7))
    );
    assert!(delay.contains(&7000), "retry in {delay:?} ms, expected 7000 (Retry-After)");
    assert_eq!(deliver_one(&resolved, &OutboxItem { attempts: 1, ..item }).await, Delivery::Delivered);
}

#[tokio::test]
async fn a_400_is_a_refusal_kept_at_the_longest_backoff_and_counted() {
    let mut bad = answer(400);
    bad.body = r#"{"status":"invalid event","message":"Event object is invalid","errors":["bad"]}"#.into();
    let r = Receiver::start(PAGERDUTY_SCHEMA, vec![bad]);
    let cfg = pagerduty_config(&r);
    let resolved = resolve(&cfg);
    let item = one(&cfg, PageAction::Trigger, &subject("inc-1", "review", "rtmp/live/s"));
    let refused = || paging::events::METRICS.pages.with_label_values(&["pagerduty", "refused"]).get();
    let before = refused();
    let (delay, error) = retry_of(&resolved, &item).await;
    assert!(error.is_refusal());
    assert!(
        matches!(&error, DeliveryError::Refused { status: 400, body } if body.contains("invalid event")),
        "{error:?}"
    );
    assert!(delay.contains(&300_000), "refused page retried in {delay:?} ms, expected max_ms");
    assert!(refused() > before);
    assert_eq!(r.received().len(), 1);
}

#[tokio::test]
async fn a_channel_no_longer_configured_keeps_its_pages() {
    let r = Receiver::start(PAGERDUTY_SCHEMA, vec![answer(202)]);
    let resolved = resolve(&pagerduty_config(&r));
    let mut item = one(&pagerduty_config(&r), PageAction::Trigger, &subject("inc-1", "review", "s"));
    item.channel = Channel::Slack;
    let (delay, error) = retry_of(&resolved, &item).await;
    assert_eq!(error, DeliveryError::NotConfigured(Channel::Slack));
    assert!(delay.contains(&300_000));
    assert!(r.received().is_empty());
}

#[tokio::test]
async fn an_endpoint_that_never_answers_times_out() {
    let r = Receiver::hanging();
    let cfg = config(&format!(
        "timeout_secs = 1\n[webhook]\nurl = \"{}\"\nsecret_env = \"HOOK_SECRET\"\nallow_plain_http = true\n",
        r.url("/hooks/vigil")
    ));
    let item = one(&cfg, PageAction::Trigger, &subject("inc-1", "review", "s"));
    let started = Instant::now();
    let (delay, error) = retry_of(&resolve(&cfg), &item).await;
    let took = started.elapsed();
    assert_eq!(error, DeliveryError::TimedOut(1));
    assert!(!error.is_refusal());
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(5), "{took:?}");
    assert!(overlaps(&delay, 500, 1000));
}

#[tokio::test]
async fn nobody_listening_is_retried() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cfg = config(&format!(
        "[pagerduty]\nurl = \"http://127.0.0.1:{port}/v2/enqueue\"\nrouting_key_env = \"PD_KEY\"\nallow_plain_http = true\n"
    ));
    let (delay, error) = retry_of(&resolve(&cfg), &one(&cfg, PageAction::Resolve, &subject("i", "review", "s"))).await;
    assert!(matches!(error, DeliveryError::Unreachable(_)), "{error:?}");
    assert!(overlaps(&delay, 500, 1000));
}

#[tokio::test]
async fn every_channel_gets_one_page_per_change() {
    let (pd, hook, slack) = (
        Receiver::start(PAGERDUTY_SCHEMA, vec![answer(202)]),
        Receiver::start(WEBHOOK_SCHEMA, vec![answer(200)]),
        Receiver::start(SLACK_SCHEMA, vec![answer(200)]),
    );
    let mut cfg = webhook_config(&hook, "");
    cfg.pagerduty = pagerduty_config(&pd).pagerduty;
    cfg.slack = Some(paging::config::SlackConfig { url_env: "SLACK_URL".into(), allow_plain_http: true });
    assert_eq!(cfg.validate("paging"), Vec::<String>::new());
    let slack_url = slack.url(SLACK_PATH);
    let resolved =
        cfg.resolve_secrets_from(|v| if v == "SLACK_URL" { Some(slack_url.clone()) } else { env(v) }).unwrap();
    let mut s = subject("inc-9", "review", "rtmp/live/s");
    s.account_id = None;
    for action in PageAction::ALL {
        let items = items_for(&cfg, action, &s, now_ms());
        assert_eq!(items.iter().map(|i| i.channel).collect::<Vec<_>>(), Channel::ALL);
        for i in &items {
            assert_eq!(deliver_one(&resolved, i).await, Delivery::Delivered, "{}", i.id);
        }
    }
    assert_eq!(pd.received().len(), 3);
    assert_eq!(slack.received().len(), 3);
    let hooks = hook.received();
    assert_eq!(
        hooks.iter().map(|h| h.json["action"].as_str().unwrap()).collect::<Vec<_>>(),
        ["trigger", "acknowledge", "resolve"]
    );
    assert!(hooks.iter().all(|h| h.json["account_id"].is_null()));
}

// ---- configuration ---------------------------------------------------------------

#[test]
fn validation_names_every_mistake_at_once() {
    let c: PagingConfig = toml::from_str(
        r#"
        queue_age_page_secs = 0
        timeout_secs = 0
        retry = { initial_ms = 0, max_ms = 99999999 }
        [pagerduty]
        url = "http://events.pagerduty.com/v2/enqueue"
        routing_key_env = ""
        source = ""
        [webhook]
        url = "ftp://hooks.example"
        secret_env = "1BAD-NAME"
        [slack]
        url_env = ""
        "#,
    )
    .unwrap();
    let errors = c.validate("paging");
    let expected = [
        "paging.pagerduty.url: \"http://events.pagerduty.com/v2/enqueue\" is plain http",
        "paging.pagerduty.routing_key_env: must name an environment variable",
        "paging.pagerduty.source: must not be empty",
        "paging.webhook.url: \"ftp://hooks.example\" is not an https:// URL",
        "paging.webhook.secret_env: \"1BAD-NAME\" is not an environment variable name",
        "paging.slack.url_env: must name an environment variable",
        "paging.queue_age_page_secs: 0 is outside",
        "paging.timeout_secs: 0 is outside",
        "paging.retry.initial_ms: 0 is outside",
        "paging.retry.max_ms: 99999999 is over",
    ];
    for e in expected {
        assert_eq!(errors.iter().filter(|m| m.starts_with(e)).count(), 1, "{e:?} in {errors:#?}");
    }
    assert_eq!(errors.len(), expected.len(), "{errors:#?}");

    let c: PagingConfig = toml::from_str("retry = { initial_ms = 5000, max_ms = 1000 }").unwrap();
    assert_eq!(c.validate("paging"), ["paging.retry.max_ms: 1000 is under initial_ms 5000"]);
    let c: PagingConfig = toml::from_str("queue_age_page_secs = 9999999\ntimeout_secs = 600").unwrap();
    assert_eq!(c.validate("p").len(), 2);
}

#[test]
fn resolving_secrets_names_every_missing_or_short_one_and_no_value() {
    let c = config(
        "[pagerduty]\nrouting_key_env = \"PD\"\n[webhook]\nurl = \"https://hooks.example/x\"\nsecret_env = \"HOOK\"\n\
         [slack]\nurl_env = \"SLACK\"\n",
    );
    let errors = c
        .resolve_secrets_from(|v| match v {
            "PD" => Some("shortkeyvalue".into()),
            "HOOK" => Some("tooshortsecretvalue".into()),
            _ => None,
        })
        .unwrap_err();
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert!(errors[0].starts_with("environment variable SLACK (paging.slack.url_env) is not set"), "{errors:#?}");
    assert!(errors.iter().any(|e| e.contains("PD (") && e.contains("32 characters, this one 13")), "{errors:#?}");
    assert!(errors.iter().any(|e| e.contains("HOOK (") && e.contains("19 bytes, it needs at least 32")), "{errors:#?}");
    assert!(errors.iter().all(|e| !e.contains("shortkeyvalue") && !e.contains("tooshortsecretvalue")));

    let errors = c
        .resolve_secrets_from(|v| match v {
            "PD" => Some(String::new()),
            "HOOK" => Some(HOOK_SECRET.into()),
            _ => Some("http://hooks.slack.example/services/T/B/XSECRET".into()),
        })
        .unwrap_err();
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(errors[0].contains("PD (paging.pagerduty.routing_key_env) is empty"), "{errors:#?}");
    assert!(errors[1].contains("SLACK (paging.slack.url_env): the URL is plain http"), "{errors:#?}");
    assert!(!errors[1].contains("XSECRET"));

    let ok = c.resolve_secrets_from(|v| match v {
        "PD" => Some(ROUTING_KEY.into()),
        "HOOK" => Some(HOOK_SECRET.into()),
        _ => Some("https://hooks.slack.example/services/T/B/XSECRET".into()),
    });
    assert!(ok.is_ok());
}

#[test]
fn the_examples_in_the_docs_match_the_schemas() {
    let doc = include_str!("../../../docs/paging.md");
    let mut checked = 0;
    for block in doc.split("```json ").skip(1) {
        let (name, rest) = block.split_once('\n').unwrap();
        let example: Value = serde_json::from_str(&rest[..rest.find("```").unwrap()]).unwrap();
        let schema = match name.trim() {
            "pagerduty-event-v2" => PAGERDUTY_SCHEMA,
            "page-webhook-v1" => WEBHOOK_SCHEMA,
            "slack-message" => SLACK_SCHEMA,
            other => panic!("unknown schema {other}"),
        };
        let schema: Value = serde_json::from_str(schema).unwrap();
        let validator = jsonschema::options().should_validate_formats(true).build(&schema).unwrap();
        let errors: Vec<String> = validator.iter_errors(&example).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{name}: {errors:?}");
        checked += 1;
    }
    assert_eq!(checked, 4);
}
