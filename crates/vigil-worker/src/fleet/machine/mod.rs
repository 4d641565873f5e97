//! The fleet member's decisions, as a pure state machine.
//!
//! [`Machine::step`] takes one input (a partition assigned, a lifecycle record read, an
//! owners-topic record heard, a stream started or gone, a clock tick) and the time, and
//! returns what to do: start or stop a stream, say something on the owners topic, hold
//! a stream's alerts. It does no I/O and reads no clock, so the same inputs give the
//! same actions: the rdkafka loop in `fleet/mod.rs` only moves records in and actions
//! out, and the tests (unit, property, and the 1,000-stream simulation in
//! `tests/fleet_simulation.rs`) drive it directly.
//!
//! Each stream the member knows about has one [`FleetStream`] value. Two side tables
//! hold what is owed rather than what a stream is: offers this member will answer when
//! its turn comes, and releases it will send once a stopped stream's analysis has ended.

mod offers;
mod view;

use super::Wanted;
use super::events::{FleetRefusal, Handoff, OfferOutcome};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
pub use view::{Notice, OwnersView};

/// Time since an arbitrary origin (the member's start; the simulation's zero).
pub type Now = Duration;

/// A stream started here is claimed after this long even before a sample is analysed
/// (a source that shows nothing must not keep two workers pulling it).
pub const CLAIM_AFTER: Duration = Duration::from_secs(10);
/// How long a new owner, having claimed a stream, waits for the old owner's release
/// before it sends the alerts it held.
pub const RELEASE_WAIT: Duration = Duration::from_secs(5);
/// The least time between two rejoins of a worker passed over by a rebalance.
pub const REJOIN_EVERY: Duration = Duration::from_secs(60);
/// Waiting streams are retried, and delegations checked, this often.
pub const RETRY_EVERY: Duration = Duration::from_secs(1);

/// What one stream is to this member.
#[derive(Debug, Clone, PartialEq)]
pub enum FleetStream {
    /// Due here (its partition is this member's) and not running yet: the worker is at
    /// capacity, or the start failed. Retried, and offered to the others.
    Waiting { partition: i32, wanted: Wanted, since: Now, offered_at: Option<Now> },
    /// Running here as its partition's owner; `unclaimed_since` until it is claimed on
    /// the owners topic (once a sample is analysed).
    Owned { partition: i32, unclaimed_since: Option<Now> },
    /// Due here, run by another worker (`to`) that took this member's offer.
    Delegated { partition: i32, to: String, wanted: Wanted, since: Now },
    /// Running here for the offer `from` made; `won` once its offer claim came first.
    Delegate { from: String, started: Now, won: bool, last_claim: Now, unclaimed_since: Option<Now> },
    /// Let go (its partition moved, or the member is leaving) and still running until
    /// another worker claims it (make-before-break). `kept`: nobody claimed it within the
    /// hand-off and this member stays in the group, so it keeps the stream rather than
    /// leave it unwatched.
    Stopping { since: Now, give_up: Now, partition: Option<i32>, kept: bool },
}

impl FleetStream {
    /// Whether the stream's analysis runs on this worker.
    pub fn runs_here(&self) -> bool {
        matches!(self, FleetStream::Owned { .. } | FleetStream::Delegate { .. } | FleetStream::Stopping { .. })
    }
}

/// Why a stream is being started: the result comes back with it.
#[derive(Debug, Clone, PartialEq)]
pub enum Purpose {
    /// Its partition is this member's.
    Own { partition: i32 },
    /// For the offer `from` made.
    Offer { from: String },
}

/// What the worker heard on the owners topic (signature, shape and hosts already checked).
#[derive(Debug, Clone, PartialEq)]
pub enum Heard {
    Claim {
        stream: String,
        owner: String,
        for_offer: Option<String>,
    },
    HandingOff {
        stream: String,
        by: String,
    },
    /// `incident`: only one of this very stream (checked when read).
    Released {
        stream: String,
        by: String,
        to: String,
        incident: Option<vigil_fusion::Incident>,
    },
    /// `wanted` is `None` when the offer names a source this fleet refuses.
    Offered {
        stream: String,
        by: String,
        wanted: Option<Wanted>,
    },
    Withdrawn {
        stream: String,
        by: String,
    },
}

