//! Intake: the alerts, interrupt-command and action-outcome topics, into the store.
//!
//! One consumer group (`[console] group_id`), so console replicas share the work; at
//! least once: an offset is committed only after the store took the message, and a
//! message the store cannot take now (an outage) is retried, never skipped, so the
//! console catches up from its committed offsets once the store is back. Duplicates
//! (a redelivery, a replica's overlap) are recognised by message id in the store.
//! Malformed messages are hostile input: logged, counted, and committed past.
//!
//! Runs on its own thread (librdkafka's consumer blocks) and reaches the async store
//! through the runtime's handle.

use crate::metrics::METRICS;
use crate::model::{ActionOutcome, PageAction, now_ms};
use crate::state::Shared;
use crate::store::Applied;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use vigil_core::{Alert, AlertEvent, InterruptCommand};

/// The largest message read; anything bigger is refused (alerts are a few KiB).
const MAX_MESSAGE_BYTES: usize = 1 << 20;
/// How far ahead of this clock an alert's emission time may be (hosts' clock skew).
const MAX_CLOCK_SKEW_MS: u64 = 60_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Alert,
    Command,
    Outcome,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Alert => "alerts",
            Kind::Command => "interrupts",
            Kind::Outcome => "actions",
        }
    }
}

pub struct Topics {
    pub alerts: String,
    pub interrupts: String,
    pub actions: String,
    /// Whose records are believed on each (see `vigil_trust::TopicKind::writers`).
    pub trust: vigil_trust::config::Trust,
}

impl Topics {
    fn kind(&self, topic: &str) -> Option<Kind> {
        [(&self.alerts, Kind::Alert), (&self.interrupts, Kind::Command), (&self.actions, Kind::Outcome)]
            .into_iter()
            .find(|(t, _)| t.as_str() == topic)
            .map(|(_, k)| k)
    }
}

/// A message, parsed; the error says why it was refused.
pub enum Parsed {
    Alert(Box<Alert>),
    Command(InterruptCommand),
    Outcome(ActionOutcome),
    /// A worker's stream lifecycle event (the actions topic carries both).
    StreamEvent(crate::model::StreamEvent),
    /// A console's withdrawal of a command (the interrupts topic carries both).
    Withdrawal(vigil_core::InterruptWithdrawal),
}

pub fn parse(kind: Kind, payload: Option<&[u8]>) -> Result<Parsed, &'static str> {
    let bytes = payload.ok_or("empty")?;
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err("too_large");
    }
    match kind {
        Kind::Alert => {
            let a: Alert = serde_json::from_slice(bytes).map_err(|_| "malformed")?;
            if a.schema != vigil_core::alert::ALERT_SCHEMA || a.alert_id.is_empty() {
                return Err("wrong_schema");
            }
            // Emitted ahead of this clock (beyond skew): it would outrank every genuine
            // later event of the incident.
            if a.emitted_at_unix_ms > now_ms().max(0) as u64 + MAX_CLOCK_SKEW_MS {
                return Err("future");
            }
            Ok(Parsed::Alert(Box::new(a)))
        }
        Kind::Command if let Some(w) = vigil_sink::actuate::read_withdrawal(bytes) => Ok(Parsed::Withdrawal(w)),
        Kind::Command => {
            let c: InterruptCommand = serde_json::from_slice(bytes).map_err(|_| "malformed")?;
            if c.schema != vigil_core::alert::INTERRUPT_SCHEMA || c.command_id.is_empty() || c.alert_id.is_empty() {
                return Err("wrong_schema");
            }
            Ok(Parsed::Command(c))
        }
        Kind::Outcome if is_stream_event(bytes) => {
            let e: crate::model::StreamEvent = serde_json::from_slice(bytes).map_err(|_| "malformed")?;
            if e.stream_id.is_empty()
                || e.worker_id.is_empty()
                || !crate::model::STREAM_EVENTS.contains(&e.event.as_str())
                || e.at_unix_ms > now_ms().max(0) as u64 + MAX_CLOCK_SKEW_MS
            {
                return Err("wrong_schema");
            }
            Ok(Parsed::StreamEvent(e))
        }
        Kind::Outcome => {
            let o: ActionOutcome = serde_json::from_slice(bytes).map_err(|_| "malformed")?;
            if o.schema != "vigil.action"
                || o.command_id.is_empty()
                || !["cut", "failed", "dead_lettered", "seen", "withdrawn"].contains(&o.outcome.as_str())
            {
                return Err("wrong_schema");
            }
            Ok(Parsed::Outcome(o))
        }
    }
}

