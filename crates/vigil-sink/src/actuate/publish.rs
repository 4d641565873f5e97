//! What the actuator writes back to Kafka.
//!
//! **Dead letters** (`[actuate] dead_letter_topic`, default `vigil.interrupts.dead-letter`):
//! the command's own bytes, unchanged (a malformed message may not even be JSON), under
//! its own key and with its own headers, plus:
//!
//! | header | value |
//! |---|---|
//! | `vigil-dead-letter-reason` | one of [`DeadLetterReason::ALL`]: `malformed`, `bad_stream_id`, `not_on_this_origin`, `rejected`, `no_publisher`, `bad_answer`, `retries_exhausted` |
//! | `vigil-dead-letter-detail` | the last error, for people (at most 1 KiB) |
//! | `vigil-dead-letter-source` | `TOPIC/PARTITION/OFFSET` of the command |
//! | `vigil-dead-letter-attempts` | how many times the platform was called (0: never) |
//! | `vigil-dead-letter-at-unix-ms` | when it was dead-lettered |
//!
//! A dead letter is confirmed by the broker before the command's offset is committed.
//!
//! **Action outcomes** (`[actuate] actions_topic`, default `vigil.actions`, unless
//! `publish_actions = false`): one `vigil.action` v1 record per cut, failed attempt and
//! dead letter of a parsed command (`crates/vigil-core/schema/action-v1.schema.json`),
//! keyed by stream id, best effort (a lost outcome is logged and counted, never retried).

use super::error::DeadLetterReason;
use crate::kafka::KafkaConfig;
use rdkafka::ClientContext;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use serde::Serialize;
use std::sync::mpsc::{SyncSender, sync_channel};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const ACTION_SCHEMA: &str = "vigil.action";
pub const ACTION_SCHEMA_VERSION: u32 = 1;
/// How long a dead letter may wait for the broker's confirmation.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_DETAIL: usize = 1024;

/// What happened to a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Cut,
    Failed,
    DeadLettered,
    /// A worker pulling the stream read the command; the origin's cut (the actuator's)
    /// is still to come. Changes nothing but says the command reached its stream.
    Seen,
    /// The console withdrew the command (a false positive) before it was carried out.
    Withdrawn,
}

/// A `vigil.action` v1 record.
#[derive(Debug, Serialize)]
pub struct ActionRecord<'a> {
    pub schema: &'static str,
    pub schema_version: u32,
    pub command_id: &'a str,
    pub stream_id: &'a str,
    pub outcome: Outcome,
    /// `None` for a cut; the error kind of a failed attempt; the dead-letter reason.
    pub reason: Option<&'a str>,
    pub detail: &'a str,
    pub attempts: u32,
    pub at_unix_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("kafka producer: {0}")]
    Client(String),
    #[error("the broker did not confirm the dead letter: {0}")]
    NotConfirmed(String),
}

type Confirm = Box<Option<SyncSender<Result<(), String>>>>;

struct Context;

impl ClientContext for Context {}

impl ProducerContext for Context {
    type DeliveryOpaque = Confirm;

    fn delivery(&self, result: &DeliveryResult<'_>, confirm: Confirm) {
        let result = result.as_ref().map(|_| ()).map_err(|(e, _)| e.to_string());
        match *confirm {
            // The waiting side may have given up already; nothing to do then.
            Some(tx) => {
                let _ = tx.try_send(result);
            }
            None => {
                if let Err(e) = result {
                    super::events::action_lost(&e);
                }
            }
        }
    }
}

pub struct Publisher {
    producer: ThreadedProducer<Context>,
    /// Signs every record written (the actuator's key).
    trust: vigil_trust::config::Trust,
    dead_letter_topic: String,
    actions_topic: Option<String>,
}

