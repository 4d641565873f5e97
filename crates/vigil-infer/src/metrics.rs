//! Counters of the inference stage.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use std::sync::LazyLock;

pub struct InferMetrics {
    pub batch_frames: prometheus::Histogram,
    pub queue_full: prometheus::IntCounter,
    /// 1 for the execution provider each model's session runs on.
    pub provider: prometheus::IntGaugeVec,
    pub runs: IntCounterVec,
    pub errors: IntCounterVec,
    pub seconds: HistogramVec,
    /// CPU seconds per model: preprocessing, the run and decoding its output.
    pub cpu_seconds: prometheus::CounterVec,
    /// Frames waiting in the batcher's queue.
    pub queue_frames: prometheus::IntGauge,
}

pub static METRICS: LazyLock<InferMetrics> = LazyLock::new(|| {
    InferMetrics {
    batch_frames: prometheus::Histogram::with_opts(
        HistogramOpts::new("vigil_infer_batch_frames", "Frames per batch the batcher ran")
            .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]),
    )
    .expect("valid metric"),
    queue_full: prometheus::IntCounter::new(
        "vigil_infer_queue_full_total",
        "Frames refused because the inference queue was full (marked unscanned)",
    )
    .expect("valid metric"),
    provider: prometheus::IntGaugeVec::new(
        Opts::new("vigil_infer_provider", "Execution provider of each model's session (value 1)"),
        &["model", "provider"],
    )
    .expect("valid metric"),
    runs: IntCounterVec::new(Opts::new("vigil_infer_runs_total", "Model runs, by model"), &["model"])
        .expect("valid metric"),
    errors: IntCounterVec::new(Opts::new("vigil_infer_errors_total", "Failed model runs, by model"), &["model"])
        .expect("valid metric"),
    seconds: HistogramVec::new(
        HistogramOpts::new("vigil_infer_run_seconds", "Time of one model run (one batch), by model and provider")
            .buckets(vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0]),
        &["model", "provider"],
    )
    .expect("valid metric"),
    cpu_seconds: prometheus::CounterVec::new(
        Opts::new(
            "vigil_infer_cpu_seconds_total",
            "CPU seconds per model on the inference threads: preprocessing, the run (intra-op threads of one) and decoding",
        ),
        &["model"],
    )
    .expect("valid metric"),
    queue_frames: prometheus::IntGauge::new(
        "vigil_infer_queue_frames",
        "Frames waiting for inference, all streams together (bounded by infer.queue_frames)",
    )
    .expect("valid metric"),
}
});

pub fn register(registry: &Registry) -> prometheus::Result<()> {
    registry.register(Box::new(METRICS.provider.clone()))?;
    registry.register(Box::new(METRICS.batch_frames.clone()))?;
    registry.register(Box::new(METRICS.queue_full.clone()))?;
    registry.register(Box::new(METRICS.runs.clone()))?;
    registry.register(Box::new(METRICS.errors.clone()))?;
    registry.register(Box::new(METRICS.queue_frames.clone()))?;
    registry.register(Box::new(METRICS.cpu_seconds.clone()))?;
    registry.register(Box::new(METRICS.seconds.clone()))
}
