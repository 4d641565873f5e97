//! Incident hand-over between two owners of one fleet stream.
//!
//! A hand-off is make-before-break, so for a moment both owners analyse the stream and
//! both would alert on the same episode. The new owner therefore holds back its alerts
//! while the old owner is still alerting (it announced the hand-off), and the old owner,
//! once it has let the stream go, passes on the incident it had open. The new owner then
//! continues that incident under its id (see `StreamFusion::adopt`) and sends only what
//! the platform has not been told. The hold is bounded: when no release comes (the old
//! owner died mid-hand-off), the held alerts go out as they are, late rather than lost.
//!
//! One [`HandOver`] per live stream, shared by the fleet thread and the stream's
//! analysis thread.

use std::sync::{LazyLock, Mutex};
use std::time::Instant;
use vigil_fusion::Incident;

#[derive(Default)]
pub struct HandOver {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Alerts are held until then at most (a previous owner is still alerting).
    hold_until: Option<Instant>,
    /// The previous owner let go, with the incident it had open.
    released: Option<Option<Incident>>,
    /// This worker's analysis of the stream ended, with the incident it had open.
    ended: Option<Option<Incident>>,
    /// This worker has sent alerts for the stream: too late to hold and adopt (renaming
    /// an incident already alerted would leave it open on the platform for good).
    alerted: bool,
}

/// What the analysis thread does with the stream's alerts now.
#[derive(Debug, PartialEq)]
pub enum Hold {
    /// Send them.
    Off,
    /// Keep them back.
    Holding,
    /// The previous owner let go: adopt its incident, then send.
    Released(Option<Box<Incident>>),
    /// No release came in time: send what was held as it is.
    Expired,
}

impl HandOver {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Holds the stream's alerts until `until` at most (a later call may shorten it).
    pub fn hold(&self, until: Instant) {
        let mut i = self.lock();
        if i.alerted {
            return;
        }
        i.hold_until = Some(i.hold_until.map_or(until, |u| u.max(until)));
    }

    /// Brings a hold's end forward to `until` (this worker claimed the stream, so the old
    /// owner lets go within moments).
    pub fn shorten(&self, until: Instant) {
        let mut i = self.lock();
        if let Some(u) = i.hold_until.as_mut() {
            *u = (*u).min(until);
        }
    }

    /// The previous owner let go. Taken only while holding: after an expired hold this
    /// worker's own incident was already alerted, and renaming it would split it.
    pub fn release(&self, prior: Option<Incident>) -> bool {
        let mut i = self.lock();
        if i.hold_until.is_none() {
            return false;
        }
        i.released = Some(prior);
        true
    }

    /// For the analysis thread, before it sends anything; `sending`: it has alerts to
    /// send unless told to hold. Once it sends, no hold is taken any more (decided under
    /// the same lock, so a hold cannot slip in between).
    pub fn poll(&self, now: Instant, sending: bool) -> Hold {
        let mut i = self.lock();
        let hold = Self::decide(&mut i, now);
        if sending && hold != Hold::Holding {
            i.alerted = true;
        }
        hold
    }

    fn decide(i: &mut Inner, now: Instant) -> Hold {
        let Some(until) = i.hold_until else { return Hold::Off };
        if let Some(prior) = i.released.take() {
            i.hold_until = None;
            OUTCOMES.with_label_values(&[if prior.is_some() { "adopted" } else { "none_open" }]).inc();
            return Hold::Released(prior.map(Box::new));
        }
        if now >= until {
            i.hold_until = None;
            OUTCOMES.with_label_values(&["hold_expired"]).inc();
            return Hold::Expired;
        }
        Hold::Holding
    }

    /// The stream's analysis ended here, with `open` still open.
    pub fn end(&self, open: Option<Incident>) {
        self.lock().ended = Some(open);
    }

    /// Once this worker's analysis ended: the incident it left open.
    pub fn ended(&self) -> Option<Option<Incident>> {
        self.lock().ended.clone()
    }
}

static OUTCOMES: LazyLock<prometheus::IntCounterVec> = LazyLock::new(|| {
    prometheus::IntCounterVec::new(
        prometheus::Opts::new(
            "vigil_fleet_handover_incidents_total",
            "Streams taken over from a live owner, by what its release carried: an incident adopted, none open, or no release in time",
        ),
        &["outcome"],
    )
    .expect("valid metric")
});

pub fn register(registry: &prometheus::Registry) -> prometheus::Result<()> {
    for l in ["adopted", "none_open", "hold_expired"] {
        let _ = OUTCOMES.with_label_values(&[l]);
    }
    registry.register(Box::new(OUTCOMES.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_hold_ends_with_the_release_or_at_its_deadline() {
        let h = HandOver::default();
        assert_eq!(h.poll(Instant::now(), false), Hold::Off);
        assert!(!h.release(None), "a release while not holding is ignored");
        let now = Instant::now();
        h.hold(now + Duration::from_secs(30));
        h.shorten(now + Duration::from_secs(5));
        assert_eq!(h.poll(now, true), Hold::Holding);
        assert!(h.release(None));
        assert_eq!(h.poll(now, false), Hold::Released(None));
        assert_eq!(h.poll(now, false), Hold::Off, "released once");
        h.hold(now + Duration::from_secs(1));
        assert_eq!(h.poll(now + Duration::from_secs(2), false), Hold::Expired);
        assert_eq!(h.poll(now + Duration::from_secs(2), true), Hold::Off);
        h.hold(now + Duration::from_secs(30));
        assert_eq!(h.poll(now, true), Hold::Off, "no hold once this worker has alerted");
    }
}