pub fn now_unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Publisher {
    pub fn new(
        kafka: &KafkaConfig,
        dead_letter_topic: &str,
        actions_topic: Option<&str>,
        trust: vigil_trust::config::Trust,
    ) -> Result<Publisher, PublishError> {
        // The consumer's settings carry the cluster and its security; take back what is
        // only a consumer's and ask for confirmed, deduplicated writes.
        let mut c = kafka.consumer_config("unused").map_err(PublishError::Client)?;
        for k in ["group.id", "enable.auto.commit", "auto.offset.reset", "session.timeout.ms"] {
            c.remove(k);
        }
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", DELIVERY_TIMEOUT.as_millis().to_string());
        let producer = c.create_with_context(Context).map_err(|e| PublishError::Client(e.to_string()))?;
        Ok(Publisher {
            producer,
            trust,
            dead_letter_topic: dead_letter_topic.to_string(),
            actions_topic: actions_topic.map(str::to_string),
        })
    }

    /// Writes `msg` to the dead-letter topic and waits for the broker's confirmation.
    pub fn dead_letter(
        &self,
        msg: &impl Message,
        reason: DeadLetterReason,
        detail: &str,
        attempts: u32,
    ) -> Result<(), PublishError> {
        let mut headers = OwnedHeaders::new();
        if let Some(h) = msg.headers() {
            // The writer's signature is not carried over: the record is signed anew, by
            // the actuator that set it aside.
            let signature =
                [vigil_trust::record::KEY_ID_HEADER, vigil_trust::record::TS_HEADER, vigil_trust::record::SIG_HEADER];
            for h in h.iter().filter(|h| !signature.contains(&h.key)) {
                headers = headers.insert(Header { key: h.key, value: h.value });
            }
        }
        let source = format!("{}/{}/{}", msg.topic(), msg.partition(), msg.offset());
        let detail = truncate(detail, MAX_DETAIL);
        let (attempts, at) = (attempts.to_string(), now_unix_ms().to_string());
        for (key, value) in [
            ("vigil-dead-letter-reason", reason.as_str()),
            ("vigil-dead-letter-detail", detail),
            ("vigil-dead-letter-source", &source),
            ("vigil-dead-letter-attempts", &attempts),
            ("vigil-dead-letter-at-unix-ms", &at),
        ] {
            headers = headers.insert(Header { key, value: Some(value) });
        }
        let headers = self.trust.sign_into(&self.dead_letter_topic, msg.key(), msg.payload(), headers);
        let (tx, rx) = sync_channel(1);
        let mut record: BaseRecord<'_, [u8], [u8], Confirm> =
            BaseRecord::with_opaque_to(&self.dead_letter_topic, Box::new(Some(tx))).headers(headers);
        if let Some(k) = msg.key() {
            record = record.key(k);
        }
        if let Some(p) = msg.payload() {
            record = record.payload(p);
        }
        self.producer.send(record).map_err(|(e, _)| PublishError::NotConfirmed(e.to_string()))?;
        match rx.recv_timeout(DELIVERY_TIMEOUT + Duration::from_secs(5)) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(PublishError::NotConfirmed(e)),
            Err(_) => Err(PublishError::NotConfirmed("no delivery report".into())),
        }
    }

    /// Publishes an action outcome without waiting (best effort).
    pub fn action(&self, record: &ActionRecord<'_>) {
        let Some(topic) = &self.actions_topic else { return };
        let value = match serde_json::to_vec(record) {
            Ok(v) => v,
            Err(e) => return super::events::action_lost(&e.to_string()),
        };
        let outcome = serde_json::to_value(record.outcome).ok();
        let id = format!(
            "{}/{}/{}",
            record.command_id,
            outcome.as_ref().and_then(|o| o.as_str()).unwrap_or("?"),
            record.attempts
        );
        let headers = OwnedHeaders::new()
            .insert(Header { key: "vigil-schema", value: Some(ACTION_SCHEMA) })
            .insert(Header { key: "vigil-message-id", value: Some(&id) });
        let headers = self.trust.sign_into(topic, Some(record.stream_id.as_bytes()), Some(&value), headers);
        let rec =
            BaseRecord::with_opaque_to(topic, Box::new(None)).key(record.stream_id).payload(&value).headers(headers);
        if let Err((e, _)) = self.producer.send::<str, Vec<u8>>(rec) {
            super::events::action_lost(&e.to_string());
        }
    }

    /// Waits (bounded) for outstanding outcomes before the actuator exits.
    pub fn flush(&self) {
        if let Err(e) = self.producer.flush(Duration::from_secs(5)) {
            tracing::warn!("action outcomes not all confirmed at exit: {e}");
        }
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate("abc", 10), "abc");
        assert_eq!(truncate("aé", 2), "a");
        assert_eq!(truncate(&"x".repeat(2000), MAX_DETAIL).len(), MAX_DETAIL);
    }

    #[test]
    fn action_records_serialise_as_the_schema_says() {
        let r = ActionRecord {
            schema: ACTION_SCHEMA,
            schema_version: ACTION_SCHEMA_VERSION,
            command_id: "c",
            stream_id: "rtmp/live/a",
            outcome: Outcome::DeadLettered,
            reason: Some("no_publisher"),
            detail: "d",
            attempts: 4,
            at_unix_ms: 1,
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["outcome"], "dead_lettered");
        let schema: serde_json::Value =
            serde_json::from_str(include_str!("../../../vigil-core/schema/action-v1.schema.json")).unwrap();
        assert_eq!(schema["properties"]["schema"]["const"], ACTION_SCHEMA);
        let outcomes = schema["properties"]["outcome"]["enum"].as_array().unwrap();
        for o in [Outcome::Cut, Outcome::Failed, Outcome::DeadLettered, Outcome::Seen, Outcome::Withdrawn] {
            assert!(outcomes.contains(&serde_json::to_value(o).unwrap()), "{o:?}");
        }
        let reasons = schema["properties"]["reason"]["enum"].as_array().unwrap();
        let labels = DeadLetterReason::ALL.iter().map(|r| r.as_str()).chain(super::super::error::ActError::KINDS);
        for label in labels {
            assert!(reasons.contains(&serde_json::Value::from(label)), "{label} missing from the schema");
        }
        let required = schema["required"].as_array().unwrap();
        for k in required {
            assert!(v.get(k.as_str().unwrap()).is_some(), "{k} missing");
        }
    }
}
