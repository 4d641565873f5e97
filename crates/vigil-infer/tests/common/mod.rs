//! Shared by the model tests: the repository's manifests and the setup cache.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use vigil_core::{Frame, StreamId};
use vigil_infer::InferConfig;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The default configuration, pointed at this checkout's models and cache.
pub fn config() -> InferConfig {
    InferConfig {
        cache_dir: std::env::var_os("VIGIL_CACHE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root().join(".cache/vigil")),
        models_dir: root().join("models"),
        ..Default::default()
    }
}

/// An image file as one frame of stream `stream`.
pub fn image_frame(path: &Path, stream: &str) -> Frame {
    let img = image::open(path).unwrap_or_else(|e| panic!("{}: {e} (run make setup)", path.display())).to_rgb8();
    let (width, height) = img.dimensions();
    Frame {
        stream: StreamId(stream.into()),
        pts_ms: 0,
        keyframe: true,
        width,
        height,
        rgb: img.into_raw(),
        arrived_unix_ms: 0,
    }
}
