//! `vigil hash`: PDQ hash and quality per image or sampled frame, as JSON lines.

use crate::config::VigilConfig;
use crate::source::Input;
use anyhow::Context;
use std::path::Path;
use std::process::ExitCode;
use vigil_hash::PdqHasher;

#[derive(clap::Args)]
pub struct HashArgs {
    /// Image, video file or URL.
    input: String,
    /// Sampled frames per second for video (default from config).
    #[arg(long)]
    fps: Option<f64>,
}

pub fn run(config: Option<&Path>, args: HashArgs) -> anyhow::Result<ExitCode> {
    let mut cfg = VigilConfig::load(config)?;
    if let Some(fps) = args.fps {
        cfg.media.sample_fps = fps;
        anyhow::ensure!(cfg.validate().is_empty(), "--fps: {}", cfg.validate().join("; "));
    }
    let mut hasher = PdqHasher::new();
    let mut sink = vigil_sink::JsonlSink::new(std::io::stdout().lock());
    for frame in Input::open(&args.input, &cfg.media)? {
        let frame = frame?;
        let out = hasher.hash_rgb(&frame.rgb, frame.width as usize, frame.height as usize);
        sink.write(&serde_json::json!({
            "pts_ms": frame.pts_ms,
            "pdq": out.hash.to_hex(),
            "quality": out.quality,
            "width": frame.width,
            "height": frame.height,
        }))
        .context("writing output")?;
    }
    Ok(ExitCode::SUCCESS)
}
