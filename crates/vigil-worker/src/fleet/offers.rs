//! Streams a worker at capacity cannot take go to a worker that can.
//!
//! Kafka's group protocol gives every member its share of partitions whatever its
//! capacity, so a full worker may own a partition holding streams it cannot run. It does
//! not leave them waiting: after `OFFER_AFTER` it offers each on the owners topic, and a
//! worker with room takes it (the least loaded answers first; the first offer claim read
//! after the offer wins, the same on every worker, and any other taker stops at once).
//! The offer's maker keeps the stream's lifecycle: a `stop` withdraws it, and if the
//! taker goes silent (no renewed claim for `DELEGATE_SILENCE`) the stream is due here
//! again. A taker that drains announces the hand-off and runs the stream until the next
//! runner claims it, like any other hand-off.

use super::{Member, Stopping, Wanted};
use crate::streams::StartError;
use std::time::{Duration, Instant};

/// A stream waits this long for room here before it is offered.
const OFFER_AFTER: Duration = Duration::from_secs(2);
/// An offer nobody took is made again after this long.
const OFFER_AGAIN: Duration = Duration::from_secs(10);
/// A worker answers an offer after this long per stream it runs: the emptiest first.
const OFFER_STEP: Duration = Duration::from_millis(20);
/// A worker running a stream for an offer renews its claim this often...
pub(super) const RENEW: Duration = Duration::from_secs(10);
/// ...and the offer's maker takes the stream back after this long without one.
const DELEGATE_SILENCE: Duration = Duration::from_secs(35);

/// A stream due here that the worker cannot take yet.
pub struct Waiting {
    pub partition: i32,
    pub wanted: Wanted,
    since: Instant,
    offered_at: Option<Instant>,
}

impl Waiting {
    pub fn new(partition: i32, wanted: Wanted) -> Self {
        Waiting { partition, wanted, since: Instant::now(), offered_at: None }
    }
}

/// A stream due here that another worker runs for this one.
pub struct Delegated {
    pub partition: i32,
    to: String,
    wanted: Wanted,
    since: Instant,
}

/// A stream this worker runs for another's offer.
pub struct Delegate {
    from: String,
    started: Instant,
    /// Its offer claim was the first: the stream is this worker's to run.
    pub(super) won: bool,
    last_claim: Instant,
}

impl Delegate {
    /// Taken at `now`, not yet known to have won.
    fn new(from: String, now: Instant) -> Self {
        Delegate { from, started: now, won: false, last_claim: now }
    }
}

/// An offer this worker will take when due.
pub struct PendingOffer {
    from: String,
    wanted: Wanted,
    due: Instant,
}

impl Member {
    /// Offers a waiting stream once it has waited long enough (and again if nobody took it).
    pub(super) fn offer_if_due(&mut self, stream: &str, waits: &mut Waiting) {
        if self.left
            || waits.since.elapsed() < OFFER_AFTER
            || waits.offered_at.is_some_and(|t| t.elapsed() < OFFER_AGAIN)
        {
            return;
        }
        tracing::info!(stream, "fleet: at capacity: offering the stream to the other workers");
        self.claims.offer(stream, &waits.wanted);
        waits.offered_at = Some(Instant::now());
        super::events::offer(super::events::OfferOutcome::Made);
    }

    /// Another worker offers a stream: take it if there is room, when due.
    pub(super) fn on_offered(&mut self, stream: String, from: String, wanted: Wanted) {
        if self.left {
            return;
        }
        if let Some(d) = self.delegates.get_mut(&stream) {
            // Already running it (for the partition's previous owner): take the new
            // owner's offer at once, so the stream stays where it runs.
            self.claims.claim_offer(&stream, &from);
            (d.from, d.last_claim) = (from, Instant::now());
            return;
        }
        // A stream still running here after its partition moved is kept whatever the
        // load: it costs nothing more.
        let running_here = self.stopping.contains_key(&stream);
        if self.owned.contains_key(&stream) || (!running_here && self.streams.at_capacity().is_some()) {
            return;
        }
        let due = Instant::now() + OFFER_STEP * self.streams.len() as u32;
        self.pending_offers.insert(stream, PendingOffer { from, wanted, due });
    }

    /// Starts the offered streams whose turn came and that nobody took meanwhile.
    pub(super) fn take_due_offers(&mut self) {
        let now = Instant::now();
        let due: Vec<String> =
            self.pending_offers.iter().filter(|(_, p)| p.due <= now).map(|(s, _)| s.clone()).collect();
        for stream in due {
            let Some(offer) = self.pending_offers.remove(&stream) else { continue };
            if self.left || !self.claims.offer_open(&stream) {
                continue;
            }
            if self.streams.handover(&stream).is_some() {
                if self.stopping.remove(&stream).is_some() {
                    // Still running it after losing its partition: keep it, for the
                    // partition's new owner (its plain claim would otherwise never come).
                    self.claims.claim_offer(&stream, &offer.from);
                    self.delegates.insert(stream, Delegate::new(offer.from, now));
                }
                continue;
            }
            match self.start_here(&stream, &offer.wanted) {
                Ok(()) => {
                    // The offer claim goes out at once: the race for the offer is decided
                    // by the claims' order. A plain claim follows the first analysed
                    // sample, as for any stream started here: only that one lets a
                    // worker still running the stream go (make-before-break).
                    self.claims.claim_offer(&stream, &offer.from);
                    self.delegates.insert(stream, Delegate::new(offer.from, now));
                }
                Err(StartError::AlreadyLive(_)) => {}
                Err(e) => tracing::info!(stream, "fleet: offer not taken: {e}"),
            }
        }
    }

