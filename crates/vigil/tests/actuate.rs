//! `vigil actuate` against the real thing: nginx with its RTMP module as the platform,
//! a live publisher pushed by GStreamer, interrupt commands on a real broker (tansu),
//! all on 127.0.0.1. The command cuts the publisher; malformed messages and a
//! duplicate on the topic are logged, skipped and committed, and never crash it.

mod common;

use common::*;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use vigil_sink::testing::Broker;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_for(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// nginx with the RTMP module: RTMP on one loopback port, its control API on another.
struct Nginx {
    child: Child,
    rtmp: u16,
    http: u16,
    _dir: tempfile::TempDir,
}

impl Nginx {
    fn start() -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let (rtmp, http) = (free_port(), free_port());
        let d = dir.path().display();
        std::fs::write(
            dir.path().join("nginx.conf"),
            format!(
                "load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;\n\
                 daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
                 events {{ worker_connections 64; }}\n\
                 rtmp {{ server {{ listen 127.0.0.1:{rtmp}; application live {{ live on; }} }} }}\n\
                 http {{ access_log off;\n\
                   server {{ listen 127.0.0.1:{http}; location /control {{ rtmp_control all; }} }} }}\n"
            ),
        )
        .unwrap();
        let child = Command::new("nginx")
            .args(["-p", &d.to_string(), "-c", &format!("{d}/nginx.conf")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx (make setup)");
        wait_for(&format!("127.0.0.1:{rtmp}"));
        wait_for(&format!("127.0.0.1:{http}"));
        Nginx { child, rtmp, http, _dir: dir }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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