impl Heard {
    pub fn stream(&self) -> &str {
        match self {
            Heard::Claim { stream, .. }
            | Heard::HandingOff { stream, .. }
            | Heard::Released { stream, .. }
            | Heard::Offered { stream, .. }
            | Heard::Withdrawn { stream, .. } => stream,
        }
    }
}

/// One input to [`Machine::step`].
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// The consumer group gave this member these lifecycle partitions.
    Assigned(Vec<i32>),
    /// ...or took them away.
    Revoked(Vec<i32>),
    /// A lifecycle record, parsed and checked: `wanted` is `None` for a stop.
    Lifecycle {
        partition: i32,
        stream: String,
        wanted: Option<Wanted>,
        signed_at: Option<u64>,
    },
    /// The partition's history up to its end at assignment has been read.
    CaughtUp(i32),
    Heard(Heard),
    /// The result of [`Action::Start`].
    Started {
        stream: String,
        purpose: Purpose,
    },
    AlreadyRunning {
        stream: String,
        purpose: Purpose,
    },
    /// `full`: refused for capacity (offered); otherwise a failure (retried).
    StartRefused {
        stream: String,
        purpose: Purpose,
        full: bool,
    },
    /// A sample of this running stream was analysed here.
    Analysed(String),
    /// A stream this member ran is no longer running (its source ended, it failed).
    Gone(String),
    /// A stopped stream's analysis ended here, with this incident open.
    AnalysisEnded {
        stream: String,
        open: Option<vigil_fusion::Incident>,
    },
    /// The clock moved; `running` streams run on the worker (of every kind) and `full`
    /// says whether it takes another.
    Tick {
        running: usize,
        full: bool,
    },
    /// The worker drains: it left the group.
    Leave,
}

/// What this member says on the owners topic.
#[derive(Debug, Clone, PartialEq)]
pub enum Say {
    Claim(String),
    ClaimOffer { stream: String, from: String },
    HandingOff(String),
    Release { stream: String, to: String, incident: Option<vigil_fusion::Incident> },
    Offer { stream: String, wanted: Wanted },
    Withdraw(String),
}

/// What [`Machine::step`] asks the worker to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Start analysing the stream; answer with `Started`, `AlreadyRunning` or `StartRefused`.
    Start {
        stream: String,
        wanted: Wanted,
        purpose: Purpose,
    },
    /// Stop analysing it; `release`: watch for its analysis to end (answer `AnalysisEnded`).
    Stop {
        stream: String,
        why: &'static str,
        release: bool,
    },
    Say(Say),
    /// Hold the stream's alerts this long at most: another worker still alerts on it.
    Hold {
        stream: String,
        at_most: Duration,
    },
    /// Bring a hold's end forward to this long from now.
    Shorten {
        stream: String,
        within: Duration,
    },
    /// The previous owner released the stream: continue its incident.
    Continue {
        stream: String,
        incident: Option<vigil_fusion::Incident>,
    },
    /// Leave the consumer group and join it again (passed over by a rebalance).
    Rejoin,
    Count(Count),
}

/// Something counted in the fleet's metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Count {
    /// A lifecycle record believed: a start (true) or a stop.
    Event {
        start: bool,
    },
    Refused(FleetRefusal),
    Handoff(Handoff),
    Offer(OfferOutcome),
    Rejoin,
}

/// Fixed facts about the member.
#[derive(Debug, Clone)]
pub struct Settings {
    /// This worker's name on the owners topic.
    pub me: String,
    pub handoff: Duration,
    /// Whether the owners topic is read (without it no claim is ever seen, so a stream
    /// is never kept waiting for one).
    pub sees_claims: bool,
    /// The clock skew allowed between the platform's lifecycle producers.
    pub skew_ms: u64,
}

/// A lifecycle partition this member owns.
#[derive(Debug, Default)]
struct Partition {
    /// Stream id → what its last event wants (`None`: stopped).
    desired: BTreeMap<String, Option<Wanted>>,
    caught_up: bool,
    /// Stream id → the signing time of its last event believed.
    signed_at: BTreeMap<String, u64>,
}

/// A release owed once a stopped stream's analysis has ended.
#[derive(Debug)]
struct Release {
    to: String,
    give_up: Now,
}

