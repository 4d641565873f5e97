//! The worker's operations: banks reloaded by the admin call while a stream runs (and
//! its matches turning into alerts and interrupt commands), what `/metrics` and
//! `/readyz` report, and a worker killed with SIGKILL mid-stream whose spooled alerts
//! reach Kafka (tansu on 127.0.0.1) once the next worker starts.

mod common;

use common::worker::*;
use common::*;
use rdkafka::message::{Headers, Message};
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};
use vigil_sink::testing::{Broker, read_from_beginning};

fn astronaut_clip(dir: &Path, secs: u32) -> std::path::PathBuf {
    still_clip(dir, &astronaut(), "astronaut.mp4", secs, 2000, 480, "mp4mux")
}

fn matched(records: &[Value]) -> usize {
    records
        .iter()
        .filter(|r| r["type"] == "frame" && r["bank_matches"].as_array().is_some_and(|m| !m.is_empty()))
        .count()
}

#[test]
fn an_admin_reload_brings_a_new_bank_row_into_a_running_stream() {
    let dir = tempfile::tempdir().unwrap();
    let clip = astronaut_clip(dir.path(), 40);
    let bank = dir.path().join("bank.txt");
    // One unrelated row to start with: nothing matches.
    std::fs::write(&bank, format!("{}\n", "f0".repeat(32))).unwrap();
    let w = Worker::start(
        &format!(
            "[media]\nsampling = \"fixed\"\nsample_fps = 2.0\n\
             [hash]\nreload_poll_secs = 3600\n[[hash.banks]]\nname = \"known\"\npath = \"{}\"\naction = \"interrupt\"\n\
             [[ingest.pull]]\nname = \"cam\"\nuri = \"file://{}\"\n",
            bank.display(),
            clip.display()
        ),
        &[],
        &[],
    );
    let (status, body) = w.http("GET", "/readyz");
    assert_eq!(status, 200, "{body}");
    let metrics = w.http("GET", "/metrics").1;
    assert!(metrics.contains("vigil_infer_provider{model=\"nudenet-320n-int8\",provider=\"cpu\"} 1"), "{metrics}");
    let before = w.wait_for("a few unmatched frames", 60, |r| {
        r.iter().filter(|x| x["stream"] == "cam" && x["pdq"].is_object()).count() >= 3
    });
    assert_eq!(matched(&before), 0);
    assert_eq!(w.metric("vigil_media_streams_active", ""), 1.0);

    // The platform adds the astronaut (a stand-in for known material) and asks for a reload.
    std::fs::write(&bank, format!("{}\n{}\n", "f0".repeat(32), pdq_of(&astronaut()))).unwrap();
    let (status, body) = w.http("POST", "/admin/banks/reload");
    assert_eq!(status, 200, "{body}");
    let report: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["banks"][0]["rows"], 2, "{report}");
    let after = w.wait_for("matches, an alert and an interrupt", 60, |r| {
        matched(r) > 0 && r.iter().any(|x| x["type"] == "interrupt")
    });
    let alert = after.iter().find(|r| r["type"] == "alert").unwrap();
    assert_eq!(alert["stream_id"], "cam");
    assert!(alert["session_id"].is_string(), "the worker's session id is on the alert: {alert}");
    assert!(schema_violations(alert).is_empty(), "{:?}", schema_violations(alert));
    let (status, _) = w.stop();
    assert!(status.success());
}

/// Every message on `topic`: message id → copies, and the alert ids seen.
fn consume(broker: &Broker, topic: &str, want_ids: &[String], timeout: Duration) -> HashMap<String, usize> {
    let consumer = read_from_beginning(&broker.addr, topic);
    let mut copies: HashMap<String, usize> = HashMap::new();
    let mut alert_ids: Vec<String> = Vec::new();
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline && !want_ids.iter().all(|w| alert_ids.contains(w)) {
        let Some(msg) = consumer.poll(Duration::from_millis(200)) else { continue };
        let msg = msg.unwrap();
        let headers = msg.headers().expect("headers");
        let id = headers.iter().find(|h| h.key == "vigil-message-id").and_then(|h| h.value).unwrap();
        *copies.entry(String::from_utf8_lossy(id).into_owned()).or_default() += 1;
        let v: Value = serde_json::from_slice(msg.payload().unwrap()).unwrap();
        alert_ids.push(v["alert_id"].as_str().unwrap().to_string());
    }
    // A little longer, to see any duplicate.
    let settle = Instant::now() + Duration::from_secs(2);
    while Instant::now() < settle {
        if let Some(Ok(msg)) = consumer.poll(Duration::from_millis(200)) {
            let id = msg.headers().unwrap().iter().find(|h| h.key == "vigil-message-id").and_then(|h| h.value).unwrap();
            *copies.entry(String::from_utf8_lossy(id).into_owned()).or_default() += 1;
        }
    }
    for w in want_ids {
        assert!(alert_ids.contains(w), "alert {w} never reached {topic}; got {alert_ids:?}");
    }
    copies
}

