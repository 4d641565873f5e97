//! One delivery attempt: a blocking `POST` with a timeout, and what the outbox does next.
//!
//! | Answer | Class | Next attempt |
//! |---|---|---|
//! | 2xx | delivered | none |
//! | 429, 408, 5xx | retry | backoff, or `Retry-After` seconds when longer (capped at `max_ms`) |
//! | refused, reset, timed out, DNS | retry | backoff |
//! | other 4xx, 1xx, 3xx (redirects are not followed) | refused | `max_ms` |
//! | channel no longer configured | refused | `max_ms` |
//!
//! Backoff: `initial_ms` doubled per failed attempt, capped at `max_ms`, with jitter: the
//! wait is uniform in `[ceiling/2, ceiling]`, so consoles that failed together do not
//! retry together.
//!
//! **A refused page is not dropped.** An endpoint that answers 400 or 403 will most
//! likely keep doing so until someone fixes the configuration (a revoked routing key, a
//! deleted Slack channel), but the page is still owed: it stays in the outbox with its
//! error, is tried again every `max_ms` so it goes out once the fix lands, and every
//! refusal counts `vigil_console_pages_total{result="refused"}` and logs an error. Alert
//! on any increase of that series. Nothing here gives up on a page; the store may expire
//! delivered items, never undelivered ones.

use super::config::{ResolvedPaging, RetryConfig};
use super::{Request, events, request_for};
use crate::model::{Channel, OutboxItem, UnixMs, now_ms};
use std::io::Read;
use std::time::{Duration, Instant};

/// What the outbox records after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Mark the item delivered.
    Delivered,
    /// Keep it: count the attempt, record `error`, try again at `next_attempt_ms`.
    Retry { next_attempt_ms: UnixMs, error: DeliveryError },
}

/// Why an attempt did not deliver. Its `Display` is what the outbox records as
/// `last_error`: never a secret (no Slack URL, no key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    #[error("no answer within {0} s")]
    TimedOut(u64),
    /// Connection refused or reset, name not resolved, TLS failed.
    #[error("cannot reach the endpoint: {0}")]
    Unreachable(String),
    /// 408, 429 or 5xx: the endpoint cannot take it now.
    #[error("HTTP {status}, will retry{}: {body}", retry_after.map(|d| format!(" (Retry-After {} s)", d.as_secs())).unwrap_or_default())]
    Unavailable { status: u16, retry_after: Option<Duration>, body: String },
    /// Any other answer but 2xx: the endpoint will not take this page as it is.
    #[error("refused with HTTP {status}: {body}")]
    Refused { status: u16, body: String },
    #[error("the {} channel is not configured; the page waits until it is", .0.as_str())]
    NotConfigured(Channel),
    #[error("internal error: {0}")]
    Internal(String),
}

impl DeliveryError {
    /// Whether the endpoint (or the configuration) refused the page, rather than failed
    /// to take it for now: retried at the longest backoff and counted as `refused`.
    pub fn is_refusal(&self) -> bool {
        matches!(self, DeliveryError::Refused { .. } | DeliveryError::NotConfigured(_))
    }

    /// A short fixed name, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            DeliveryError::TimedOut(_) => "timed_out",
            DeliveryError::Unreachable(_) => "unreachable",
            DeliveryError::Unavailable { status: 429, .. } => "throttled",
            DeliveryError::Unavailable { .. } => "unavailable",
            DeliveryError::Refused { .. } => "refused",
            DeliveryError::NotConfigured(_) => "not_configured",
            DeliveryError::Internal(_) => "internal",
        }
    }
}

/// Sends `item` now and logs, counts and classifies the attempt (blocking: call it from
/// a blocking thread, as [`super::deliver_one`] does).
pub fn deliver_blocking(cfg: &ResolvedPaging, item: &OutboxItem) -> Delivery {
    let started = Instant::now();
    let result = request_for(cfg, item, now_ms()).and_then(|req| send(&cfg.agent, &req, cfg.config.timeout_secs));
    let elapsed = started.elapsed();
    match result {
        Ok(status) => {
            events::delivered(item, status, elapsed);
            Delivery::Delivered
        }
        Err(error) => {
            let delay = next_delay(&cfg.config.retry, item.attempts, &error, jitter());
            // No request was made for an unconfigured channel: nothing to time.
            let elapsed = (!matches!(error, DeliveryError::NotConfigured(_))).then_some(elapsed);
            if error.is_refusal() {
                events::refused(item, delay, &error, elapsed);
            } else {
                events::retry(item, delay, &error, elapsed);
            }
            Delivery::Retry { next_attempt_ms: now_ms().saturating_add(delay.as_millis() as i64), error }
        }
    }
}

/// One `POST`; `Ok(status)` for 2xx.
pub fn send(agent: &ureq::Agent, req: &Request, timeout_secs: u64) -> Result<u16, DeliveryError> {
    let mut r = agent
        .post(&req.url)
        .set("content-type", "application/json")
        .set("user-agent", concat!("vigil-console/", env!("CARGO_PKG_VERSION")));
    for (k, v) in &req.headers {
        r = r.set(k, v);
    }
    match r.send_bytes(&req.body) {
        Ok(resp) => {
            let status = resp.status();
            // Read the (small) answer so the connection can be reused.
            let body = snippet(resp);
            if (200..300).contains(&status) { Ok(status) } else { Err(DeliveryError::Refused { status, body }) }
        }
        Err(ureq::Error::Status(status, resp)) => {
            let retry_after = retry_after(&resp);
            Err(classify(status, retry_after, snippet(resp)))
        }
        Err(ureq::Error::Transport(t)) => Err(transport(&t, timeout_secs)),
    }
}

