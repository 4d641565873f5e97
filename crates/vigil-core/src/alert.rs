//! The messages Vigil sends out: [`Alert`] (for safety analysts and reports) and
//! [`InterruptCommand`] (for the platform to cut a stream). Versioned JSON, described by
//! the JSON Schemas in `crates/vigil-core/schema/`. Hashes, scores and times only:
//! never pixels.

use crate::{StreamId, Verdict};
use serde::{Deserialize, Serialize};

pub const ALERT_SCHEMA: &str = "vigil.alert";
pub const INTERRUPT_SCHEMA: &str = "vigil.interrupt";
pub const SCHEMA_VERSION: u32 = 1;
pub const ALERT_JSON_SCHEMA: &str = include_str!("../schema/alert-v1.schema.json");
pub const INTERRUPT_JSON_SCHEMA: &str = include_str!("../schema/interrupt-command-v1.schema.json");
pub const WITHDRAWAL_SCHEMA: &str = "vigil.interrupt.withdrawal";
pub const WITHDRAWAL_JSON_SCHEMA: &str = include_str!("../schema/interrupt-withdrawal-v1.schema.json");

/// What happened to the incident this alert describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertEvent {
    Opened,
    Escalated,
    /// The stream kept meeting an interrupt rule long after its command was issued (the
    /// cut did not happen): the command is issued again, under a new command id.
    Reissued,
    Closed,
}

/// A frame an alert rests on: its stream time and PDQ hash, and what it showed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceFrame {
    pub pts_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pdq: Option<String>,
    pub conditions: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelRef {
    pub name: String,
    pub version: String,
}

/// Why: the facts, the frames, and the versions of everything that judged them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Explanation {
    pub reasons: Vec<String>,
    pub frames: Vec<EvidenceFrame>,
    pub models: Vec<ModelRef>,
    pub policy: String,
    pub policy_version: String,
}

/// Who and where, passed in at ingest and by the worker.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertContext {
    pub worker_id: String,
    pub account_id: Option<String>,
    pub session_id: Option<String>,
    pub models: Vec<ModelRef>,
    /// Where the analysed video came from when it was not a live stream.
    pub origin: Option<AlertOrigin>,
}

/// An alert that is not about a live stream: it must never become a live incident or
/// cut anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertOrigin {
    /// `vigil scan --publish` of a file or URL.
    FileScan,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    pub schema: String,
    pub schema_version: u32,
    /// Stable for the incident: every event of one incident carries the same id.
    pub alert_id: String,
    pub event: AlertEvent,
    pub stream_id: StreamId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Stream time of the first and the latest risky sample.
    pub started_ms: u64,
    pub last_seen_ms: u64,
    pub emitted_at_unix_ms: u64,
    pub decision: Verdict,
    pub rule: String,
    pub explanation: Explanation,
    pub worker_id: String,
    /// How many times this incident's interrupt was issued again (`reissued` events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reissue: Option<u32>,
    /// Set when the video was not a live stream (`file_scan`); absent for live streams.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<AlertOrigin>,
}

/// Takes back an interrupt command not carried out yet: a reviewer judged the incident a
/// false positive. Written by the console on the interrupts topic, keyed like the command
/// (so it follows it in the same partition); the actuator and the workers never cut for a
/// command withdrawn before they act on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterruptWithdrawal {
    pub schema: String,
    pub schema_version: u32,
    pub command_id: String,
    pub stream_id: StreamId,
    pub alert_id: String,
    /// `console:NAME`.
    pub withdrawn_by: String,
    pub reason: String,
    pub withdrawn_at_unix_ms: u64,
}

impl InterruptWithdrawal {
    /// Its schema and ids are what a withdrawal needs.
    pub fn is_valid(&self) -> bool {
        self.schema == WITHDRAWAL_SCHEMA
            && self.schema_version == SCHEMA_VERSION
            && !self.command_id.is_empty()
            && !self.stream_id.0.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterruptCommand {
    pub schema: String,
    pub schema_version: u32,
    /// One command per incident: replays and duplicates carry the same id.
    pub command_id: String,
    pub alert_id: String,
    pub stream_id: StreamId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    pub rule: String,
    pub issued_at_unix_ms: u64,
    pub worker_id: String,
}

impl Alert {
    /// The command to cut the stream, when this event is the one that made the incident
    /// an interrupt (opened as one, or escalated to one).
    pub fn interrupt_command(&self) -> Option<InterruptCommand> {
        let acts = self.decision == Verdict::Interrupt
            && matches!(self.event, AlertEvent::Opened | AlertEvent::Escalated | AlertEvent::Reissued);
        // A reissue is a new command: an actuator that finished the first id acts again.
        let command_id = match (self.event, self.reissue) {
            (AlertEvent::Reissued, Some(n)) => format!("{}/interrupt/{}", self.alert_id, n + 1),
            _ => format!("{}/interrupt", self.alert_id),
        };
        acts.then(|| InterruptCommand {
            schema: INTERRUPT_SCHEMA.into(),
            schema_version: SCHEMA_VERSION,
            command_id,
            alert_id: self.alert_id.clone(),
            stream_id: self.stream_id.clone(),
            account_id: self.account_id.clone(),
            session_id: self.session_id.clone(),
            rule: self.rule.clone(),
            issued_at_unix_ms: self.emitted_at_unix_ms,
            worker_id: self.worker_id.clone(),
        })
    }
}
