//! The live worker (`vigil run`) against real peers on 127.0.0.1: GStreamer publishers
//! pushing RTMP into the built-in server, nginx-rtmp as an origin to pull from, decode
//! children crashed and frozen on purpose, and malformed inputs. The worker must keep
//! serving every other stream through all of it.

mod common;

use common::nginx::{Nginx, publish};
use common::worker::*;
use common::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::time::Duration;

fn pts_of(records: &[Value], stream: &str) -> Vec<u64> {
    records
        .iter()
        .filter(|r| r["type"] == "frame" && r["stream"] == stream && r["pdq"].is_object())
        .map(|r| r["pts_ms"].as_u64().unwrap())
        .collect()
}

fn gaps<'a>(records: &'a [Value], stream: &str) -> Vec<&'a Value> {
    records
        .iter()
        .filter(|r| r["type"] == "frame" && r["stream"] == stream && r["pdq"].is_null())
        .filter(|r| r["unscanned"].as_array().is_some_and(|u| u.iter().any(|x| x["stage"] == "decode")))
        .collect()
}

/// Completes an RTMP handshake by hand, then sends `garbage`; returns whether the server
/// closed the connection.
fn handshake_then(addr: &str, garbage: &[u8]) -> bool {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut c0c1 = vec![3u8];
    c0c1.extend((0..1536u32).map(|i| if (4..8).contains(&i) { 0 } else { (i * 7) as u8 }));
    s.write_all(&c0c1).unwrap();
    let mut s0s1s2 = vec![0u8; 1 + 1536 + 1536];
    s.read_exact(&mut s0s1s2).unwrap();
    s.write_all(&s0s1s2[1..1537]).unwrap(); // C2 echoes S1
    let _ = s.write_all(garbage);
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return true,
            Ok(_) => continue, // the server's own greeting (window size, chunk size)
        }
    }
}

#[test]
fn a_pushed_stream_is_sampled_at_keyframes_wrong_keys_and_garbage_are_refused_and_a_disconnect_ends_it() {
    let w = Worker::start(
        "[media]\nsampling = \"keyframes\"\nsample_fps = 4.0\n\
         [ingest.rtmp]\nlisten = \"127.0.0.1:0\"\n[ingest.rtmp.stream_keys]\nalice = \"alice-key-123\"\n",
        &[],
        &[],
    );
    let addr = w.rtmp.clone().unwrap();
    // A command message claiming 16 MiB: the guard refuses it before the library sees it.
    let huge_command = [0x03, 0, 0, 0, 0xff, 0xff, 0xff, 20, 0, 0, 0, 0];
    assert!(handshake_then(&addr, &huge_command), "the server closes a connection that sends garbage");
    assert!(handshake_then(&addr, &[0x42; 64]), "a chunk stream that never started");

    let mut wrong = publish(&format!("rtmp://{addr}/live/not-the-key"), 2, "ball");
    assert!(!wrong.wait().unwrap().success(), "a publish with an unknown key is refused");
    let mut alice = publish(&format!("rtmp://{addr}/live/alice-key-123"), 5, "ball");
    assert!(alice.wait().unwrap().success(), "the publisher ran to its end");

    let stream = "rtmp/live/alice";
    let records = w.wait_for("the publish to end", 60, |r| ended(r, stream).is_some());
    let pts = pts_of(&records, stream);
    // Keyframes only (one per second here), although 4 fps would be allowed.
    assert!((4..=6).contains(&pts.len()), "one frame per 1 s GOP over 5 s: {pts:?}");
    assert!(pts.windows(2).all(|p| p[1] - p[0] >= 900), "frames are a GOP apart: {pts:?}");
    assert_eq!(ended(&records, stream).unwrap()["reason"], Value::Null, "a clean end");
    assert!(records.iter().any(|r| r["stream"] == stream && r["event"] == "decoding"));
    assert!(!records.iter().any(|r| r["stream"].as_str().is_some_and(|s| s.contains("not-the-key"))));
    assert_eq!(w.metric("vigil_media_errors_total", "kind=\"rtmp_key\""), 1.0);
    assert!(w.metric("vigil_media_errors_total", "kind=\"rtmp\"") >= 3.0, "garbage x2 and the wrong key");

    let (status, body) = w.http("GET", "/readyz");
    assert_eq!(status, 200, "{body}");
    let (status, records) = w.stop();
    assert!(status.success(), "graceful stop: {status:?}");
    assert_eq!(records.last().unwrap()["event"], "stopped");
}

