//! What the sink tells the worker's `/readyz`: cheap to ask (atomics and small locks
//! never held across I/O), so the admin server answers while the spool fsyncs.

use crate::metrics::SPOOL_ALARM_RATIO;
use crate::spool::RESERVE_RATIO;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// How long `/readyz` names a refusal after the last one (so a probe sees it).
const REFUSAL_SHOWN: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Default)]
pub(super) struct HealthState {
    /// The spool's fill ratio, as `f64` bits.
    fill_bits: AtomicU64,
    spool_failed: Mutex<Option<String>>,
    /// The producer generation that hit a fatal error, and the error; cleared once a
    /// later generation has a delivery confirmed.
    fatal: Mutex<Option<(u64, String)>>,
    pub(super) delivered: AtomicU64,
    pub(super) refused: AtomicU64,
    pub(super) retried: AtomicU64,
    pub(super) fatal_errors: AtomicU64,
    pub(super) recreated: AtomicU64,
    pub(super) reoffered: AtomicU64,
    pub(super) stalls: AtomicU64,
    /// The oldest pending message's age, in milliseconds.
    oldest_pending_ms: AtomicU64,
    /// The age from which `/readyz` warns of it (`pending_warn_secs`), in milliseconds.
    pending_warn_ms: AtomicU64,
    /// The last time an alert or action record was refused, and why.
    alert_refusal: Mutex<Option<(std::time::Instant, String)>>,
    /// The last time an interrupt command was refused, and why; cleared by a confirmation.
    interrupt_refusal: Mutex<Option<(std::time::Instant, String)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl HealthState {
    pub(super) fn warning_from(pending_warn: std::time::Duration) -> HealthState {
        let s = HealthState::default();
        s.pending_warn_ms.store(pending_warn.as_millis() as u64, Relaxed);
        s
    }

    pub(super) fn set_spool(&self, fill: f64, failed: Option<&str>) {
        self.fill_bits.store(fill.to_bits(), Relaxed);
        let mut f = lock(&self.spool_failed);
        if f.as_deref() != failed {
            *f = failed.map(str::to_string);
        }
    }

    /// Records a fatal error of `generation`; true when it is new (to log and count once).
    pub(super) fn set_fatal(&self, generation: u64, reason: &str) -> bool {
        let mut f = lock(&self.fatal);
        let new = f.as_ref().is_none_or(|(g, _)| *g != generation);
        // A later report of the same error may say more (the error event carries the
        // reason, a failed delivery only the code): keep the longer text.
        if new || f.as_ref().is_some_and(|(_, r)| r.len() < reason.len()) {
            *f = Some((generation, reason.to_string()));
        }
        new
    }

    /// A delivery of `generation` was confirmed: a fatal error of an older producer is
    /// over, and the spool has room again (interrupts wait for a draining producer).
    pub(super) fn confirmed(&self, generation: u64) {
        *lock(&self.interrupt_refusal) = None;
        let mut f = lock(&self.fatal);
        if f.as_ref().is_some_and(|(g, _)| *g < generation) {
            tracing::info!("kafka: the re-created producer delivers again");
            *f = None;
        }
    }

    /// An interrupt command was taken: the sink takes them again.
    pub(super) fn interrupt_taken(&self) {
        *lock(&self.interrupt_refusal) = None;
    }

    /// A message was refused: an interrupt command makes the worker not ready, anything
    /// else is a warning.
    pub(super) fn refused(&self, interrupt: bool, why: &str) {
        let slot = if interrupt { &self.interrupt_refusal } else { &self.alert_refusal };
        *lock(slot) = Some((std::time::Instant::now(), why.to_string()));
    }

    pub(super) fn set_oldest_pending(&self, age: std::time::Duration) {
        self.oldest_pending_ms.store(age.as_millis() as u64, Relaxed);
    }

    /// The re-created producer had nothing to deliver: nothing to prove, healthy.
    pub(super) fn clear_fatal(&self) {
        *lock(&self.fatal) = None;
    }
}

/// A cheap, cloneable handle on the Kafka sink's health, for readiness and tests.
#[derive(Clone)]
pub struct KafkaHealth(pub(super) Arc<HealthState>);

impl KafkaHealth {
    /// Why the worker should not take new streams now; empty when healthy. Only a
    /// worker that refuses interrupt commands (the spool cannot keep one) is not ready: a
    /// Kafka outage alone must not empty the push Service across a fleet, so everything
    /// short of that is a [`warnings`](Self::warnings) entry.
    pub fn not_ready(&self) -> Vec<String> {
        let s = &self.0;
        let mut reasons = Vec::new();
        if let Some(reason) = lock(&s.spool_failed).as_ref() {
            reasons.push(format!("kafka spool failed: {reason}"));
        }
        // Until the broker confirms again (the spool has room then) or the next interrupt
        // is taken; with nothing pending (nothing to confirm), for 30 s.
        let pending = f64::from_bits(s.fill_bits.load(Relaxed)) > 0.0;
        if let Some((at, why)) =
            lock(&s.interrupt_refusal).as_ref().filter(|(at, _)| pending || at.elapsed() < REFUSAL_SHOWN)
        {
            reasons
                .push(format!("kafka sink: an interrupt command was refused {} s ago: {why}", at.elapsed().as_secs()));
        }
        reasons
    }

