//! `vigil bench decode`: what one stream costs to decode, full decode against
//! keyframe-only, on the same 720p30 input, through the real decode child. CPU time of
//! the children (user + system, from /proc), so a busy machine skews both runs alike;
//! the figure that matters is the ratio.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use vigil_core::StreamId;
use vigil_media::isolate::{ChildSource, Launcher, StreamHandle};
use vigil_media::queue::StreamOutput;
use vigil_media::{SampleConfig, SamplingMode};

#[derive(clap::Args)]
pub struct DecodeBenchArgs {
    /// An H.264 clip (default: a generated 1280x720 30 fps clip, keyframe every 2 s).
    input: Option<PathBuf>,
    /// Length of the generated clip in seconds.
    #[arg(long, default_value_t = 60)]
    secs: u32,
    /// A short smoke run (10 s clip).
    #[arg(long)]
    quick: bool,
}

/// CPU seconds of this process's finished children (utime + stime, fields 16 and 17).
fn children_cpu_secs() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = rustix::param::clock_ticks_per_second() as f64;
    let field = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    Ok((field(13) + field(14)) / ticks)
}

fn generate(dir: &std::path::Path, secs: u32) -> anyhow::Result<PathBuf> {
    let path = dir.join("bench-720p30.mp4");
    let pipeline = format!(
        "videotestsrc num-buffers={} pattern=ball ! video/x-raw,width=1280,height=720,framerate=30/1 \
         ! x264enc speed-preset=veryfast key-int-max=60 bitrate=2500 ! h264parse ! mp4mux ! filesink location={}",
        secs * 30,
        path.display()
    );
    let ok =
        std::process::Command::new("gst-launch-1.0").arg("-q").args(pipeline.split_whitespace()).status()?.success();
    anyhow::ensure!(ok, "gst-launch-1.0 could not make the bench clip");
    Ok(path)
}

/// Decodes the whole clip in one child; returns (frames handed over, child CPU seconds).
fn decode_once(uri: &str, mode: SamplingMode) -> anyhow::Result<(u64, f64)> {
    let media = SampleConfig { sampling: mode, sample_fps: 1.0, pace_files: false, ..Default::default() };
    let before = children_cpu_secs()?;
    let handle = StreamHandle::start(
        StreamId("bench".into()),
        ChildSource::Uri(uri.to_string()),
        media,
        Launcher::current_exe()?,
    );
    let mut frames = 0;
    loop {
        match handle.queue.pop(Duration::from_secs(1)) {
            Some(StreamOutput::Frame(_)) => frames += 1,
            Some(StreamOutput::Ended { reason: Some(r) }) => anyhow::bail!("decode failed: {r}"),
            Some(StreamOutput::Ended { reason: None }) => break,
            Some(StreamOutput::Gap { reason }) => anyhow::bail!("decoder restarted: {reason}"),
            _ => {}
        }
    }
    drop(handle);
    Ok((frames, children_cpu_secs()? - before))
}

pub fn run(args: DecodeBenchArgs) -> anyhow::Result<ExitCode> {
    let dir = tempfile::tempdir()?;
    let secs = if args.quick { 10 } else { args.secs };
    let input = match args.input {
        Some(p) => p,
        None => generate(dir.path(), secs)?,
    };
    let uri = vigil_media::to_uri(&input.to_string_lossy())?;
    println!("decode cost per stream, {} ({secs} s of video when generated)", input.display());
    println!("{:<28} {:>8} {:>10} {:>16} {:>8}", "mode", "frames", "cpu s", "streams per core", "ratio");
    let mut baseline = None;
    for (label, mode) in [("full decode (1 fps kept)", SamplingMode::Fixed), ("keyframe-only", SamplingMode::Keyframes)]
    {
        let (frames, cpu) = decode_once(&uri, mode)?;
        let base = *baseline.get_or_insert(cpu);
        println!(
            "{label:<28} {frames:>8} {cpu:>10.2} {:>16.1} {:>7.1}x",
            secs as f64 / cpu.max(1e-9),
            base / cpu.max(1e-9)
        );
    }
    println!(
        "ratio: CPU of full decode / CPU of the mode (higher is cheaper); includes process start and GStreamer init"
    );
    Ok(ExitCode::SUCCESS)
}
