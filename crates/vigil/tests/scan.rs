//! `vigil scan` end to end: real GStreamer decode, real models, real PDQ and banks.

mod common;

use common::*;

#[test]
fn frame_count_follows_the_sampling_rate() {
    let dir = tempfile::tempdir().unwrap();
    let clip = test_pattern_clip(dir.path(), "bars.mp4", 5, "mp4mux");
    let out = vigil(&["scan", clip.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let recs = stdout_json(&out);
    let f = frames(&recs);
    assert_eq!(f.len(), 5, "1 fps over 5 s");
    let pts: Vec<u64> = f.iter().map(|r| r["pts_ms"].as_u64().unwrap()).collect();
    assert_eq!(pts, vec![0, 1000, 2000, 3000, 4000]);
    assert_eq!(summary(&recs)["frames"], 5);

    let out = vigil(&["scan", "--fps", "2", clip.to_str().unwrap()]);
    assert_eq!(frames(&stdout_json(&out)).len(), 10, "2 fps over 5 s");
}

#[test]
fn every_frame_carries_signals_from_all_three_stages() {
    let dir = tempfile::tempdir().unwrap();
    let clip = still_clip(dir.path(), &astronaut(), "astro.flv", 3, 1000, 512, "flvmux");
    let out = vigil(&["scan", clip.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let recs = stdout_json(&out);
    let f = frames(&recs);
    assert_eq!(f.len(), 3);
    for r in f {
        // hash stage
        assert_eq!(r["pdq"]["hash"].as_str().unwrap().len(), 64);
        assert!(r["pdq"]["quality"].as_u64().unwrap() >= 50);
        assert!(r["bank_matches"].as_array().unwrap().is_empty());
        // inference stage: the astronaut's face, estimated an adult
        let faces = r["faces"].as_array().unwrap();
        assert_eq!(faces.len(), 1, "{r}");
        let age = &faces[0]["age"];
        assert!(age["expected_years"].as_f64().unwrap() >= 18.0, "{r}");
        assert!(age["p_minor"].as_f64().unwrap() < 0.5, "{r}");
        assert!(r["nsfw_score"].as_f64().unwrap() < 0.5, "{r}");
        // fusion stage
        assert_eq!(r["verdict"], "clear");
    }
}

#[test]
fn still_image_is_one_frame() {
    let out = vigil(&["scan", astronaut().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let recs = stdout_json(&out);
    assert_eq!(frames(&recs).len(), 1);
    assert_eq!(frames(&recs)[0]["faces"].as_array().unwrap().len(), 1);
}

/// A bank with the astronaut's PDQ among unrelated random hashes.
fn bank_with_astronaut(dir: &std::path::Path) -> std::path::PathBuf {
    let out = vigil(&["hash", astronaut().to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let h = stdout_json(&out)[0]["pdq"].as_str().unwrap().to_string();
    let mut text = String::from("id,pdq,label\n");
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for i in 0..200 {
        let mut hex = String::new();
        for _ in 0..4 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            hex.push_str(&format!("{x:016x}"));
        }
        text.push_str(&format!("random-{i},{hex},unrelated\n"));
    }
    text.push_str(&format!("astronaut-1,{h},known\n"));
    let bank = dir.join("bank.csv");
    std::fs::write(&bank, text).unwrap();
    bank
}

#[test]
fn banked_image_in_a_reencoded_video_is_matched() {
    let dir = tempfile::tempdir().unwrap();
    let bank = bank_with_astronaut(dir.path());
    // Re-encoded at 300 kbit/s and scaled to 480 lines: PDQ must still match.
    let clip = still_clip(dir.path(), &astronaut(), "astro-480.mp4", 3, 300, 480, "mp4mux");
    let out = vigil(&["scan", "--bank", bank.to_str().unwrap(), clip.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "an alert; stderr: {}", String::from_utf8_lossy(&out.stderr));
    let recs = stdout_json(&out);
    let f = frames(&recs);
    assert_eq!(f.len(), 3);
    for r in f {
        let m = &r["bank_matches"][0];
        assert_eq!(m["id"], "astronaut-1", "{r}");
        assert!(m["distance"].as_u64().unwrap() <= 31, "{r}");
        assert_eq!(r["verdict"], "interrupt");
        assert_eq!(r["rule"], "known_abuse_material");
    }
    // One incident, one alert and one interrupt command: opened on the first sample,
    // not repeated; both valid against their JSON Schemas.
    assert_eq!(summary(&recs)["alerts"], 1);
    assert_eq!(summary(&recs)["interrupts"], 1);
    let msgs = messages(&recs);
    assert_eq!(msgs.len(), 2);
    let (alert, cmd) = (msgs[0], msgs[1]);
    assert_eq!((alert["type"].as_str(), alert["event"].as_str()), (Some("alert"), Some("opened")));
    assert_eq!(alert["decision"], "interrupt");
    assert!(alert["explanation"]["reasons"][0].as_str().unwrap().contains("astronaut-1"), "{alert}");
    assert_eq!(alert["explanation"]["models"].as_array().unwrap().len(), 3);
    assert_eq!(alert["explanation"]["frames"][0]["pdq"].as_str().unwrap().len(), 64);
    assert_eq!(cmd["type"], "interrupt");
    assert_eq!(cmd["alert_id"], alert["alert_id"]);
}

#[test]
fn video_not_in_the_bank_is_not_matched() {
    let dir = tempfile::tempdir().unwrap();
    let bank = bank_with_astronaut(dir.path());
    let clip = test_pattern_clip(dir.path(), "bars.flv", 3, "flvmux");
    let out = vigil(&["scan", "--bank", bank.to_str().unwrap(), clip.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let recs = stdout_json(&out);
    assert_eq!(frames(&recs).len(), 3);
    assert!(frames(&recs).iter().all(|r| r["bank_matches"].as_array().unwrap().is_empty()));
    assert_eq!(summary(&recs)["bank_matches"], 0);
}

fn assert_clean_error(out: &std::process::Output, expect: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let line =
        stderr.lines().find(|l| l.starts_with("vigil: error:")).unwrap_or_else(|| panic!("no error line: {stderr}"));
    assert!(line.contains(expect), "expected {expect:?} in: {line}");
}

#[test]
fn truncated_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let clip = test_pattern_clip(dir.path(), "whole.mp4", 3, "mp4mux");
    let bytes = std::fs::read(&clip).unwrap();
    let cut = dir.path().join("cut.mp4");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    assert_clean_error(&vigil(&["scan", cut.to_str().unwrap()]), "cut.mp4");
}

#[test]
fn garbage_and_empty_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.mp4");
    std::fs::write(&junk, (0..50_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect::<Vec<_>>())
        .unwrap();
    assert_clean_error(&vigil(&["scan", junk.to_str().unwrap()]), "junk.mp4");
    let empty = dir.path().join("empty.flv");
    std::fs::write(&empty, b"").unwrap();
    assert_clean_error(&vigil(&["scan", empty.to_str().unwrap()]), "empty.flv");
    let bad_png = dir.path().join("bad.png");
    std::fs::write(&bad_png, b"\x89PNG\r\n\x1a\nnot really").unwrap();
    assert_clean_error(&vigil(&["scan", bad_png.to_str().unwrap()]), "bad.png");
    assert_clean_error(&vigil(&["scan", dir.path().join("missing.mp4").to_str().unwrap()]), "missing.mp4");
}

#[test]
fn missing_runtime_or_model_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let empty_cache = dir.path().to_str().unwrap();
    let out = vigil_env(&["scan", astronaut().to_str().unwrap()], &[("VIGIL__INFER__CACHE_DIR", empty_cache)]);
    assert_clean_error(&out, "ONNX Runtime library not found");
    assert!(String::from_utf8_lossy(&out.stderr).contains("make setup"));

    let lib = cache_dir().join("onnxruntime/libonnxruntime.so.1.32.0");
    let out = vigil_env(
        &["scan", astronaut().to_str().unwrap()],
        &[("VIGIL__INFER__CACHE_DIR", empty_cache), ("VIGIL__INFER__ONNXRUNTIME_LIB", lib.to_str().unwrap())],
    );
    assert_clean_error(&out, "model nudenet-320n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("is missing"));
}

#[test]
fn tampered_model_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("models")).unwrap();
    std::fs::write(dir.path().join("models/nudenet-320n-int8.onnx"), b"not the model").unwrap();
    let lib = cache_dir().join("onnxruntime/libonnxruntime.so.1.32.0");
    let out = vigil_env(
        &["scan", astronaut().to_str().unwrap()],
        &[
            ("VIGIL__INFER__CACHE_DIR", dir.path().to_str().unwrap()),
            ("VIGIL__INFER__ONNXRUNTIME_LIB", lib.to_str().unwrap()),
        ],
    );
    assert_clean_error(&out, "refusing to load it");
}

#[test]
fn alert_messages_carry_platform_ids_and_a_broken_message_fails_its_schema() {
    let dir = tempfile::tempdir().unwrap();
    let bank = bank_with_astronaut(dir.path());
    let out = vigil(&[
        "scan",
        "--bank",
        bank.to_str().unwrap(),
        "--account-id",
        "acct-7",
        "--session-id",
        "sess-9",
        "--worker-id",
        "worker-a",
        astronaut().to_str().unwrap(),
    ]);
    let recs = stdout_json(&out);
    let msgs = messages(&recs);
    assert!(
        msgs.iter().all(|m| m["account_id"] == "acct-7" && m["session_id"] == "sess-9" && m["worker_id"] == "worker-a")
    );
    // The schema is strict: a message with pixels (or any unknown field) is invalid.
    let mut bad = msgs[0].clone();
    bad["frame_rgb"] = serde_json::json!([0, 0, 0]);
    assert!(!schema_violations(&bad).is_empty());
    let mut bad = msgs[0].clone();
    bad["decision"] = serde_json::json!("clear");
    assert!(!schema_violations(&bad).is_empty());
}

/// `--publish` sends a scan's alert to Kafka, schema-valid, keyed by the input and
/// marked as a file scan (the rest of what a scan publishes, and does not, is in
/// `seams.rs::a_scan_publishes_only_when_told_to_and_then_as_a_file_scan_that_cuts_nothing`).
#[test]
fn with_publish_the_alert_reaches_its_topic_marked_as_a_file_scan() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    let broker = vigil_sink::testing::Broker::start(&["vigil.alerts", "vigil.interrupts"]);
    let dir = tempfile::tempdir().unwrap();
    let bank = bank_with_astronaut(dir.path());
    let kafka = format!("{{ brokers = \"{}\", spool_path = \"{}\" }}", broker.addr, dir.path().join("spool").display());
    let out = vigil_env(
        &["scan", "--publish", "--bank", bank.to_str().unwrap(), astronaut().to_str().unwrap()],
        &[("VIGIL__SINK__KAFKA", &kafka)],
    );
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("group.id", "scan-test")
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..vigil_sink::testing::PARTITIONS {
        tpl.add_partition_offset("vigil.alerts", p, rdkafka::Offset::Beginning).unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut msg = None;
    wait_until("the scan's alert on vigil.alerts", 20, || {
        msg = consumer.poll(std::time::Duration::from_millis(200)).map(|m| m.unwrap().detach());
        msg.is_some()
    });
    let msg = msg.unwrap();
    let value: serde_json::Value = serde_json::from_slice(msg.payload().unwrap()).unwrap();
    let mut tagged = value.clone();
    tagged["type"] = serde_json::json!("alert");
    assert!(schema_violations(&tagged).is_empty(), "{value}");
    assert_eq!(value["origin"], "file_scan", "{value}");
    assert_eq!(msg.key().unwrap(), astronaut().to_str().unwrap().as_bytes(), "keyed by stream id");
}

/// The PDQ reference data in the repository (tests/data/pdq).
fn pdq_data(file: &str) -> std::path::PathBuf {
    root().join("tests/data/pdq").join(file)
}

#[test]
fn hash_of_an_odd_sized_png_is_the_reference_hash() {
    // ThreatExchange's C++ PDQ over the same pixels (tests/data/pdq/odd-sizes/make.py).
    let csv = std::fs::read_to_string(pdq_data("odd-sizes/expected-pdq-odd.csv")).unwrap();
    let row = csv.lines().find(|l| l.starts_with("odd-sizes/bridge-451x300.png,")).unwrap();
    let f: Vec<&str> = row.split(',').collect();
    let out = vigil(&["hash", pdq_data(f[0]).to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rec = &stdout_json(&out)[0];
    assert_eq!((rec["width"].as_u64(), rec["height"].as_u64()), (Some(451), Some(300)), "{rec}");
    assert_eq!(rec["pdq"].as_str(), Some(f[1]), "{rec}");
    assert_eq!(rec["quality"].as_u64(), f[2].parse().ok(), "{rec}");
}

#[test]
fn animated_gif_is_hashed_promptly_frame_by_frame() {
    use image::codecs::gif::GifEncoder;
    let dir = tempfile::tempdir().unwrap();
    let gif = dir.path().join("anim.gif");
    let mut enc = GifEncoder::new(std::fs::File::create(&gif).unwrap());
    let frames: Vec<image::RgbaImage> = (0..6u32)
        .map(|i| {
            image::RgbaImage::from_fn(161, 91, |x, y| {
                image::Rgba([(x * 3 + i * 50) as u8, (y * 2) as u8, (x ^ y) as u8, 255])
            })
        })
        .collect();
    for f in &frames {
        let delay = image::Delay::from_numer_denom_ms(500, 1);
        enc.encode_frame(image::Frame::from_parts(f.clone(), 0, 0, delay)).unwrap();
    }
    drop(enc);
    let started = std::time::Instant::now();
    let out = vigil(&["hash", gif.to_str().unwrap()]);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(took < std::time::Duration::from_secs(10), "took {took:?}");
    // 3 s of animation at the default 1 sample per second, at the GIF's exact size;
    // the first line is the first frame (what partners hash).
    let recs = stdout_json(&out);
    let pts: Vec<u64> = recs.iter().map(|r| r["pts_ms"].as_u64().unwrap()).collect();
    assert_eq!(pts, [0, 1000, 2000], "{recs:?}");
    assert!(recs.iter().all(|r| r["width"] == 161 && r["height"] == 91), "{recs:?}");
    let first = dir.path().join("first.png");
    image::open(&gif).unwrap().to_rgb8().save(&first).unwrap();
    assert_eq!(recs[0]["pdq"], pdq_of(&first));
    assert_ne!(recs[0]["pdq"], recs[1]["pdq"]);
}

#[test]
fn audio_only_input_fails_at_once_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("tone.wav");
    gst_launch(&format!("audiotestsrc num-buffers=200 ! wavenc ! filesink location={}", wav.display()));
    let ogg = dir.path().join("tone.ogg");
    gst_launch(&format!(
        "audiotestsrc num-buffers=200 ! audioconvert ! vorbisenc ! oggmux ! filesink location={}",
        ogg.display()
    ));
    for file in [&wav, &ogg] {
        for cmd in ["hash", "scan"] {
            let started = std::time::Instant::now();
            let out = vigil(&[cmd, file.to_str().unwrap()]);
            let took = started.elapsed();
            // Well under the 30 s a stalled decoder would take, with room for a loaded machine.
            assert!(took < std::time::Duration::from_secs(20), "vigil {cmd} {}: took {took:?}", file.display());
            assert_clean_error(&out, "no video stream in the input (found only: audio/x-raw)");
        }
    }
}
