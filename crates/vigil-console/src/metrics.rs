//! The console's metrics (`/metrics`), listed with the worker's in `docs/metrics.md`.
//! No incident, stream or user ids in labels.

use prometheus::{Gauge, IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use std::sync::LazyLock;

pub struct ConsoleMetrics {
    pub intake_messages: IntCounterVec,
    pub intake_refused: IntCounterVec,
    pub intake_errors: IntCounter,
    pub store_errors: IntCounter,
    pub store_up: IntGauge,
    pub broker_up: IntGauge,
    pub oldest_unacknowledged: Gauge,
    pub open_incidents: IntGauge,
    pub outbox_pending: IntGauge,
    pub actions: IntCounterVec,
    pub logins: IntCounterVec,
    pub requests_refused: IntCounterVec,
    pub allowlist_published: IntCounterVec,
}

pub const INTAKE_KINDS: [&str; 3] = ["alerts", "interrupts", "actions"];
pub const REFUSALS: [&str; 7] = ["empty", "too_large", "malformed", "wrong_schema", "invalid", "untrusted", "future"];
pub const ACTIONS: [&str; 12] = [
    "hold",
    "assign",
    "release",
    "acknowledge",
    "cut",
    "escalate",
    "false_positive",
    "propose_false_positive",
    "approve_false_positive",
    "reject_false_positive",
    "resolve",
    "export",
];

pub static METRICS: LazyLock<ConsoleMetrics> = LazyLock::new(|| {
    let vec = |name: &str, help: &str, labels: &[&str]| {
        IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
    };
    let m = ConsoleMetrics {
        intake_messages: vec(
            "vigil_console_intake_messages_total",
            "Messages the store took, by topic kind and result (new, duplicate)",
            &["kind", "result"],
        ),
        intake_refused: vec(
            "vigil_console_intake_refused_total",
            "Messages refused as malformed and skipped, by topic kind and reason",
            &["kind", "reason"],
        ),
        intake_errors: IntCounter::new("vigil_console_intake_errors_total", "Errors the Kafka consumer reported")
            .expect("valid metric"),
        store_errors: IntCounter::new("vigil_console_store_errors_total", "Store operations that failed")
            .expect("valid metric"),
        store_up: IntGauge::new("vigil_console_store_up", "1 when the store answered its last use")
            .expect("valid metric"),
        broker_up: IntGauge::new("vigil_console_broker_up", "1 when the Kafka cluster answered the last probe")
            .expect("valid metric"),
        oldest_unacknowledged: Gauge::new(
            "vigil_console_oldest_unacknowledged_seconds",
            "Age of the oldest incident nobody acknowledged (0 when none): what queue-age paging watches",
        )
        .expect("valid metric"),
        open_incidents: IntGauge::new("vigil_console_open_incidents", "Incidents not resolved").expect("valid metric"),
        outbox_pending: IntGauge::new("vigil_console_outbox_pending", "Pages waiting in the outbox")
            .expect("valid metric"),
        actions: vec("vigil_console_actions_total", "Reviewer actions taken, by action", &["action"]),
        logins: vec(
            "vigil_console_logins_total",
            "Login attempts, by result (ok, refused, throttled, busy)",
            &["result"],
        ),
        requests_refused: vec(
            "vigil_console_requests_refused_total",
            "Requests refused, by why (no_session, csrf, origin, role)",
            &["why"],
        ),
        allowlist_published: vec(
            "vigil_console_allowlist_published_total",
            "Allowlist entries sent to the bank-updates topic, by result (ok, failed: retried)",
            &["result"],
        ),
    };
    for k in INTAKE_KINDS {
        for r in ["new", "duplicate"] {
            m.intake_messages.with_label_values(&[k, r]);
        }
        for r in REFUSALS {
            m.intake_refused.with_label_values(&[k, r]);
        }
    }
    for a in ACTIONS {
        m.actions.with_label_values(&[a]);
    }
    for r in ["ok", "refused", "throttled", "busy"] {
        m.logins.with_label_values(&[r]);
    }
    for w in ["no_session", "csrf", "origin", "role"] {
        m.requests_refused.with_label_values(&[w]);
    }
    for r in ["ok", "failed"] {
        m.allowlist_published.with_label_values(&[r]);
    }
    m
});

pub fn register(registry: &Registry) -> prometheus::Result<()> {
    let m = &*METRICS;
    for c in [&m.intake_messages, &m.intake_refused, &m.actions, &m.logins, &m.requests_refused, &m.allowlist_published]
    {
        registry.register(Box::new(c.clone()))?;
    }
    registry.register(Box::new(m.intake_errors.clone()))?;
    registry.register(Box::new(m.store_errors.clone()))?;
    registry.register(Box::new(m.store_up.clone()))?;
    registry.register(Box::new(m.broker_up.clone()))?;
    registry.register(Box::new(m.oldest_unacknowledged.clone()))?;
    registry.register(Box::new(m.open_incidents.clone()))?;
    registry.register(Box::new(m.outbox_pending.clone()))
}
