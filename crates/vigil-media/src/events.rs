//! The decode + sample stage's failure labels, typed. Each label a metric carries is a
//! variant here with `ALL` and `as_str`: series are created from `ALL` at start (an
//! alert's `rate()` sees the first one), `docs/metrics.md` lists the same values (the
//! metrics test holds both against a scrape), and nothing counts with a hand-typed string.

use crate::metrics::METRICS;
use serde::{Deserialize, Serialize};

/// Why a decode child gave up, as it tells the worker across the pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChildFailure {
    /// GStreamer would not initialise.
    Init,
    /// The child could not confine itself (limits, namespace, seccomp).
    Confine,
    /// The decoding pipeline could not be built.
    Pipeline,
    /// The stream is over a limit or unusable (size, rate, bitrate, format changes).
    Refused,
    /// A WHIP offer the child could not answer.
    Offer,
    /// The WebRTC session failed or was lost.
    Whip,
    /// No data for the stall limit.
    Stalled,
    /// The child could not read the worker's messages.
    Protocol,
    /// The decoder failed on the stream's data.
    Decode,
    /// The child could not write to the worker.
    Pipe,
}

impl ChildFailure {
    pub const ALL: [ChildFailure; 10] = [
        ChildFailure::Init,
        ChildFailure::Confine,
        ChildFailure::Pipeline,
        ChildFailure::Refused,
        ChildFailure::Offer,
        ChildFailure::Whip,
        ChildFailure::Stalled,
        ChildFailure::Protocol,
        ChildFailure::Decode,
        ChildFailure::Pipe,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ChildFailure::Init => "init",
            ChildFailure::Confine => "confine",
            ChildFailure::Pipeline => "pipeline",
            ChildFailure::Refused => "refused",
            ChildFailure::Offer => "offer",
            ChildFailure::Whip => "whip",
            ChildFailure::Stalled => "stalled",
            ChildFailure::Protocol => "protocol",
            ChildFailure::Decode => "decode",
            ChildFailure::Pipe => "pipe",
        }
    }

    /// What the supervisor does with it: `None` ends the stream without a retry (the
    /// source is unusable, or a WHIP offer failed); else the child is restarted for
    /// this reason.
    pub fn restart(self) -> Option<StreamFailure> {
        match self {
            ChildFailure::Init
            | ChildFailure::Confine
            | ChildFailure::Pipeline
            | ChildFailure::Refused
            | ChildFailure::Offer => None,
            ChildFailure::Whip => Some(StreamFailure::Whip),
            ChildFailure::Stalled => Some(StreamFailure::Stalled),
            ChildFailure::Protocol => Some(StreamFailure::Protocol),
            ChildFailure::Decode => Some(StreamFailure::Decode),
            ChildFailure::Pipe => Some(StreamFailure::Pipe),
        }
    }
}

/// Why a stream's decoding failed (`vigil_media_errors_total{kind}`); all but
/// `refused`, `no_video` and `frame` restart a live stream's decode child
/// (`vigil_media_decoder_restarts_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFailure {
    /// The child died (signal, exit without a report).
    Crash,
    /// No heartbeat within the watchdog.
    Hung,
    /// No frame within the stall limit.
    Stalled,
    /// The child used more CPU than `isolation.max_cpu_cores`.
    Cpu,
    /// The child could not be started.
    Spawn,
    /// The child's messages were malformed, or it could not read the worker's.
    Protocol,
    /// The decoder failed on the stream's data.
    Decode,
    /// The child could not write to the worker.
    Pipe,
    /// A WebRTC session failed (it ends: a publisher must come again).
    Whip,
    /// Over a limit or unusable: the stream ends.
    Refused,
    /// A file or URL without a video track.
    NoVideo,
    /// A decoded frame could not be read.
    Frame,
}

impl StreamFailure {
    pub const ALL: [StreamFailure; 12] = [
        StreamFailure::Crash,
        StreamFailure::Hung,
        StreamFailure::Stalled,
        StreamFailure::Cpu,
        StreamFailure::Spawn,
        StreamFailure::Protocol,
        StreamFailure::Decode,
        StreamFailure::Pipe,
        StreamFailure::Whip,
        StreamFailure::Refused,
        StreamFailure::NoVideo,
        StreamFailure::Frame,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StreamFailure::Crash => "crash",
            StreamFailure::Hung => "hung",
            StreamFailure::Stalled => "stalled",
            StreamFailure::Cpu => "cpu",
            StreamFailure::Spawn => "spawn",
            StreamFailure::Protocol => "protocol",
            StreamFailure::Decode => "decode",
            StreamFailure::Pipe => "pipe",
            StreamFailure::Whip => "whip",
            StreamFailure::Refused => "refused",
            StreamFailure::NoVideo => "no_video",
            StreamFailure::Frame => "frame",
        }
    }
}

/// Why a decode child was started again (`vigil_media_decoder_restarts_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    Failed(StreamFailure),
    /// A live pulled source ended; it may come back.
    SourceEnded,
}

