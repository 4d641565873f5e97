//! Why acting on a command failed, and what to do about it: retry (the platform may take
//! it later) or dead-letter (it never will). Sorted by type, never by message text.

use super::target::StreamIdError;
use std::time::Duration;

/// Why a command went to the dead-letter topic. A closed set: it is the `reason` label of
/// `vigil_actuate_dead_letters_total` and the `vigil-dead-letter-reason` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeadLetterReason {
    /// Not signed by a worker or the console (unsigned, unknown key, stale, replayed):
    /// never acted on.
    Untrusted,
    /// Not a `vigil.interrupt` v1 command (not JSON, wrong schema, empty ids).
    Malformed,
    /// The stream id cannot be parsed or mapped to the platform.
    BadStreamId,
    /// The stream is not published where this adapter acts (a WHIP stream on nginx).
    NotOnThisOrigin,
    /// The platform refused the command (HTTP 4xx other than 408 and 429).
    Rejected,
    /// nginx-rtmp dropped nobody, on every try.
    NoPublisher,
    /// The platform answered something its protocol does not (a 3xx, a non-count body).
    BadAnswer,
    /// Transient failures outlasted the retry budget.
    RetriesExhausted,
}

impl DeadLetterReason {
    pub const ALL: [DeadLetterReason; 8] = [
        DeadLetterReason::Untrusted,
        DeadLetterReason::Malformed,
        DeadLetterReason::BadStreamId,
        DeadLetterReason::NotOnThisOrigin,
        DeadLetterReason::Rejected,
        DeadLetterReason::NoPublisher,
        DeadLetterReason::BadAnswer,
        DeadLetterReason::RetriesExhausted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterReason::Untrusted => "untrusted",
            DeadLetterReason::Malformed => "malformed",
            DeadLetterReason::BadStreamId => "bad_stream_id",
            DeadLetterReason::NotOnThisOrigin => "not_on_this_origin",
            DeadLetterReason::Rejected => "rejected",
            DeadLetterReason::NoPublisher => "no_publisher",
            DeadLetterReason::BadAnswer => "bad_answer",
            DeadLetterReason::RetriesExhausted => "retries_exhausted",
        }
    }
}

/// One failed attempt to have the platform cut a stream.
#[derive(Debug, thiserror::Error)]
pub enum ActError {
    #[error("stream id {id:?} {why}")]
    StreamId { id: String, why: StreamIdError },
    #[error("stream {0} came in over WHIP: it is not published on this nginx origin")]
    NotOnThisOrigin(String),
    /// Connection refused, reset, timed out, name not resolved.
    #[error("cannot reach the platform: {0}")]
    Unreachable(String),
    #[error("the platform answered HTTP {status}")]
    Status { status: u16, retry_after: Option<Duration> },
    /// nginx-rtmp answered 200 with the count 0.
    #[error("nginx-rtmp dropped no publisher of app {app:?} name {name:?}")]
    NoPublisher { app: String, name: String },
    #[error("the platform answered {0:?}, which its protocol does not")]
    BadAnswer(String),
}

/// What the actuator does after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Try again after a backoff, within the retry budget.
    Retry {
        hint: Option<Duration>,
    },
    /// Try again a few times, briefly: the publisher may be reconnecting.
    RetryBriefly,
    DeadLetter(DeadLetterReason),
}

impl ActError {
    pub fn disposition(&self) -> Disposition {
        match self {
            ActError::StreamId { .. } => Disposition::DeadLetter(DeadLetterReason::BadStreamId),
            ActError::NotOnThisOrigin(_) => Disposition::DeadLetter(DeadLetterReason::NotOnThisOrigin),
            ActError::Unreachable(_) => Disposition::Retry { hint: None },
            ActError::Status { status, retry_after } => match status {
                408 | 429 | 500..=599 => Disposition::Retry { hint: *retry_after },
                400..=499 => Disposition::DeadLetter(DeadLetterReason::Rejected),
                _ => Disposition::DeadLetter(DeadLetterReason::BadAnswer),
            },
            ActError::NoPublisher { .. } => Disposition::RetryBriefly,
            ActError::BadAnswer(_) => Disposition::DeadLetter(DeadLetterReason::BadAnswer),
        }
    }

    /// Every value of [`ActError::kind`].
    pub const KINDS: [&'static str; 8] = [
        "bad_stream_id",
        "not_on_this_origin",
        "unreachable",
        "http_5xx",
        "http_throttled",
        "http_status",
        "no_publisher",
        "bad_answer",
    ];

    /// A bounded name for the action-outcome record of a failed attempt.
    pub fn kind(&self) -> &'static str {
        match self {
            ActError::StreamId { .. } => "bad_stream_id",
            ActError::NotOnThisOrigin(_) => "not_on_this_origin",
            ActError::Unreachable(_) => "unreachable",
            ActError::Status { status: 500..=599, .. } => "http_5xx",
            ActError::Status { status: 408 | 429, .. } => "http_throttled",
            ActError::Status { .. } => "http_status",
            ActError::NoPublisher { .. } => "no_publisher",
            ActError::BadAnswer(_) => "bad_answer",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(s: u16) -> Disposition {
        ActError::Status { status: s, retry_after: None }.disposition()
    }

    #[test]
    fn server_errors_and_throttling_are_retried_other_client_errors_are_not() {
        for s in [500, 502, 503, 504, 599, 408, 429] {
            assert_eq!(status(s), Disposition::Retry { hint: None }, "{s}");
        }
        for s in [400, 401, 403, 404, 409, 410, 422, 499] {
            assert_eq!(status(s), Disposition::DeadLetter(DeadLetterReason::Rejected), "{s}");
        }
        for s in [100, 204 + 100, 302, 600] {
            assert_eq!(status(s), Disposition::DeadLetter(DeadLetterReason::BadAnswer), "{s}");
        }
        assert_eq!(ActError::Unreachable("refused".into()).disposition(), Disposition::Retry { hint: None });
        let np = ActError::NoPublisher { app: "live".into(), name: "x".into() };
        assert_eq!(np.disposition(), Disposition::RetryBriefly);
    }

    #[test]
    fn reason_labels_are_distinct() {
        let labels: std::collections::BTreeSet<_> = DeadLetterReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(labels.len(), DeadLetterReason::ALL.len());
    }
}
