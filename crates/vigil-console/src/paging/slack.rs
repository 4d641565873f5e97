//! Slack incoming webhooks (and Slack-compatible ones, e.g. Mattermost): a message
//! (`schema/slack-message.schema.json`) with a fallback `text` for notifications and
//! `blocks`: a section with the incident's fields and a button to the console.
//!
//! Slack reads `<...>` as a mention or link (`<!channel>`, `<@U123>`, `<url|text>`) and
//! `&` as an entity, in `text` and in every `mrkdwn` field. A stream id is chosen by
//! whoever streams, so every interpolated value goes through [`escape`]: a stream named
//! `<!channel>` is shown, not obeyed. The console link sits in the button's `url`,
//! which Slack does not parse.

use super::config::ResolvedSlack;
use super::{PageKind, Request, rfc3339, truncate};
use crate::model::{OutboxItem, PageAction, UnixMs};
use serde_json::{Value, json};

pub const BUTTON_TEXT: &str = "Open in the Vigil console";
/// Longest value shown in a field, before escaping (Slack caps a field at 2000
/// characters, the section text at 3000).
const MAX_VALUE: usize = 300;

pub fn request(cfg: &ResolvedSlack, item: &OutboxItem, _now: UnixMs) -> Request {
    let body = serde_json::to_vec(&message(item)).expect("a JSON value serialises");
    Request { url: cfg.url.expose().to_string(), headers: Vec::new(), body }
}

/// Slack's three control characters as entities: `&` `<` `>` (and nothing else: Slack
/// shows other entities literally).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// A value cut to a readable length, then escaped.
fn v(s: &str) -> String {
    escape(&truncate(s, MAX_VALUE))
}

pub fn message(item: &OutboxItem) -> Value {
    let s = &item.subject;
    let (headline, text) = match (PageKind::of(item), item.action) {
        (PageKind::QueueAge, _) => (
            format!(
                "*Vigil review queue*: incident {} unacknowledged since {}",
                v(&s.incident_id),
                rfc3339(s.detected_at_ms)
            ),
            format!("Vigil review queue: incident {} waiting since {}", v(&s.incident_id), rfc3339(s.detected_at_ms)),
        ),
        (PageKind::Incident, PageAction::Trigger) => (
            format!("*Vigil {}*: stream {}", v(&s.decision), v(&s.stream_id)),
            format!("Vigil {}: stream {}, rule {}", v(&s.decision), v(&s.stream_id), v(&s.rule)),
        ),
        (PageKind::Incident, PageAction::Acknowledge) => (
            format!("*Acknowledged* in the Vigil console: stream {}", v(&s.stream_id)),
            format!("Acknowledged in the Vigil console: incident {}", v(&s.incident_id)),
        ),
        (PageKind::Incident, PageAction::Resolve) => (
            format!("*Resolved* in the Vigil console: stream {}", v(&s.stream_id)),
            format!("Resolved in the Vigil console: incident {}", v(&s.incident_id)),
        ),
    };
    let field = |name: &str, value: String| json!({ "type": "mrkdwn", "text": format!("*{name}*\n{value}") });
    let fields = vec![
        field("Stream", v(&s.stream_id)),
        field("Decision", v(&s.decision)),
        field("Rule", v(&s.rule)),
        field("Account", s.account_id.as_deref().map_or_else(|| "–".to_string(), v)),
        field("Incident", v(&s.incident_id)),
        field("Detected", rfc3339(s.detected_at_ms)),
    ];
    json!({
        "text": text,
        "blocks": [
            { "type": "section", "text": { "type": "mrkdwn", "text": headline }, "fields": fields },
            {
                "type": "actions",
                "elements": [{
                    "type": "button",
                    "text": { "type": "plain_text", "text": BUTTON_TEXT },
                    "url": s.link,
                }],
            },
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_neutralises_mentions_and_entities() {
        assert_eq!(escape("<!channel> & <@U123>"), "&lt;!channel&gt; &amp; &lt;@U123&gt;");
        assert_eq!(escape("&amp;"), "&amp;amp;");
        assert_eq!(escape("plain/rtmp_id-1"), "plain/rtmp_id-1");
    }
}
