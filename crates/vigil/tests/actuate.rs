//! `vigil actuate` against the real thing: nginx with its RTMP module as the platform,
//! a live publisher pushed by GStreamer, a loopback webhook that answers what the test
//! says, interrupt commands on a real broker (tansu), all on 127.0.0.1. Commands the
//! platform never takes land on the dead-letter topic with their reason, and no command
//! blocks the ones behind it.

mod common;

use common::nginx::Nginx;
use common::*;
use rdkafka::Message;
use rdkafka::consumer::Consumer;
use rdkafka::message::{Headers, OwnedMessage};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vigil_sink::testing::{Broker, consume_until, read_from_beginning};

const INTERRUPTS: &str = "vigil.interrupts";
const DEAD: &str = "vigil.interrupts.dead-letter";
const ACTIONS: &str = "vigil.actions";
/// Fast retries, so the tests see backoff, budget and the no-publisher rule in seconds.
const RETRY: &str = "{ initial_backoff_ms = 100, max_backoff_ms = 400, budget_secs = 2, no_publisher_attempts = 3 }";

fn command(id: &str, stream: &str) -> String {
    serde_json::json!({
        "schema": "vigil.interrupt", "schema_version": 1, "command_id": id, "alert_id": "a1",
        "stream_id": stream, "rule": "known_abuse_material", "issued_at_unix_ms": 1, "worker_id": "w"
    })
    .to_string()
}

struct Bus {
    broker: Broker,
    producer: ThreadedProducer<DefaultProducerContext>,
}

impl Bus {
    fn start() -> Bus {
        let broker = Broker::start(&[INTERRUPTS, DEAD, ACTIONS]);
        let producer = rdkafka::ClientConfig::new().set("bootstrap.servers", &broker.addr).create().unwrap();
        Bus { broker, producer }
    }

    /// Sends `payload` keyed `key`, to `partition` when given, signed by a worker.
    fn send(&self, partition: Option<i32>, key: &str, payload: &str) {
        self.send_as(vigil_trust::Role::Worker, partition, key, payload);
    }

    fn send_as(&self, role: vigil_trust::Role, partition: Option<i32>, key: &str, payload: &str) {
        let headers = common::trust::signed(role, INTERRUPTS, Some(key), Some(payload.as_bytes()));
        let mut rec = BaseRecord::<str, str>::to(INTERRUPTS).key(key).payload(payload).headers(headers);
        if let Some(p) = partition {
            rec = rec.partition(p);
        }
        self.producer.send(rec).unwrap();
        self.producer.flush(Duration::from_secs(10)).unwrap();
    }

    /// `vigil actuate` until `n` messages are finished with (or 40 s).
    fn actuate(&self, adapter: &str, n: u64, env: &[(&str, &str)]) -> Output {
        let kafka = format!("{{ brokers = \"{}\", spool_path = \"/tmp/unused\" }}", self.broker.addr);
        let mut all = vec![("VIGIL__SINK__KAFKA", kafka.as_str()), ("VIGIL__ACTUATE__ADAPTER", adapter)];
        all.push(("VIGIL__ACTUATE__RETRY", RETRY));
        all.extend_from_slice(env);
        vigil_env(&["actuate", "--exit-after-messages", &n.to_string(), "--max-runtime-secs", "40"], &all)
    }

    /// Exactly `n` messages of `topic` (waits up to 10 s for them, then 1 s for more).
    fn read(&self, topic: &str, n: usize) -> Vec<OwnedMessage> {
        let consumer = read_from_beginning(&self.broker.addr, topic);
        let mut got = consume_until(&consumer, Duration::from_secs(10), |got| got.len() >= n);
        // Then a second for any more than asked (none may come).
        got.extend(consume_until(&consumer, Duration::from_secs(1), |_| false));
        assert_eq!(got.len(), n, "{topic}: {:?}", got.iter().map(text).collect::<Vec<_>>());
        got
    }
}

