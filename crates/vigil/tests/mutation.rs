//! A mutation corpus against the decode children: a thousand files mutated (with a
//! seeded mutator: bit flips, interesting bytes, truncation, duplicated, deleted and
//! inserted runs) from valid FLV and MP4 clips, each decoded by a real `vigil
//! media-child` under its rlimits. Every child must end on its own in bounded time, with
//! a well-formed pipe (the worker reads it as hostile input) and a stated outcome. Then
//! the worker itself runs a slice of the corpus beside a valid stream, which must be
//! scanned in full while every broken stream ends with a reason. WHIP offers get the
//! same treatment: mutated real offers through the worker's checks and into a real WHIP
//! child's `webrtcbin`, inside a network namespace of the test's own.

mod common;

use common::worker::{Worker, ended};
use common::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use vigil_core::SeededRng;
use vigil_media::SampleConfig;
use vigil_media::isolate::protocol::{ChildEvent, FromChild};
use vigil_media::isolate::{ChildSource, ChildSpec};

const MUTANTS_PER_SEED: usize = 500;
const CHILD_TIMEOUT: Duration = Duration::from_secs(20);

fn mutate(seed: &[u8], rng: &mut SeededRng) -> Vec<u8> {
    let mut d = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = d.len().max(1);
        match rng.below(6) {
            0 => {
                for _ in 0..1 + rng.below(16) {
                    let i = rng.below(len);
                    if let Some(b) = d.get_mut(i) {
                        *b ^= 1 << rng.below(8);
                    }
                }
            }
            1 => {
                let i = rng.below(len);
                if let Some(b) = d.get_mut(i) {
                    *b = [0x00, 0xff, 0x7f, 0x80, 0x01][rng.below(5)];
                }
            }
            2 => d.truncate(rng.below(len)),
            3 => {
                let (a, n) = (rng.below(len), 1 + rng.below(4096));
                let run: Vec<u8> = d.iter().skip(a).take(n).copied().collect();
                let at = rng.below(len);
                d.splice(at.min(d.len())..at.min(d.len()), run);
            }
            4 => {
                let a = rng.below(len).min(d.len());
                let b = (a + 1 + rng.below(4096)).min(d.len());
                d.drain(a..b);
            }
            _ => {
                let at = rng.below(len).min(d.len());
                let junk: Vec<u8> = (0..1 + rng.below(512)).map(|_| rng.next_u64() as u8).collect();
                d.splice(at..at, junk);
            }
        }
    }
    d
}

#[derive(Debug, Default)]
struct Tally {
    ended: usize,
    failed: usize,
    stalled: usize,
    crashed: usize,
    timed_out: usize,
    frames: u64,
    protocol_errors: Vec<String>,
}

fn child_media() -> SampleConfig {
    let mut m = SampleConfig { sample_fps: 4.0, pace_files: false, ..Default::default() };
    m.sampling = vigil_media::SamplingMode::Fixed;
    m.isolation.memory_mb = 1024;
    // Short, so that a demuxer waiting forever on half-understood input is ended by the
    // child's own stall check quickly.
    m.stall_timeout_secs = 3;
    m
}

/// The child's exit status, or `None` (and the child killed) if it is still running
/// `CHILD_TIMEOUT` after `started`.
fn exit_within_timeout(child: &mut std::process::Child, started: Instant) -> Option<std::process::ExitStatus> {
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        if started.elapsed() > CHILD_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs one decode child on `file` to its end; returns (outcome, frames).
fn run_child(file: &Path, tally: &Mutex<Tally>) {
    let spec = ChildSpec { source: ChildSource::Uri(format!("file://{}", file.display())), media: child_media() };
    let mut child = media_child(&spec);
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut r = std::io::BufReader::new(stdout);
        let (mut frames, mut last_event, mut error) = (0u64, None, None);
        loop {
            match FromChild::read(&mut r, 640) {
                Ok(Some(FromChild::Frame(_))) => frames += 1,
                Ok(Some(FromChild::Event(e))) if !matches!(e, ChildEvent::Heartbeat { .. }) => last_event = Some(e),
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    error = Some(e.to_string());
                    break;
                }
            }
        }
        (frames, last_event, error)
    });
    let status = exit_within_timeout(&mut child, Instant::now());
    let _ = child.stdin.take().map(|mut s| s.flush());
    let (frames, event, error) = reader.join().unwrap();
    let mut t = tally.lock().unwrap();
    t.frames += frames;
    if let Some(e) = error {
        t.protocol_errors.push(format!("{}: {e}", file.display()));
    }
    use std::os::unix::process::ExitStatusExt;
    match (status, event) {
        (None, _) => t.timed_out += 1,
        (Some(s), _) if s.signal().is_some() => t.crashed += 1,
        (Some(_), Some(ChildEvent::Ended)) => t.ended += 1,
        (Some(_), Some(ChildEvent::Failed { kind: vigil_media::events::ChildFailure::Stalled, .. })) => t.stalled += 1,
        (Some(_), Some(ChildEvent::Failed { .. })) => t.failed += 1,
        (Some(s), other) => t.protocol_errors.push(format!("{}: exit {s:?} after {other:?}", file.display())),
    }
}