/// An offer this member will take when due (the less loaded a worker, the sooner).
#[derive(Debug)]
struct PendingOffer {
    from: String,
    wanted: Wanted,
    due: Now,
}

/// One fleet member's state.
pub struct Machine {
    settings: Settings,
    partitions: BTreeMap<i32, Partition>,
    streams: BTreeMap<String, FleetStream>,
    /// Running streams that have had a sample analysed here.
    analysed: BTreeSet<String>,
    pending_offers: BTreeMap<String, PendingOffer>,
    releases: BTreeMap<String, Release>,
    view: OwnersView,
    /// The member left the group (draining).
    left: bool,
    last_retry: Option<Now>,
    last_rejoin: Option<Now>,
    /// The worker's load at the last tick.
    running: usize,
    full: bool,
    /// A waiting stream was added: retry them all before the step returns.
    retry_due: bool,
}

impl Machine {
    pub fn new(settings: Settings) -> Machine {
        Machine {
            view: OwnersView::new(&settings.me),
            settings,
            partitions: BTreeMap::new(),
            streams: BTreeMap::new(),
            analysed: BTreeSet::new(),
            pending_offers: BTreeMap::new(),
            releases: BTreeMap::new(),
            left: false,
            last_retry: None,
            last_rejoin: None,
            running: 0,
            full: false,
            retry_due: false,
        }
    }

    /// Takes one input at `now` and says what to do.
    pub fn step(&mut self, input: Input, now: Now) -> Vec<Action> {
        let mut out = Vec::new();
        match input {
            Input::Assigned(parts) if !self.left => {
                for p in parts {
                    self.partitions.insert(p, Partition::default());
                }
            }
            Input::Assigned(_) => {}
            Input::Revoked(parts) => self.revoke(&parts, now, &mut out),
            Input::Lifecycle { partition, stream, wanted, signed_at } => {
                self.on_lifecycle(partition, stream, wanted, signed_at, now, &mut out)
            }
            Input::CaughtUp(p) => self.on_caught_up(p, now, &mut out),
            Input::Heard(heard) => self.on_heard(heard, now, &mut out),
            Input::Started { stream, purpose } => self.on_started(stream, purpose, now, &mut out),
            Input::AlreadyRunning { stream, purpose } => self.on_already_running(stream, purpose, &mut out),
            Input::StartRefused { stream, purpose: Purpose::Own { .. }, full: true } => {
                self.offer_if_due(&stream, now, &mut out)
            }
            Input::StartRefused { .. } => {}
            Input::Analysed(stream) => {
                if self.streams.get(&stream).is_some_and(FleetStream::runs_here) {
                    self.analysed.insert(stream);
                }
            }
            Input::Gone(stream) => self.on_gone(&stream),
            Input::AnalysisEnded { stream, open } => {
                if let Some(r) = self.releases.remove(&stream) {
                    tracing::info!(stream, to = r.to, open = ?open.as_ref().map(|i| &i.id), "fleet: released");
                    out.push(Action::Say(Say::Release { stream, to: r.to, incident: open }));
                }
            }
            Input::Tick { running, full } => {
                (self.running, self.full) = (running, full);
                self.tick(now, &mut out);
            }
            Input::Leave => self.leave(now, &mut out),
        }
        if std::mem::take(&mut self.retry_due) {
            self.retry_waiting(&mut out);
        }
        out
    }

    fn tick(&mut self, now: Now, out: &mut Vec<Action>) {
        if self.last_retry.is_none_or(|t| now.saturating_sub(t) >= RETRY_EVERY) {
            self.last_retry = Some(now);
            self.retry_waiting(out);
            self.check_delegated(now, out);
            self.refresh_delegates(now, out);
            self.rejoin_if_passed_over(now, out);
        }
        self.claim_ready(now, out);
        self.take_due_offers(now, out);
        self.stop_due(now, out);
        let late: Vec<String> =
            self.releases.iter().filter(|(_, r)| r.give_up <= now).map(|(s, _)| s.clone()).collect();
        for stream in late {
            self.releases.remove(&stream);
            tracing::warn!(stream, "fleet: its analysis did not end in time; not released");
        }
    }

