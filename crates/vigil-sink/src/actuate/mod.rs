//! `vigil actuate`: consumes interrupt commands and has the platform cut the streams.
//!
//! At least once, never blind, never stuck:
//! - an offset is committed only after its command was cut, or written to the dead-letter
//!   topic and confirmed there ([`publish`] documents the format);
//! - a failure is sorted by type ([`error::ActError::disposition`]): transient ones
//!   (unreachable, timeouts, 5xx, 408, 429) are retried with capped exponential backoff
//!   while only their own partition waits (it is paused; the others go on), until the
//!   retry budget is spent; permanent ones (a malformed command, a stream id that does
//!   not map to the platform, another 4xx, a cut that dropped nobody on every brief try)
//!   are dead-lettered at once and counted in `vigil_actuate_dead_letters_total{reason}`;
//! - a command seen before (same `command_id`, cut or dead-lettered) is not acted on twice;
//! - if a dead letter cannot be written, the actuator stops with an error rather than
//!   commit a command nobody acted on: it starts again from the last committed offset.

mod actuator;
mod adapters;
pub mod error;
pub mod events;
pub mod publish;
pub mod target;

pub use actuator::{ActuateError, run};
pub use adapters::{Adapter, AdapterConfig};
pub use error::{ActError, DeadLetterReason};

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::Duration;
use vigil_core::InterruptCommand;
use vigil_core::alert::{INTERRUPT_SCHEMA, SCHEMA_VERSION};

/// `[actuate]`: how commands reach the platform.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActuateConfig {
    #[serde(default = "default_group")]
    pub group_id: String,
    pub adapter: AdapterConfig,
    /// Where commands the platform never took go (with the reason in headers).
    #[serde(default = "default_dead_letter_topic")]
    pub dead_letter_topic: String,
    /// Where what happened to each command goes (`vigil.action` v1 records).
    #[serde(default = "default_actions_topic")]
    pub actions_topic: String,
    #[serde(default = "default_true")]
    pub publish_actions: bool,
    #[serde(default)]
    pub retry: RetryConfig,
}

/// `[actuate.retry]`: how transient failures are retried.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// First backoff; it doubles per attempt up to `max_backoff_ms`.
    #[serde(default = "default_initial_backoff_ms")]
    pub initial_backoff_ms: u64,
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_ms: u64,
    /// After this long failing, a command is dead-lettered (`retries_exhausted`).
    #[serde(default = "default_budget_secs")]
    pub budget_secs: u64,
    /// Calls that found no publisher before the command is dead-lettered (`no_publisher`).
    #[serde(default = "default_no_publisher_attempts")]
    pub no_publisher_attempts: u32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            initial_backoff_ms: default_initial_backoff_ms(),
            max_backoff_ms: default_max_backoff_ms(),
            budget_secs: default_budget_secs(),
            no_publisher_attempts: default_no_publisher_attempts(),
        }
    }
}

impl RetryConfig {
    /// The wait before attempt `attempt + 1`, after `attempt` (1-based) failed; a
    /// server's `Retry-After` lengthens it, never past the cap.
    pub fn backoff(&self, attempt: u32, hint: Option<Duration>) -> Duration {
        let doubled = self.initial_backoff_ms.saturating_mul(1u64 << attempt.saturating_sub(1).min(32));
        let ms = doubled.min(self.max_backoff_ms);
        let d = Duration::from_millis(ms);
        hint.map_or(d, |h| h.max(d).min(Duration::from_millis(self.max_backoff_ms)))
    }

    pub fn validate(&self, prefix: &str) -> Vec<String> {
        let mut e = Vec::new();
        if self.initial_backoff_ms == 0 {
            e.push(format!("{prefix}.initial_backoff_ms: must be at least 1"));
        }
        if self.max_backoff_ms < self.initial_backoff_ms {
            e.push(format!(
                "{prefix}.max_backoff_ms: {} is under initial_backoff_ms {}",
                self.max_backoff_ms, self.initial_backoff_ms
            ));
        }
        if self.budget_secs == 0 {
            e.push(format!("{prefix}.budget_secs: must be at least 1"));
        }
        if !(1..=20).contains(&self.no_publisher_attempts) {
            e.push(format!("{prefix}.no_publisher_attempts: {} is outside 1..=20", self.no_publisher_attempts));
        }
        e
    }
}

