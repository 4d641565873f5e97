//! What this member knows from the owners topic: who claimed which stream and when, who
//! is handing one off, which offers are open. Times are the member's clock when it read
//! each record (records of one stream share a partition, so every worker reads them in
//! the same order).

use super::{Heard, Now, Wanted};
use std::collections::BTreeMap;
use std::time::Duration;

/// What another worker said that this member acts on.
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    /// `by` was revoked the stream (or let it go) and still alerts on it.
    HandingOff {
        stream: String,
        by: String,
    },
    Released {
        stream: String,
        incident: Option<vigil_fusion::Incident>,
    },
    /// Another worker offers a stream (checked like a lifecycle start).
    Offered {
        stream: String,
        from: String,
        wanted: Wanted,
    },
    /// The first offer claim after an offer: `by` runs the stream (maybe this member).
    OfferTaken {
        stream: String,
        by: String,
    },
    Withdrawn(String),
}

#[derive(Debug, Default)]
pub struct OwnersView {
    me: String,
    /// Stream → the other worker whose claim for it was last read, and when.
    seen: BTreeMap<String, (String, Now)>,
    /// Stream → when another worker last announced it is handing it off.
    handing_off: BTreeMap<String, Now>,
    /// Stream → when another worker first announced handing it off, until any worker
    /// claims it (a hand-off nobody completes).
    unclaimed_handoffs: BTreeMap<String, Now>,
    /// Stream → the open offer for it: its maker, and who took it (once claimed).
    offers: BTreeMap<String, (String, Option<String>)>,
    /// Stream → the worker whose offer claim for it was last read, and when (liveness of
    /// a stream running elsewhere for this member).
    offer_claims: BTreeMap<String, (String, Now)>,
}

impl OwnersView {
    pub fn new(me: &str) -> OwnersView {
        OwnersView { me: me.to_string(), ..OwnersView::default() }
    }

    pub fn me(&self) -> &str {
        &self.me
    }

    /// Takes in one record; what the member must act on, if anything.
    pub fn hear(&mut self, heard: Heard, now: Now) -> Option<Notice> {
        match &heard {
            Heard::HandingOff { stream, by } if *by != self.me => {
                self.unclaimed_handoffs.entry(stream.clone()).or_insert(now);
            }
            Heard::HandingOff { .. } | Heard::Offered { .. } => {}
            Heard::Claim { stream, .. } | Heard::Released { stream, .. } | Heard::Withdrawn { stream, .. } => {
                self.unclaimed_handoffs.remove(stream);
            }
        }
        match heard {
            Heard::Claim { stream, owner, for_offer: Some(_) } => {
                let mut notice = None;
                if let Some((_, taken)) = self.offers.get_mut(&stream).filter(|(_, t)| t.is_none()) {
                    *taken = Some(owner.clone());
                    notice = Some(Notice::OfferTaken { stream: stream.clone(), by: owner.clone() });
                }
                if owner != self.me {
                    self.offer_claims.insert(stream, (owner, now));
                }
                notice
            }
            Heard::Claim { stream, owner, .. } => {
                if owner != self.me {
                    self.seen.insert(stream, (owner, now));
                }
                None
            }
            Heard::Offered { stream, by, wanted } => {
                // A new offer reopens the stream, this member's own included.
                self.offers.insert(stream.clone(), (by.clone(), None));
                match wanted {
                    Some(wanted) if by != self.me => Some(Notice::Offered { stream, from: by, wanted }),
                    None if by != self.me => {
                        tracing::warn!(stream, "fleet: an offer refused (bad stream id, URL, host or account)");
                        None
                    }
                    _ => None,
                }
            }
            Heard::Withdrawn { stream, by } => {
                // From the offer's maker, or from the stream's partition owner now (the
                // partition may have moved since the offer): the lifecycle said stop.
                self.offers.remove(&stream);
                self.offer_claims.remove(&stream);
                (by != self.me).then_some(Notice::Withdrawn(stream))
            }
            Heard::HandingOff { stream, by } if by != self.me => {
                self.handing_off.insert(stream.clone(), now);
                Some(Notice::HandingOff { stream, by })
            }
            Heard::Released { stream, by, to, incident } if to == self.me && by != self.me => {
                Some(Notice::Released { stream, incident })
            }
            _ => None,
        }
    }

    /// Another worker claimed `stream` at or after `since`: which one.
    pub fn taken_since(&self, stream: &str, since: Now) -> Option<&str> {
        self.seen.get(stream).filter(|(_, at)| *at >= since).map(|(owner, _)| owner.as_str())
    }

    /// Another worker has been handing a stream off for at least `unclaimed_for`, still
    /// says so (within `announced_within`), and nobody has claimed it: the stream's new
    /// partition owner never started it.
    pub fn handoff_unclaimed(&self, unclaimed_for: Duration, announced_within: Duration, now: Now) -> bool {
        self.unclaimed_handoffs.iter().any(|(stream, first)| {
            now.saturating_sub(*first) >= unclaimed_for && self.handed_over_lately(stream, announced_within, now)
        })
    }

    /// Another worker announced it is handing `stream` off, within `within`.
    pub fn handed_over_lately(&self, stream: &str, within: Duration, now: Now) -> bool {
        self.handing_off.get(stream).is_some_and(|at| now.saturating_sub(*at) <= within)
    }

    /// Another worker claimed `stream` for an offer within `within`: it runs it (and
    /// alerts on it) now.
    pub fn offer_claimed_lately(&self, stream: &str, within: Duration, now: Now) -> bool {
        self.offer_claims.get(stream).is_some_and(|(_, at)| now.saturating_sub(*at) <= within)
    }

    /// An offer for `stream` is known (open or taken), or another worker runs it for one.
    pub fn offer_known(&self, stream: &str) -> bool {
        self.offers.contains_key(stream) || self.offer_claims.contains_key(stream)
    }

    /// The offer for `stream` is still open (nobody claimed it yet).
    pub fn offer_open(&self, stream: &str) -> bool {
        self.offers.get(stream).is_some_and(|(_, taken)| taken.is_none())
    }

    /// When `worker` last claimed `stream` for an offer.
    pub fn offer_claim_by(&self, stream: &str, worker: &str) -> Option<Now> {
        self.offer_claims.get(stream).filter(|(w, _)| w == worker).map(|(_, at)| *at)
    }
}