fn text(m: &OwnedMessage) -> String {
    String::from_utf8_lossy(m.payload().unwrap_or_default()).to_string()
}

fn header(m: &OwnedMessage, key: &str) -> Option<String> {
    let h = m.headers()?;
    h.iter().find(|h| h.key == key).and_then(|h| h.value).map(|v| String::from_utf8_lossy(v).to_string())
}

fn stats(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    stdout_json(out).remove(0)
}

/// Every action-outcome record, checked against its schema; as (command, outcome, reason).
fn actions(bus: &Bus, n: usize) -> Vec<(String, String, Option<String>)> {
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("../../vigil-core/schema/action-v1.schema.json")).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    bus.read(ACTIONS, n)
        .iter()
        .map(|m| {
            let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
            let errors: Vec<String> = validator.iter_errors(&v).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{v} violates action-v1: {errors:?}");
            assert_eq!(header(m, "vigil-schema").as_deref(), Some("vigil.action"));
            let reason = v["reason"].as_str().map(str::to_string);
            (v["command_id"].as_str().unwrap().to_string(), v["outcome"].as_str().unwrap().to_string(), reason)
        })
        .collect()
}

/// A live publisher on nginx at `live/NAME`.
fn publish_to(nginx: &Nginx, name: &str) -> std::process::Child {
    let mut publisher = Command::new("gst-launch-1.0")
        .args(
            format!(
                "-q videotestsrc is-live=true ! video/x-raw,width=320,height=240,framerate=15/1 \
                 ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=15 ! flvmux streamable=true \
                 ! rtmp2sink location=rtmp://127.0.0.1:{}/live/{name}",
                nginx.rtmp
            )
            .split_whitespace(),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the publisher on nginx", 30, || nginx.publishing(name));
    assert!(publisher.try_wait().unwrap().is_none(), "the publisher is live");
    publisher
}

fn assert_cut(publisher: &mut std::process::Child) {
    wait_until("the publisher's end after the interrupt", 15, || publisher.try_wait().unwrap().is_some());
}

/// The worker names a stream pushed to it over RTMP `rtmp/APP/NAME`: the cut must reach
/// nginx application APP, stream NAME (not app `rtmp`, name `APP/NAME`). A cut that drops
/// nobody is not a cut; a WHIP stream is not on nginx; bad messages are dead-lettered.
#[test]
fn an_rtmp_stream_id_cuts_app_and_name_on_nginx_and_a_cut_of_nobody_is_dead_lettered() {
    let nginx = Nginx::start();
    let mut publisher = publish_to(&nginx, "stream1");
    let bus = Bus::start();
    let good = command("a1/interrupt", "rtmp/live/stream1");
    let messages = [
        ("rtmp/live/stream1", "{not json".to_string()),
        ("rtmp/live/stream1", r#"{"schema":"vigil.alert"}"#.to_string()),
        ("rtmp/live/stream1", good.clone()),
        ("rtmp/live/stream1", good.clone()),
        ("rtmp/live/nobody", command("a2/interrupt", "rtmp/live/nobody")),
        ("whip/carol", command("a3/interrupt", "whip/carol")),
        ("x", command("a4/interrupt", "rtmp/live/a\u{0}b")),
    ];
    for (key, payload) in &messages {
        bus.send(None, key, payload);
    }
    let adapter = format!("{{ kind = \"nginx_rtmp\", control_url = \"http://127.0.0.1:{}/control\" }}", nginx.http);
    let out = bus.actuate(&adapter, messages.len() as u64, &[]);
    let stats = stats(&out);
    assert_eq!(stats["acted"], 1, "{stats}");
    assert_eq!(stats["duplicates"], 1, "{stats}");
    assert_eq!(stats["malformed"], 2, "{stats}");
    assert_eq!(stats["dead_lettered"], 5, "{stats}");
    let reasons = &stats["dead_letter_reasons"];
    assert_eq!(reasons["malformed"], 2, "{stats}");
    assert_eq!(reasons["no_publisher"], 1, "{stats}");
    assert_eq!(reasons["not_on_this_origin"], 1, "{stats}");
    assert_eq!(reasons["bad_stream_id"], 1, "{stats}");
    // The nobody command was tried no_publisher_attempts times, briefly.
    assert_eq!(stats["failed"], 2, "{stats}");
    assert_cut(&mut publisher);

    let dead = bus.read(DEAD, 5);
    let nobody = dead.iter().find(|m| text(m).contains("a2/interrupt")).expect("the no-publisher dead letter");
    assert_eq!(header(nobody, "vigil-dead-letter-reason").as_deref(), Some("no_publisher"));
    assert_eq!(header(nobody, "vigil-dead-letter-attempts").as_deref(), Some("3"));
    assert_eq!(text(nobody), messages[4].1, "the command's own bytes");
    assert_eq!(nobody.key(), Some("rtmp/live/nobody".as_bytes()));
    let detail = header(nobody, "vigil-dead-letter-detail").unwrap();
    assert!(detail.contains("\"live\"") && detail.contains("\"nobody\""), "{detail}");
    let bad = dead.iter().find(|m| text(m) == "{not json").expect("the malformed message, byte for byte");
    assert_eq!(header(bad, "vigil-dead-letter-reason").as_deref(), Some("malformed"));
    assert!(header(bad, "vigil-dead-letter-source").unwrap().starts_with("vigil.interrupts/"));

    let outcomes = actions(&bus, 1 + 2 + 1 + 1 + 1);
    assert!(outcomes.contains(&("a1/interrupt".into(), "cut".into(), None)), "{outcomes:?}");
    let nobody_failed = outcomes.iter().filter(|o| o.0 == "a2/interrupt" && o.1 == "failed").count();
    assert_eq!(nobody_failed, 2, "{outcomes:?}");
    let whip = ("a3/interrupt".to_string(), "dead_lettered".to_string(), Some("not_on_this_origin".to_string()));
    assert!(outcomes.contains(&whip), "{outcomes:?}");
}

/// A pulled stream named `APP/NAME` (the rule for pulls from an nginx origin) is cut on
/// app APP, name NAME.
#[test]
fn a_pulled_stream_named_app_slash_name_is_cut_on_nginx() {
    let nginx = Nginx::start();
    let mut publisher = publish_to(&nginx, "pulled7");
    let bus = Bus::start();
    bus.send(None, "live/pulled7", &command("p7/interrupt", "live/pulled7"));
    let adapter = format!("{{ kind = \"nginx_rtmp\", control_url = \"http://127.0.0.1:{}/control\" }}", nginx.http);
    let stats = stats(&bus.actuate(&adapter, 1, &[]));
    assert_eq!(stats["acted"], 1, "{stats}");
    assert_cut(&mut publisher);
}

fn withdrawal(id: &str, stream: &str) -> String {
    let w = serde_json::json!({
        "schema": "vigil.interrupt.withdrawal", "schema_version": 1, "command_id": id, "stream_id": stream,
        "alert_id": "a1", "withdrawn_by": "console:alice", "reason": "a test pattern", "withdrawn_at_unix_ms": 2
    });
    let schema: serde_json::Value = serde_json::from_str(vigil_core::alert::WITHDRAWAL_JSON_SCHEMA).unwrap();
    assert!(jsonschema::validator_for(&schema).unwrap().is_valid(&w), "{w}");
    w.to_string()
}

/// A reviewer judged the incident a false positive after its command was written but
/// before the actuator (behind, or down) read it: the actuator, catching up, reads the
/// command first and must still not cut. Only the console may withdraw: a worker-signed
/// withdrawal is refused and its command carried out.
#[test]
fn an_actuator_catching_up_never_cuts_a_command_withdrawn_after_it_was_written() {
    let nginx = Nginx::start();
    let mut benign = publish_to(&nginx, "benign1");
    let mut other = publish_to(&nginx, "other1");
    let bus = Bus::start();
    // One partition, so the withdrawals follow their commands as on a real topic.
    bus.send(Some(0), "live/benign1", &command("b1/interrupt", "live/benign1"));
    bus.send(Some(0), "live/other1", &command("o1/interrupt", "live/other1"));
    bus.send_as(vigil_trust::Role::Console, Some(0), "live/benign1", &withdrawal("b1/interrupt", "live/benign1"));
    bus.send_as(vigil_trust::Role::Worker, Some(0), "live/other1", &withdrawal("o1/interrupt", "live/other1"));
    let adapter = format!("{{ kind = \"nginx_rtmp\", control_url = \"http://127.0.0.1:{}/control\" }}", nginx.http);
    let stats = stats(&bus.actuate(&adapter, 4, &[]));
    assert_eq!((stats["withdrawn"].as_u64(), stats["withdrawals"].as_u64()), (Some(1), Some(1)), "{stats}");
    assert_eq!(stats["acted"], 1, "the command a worker tried to withdraw is carried out: {stats}");
    assert_eq!(stats["dead_letter_reasons"]["untrusted"], 1, "{stats}");
    assert_cut(&mut other);
    assert!(nginx.publishing("benign1"), "the stream judged benign is still live");
    assert!(benign.try_wait().unwrap().is_none(), "its publisher is still connected");
    let outcomes = actions(&bus, 2);
    assert!(outcomes.contains(&("b1/interrupt".into(), "withdrawn".into(), None)), "{outcomes:?}");
    assert!(outcomes.contains(&("o1/interrupt".into(), "cut".into(), None)), "{outcomes:?}");
    let _ = benign.kill();
    let _ = benign.wait();
}

/// A platform's webhook on loopback: `status(body, n)` decides the answer to the n-th
/// request (0-based); every request (head and body) is kept, in order, with its answer.
type Log = Arc<Mutex<Vec<(String, u16)>>>;

fn webhook(status: impl Fn(&str, usize) -> u16 + Send + 'static) -> (String, Log) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/platform/interrupt", listener.local_addr().unwrap());
    let log: Log = Arc::default();
    let seen = log.clone();
    std::thread::spawn(move || {
        for (n, conn) in listener.incoming().enumerate() {
            let Ok(mut conn) = conn else { return };
            conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            // Head, then as many body bytes as Content-Length says.
            loop {
                let n = std::io::Read::read(&mut conn, &mut buf).unwrap_or(0);
                if n == 0 {
                    break;
                }
                req.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&req).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if body.len() >= len {
                        break;
                    }
                }
            }
            let req = String::from_utf8_lossy(&req).to_string();
            let code = status(req.split_once("\r\n\r\n").map_or("", |(_, b)| b), n);
            let reply = format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            let _ = std::io::Write::write_all(&mut conn, reply.as_bytes());
            seen.lock().unwrap().push((req, code));
        }
    });
    (url, log)
}

