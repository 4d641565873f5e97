//! Counters of the inference stage.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use std::sync::LazyLock;

pub struct InferMetrics {
    pub runs: IntCounterVec,
    pub errors: IntCounterVec,
    pub seconds: HistogramVec,
}

pub static METRICS: LazyLock<InferMetrics> = LazyLock::new(|| InferMetrics {
    runs: IntCounterVec::new(Opts::new("vigil_infer_runs_total", "Model runs, by model"), &["model"])
        .expect("valid metric"),
    errors: IntCounterVec::new(Opts::new("vigil_infer_errors_total", "Failed model runs, by model"), &["model"])
        .expect("valid metric"),
    seconds: HistogramVec::new(
        HistogramOpts::new("vigil_infer_run_seconds", "Time of one model run, by model")
            .buckets(vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0]),
        &["model"],
    )
    .expect("valid metric"),
});

pub fn register(registry: &Registry) -> prometheus::Result<()> {
    registry.register(Box::new(METRICS.runs.clone()))?;
    registry.register(Box::new(METRICS.errors.clone()))?;
    registry.register(Box::new(METRICS.seconds.clone()))
}
