//! Decode and sample: video in, analysis frames out.
//!
//! - [`decode`]: files and pulled URLs through GStreamer's `uridecodebin`, sampled at a
//!   fixed rate and scaled to analysis size before frames leave the pipeline.
//! - [`still`]: single images (PNG, JPEG) as one frame.
//! - [`isolate`]: live streams decode in confined child processes, supervised.
//! - [`sampling`]: fixed, keyframe-only and adaptive sampling (gates around the decoder).
//! - [`queue`]: the drop-oldest hand-over from a stream to analysis.
//! - [`ingest`]: the RTMP publish server and its stream keys.
//! - [`flv`]: FLV tags for pushed RTMP streams.
#![forbid(unsafe_code)]

pub mod config;
pub mod decode;
mod error;
pub mod events;
pub mod flv;
pub mod ingest;
pub mod isolate;
pub mod launch;
pub mod metrics;
pub mod queue;
pub mod sampling;
pub mod still;

pub use config::{IsolationConfig, LimitsConfig, MAX_QUEUE_BYTES, SampleConfig};
pub use decode::{FrameSource, open_uri};
pub use error::MediaError;
pub use sampling::SamplingMode;

/// Turns a path or URL given on a command line into a URI GStreamer understands.
pub fn to_uri(input: &str) -> Result<String, MediaError> {
    if input.contains("://") {
        return Ok(input.to_string());
    }
    let path = std::path::Path::new(input);
    let abs = std::fs::canonicalize(path)
        .map_err(|e| MediaError::Open { input: input.to_string(), reason: e.to_string() })?;
    gstreamer::glib::filename_to_uri(&abs, None)
        .map(|u| u.to_string())
        .map_err(|e| MediaError::Open { input: input.to_string(), reason: e.to_string() })
}
