//! The whole live path on loopback, as a platform would run it: ffmpeg publishes to
//! nginx-rtmp and a lifecycle event tells a fleet worker to pull that stream; a second
//! publisher pushes straight to the worker. Each shows a test pattern, then a banked
//! image. The alerts and interrupt commands reach the broker (tansu) and validate
//! against their schemas; `vigil actuate` drops the nginx publisher, the worker cuts
//! its direct publisher itself, and both publishers see their connections closed.

mod common;

use common::nginx::Nginx;
use common::worker::*;
use common::*;
use rdkafka::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use vigil_sink::testing::{Broker, consume_until, read_from_beginning};

/// Seconds of test pattern before the banked image goes on air.
const CLEAN_SECS: u32 = 4;

/// A pre-encoded FLV clip: `CLEAN_SECS` of a moving test pattern, then 40 s of the
/// (benign) banked photo, 512x512 at 25 fps, a keyframe a second.
fn clip(dir: &Path) -> std::path::PathBuf {
    let out = dir.join("clip.flv");
    gst_launch(&format!(
        "concat name=c ! videoconvert ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=25 \
         ! h264parse ! flvmux streamable=true ! filesink location={} \
         videotestsrc num-buffers={} pattern=ball ! video/x-raw,format=I420,width=512,height=512,framerate=25/1 ! c. \
         filesrc location={} ! pngdec ! videoconvert ! video/x-raw,format=I420,width=512,height=512 \
         ! imagefreeze num-buffers=1000 ! video/x-raw,framerate=25/1 ! c.",
        out.display(),
        CLEAN_SECS * 25,
        astronaut().display()
    ));
    out
}

/// ffmpeg replays `clip` in real time to `url`, copying the coded video (cheap).
fn replay(clip: &Path, url: &str) -> Child {
    Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-re", "-i"])
        .arg(clip)
        .args(["-c", "copy", "-f", "flv", url])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ffmpeg (make setup)")
}

/// Waits for `child` to exit; the time it took, or a failure after `secs`.
fn closed_within(child: &mut Child, secs: u64, who: &str) -> Instant {
    wait_until(&format!("{who}: the publisher's connection to close"), secs, || child.try_wait().unwrap().is_some());
    Instant::now()
}

/// `want` messages of `topic`, each tagged with its line type for the schema check.
fn broker_messages(broker: &Broker, topic: &str, kind: &str, want: usize) -> Vec<Value> {
    let consumer = read_from_beginning(&broker.addr, topic);
    let got = consume_until(&consumer, Duration::from_secs(30), |got| got.len() >= want);
    got.iter()
        .map(|m| {
            let mut v: Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
            v["type"] = json!(kind);
            v
        })
        .collect()
}

