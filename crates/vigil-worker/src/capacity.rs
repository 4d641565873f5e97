//! How many streams this worker can analyse, and whether it may take one more.
//!
//! Capacity in streams = inference threads × `max_utilization` / (cost per sample ×
//! samples per second per stream). The cost per sample is measured: one frame timed at
//! start, then the inference threads' own busy time per frame; the sample rate per
//! stream is what the running streams actually hand over (the configured rate until
//! there is any). `[infer] capacity_streams` overrides the estimate.
//!
//! A new stream is refused when the worker already holds its capacity, or when analysis
//! fell behind recently (a dropped sample, a full inference queue): before coverage
//! degrades, not after. The same condition makes `/readyz` not ready, so a load
//! balancer sends the next publisher elsewhere.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};
use vigil_infer::BatcherLoad;

/// How long after analysis fell behind new streams stay refused.
const PRESSURE_HOLD: Duration = Duration::from_secs(30);
/// Weight of the newest measurement in the running averages.
const EWMA: f64 = 0.3;

pub static CAPACITY_STREAMS: LazyLock<prometheus::Gauge> = LazyLock::new(|| {
    prometheus::Gauge::new("vigil_capacity_streams", "Streams this worker can analyse (measured, or configured)")
        .expect("valid metric")
});
pub static INFERENCE_UTILIZATION: LazyLock<prometheus::Gauge> = LazyLock::new(|| {
    prometheus::Gauge::new("vigil_inference_utilization_ratio", "Share of the inference threads' time spent on models")
        .expect("valid metric")
});

pub static CAPACITY_HELD: LazyLock<prometheus::Gauge> = LazyLock::new(|| {
    prometheus::Gauge::new("vigil_capacity_streams_held", "Streams this worker analyses now, in the same units")
        .expect("valid metric")
});
pub static CAPACITY_USED: LazyLock<prometheus::Gauge> = LazyLock::new(|| {
    prometheus::Gauge::new(
        "vigil_capacity_used_ratio",
        "Streams held over streams it can hold: the autoscaling signal (not Kafka lag: a stream worker has no backlog)",
    )
    .expect("valid metric")
});

struct Measured {
    at: Instant,
    busy: Duration,
    frames: u64,
    due: u64,
    /// Seconds of model time per sample.
    cost_secs: f64,
    /// Samples per second one stream hands over.
    rate_per_stream: f64,
    utilization: f64,
}

pub struct Capacity {
    load: Arc<BatcherLoad>,
    max_utilization: f64,
    configured: Option<usize>,
    measured: Mutex<Measured>,
    /// Unix ms until which new streams are refused (analysis fell behind); 0 when not.
    pressure_until_ms: AtomicU64,
}

impl Capacity {
    pub fn new(load: Arc<BatcherLoad>, cfg: &vigil_infer::InferConfig, configured_rate: f64) -> Capacity {
        let (busy, frames) = load.totals();
        let capacity = Capacity {
            max_utilization: cfg.max_utilization,
            configured: (cfg.capacity_streams > 0).then_some(cfg.capacity_streams),
            measured: Mutex::new(Measured {
                at: Instant::now(),
                busy,
                frames,
                due: super::streams::SAMPLES_DUE.get(),
                cost_secs: load.start_cost.as_secs_f64().max(0.001),
                rate_per_stream: configured_rate.max(0.01),
                utilization: 0.0,
            }),
            load,
            pressure_until_ms: AtomicU64::new(0),
        };
        CAPACITY_STREAMS.set(capacity.streams() as f64);
        capacity
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Measured> {
        self.measured.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Updates the measurements (call about once a second) with the streams held now.
    pub fn tick(&self, streams_held: usize) {
        let (busy, frames) = self.load.totals();
        let due = super::streams::SAMPLES_DUE.get();
        let mut m = self.lock();
        let wall = m.at.elapsed().as_secs_f64();
        if wall < 0.5 {
            return;
        }
        let (d_busy, d_frames, d_due) = ((busy - m.busy).as_secs_f64(), frames - m.frames, due.saturating_sub(m.due));
        let utilization = d_busy / (wall * self.load.threads.max(1) as f64);
        m.utilization = m.utilization * (1.0 - EWMA) + utilization * EWMA;
        if d_frames > 0 {
            m.cost_secs = m.cost_secs * (1.0 - EWMA) + (d_busy / d_frames as f64) * EWMA;
        }
        if streams_held > 0 && d_due > 0 {
            let rate = d_due as f64 / wall / streams_held as f64;
            m.rate_per_stream = m.rate_per_stream * (1.0 - EWMA) + rate * EWMA;
        }
        (m.at, m.busy, m.frames, m.due) = (Instant::now(), busy, frames, due);
        INFERENCE_UTILIZATION.set(m.utilization);
        drop(m);
        let capacity = self.streams();
        CAPACITY_STREAMS.set(capacity as f64);
        CAPACITY_HELD.set(streams_held as f64);
        CAPACITY_USED.set(streams_held as f64 / capacity.max(1) as f64);
    }

    /// Streams this worker can analyse.
    pub fn streams(&self) -> usize {
        if let Some(n) = self.configured {
            return n;
        }
        let m = self.lock();
        let per_stream = m.cost_secs * m.rate_per_stream;
        ((self.load.threads as f64 * self.max_utilization / per_stream.max(1e-6)).floor() as usize).max(1)
    }

    /// Analysis fell behind (a sample dropped or refused): take no new stream for a while.
    pub fn fell_behind(&self) {
        let until = crate::output::unix_ms() + PRESSURE_HOLD.as_millis() as u64;
        self.pressure_until_ms.fetch_max(until, Relaxed);
    }

    /// Why one more stream cannot be taken now, if it cannot. A worker holding no stream
    /// always takes one: its estimate may be too low, and only real streams refine it.
    pub fn refuse(&self, streams_held: usize) -> Option<String> {
        if streams_held == 0 {
            return None;
        }
        if crate::output::unix_ms() < self.pressure_until_ms.load(Relaxed) {
            return Some("analysis fell behind in the last 30 s".into());
        }
        let capacity = self.streams();
        (streams_held >= capacity).then(|| format!("at capacity: {streams_held} of {capacity} streams"))
    }
}