    /// On leaving the group: every stream running here is handed off, and nothing new is
    /// taken.
    fn leave(&mut self, now: Now, out: &mut Vec<Action>) {
        if self.left {
            return;
        }
        self.left = true;
        let all: Vec<i32> = self.partitions.keys().copied().collect();
        self.revoke(&all, now, out);
        let give_up = now + self.settings.handoff;
        for (id, s) in self.streams.iter_mut() {
            match s {
                FleetStream::Stopping { kept, give_up: g, .. } if *kept => {
                    (*kept, *g) = (false, give_up);
                    out.push(Action::Say(Say::HandingOff(id.clone())));
                }
                FleetStream::Delegate { .. } => {
                    // The streams run for offers are handed back like any other.
                    out.push(Action::Say(Say::HandingOff(id.clone())));
                    *s = FleetStream::Stopping { since: now, give_up, partition: None, kept: false };
                }
                _ => {}
            }
        }
        self.streams.retain(|_, s| !matches!(s, FleetStream::Waiting { .. }));
        self.pending_offers.clear();
        tracing::info!("fleet: left the group; streams handed off in {:?}", self.settings.handoff);
    }

    /// Lets go of these partitions' streams after the hand-off.
    fn revoke(&mut self, parts: &[i32], now: Now, out: &mut Vec<Action>) {
        let give_up = now + self.settings.handoff;
        for p in parts {
            self.partitions.remove(p);
        }
        self.streams.retain(|id, s| match s {
            FleetStream::Owned { partition, .. } if parts.contains(partition) => {
                // Whoever takes it holds its alerts until this member releases it.
                out.push(Action::Say(Say::HandingOff(id.clone())));
                *s = FleetStream::Stopping { since: now, give_up, partition: Some(*partition), kept: false };
                true
            }
            // Their new partition owner runs them; a worker running one for this member
            // lets go once it reads that owner's claim.
            FleetStream::Waiting { partition, .. } | FleetStream::Delegated { partition, .. } => {
                !parts.contains(partition)
            }
            _ => true,
        });
    }

    fn on_lifecycle(
        &mut self,
        partition: i32,
        stream: String,
        wanted: Option<Wanted>,
        signed_at: Option<u64>,
        now: Now,
        out: &mut Vec<Action>,
    ) {
        if self.left {
            return;
        }
        let Some(state) = self.partitions.get_mut(&partition) else { return };
        // Per stream, signing times only go forward: an old signed `start` written again
        // after its `stop` is refused, in the history as live.
        if let Some(at) = signed_at {
            let last = state.signed_at.entry(stream.clone()).or_insert(0);
            // The platform's producers' clocks may differ by up to the skew allowed.
            if at.saturating_add(self.settings.skew_ms) < *last {
                out.push(Action::Count(Count::Refused(FleetRefusal::OutOfOrder)));
                return;
            }
            *last = (*last).max(at);
        }
        out.push(Action::Count(Count::Event { start: wanted.is_some() }));
        state.desired.insert(stream.clone(), wanted.clone());
        if state.caught_up {
            self.apply(partition, &stream, wanted, now, out);
        }
    }

    /// Once a partition's history up to its end at assignment has been read, starts
    /// what it says is live.
    fn on_caught_up(&mut self, p: i32, now: Now, out: &mut Vec<Action>) {
        let Some(state) = self.partitions.get_mut(&p).filter(|s| !s.caught_up) else { return };
        state.caught_up = true;
        let live: Vec<(String, Option<Wanted>)> = state.desired.iter().map(|(s, w)| (s.clone(), w.clone())).collect();
        tracing::info!(partition = p, streams = live.len(), "fleet: partition history read");
        for (s, w) in live {
            self.apply(p, &s, w, now, out);
        }
    }