fn default_group() -> String {
    "vigil-actuator".into()
}
fn default_dead_letter_topic() -> String {
    "vigil.interrupts.dead-letter".into()
}
fn default_actions_topic() -> String {
    "vigil.actions".into()
}
fn default_true() -> bool {
    true
}
fn default_initial_backoff_ms() -> u64 {
    500
}
fn default_max_backoff_ms() -> u64 {
    30_000
}
fn default_budget_secs() -> u64 {
    600
}
fn default_no_publisher_attempts() -> u32 {
    4
}

impl ActuateConfig {
    pub fn validate(&self, prefix: &str) -> Vec<String> {
        let mut e = Vec::new();
        if self.group_id.trim().is_empty() {
            e.push(format!("{prefix}.group_id: must not be empty"));
        }
        e.extend(self.adapter.validate(&format!("{prefix}.adapter")));
        for (k, t) in [("dead_letter_topic", &self.dead_letter_topic), ("actions_topic", &self.actions_topic)] {
            if !crate::kafka::is_valid_topic(t) {
                e.push(format!("{prefix}.{k}: \"{t}\" is not a valid topic name"));
            }
        }
        if self.dead_letter_topic == self.actions_topic {
            e.push(format!("{prefix}.actions_topic: must differ from dead_letter_topic"));
        }
        e.extend(self.retry.validate(&format!("{prefix}.retry")));
        e
    }
}

/// What the actuator did, for reports and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct ActuateStats {
    /// Commands the platform cut.
    pub acted: u64,
    pub duplicates: u64,
    /// Messages that were not commands (also dead-lettered, reason `malformed`).
    pub malformed: u64,
    /// Messages no worker or console signed (also dead-lettered, reason `untrusted`).
    pub untrusted: u64,
    /// Failed calls to the platform that were retried.
    pub failed: u64,
    pub dead_lettered: u64,
    pub dead_letter_reasons: BTreeMap<&'static str, u64>,
    /// Commands not carried out: the console withdrew them first.
    pub withdrawn: u64,
    /// Withdrawal records read.
    pub withdrawals: u64,
}

impl ActuateStats {
    /// Messages finished with: cut, duplicate, dead-lettered, withdrawn, or a withdrawal
    /// (committed).
    pub fn handled(&self) -> u64 {
        self.acted + self.duplicates + self.dead_lettered + self.withdrawn + self.withdrawals
    }
}

