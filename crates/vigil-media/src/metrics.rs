//! Counters of the decode + sample stage.

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};
use std::sync::LazyLock;

pub struct MediaMetrics {
    pub frames_sampled: IntCounter,
    pub errors: IntCounterVec,
}

pub static METRICS: LazyLock<MediaMetrics> = LazyLock::new(|| MediaMetrics {
    frames_sampled: IntCounter::new("vigil_media_frames_sampled_total", "Frames handed to analysis")
        .expect("valid metric"),
    errors: IntCounterVec::new(Opts::new("vigil_media_errors_total", "Sources that failed, by kind"), &["kind"])
        .expect("valid metric"),
});

/// Adds this stage's metrics to a registry (the worker's `/metrics`).
pub fn register(registry: &Registry) -> prometheus::Result<()> {
    registry.register(Box::new(METRICS.frames_sampled.clone()))?;
    registry.register(Box::new(METRICS.errors.clone()))
}