    fn apply(&mut self, partition: i32, stream: &str, wanted: Option<Wanted>, now: Now, out: &mut Vec<Action>) {
        match wanted {
            Some(wanted) => match self.streams.get(stream) {
                Some(FleetStream::Owned { .. } | FleetStream::Delegated { .. } | FleetStream::Waiting { .. }) => {}
                Some(FleetStream::Stopping { .. } | FleetStream::Delegate { .. }) => {
                    // Still running here (revoked and assigned back, or run for an offer):
                    // keep it, now as its partition's owner, even when the worker is full.
                    out.push(Action::Say(Say::Claim(stream.to_string())));
                    self.streams.insert(stream.to_string(), FleetStream::Owned { partition, unclaimed_since: None });
                }
                None => {
                    let waiting = FleetStream::Waiting { partition, wanted, since: now, offered_at: None };
                    self.streams.insert(stream.to_string(), waiting);
                    self.retry_due = true;
                }
            },
            None => {
                let was = self.streams.remove(stream);
                match &was {
                    Some(FleetStream::Owned { .. } | FleetStream::Stopping { .. }) => {
                        self.analysed.remove(stream);
                        out.push(Action::Stop {
                            stream: stream.to_string(),
                            why: "stopped by its lifecycle event",
                            release: false,
                        });
                    }
                    Some(FleetStream::Delegate { from, started, won, last_claim, .. }) => {
                        // Run here for an offer: its maker withdraws it.
                        let d = FleetStream::Delegate {
                            from: from.clone(),
                            started: *started,
                            won: *won,
                            last_claim: *last_claim,
                            unclaimed_since: None,
                        };
                        self.streams.insert(stream.to_string(), d);
                    }
                    _ => {}
                }
                // Offered (taken or not), or run elsewhere for an offer, perhaps made
                // before this member owned the partition: whoever runs it stops.
                let delegated = matches!(was, Some(FleetStream::Delegated { .. }));
                if delegated || self.view.offer_known(stream) {
                    out.push(Action::Say(Say::Withdraw(stream.to_string())));
                    out.push(Action::Count(Count::Offer(OfferOutcome::Withdrawn)));
                } else if self.view.handed_over_lately(stream, self.settings.handoff, now) {
                    // Its previous owner still runs it, waiting for this member's claim.
                    out.push(Action::Say(Say::Withdraw(stream.to_string())));
                }
            }
        }
    }

    /// Tries every waiting stream again.
    fn retry_waiting(&mut self, out: &mut Vec<Action>) {
        for (stream, s) in &self.streams {
            if let FleetStream::Waiting { partition, wanted, .. } = s {
                let purpose = Purpose::Own { partition: *partition };
                out.push(Action::Start { stream: stream.clone(), wanted: wanted.clone(), purpose });
            }
        }
    }

    fn on_started(&mut self, stream: String, purpose: Purpose, now: Now, out: &mut Vec<Action>) {
        let next = match purpose {
            Purpose::Own { partition } if matches!(self.streams.get(&stream), Some(FleetStream::Waiting { .. })) => {
                FleetStream::Owned { partition, unclaimed_since: Some(now) }
            }
            Purpose::Offer { from } if !self.streams.contains_key(&stream) => {
                // The offer claim goes out at once: the race for the offer is decided by
                // the claims' order. A plain claim follows the first analysed sample, as
                // for any stream started here: only that one lets a worker still running
                // the stream go (make-before-break).
                out.push(Action::Say(Say::ClaimOffer { stream: stream.clone(), from: from.clone() }));
                FleetStream::Delegate { from, started: now, won: false, last_claim: now, unclaimed_since: Some(now) }
            }
            _ => {
                // Nothing here wants it any more.
                out.push(Action::Stop { stream, why: "no longer due here", release: false });
                return;
            }
        };
        if self.someone_else_alerts(&stream, now) {
            out.push(Action::Hold { stream: stream.clone(), at_most: self.settings.handoff });
        }
        self.streams.insert(stream, next);
    }

    fn on_already_running(&mut self, stream: String, purpose: Purpose, out: &mut Vec<Action>) {
        if let Purpose::Own { partition } = purpose
            && matches!(self.streams.get(&stream), Some(FleetStream::Waiting { .. }))
        {
            out.push(Action::Say(Say::Claim(stream.clone())));
            self.streams.insert(stream, FleetStream::Owned { partition, unclaimed_since: None });
        }
    }

    fn on_gone(&mut self, stream: &str) {
        let gone = match self.streams.get(stream) {
            // An owned stream stays due here; its analysis restarts as the worker decides.
            Some(FleetStream::Owned { .. }) | None => false,
            // Nothing runs any more: if its partition comes back, it is started again
            // (not taken as still running, which would claim a stream nobody analyses).
            Some(FleetStream::Stopping { .. }) => true,
            Some(FleetStream::Delegate { .. }) => true,
            Some(_) => false,
        };
        if gone {
            self.streams.remove(stream);
        }
        self.analysed.remove(stream);
    }