#[test]
fn a_banked_image_on_a_pulled_and_a_pushed_stream_is_interrupted_and_both_are_cut() {
    let dir = tempfile::tempdir().unwrap();
    let clip = clip(dir.path());
    let bank = dir.path().join("bank.txt");
    std::fs::write(&bank, format!("{}\n", pdq_of(&astronaut()))).unwrap();
    let topics = ["vigil.streams.lifecycle", "vigil.streams.owners", "vigil.alerts", "vigil.interrupts"];
    let broker = Broker::start(&[&topics[..], &["vigil.interrupts.dead-letter", "vigil.actions"]].concat());
    let nginx = Nginx::start();
    let port = common::nginx::free_port();
    let w = Worker::start(
        &common::nginx::fleet_worker_config(&bank, port, &broker.addr, &dir.path().join("spool")),
        &["--worker-id", "worker-e2e"],
        &[],
    );
    // The actuator: the platform's side, cutting on nginx.
    let kafka = format!("{{ brokers = \"{}\", spool_path = \"/tmp/unused\" }}", broker.addr);
    let adapter = format!("{{ kind = \"nginx_rtmp\", control_url = \"http://127.0.0.1:{}/control\" }}", nginx.http);
    let mut actuator = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .envs(common::trust::env())
        .args(["actuate", "--exit-after-messages", "2", "--max-runtime-secs", "120"])
        .env("VIGIL_CACHE_DIR", cache_dir())
        .env("VIGIL__SINK__KAFKA", &kafka)
        .env("VIGIL__ACTUATE__ADAPTER", &adapter)
        // The pushed stream's command finds nobody on nginx (the worker cut it): dead-lettered fast.
        .env(
            "VIGIL__ACTUATE__RETRY",
            "{ initial_backoff_ms = 100, max_backoff_ms = 400, budget_secs = 2, no_publisher_attempts = 3 }",
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    // The worker joins its group (about half the session timeout) before anything airs.
    wait_until_or(
        "the worker to get the lifecycle partitions",
        30,
        || w.metric("vigil_fleet_partitions_assigned", "") >= 3.0,
        || tail(&w.stderr(), 20),
    );
    let pulled = "live/origin1";
    let mut origin = replay(&clip, &format!("rtmp://127.0.0.1:{}/{pulled}", nginx.rtmp));
    let origin_started = Instant::now();
    let producer: BaseProducer =
        rdkafka::ClientConfig::new().set("bootstrap.servers", &broker.addr).create().expect("a producer");
    let event = json!({"event": "start", "stream_id": pulled,
                       "source_url": format!("rtmp://127.0.0.1:{}/{pulled}", nginx.rtmp), "account_id": "acct-9"});
    let payload = event.to_string();
    let headers =
        common::trust::signed(vigil_trust::Role::Lifecycle, topics[0], Some(pulled), Some(payload.as_bytes()));
    producer.send(BaseRecord::to(topics[0]).key(pulled).payload(&payload).headers(headers)).unwrap();
    producer.flush(Duration::from_secs(10)).unwrap();
    let mut direct = replay(&clip, &format!("rtmp://127.0.0.1:{port}/live/alice-key-123"));
    let direct_started = Instant::now();
    let pushed = "rtmp/live/alice";

    let direct_closed = closed_within(&mut direct, 40, "direct");
    let origin_closed = closed_within(&mut origin, 40, "origin");
    // The cut closes the connection as its lines go to the sink: they may come a moment later.
    let records = w.wait_for("an interrupt for each stream and the worker's own cut", 30, |r| {
        [pulled, pushed].iter().all(|s| r.iter().any(|c| c["type"] == "interrupt" && c["stream_id"] == *s))
            && r.iter().any(|x| x["stream"] == pushed && x["event"] == "cut")
    });
    let interrupts: Vec<&Value> = records.iter().filter(|r| r["type"] == "interrupt").collect();

    // On the broker: every alert and command, each valid.
    let alerts = records.iter().filter(|r| r["type"] == "alert").count();
    let on_broker = broker_messages(&broker, "vigil.interrupts", "interrupt", interrupts.len());
    assert_eq!(on_broker.len(), interrupts.len(), "every interrupt command reached Kafka");
    let alerts_on_broker = broker_messages(&broker, "vigil.alerts", "alert", alerts);
    assert_eq!(alerts_on_broker.len(), alerts, "every alert reached Kafka");
    for m in on_broker.iter().chain(alerts_on_broker.iter()) {
        assert!(schema_violations(m).is_empty(), "{m}: {:?}", schema_violations(m));
    }
    let mut out = String::new();
    use std::io::Read;
    let _ = actuator.stdout.take().unwrap().read_to_string(&mut out);
    let _ = actuator.wait();
    let stats: Value = serde_json::from_str(out.lines().last().unwrap_or("{}")).unwrap_or(Value::Null);
    assert_eq!(stats["acted"], 1, "the actuator cut the pulled stream on nginx: {out}");

    // On air at CLEAN_SECS after each publisher started (its clip's banked part).
    let on_air = |started: Instant| started + Duration::from_secs(u64::from(CLEAN_SECS));
    let issued = |stream: &str| {
        let c = interrupts.iter().find(|c| c["stream_id"] == stream).unwrap();
        c["issued_at_unix_ms"].as_u64().unwrap()
    };
    let now_ms = vigil_unix_ms();
    let to_instant = |ms: u64| Instant::now() - Duration::from_millis(now_ms.saturating_sub(ms));
    for (name, started, closed, stream) in [
        ("pulled via nginx", origin_started, origin_closed, pulled),
        ("pushed to the worker", direct_started, direct_closed, pushed),
    ] {
        let air = on_air(started);
        let interrupt = to_instant(issued(stream)).saturating_duration_since(air);
        let cut = closed.saturating_duration_since(air);
        eprintln!("{name}: banked frame on air → interrupt command {interrupt:.1?}, → publisher cut {cut:.1?}");
    }
}

fn vigil_unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}