/// A `vigil.stream` record rather than a `vigil.action` one.
fn is_stream_event(bytes: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Schema {
        schema: String,
    }
    serde_json::from_slice::<Schema>(bytes).is_ok_and(|s| s.schema == "vigil.stream")
}

/// Runs until `shared.stop` is set.
pub fn run(shared: Arc<Shared>, consumer: BaseConsumer, topics: Topics, rt: tokio::runtime::Handle) {
    use vigil_trust::TopicKind;
    let alerts = topics.trust.verifier(TopicKind::Alerts);
    let commands = topics.trust.verifier(TopicKind::Interrupts);
    let outcomes = topics.trust.verifier(TopicKind::Actions);
    let mut last_commit = Instant::now();
    let mut last_probe = Instant::now() - Duration::from_secs(60);
    let mut dirty = false;
    while !shared.stop.load(Relaxed) {
        if last_probe.elapsed() >= Duration::from_secs(5) {
            last_probe = Instant::now();
            let up = consumer.fetch_metadata(Some(&topics.alerts), Duration::from_secs(3)).is_ok();
            shared.set_broker_up(up);
        }
        let Some(result) = consumer.poll(Duration::from_millis(200)) else {
            if dirty && last_commit.elapsed() >= Duration::from_secs(1) {
                dirty = !commit(&consumer);
                last_commit = Instant::now();
            }
            continue;
        };
        let m = match result {
            Ok(m) => m,
            Err(e) => {
                METRICS.intake_errors.inc();
                tracing::warn!("intake: consumer error: {e}");
                continue;
            }
        };
        let Some(kind) = topics.kind(m.topic()) else { continue };
        let verifier = match kind {
            Kind::Alert => &alerts,
            Kind::Command => &commands,
            Kind::Outcome => &outcomes,
        };
        // Unsigned, another role's or replayed: refused like a malformed message. The
        // console only records commands (it acts on none), so their age does not matter
        // here: commands read late after a store outage are still recorded.
        let parsed = verifier.check_with(&m, false).map_err(|_| "untrusted").and_then(|_| parse(kind, m.payload()));
        let taken = match parsed {
            Err(reason) => {
                METRICS.intake_refused.with_label_values(&[kind.as_str(), reason]).inc();
                tracing::warn!(
                    topic = m.topic(),
                    partition = m.partition(),
                    offset = m.offset(),
                    "intake: message refused ({reason}), skipped"
                );
                true
            }
            Ok(p) => store_until_taken(&shared, &rt, kind, p),
        };
        if !taken {
            return; // stopping
        }
        if consumer.store_offset_from_message(&m).is_ok() {
            dirty = true;
        }
        if last_commit.elapsed() >= Duration::from_secs(1) {
            dirty = !commit(&consumer);
            last_commit = Instant::now();
        }
    }
    if dirty {
        commit(&consumer);
    }
}

fn commit(consumer: &BaseConsumer) -> bool {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) => true,
        Err(rdkafka::error::KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => true,
        Err(e) => {
            tracing::warn!("intake: commit failed (the messages will be read again, and deduplicated): {e}");
            false
        }
    }
}

