//! Counters of the sinks. The spool's fill ratio is the loud one: alert on it well
//! before 1.0, when the spool starts refusing alerts.

use prometheus::{Gauge, IntCounter, IntGauge, Registry};
use std::sync::LazyLock;

pub struct SinkMetrics {
    pub spool_fill_ratio: Gauge,
    pub spool_pending: IntGauge,
    pub delivered: IntCounter,
    pub delivery_failed: IntCounter,
}

pub static METRICS: LazyLock<SinkMetrics> = LazyLock::new(|| SinkMetrics {
    spool_fill_ratio: Gauge::new(
        "vigil_sink_spool_fill_ratio",
        "Share of the spool's size limit in use (refuses alerts at 1)",
    )
    .expect("valid metric"),
    spool_pending: IntGauge::new("vigil_sink_spool_pending", "Messages accepted and not yet confirmed by the broker")
        .expect("valid metric"),
    delivered: IntCounter::new("vigil_sink_delivered_total", "Messages the broker confirmed").expect("valid metric"),
    delivery_failed: IntCounter::new(
        "vigil_sink_delivery_failed_total",
        "Messages the broker refused (kept in the spool)",
    )
    .expect("valid metric"),
});

pub fn register(registry: &Registry) -> prometheus::Result<()> {
    let m = &*METRICS;
    registry.register(Box::new(m.spool_fill_ratio.clone()))?;
    registry.register(Box::new(m.spool_pending.clone()))?;
    registry.register(Box::new(m.delivered.clone()))?;
    registry.register(Box::new(m.delivery_failed.clone()))
}

/// Near-full threshold at which the spool logs an error on every append.
pub const SPOOL_ALARM_RATIO: f64 = 0.8;