impl Restart {
    /// Every reason a child is restarted for (WHIP sessions, refusals and file errors
    /// end their stream instead).
    pub const ALL: [Restart; 9] = [
        Restart::Failed(StreamFailure::Crash),
        Restart::Failed(StreamFailure::Hung),
        Restart::Failed(StreamFailure::Stalled),
        Restart::Failed(StreamFailure::Cpu),
        Restart::Failed(StreamFailure::Spawn),
        Restart::Failed(StreamFailure::Protocol),
        Restart::Failed(StreamFailure::Decode),
        Restart::Failed(StreamFailure::Pipe),
        Restart::SourceEnded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Restart::Failed(f) => f.as_str(),
            Restart::SourceEnded => "source_ended",
        }
    }
}

/// A connection or publish the ingest servers refused (`vigil_media_errors_total{kind}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestRefusal {
    /// An RTMP connection failed on its input (handshake, chunk stream, protocol).
    Rtmp,
    /// One address held too many RTMP connections.
    RtmpPerIp,
    /// The RTMP server held its most connections.
    RtmpBusy,
    /// A wrong or expired stream key.
    RtmpKey,
    /// Too many failed key attempts from one address.
    RtmpKeyLimited,
    /// A revoked stream key (at publish, or the live publish closed).
    RtmpKeyRevoked,
    /// A connection that did not publish in time, or a publisher that went silent.
    RtmpDeadline,
    /// A publish whose declared video is over the limits.
    RtmpVideo,
    WhipKey,
    WhipKeyLimited,
    WhipKeyRevoked,
    /// A WHIP offer refused (malformed, no video, over the limits).
    WhipOffer,
    /// The revoked-keys file could not be read again (the old list stays).
    RevokedKeysReload,
}

impl IngestRefusal {
    pub const ALL: [IngestRefusal; 13] = [
        IngestRefusal::Rtmp,
        IngestRefusal::RtmpPerIp,
        IngestRefusal::RtmpBusy,
        IngestRefusal::RtmpKey,
        IngestRefusal::RtmpKeyLimited,
        IngestRefusal::RtmpKeyRevoked,
        IngestRefusal::RtmpDeadline,
        IngestRefusal::RtmpVideo,
        IngestRefusal::WhipKey,
        IngestRefusal::WhipKeyLimited,
        IngestRefusal::WhipKeyRevoked,
        IngestRefusal::WhipOffer,
        IngestRefusal::RevokedKeysReload,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            IngestRefusal::Rtmp => "rtmp",
            IngestRefusal::RtmpPerIp => "rtmp_per_ip",
            IngestRefusal::RtmpBusy => "rtmp_busy",
            IngestRefusal::RtmpKey => "rtmp_key",
            IngestRefusal::RtmpKeyLimited => "rtmp_key_limited",
            IngestRefusal::RtmpKeyRevoked => "rtmp_key_revoked",
            IngestRefusal::RtmpDeadline => "rtmp_deadline",
            IngestRefusal::RtmpVideo => "rtmp_video",
            IngestRefusal::WhipKey => "whip_key",
            IngestRefusal::WhipKeyLimited => "whip_key_limited",
            IngestRefusal::WhipKeyRevoked => "whip_key_revoked",
            IngestRefusal::WhipOffer => "whip_offer",
            IngestRefusal::RevokedKeysReload => "revoked_keys_reload",
        }
    }
}

/// Creates every series at zero (called when the metrics are registered).
pub(crate) fn precreate() {
    for f in StreamFailure::ALL {
        let _ = METRICS.errors.with_label_values(&[f.as_str()]);
    }
    for r in IngestRefusal::ALL {
        let _ = METRICS.errors.with_label_values(&[r.as_str()]);
    }
    for r in Restart::ALL {
        let _ = METRICS.restarts.with_label_values(&[r.as_str()]);
    }
}

/// A stream's decoding failed (counted; the caller logs with the stream's context).
pub fn stream_failed(kind: StreamFailure) {
    METRICS.errors.with_label_values(&[kind.as_str()]).inc();
}

/// A decode child is started again; a failure is counted as one too.
pub fn decoder_restarted(reason: Restart) {
    METRICS.restarts.with_label_values(&[reason.as_str()]).inc();
    if let Restart::Failed(f) = reason {
        stream_failed(f);
    }
}

/// An ingest server refused a connection, publish or offer.
pub fn ingest_refused(kind: IngestRefusal) {
    METRICS.errors.with_label_values(&[kind.as_str()]).inc();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_distinct_and_child_failures_cross_the_pipe_by_name() {
        let mut errors: Vec<&str> = StreamFailure::ALL.iter().map(|f| f.as_str()).collect();
        errors.extend(IngestRefusal::ALL.iter().map(|r| r.as_str()));
        let unique: std::collections::BTreeSet<&str> = errors.iter().copied().collect();
        assert_eq!(unique.len(), errors.len(), "an error kind spelled twice: {errors:?}");
        for f in ChildFailure::ALL {
            let wire = serde_json::to_string(&f).unwrap();
            assert_eq!(wire, format!("\"{}\"", f.as_str()));
            assert_eq!(serde_json::from_str::<ChildFailure>(&wire).unwrap(), f);
            // A failure that restarts is counted under a reason that exists from the start.
            if let Some(s) = f.restart().filter(|s| *s != StreamFailure::Whip) {
                assert!(Restart::ALL.contains(&Restart::Failed(s)), "{f:?}");
            }
        }
        // `pipe` is its own kind (it was counted as `decode`).
        assert_eq!(ChildFailure::Pipe.restart(), Some(StreamFailure::Pipe));
        assert!(serde_json::from_str::<ChildFailure>("\"bogus\"").is_err());
    }
}
