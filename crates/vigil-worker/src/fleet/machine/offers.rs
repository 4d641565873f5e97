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

use super::{Action, Count, FleetStream, Machine, Now, PendingOffer, Purpose, Say, Wanted};
use crate::fleet::events::OfferOutcome;
use std::time::Duration;

/// A stream waits this long for room here before it is offered.
pub const OFFER_AFTER: Duration = Duration::from_secs(2);
/// An offer nobody took is made again after this long.
pub const OFFER_AGAIN: Duration = Duration::from_secs(10);
/// A worker answers an offer after this long per stream it runs: the emptiest first.
pub const OFFER_STEP: Duration = Duration::from_millis(20);
/// A worker running a stream for an offer renews its claim this often...
pub const RENEW: Duration = Duration::from_secs(10);
/// ...and the offer's maker takes the stream back after this long without one.
pub const DELEGATE_SILENCE: Duration = Duration::from_secs(35);

impl Machine {
    /// Offers a waiting stream once it has waited long enough (and again if nobody took it).
    pub(super) fn offer_if_due(&mut self, stream: &str, now: Now, out: &mut Vec<Action>) {
        if self.left {
            return;
        }
        let Some(FleetStream::Waiting { wanted, since, offered_at, .. }) = self.streams.get_mut(stream) else {
            return;
        };
        if now.saturating_sub(*since) < OFFER_AFTER || offered_at.is_some_and(|t| now.saturating_sub(t) < OFFER_AGAIN) {
            return;
        }
        tracing::info!(stream, "fleet: at capacity: offering the stream to the other workers");
        *offered_at = Some(now);
        out.push(Action::Say(Say::Offer { stream: stream.to_string(), wanted: wanted.clone() }));
        out.push(Action::Count(Count::Offer(OfferOutcome::Made)));
    }

    /// Another worker offers a stream: take it if there is room, when due.
    pub(super) fn on_offered(&mut self, stream: String, from: String, wanted: Wanted, now: Now, out: &mut Vec<Action>) {
        if self.left {
            return;
        }
        match self.streams.get_mut(&stream) {
            Some(FleetStream::Delegate { from: f, last_claim, .. }) => {
                // Already running it (for the partition's previous owner): take the new
                // owner's offer at once, so the stream stays where it runs.
                out.push(Action::Say(Say::ClaimOffer { stream: stream.clone(), from: from.clone() }));
                (*f, *last_claim) = (from, now);
                return;
            }
            Some(FleetStream::Owned { .. }) => return,
            // A stream still running here after its partition moved is kept whatever the
            // load: it costs nothing more.
            Some(FleetStream::Stopping { .. }) => {}
            _ if self.full => return,
            _ => {}
        }
        let due = now + OFFER_STEP * self.running as u32;
        self.pending_offers.insert(stream, PendingOffer { from, wanted, due });
    }

    /// Starts the offered streams whose turn came and that nobody took meanwhile.
    pub(super) fn take_due_offers(&mut self, now: Now, out: &mut Vec<Action>) {
        let due: Vec<String> =
            self.pending_offers.iter().filter(|(_, p)| p.due <= now).map(|(s, _)| s.clone()).collect();
        for stream in due {
            let Some(offer) = self.pending_offers.remove(&stream) else { continue };
            if self.left || !self.view.offer_open(&stream) {
                continue;
            }
            match self.streams.get(&stream) {
                Some(FleetStream::Stopping { .. }) => {
                    // Still running it after losing its partition: keep it, for the
                    // partition's new owner (its plain claim would otherwise never come).
                    out.push(Action::Say(Say::ClaimOffer { stream: stream.clone(), from: offer.from.clone() }));
                    let d = FleetStream::Delegate {
                        from: offer.from,
                        started: now,
                        won: false,
                        last_claim: now,
                        unclaimed_since: None,
                    };
                    self.streams.insert(stream, d);
                }
                Some(s) if s.runs_here() => {}
                Some(_) => {}
                None => {
                    let purpose = Purpose::Offer { from: offer.from };
                    out.push(Action::Start { stream, wanted: offer.wanted, purpose });
                }
            }
        }
    }