fn webhook_adapter(url: &str) -> String {
    format!("{{ kind = \"webhook\", url = \"{url}\", allow_plain_http = true }}")
}

#[test]
fn the_webhook_adapter_posts_the_command_with_its_bearer_token() {
    let (url, requests) = webhook(|_, _| 200);
    let bus = Bus::start();
    bus.send(None, "rtmp/live/alice", &command("a7/interrupt", "rtmp/live/alice"));
    let adapter = format!(
        "{{ kind = \"webhook\", url = \"{url}\", token_env = \"VIGIL_TEST_WEBHOOK_TOKEN\", allow_plain_http = true }}"
    );
    let out = bus.actuate(&adapter, 1, &[("VIGIL_TEST_WEBHOOK_TOKEN", "s3cret-token")]);
    assert_eq!(stats(&out)["acted"], 1);
    let req = requests.lock().unwrap()[0].0.clone();
    let (head, body) = req.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("POST /platform/interrupt "), "{head}");
    assert!(head.lines().any(|l| l.eq_ignore_ascii_case("authorization: Bearer s3cret-token")), "{head}");
    let sent: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(sent["command_id"], "a7/interrupt");
    assert_eq!(sent["stream_id"], "rtmp/live/alice");
}

/// A 4xx is the platform saying no for good: the command is dead-lettered with the
/// reason, its offset committed, and the next command on the same partition is acted on.
#[test]
fn a_refused_command_is_dead_lettered_and_the_next_one_still_goes_through() {
    let (url, requests) = webhook(|body, _| if body.contains("refused/interrupt") { 403 } else { 200 });
    let bus = Bus::start();
    let refused = command("refused/interrupt", "rtmp/live/alice");
    bus.send(Some(0), "rtmp/live/alice", &refused);
    bus.send(Some(0), "rtmp/live/alice", "\u{0}\u{ff}garbage");
    bus.send(Some(0), "rtmp/live/bob", &command("next/interrupt", "rtmp/live/bob"));
    let stats = stats(&bus.actuate(&webhook_adapter(&url), 3, &[]));
    assert_eq!(stats["acted"], 1, "{stats}");
    assert_eq!(stats["dead_lettered"], 2, "{stats}");
    assert_eq!(stats["dead_letter_reasons"]["rejected"], 1, "{stats}");
    assert_eq!(stats["dead_letter_reasons"]["malformed"], 1, "{stats}");
    assert_eq!(stats["failed"], 0, "a 403 is not retried: {stats}");
    let calls: Vec<u16> = requests.lock().unwrap().iter().map(|(_, c)| *c).collect();
    assert_eq!(calls, [403, 200]);

    let dead = bus.read(DEAD, 2);
    assert_eq!(text(&dead[0]), refused);
    assert_eq!(header(&dead[0], "vigil-dead-letter-reason").as_deref(), Some("rejected"));
    assert_eq!(header(&dead[0], "vigil-dead-letter-source").as_deref(), Some("vigil.interrupts/0/0"));
    assert_eq!(header(&dead[0], "vigil-dead-letter-attempts").as_deref(), Some("1"));
    assert!(header(&dead[0], "vigil-dead-letter-detail").unwrap().contains("403"));
    assert_eq!(header(&dead[1], "vigil-dead-letter-reason").as_deref(), Some("malformed"));
    assert_eq!(header(&dead[1], "vigil-dead-letter-attempts").as_deref(), Some("0"));

    let outcomes = actions(&bus, 2);
    assert!(outcomes.contains(&("refused/interrupt".into(), "dead_lettered".into(), Some("rejected".into()))));
    assert!(outcomes.contains(&("next/interrupt".into(), "cut".into(), None)));

    // Everything was committed, the dead letters included.
    assert_eq!(committed(&bus, 0), 3);
}