/// A worker with a banked clip whose broker froze: its alert and interrupt command wait
/// in the spool, and it is killed (no chance to flush). The broker stays frozen.
struct Outage {
    dir: tempfile::TempDir,
    broker: Broker,
    spool: std::path::PathBuf,
    /// The `[sink.kafka]` section, for the next worker.
    kafka: String,
    alert_ids: Vec<String>,
}

fn killed_during_an_outage() -> Outage {
    let dir = tempfile::tempdir().unwrap();
    let clip = astronaut_clip(dir.path(), 60);
    let bank = dir.path().join("bank.txt");
    std::fs::write(&bank, format!("{}\n", pdq_of(&astronaut()))).unwrap();
    let broker = Broker::start(&["vigil.alerts", "vigil.interrupts"]);
    let spool = dir.path().join("spool/messages.spool");
    let kafka = format!("[sink.kafka]\nbrokers = \"{}\"\nspool_path = \"{}\"\n", broker.addr, spool.display());
    let w = Worker::start(
        &format!(
            "[media]\nsampling = \"fixed\"\nsample_fps = 2.0\n\
             [[hash.banks]]\nname = \"known\"\npath = \"{}\"\naction = \"interrupt\"\n\
             [[ingest.pull]]\nname = \"cam\"\nuri = \"file://{}\"\n{kafka}",
            bank.display(),
            clip.display()
        ),
        &[],
        &[],
    );
    // The broker freezes: nothing can be delivered, everything waits in the spool.
    broker.signal("-STOP");
    let records = w.wait_for("an alert and its interrupt command", 60, |r| r.iter().any(|x| x["type"] == "interrupt"));
    let alert_ids: Vec<String> =
        records.iter().filter(|r| r["type"] == "alert").map(|r| r["alert_id"].as_str().unwrap().to_string()).collect();
    assert!(!alert_ids.is_empty());
    // Killed mid-stream, with no chance to flush.
    signal(w.pid(), "KILL");
    drop(w);
    Outage { dir, broker, spool, kafka, alert_ids }
}

/// The start offset of the last frame of a spool file (`[len u32 LE][crc u32][kind][body]`).
fn last_frame_at(data: &[u8]) -> usize {
    let (mut at, mut last) = (0usize, 0usize);
    while at + 8 <= data.len() {
        let len = u32::from_le_bytes(data[at..at + 4].try_into().unwrap()) as usize;
        last = at;
        at += 8 + len;
    }
    last
}

/// A complete, fsync'd last record whose length field took one flipped bit looks like a
/// torn write: the restarted worker copies it aside (`<spool>.corrupt-N`), counts it and
/// names its message id in the log before cutting it, and delivers everything before it.
#[test]
fn a_damaged_last_spool_record_is_set_aside_counted_and_named_not_deleted() {
    let Outage { dir: _dir, broker, spool, kafka, alert_ids } = killed_during_an_outage();
    // One flipped bit in the last record's length: it now runs past the end of the file.
    let mut data = std::fs::read(&spool).unwrap();
    let last = last_frame_at(&data);
    let record = data[last..].to_vec();
    data[last + 2] ^= 0x01;
    std::fs::write(&spool, &data).unwrap();
    broker.signal("-CONT");

    let next = Worker::start(&kafka, &[], &[]);
    let aside = std::path::PathBuf::from(format!("{}.corrupt-0", spool.display()));
    let kept = std::fs::read(&aside).expect("the damaged record is set aside");
    assert_eq!(kept.len(), record.len(), "the whole record is kept");
    assert_eq!(&kept[8..], &record[8..], "byte for byte but the flipped length");
    assert!(next.metric("vigil_sink_spool_set_aside_total", "") >= 1.0, "counted");
    let log = next.stderr();
    let line = log.lines().find(|l| l.contains("copied aside")).unwrap_or_else(|| panic!("{}", tail(&log, 20)));
    let key_len = u16::from_le_bytes([record[9], record[10]]) as usize;
    let message_id = String::from_utf8_lossy(&record[11..11 + key_len]).into_owned();
    assert!(line.contains(&message_id), "the log names {message_id}: {line}");
    // What came before it is delivered.
    let copies = consume(&broker, "vigil.alerts", &alert_ids[..1], Duration::from_secs(60));
    assert!(!copies.is_empty(), "{copies:?}");
    let (status, _) = next.stop();
    assert!(status.success());
}

