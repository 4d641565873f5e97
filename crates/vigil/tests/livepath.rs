//! The live path can't be dodged: a publisher who reconnects is cut again (incident and
//! command ids are per session), the worker cuts a publisher connected straight to it,
//! a video message larger than one pipe message still reaches the decoder, and a
//! stream whose analysis ends closes its publisher's connection.

mod common;

use common::nginx::publish_astronaut;
use common::worker::*;
use common::*;
use serde_json::Value;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Waits for `child` to exit; returns its run time, or fails after `secs`.
fn exits_within(child: &mut Child, secs: u64) -> (Duration, bool) {
    let started = Instant::now();
    let mut status = None;
    wait_until("the publisher to be disconnected", secs, || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    (started.elapsed(), status.is_some_and(|s| s.success()))
}

fn of_type<'a>(records: &'a [Value], kind: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| r["type"] == kind).collect()
}

#[test]
fn a_publisher_who_reconnects_with_the_same_key_is_cut_again() {
    let dir = tempfile::tempdir().unwrap();
    let bank = dir.path().join("bank.txt");
    std::fs::write(&bank, format!("{}\n", pdq_of(&astronaut()))).unwrap();
    let w = Worker::start(
        &format!(
            "[media]\nsampling = \"keyframes\"\n\
             [[hash.banks]]\nname = \"known\"\npath = \"{}\"\naction = \"interrupt\"\n\
             [ingest.rtmp]\nlisten = \"127.0.0.1:0\"\n[ingest.rtmp.stream_keys]\nalice = \"alice-key-123\"\n",
            bank.display()
        ),
        &[],
        &[],
    );
    let url = format!("rtmp://{}/live/alice-key-123", w.rtmp.clone().unwrap());
    let stream = "rtmp/live/alice";
    let cut = |session: usize| {
        w.wait_for("the cut", 40, |r| {
            r.iter().filter(|x| x["type"] == "stream" && x["stream"] == stream && x["event"] == "cut").count()
                >= session
        });
    };
    // 60 s of material: only the worker's cut can end it early. The second publisher
    // starts the moment the first is cut, as a publisher dodging the cut would, while the
    // first session is still winding down: it waits for that, and is then a new session.
    let mut first = publish_astronaut(&url, 60);
    cut(1);
    let mut second = publish_astronaut(&url, 60);
    for (session, publisher) in [(1, &mut first), (2, &mut second)] {
        cut(session);
        let (ran, clean) = exits_within(publisher, 15);
        assert!(!clean, "session {session}: the publisher's connection was closed under it (ran {ran:?})");
    }
    let records = w.wait_for("both sessions to end", 30, |r| {
        r.iter().filter(|x| x["type"] == "stream" && x["stream"] == stream && x["event"] == "ended").count() >= 2
    });
    let cuts: Vec<_> =
        records.iter().filter(|r| r["type"] == "stream" && r["stream"] == stream && r["event"] == "cut").collect();
    assert_eq!(cuts.len(), 2, "one cut per session: {cuts:?}");
    let refused = w.stderr().matches("already live").count();
    assert_eq!(refused, 0, "the reconnecting publisher was admitted, not refused as a second publisher");
    let (_, records) = w.stop();
    let alerts = of_type(&records, "alert");
    let opened: Vec<&str> =
        alerts.iter().filter(|a| a["event"] == "opened").map(|a| a["alert_id"].as_str().unwrap()).collect();
    assert_eq!(opened.len(), 2, "two incidents: {opened:?}");
    assert_ne!(opened[0], opened[1], "the second session's incident has a new id");
    let sessions: Vec<&str> = alerts.iter().map(|a| a["session_id"].as_str().unwrap()).collect();
    assert!(sessions.iter().any(|s| *s != sessions[0]), "two sessions: {sessions:?}");
    let commands: Vec<&str> =
        of_type(&records, "interrupt").iter().map(|c| c["command_id"].as_str().unwrap()).collect();
    assert_eq!(commands.len(), 2, "{commands:?}");
    assert_ne!(commands[0], commands[1], "a consumer deduplicating by command id acts on both");
    for r in alerts.iter().chain(of_type(&records, "interrupt").iter()) {
        assert!(schema_violations(r).is_empty(), "{:?}", schema_violations(r));
    }
    let cut = records.iter().find(|r| r["event"] == "cut").unwrap();
    assert_eq!(cut["detail"], commands[0], "the cut names its command");
    let ended = records.iter().find(|r| r["event"] == "ended" && r["stream"] == stream).unwrap();
    assert!(ended["reason"].as_str().unwrap().contains("cut by the worker"), "{ended}");
}

