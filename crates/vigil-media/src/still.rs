//! Still images (PNG, JPEG) as a single frame at time 0, scaled to analysis size.

use crate::{MediaError, SampleConfig};
use std::path::Path;
use vigil_core::{Frame, StreamId};

/// Whether `input` names a still image this module decodes (by extension).
pub fn is_still_image(input: &str) -> bool {
    let lower = input.to_ascii_lowercase();
    [".png", ".jpg", ".jpeg"].iter().any(|ext| lower.ends_with(ext)) && !input.contains("://")
}

pub fn load(path: &Path, stream: StreamId, cfg: &SampleConfig) -> Result<Frame, MediaError> {
    let input = path.display().to_string();
    let reader = image::ImageReader::open(path)
        .map_err(|e| MediaError::Open { input: input.clone(), reason: e.to_string() })?
        .with_guessed_format()
        .map_err(|e| MediaError::Open { input: input.clone(), reason: e.to_string() })?;
    let (w, h) =
        reader.into_dimensions().map_err(|e| MediaError::Decode { input: input.clone(), reason: e.to_string() })?;
    if w > cfg.max_input_px || h > cfg.max_input_px {
        return Err(MediaError::Refused {
            input,
            reason: format!("image is {w}x{h}, the limit is {0}x{0}", cfg.max_input_px),
        });
    }
    let img = image::ImageReader::open(path)
        .and_then(|r| r.with_guessed_format())
        .map_err(|e| MediaError::Open { input: input.clone(), reason: e.to_string() })?
        .decode()
        .map_err(|e| MediaError::Decode { input: input.clone(), reason: e.to_string() })?;
    let (aw, ah) = cfg.analysis_size(w, h);
    let img = if (aw, ah) == (w, h) {
        img.to_rgb8()
    } else {
        image::imageops::resize(&img.to_rgb8(), aw, ah, image::imageops::FilterType::Triangle)
    };
    let (width, height) = img.dimensions();
    Ok(Frame { stream, pts_ms: 0, keyframe: true, width, height, rgb: img.into_raw() })
}
