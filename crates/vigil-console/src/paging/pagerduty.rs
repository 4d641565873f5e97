//! PagerDuty Events API v2 (`POST https://events.pagerduty.com/v2/enqueue`), the subset
//! in `schema/pagerduty-event-v2.schema.json`.
//!
//! - `trigger`: `routing_key`, `event_action`, `dedup_key`, `payload` (summary, source,
//!   severity, timestamp, component, group, class, custom_details), `links`, `client`,
//!   `client_url`.
//! - `acknowledge` and `resolve`: `routing_key`, `dedup_key`, `event_action`, nothing
//!   else (PagerDuty ignores the rest on those actions).
//!
//! `dedup_key` is the incident id, so the console's acknowledge and resolve land on the
//! alert its trigger opened, and a trigger sent twice (a retry after a lost answer) is
//! one alert. PagerDuty caps it at 255 characters: a longer id is sent as
//! `sha256:<hex>` of itself, the same for every action. A queue-age page is an alert of
//! its own, `dedup_key` = `queue-age/{incident_id}`, resolved by people in PagerDuty.
//!
//! PagerDuty answers 202 to an accepted event, 400 to a malformed one (not retried),
//! 429 and 5xx when it cannot take it now (retried).

use super::config::ResolvedPagerDuty;
use super::{PageKind, Request, rfc3339, truncate};
use crate::model::{OutboxItem, PageAction, UnixMs};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// PagerDuty's limits on `dedup_key` and `payload.summary`.
pub const MAX_DEDUP_KEY: usize = 255;
pub const MAX_SUMMARY: usize = 1024;
/// `client` of trigger events, PagerDuty's "View in …" link text.
pub const CLIENT: &str = "Vigil console";
pub const LINK_TEXT: &str = "Open in the Vigil console";

pub fn request(cfg: &ResolvedPagerDuty, item: &OutboxItem, now: UnixMs) -> Request {
    let body = serde_json::to_vec(&event(cfg, item, now)).expect("a JSON value serialises");
    Request { url: cfg.url.clone(), headers: Vec::new(), body }
}

/// The event for one outbox item. `now` is the timestamp of a queue-age page; an
/// incident's trigger carries its detection time.
pub fn event(cfg: &ResolvedPagerDuty, item: &OutboxItem, now: UnixMs) -> Value {
    let s = &item.subject;
    let kind = PageKind::of(item);
    let mut event = json!({
        "routing_key": cfg.routing_key.expose(),
        "event_action": item.action.as_str(),
        "dedup_key": dedup_key(item),
    });
    if item.action != PageAction::Trigger {
        return event;
    }
    let (summary, timestamp, class) = match kind {
        PageKind::Incident => (
            format!("Vigil {}: stream {}, rule {}", s.decision, s.stream_id, s.rule),
            rfc3339(s.detected_at_ms),
            s.rule.clone(),
        ),
        PageKind::QueueAge => (
            format!(
                "Vigil review queue: incident {} unacknowledged since {} (stream {}, {}, rule {})",
                s.incident_id,
                rfc3339(s.detected_at_ms),
                s.stream_id,
                s.decision,
                s.rule
            ),
            rfc3339(now),
            "queue_age".to_string(),
        ),
    };
    event["payload"] = json!({
        "summary": truncate(&summary, MAX_SUMMARY),
        "source": cfg.source,
        "severity": severity(&s.decision),
        "timestamp": timestamp,
        "component": "vigil",
        "group": s.decision,
        "class": class,
        "custom_details": {
            "kind": kind.as_str(),
            "incident_id": s.incident_id,
            "stream_id": s.stream_id,
            "account_id": s.account_id,
            "decision": s.decision,
            "rule": s.rule,
            "detected_at": rfc3339(s.detected_at_ms),
        },
    });
    event["links"] = json!([{ "href": s.link, "text": LINK_TEXT }]);
    event["client"] = json!(CLIENT);
    // "View in Vigil console" opens the incident itself.
    event["client_url"] = json!(s.link);
    event
}

/// `critical` for an interrupt decision (a stream is, or should be, cut), `error` for
/// one waiting for review.
pub fn severity(decision: &str) -> &'static str {
    if decision == "interrupt" { "critical" } else { "error" }
}

/// The incident id (`queue-age/{id}` for a queue-age page), hashed when over 255 bytes.
pub fn dedup_key(item: &OutboxItem) -> String {
    let key = match PageKind::of(item) {
        PageKind::Incident => item.subject.incident_id.clone(),
        PageKind::QueueAge => format!("queue-age/{}", item.subject.incident_id),
    };
    if key.len() <= MAX_DEDUP_KEY { key } else { format!("sha256:{}", hex::encode(Sha256::digest(key.as_bytes()))) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Channel, PageSubject};
    use crate::paging::config::Secret;

    fn item(id: &str, action: PageAction, incident: &str) -> OutboxItem {
        OutboxItem {
            id: id.into(),
            channel: Channel::Pagerduty,
            action,
            subject: PageSubject {
                incident_id: incident.into(),
                stream_id: "rtmp/live/x".into(),
                account_id: Some("acct-7".into()),
                decision: "review".into(),
                rule: "nsfw_score".into(),
                detected_at_ms: 1_798_401_273_120,
                link: "https://console.example/incidents/a1".into(),
            },
            attempts: 0,
            next_attempt_ms: 0,
            last_error: None,
        }
    }

    fn cfg() -> ResolvedPagerDuty {
        ResolvedPagerDuty { url: "https://pd".into(), routing_key: Secret::new("k".repeat(32)), source: "vigil".into() }
    }

    #[test]
    fn a_long_incident_id_hashes_to_the_same_key_for_every_action() {
        let long = "x".repeat(300);
        let t = dedup_key(&item("t", PageAction::Trigger, &long));
        let r = dedup_key(&item("r", PageAction::Resolve, &long));
        assert_eq!(t, r);
        assert!(t.starts_with("sha256:") && t.len() <= MAX_DEDUP_KEY);
        assert_eq!(dedup_key(&item("t", PageAction::Trigger, "a1")), "a1");
        assert_eq!(dedup_key(&item("queue-age/a1/pagerduty", PageAction::Trigger, "a1")), "queue-age/a1");
    }

    #[test]
    fn a_queue_age_trigger_is_its_own_alert_stamped_now() {
        let e = event(&cfg(), &item("queue-age/a1/pagerduty", PageAction::Trigger, "a1"), 0);
        assert_eq!(e["dedup_key"], "queue-age/a1");
        assert_eq!(e["payload"]["class"], "queue_age");
        assert_eq!(e["payload"]["timestamp"], "1970-01-01T00:00:00.000Z");
        assert_eq!(e["payload"]["custom_details"]["kind"], "queue_age");
        assert!(e["payload"]["summary"].as_str().unwrap().contains("unacknowledged since 2026-12-27T19:54:33.120Z"));
    }

    #[test]
    fn the_summary_stays_within_pagerdutys_limit() {
        let mut i = item("t", PageAction::Trigger, "a1");
        i.subject.stream_id = "s".repeat(5000);
        let e = event(&cfg(), &i, 0);
        assert!(e["payload"]["summary"].as_str().unwrap().len() <= MAX_SUMMARY);
        assert_eq!(e["payload"]["custom_details"]["stream_id"].as_str().unwrap().len(), 5000);
    }
}