    /// The first offer claim for `stream` was `by`'s.
    pub(super) fn on_offer_taken(&mut self, stream: &str, by: &str) {
        self.pending_offers.remove(stream);
        if by == self.claims.me() {
            if let Some(d) = self.delegates.get_mut(stream) {
                d.won = true;
                super::events::offer(super::events::OfferOutcome::Taken);
                tracing::info!(stream, from = d.from, "fleet: running the stream for the worker that offered it");
            }
            return;
        }
        // The first claim after an offer was another worker's: whether this one lost the
        // race for it, or the stream was offered anew (its partition moved) and taken
        // elsewhere, the other worker runs it now.
        if self.delegates.remove(stream).is_some() {
            self.unclaimed.remove(stream);
            super::events::offer(super::events::OfferOutcome::Lost);
            if self.streams.has_analysed(stream) {
                // It was being analysed here already: let go once the winner has
                // analysed a sample too, like any hand-off.
                let now = Instant::now();
                self.claims.handing_off(stream);
                self.stopping.insert(stream.to_string(), Stopping::new(now, now + self.handoff));
            } else {
                self.streams.stop(stream, "another worker took the offer first");
            }
        }
        if let Some(w) = self.waiting.remove(stream) {
            tracing::info!(stream, to = by, "fleet: the offered stream runs on another worker");
            let d = Delegated { partition: w.partition, to: by.to_string(), wanted: w.wanted, since: Instant::now() };
            self.delegated.insert(stream.to_string(), d);
        }
    }

    /// The offer's maker took the stream back (its lifecycle said stop).
    pub(super) fn on_withdrawn(&mut self, stream: &str) {
        self.pending_offers.remove(stream);
        self.unclaimed.remove(stream);
        if self.delegates.remove(stream).is_some() || self.stopping.remove(stream).is_some() {
            self.streams.stop(stream, "withdrawn by the worker whose partition holds it");
        }
    }

    /// A worker running a stream for this one is draining: the stream is due here again
    /// (it keeps running there until its next runner claims it).
    pub(super) fn on_delegate_handing_off(&mut self, stream: &str, by: &str) {
        if self.delegated.get(stream).is_some_and(|d| d.to == by)
            && let Some(d) = self.delegated.remove(stream)
        {
            tracing::info!(stream, from = d.to, "fleet: the worker running an offered stream hands it back");
            self.waiting.insert(stream.to_string(), Waiting::new(d.partition, d.wanted));
        }
    }

    /// Takes back offered streams whose runner went silent.
    pub(super) fn check_delegated(&mut self) {
        let silent: Vec<String> = self
            .delegated
            .iter()
            .filter(|(s, d)| {
                let last = self.claims.offer_claim_by(s, &d.to).map_or(d.since, |t| t.max(d.since));
                last.elapsed() > DELEGATE_SILENCE
            })
            .map(|(s, _)| s.clone())
            .collect();
        for stream in silent {
            let Some(d) = self.delegated.remove(&stream) else { continue };
            tracing::warn!(
                stream,
                to = d.to,
                "fleet: the worker running an offered stream went silent: due here again"
            );
            super::events::offer(super::events::OfferOutcome::TimedOut);
            self.waiting.insert(stream, Waiting::new(d.partition, d.wanted));
        }
    }

    /// Renews the claims of streams run for offers; lets go of those that ended here or
    /// that their partition's new owner now runs.
    pub(super) fn refresh_delegates(&mut self) {
        if self.left {
            return;
        }
        let now = Instant::now();
        let mut gone = Vec::new();
        for (stream, d) in self.delegates.iter_mut() {
            if self.streams.handover(stream).is_none() {
                gone.push((stream.clone(), None));
            } else if self.claims.taken_since(stream, d.started).is_some() {
                gone.push((stream.clone(), Some(d.started)));
            } else if d.won && d.last_claim.elapsed() >= RENEW {
                self.claims.claim_offer(stream, &d.from);
                d.last_claim = now;
            }
        }
        for (stream, taken_since) in gone {
            self.delegates.remove(&stream);
            if let Some(since) = taken_since {
                // The partition's owner runs it now: let go through the hand-off (it
                // holds its alerts if it knew this worker runs the stream; saying so
                // covers a start that raced this worker's last renewal).
                self.claims.handing_off(&stream);
                self.stopping.insert(stream, Stopping::new(since, now));
            }
        }
    }

    /// On leaving the group: the streams run for offers are handed back like any other.
    pub(super) fn hand_back_delegates(&mut self) {
        let give_up = Instant::now() + self.handoff;
        for (stream, _) in std::mem::take(&mut self.delegates) {
            self.claims.handing_off(&stream);
            self.stopping.insert(stream, Stopping::new(Instant::now(), give_up));
        }
    }
}