#[test]
fn alerts_accepted_before_a_sigkill_reach_kafka_after_the_restart() {
    let Outage { dir: _dir, broker, spool: _, kafka, alert_ids } = killed_during_an_outage();
    broker.signal("-CONT");

    // The next worker (no streams) replays the spool on start.
    let next = Worker::start(&kafka, &[], &[]);
    assert!(next.stderr().contains("replaying spooled messages"), "{}", tail(&next.stderr(), 20));
    // At least once, and every copy carries its message id: a request the frozen broker
    // still held when the worker died may land as well as the replay (a new producer
    // session cannot be deduplicated by the broker), so consumers deduplicate by id.
    let copies = consume(&broker, "vigil.alerts", &alert_ids, Duration::from_secs(60));
    assert!(copies.values().all(|&n| (1..=2).contains(&n)), "{copies:?}");
    let interrupts = consume(&broker, "vigil.interrupts", &alert_ids[..1], Duration::from_secs(60));
    assert!(!interrupts.is_empty() && interrupts.values().all(|&n| (1..=2).contains(&n)), "{interrupts:?}");
    let (status, _) = next.stop();
    assert!(status.success());
}

#[test]
fn a_model_that_cannot_load_leaves_the_worker_up_but_not_ready_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("models")).unwrap();
    std::fs::write(dir.path().join("models/nudenet-320n.onnx"), b"not the model").unwrap();
    let lib = cache_dir().join("onnxruntime/libonnxruntime.so.1.32.0");
    let w = Worker::start(
        "",
        &[],
        &[
            ("VIGIL__INFER__CACHE_DIR", dir.path().to_str().unwrap()),
            ("VIGIL__INFER__ONNXRUNTIME_LIB", lib.to_str().unwrap()),
        ],
    );
    assert_eq!(w.http("GET", "/healthz").0, 200, "alive");
    let (status, body) = w.http("GET", "/readyz");
    assert_eq!(status, 503, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    let reason = body["reasons"][0].as_str().unwrap();
    assert!(reason.starts_with("models:") && reason.contains("nudenet-320n"), "{reason}");
    assert_eq!(w.records()[0]["ready"], false);
    let (status, _) = w.stop();
    assert_eq!(status.code(), Some(2), "a worker that never became ready exits with an error");
}

/// A 12 s clip of a still 640x360 frame, keyframe every 2 s; `marker` paints the red
/// corner that makes the stand-in detector report sexual exposure (no real imagery).
fn marker_clip(dir: &Path, name: &str, marker: bool) -> std::path::PathBuf {
    let mut img = image::RgbImage::from_pixel(640, 360, image::Rgb([128, 128, 128]));
    for (x, y, p) in img.enumerate_pixels_mut() {
        if marker && x < 40 && y < 40 {
            *p = image::Rgb([255, 0, 0]);
        } else if (230..410).contains(&x) && (110..290).contains(&y) {
            *p = image::Rgb([200, 170, 150]);
        }
    }
    let png = dir.join(format!("{name}.png"));
    img.save(&png).unwrap();
    let clip = dir.join(name);
    gst_launch(&format!(
        "filesrc location={} ! decodebin ! videoconvert ! imagefreeze num-buffers=300 ! video/x-raw,framerate=25/1 \
         ! videoconvert ! x264enc speed-preset=ultrafast key-int-max=50 ! h264parse ! mp4mux ! filesink location={}",
        png.display(),
        clip.display()
    ));
    clip
}

fn frame_pts(records: &[Value], stream: &str) -> Vec<u64> {
    records
        .iter()
        .filter(|r| r["type"] == "frame" && r["stream"] == stream && r["pdq"].is_object())
        .map(|r| r["pts_ms"].as_u64().unwrap())
        .collect()
}