#[test]
fn a_pulled_stream_reconnects_when_the_origin_publisher_comes_back() {
    let nginx = Nginx::start();
    let url = format!("rtmp://127.0.0.1:{}/live/cam", nginx.rtmp);
    // Long publishers, stopped by the test: a slow worker start must not outlast them.
    let mut first = publish(&url, 120, "ball");
    std::thread::sleep(Duration::from_secs(1));
    let w = Worker::start(
        &format!(
            "[media]\nsampling = \"fixed\"\nsample_fps = 2.0\nstall_timeout_secs = 3\n\
             [media.isolation]\nrestart_backoff_ms = 200\nrestart_backoff_max_ms = 1000\n\
             [[ingest.pull]]\nname = \"cam\"\nuri = \"{url}\"\n"
        ),
        &[],
        &[],
    );
    w.wait_for("frames from the origin", 60, |r| pts_of(r, "cam").len() >= 2);
    let _ = first.kill();
    let _ = first.wait();
    let before = w.wait_for("the gap when the publisher left", 60, |r| !gaps(r, "cam").is_empty());
    let frames_before = pts_of(&before, "cam").len();
    let mut second = publish(&url, 120, "smpte");
    let after = w.wait_for("frames after the reconnect", 60, |r| pts_of(r, "cam").len() >= frames_before + 3);
    let _ = second.kill();
    let _ = second.wait();
    assert!(ended(&after, "cam").is_none(), "a live source that comes back is not ended");
    assert!(w.metric("vigil_media_decoder_restarts_total", "") >= 1.0);
    let (status, _) = w.stop();
    assert!(status.success());
}

#[test]
fn a_crashed_or_frozen_decoder_is_restarted_and_the_other_streams_keep_going() {
    let dir = tempfile::tempdir().unwrap();
    let a = test_pattern_clip(dir.path(), "a.mp4", 20, "mp4mux");
    let b = test_pattern_clip(dir.path(), "b.mp4", 20, "mp4mux");
    let c = test_pattern_clip(dir.path(), "c.mp4", 20, "mp4mux");
    let pull = |name: &str, p: &std::path::Path| {
        format!("[[ingest.pull]]\nname = \"{name}\"\nuri = \"file://{}\"\n", p.display())
    };
    let w = Worker::start(
        &format!(
            "[media]\nsampling = \"fixed\"\nsample_fps = 2.0\n[media.isolation]\nwatchdog_secs = 2\nrestart_backoff_ms = 200\n{}{}{}",
            pull("crash", &a),
            pull("freeze", &b),
            pull("bystander", &c)
        ),
        &[],
        &[],
    );
    w.wait_for("all three decoding", 60, |r| ["crash", "freeze", "bystander"].iter().all(|s| pts_of(r, s).len() >= 2));
    let children = w.decode_children();
    assert_eq!(children.len(), 3, "one decode child per stream: {children:?}");
    for (pid, _) in &children {
        // Confined: seccomp filter, no privilege gain, no core dumps, an address-space limit.
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        assert!(status.contains("Seccomp:\t2") && status.contains("NoNewPrivs:\t1"), "{status}");
        // Started by a root worker: a user namespace of its own, so no capability on the host.
        if status.lines().any(|l| l.starts_with("Uid:\t0\t")) {
            let ns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/user")).unwrap();
            assert_ne!(ns(&pid.to_string()), ns("self"), "a root child shares the host's user namespace");
        }
        let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
        let line = |name: &str| {
            limits.lines().find(|l| l.starts_with(name)).unwrap().split_whitespace().rev().nth(2).unwrap().to_string()
        };
        assert_eq!(line("Max core file size"), "0", "{limits}");
        assert_eq!(line("Max address space"), (2048u64 << 20).to_string(), "{limits}");
    }
    // A child's spec is not on its command line (it comes over the pipe): find the
    // child by the file it has open.
    let pid_of = |f: &std::path::Path| {
        let reads = |pid: u32| {
            std::fs::read_dir(format!("/proc/{pid}/fd"))
                .map(|fds| fds.flatten().any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l == f)))
                .unwrap_or(false)
        };
        children.iter().find(|(pid, _)| reads(*pid)).unwrap().0
    };
    // SIGABRT is how a C decoder dies on a failed assertion or detected corruption.
    signal(pid_of(&a), "ABRT");
    signal(pid_of(&b), "STOP");
    let bystander_before = pts_of(&w.records(), "bystander").len();

    let records = w.wait_for("both restarted and decoding again", 60, |r| {
        let back = |s: &str| {
            let g = r.iter().position(|x| gaps(std::slice::from_ref(x), s).len() == 1);
            g.is_some_and(|g| pts_of(&r[g..], s).len() >= 2)
        };
        back("crash") && back("freeze")
    });
    let crash_gap = &gaps(&records, "crash")[0]["unscanned"][0]["reason"];
    assert!(crash_gap.as_str().unwrap().contains("signal 6"), "{crash_gap}");
    let freeze_gap = &gaps(&records, "freeze")[0]["unscanned"][0]["reason"];
    assert!(freeze_gap.as_str().unwrap().starts_with("hung"), "{freeze_gap}");
    assert!(gaps(&records, "bystander").is_empty(), "the bystander never lost a frame");
    assert!(pts_of(&records, "bystander").len() > bystander_before, "and kept producing");
    // The gap is never clean: fusion saw it as unscanned.
    assert_eq!(gaps(&records, "crash")[0]["verdict"], "unscanned");
    assert!(w.metric("vigil_media_decoder_restarts_total", "reason=\"crash\"") >= 1.0);
    assert!(w.metric("vigil_media_decoder_restarts_total", "reason=\"hung\"") >= 1.0);
    let (_, streams) = w.http("GET", "/streams");
    let streams: Value = serde_json::from_str(&streams).unwrap();
    assert_eq!(streams.as_array().unwrap().len(), 3, "{streams}");
    let (status, records) = w.stop();
    assert!(status.success());
    for s in ["crash", "freeze", "bystander"] {
        assert_eq!(ended(&records, s).unwrap()["reason"], "the worker stopped the stream");
    }
}

