//! Counters of the decode + sample stage.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use std::sync::LazyLock;

pub struct MediaMetrics {
    pub frames_sampled: IntCounter,
    pub errors: IntCounterVec,
    /// Frames dropped (oldest first) because analysis was behind.
    pub frames_dropped: IntCounter,
    /// Pushed FLV tags dropped because a decode child was behind.
    pub tags_dropped: IntCounter,
    /// Their bytes.
    pub tag_bytes_dropped: IntCounter,
    /// Decode children started again, by reason.
    pub restarts: IntCounterVec,
    pub streams_active: IntGauge,
    /// WHIP offers' ICE candidates dropped, by filter (`offer`: the worker's pass on
    /// the text; `decoder`: the child's, on what GStreamer parsed) and reason.
    pub whip_candidates_dropped: IntCounterVec,
}

fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::new(name, help).expect("valid metric")
}

pub static METRICS: LazyLock<MediaMetrics> = LazyLock::new(|| MediaMetrics {
    frames_sampled: counter("vigil_media_frames_sampled_total", "Frames handed to analysis"),
    errors: IntCounterVec::new(Opts::new("vigil_media_errors_total", "Stream failures, by kind"), &["kind"])
        .expect("valid metric"),
    frames_dropped: counter("vigil_media_frames_dropped_total", "Sampled frames dropped because analysis was behind"),
    tags_dropped: counter("vigil_media_tags_dropped_total", "Pushed FLV tags dropped because a decoder was behind"),
    tag_bytes_dropped: counter(
        "vigil_media_tag_bytes_dropped_total",
        "Bytes of pushed FLV tags dropped because a decoder was behind",
    ),
    restarts: IntCounterVec::new(
        Opts::new("vigil_media_decoder_restarts_total", "Decode child processes restarted, by reason"),
        &["reason"],
    )
    .expect("valid metric"),
    streams_active: IntGauge::new("vigil_media_streams_active", "Streams being decoded").expect("valid metric"),
    whip_candidates_dropped: IntCounterVec::new(
        Opts::new(
            "vigil_media_whip_candidates_dropped_total",
            "ICE candidates of WHIP offers the worker will not contact, by filter and reason",
        ),
        &["filter", "reason"],
    )
    .expect("valid metric"),
});

/// Adds this stage's metrics to a registry (the worker's `/metrics`).
pub fn register(registry: &Registry) -> prometheus::Result<()> {
    let m = &*METRICS;
    // The series alerting reads exist from the start, at zero.
    crate::events::precreate();
    for pass in ["offer", "decoder"] {
        let _ = m.whip_candidates_dropped.with_label_values(&[pass, "private"]);
    }
    registry.register(Box::new(m.frames_sampled.clone()))?;
    registry.register(Box::new(m.errors.clone()))?;
    registry.register(Box::new(m.frames_dropped.clone()))?;
    registry.register(Box::new(m.tags_dropped.clone()))?;
    registry.register(Box::new(m.tag_bytes_dropped.clone()))?;
    registry.register(Box::new(m.restarts.clone()))?;
    registry.register(Box::new(m.whip_candidates_dropped.clone()))?;
    registry.register(Box::new(m.streams_active.clone()))
}
