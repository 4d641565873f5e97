//! What the console knows about, shared by the store, the pages and paging.

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch (every time the console stores).
pub type UnixMs = i64;

pub fn now_ms() -> UnixMs {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Where an incident is in its review.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentState {
    /// Waiting for someone: this is what queue-age paging measures.
    Open,
    Acknowledged,
    Escalated,
    Resolved,
}

impl IncidentState {
    pub const ALL: [IncidentState; 4] =
        [IncidentState::Open, IncidentState::Acknowledged, IncidentState::Escalated, IncidentState::Resolved];
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentState::Open => "open",
            IncidentState::Acknowledged => "acknowledged",
            IncidentState::Escalated => "escalated",
            IncidentState::Resolved => "resolved",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// What became of the incident's interrupt command, as far as the console has heard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InterruptState {
    None,
    Issued,
    CutConfirmed,
    CutFailed,
    DeadLettered,
    /// Judged a false positive before any cut: the console withdrew the command, and no
    /// actuator or worker carries it out after that.
    Withdrawn,
}

impl InterruptState {
    pub const ALL: [InterruptState; 6] = [
        InterruptState::None,
        InterruptState::Issued,
        InterruptState::CutConfirmed,
        InterruptState::CutFailed,
        InterruptState::DeadLettered,
        InterruptState::Withdrawn,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            InterruptState::None => "none",
            InterruptState::Issued => "issued",
            InterruptState::CutConfirmed => "cut_confirmed",
            InterruptState::CutFailed => "cut_failed",
            InterruptState::DeadLettered => "dead_lettered",
            InterruptState::Withdrawn => "withdrawn",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// No worker or actuator answered an interrupt command in this long: nobody holds the
/// stream (every worker reads every command and cuts its own publishers; the actuator
/// cuts at the origin), so the command is shown as not found.
pub const NOT_FOUND_AFTER_MS: i64 = 10_000;

impl InterruptState {
    /// How the interrupt reads on the queue and the incident page at `now_ms`, given
    /// when the latest command was received: an `issued` command never stays
    /// unexplained.
    pub fn shown(self, issued_ms: Option<i64>, seen_ms: Option<i64>, now_ms: i64) -> String {
        if self == InterruptState::Issued && seen_after(issued_ms, seen_ms) {
            return "issued: seen by the worker pulling the stream, waiting for its origin's cut".into();
        }
        match (self, issued_ms.map(|t| now_ms.saturating_sub(t))) {
            (InterruptState::Issued, Some(age)) if age >= NOT_FOUND_AFTER_MS => {
                format!("not found: no worker or actuator answered in {} s", age / 1000)
            }
            (InterruptState::Issued, _) => "issued: waiting for a worker or the actuator".into(),
            (InterruptState::Withdrawn, _) => "withdrawn: judged a false positive before any cut".into(),
            (other, _) => other.as_str().replace('_', " "),
        }
    }

    /// Issued, and nobody answered in [`NOT_FOUND_AFTER_MS`].
    pub fn not_found(self, issued_ms: Option<i64>, seen_ms: Option<i64>, now_ms: i64) -> bool {
        self == InterruptState::Issued
            && !seen_after(issued_ms, seen_ms)
            && issued_ms.is_some_and(|t| now_ms.saturating_sub(t) >= NOT_FOUND_AFTER_MS)
    }
}

/// A worker reported `seen` for the latest command (received after it).
fn seen_after(issued_ms: Option<i64>, seen_ms: Option<i64>) -> bool {
    seen_ms.is_some_and(|s| issued_ms.is_none_or(|i| s >= i))
}

/// How a resolved incident ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resolution {
    /// Abuse confirmed (reported onward by the platform's own process).
    Confirmed,
    FalsePositive,
    /// Not abuse, but not a model or bank mistake either (e.g. the stream had ended).
    NoAction,
    Duplicate,
}

impl Resolution {
    pub const ALL: [Resolution; 4] =
        [Resolution::Confirmed, Resolution::FalsePositive, Resolution::NoAction, Resolution::Duplicate];
    pub fn as_str(self) -> &'static str {
        match self {
            Resolution::Confirmed => "confirmed",
            Resolution::FalsePositive => "false_positive",
            Resolution::NoAction => "no_action",
            Resolution::Duplicate => "duplicate",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// Console roles, least to most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads the queue and incidents.
    Viewer,
    /// Holds, acknowledges, cuts, escalates, marks false positives, resolves.
    Reviewer,
    /// And manages accounts.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Reviewer, Role::Admin];
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Reviewer => "reviewer",
            Role::Admin => "admin",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// A `vigil.stream` v1 record: a worker's stream lifecycle event (`started`, `decoding`,
/// `reconnected`, `cut`, `ended`, `deferred`), on the actions topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamEvent {
    pub schema: String,
    pub schema_version: u32,
    pub stream_id: String,
    pub event: String,
    pub at_unix_ms: u64,
    pub worker_id: String,
    #[serde(default)]
    pub detail: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
}

/// A decision as the console shows it: a file scan's is labelled so, never taken for a
/// live stream's.
pub fn decision_shown(decision: &str, origin: Option<&str>) -> String {
    match origin {
        Some("file_scan") => format!("{decision} (file scan, not a live stream)"),
        Some(other) => format!("{decision} ({other})"),
        None => decision.to_string(),
    }
}

/// The stream lifecycle events a worker writes.
pub const STREAM_EVENTS: [&str; 6] = ["started", "decoding", "reconnected", "cut", "ended", "deferred"];

/// Whether a stream is live, from its latest lifecycle events (oldest first): an end
/// that follows a cut (since the stream last started) reads as the cut.
pub fn liveness(events: &[(&str, UnixMs)], time: impl Fn(UnixMs) -> String) -> String {
    let since_start = events.iter().rposition(|(e, _)| *e == "started").map_or(events, |i| &events[i..]);
    let cut = since_start.iter().rev().find(|(e, _)| *e == "cut");
    match (events.last(), cut) {
        (None, _) => "not reported".into(),
        (Some(("ended" | "cut", _)), Some((_, t))) => format!("cut at {}", time(*t)),
        (Some(("started" | "decoding", _)), _) => "live now".into(),
        (Some(("reconnected", t)), _) => format!("live now (reconnected {})", time(*t)),
        (Some(("ended", t)), None) => format!("ended at {}", time(*t)),
        (Some((other, t)), _) => format!("{other} at {}", time(*t)),
    }
}

/// A `vigil.action` v1 record (`crates/vigil-core/schema/action-v1.schema.json`), as
/// read back by the console.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionOutcome {
    pub schema: String,
    pub schema_version: u32,
    pub command_id: String,
    pub stream_id: String,
    /// `cut`, `failed` or `dead_lettered`.
    pub outcome: String,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub detail: String,
    pub attempts: u32,
    pub at_unix_ms: u64,
}

/// Paging channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Pagerduty,
    Webhook,
    Slack,
}

impl Channel {
    pub const ALL: [Channel; 3] = [Channel::Pagerduty, Channel::Webhook, Channel::Slack];
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Pagerduty => "pagerduty",
            Channel::Webhook => "webhook",
            Channel::Slack => "slack",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// What a page says happened: PagerDuty's three event actions, which the webhook and
/// Slack formats reuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PageAction {
    Trigger,
    Acknowledge,
    Resolve,
}

impl PageAction {
    pub const ALL: [PageAction; 3] = [PageAction::Trigger, PageAction::Acknowledge, PageAction::Resolve];
    pub fn as_str(self) -> &'static str {
        match self {
            PageAction::Trigger => "trigger",
            PageAction::Acknowledge => "acknowledge",
            PageAction::Resolve => "resolve",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// What a page is about: enough for every channel's payload, nothing more (no pixels,
/// no reasons text beyond the rule).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageSubject {
    /// The incident id (the alert id), PagerDuty's `dedup_key`.
    pub incident_id: String,
    pub stream_id: String,
    pub account_id: Option<String>,
    /// `review` or `interrupt`.
    pub decision: String,
    pub rule: String,
    /// When the worker detected it.
    pub detected_at_ms: UnixMs,
    /// The incident page, `{public_url}/incidents/{id}`.
    pub link: String,
}

/// One page waiting in (or delivered from) the durable outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxItem {
    /// `{incident_id}/{action}/{channel}`, or `queue-age/{incident_id}/{channel}` for a
    /// queue-age page: enqueueing the same id twice is a no-op.
    pub id: String,
    pub channel: Channel,
    pub action: PageAction,
    pub subject: PageSubject,
    pub attempts: u32,
    pub next_attempt_ms: UnixMs,
    pub last_error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_issued_command_nobody_answers_reads_as_not_found_after_ten_seconds() {
        let issued = Some(1_000_000);
        let waiting = InterruptState::Issued.shown(issued, None, 1_000_000 + NOT_FOUND_AFTER_MS - 1);
        assert_eq!(waiting, "issued: waiting for a worker or the actuator");
        assert!(!InterruptState::Issued.not_found(issued, None, 1_000_000 + NOT_FOUND_AFTER_MS - 1));
        let late = 1_000_000 + 35_000;
        assert_eq!(
            InterruptState::Issued.shown(issued, None, late),
            "not found: no worker or actuator answered in 35 s"
        );
        assert!(InterruptState::Issued.not_found(issued, None, late));
        // An answer ends the wait: a confirmed cut is never "not found".
        assert_eq!(InterruptState::CutConfirmed.shown(issued, None, late), "cut confirmed");
        assert!(!InterruptState::CutConfirmed.not_found(issued, None, late));
        assert_eq!(InterruptState::DeadLettered.shown(issued, None, late), "dead lettered");
        // A worker pulling the stream saw it: answered, waiting for the origin.
        assert!(!InterruptState::Issued.not_found(issued, Some(1_000_500), late));
        assert!(InterruptState::Issued.shown(issued, Some(1_000_500), late).contains("seen by the worker"));
    }

    #[test]
    fn liveness_reads_the_latest_events_a_cut_outranks_the_end_it_caused() {
        let t = |ms: UnixMs| format!("t{ms}");
        assert_eq!(liveness(&[], t), "not reported");
        assert_eq!(liveness(&[("started", 1), ("decoding", 2)], t), "live now");
        assert_eq!(liveness(&[("started", 1), ("decoding", 2), ("cut", 3), ("ended", 4)], t), "cut at t3");
        assert_eq!(liveness(&[("started", 1), ("ended", 4)], t), "ended at t4");
        assert_eq!(liveness(&[("started", 1), ("decoding", 2), ("reconnected", 5)], t), "live now (reconnected t5)");
        // A cut of an earlier session does not mark the next one.
        assert_eq!(liveness(&[("cut", 3), ("ended", 4), ("started", 6), ("ended", 9)], t), "ended at t9");
        assert_eq!(liveness(&[("cut", 3), ("ended", 4), ("started", 6)], t), "live now");
    }
}