/// Why a message is not a command we act on (dead-lettered as `malformed`).
#[derive(Debug, thiserror::Error)]
pub enum Malformed {
    #[error("empty message")]
    Empty,
    #[error("not an interrupt command: {0}")]
    NotACommand(#[from] serde_json::Error),
    #[error("schema {schema} v{version} is not {INTERRUPT_SCHEMA} v{SCHEMA_VERSION}")]
    WrongSchema { schema: String, version: u32 },
    #[error("command_id and stream_id must not be empty")]
    EmptyIds,
}

/// A withdrawal from a record of the interrupts topic; `None` for anything else.
pub fn read_withdrawal(payload: &[u8]) -> Option<vigil_core::InterruptWithdrawal> {
    serde_json::from_slice::<vigil_core::InterruptWithdrawal>(payload).ok().filter(|w| w.is_valid())
}

fn parse(payload: Option<&[u8]>) -> Result<InterruptCommand, Malformed> {
    let bytes = payload.filter(|b| !b.is_empty()).ok_or(Malformed::Empty)?;
    let cmd: InterruptCommand = serde_json::from_slice(bytes)?;
    if cmd.schema != INTERRUPT_SCHEMA || cmd.schema_version != SCHEMA_VERSION {
        return Err(Malformed::WrongSchema { schema: cmd.schema, version: cmd.schema_version });
    }
    if cmd.command_id.is_empty() || cmd.stream_id.0.is_empty() {
        return Err(Malformed::EmptyIds);
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

    fn new() -> Seen {
        Seen { set: HashSet::new(), order: VecDeque::new() }
    }

    fn contains(&self, id: &str) -> bool {
        self.set.contains(id)
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_messages_are_named() {
        assert!(matches!(parse(None), Err(Malformed::Empty)));
        assert!(matches!(parse(Some(b"")), Err(Malformed::Empty)));
        assert!(matches!(parse(Some(b"{not json")), Err(Malformed::NotACommand(_))));
        let wrong = br#"{"schema":"vigil.alert","schema_version":1,"command_id":"c","alert_id":"a","stream_id":"s","rule":"r","issued_at_unix_ms":1,"worker_id":"w"}"#;
        assert!(parse(Some(wrong)).unwrap_err().to_string().contains("is not vigil.interrupt"));
        let empty = br#"{"schema":"vigil.interrupt","schema_version":1,"command_id":"","alert_id":"a","stream_id":"s","rule":"r","issued_at_unix_ms":1,"worker_id":"w"}"#;
        assert!(matches!(parse(Some(empty)), Err(Malformed::EmptyIds)));
        let ok = br#"{"schema":"vigil.interrupt","schema_version":1,"command_id":"c","alert_id":"a","stream_id":"live/x","rule":"r","issued_at_unix_ms":1,"worker_id":"w"}"#;
        assert_eq!(parse(Some(ok)).unwrap().stream_id.0, "live/x");
    }

    #[test]
    fn seen_forgets_oldest_beyond_capacity() {
        let mut s = Seen::new();
        assert!(s.insert("a"));
        assert!(!s.insert("a"));
        assert!(s.contains("a"));
        for i in 0..Seen::CAPACITY {
            s.insert(&i.to_string());
        }
        assert!(!s.contains("a"), "the oldest id is forgotten");
        assert!(s.contains(&(Seen::CAPACITY - 1).to_string()));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_honours_retry_after() {
        let r = RetryConfig { initial_backoff_ms: 100, max_backoff_ms: 1000, ..RetryConfig::default() };
        let ms = |a, h| r.backoff(a, h).as_millis() as u64;
        assert_eq!([ms(1, None), ms(2, None), ms(3, None), ms(4, None), ms(5, None)], [100, 200, 400, 800, 1000]);
        assert_eq!(ms(u32::MAX, None), 1000);
        assert_eq!(ms(1, Some(Duration::from_millis(700))), 700);
        assert_eq!(ms(1, Some(Duration::from_secs(3600))), 1000);
    }

    #[test]
    fn config_mistakes_are_all_named() {
        let cfg: ActuateConfig = toml::from_str(
            r#"
            dead_letter_topic = "bad topic"
            actions_topic = "bad topic"
            adapter = { kind = "webhook", url = "ftp://x" }
            retry = { initial_backoff_ms = 0, max_backoff_ms = 0, budget_secs = 0, no_publisher_attempts = 0 }
            "#,
        )
        .unwrap();
        let e = cfg.validate("actuate");
        for needle in [
            "dead_letter_topic",
            "actions_topic: \"bad topic\"",
            "must differ",
            "adapter",
            "initial_backoff_ms",
            "budget_secs",
            "no_publisher_attempts",
        ] {
            assert!(e.iter().any(|m| m.contains(needle)), "{needle} not in {e:?}");
        }
        assert!(
            toml::from_str::<ActuateConfig>("adapter = { kind = \"webhook\", url = \"http://x\" }\nretries = 3")
                .is_err()
        );
        let plain: ActuateConfig = toml::from_str("adapter = { kind = \"webhook\", url = \"http://x\" }").unwrap();
        assert!(plain.validate("actuate").iter().any(|m| m.contains("allow_plain_http")), "http:// needs opting in");
        let ok: ActuateConfig =
            toml::from_str("adapter = { kind = \"webhook\", url = \"http://x\", allow_plain_http = true }").unwrap();
        assert!(ok.validate("actuate").is_empty());
        let tls: ActuateConfig = toml::from_str("adapter = { kind = \"webhook\", url = \"https://x\" }").unwrap();
        assert!(tls.validate("actuate").is_empty());
        assert_eq!(ok.dead_letter_topic, "vigil.interrupts.dead-letter");
    }
}