/// The actuator group's committed offset of `partition` of the interrupts topic.
fn committed(bus: &Bus, partition: i32) -> i64 {
    let consumer: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &bus.broker.addr)
        .set("group.id", "vigil-actuator")
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition(INTERRUPTS, partition);
    let got = consumer.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    match got.find_partition(INTERRUPTS, partition).unwrap().offset() {
        rdkafka::Offset::Offset(o) => o,
        other => panic!("nothing committed: {other:?}"),
    }
}

/// 5xx is transient: the command is retried with backoff until the platform recovers,
/// while the other partitions go on; one that keeps failing past the retry budget is
/// dead-lettered instead of blocking its partition forever.
#[test]
fn server_errors_are_retried_without_blocking_other_partitions_until_the_budget_is_spent() {
    let (url, requests) = webhook(|body, _| {
        if body.contains("down/interrupt") {
            500
        } else if body.contains("flaky/interrupt") {
            // Fails three times, then recovers.
            static FLAKY: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            if FLAKY.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 3 { 503 } else { 200 }
        } else {
            200
        }
    });
    let bus = Bus::start();
    bus.send(Some(0), "rtmp/live/flaky", &command("flaky/interrupt", "rtmp/live/flaky"));
    bus.send(Some(1), "rtmp/live/down", &command("down/interrupt", "rtmp/live/down"));
    bus.send(Some(2), "rtmp/live/fine", &command("fine/interrupt", "rtmp/live/fine"));
    // Behind the down one on its partition: must still be acted on.
    bus.send(Some(1), "rtmp/live/after", &command("after/interrupt", "rtmp/live/after"));
    let started = Instant::now();
    let stats = stats(&bus.actuate(&webhook_adapter(&url), 4, &[]));
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
    assert_eq!(stats["acted"], 3, "{stats}");
    assert_eq!(stats["dead_lettered"], 1, "{stats}");
    assert_eq!(stats["dead_letter_reasons"]["retries_exhausted"], 1, "{stats}");

    let log = requests.lock().unwrap().clone();
    let calls = |id: &str| log.iter().filter(|(r, _)| r.contains(id)).map(|(_, c)| *c).collect::<Vec<_>>();
    assert_eq!(calls("flaky/interrupt"), [503, 503, 503, 200]);
    assert_eq!(calls("fine/interrupt"), [200]);
    assert_eq!(calls("after/interrupt"), [200]);
    let down = calls("down/interrupt");
    // Backoff 100, 200, 400, 400 ms…: a handful of tries in the 2 s budget, not hundreds.
    assert!((3..=10).contains(&down.len()) && down.iter().all(|c| *c == 500), "{down:?}");
    // The fine command did not wait for the flaky one's recovery.
    let pos = |id: &str, code: u16| log.iter().position(|(r, c)| r.contains(id) && *c == code).unwrap();
    assert!(
        pos("fine/interrupt", 200) < pos("flaky/interrupt", 200),
        "{:?}",
        log.iter().map(|x| x.1).collect::<Vec<_>>()
    );

    let dead = bus.read(DEAD, 1);
    assert_eq!(committed(&bus, 1), 2, "the dead-lettered command and the one behind it");
    assert_eq!(header(&dead[0], "vigil-dead-letter-reason").as_deref(), Some("retries_exhausted"));
    assert_eq!(header(&dead[0], "vigil-dead-letter-attempts"), Some(down.len().to_string()));
}