fn seed_clip(dir: &Path, name: &str, mux: &str) -> PathBuf {
    let path = dir.join(name);
    gst_launch(&format!(
        "videotestsrc num-buffers=20 pattern=ball ! video/x-raw,width=160,height=120,framerate=10/1 \
         ! x264enc speed-preset=ultrafast key-int-max=5 ! h264parse ! {mux} ! filesink location={}",
        path.display()
    ));
    path
}

#[test]
fn a_thousand_mutated_files_each_end_their_own_decoder_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let seeds = [seed_clip(dir.path(), "seed.flv", "flvmux"), seed_clip(dir.path(), "seed.mp4", "mp4mux")];
    let mut rng = SeededRng::new(0x9e37_79b9_7f4a_7c15);
    let mut files = Vec::new();
    for seed in &seeds {
        let bytes = std::fs::read(seed).unwrap();
        let ext = seed.extension().unwrap().to_string_lossy().to_string();
        for i in 0..MUTANTS_PER_SEED {
            let p = dir.path().join(format!("m{i:04}.{ext}"));
            std::fs::write(&p, mutate(&bytes, &mut rng)).unwrap();
            files.push(p);
        }
    }
    let tally = Mutex::new(Tally::default());
    let next = Mutex::new(files.iter());
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                while let Some(f) = {
                    let mut it = next.lock().unwrap();
                    it.next()
                } {
                    run_child(f, &tally);
                }
            });
        }
    });
    let t = tally.into_inner().unwrap();
    eprintln!(
        "{} mutants in {:.0} s: {} ended, {} failed with a reason, {} stalled, {} crashed, {} timed out; {} frames decoded",
        files.len(),
        started.elapsed().as_secs_f64(),
        t.ended,
        t.failed,
        t.stalled,
        t.crashed,
        t.timed_out,
        t.frames
    );
    assert!(t.protocol_errors.is_empty(), "malformed pipes or unexplained exits: {:#?}", t.protocol_errors);
    assert_eq!(t.ended + t.failed + t.stalled + t.crashed + t.timed_out, files.len());
    assert_eq!(t.timed_out, 0, "every child ends on its own (stalled demuxers by their stall check)");
    assert!(t.ended > 0 && t.failed > 0, "the corpus exercises both decodable and broken input: {t:?}");

    // The worker on a slice of the corpus, beside a valid stream.
    let valid = test_pattern_clip(dir.path(), "valid.mp4", 3, "mp4mux");
    let mut pulls = format!("[[ingest.pull]]\nname = \"valid\"\nuri = \"file://{}\"\n", valid.display());
    let slice: Vec<&PathBuf> = files.iter().step_by(files.len() / 24).collect();
    for (i, f) in slice.iter().enumerate() {
        pulls.push_str(&format!("[[ingest.pull]]\nname = \"mutant-{i}\"\nuri = \"file://{}\"\n", f.display()));
    }
    let w = Worker::start(
        &format!(
            "[media]\nsampling = \"fixed\"\nsample_fps = 1.0\npace_files = false\n\
             [media.isolation]\nrestart_backoff_ms = 100\n{pulls}"
        ),
        &["--exit-when-idle"],
        &[],
    );
    let names: Vec<String> = (0..slice.len()).map(|i| format!("mutant-{i}")).chain(["valid".into()]).collect();
    let records = w.wait_for("every stream to end", 300, |r| names.iter().all(|n| ended(r, n).is_some()));
    let valid_frames = records.iter().filter(|r| r["stream"] == "valid" && r["pdq"].is_object()).count();
    assert_eq!(valid_frames, 3, "the valid stream is scanned in full beside the mutants");
    let (status, _) = w.stop();
    assert!(status.success());
}