    /// What `/readyz` shows while the worker stays ready: the broker is not confirming,
    /// the spool fills, alerts are refused (interrupts still have their own reserve).
    pub fn warnings(&self) -> Vec<String> {
        let s = &self.0;
        let mut reasons = Vec::new();
        if let Some((_, reason)) = lock(&s.fatal).as_ref() {
            reasons.push(format!("kafka producer fatal error (producer re-created, not yet delivering): {reason}"));
        }
        if let Some((at, why)) = lock(&s.alert_refusal).as_ref().filter(|(at, _)| at.elapsed() < REFUSAL_SHOWN) {
            reasons.push(format!(
                "kafka sink: alerts are refused (last {} s ago; interrupt commands keep their reserve): {why}",
                at.elapsed().as_secs()
            ));
        }
        let fill = f64::from_bits(s.fill_bits.load(Relaxed));
        if fill >= SPOOL_ALARM_RATIO {
            reasons.push(format!(
                "kafka spool {:.0}% full: the broker is not confirming (warned from {:.0}%, alerts refused from {:.0}%)",
                fill * 100.0,
                SPOOL_ALARM_RATIO * 100.0,
                (1.0 - RESERVE_RATIO) * 100.0
            ));
        }
        let age = s.oldest_pending_ms.load(Relaxed);
        if age >= s.pending_warn_ms.load(Relaxed) {
            reasons.push(format!(
                "kafka: the oldest message waiting for the broker is {} s old (kept in the spool; the producer is re-created after {} s without a confirmation)",
                age / 1000,
                super::sink::STALL_RECREATE.as_secs()
            ));
        }
        reasons
    }

    /// How long the oldest pending message has waited.
    pub fn oldest_pending(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.0.oldest_pending_ms.load(Relaxed))
    }

    /// Messages offered again by producer re-creations (possible repeats).
    pub fn reoffered(&self) -> u64 {
        self.0.reoffered.load(Relaxed)
    }

    /// Producers re-created because nothing was confirmed while messages waited.
    pub fn stalls(&self) -> u64 {
        self.0.stalls.load(Relaxed)
    }

    /// Messages the broker confirmed.
    pub fn delivered(&self) -> u64 {
        self.0.delivered.load(Relaxed)
    }

    /// Messages the sink did not accept (spool full or failing).
    pub fn refused(&self) -> u64 {
        self.0.refused.load(Relaxed)
    }

    /// Messages offered again after a failed delivery report.
    pub fn retried(&self) -> u64 {
        self.0.retried.load(Relaxed)
    }

    /// Fatal errors of the idempotent producer (one per producer that hit one).
    pub fn fatal_errors(&self) -> u64 {
        self.0.fatal_errors.load(Relaxed)
    }

    /// Producers re-created after a fatal error.
    pub fn recreated(&self) -> u64 {
        self.0.recreated.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_refused_interrupt_is_not_ready_the_rest_are_warnings() {
        let h = KafkaHealth(Arc::new(HealthState::warning_from(std::time::Duration::from_secs(60))));
        assert!(h.not_ready().is_empty() && h.warnings().is_empty());
        h.0.set_oldest_pending(std::time::Duration::from_secs(90));
        assert!(h.not_ready().is_empty(), "waiting messages alone keep the worker ready");
        assert!(h.warnings()[0].contains("90 s old"), "{:?}", h.warnings());
        h.0.refused(false, "No space left on device");
        assert!(h.not_ready().is_empty(), "refused alerts alone keep the worker ready");
        assert!(h.warnings().iter().any(|w| w.contains("No space left on device")), "{:?}", h.warnings());
        h.0.refused(true, "spool full");
        assert!(h.not_ready()[0].contains("interrupt command was refused"), "{:?}", h.not_ready());
        h.0.confirmed(0);
        assert!(h.not_ready().is_empty(), "the broker confirms again: the spool has room");
    }
}