#[test]
fn adaptive_sampling_decodes_densely_once_fusion_sees_risk_and_stays_on_keyframes_when_calm() {
    let dir = tempfile::tempdir().unwrap();
    let risky = marker_clip(dir.path(), "risky.mp4", true);
    let calm = marker_clip(dir.path(), "calm.mp4", false);
    let models = cache_dir().join("test-models").display().to_string();
    let w = Worker::start(
        &format!(
            "[media]\nsampling = \"adaptive\"\nsample_fps = 1.0\ndense_fps = 4.0\n\
             [[ingest.pull]]\nname = \"risky\"\nuri = \"file://{}\"\n[[ingest.pull]]\nname = \"calm\"\nuri = \"file://{}\"\n",
            risky.display(),
            calm.display()
        ),
        &["--exit-when-idle"],
        &[
            ("VIGIL__INFER__MODELS_DIR", &models),
            ("VIGIL__INFER__DETECTOR", "test-marker-detector"),
            ("VIGIL__INFER__AGE", "test-marker-age"),
        ],
    );
    let records = w.wait_for("both streams to end", 90, |r| ended(r, "risky").is_some() && ended(r, "calm").is_some());
    // Calm: one decode per 2 s GOP, nothing more.
    let calm_pts = frame_pts(&records, "calm");
    assert_eq!(calm_pts, [0, 2000, 4000, 6000, 8000, 10000], "keyframes only");
    // Risky: the first keyframe shows exposure; from the next keyframe on, 4 frames a second.
    let risky_pts = frame_pts(&records, "risky");
    assert_eq!(risky_pts[0], 0);
    // (25 fps source: frames land on 40 ms steps, so a 250 ms grid gives 240-280 ms gaps.)
    let dense: Vec<u64> = risky_pts.windows(2).filter(|w| w[1] - w[0] < 500).map(|w| w[1]).collect();
    assert!(dense.len() >= 6, "dense sampling after the risk appeared: {risky_pts:?}");
    // It switches at a keyframe after the first risky sample; a paced file is demuxed
    // ahead of its playback by decodebin's queues, so that can be a few GOPs later.
    assert!(dense[0] > 2000 && dense[0] <= 10300, "switched at a keyframe: {risky_pts:?}");
    assert!(dense.windows(2).all(|w| w[1] - w[0] < 500), "and stayed dense while the risk lasted: {risky_pts:?}");
    let switch = dense[0] - dense[0] % 2000;
    assert!(risky_pts.contains(&switch), "the dense run starts at a keyframe ({switch}): {risky_pts:?}");
    assert!(records.iter().any(|r| r["type"] == "alert" && r["stream_id"] == "risky"));
    let (status, _) = w.stop();
    assert!(status.success());
}

#[test]
fn a_shrunk_bank_is_refused_across_a_restart_until_an_operator_accepts_it() {
    let dir = tempfile::tempdir().unwrap();
    let (bank, state) = (dir.path().join("bank.txt"), dir.path().join("state"));
    let rows = |n: usize| (0..n).map(|i| format!("{:02x}{}\n", i, "f0".repeat(31))).collect::<String>();
    std::fs::write(&bank, rows(4)).unwrap();
    let config = format!(
        "[hash]\nreload_poll_secs = 3600\n[[hash.banks]]\nname = \"known\"\npath = \"{}\"\naction = \"interrupt\"\n",
        bank.display()
    );
    let env = [("VIGIL_STATE_DIR", state.to_str().unwrap())];
    let w = Worker::start(&config, &[], &env);
    assert_eq!(w.http("GET", "/readyz").0, 200);
    // A truncated file: refused, the 4 rows keep serving, and it shows and counts.
    std::fs::write(&bank, rows(1)).unwrap();
    let (_, body) = w.http("POST", "/admin/banks/reload");
    let report: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (report["banks"][0]["state"].as_str(), report["banks"][0]["rows"].as_u64()),
        (Some("shrink_refused"), Some(4))
    );
    let (status, body) = w.http("GET", "/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("bank known: ShrinkRefused"), "{body}");
    assert_eq!(w.metric("vigil_hash_bank_reloads_total", "result=\"shrink_refused\""), 1.0);
    w.stop();

    // A restart does not launder the truncated file: the high-water mark was kept.
    let w = Worker::start(&config, &[], &env);
    let (status, body) = w.http("GET", "/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("high-water mark 4"), "{body}");
    assert_eq!(w.http("POST", "/admin/banks/nope/accept-shrink").0, 404);
    let (status, body) = w.http("POST", "/admin/banks/known/accept-shrink");
    assert_eq!(status, 200, "{body}");
    let report: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (report["banks"][0]["state"].as_str(), report["banks"][0]["high_water"].as_u64()),
        (Some("ok"), Some(1))
    );
    assert_eq!(w.http("GET", "/readyz").0, 200);
    w.stop();
}
