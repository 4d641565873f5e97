//! The fleet's metric labels, typed: why a lifecycle record is refused, what became of
//! an offer, how a hand-off ended. Each enum has `ALL` (the series created at start,
//! and the values `docs/metrics.md` lists) and `as_str`.

use super::pull_hosts::HostRefusal;

/// Why a lifecycle record was refused (`vigil_fleet_events_rejected_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FleetRefusal {
    /// Unsigned, signed by a key not allowed on the topic, stale or replayed.
    Untrusted,
    /// The source URL's host could not be read, or is spelled ambiguously.
    BadHost,
    /// A link-local or cloud-metadata host.
    LinkLocalHost,
    /// A host outside `[fleet] pull_hosts`.
    HostNotAllowed,
    /// Signed before the stream's last believed record (beyond the clock skew).
    OutOfOrder,
    /// No key and no value.
    Empty,
    TooLarge,
    Malformed,
    BadStreamId,
    /// Keyed by another stream than it names.
    KeyMismatch,
    BadPlatformId,
    NoSourceUrl,
    /// Not a network stream URL (a file path, an unknown scheme).
    BadSourceUrl,
    UnknownEvent,
}

impl FleetRefusal {
    pub const ALL: [FleetRefusal; 14] = [
        FleetRefusal::Untrusted,
        FleetRefusal::BadHost,
        FleetRefusal::LinkLocalHost,
        FleetRefusal::HostNotAllowed,
        FleetRefusal::OutOfOrder,
        FleetRefusal::Empty,
        FleetRefusal::TooLarge,
        FleetRefusal::Malformed,
        FleetRefusal::BadStreamId,
        FleetRefusal::KeyMismatch,
        FleetRefusal::BadPlatformId,
        FleetRefusal::NoSourceUrl,
        FleetRefusal::BadSourceUrl,
        FleetRefusal::UnknownEvent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FleetRefusal::Untrusted => "untrusted",
            FleetRefusal::BadHost => "bad_host",
            FleetRefusal::LinkLocalHost => "link_local_host",
            FleetRefusal::HostNotAllowed => "host_not_allowed",
            FleetRefusal::OutOfOrder => "out_of_order",
            FleetRefusal::Empty => "empty",
            FleetRefusal::TooLarge => "too_large",
            FleetRefusal::Malformed => "malformed",
            FleetRefusal::BadStreamId => "bad_stream_id",
            FleetRefusal::KeyMismatch => "key_mismatch",
            FleetRefusal::BadPlatformId => "bad_platform_id",
            FleetRefusal::NoSourceUrl => "no_source_url",
            FleetRefusal::BadSourceUrl => "bad_source_url",
            FleetRefusal::UnknownEvent => "unknown_event",
        }
    }
}

impl From<HostRefusal> for FleetRefusal {
    fn from(r: HostRefusal) -> FleetRefusal {
        match r {
            HostRefusal::BadHost => FleetRefusal::BadHost,
            HostRefusal::LinkLocal => FleetRefusal::LinkLocalHost,
            HostRefusal::NotAllowed => FleetRefusal::HostNotAllowed,
        }
    }
}

/// What became of an offer (`vigil_fleet_offers_total{outcome}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfferOutcome {
    /// A worker at capacity offered a stream due to it.
    Made,
    /// This worker took another's offer.
    Taken,
    /// Another worker took it first.
    Lost,
    /// The stream's lifecycle stopped it.
    Withdrawn,
    /// The taker went silent.
    TimedOut,
}

impl OfferOutcome {
    pub const ALL: [OfferOutcome; 5] =
        [OfferOutcome::Made, OfferOutcome::Taken, OfferOutcome::Lost, OfferOutcome::Withdrawn, OfferOutcome::TimedOut];

    pub fn as_str(self) -> &'static str {
        match self {
            OfferOutcome::Made => "made",
            OfferOutcome::Taken => "taken",
            OfferOutcome::Lost => "lost",
            OfferOutcome::Withdrawn => "withdrawn",
            OfferOutcome::TimedOut => "timed_out",
        }
    }
}

/// How a stream let go with its partition ended (`vigil_fleet_handoffs_total{outcome}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handoff {
    /// Its new owner claimed it.
    Taken,
    /// Nobody claimed it in time (the worker was leaving).
    TimedOut,
    /// Nobody claimed it in time: kept running here until someone does.
    Kept,
}

impl Handoff {
    pub const ALL: [Handoff; 3] = [Handoff::Taken, Handoff::TimedOut, Handoff::Kept];

    pub fn as_str(self) -> &'static str {
        match self {
            Handoff::Taken => "taken",
            Handoff::TimedOut => "timed_out",
            Handoff::Kept => "kept",
        }
    }
}

/// A lifecycle record refused: counted and logged in one call.
pub fn refused(partition: i32, offset: i64, reason: FleetRefusal) {
    super::REJECTED.with_label_values(&[reason.as_str()]).inc();
    tracing::warn!(partition, offset, reason = reason.as_str(), "fleet: lifecycle event refused");
}

pub fn offer(outcome: OfferOutcome) {
    super::OFFERS.with_label_values(&[outcome.as_str()]).inc();
}

pub fn handoff(outcome: Handoff) {
    super::HANDOFFS.with_label_values(&[outcome.as_str()]).inc();
}

/// Creates every series at zero.
pub(super) fn precreate() {
    for r in FleetRefusal::ALL {
        let _ = super::REJECTED.with_label_values(&[r.as_str()]);
    }
    for o in OfferOutcome::ALL {
        let _ = super::OFFERS.with_label_values(&[o.as_str()]);
    }
    for h in Handoff::ALL {
        let _ = super::HANDOFFS.with_label_values(&[h.as_str()]);
    }
}

/// Counts what the fleet's state machine reports.
pub fn count(c: super::machine::Count) {
    use super::machine::Count;
    match c {
        Count::Event { start } => super::EVENTS.with_label_values(&[if start { "start" } else { "stop" }]).inc(),
        Count::Refused(reason) => {
            super::REJECTED.with_label_values(&[reason.as_str()]).inc();
            tracing::warn!(reason = reason.as_str(), "fleet: lifecycle event refused");
        }
        Count::Handoff(h) => handoff(h),
        Count::Offer(o) => offer(o),
        Count::Rejoin => super::REBALANCES.with_label_values(&["rejoin"]).inc(),
    }
}
