//! Paging: telling people that an incident needs them, through PagerDuty, a signed
//! webhook and Slack, without ever losing a page.
//!
//! # Design
//!
//! - **A durable outbox.** When an incident opens, is acknowledged in the console or is
//!   resolved, the console writes one [`OutboxItem`] per configured channel
//!   ([`items_for`]) in the same transaction as the incident's change. A delivery loop
//!   sends what is due with [`deliver_one`] and records the [`Delivery`]: a page
//!   survives a restart, a network cut and a PagerDuty outage, and is sent at least
//!   once.
//! - **Dedupe by id.** An item's id is `{incident_id}/{action}/{channel}` (a queue-age
//!   page: `queue-age/{incident_id}/{channel}`); enqueueing the same id twice is a
//!   no-op, so an alert read twice from Kafka pages once. Receivers dedupe a page sent
//!   twice (a retry after a lost answer) the same way: PagerDuty by `dedup_key` (the
//!   incident id), the webhook by `page_id` (the outbox id). Slack cannot dedupe: a
//!   lost answer can post a message twice.
//! - **Order.** The delivery loop (wired to the store by its caller) sends an
//!   incident's items per channel in the order they were enqueued, and a later item of
//!   the same incident and channel waits while an earlier one is being retried: an
//!   `acknowledge` never overtakes its `trigger` (PagerDuty ignores a `resolve` for an
//!   alert it has not seen, then opens one from the late `trigger` that nobody closes).
//! - **Retries.** 2xx is delivered. 429, 5xx, 408 and transport failures (refused,
//!   reset, timed out) are retried with exponential backoff and jitter, honouring
//!   `Retry-After`. Any other answer is a refusal: the page stays in the outbox with its
//!   error, is retried at the longest backoff, and is counted as `refused`
//!   (`vigil_console_pages_total{result="refused"}`, the alert to set). Nothing is
//!   dropped; see [`deliver`].
//! - **Queue-age paging.** A console nobody watches is an outage: when the oldest
//!   incident nobody has acknowledged has waited `queue_age_page_secs`
//!   ([`queue_age_exceeded`]), the loop enqueues [`queue_age_items`] for it (once per
//!   incident, by id). Measured on age, not on queue depth: one incident waiting ten
//!   minutes is worse than fifty answered in a minute each.
//!
//! # What each channel gets
//!
//! - [`pagerduty`]: Events API v2 `trigger` (summary, severity `critical` for an
//!   interrupt decision and `error` for review, custom details, a link to the console),
//!   `acknowledge` and `resolve` with `dedup_key` = the incident id.
//! - [`webhook`]: `vigil.page` v1 JSON, signed with HMAC-SHA256 over
//!   `{timestamp}.{body}` (`vigil-signature`, `vigil-signature-timestamp`); receivers
//!   check it with [`webhook::verify_webhook`].
//! - [`slack`]: a message with the incident's fields and a button to the console, every
//!   interpolated value escaped.
//!
//! Every channel gets the same facts (stream, account, decision, rule, when, a link):
//! no pixels, no hashes, no alert text beyond the rule. `docs/paging.md` has examples.

pub mod config;
pub mod deliver;
pub mod events;
pub mod pagerduty;
pub mod slack;
pub mod webhook;

pub use config::{PagingConfig, ResolvedPaging, RetryConfig, Secret};
pub use deliver::{Delivery, DeliveryError};
pub use events::register;
pub use webhook::{VerifyError, verify_webhook};

use crate::model::{Channel, OutboxItem, PageAction, PageSubject, UnixMs};
use std::fmt;

/// What a page is about: an incident's own life (opened, acknowledged, resolved), or the
/// queue of incidents waiting too long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageKind {
    Incident,
    QueueAge,
}

/// The prefix of queue-age outbox ids.
pub const QUEUE_AGE_ID_PREFIX: &str = "queue-age/";

impl PageKind {
    /// Told by the id, which [`items_for`] and [`queue_age_items`] write.
    pub fn of(item: &OutboxItem) -> PageKind {
        if item.id.starts_with(QUEUE_AGE_ID_PREFIX) { PageKind::QueueAge } else { PageKind::Incident }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            PageKind::Incident => "incident",
            PageKind::QueueAge => "queue_age",
        }
    }
}

/// The outbox items for one change of an incident: one per configured channel, in
/// [`Channel::ALL`] order, due now.
pub fn items_for(cfg: &PagingConfig, action: PageAction, subject: &PageSubject, now: UnixMs) -> Vec<OutboxItem> {
    cfg.channels()
        .into_iter()
        .map(|channel| OutboxItem {
            id: format!("{}/{}/{}", subject.incident_id, action.as_str(), channel.as_str()),
            channel,
            action,
            subject: subject.clone(),
            attempts: 0,
            next_attempt_ms: now,
            last_error: None,
        })
        .collect()
}

/// The queue-age page for the oldest unacknowledged incident: a `trigger` per configured
/// channel, ids `queue-age/{incident_id}/{channel}` (so an incident raises it once).
pub fn queue_age_items(cfg: &PagingConfig, subject: &PageSubject, now: UnixMs) -> Vec<OutboxItem> {
    cfg.channels()
        .into_iter()
        .map(|channel| OutboxItem {
            id: format!("{QUEUE_AGE_ID_PREFIX}{}/{}", subject.incident_id, channel.as_str()),
            channel,
            action: PageAction::Trigger,
            subject: subject.clone(),
            attempts: 0,
            next_attempt_ms: now,
            last_error: None,
        })
        .collect()
}

