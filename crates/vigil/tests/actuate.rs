//! `vigil actuate` against the real thing: nginx with its RTMP module as the platform,
//! a live publisher pushed by GStreamer, interrupt commands on a real broker (tansu),
//! all on 127.0.0.1. The command cuts the publisher; malformed messages and a
//! duplicate on the topic are logged, skipped and committed, and never crash it.

mod common;

use common::nginx::Nginx;
use common::*;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use vigil_sink::testing::Broker;

fn command(id: &str, stream: &str) -> String {
    serde_json::json!({
        "schema": "vigil.interrupt", "schema_version": 1, "command_id": id, "alert_id": "a1",
        "stream_id": stream, "rule": "known_abuse_material", "issued_at_unix_ms": 1, "worker_id": "w"
    })
    .to_string()
}

#[test]
fn an_interrupt_command_cuts_the_publisher_and_bad_messages_are_skipped() {
    let nginx = Nginx::start();
    let mut publisher = Command::new("gst-launch-1.0")
        .args(
            format!(
                "-q videotestsrc is-live=true ! video/x-raw,width=320,height=240,framerate=15/1 \
                 ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=15 ! flvmux streamable=true \
                 ! rtmp2sink location=rtmp://127.0.0.1:{}/live/stream1",
                nginx.rtmp
            )
            .split_whitespace(),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert!(publisher.try_wait().unwrap().is_none(), "the publisher is live");

    let broker = Broker::start(&["vigil.interrupts"]);
    let producer: ThreadedProducer<DefaultProducerContext> =
        rdkafka::ClientConfig::new().set("bootstrap.servers", &broker.addr).create().unwrap();
    let good = command("a1/interrupt", "live/stream1");
    for payload in ["{not json", r#"{"schema":"vigil.alert"}"#, good.as_str(), good.as_str()] {
        producer.send(BaseRecord::<str, str>::to("vigil.interrupts").key("live/stream1").payload(payload)).unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();

    let kafka = format!("{{ brokers = \"{}\", spool_path = \"/tmp/unused\" }}", broker.addr);
    let adapter = format!("{{ kind = \"nginx_rtmp\", control_url = \"http://127.0.0.1:{}/control\" }}", nginx.http);
    let out = vigil_env(
        &["actuate", "--exit-after-messages", "4", "--max-runtime-secs", "60"],
        &[("VIGIL__SINK__KAFKA", &kafka), ("VIGIL__ACTUATE__ADAPTER", &adapter)],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stats = &stdout_json(&out)[0];
    assert_eq!(stats["acted"], 1, "{stats}");
    assert_eq!(stats["duplicates"], 1, "{stats}");
    assert_eq!(stats["malformed"], 2, "{stats}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("skipping malformed message"));

    let deadline = Instant::now() + Duration::from_secs(15);
    while publisher.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the publisher is still live after the interrupt");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A platform's webhook on loopback: answers `status` to every request and hands each
/// request (head and body) to the test.
fn webhook(status: u16) -> (String, std::sync::mpsc::Receiver<String>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/platform/interrupt", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            // Head, then as many body bytes as Content-Length says.
            let body_len = loop {
                let n = std::io::Read::read(&mut conn, &mut buf).unwrap_or(0);
                if n == 0 {
                    break None;
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
                        break Some(len);
                    }
                }
            };
            let _ = body_len;
            let reply = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            let _ = std::io::Write::write_all(&mut conn, reply.as_bytes());
            let _ = tx.send(String::from_utf8_lossy(&req).to_string());
        }
    });
    (url, rx)
}

#[test]
fn the_webhook_adapter_posts_the_command_with_its_bearer_token() {
    let (url, requests) = webhook(200);
    let broker = Broker::start(&["vigil.interrupts"]);
    let producer: ThreadedProducer<DefaultProducerContext> =
        rdkafka::ClientConfig::new().set("bootstrap.servers", &broker.addr).create().unwrap();
    let cmd = command("a7/interrupt", "rtmp/live/alice");
    producer.send(BaseRecord::<str, str>::to("vigil.interrupts").key("rtmp/live/alice").payload(&cmd)).unwrap();
    producer.flush(Duration::from_secs(10)).unwrap();

    let kafka = format!("{{ brokers = \"{}\", spool_path = \"/tmp/unused\" }}", broker.addr);
    let adapter = format!("{{ kind = \"webhook\", url = \"{url}\", token_env = \"VIGIL_TEST_WEBHOOK_TOKEN\" }}");
    let out = vigil_env(
        &["actuate", "--exit-after-messages", "1", "--max-runtime-secs", "60"],
        &[
            ("VIGIL__SINK__KAFKA", &kafka),
            ("VIGIL__ACTUATE__ADAPTER", &adapter),
            ("VIGIL_TEST_WEBHOOK_TOKEN", "s3cret-token"),
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout_json(&out)[0]["acted"], 1);
    let req = requests.recv_timeout(Duration::from_secs(5)).expect("the platform was called");
    let (head, body) = req.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("POST /platform/interrupt "), "{head}");
    assert!(head.lines().any(|l| l.eq_ignore_ascii_case("authorization: Bearer s3cret-token")), "{head}");
    let sent: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(sent["command_id"], "a7/interrupt");
    assert_eq!(sent["stream_id"], "rtmp/live/alice");
}