    /// Another worker runs `stream` and alerts on it now: it announced handing it off,
    /// or it runs it for an offer (renewing its claim).
    fn someone_else_alerts(&self, stream: &str, now: Now) -> bool {
        self.view.handed_over_lately(stream, self.settings.handoff, now)
            || self.view.offer_claimed_lately(stream, 2 * offers::RENEW, now)
    }

    /// A worker holding no partition while another keeps streams that nobody took after
    /// a rebalance was most likely passed over: the group gave it a partition that was
    /// never delivered. tansu 0.6 does this to every static member that joins a running
    /// group (a cooperative rebalance's second round never reaches it). Leaving and
    /// joining again makes the group rebalance with this worker as a new member, and the
    /// unowned partition comes to it in one round. At most once a minute: where there
    /// are more workers than partitions, holding none is right and this changes nothing.
    fn rejoin_if_passed_over(&mut self, now: Now, out: &mut Vec<Action>) {
        let handoff = self.settings.handoff;
        let passed_over = !self.left
            && self.partitions.is_empty()
            && self.view.handoff_unclaimed(handoff, handoff, now)
            && self.last_rejoin.is_none_or(|t| now.saturating_sub(t) >= REJOIN_EVERY);
        if passed_over {
            tracing::warn!(
                "fleet: holding no partition while another worker keeps streams nobody took; leaving and joining the group again"
            );
            self.last_rejoin = Some(now);
            out.push(Action::Count(Count::Rejoin));
            out.push(Action::Rejoin);
        }
    }

    /// Claims the streams started here that have had a sample analysed: only then may
    /// the old owner let them go.
    fn claim_ready(&mut self, now: Now, out: &mut Vec<Action>) {
        for (stream, s) in self.streams.iter_mut() {
            let unclaimed = match s {
                FleetStream::Owned { unclaimed_since, .. } => unclaimed_since,
                // A taker claims only once it won the offer: a loser's claim would make
                // the winner let go.
                FleetStream::Delegate { unclaimed_since, won: true, .. } => unclaimed_since,
                _ => continue,
            };
            let Some(at) = *unclaimed else { continue };
            if self.analysed.contains(stream) || now.saturating_sub(at) >= CLAIM_AFTER {
                *unclaimed = None;
                out.push(Action::Say(Say::Claim(stream.clone())));
                out.push(Action::Shorten { stream: stream.clone(), within: RELEASE_WAIT });
            }
        }
    }

    fn on_heard(&mut self, heard: Heard, now: Now, out: &mut Vec<Action>) {
        let Some(notice) = self.view.hear(heard, now) else { return };
        match notice {
            Notice::HandingOff { stream, by } => match self.streams.get(&stream) {
                Some(FleetStream::Owned { unclaimed_since, .. } | FleetStream::Delegate { unclaimed_since, .. }) => {
                    // Announced after this member started it (a race with the rebalance):
                    // hold (unless it already alerted), and claim again if it had claimed,
                    // since the announcing worker waits for a claim newer than its own.
                    let wait = if unclaimed_since.is_some() { self.settings.handoff } else { RELEASE_WAIT };
                    out.push(Action::Hold { stream: stream.clone(), at_most: wait });
                    if unclaimed_since.is_none() {
                        out.push(Action::Say(Say::Claim(stream)));
                    }
                }
                _ if self.stopped_here(&stream) => {
                    // Handed off to this member after its lifecycle said stop: the worker
                    // still running it stops.
                    out.push(Action::Say(Say::Withdraw(stream)));
                }
                _ => self.on_delegate_handing_off(&stream, &by, now),
            },
            Notice::Released { stream, incident } => out.push(Action::Continue { stream, incident }),
            Notice::Offered { stream, from, wanted } => self.on_offered(stream, from, wanted, now, out),
            Notice::OfferTaken { stream, by } => self.on_offer_taken(&stream, &by, now, out),
            Notice::Withdrawn(stream) => self.on_withdrawn(&stream, out),
        }
    }

    /// The stream's lifecycle, in a partition this member owns and has read, says stop.
    fn stopped_here(&self, stream: &str) -> bool {
        self.partitions.values().any(|p| p.caught_up && matches!(p.desired.get(stream), Some(None)))
    }