#[test]
fn video_messages_larger_than_a_pipe_message_reach_the_decoder() {
    let w = Worker::start(
        "[media]\nsampling = \"keyframes\"\n[media.limits]\nmax_bitrate_kbps = 200000\n\
         [ingest.rtmp]\nlisten = \"127.0.0.1:0\"\n[ingest.rtmp.stream_keys]\nbig = \"big-key-12345\"\n",
        &[],
        &[],
    );
    // 4K noise at a fixed quantizer: every frame is a keyframe of about 6.5 MB, over
    // the 4 MiB a single pipe message carries and under ingest's 8 MiB limit.
    let pipeline = format!(
        "videotestsrc is-live=true pattern=snow num-buffers=8 ! video/x-raw,width=3840,height=2160,framerate=1/1 \
         ! x264enc speed-preset=ultrafast pass=quant quantizer=36 key-int-max=1 ! h264parse ! flvmux streamable=true \
         ! rtmp2sink location=rtmp://{}/live/big-key-12345",
        w.rtmp.clone().unwrap()
    );
    let status = Command::new("gst-launch-1.0").arg("-q").args(pipeline.split_whitespace()).status().unwrap();
    assert!(status.success(), "the publisher ran to its end");
    let stream = "rtmp/live/big";
    let records = w.wait_for("the stream to end", 60, |r| ended(r, stream).is_some());
    let frames = stream_frames(&records, stream);
    assert!(frames >= 5, "the large keyframes were decoded: {frames} frames");
    // The publisher's own close may be clean or a reset (rtmp2sink does either at its
    // end); what must not appear is a broken pipe to the decoder or a refusal.
    let reason = ended(&records, stream).unwrap()["reason"].as_str().unwrap_or_default().to_string();
    assert!(!reason.contains("protocol") && !reason.contains("refused"), "{reason}");
    let gaps = records.iter().filter(|r| r["stream"] == stream && r["unscanned"].is_array()).count();
    assert_eq!(gaps, 0, "no unscanned stretch");
}

/// A live H.264 publisher with B-frames (a reorder window of two frames) and a keyframe
/// every 2 s: what OBS and ffmpeg send by default.
fn publish_with_bframes(url: &str, secs: u32) -> Child {
    let pipeline = format!(
        "videotestsrc is-live=true num-buffers={} pattern=ball ! video/x-raw,width=640,height=360,framerate=30/1 \
         ! x264enc speed-preset=ultrafast bframes=2 b-adapt=false key-int-max=60 ! h264parse ! flvmux streamable=true \
         ! rtmp2sink location={url}",
        secs * 30
    );
    gst_spawn(&pipeline, Stdio::null())
}

fn ages(records: &[Value], stream: &str) -> Vec<u64> {
    records
        .iter()
        .filter(|r| r["type"] == "frame" && r["stream"] == stream && r["pdq"].is_object())
        .filter_map(|r| r["age_ms"].as_u64())
        .collect()
}

