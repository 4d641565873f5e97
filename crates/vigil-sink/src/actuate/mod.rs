//! `vigil actuate`: consumes interrupt commands and has the platform cut the streams.
//!
//! At least once, never blind: an offset is committed only after its command was acted
//! on (or judged malformed and logged), a command seen before (same `command_id`) is
//! not acted on twice, and a malformed message is logged, counted and skipped — it never
//! stops the actuator.

mod adapters;

pub use adapters::{Adapter, AdapterConfig};

use crate::kafka::KafkaConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use serde::{Deserialize, Serialize};
use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};
use vigil_core::InterruptCommand;
use vigil_core::alert::{INTERRUPT_SCHEMA, SCHEMA_VERSION};

/// `[actuate]`: how commands reach the platform.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActuateConfig {
    #[serde(default = "default_group")]
    pub group_id: String,
    pub adapter: AdapterConfig,
}

fn default_group() -> String {
    "vigil-actuator".into()
}

impl ActuateConfig {
    pub fn validate(&self, prefix: &str) -> Vec<String> {
        let mut e = Vec::new();
        if self.group_id.trim().is_empty() {
            e.push(format!("{prefix}.group_id: must not be empty"));
        }
        e.extend(self.adapter.validate(&format!("{prefix}.adapter")));
        e
    }
}

/// What the actuator did, for reports and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct ActuateStats {
    pub acted: u64,
    pub duplicates: u64,
    pub malformed: u64,
    pub failed: u64,
}

/// Why a message is not a command we act on.
fn parse(payload: Option<&[u8]>) -> Result<InterruptCommand, String> {
    let bytes = payload.ok_or("empty message")?;
    let cmd: InterruptCommand = serde_json::from_slice(bytes).map_err(|e| format!("not an interrupt command: {e}"))?;
    if cmd.schema != INTERRUPT_SCHEMA || cmd.schema_version != SCHEMA_VERSION {
        return Err(format!(
            "schema {} v{} is not {INTERRUPT_SCHEMA} v{SCHEMA_VERSION}",
            cmd.schema, cmd.schema_version
        ));
    }
    if cmd.command_id.is_empty() || cmd.stream_id.0.is_empty() {
        return Err("command_id and stream_id must not be empty".into());
    }
    Ok(cmd)
}

/// Remembers recent command ids so redelivered commands are not acted on twice.
struct Seen {
    set: HashSet<String>,
    order: VecDeque<String>,
}

impl Seen {
    const CAPACITY: usize = 100_000;

    fn insert(&mut self, id: &str) -> bool {
        if self.set.contains(id) {
            return false;
        }
        if self.order.len() == Self::CAPACITY
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        self.set.insert(id.to_string());
        self.order.push_back(id.to_string());
        true
    }
}

/// Consumes `kafka.interrupts_topic` until `stop` says so (checked between messages),
/// or for `max_runtime` when given.
pub fn run(
    kafka: &KafkaConfig,
    cfg: &ActuateConfig,
    max_runtime: Option<Duration>,
    stop: &dyn Fn(&ActuateStats) -> bool,
) -> Result<ActuateStats, String> {
    let adapter = Adapter::new(&cfg.adapter)?;
    let consumer: BaseConsumer =
        kafka.consumer_config(&cfg.group_id)?.create().map_err(|e| format!("kafka consumer: {e}"))?;
    consumer.subscribe(&[&kafka.interrupts_topic]).map_err(|e| format!("subscribe: {e}"))?;
    let mut stats = ActuateStats::default();
    let mut seen = Seen { set: HashSet::new(), order: VecDeque::new() };
    let started = Instant::now();
    while !stop(&stats) && max_runtime.is_none_or(|m| started.elapsed() < m) {
        let Some(msg) = consumer.poll(Duration::from_millis(200)) else { continue };
        let msg = match msg {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!("kafka: {e}");
                continue;
            }
        };
        match parse(msg.payload()) {
            Err(reason) => {
                stats.malformed += 1;
                tracing::error!(
                    partition = msg.partition(),
                    offset = msg.offset(),
                    "skipping malformed message: {reason}"
                );
            }
            Ok(cmd) if !seen.insert(&cmd.command_id) => stats.duplicates += 1,
            Ok(cmd) => match adapter.interrupt(&cmd) {
                Ok(detail) => {
                    stats.acted += 1;
                    tracing::info!(command = %cmd.command_id, stream = %cmd.stream_id, "stream interrupted: {detail}");
                }
                Err(e) => {
                    // The platform did not take it: do not commit; it comes back.
                    stats.failed += 1;
                    tracing::error!(command = %cmd.command_id, stream = %cmd.stream_id, "interrupt failed, will retry: {e}");
                    std::thread::sleep(Duration::from_secs(1));
                    let _ = consumer.seek(
                        msg.topic(),
                        msg.partition(),
                        rdkafka::Offset::Offset(msg.offset()),
                        Duration::from_secs(5),
                    );
                    seen.set.remove(&cmd.command_id);
                    continue;
                }
            },
        }
        if let Err(e) = consumer.commit_message(&msg, CommitMode::Sync) {
            tracing::warn!("commit failed (the message may be seen again): {e}");
        }
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_messages_are_named() {
        assert!(parse(None).is_err());
        assert!(parse(Some(b"{not json")).unwrap_err().contains("not an interrupt command"));
        let wrong = br#"{"schema":"vigil.alert","schema_version":1,"command_id":"c","alert_id":"a","stream_id":"s","rule":"r","issued_at_unix_ms":1,"worker_id":"w"}"#;
        assert!(parse(Some(wrong)).unwrap_err().contains("is not vigil.interrupt"));
        let ok = br#"{"schema":"vigil.interrupt","schema_version":1,"command_id":"c","alert_id":"a","stream_id":"live/x","rule":"r","issued_at_unix_ms":1,"worker_id":"w"}"#;
        assert_eq!(parse(Some(ok)).unwrap().stream_id.0, "live/x");
    }

    #[test]
    fn seen_forgets_oldest_beyond_capacity() {
        let mut s = Seen { set: HashSet::new(), order: VecDeque::new() };
        assert!(s.insert("a"));
        assert!(!s.insert("a"));
    }
}
