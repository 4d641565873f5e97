//! A mutation corpus against the decode children: a thousand files mutated (with a
//! seeded mutator: bit flips, interesting bytes, truncation, duplicated, deleted and
//! inserted runs) from valid FLV and MP4 clips, each decoded by a real `vigil
//! media-child` under its rlimits. Every child must end on its own in bounded time, with
//! a well-formed pipe (the worker reads it as hostile input) and a stated outcome. Then
//! the worker itself runs a slice of the corpus beside a valid stream, which must be
//! scanned in full while every broken stream ends with a reason.

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
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if started.elapsed() > CHILD_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
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
        (Some(_), Some(ChildEvent::Failed { kind, .. })) if kind == "stalled" => t.stalled += 1,
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