#[test]
fn pushed_and_pulled_samples_are_analysed_without_standing_lag() {
    let nginx = common::nginx::Nginx::start();
    let origin = format!("rtmp://127.0.0.1:{}/live/cam", nginx.rtmp);
    // Long publishers, stopped once the samples are in: a slow worker start must not
    // outlast them.
    let mut origin_publisher = publish_with_bframes(&origin, 120);
    std::thread::sleep(Duration::from_secs(1));
    let w = Worker::start(
        &format!(
            "[media]\nsampling = \"keyframes\"\n\
             [ingest.rtmp]\nlisten = \"127.0.0.1:0\"\n[ingest.rtmp.stream_keys]\nalice = \"alice-key-123\"\n\
             [[ingest.pull]]\nname = \"cam\"\nuri = \"{origin}\"\n"
        ),
        &[],
        &[],
    );
    let mut pusher = publish_with_bframes(&format!("rtmp://{}/live/alice-key-123", w.rtmp.clone().unwrap()), 120);
    let pushed = "rtmp/live/alice";
    let records =
        w.wait_for("four samples of each stream", 60, |r| ages(r, pushed).len() >= 4 && ages(r, "cam").len() >= 4);
    // Keyframes are 2 s apart: a decoder holding two of them back (its reorder window)
    // would make every sample 4 s old. The bound is generous for a loaded machine; the
    // measured figures belong to the benchmark.
    for stream in [pushed, "cam"] {
        let a = ages(&records, stream);
        assert!(a.iter().all(|&ms| ms < 2000), "{stream}: sample ages {a:?} ms");
    }
    assert!(w.metric("vigil_sample_age_seconds_count", "ingest=\"rtmp\"") >= 4.0);
    assert!(w.metric("vigil_sample_age_seconds_count", "ingest=\"pull\"") >= 4.0);
    // Coverage: every sample the decoders handed over was analysed in full.
    let (_, body) = w.http("GET", "/streams");
    let streams: Value = serde_json::from_str(&body).unwrap();
    for s in streams.as_array().unwrap() {
        assert!(s["samples_due"].as_u64().unwrap() >= 4, "{s}");
        assert!(s["coverage"].as_f64().unwrap() >= 0.95, "{s}");
    }
    assert!(w.metric("vigil_samples_analysed_total", "") >= 8.0);
    for p in [&mut pusher, &mut origin_publisher] {
        let _ = p.kill();
        let _ = p.wait();
    }
}

#[test]
fn a_stream_whose_analysis_ends_closes_its_publisher() {
    // Over the size limit: the decode child refuses the video, the stream ends, and
    // the publisher must not go on streaming into a worker that no longer watches.
    let w = Worker::start(
        "[media]\nmax_input_px = 320\n\
         [ingest.rtmp]\nlisten = \"127.0.0.1:0\"\n[ingest.rtmp.stream_keys]\nwide = \"wide-key-12345\"\n",
        &[],
        &[],
    );
    let url = format!("rtmp://{}/live/wide-key-12345", w.rtmp.clone().unwrap());
    let mut publisher = common::nginx::publish(&url, 60, "ball");
    let (ran, clean) = exits_within(&mut publisher, 30);
    assert!(!clean, "the connection was closed under the publisher after {ran:?}");
    let records = w.wait_for("the stream to end", 10, |r| ended(r, "rtmp/live/wide").is_some());
    let reason = ended(&records, "rtmp/live/wide").unwrap()["reason"].to_string();
    assert!(reason.contains("limit"), "{reason}");
}