/// A real publisher's offer (aiortc: H.264 and VP8, RTCP feedback, header extensions),
/// made inside `ns`, plus candidate lines of every kind the filters must handle.
fn seed_offer(ns: &str) -> String {
    const MAKE_OFFER: &str = r#"
import asyncio
from aiortc import RTCPeerConnection, VideoStreamTrack
async def main():
    pc = RTCPeerConnection()
    pc.addTransceiver(VideoStreamTrack(), direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    print(pc.localDescription.sdp, end="")
    await pc.close()
asyncio.run(main())
"#;
    let out = common::netns::command_in(ns, cache_dir().join("venv/bin/python"))
        .args(["-c", MAKE_OFFER])
        .output()
        .expect("python with aiortc (make setup)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut sdp = String::from_utf8(out.stdout).unwrap();
    for candidate in [
        "a=candidate:1 1 udp 2122260223 192.0.2.10 50000 typ host",
        " a=candidate:2 1 udp 2122260223 127.0.0.1 50001 typ host",
        "a=candidate:3 1 udp 2122260223 fe80::1 50002 typ host",
        "a=candidate:4 1 udp 2122260223 vigil-test.local 50003 typ host",
        "a=candidate:5 1 udp 1686052607 198.51.100.7 50004 typ srflx raddr 10.0.0.1 rport 50000",
        "a=candidate:6 1 tcp 1518280447 192.0.2.11 9 typ host tcptype active",
    ] {
        sdp.push_str(candidate);
        sdp.push_str("\r\n");
    }
    sdp
}

/// SDP-aware mutations (whole lines moved, repeated, dropped; numbers pushed to their
/// limits; whitespace where parsers differ), then sometimes the byte mutator on top.
fn mutate_offer(seed: &str, rng: &mut SeededRng) -> Vec<u8> {
    let mut lines: Vec<String> = seed.split("\r\n").map(str::to_string).collect();
    for _ in 0..1 + rng.below(3) {
        let len = lines.len().max(1);
        let i = rng.below(len).min(lines.len().saturating_sub(1));
        match rng.below(7) {
            0 => {
                let l = lines[i].clone();
                lines.insert(rng.below(len), l);
            }
            1 => {
                lines.remove(i);
            }
            2 => {
                let j = rng.below(len).min(lines.len() - 1);
                lines.swap(i, j);
            }
            3 => {
                // A number in the line becomes an extreme one.
                let extreme = ["0", "-1", "65536", "4294967296", "18446744073709551616", "999999999999"][rng.below(6)];
                let l = &lines[i];
                if let Some(pos) = l.find(|c: char| c.is_ascii_digit()) {
                    let end = l[pos..].find(|c: char| !c.is_ascii_digit()).map_or(l.len(), |e| pos + e);
                    lines[i] = format!("{}{extreme}{}", &l[..pos], &l[end..]);
                }
            }
            4 => lines[i] = format!("{}{}", [" ", "\t", "  "][rng.below(3)], lines[i]),
            5 => {
                let filler = "x".repeat(1 + rng.below(4000));
                lines[i].push_str(&filler);
            }
            _ => lines.insert(
                i,
                [
                    "m=video 9 UDP/TLS/RTP/SAVPF 96",
                    "a=rtpmap:96 H264/90000",
                    "a=setup:actpass",
                    "a=fingerprint:sha-256 00",
                    "c=IN IP6 ::",
                ][rng.below(5)]
                .to_string(),
            ),
        }
    }
    let text = lines.join("\r\n");
    if rng.below(3) == 0 { mutate(text.as_bytes(), rng) } else { text.into_bytes() }
}

#[derive(Default, Debug)]
struct OfferTally {
    refused_by_worker: usize,
    answered: usize,
    failed: usize,
    crashed: Vec<String>,
    timed_out: Vec<String>,
    protocol_errors: Vec<String>,
    slowest: Duration,
}

/// One offer as the worker handles it: its shape checks, then (if it passes) a real
/// WHIP decode child that must answer or fail, and end when its stdin closes.
fn run_offer(ns: &str, offer: Vec<u8>, tally: &Mutex<OfferTally>) {
    let checked = match vigil_media::ingest::whip::check_offer(&offer, false) {
        Ok(c) => c.sdp,
        Err(_) => {
            tally.lock().unwrap().refused_by_worker += 1;
            return;
        }
    };
    let spec =
        ChildSpec { source: ChildSource::Whip { stun_server: None, private_candidates: false }, media: child_media() };
    let label = checked.lines().take(3).collect::<Vec<_>>().join(" | ");
    let started = Instant::now();
    let outcome = common::netns::within(ns, move || {
        let mut child = media_child(&spec);
        let mut stdin = child.stdin.take().unwrap();
        vigil_media::isolate::protocol::ToChild::Offer(checked).write(&mut stdin).unwrap();
        stdin.flush().unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut r = std::io::BufReader::new(stdout);
            loop {
                match FromChild::read(&mut r, 640) {
                    Ok(Some(FromChild::Event(ChildEvent::Answer { .. }))) => return Ok(Some(true)),
                    Ok(Some(FromChild::Event(ChildEvent::Failed { .. }))) => return Ok(Some(false)),
                    Ok(Some(_)) => {}
                    Ok(None) => return Ok(None),
                    Err(e) => return Err(e.to_string()),
                }
            }
        });
        let started = Instant::now();
        // The answer (or the failure) first, then the end once its input closes.
        while !reader.is_finished() && started.elapsed() < CHILD_TIMEOUT {
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(stdin);
        let status = exit_within_timeout(&mut child, started);
        let event = if reader.is_finished() { reader.join().unwrap() } else { Ok(None) };
        (status, event)
    });
    use std::os::unix::process::ExitStatusExt;
    let mut t = tally.lock().unwrap();
    t.slowest = t.slowest.max(started.elapsed());
    match outcome {
        (None, _) => t.timed_out.push(label),
        (Some(s), _) if s.signal().is_some_and(|sig| sig != 9) => t.crashed.push(format!("{label}: {s:?}")),
        (_, Err(e)) => t.protocol_errors.push(format!("{label}: {e}")),
        (_, Ok(Some(true))) => t.answered += 1,
        (_, Ok(_)) => t.failed += 1,
    }
}

#[test]
fn mutated_whip_offers_are_refused_or_answered_and_never_take_a_child_down() {
    const OFFERS: usize = 200;
    // The test's own namespace: a veth pair with private addresses and no way out, so
    // ICE can gather (and finish), and whatever a mutated candidate names is unreachable.
    let ns = common::netns::Netns::create();
    let seed = seed_offer(&ns.name);
    assert!(seed.contains("m=video") && seed.contains("a=rtpmap"), "{seed}");
    let mut rng = SeededRng::new(0x5d9_0ffe);
    let mut offers: Vec<Vec<u8>> = vec![seed.clone().into_bytes()];
    offers.extend((1..OFFERS).map(|_| mutate_offer(&seed, &mut rng)));
    let tally = Mutex::new(OfferTally::default());
    let started = Instant::now();
    std::thread::scope(|s| {
        for part in offers.chunks(OFFERS.div_ceil(2)) {
            let (ns, tally) = (&ns.name, &tally);
            s.spawn(move || part.iter().for_each(|o| run_offer(ns, o.clone(), tally)));
        }
    });
    let t = tally.into_inner().unwrap();
    eprintln!("{OFFERS} WHIP offers in {:?}: {t:?}", started.elapsed());
    assert!(t.crashed.is_empty(), "a child crashed: {:?}", t.crashed);
    assert!(t.timed_out.is_empty(), "a child neither answered nor ended: {:?}", t.timed_out);
    assert!(t.protocol_errors.is_empty(), "{:?}", t.protocol_errors);
    assert_eq!(t.refused_by_worker + t.answered + t.failed, OFFERS);
    // The corpus reaches the C parser, not only the worker's checks: the unmutated seed
    // at least is answered, and some mutants get through to webrtcbin.
    assert!(t.answered >= 1 && t.answered + t.failed >= OFFERS / 4, "{t:?}");
}