#[test]
fn malformed_inputs_end_their_own_stream_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let valid = test_pattern_clip(d, "valid.mp4", 3, "mp4mux");
    let flv = test_pattern_clip(d, "full.flv", 4, "flvmux");
    let bytes = std::fs::read(&flv).unwrap();
    let truncated = d.join("truncated.flv");
    std::fs::write(&truncated, &bytes[..bytes.len() * 6 / 10]).unwrap();
    let empty = d.join("empty.mp4");
    std::fs::write(&empty, b"").unwrap();
    let garbage = d.join("garbage.flv");
    let mut junk = b"FLV\x01\x05\0\0\0\x09".to_vec();
    junk.extend((0..200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    std::fs::write(&garbage, junk).unwrap();
    // An H.264 stream that changes resolution half-way (two SPS).
    let part = |name: &str, w: u32, h: u32| {
        let p = d.join(name);
        gst_launch(&format!(
            "videotestsrc num-buffers=60 ! video/x-raw,width={w},height={h},framerate=30/1 \
             ! x264enc speed-preset=ultrafast key-int-max=30 ! video/x-h264,stream-format=byte-stream ! filesink location={}",
            p.display()
        ));
        std::fs::read(p).unwrap()
    };
    let mut switching = part("small.h264", 320, 240);
    switching.extend(part("large.h264", 640, 360));
    let resize = d.join("resize.h264");
    std::fs::write(&resize, switching).unwrap();

    let inputs =
        [("valid", &valid), ("truncated", &truncated), ("empty", &empty), ("garbage", &garbage), ("resize", &resize)];
    let pulls: String = inputs
        .iter()
        .map(|(n, p)| format!("[[ingest.pull]]\nname = \"{n}\"\nuri = \"file://{}\"\n", p.display()))
        .collect();
    let w = Worker::start(
        &format!(
            "[media]\nsampling = \"fixed\"\nsample_fps = 1.0\npace_files = false\n[media.isolation]\nrestart_backoff_ms = 100\n{pulls}"
        ),
        &["--exit-when-idle"],
        &[],
    );
    let records = w.wait_for("every stream to end", 120, |r| inputs.iter().all(|(n, _)| ended(r, n).is_some()));
    assert_eq!(pts_of(&records, "valid").len(), 3, "the valid clip is fully scanned beside the broken ones");
    assert_eq!(ended(&records, "valid").unwrap()["reason"], Value::Null);
    assert!(!pts_of(&records, "truncated").is_empty(), "what was readable was scanned");
    for broken in ["empty", "garbage"] {
        let reason = ended(&records, broken).unwrap()["reason"].clone();
        assert!(reason.as_str().is_some_and(|r| r.contains("giving up")), "{broken}: {reason}");
        assert!(!gaps(&records, broken).is_empty(), "{broken}: its failures were reported as unscanned");
    }
    let resized = pts_of(&records, "resize");
    assert!(resized.len() >= 3, "frames from both resolutions: {resized:?}");
    let (status, _) = w.stop();
    assert!(status.success());
}