/// A non-2xx answer: retry what may pass later, refuse the rest.
pub fn classify(status: u16, retry_after: Option<Duration>, body: String) -> DeliveryError {
    match status {
        408 | 429 | 500..=599 => DeliveryError::Unavailable { status, retry_after, body },
        _ => DeliveryError::Refused { status, body },
    }
}

/// A transport failure, described without its URL (ureq's `Display` starts with it, and
/// a Slack URL is a secret).
fn transport(t: &ureq::Transport, timeout_secs: u64) -> DeliveryError {
    let io = std::error::Error::source(t).and_then(|s| s.downcast_ref::<std::io::Error>());
    if io.is_some_and(|e| matches!(e.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock)) {
        return DeliveryError::TimedOut(timeout_secs);
    }
    let mut detail = t.kind().to_string();
    if let Some(m) = t.message() {
        detail.push_str(": ");
        detail.push_str(m);
    }
    if let Some(s) = std::error::Error::source(t) {
        detail.push_str(&format!(": {s}"));
    }
    DeliveryError::Unreachable(detail)
}

/// `Retry-After` in seconds (the HTTP-date form is rare on APIs and ignored).
fn retry_after(resp: &ureq::Response) -> Option<Duration> {
    resp.header("retry-after")?.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// The start of an answer's body, printable, for the error (PagerDuty's 400 names the
/// faulty field). At most 4 KiB is read: a hostile answer must not fill memory.
fn snippet(resp: ureq::Response) -> String {
    let mut buf = Vec::new();
    let _ = resp.into_reader().take(4096).read_to_end(&mut buf);
    let text: String = String::from_utf8_lossy(&buf)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    super::truncate(&text, 300)
}

/// The wait before the next attempt, after `attempts` earlier failed attempts and this
/// one, which failed with `error`. `jitter` is uniform in `[0, 1)`.
pub fn next_delay(retry: &RetryConfig, attempts: u32, error: &DeliveryError, jitter: f64) -> Duration {
    let max = Duration::from_millis(retry.max_ms);
    if error.is_refusal() {
        return max;
    }
    let delay = backoff(retry, attempts, jitter);
    match error {
        DeliveryError::Unavailable { retry_after: Some(hint), .. } => (*hint).max(delay).min(max),
        _ => delay,
    }
}

/// `initial_ms · 2^attempts`, capped at `max_ms`, then jittered into `[ceiling/2, ceiling]`.
pub fn backoff(retry: &RetryConfig, attempts: u32, jitter: f64) -> Duration {
    let ceiling = retry.initial_ms.saturating_mul(1u64 << attempts.min(40)).min(retry.max_ms);
    let half = ceiling / 2;
    let spread = ((ceiling - half) as f64 * jitter.clamp(0.0, 1.0)) as u64;
    Duration::from_millis((half + spread).min(ceiling))
}

/// Uniform in `[0, 1)` from the OS's generator (0.5 if it fails).
pub fn jitter() -> f64 {
    getrandom::u32().map_or(0.5, |x| f64::from(x) / (f64::from(u32::MAX) + 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: RetryConfig = RetryConfig { initial_ms: 1_000, max_ms: 300_000 };

    #[test]
    fn backoff_doubles_within_its_jitter_bounds_up_to_the_cap() {
        for attempts in 0..64 {
            let ceiling = (1_000u64 << attempts.min(40)).min(300_000);
            for j in [0.0, 0.25, 0.5, 0.999_999, 1.0] {
                let d = backoff(&R, attempts, j).as_millis() as u64;
                assert!(d >= ceiling / 2 && d <= ceiling, "attempts {attempts} jitter {j}: {d} ms");
            }
        }
        assert_eq!(backoff(&R, 0, 0.0), Duration::from_millis(500));
        assert_eq!(backoff(&R, 0, 1.0), Duration::from_millis(1_000));
        assert_eq!(backoff(&R, 3, 1.0), Duration::from_millis(8_000));
        assert_eq!(backoff(&R, 9, 1.0), Duration::from_millis(300_000));
        assert_eq!(backoff(&R, u32::MAX, 0.0), Duration::from_millis(150_000));
    }

    #[test]
    fn random_jitter_stays_in_range_and_varies() {
        let js: Vec<f64> = (0..64).map(|_| jitter()).collect();
        assert!(js.iter().all(|j| (0.0..1.0).contains(j)));
        assert!(js.iter().any(|j| (j - js[0]).abs() > 1e-9), "jitter is not constant");
    }

    #[test]
    fn retry_after_lengthens_the_wait_but_never_past_the_cap() {
        let e = |s| classify(429, Some(Duration::from_secs(s)), String::new());
        assert_eq!(next_delay(&R, 0, &e(7), 1.0), Duration::from_secs(7));
        // A shorter hint than the backoff does not shorten it.
        assert_eq!(next_delay(&R, 4, &e(1), 1.0), Duration::from_secs(16));
        assert_eq!(next_delay(&R, 0, &e(86_400), 1.0), Duration::from_millis(300_000));
    }

    #[test]
    fn statuses_are_classified() {
        for s in [408, 429, 500, 502, 503, 599] {
            assert!(!classify(s, None, String::new()).is_refusal(), "{s}");
        }
        for s in [400, 401, 403, 404, 410, 413, 422] {
            assert!(classify(s, None, String::new()).is_refusal(), "{s}");
        }
        let refused = classify(400, None, "bad".into());
        assert_eq!(next_delay(&R, 0, &refused, 0.0), Duration::from_millis(300_000));
        assert!(DeliveryError::NotConfigured(Channel::Slack).is_refusal());
    }
}
