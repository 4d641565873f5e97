//! Counters of the sinks. The spool's fill ratio is the loud one: alert on it well
//! before 0.9, when the spool starts refusing alerts (interrupt commands may still use
//! the last 10%).

use prometheus::{Gauge, IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use std::sync::LazyLock;

pub struct SinkMetrics {
    pub spool_fill_ratio: Gauge,
    pub spool_pending: IntGauge,
    pub delivered: IntCounter,
    pub delivery_failed: IntCounter,
    /// Messages the Kafka sink did not accept, by `kind` (alert, interrupt) and `reason`
    /// (full, io, failed, too_large, serialise, client).
    pub refused: IntCounterVec,
    pub retried: IntCounter,
    pub producer_fatal: IntCounter,
    pub producer_recreated: IntCounter,
    pub spool_set_aside: IntCounter,
    pub output_failed: IntCounter,
    /// From a message's acceptance (spooled) to the broker's confirmation, by `kind`.
    pub delivery_seconds: prometheus::HistogramVec,
    /// CPU seconds the worker's sink thread spends writing and handing to Kafka.
    pub cpu_seconds: prometheus::Counter,
    /// How long the oldest message accepted and not yet confirmed has waited.
    pub oldest_pending_seconds: Gauge,
    /// Messages offered again by a producer re-creation (each may arrive twice).
    pub reoffered: IntCounter,
    /// Producers re-created because messages waited while the broker confirmed nothing.
    pub stall_recreations: IntCounter,
    /// Times the disk space reserved for interrupt commands was given back for one.
    pub spool_reserve_released: IntCounter,
}

fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::new(name, help).expect("valid metric")
}

pub static METRICS: LazyLock<SinkMetrics> = LazyLock::new(|| SinkMetrics {
    spool_fill_ratio: Gauge::new(
        "vigil_sink_spool_fill_ratio",
        "Share of the spool's size limit in use (refuses alerts at 0.9, interrupt commands at 1)",
    )
    .expect("valid metric"),
    spool_pending: IntGauge::new("vigil_sink_spool_pending", "Messages accepted and not yet confirmed by the broker")
        .expect("valid metric"),
    delivered: counter("vigil_sink_delivered_total", "Messages the broker confirmed"),
    delivery_failed: counter(
        "vigil_sink_delivery_failed_total",
        "Failed delivery reports (the message stays in the spool and is offered again)",
    ),
    refused: IntCounterVec::new(
        Opts::new("vigil_sink_refused_total", "Messages the Kafka sink did not accept"),
        &["kind", "reason"],
    )
    .expect("valid metric"),
    retried: counter("vigil_sink_retried_total", "Messages offered again after a failed delivery report"),
    producer_fatal: counter(
        "vigil_sink_producer_fatal_total",
        "Fatal errors of the idempotent producer (each one re-creates the producer)",
    ),
    producer_recreated: counter(
        "vigil_sink_producer_recreated_total",
        "Kafka producers re-created after a fatal error",
    ),
    spool_set_aside: counter(
        "vigil_sink_spool_set_aside_total",
        "Unreadable stretches of the spool copied aside to <spool>.corrupt-<n> on open",
    ),
    output_failed: counter("vigil_sink_output_failed_total", "JSON lines that could not be written (stdout)"),
    cpu_seconds: prometheus::Counter::new(
        "vigil_sink_cpu_seconds_total",
        "CPU seconds of the sink thread: JSON lines, alert building, spool appends, Kafka hand-off",
    )
    .expect("valid metric"),
    oldest_pending_seconds: Gauge::new(
        "vigil_sink_oldest_pending_seconds",
        "How long the oldest message accepted and not yet confirmed by the broker has waited (0: none waits)",
    )
    .expect("valid metric"),
    reoffered: counter(
        "vigil_sink_reoffered_total",
        "Messages offered again by a producer re-creation: each may reach the broker twice (consumers drop repeats by message id)",
    ),
    stall_recreations: counter(
        "vigil_sink_stall_recreations_total",
        "Producers re-created because messages waited while the broker confirmed nothing (a broker that lost the producer id)",
    ),
    spool_reserve_released: counter(
        "vigil_sink_spool_reserve_released_total",
        "Times the disk refused an interrupt command's write and the disk space reserved ahead for interrupts was given back for it",
    ),
    delivery_seconds: prometheus::HistogramVec::new(
        prometheus::HistogramOpts::new(
            "vigil_sink_delivery_seconds",
            "From a message's acceptance (spooled) to the broker's confirmation, by kind",
        )
        .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
        &["kind"],
    )
    .expect("valid metric"),
});

pub fn register(registry: &Registry) -> prometheus::Result<()> {
    // Every series the alerting rules read exists from the start, at zero.
    for kind in ["alert", "interrupt"] {
        let _ = METRICS.delivery_seconds.with_label_values(&[kind]);
        for reason in ["full", "io", "failed", "too_large", "serialise", "client"] {
            let _ = METRICS.refused.with_label_values(&[kind, reason]);
        }
    }
    registry.register(Box::new(METRICS.delivery_seconds.clone()))?;
    registry.register(Box::new(METRICS.cpu_seconds.clone()))?;
    let m = &*METRICS;
    registry.register(Box::new(m.spool_fill_ratio.clone()))?;
    registry.register(Box::new(m.spool_pending.clone()))?;
    registry.register(Box::new(m.delivered.clone()))?;
    registry.register(Box::new(m.delivery_failed.clone()))?;
    registry.register(Box::new(m.refused.clone()))?;
    registry.register(Box::new(m.oldest_pending_seconds.clone()))?;
    for c in [
        &m.retried,
        &m.producer_fatal,
        &m.producer_recreated,
        &m.spool_set_aside,
        &m.output_failed,
        &m.reoffered,
        &m.stall_recreations,
        &m.spool_reserve_released,
    ] {
        registry.register(Box::new(c.clone()))?;
    }
    Ok(())
}

/// Fill ratio from which the spool logs an error on every change and `/readyz` warns
/// (before alerts are refused at 0.9).
pub const SPOOL_ALARM_RATIO: f64 = 0.8;