/// Writes one message, retrying through a store outage; false only when stopping.
fn store_until_taken(shared: &Shared, rt: &tokio::runtime::Handle, kind: Kind, p: Parsed) -> bool {
    let mut wait = Duration::from_millis(250);
    loop {
        match rt.block_on(apply(shared, &p)) {
            Ok(applied) => {
                shared.set_store_up(true);
                let result = if applied == Applied::New { "new" } else { "duplicate" };
                METRICS.intake_messages.with_label_values(&[kind.as_str(), result]).inc();
                return true;
            }
            // A message the store can never take (an empty id, text PostgreSQL refuses)
            // is refused like a malformed one: retrying it would stop intake for good.
            Err(e) if never_storable(&e) => {
                METRICS.intake_refused.with_label_values(&[kind.as_str(), "invalid"]).inc();
                tracing::warn!("intake: message refused by the store, skipped: {e}");
                return true;
            }
            Err(e) => {
                shared.set_store_up(false);
                METRICS.store_errors.inc();
                tracing::error!("intake: the store did not take a message, retrying in {wait:?}: {e}");
            }
        }
        let until = Instant::now() + wait;
        while Instant::now() < until {
            if shared.stop.load(Relaxed) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        wait = (wait * 2).min(Duration::from_secs(10));
    }
}

fn never_storable(e: &crate::store::StoreError) -> bool {
    use crate::store::StoreError;
    match e {
        StoreError::Invalid(_) | StoreError::Corrupt(_) => true,
        // PostgreSQL's data exceptions (SQLSTATE class 22: a NUL in text, a bad value).
        StoreError::Query { source: sqlx::Error::Database(db), .. } => db.code().is_some_and(|c| c.starts_with("22")),
        _ => false,
    }
}

async fn apply(shared: &Shared, p: &Parsed) -> Result<Applied, crate::store::StoreError> {
    let now = now_ms();
    match p {
        Parsed::Alert(a) => {
            let applied = shared.store.record_alert(a, now).await?;
            // Also on a redelivery: the page may not have been queued the first time
            // (queueing the same page again is a no-op).
            // A file scan is not a live stream: nobody is paged for it.
            if a.event == AlertEvent::Opened && a.origin.is_none() {
                crate::actions::page(shared, PageAction::Trigger, &a.alert_id).await?;
            }
            Ok(applied)
        }
        Parsed::Command(c) => {
            let applied = shared.store.record_command(c, &c.worker_id, now).await?;
            // A command issued after the incident was judged a false positive (a worker
            // re-issuing it before the allowlist entry reached it) is withdrawn too.
            if let Some(d) = shared.store.incident(&c.alert_id).await?
                && d.incident.resolution == Some(crate::model::Resolution::FalsePositive)
                && let Err(e) = crate::actions::withdraw_pending(shared, &d, "console", "judged a false positive").await
            {
                tracing::warn!(command = c.command_id, "a command after a false positive not withdrawn: {e}");
            }
            Ok(applied)
        }
        // Written by a console (this one, or a replica): its state is in the store already.
        Parsed::Withdrawal(_) => Ok(Applied::New),
        Parsed::Outcome(o) => shared.store.record_outcome(o, now).await,
        Parsed::StreamEvent(e) => shared.store.record_stream_event(e, now).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_messages_are_refused_with_a_reason() {
        assert_eq!(parse(Kind::Alert, None).err(), Some("empty"));
        assert_eq!(parse(Kind::Alert, Some(b"{")).err(), Some("malformed"));
        assert_eq!(parse(Kind::Alert, Some(&vec![b' '; MAX_MESSAGE_BYTES + 1])).err(), Some("too_large"));
        let outcome = br#"{"schema":"vigil.action","schema_version":1,"command_id":"c","stream_id":"s","outcome":"exploded","reason":null,"detail":"","attempts":1,"at_unix_ms":1}"#;
        assert_eq!(parse(Kind::Outcome, Some(outcome)).err(), Some("wrong_schema"));
        let ok = String::from_utf8_lossy(outcome).replace("exploded", "cut");
        assert!(parse(Kind::Outcome, Some(ok.as_bytes())).is_ok());
    }
}