    /// The first offer claim for `stream` was `by`'s.
    pub(super) fn on_offer_taken(&mut self, stream: &str, by: &str, now: Now, out: &mut Vec<Action>) {
        self.pending_offers.remove(stream);
        if by == self.view.me() {
            if let Some(FleetStream::Delegate { won, from, .. }) = self.streams.get_mut(stream) {
                *won = true;
                out.push(Action::Count(Count::Offer(OfferOutcome::Taken)));
                tracing::info!(stream, from, "fleet: running the stream for the worker that offered it");
            }
            return;
        }
        // The first claim after an offer was another worker's: whether this one lost the
        // race for it, or the stream was offered anew (its partition moved) and taken
        // elsewhere, the other worker runs it now.
        match self.streams.get(stream) {
            Some(FleetStream::Delegate { .. }) => {
                out.push(Action::Count(Count::Offer(OfferOutcome::Lost)));
                if self.analysed.contains(stream) {
                    // It was being analysed here already: let go once the winner has
                    // analysed a sample too, like any hand-off.
                    out.push(Action::Say(Say::HandingOff(stream.to_string())));
                    let give_up = now + self.settings.handoff;
                    let stopping = FleetStream::Stopping { since: now, give_up, partition: None, kept: false };
                    self.streams.insert(stream.to_string(), stopping);
                } else {
                    self.streams.remove(stream);
                    let why = "another worker took the offer first";
                    out.push(Action::Stop { stream: stream.to_string(), why, release: false });
                }
            }
            Some(FleetStream::Waiting { partition, wanted, .. }) => {
                tracing::info!(stream, to = by, "fleet: the offered stream runs on another worker");
                let d = FleetStream::Delegated {
                    partition: *partition,
                    to: by.to_string(),
                    wanted: wanted.clone(),
                    since: now,
                };
                self.streams.insert(stream.to_string(), d);
            }
            _ => {}
        }
    }

    /// The offer's maker took the stream back (its lifecycle said stop).
    pub(super) fn on_withdrawn(&mut self, stream: &str, out: &mut Vec<Action>) {
        self.pending_offers.remove(stream);
        if matches!(self.streams.get(stream), Some(FleetStream::Delegate { .. } | FleetStream::Stopping { .. })) {
            self.streams.remove(stream);
            self.analysed.remove(stream);
            let why = "withdrawn by the worker whose partition holds it";
            out.push(Action::Stop { stream: stream.to_string(), why, release: false });
        }
    }

    /// A worker running a stream for this one is draining: the stream is due here again
    /// (it keeps running there until its next runner claims it).
    pub(super) fn on_delegate_handing_off(&mut self, stream: &str, by: &str, now: Now) {
        if let Some(FleetStream::Delegated { partition, to, wanted, .. }) = self.streams.get(stream)
            && to == by
        {
            tracing::info!(stream, from = to, "fleet: the worker running an offered stream hands it back");
            let waiting =
                FleetStream::Waiting { partition: *partition, wanted: wanted.clone(), since: now, offered_at: None };
            self.streams.insert(stream.to_string(), waiting);
        }
    }

    /// Takes back offered streams whose runner went silent.
    pub(super) fn check_delegated(&mut self, now: Now, out: &mut Vec<Action>) {
        for (stream, s) in self.streams.iter_mut() {
            let FleetStream::Delegated { partition, to, wanted, since } = s else { continue };
            let last = self.view.offer_claim_by(stream, to).map_or(*since, |t| t.max(*since));
            if now.saturating_sub(last) > DELEGATE_SILENCE {
                tracing::warn!(stream, to, "fleet: the worker running an offered stream went silent: due here again");
                out.push(Action::Count(Count::Offer(OfferOutcome::TimedOut)));
                *s = FleetStream::Waiting {
                    partition: *partition,
                    wanted: wanted.clone(),
                    since: now,
                    offered_at: None,
                };
            }
        }
    }

    /// Renews the claims of streams run for offers; lets go of those that their
    /// partition's new owner now runs.
    pub(super) fn refresh_delegates(&mut self, now: Now, out: &mut Vec<Action>) {
        if self.left {
            return;
        }
        for (stream, s) in self.streams.iter_mut() {
            let FleetStream::Delegate { from, started, won, last_claim, .. } = s else { continue };
            if self.view.taken_since(stream, *started).is_some() {
                // The partition's owner runs it now: let go through the hand-off (it holds
                // its alerts if it knew this member runs the stream; saying so covers a
                // start that raced this member's last renewal).
                out.push(Action::Say(Say::HandingOff(stream.clone())));
                *s = FleetStream::Stopping { since: *started, give_up: now, partition: None, kept: false };
            } else if *won && now.saturating_sub(*last_claim) >= RENEW {
                out.push(Action::Say(Say::ClaimOffer { stream: stream.clone(), from: from.clone() }));
                *last_claim = now;
            }
        }
    }
}
