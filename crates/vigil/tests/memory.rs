//! The worker's memory is bounded in bytes, not in counts of things that can each be
//! megabytes: a publisher pushing a high-bitrate stream at a decode child that stopped
//! reading (SIGSTOP: a hung decoder, or one slower than the stream) costs the worker at
//! most the feed's byte budget, and the hung child is then replaced.

mod common;

use common::worker::*;
use serde_json::Value;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// `[media.limits].max_feed_bytes`'s default (the test keeps it).
const FEED_BUDGET: u64 = 32 << 20;
/// What else the worker may allocate while the publisher pushes: the connection's
/// reads, the protocol library's reassembly of a message, allocator slack.
const SLACK: u64 = 64 << 20;
/// How long the decoder stays stopped while the worker's memory is watched (the
/// watchdog, at 30 s, replaces it afterwards). At the 15-25 MB/s this publisher reaches
/// on a busy 2-core machine, a count-bounded feed (512 tags) would hold it all.
const MEASURE: Duration = Duration::from_secs(15);

/// 720p noise at a low fixed quantizer: about 1.8 MB a frame (every frame, keyframe or
/// not: noise cannot be predicted), tens of MB a second over loopback.
fn publish_noise(url: &str, secs: u32) -> Child {
    let pipeline = format!(
        "videotestsrc pattern=snow num-buffers={} ! video/x-raw,width=1280,height=720,framerate=30/1 \
         ! x264enc speed-preset=ultrafast pass=quant quantizer=10 key-int-max=30 ! h264parse \
         ! flvmux streamable=true ! rtmp2sink location={url}",
        secs * 30
    );
    common::gst_spawn(&pipeline, Stdio::null())
}

/// Resident memory of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap();
    kb.trim().trim_end_matches("kB").trim().parse::<u64>().unwrap() * 1024
}

fn frames_of(records: &[Value], stream: &str) -> usize {
    records.iter().filter(|r| r["type"] == "frame" && r["stream"] == stream && r["pdq"].is_object()).count()
}

struct Publisher(Child);

impl Drop for Publisher {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_stalled_decoder_costs_the_worker_at_most_the_feed_budget_and_is_replaced() {
    let w = Worker::start(
        "[media]\nsampling = \"keyframes\"\n\
         [media.limits]\nmax_bitrate_kbps = 2000000\n\
         [media.isolation]\nwatchdog_secs = 30\nrestart_backoff_ms = 200\n\
         [ingest.rtmp]\nlisten = \"127.0.0.1:0\"\n[ingest.rtmp.stream_keys]\nnoise = \"noise-key-123\"\n",
        &[],
        &[],
    );
    let stream = "rtmp/live/noise";
    let _publisher = Publisher(publish_noise(&format!("rtmp://{}/live/noise-key-123", w.rtmp.clone().unwrap()), 90));
    w.wait_for("the noise to be decoded", 60, |r| frames_of(r, stream) >= 2);
    let children = w.decode_children();
    assert_eq!(children.len(), 1, "{children:?}");
    let child = children[0].0;

    let (before, dropped_before) = (rss(w.pid()), w.metric("vigil_media_tags_dropped_total", ""));
    signal(child, "STOP");
    let stopped = Instant::now();
    let mut peak = before;
    while stopped.elapsed() < MEASURE {
        peak = peak.max(rss(w.pid()));
        std::thread::sleep(Duration::from_millis(100));
    }
    let grew = peak.saturating_sub(before);
    let dropped = w.metric("vigil_media_tags_dropped_total", "") - dropped_before;
    let dropped_bytes = w.metric("vigil_media_tag_bytes_dropped_total", "");
    eprintln!(
        "worker RSS {} MiB before, peak {} MiB in {MEASURE:?} with the decoder stopped (grew {} MiB); \
         {dropped} tags ({} MiB) dropped",
        before >> 20,
        peak >> 20,
        grew >> 20,
        dropped_bytes as u64 >> 20
    );
    assert!(
        grew < FEED_BUDGET + SLACK,
        "the worker grew by {} MiB with its decoder stopped, over the {} MiB budget + {} MiB slack",
        grew >> 20,
        FEED_BUDGET >> 20,
        SLACK >> 20
    );
    assert!(dropped > 0.0, "the publisher's tags were dropped, not kept");
    // The bound means something only if the publisher pushed well past it meanwhile.
    assert!(
        dropped_bytes as u64 > FEED_BUDGET + SLACK,
        "only {} MiB dropped: the publisher did not push enough to test the bound",
        dropped_bytes as u64 >> 20
    );

    // The stopped child stops heartbeating: the watchdog kills it (even though the feed
    // writer is stuck in a write to it) and a new child decodes the same publish.
    let records = w.wait_for("the hung decoder to be replaced", 60, |r| {
        let gap = r.iter().position(|x| {
            x["stream"] == stream
                && x["unscanned"]
                    .as_array()
                    .is_some_and(|u| u.iter().any(|g| g["reason"].as_str().is_some_and(|s| s.starts_with("hung"))))
        });
        gap.is_some_and(|g| frames_of(&r[g..], stream) >= 2)
    });
    assert!(frames_of(&records, stream) >= 4);
    assert!(w.metric("vigil_media_decoder_restarts_total", "reason=\"hung\"") >= 1.0);
    let (status, _) = w.stop();
    assert!(status.success());
}
