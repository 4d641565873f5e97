//! Kafka delivery with zero loss. Every message is first appended to the fsync'd spool
//! ([`crate::Spool`]); only then is it offered to an idempotent producer (`acks=all`,
//! key = stream id so each stream's messages stay in order on one partition), and it
//! leaves the spool only when the broker's delivery report confirms it. While a broker
//! is down, librdkafka keeps retrying (`message.timeout.ms = 0`: no give-up).
//!
//! What librdkafka does not retry is retried here, while the process runs:
//! - a message whose delivery report failed is offered again with capped backoff;
//! - a fatal error of the idempotent producer (it can no longer vouch for order or
//!   once-ness, and refuses every message from then on) is logged and counted, the
//!   producer is re-created and everything pending is offered again; until the new
//!   producer has a delivery confirmed, [`KafkaHealth::not_ready`] names the error.
//!
//! After a crash or restart, [`KafkaSink::open`] replays what the spool still holds, in
//! order. Consumers deduplicate by the `vigil-message-id` header (at-least-once).

mod config;
mod health;
mod sink;

pub use config::{KafkaConfig, is_valid_topic};
pub use health::KafkaHealth;
pub use sink::{KafkaSink, KafkaSinkError, MessageKind};