/// Whether the oldest unacknowledged incident, waiting since `oldest_open_since_ms`
/// (when the console opened it), calls for a queue-age page.
pub fn queue_age_exceeded(cfg: &PagingConfig, oldest_open_since_ms: UnixMs, now: UnixMs) -> bool {
    now.saturating_sub(oldest_open_since_ms) >= (cfg.queue_age_page_secs as i64).saturating_mul(1000)
}

/// One HTTP request of a page, built by a channel's pure payload function.
#[derive(Clone, PartialEq, Eq)]
pub struct Request {
    pub url: String,
    /// Besides `content-type: application/json`, which every page has.
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl fmt::Debug for Request {
    /// Shows the scheme and host only (a Slack URL is a secret), and the body's size
    /// (PagerDuty's carries the routing key).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("url", &redacted_url(&self.url))
            .field("headers", &self.headers.iter().map(|(k, _)| *k).collect::<Vec<_>>())
            .field("body_bytes", &self.body.len())
            .finish()
    }
}

/// `https://host/…`: what may be logged of a URL.
pub fn redacted_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("?", url));
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    // user:password@host
    let host = host.rsplit('@').next().unwrap_or(host);
    format!("{scheme}://{host}/…")
}

/// The request for one item, or why there is none (its channel is not configured any
/// more).
pub fn request_for(cfg: &ResolvedPaging, item: &OutboxItem, now: UnixMs) -> Result<Request, DeliveryError> {
    match item.channel {
        Channel::Pagerduty => cfg.pagerduty.as_ref().map(|pd| pagerduty::request(pd, item, now)),
        Channel::Webhook => cfg.webhook.as_ref().map(|w| webhook::request(w, item, now)),
        Channel::Slack => cfg.slack.as_ref().map(|s| slack::request(s, item, now)),
    }
    .ok_or(DeliveryError::NotConfigured(item.channel))
}

/// Sends one due item (on a blocking thread) and says what the outbox should record:
/// [`Delivery::Delivered`], or [`Delivery::Retry`] with when and why (also for a
/// refusal: see [`deliver`]). Logs and counts the attempt.
pub async fn deliver_one(cfg: &ResolvedPaging, item: &OutboxItem) -> Delivery {
    let (c, i) = (cfg.clone(), item.clone());
    match tokio::task::spawn_blocking(move || deliver::deliver_blocking(&c, &i)).await {
        Ok(d) => d,
        Err(e) => {
            // A panic in the HTTP client: keep the page and try again later.
            let error = DeliveryError::Internal(e.to_string());
            let delay = deliver::next_delay(&cfg.config.retry, item.attempts, &error, deliver::jitter());
            events::retry(item, delay, &error, None);
            Delivery::Retry { next_attempt_ms: crate::model::now_ms() + delay.as_millis() as i64, error }
        }
    }
}

/// RFC 3339 in UTC with milliseconds, `2026-11-27T19:54:33.120Z`.
pub fn rfc3339(ms: UnixMs) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z", sod / 3600, sod % 3600 / 60, sod % 60)
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's
/// `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// At most `max` bytes of `s`, cut on a character boundary, with `…` when cut.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject() -> PageSubject {
        PageSubject {
            incident_id: "a1".into(),
            stream_id: "rtmp/live/x".into(),
            account_id: None,
            decision: "interrupt".into(),
            rule: "bank_match".into(),
            detected_at_ms: 0,
            link: "https://console.example/incidents/a1".into(),
        }
    }

    #[test]
    fn rfc3339_matches_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(1_798_401_273_120), "2026-12-27T19:54:33.120Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn items_go_to_every_configured_channel_with_documented_ids() {
        let mut cfg = PagingConfig::default();
        assert!(items_for(&cfg, PageAction::Trigger, &subject(), 5).is_empty());
        cfg.slack = Some(config::SlackConfig { url_env: "U".into(), allow_plain_http: false });
        cfg.pagerduty = Some(config::PagerDutyConfig {
            url: config::DEFAULT_PAGERDUTY_URL.into(),
            routing_key_env: "K".into(),
            source: "vigil".into(),
            allow_plain_http: false,
        });
        let items = items_for(&cfg, PageAction::Acknowledge, &subject(), 5);
        let ids: Vec<&str> = items.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["a1/acknowledge/pagerduty", "a1/acknowledge/slack"]);
        assert!(items.iter().all(|i| i.attempts == 0 && i.next_attempt_ms == 5 && i.last_error.is_none()));
        assert!(items.iter().all(|i| PageKind::of(i) == PageKind::Incident));
        let q = queue_age_items(&cfg, &subject(), 7);
        assert_eq!(
            q.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
            ["queue-age/a1/pagerduty", "queue-age/a1/slack"]
        );
        assert!(q.iter().all(|i| PageKind::of(i) == PageKind::QueueAge && i.action == PageAction::Trigger));
    }

    #[test]
    fn queue_age_pages_on_age_not_before() {
        let cfg = PagingConfig::default();
        assert!(!queue_age_exceeded(&cfg, 1_000_000, 1_000_000 + 299_999));
        assert!(queue_age_exceeded(&cfg, 1_000_000, 1_000_000 + 300_000));
    }

    #[test]
    fn urls_are_logged_without_path_or_credentials() {
        assert_eq!(redacted_url("https://hooks.slack.com/services/T/B/X"), "https://hooks.slack.com/…");
        assert_eq!(redacted_url("https://u:p@h.example:8443/x?y"), "https://h.example:8443/…");
    }

    #[test]
    fn truncation_keeps_characters_whole() {
        assert_eq!(truncate("abc", 3), "abc");
        let t = truncate("ééééé", 6);
        assert!(t.len() <= 6 && t.ends_with('…'), "{t}");
    }
}