#[test]
fn a_decode_child_that_cannot_read_its_input_fails_instead_of_ending() {
    use std::io::Write;
    use vigil_media::isolate::protocol::{ChildEvent, FromChild};
    use vigil_media::isolate::{ChildSource, ChildSpec};
    let spec = ChildSpec { source: ChildSource::PushedFlv, media: vigil_media::SampleConfig::default() };
    let mut child = media_child(&spec);
    let stdin = child.stdin.as_mut().unwrap();
    // A message header naming a kind that does not exist, then a length past any limit:
    // broken input, which must never read as the end of the stream.
    stdin.write_all(&[99, 0xff, 0xff, 0xff, 0x7f]).unwrap();
    stdin.flush().unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let started = Instant::now();
    let last = loop {
        match FromChild::read(&mut out, 640) {
            Ok(Some(FromChild::Event(ChildEvent::Heartbeat { .. }))) => continue,
            Ok(Some(FromChild::Event(e))) => break e,
            other => panic!("expected an event, got {other:?}"),
        }
    };
    assert!(
        matches!(&last, ChildEvent::Failed { kind, .. } if *kind == vigil_media::events::ChildFailure::Protocol),
        "a protocol failure, not an end: {last:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn bench_streams_quick_runs_to_a_well_formed_report() {
    // The smoke run of the streams benchmark (real worker, real publishers, a banked
    // injection): it must complete and report every figure; speed is not judged here.
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("report.json");
    let readme = dir.path().join("README.md");
    std::fs::write(&readme, "# x\n<!-- bench-streams:begin -->\nold figures\n<!-- bench-streams:end -->\nafter\n")
        .unwrap();
    let out = vigil(&[
        "bench",
        "streams",
        "--quick",
        "--out",
        out_path.to_str().unwrap(),
        "--readme",
        readme.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("| mode | streams | coverage") && table.contains("| keyframes |"), "{table}");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&out_path).unwrap()).unwrap();
    assert!(report["machine"]["cores"].as_u64().unwrap() >= 1);
    let level = &report["levels"][0];
    assert_eq!((level["mode"].as_str(), level["streams"].as_u64()), (Some("keyframes"), Some(2)));
    let coverage = level["coverage"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&coverage) && level["samples_due"].as_f64().unwrap() > 0.0, "{level}");
    assert!(level["cpu_secs_per_video_sec"].as_f64().unwrap() > 0.0, "{level}");
    assert!(level["pss_mib_per_stream"].as_f64().unwrap() > 0.0, "{level}");
    for half in ["all", "high_motion", "calm_with_face"] {
        assert!(level[half]["frames"].as_u64().unwrap() > 0, "{half}: {level}");
    }
    // CPU by stage: the decode children, hashing, each model, fusion, sink, the rest.
    let stages = level["cpu_by_stage"].as_object().unwrap();
    for stage in ["decode_children", "hash_and_match", "fusion", "sink", "worker_other"] {
        assert!(stages[stage]["cpu_ms_per_sample"].as_f64().is_some(), "{stage}: {level}");
    }
    assert_eq!(stages.keys().filter(|k| k.starts_with("model_")).count(), 3, "one per model: {level}");
    assert!(stages["decode_children"]["cpu_ms_per_sample"].as_f64().unwrap() > 0.0, "{level}");
    // Latency for push and for pull.
    let latencies = report["latency"].as_array().unwrap();
    assert_eq!(latencies.len(), 2, "push and pull: {latencies:?}");
    for half in ["high_motion", "calm_with_face"] {
        assert!(level[half]["coverage"].as_f64().is_some_and(|c| (0.0..=1.0).contains(&c)), "{half}: {level}");
        // Each half's own CPU: its decode children measured per stream, the rest attributed.
        let cpu = &level[half]["cpu"];
        for part in ["decode_children", "models", "hash_fusion_sink", "worker_other"] {
            assert!(cpu[part].as_f64().is_some_and(|v| v >= 0.0), "{half} {part}: {level}");
        }
        assert!(cpu["decode_children"].as_f64().unwrap() > 0.0, "{half}: {level}");
        assert!(cpu["cpu_secs_per_video_sec"].as_f64().unwrap() > 0.0, "{half}: {level}");
        assert!(cpu["samples_analysed"].as_f64().unwrap() >= cpu["model_runs"].as_f64().unwrap(), "{half}: {level}");
    }
    assert!(table.contains("Each half of the mix"), "{table}");
    for latency in latencies {
        assert!(latency["measured_to"].as_str().unwrap().contains("broker"), "{latency}");
        assert_eq!(latency["injections"], 2);
        assert_eq!(latency["interrupted"].as_u64().unwrap() + latency["missed"].as_u64().unwrap(), 2, "{latency}");
        assert!(latency["interrupted"].as_u64().unwrap() >= 1, "a banked frame on air is interrupted: {latency}");
    }
    // The Python baselines ran in the same run, and the ratios were taken.
    let baselines = report["baselines"].as_array().unwrap();
    let works: Vec<&str> = baselines.iter().map(|b| b["work"].as_str().unwrap()).collect();
    assert_eq!(works, ["nudenet", "equal"]);
    for b in baselines {
        assert!(b["cpu_secs_per_video_sec"].as_f64().unwrap() > 0.0 && b["coverage"].as_f64().is_some(), "{b}");
    }
    let ratios = report["ratios"].as_array().unwrap();
    assert_eq!(ratios.len(), 2, "{ratios:?}");
    // The markdown, the plot, and the README section regenerated from this run.
    let md = std::fs::read_to_string(out_path.with_extension("md")).unwrap();
    assert!(md.contains("| mode | streams | coverage") && md.contains("Python baseline"), "{md}");
    let png = std::fs::read(out_path.with_extension("png")).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG plot");
    let readme = std::fs::read_to_string(&readme).unwrap();
    assert!(
        readme.contains(&md)
            && !readme.contains("old figures")
            && readme.ends_with("<!-- bench-streams:end -->\nafter\n")
    );
    // (The ratio itself needs a held level, which is speed: not judged here.)
    assert!(ratios.iter().all(|r| r["baseline_streams_per_core"].as_f64().is_some_and(|x| x > 0.0)), "{ratios:?}");
}
