//! `vigil hash`: PDQ hash and quality per image or sampled frame, as JSON lines.

use crate::source::Input;
use anyhow::Context;
use std::path::Path;
use std::process::ExitCode;
use vigil_hash::VariantHasher;
use vigil_worker::config::VigilConfig;

#[derive(clap::Args)]
pub struct HashArgs {
    /// Image, video file or URL.
    input: String,
    /// Sampled frames per second for video (default from config).
    #[arg(long)]
    fps: Option<f64>,
    /// Also print the seven rotations and reflections (dihedral hashes).
    #[arg(long)]
    dihedral: bool,
}

pub fn run(config: Option<&Path>, args: HashArgs) -> anyhow::Result<ExitCode> {
    let mut cfg = VigilConfig::load(config)?;
    if let Some(fps) = args.fps {
        cfg.media.sample_fps = fps;
        anyhow::ensure!(cfg.validate().is_empty(), "--fps: {}", cfg.validate().join("; "));
    }
    let mut hasher = VariantHasher::new(&[]);
    let mut sink = vigil_sink::JsonlSink::new(std::io::stdout().lock());
    for frame in Input::open(&args.input, &cfg.media)? {
        let frame = frame?;
        let all = hasher.hash(&frame.rgb, frame.width as usize, frame.height as usize);
        let mut record = serde_json::json!({
            "pts_ms": frame.pts_ms,
            "pdq": all.pdq.hash.to_hex(),
            "quality": all.pdq.quality,
            "width": frame.width,
            "height": frame.height,
        });
        if args.dihedral {
            let variants: serde_json::Map<String, serde_json::Value> =
                all.variants.iter().map(|v| (v.variant.name(), v.hash.to_hex().into())).collect();
            record["dihedral"] = variants.into();
        }
        sink.write(&record).context("writing output")?;
    }
    Ok(ExitCode::SUCCESS)
}
