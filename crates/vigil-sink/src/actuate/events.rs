//! The actuator's events: each one logs and counts in one call, so a metric label is
//! never a hand-typed string beside a log line.

use super::error::{ActError, DeadLetterReason};
use prometheus::{IntCounter, IntCounterVec, Opts, Registry};
use std::sync::LazyLock;

pub struct ActuateMetrics {
    pub cuts: IntCounter,
    pub failed_attempts: IntCounter,
    /// The alarm: a command the platform never took. Labelled by [`DeadLetterReason`].
    pub dead_letters: IntCounterVec,
    pub actions_lost: IntCounter,
    /// Commands not carried out: the console withdrew them first (a false positive).
    pub withdrawn: IntCounter,
}

pub static METRICS: LazyLock<ActuateMetrics> = LazyLock::new(|| {
    let dead_letters = IntCounterVec::new(
        Opts::new("vigil_actuate_dead_letters_total", "Commands sent to the dead-letter topic, by reason"),
        &["reason"],
    )
    .expect("valid metric");
    // Every label exists from the start, so a rate() alert sees the first dead letter.
    for r in DeadLetterReason::ALL {
        dead_letters.with_label_values(&[r.as_str()]);
    }
    ActuateMetrics {
        cuts: IntCounter::new("vigil_actuate_cuts_total", "Streams the platform cut").expect("valid metric"),
        failed_attempts: IntCounter::new(
            "vigil_actuate_failed_attempts_total",
            "Calls to the platform that failed and will be retried",
        )
        .expect("valid metric"),
        dead_letters,
        actions_lost: IntCounter::new(
            "vigil_actuate_actions_lost_total",
            "Action-outcome records the broker did not take (best effort)",
        )
        .expect("valid metric"),
        withdrawn: IntCounter::new(
            "vigil_actuate_withdrawn_total",
            "Commands not carried out because the console withdrew them first (judged a false positive)",
        )
        .expect("valid metric"),
    }
});

pub fn register(registry: &Registry) -> prometheus::Result<()> {
    let m = &*METRICS;
    registry.register(Box::new(m.cuts.clone()))?;
    registry.register(Box::new(m.failed_attempts.clone()))?;
    registry.register(Box::new(m.dead_letters.clone()))?;
    registry.register(Box::new(m.actions_lost.clone()))?;
    registry.register(Box::new(m.withdrawn.clone()))
}

pub fn withdrawn(command: &str, stream: &str) {
    METRICS.withdrawn.inc();
    tracing::info!(command, stream, "not carried out: the console withdrew the command");
}

pub fn cut(command: &str, stream: &str, detail: &str) {
    METRICS.cuts.inc();
    tracing::info!(command, stream, "stream interrupted: {detail}");
}

pub fn attempt_failed(command: &str, stream: &str, attempt: u32, retry_in: std::time::Duration, e: &ActError) {
    METRICS.failed_attempts.inc();
    tracing::warn!(
        command,
        stream,
        attempt,
        retry_in_ms = retry_in.as_millis() as u64,
        kind = e.kind(),
        "interrupt failed, will retry: {e}"
    );
}

pub fn dead_lettered(command: Option<&str>, source: &str, reason: DeadLetterReason, detail: &str) {
    METRICS.dead_letters.with_label_values(&[reason.as_str()]).inc();
    tracing::error!(
        command = command.unwrap_or("-"),
        source,
        reason = reason.as_str(),
        "command dead-lettered, the platform did not act on it: {detail}"
    );
}

pub fn action_lost(e: &str) {
    METRICS.actions_lost.inc();
    tracing::warn!("an action outcome was not published: {e}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_letter_raises_its_reason_and_every_reason_is_exported_from_the_start() {
        let registry = Registry::new();
        register(&registry).unwrap();
        let count = |reason: &str| {
            registry
                .gather()
                .iter()
                .find(|f| f.name() == "vigil_actuate_dead_letters_total")
                .map(|f| {
                    f.get_metric()
                        .iter()
                        .find(|m| m.get_label().iter().any(|l| l.value() == reason))
                        .map(|m| m.get_counter().get_value())
                })
                .expect("the family is registered")
        };
        for r in DeadLetterReason::ALL {
            assert!(count(r.as_str()).is_some(), "{} is exported before any dead letter", r.as_str());
        }
        let before = count("rejected").unwrap();
        dead_lettered(Some("c"), "t/0/0", DeadLetterReason::Rejected, "HTTP 403");
        assert_eq!(count("rejected").unwrap(), before + 1.0);
    }
}