    /// Lets go of the streams handed off whose new owner claimed them. A stream revoked
    /// with its partition that nobody claims within the hand-off is kept running here
    /// while this member stays in the group: a new owner that never starts it (the broker
    /// did not deliver its assignment, or it failed) must not leave the stream unwatched.
    /// It is let go once someone claims it, stopped if its lifecycle says stop once this
    /// member owns its partition again, and handed off like the rest on a drain.
    fn stop_due(&mut self, now: Now, out: &mut Vec<Action>) {
        // Without the owners topic no claim is ever seen: keeping would mean forever.
        let keep = !self.left && self.settings.sees_claims;
        // A kept stream's hand-off is announced again now and then: whoever takes it,
        // however late, holds its alerts until this member releases it.
        let every = (self.settings.handoff / 2).max(Duration::from_secs(5));
        let mut due = Vec::new();
        for (id, s) in self.streams.iter_mut() {
            let FleetStream::Stopping { since, give_up, partition, kept } = s else { continue };
            let taken = self.view.taken_since(id, *since).map(str::to_string);
            if taken.is_none() && *kept && *give_up <= now {
                out.push(Action::Say(Say::HandingOff(id.clone())));
                *give_up = now + every;
            } else if taken.is_some() || (*give_up <= now && !*kept) {
                if taken.is_none() && partition.is_some() && keep {
                    (*kept, *give_up) = (true, now);
                    out.push(Action::Count(Count::Handoff(Handoff::Kept)));
                    tracing::warn!(
                        stream = id,
                        partition,
                        "fleet: no other worker took the stream in time; keeping it running here until one does"
                    );
                } else {
                    due.push((id.clone(), taken));
                }
            }
        }
        for (id, taken) in due {
            self.streams.remove(&id);
            self.analysed.remove(&id);
            let why = if taken.is_some() { "handed off to another worker" } else { "no other worker took it in time" };
            out.push(Action::Count(Count::Handoff(if taken.is_some() { Handoff::Taken } else { Handoff::TimedOut })));
            tracing::info!(stream = id, "fleet: let go: {why}");
            let release = taken.is_some();
            if let Some(to) = taken {
                self.releases.insert(id.clone(), Release { to, give_up: now + 2 * RELEASE_WAIT });
            }
            out.push(Action::Stop { stream: id, why, release });
        }
    }

    /// Whether the member left the group and every stream it ran is handed off.
    pub fn handed_off(&self) -> bool {
        self.left && self.releases.is_empty() && !self.streams.values().any(FleetStream::runs_here)
    }

    pub fn stream(&self, id: &str) -> Option<&FleetStream> {
        self.streams.get(id)
    }

    pub fn streams(&self) -> impl Iterator<Item = (&String, &FleetStream)> {
        self.streams.iter()
    }

    /// Running streams still waiting for their first analysed sample.
    pub fn awaiting_sample(&self) -> impl Iterator<Item = &String> {
        self.streams.iter().filter(|(s, f)| f.runs_here() && !self.analysed.contains(*s)).map(|(s, _)| s)
    }

    /// Streams whose release waits for their analysis to end.
    pub fn releasing(&self, stream: &str) -> bool {
        self.releases.contains_key(stream)
    }

    pub fn partitions(&self) -> impl Iterator<Item = i32> + '_ {
        self.partitions.keys().copied()
    }

    pub fn caught_up(&self, partition: i32) -> bool {
        self.partitions.get(&partition).is_some_and(|p| p.caught_up)
    }

    /// The gauges: streams run here (owned or for offers), waiting, delegated, kept.
    pub fn gauges(&self) -> Gauges {
        let mut g = Gauges { partitions: self.partitions.len(), ..Gauges::default() };
        for s in self.streams.values() {
            match s {
                FleetStream::Owned { .. } | FleetStream::Delegate { .. } => g.owned += 1,
                FleetStream::Waiting { .. } => g.waiting += 1,
                FleetStream::Delegated { .. } => g.delegated += 1,
                FleetStream::Stopping { kept: true, .. } => g.kept += 1,
                FleetStream::Stopping { .. } => {}
            }
        }
        g
    }

    pub fn left(&self) -> bool {
        self.left
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Gauges {
    pub owned: usize,
    pub waiting: usize,
    pub delegated: usize,
    pub kept: usize,
    pub partitions: usize,
}

#[cfg(test)]
mod tests;