/// The alarm: a dead letter shows on `/metrics` under its reason while the actuator runs.
#[test]
fn a_dead_letter_raises_the_alarm_metric() {
    let (url, _) = webhook(|_, _| 404);
    let bus = Bus::start();
    bus.send(None, "rtmp/live/zed", &command("zed/interrupt", "rtmp/live/zed"));
    let port = common::nginx::free_port();
    let kafka = format!("{{ brokers = \"{}\", spool_path = \"/tmp/unused\" }}", bus.broker.addr);
    let mut actuator = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .envs(common::trust::env())
        .args(["actuate", "--max-runtime-secs", "30", "--metrics-listen", &format!("127.0.0.1:{port}")])
        .env("VIGIL__SINK__KAFKA", &kafka)
        .env("VIGIL__ACTUATE__ADAPTER", webhook_adapter(&url))
        .env_remove("VIGIL_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let want = "vigil_actuate_dead_letters_total{reason=\"rejected\"} 1";
    let mut last = String::new();
    wait_until("the rejected command's dead letter on /metrics", 25, || {
        last = scrape(port).unwrap_or_default();
        last.contains(want)
    });
    let _ = actuator.kill();
    let _ = actuator.wait();
    assert!(last.contains("vigil_actuate_dead_letters_total{reason=\"no_publisher\"} 0"), "{last}");
}

fn scrape(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// Only a worker or the console may command a cut: an unsigned command, one signed by a
/// role that may not write interrupts, a forged signature, a stale one and a copy of a
/// genuine command written again are each dead-lettered as `untrusted`, never acted on,
/// and counted; the genuine command is acted on once. What the actuator writes (its dead
/// letters and outcomes) carries its own signature.
#[test]
fn only_commands_signed_by_a_worker_or_the_console_are_acted_on() {
    use vigil_trust::{Role, TopicKind};
    let (url, requests) = webhook(|_, _| 200);
    let bus = Bus::start();
    let send_raw = |payload: &str, headers: Option<rdkafka::message::OwnedHeaders>| {
        let mut rec = BaseRecord::<str, str>::to(INTERRUPTS).key("rtmp/live/alice").payload(payload).partition(0);
        if let Some(h) = headers {
            rec = rec.headers(h);
        }
        bus.producer.send(rec).unwrap();
    };
    let key = Some("rtmp/live/alice");
    let sign = |role: Role, p: &str| common::trust::signed(role, INTERRUPTS, key, Some(p.as_bytes()));
    send_raw(&command("unsigned/interrupt", "rtmp/live/alice"), None);
    let p = command("by-lifecycle/interrupt", "rtmp/live/alice");
    send_raw(&p, Some(sign(Role::Lifecycle, &p)));
    let p = command("forged/interrupt", "rtmp/live/alice");
    let forged =
        common::trust::forger().sign_into(INTERRUPTS, key.map(str::as_bytes), Some(p.as_bytes()), Default::default());
    send_raw(&p, Some(forged));
    let p = command("stale/interrupt", "rtmp/live/alice");
    let old = vigil_trust::unix_ms() - 3_600_000;
    let stale = common::trust::signer(Role::Worker).sign(INTERRUPTS, key.map(str::as_bytes), Some(p.as_bytes()), old);
    send_raw(&p, Some(stale.add_to(Default::default())));
    let genuine = command("genuine/interrupt", "rtmp/live/alice");
    let headers = sign(Role::Worker, &genuine);
    send_raw(&genuine, Some(headers.clone()));
    send_raw(&genuine, Some(headers)); // written again: a replay
    let p = command("by-console/interrupt", "rtmp/live/bob");
    send_raw(&p, Some(common::trust::signed(Role::Console, INTERRUPTS, key, Some(p.as_bytes()))));
    bus.producer.flush(Duration::from_secs(10)).unwrap();

    let stats = stats(&bus.actuate(&webhook_adapter(&url), 7, &[]));
    assert_eq!(stats["untrusted"], 5, "{stats}");
    assert_eq!(stats["dead_letter_reasons"]["untrusted"], 5, "{stats}");
    assert_eq!(stats["acted"], 2, "the worker's and the console's commands: {stats}");
    let acted: Vec<String> = requests.lock().unwrap().iter().map(|(r, _)| r.clone()).collect();
    assert!(acted.iter().any(|r| r.contains("genuine/interrupt")) && acted.iter().any(|r| r.contains("by-console")));
    assert!(!acted.iter().any(|r| ["unsigned/", "by-lifecycle/", "forged/", "stale/"].iter().any(|x| r.contains(x))));

    // What the actuator wrote is believed by readers of those topics, as the actuator's.
    let ring = vigil_trust::KeyringHandle::fixed(common::trust::keyring());
    let cfg = vigil_trust::TrustConfig::default();
    let dead = vigil_trust::config::Trust::with(&cfg, None, Some(ring.clone())).verifier(TopicKind::DeadLetter);
    for m in bus.read(DEAD, 5) {
        assert_eq!(dead.check(&m).map(|v| v.role), Ok(Some(Role::Actuator)), "{}", text(&m));
        assert_eq!(header(&m, "vigil-dead-letter-reason").as_deref(), Some("untrusted"));
    }
}
