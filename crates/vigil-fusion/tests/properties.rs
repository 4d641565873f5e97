//! Properties of the shipped policy over arbitrary signal sequences:
//! - a clear stream never produces an interrupt (nor any alert);
//! - one incident produces one alert: opened once, escalated at most once, closed once;
//! - the same sequence always gives the same decisions and alert ids.

use proptest::prelude::*;
use std::sync::Arc;
use vigil_core::{AgeEstimate, BankMatch, Detection, FaceSignal, FrameSignals, StreamId, Unscanned, Verdict};
use vigil_fusion::{Event, Outcome, Policy, StreamFusion};

#[derive(Debug, Clone)]
struct Sample {
    bank: u8, // 0 none, 1 interrupt, 2 review, 3 allow
    exposure: Option<f32>,
    p_minor: Option<f32>,
    nsfw: f32,
    unscanned: bool,
}

fn sample() -> impl Strategy<Value = Sample> {
    (0u8..4, prop::option::of(0f32..1.0), prop::option::of(0f32..1.0), 0f32..1.0, prop::bool::weighted(0.1))
        .prop_map(|(bank, exposure, p_minor, nsfw, unscanned)| Sample { bank, exposure, p_minor, nsfw, unscanned })
}

/// Samples that carry nothing the policy should act on: no abuse-bank match, exposure
/// and classifier scores under the thresholds, every stage ran. Faces of any age.
fn clear_sample() -> impl Strategy<Value = Sample> {
    (prop_oneof![Just(0u8), Just(3u8)], prop::option::of(0f32..0.49), prop::option::of(0f32..1.0), 0f32..0.79)
        .prop_map(|(bank, exposure, p_minor, nsfw)| Sample { bank, exposure, p_minor, nsfw, unscanned: false })
}

fn signals(i: usize, s: &Sample) -> FrameSignals {
    let action = ["", "interrupt", "review", "allow"][s.bank as usize];
    FrameSignals {
        pts_ms: i as u64 * 1000,
        bank_matches: if s.bank == 0 {
            vec![]
        } else {
            vec![BankMatch {
                bank: "b".into(),
                id: "1".into(),
                distance: 5,
                action: action.into(),
                variant: "original".into(),
            }]
        },
        detections: s
            .exposure
            .map(|score| Detection { label: "X".into(), score, bbox: [0.0; 4], signal: Some("sexual_exposed".into()) })
            .into_iter()
            .collect(),
        faces: s
            .p_minor
            .map(|p_minor| FaceSignal {
                bbox: [0.0; 4],
                score: 0.9,
                age: Some(AgeEstimate { expected_years: 30.0 * (1.0 - p_minor), p_minor }),
            })
            .into_iter()
            .collect(),
        nsfw_score: Some(s.nsfw),
        unscanned: if s.unscanned { vec![Unscanned { stage: "detector".into(), reason: "x".into() }] } else { vec![] },
        ..Default::default()
    }
}

fn run(seq: &[Sample]) -> Vec<Outcome> {
    run_session(seq, "sess-1")
}

fn run_session(seq: &[Sample], session: &str) -> Vec<Outcome> {
    let mut f = StreamFusion::new(Arc::new(Policy::embedded_default()), StreamId("s".into()), session.into());
    seq.iter().enumerate().map(|(i, s)| f.observe(&signals(i, s))).collect()
}

fn incident_ids(outcomes: &[Outcome]) -> Vec<String> {
    outcomes
        .iter()
        .flat_map(|o| &o.events)
        .map(|e| match e {
            Event::Opened(i) | Event::Escalated(i) | Event::Reissued(i) | Event::Closed(i) => i.id.clone(),
        })
        .collect()
}

/// A publisher who is cut, reconnects with the same key and shows the same material
/// from pts 0 is a new session: every incident id differs from the first session's,
/// so neither the alert nor its interrupt command is dropped as a duplicate.
#[test]
fn a_new_session_of_the_same_stream_gets_new_incident_ids() {
    let abuse = Sample { bank: 1, exposure: None, p_minor: None, nsfw: 0.0, unscanned: false };
    let seq = vec![abuse; 5];
    let (first, again) = (incident_ids(&run_session(&seq, "sess-1")), incident_ids(&run_session(&seq, "sess-2")));
    assert!(!first.is_empty(), "a banked frame must open an incident");
    assert_eq!(first, incident_ids(&run_session(&seq, "sess-1")), "deterministic within a session");
    for id in &again {
        assert!(!first.contains(id), "id {id} of the second session repeats the first session's {first:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_clear_stream_never_interrupts(seq in prop::collection::vec(clear_sample(), 1..80)) {
        for o in run(&seq) {
            prop_assert_eq!(o.verdict, Verdict::Clear);
            prop_assert!(o.events.is_empty(), "{:?}", o.events);
        }
    }

    #[test]
    fn one_incident_one_alert(seq in prop::collection::vec(sample(), 1..120)) {
        let mut open: Option<String> = None;
        let mut seen = std::collections::HashSet::new();
        let mut escalated = std::collections::HashSet::new();
        for o in run(&seq) {
            for e in o.events {
                match e {
                    Event::Opened(i) => {
                        prop_assert!(open.is_none(), "opened {} while {:?} is open", i.id, open);
                        prop_assert!(seen.insert(i.id.clone()), "alert id {} reused", i.id);
                        open = Some(i.id);
                    }
                    Event::Escalated(i) => {
                        prop_assert_eq!(Some(&i.id), open.as_ref());
                        prop_assert!(escalated.insert(i.id.clone()), "escalated twice");
                    }
                    Event::Reissued(i) => {
                        prop_assert_eq!(Some(&i.id), open.as_ref());
                        prop_assert_eq!(i.decision, vigil_fusion::Decision::Interrupt);
                    }
                    Event::Closed(i) => {
                        prop_assert_eq!(Some(&i.id), open.as_ref());
                        open = None;
                    }
                }
            }
        }
    }

    #[test]
    fn decisions_are_deterministic(seq in prop::collection::vec(sample(), 1..60)) {
        prop_assert_eq!(run(&seq), run(&seq));
    }
}

#[test]
fn sustained_minor_with_exposure_escalates_one_incident_then_closes_when_calm() {
    let risky = Sample { bank: 0, exposure: Some(0.9), p_minor: Some(0.9), nsfw: 0.1, unscanned: false };
    let calm = Sample { bank: 0, exposure: None, p_minor: None, nsfw: 0.1, unscanned: false };
    let mut seq = vec![risky.clone(), risky.clone(), risky];
    seq.extend(std::iter::repeat_n(calm, 40));
    let out = run(&seq);
    assert!(matches!(&out[0].events[..], [Event::Opened(i)] if i.decision == vigil_fusion::Decision::Review));
    assert!(matches!(&out[1].events[..], [Event::Escalated(i)] if i.decision == vigil_fusion::Decision::Interrupt));
    assert!(out[2].events.is_empty(), "still the same incident, no new alert");
    assert_eq!(out[1].sampling, vigil_fusion::Sampling::Dense);
    let closed = out.iter().position(|o| o.events.iter().any(|e| matches!(e, Event::Closed(_)))).expect("closes");
    // 5 clear samples and 30 s after the last risky sample (t = 2 s).
    assert_eq!(closed, 32);
    assert_eq!(out.last().unwrap().sampling, vigil_fusion::Sampling::Cheap);
}

#[test]
fn a_single_bank_match_interrupts_at_once() {
    let hit = Sample { bank: 1, exposure: None, p_minor: None, nsfw: 0.0, unscanned: false };
    let out = run(&[hit]);
    assert_eq!(out[0].verdict, Verdict::Interrupt);
    assert!(matches!(&out[0].events[..], [Event::Opened(i)] if i.rule == "known_abuse_material"));
}

/// The shipped policy with one extra rule on a decayed score: nsfw hits, half-life 10 s,
/// review at 3.
fn decay_policy() -> Arc<Policy> {
    let text = vigil_fusion::policy::DEFAULT_POLICY.replace(
        "[[rule]]\nname = \"known_abuse_material\"",
        "[[rule]]\nname = \"nsfw_over_time\"\ncondition = \"nsfw\"\n\
         decay = { half_life_secs = 10.0, threshold = 3.0 }\ndecision = \"review\"\n\n\
         [[rule]]\nname = \"known_abuse_material\"",
    );
    Arc::new(Policy::parse(&text).unwrap())
}

fn nsfw_at(pts_ms: u64, hit: bool) -> FrameSignals {
    FrameSignals { pts_ms, nsfw_score: Some(if hit { 0.95 } else { 0.1 }), ..Default::default() }
}

/// Feeds (pts, hit) samples; returns the pts at which the decay rule first fired.
fn first_fire(samples: impl IntoIterator<Item = (u64, bool)>) -> Option<u64> {
    let mut f = StreamFusion::new(decay_policy(), StreamId("s".into()), "sess".into());
    samples.into_iter().find_map(|(t, hit)| {
        let o = f.observe(&nsfw_at(t, hit));
        (o.rule.as_deref() == Some("nsfw_over_time")).then_some(t)
    })
}

#[test]
fn a_decayed_score_fires_on_hits_close_in_stream_time() {
    // Hits 1 s apart (factor 0.93 a second): 1, 1.93, 2.80, then 3.62 at 3 s.
    assert_eq!(first_fire((0..10).map(|i| (i * 1000, true))), Some(3000));
    // At 4 samples a second (adaptive sampling gone dense) the same content gives more
    // hits per second and fires after 0.75 s: hits within a half-life are what count.
    assert_eq!(first_fire((0..40).map(|i| (i * 250, true))), Some(750));
    // Hits 30 s apart (three half-lives) never add up.
    assert_eq!(first_fire((0..20).map(|i| (i * 30_000, true))), None);
    // A clear stream never fires.
    assert_eq!(first_fire((0..100).map(|i| (i * 500, false))), None);
    // Time going backwards (a reconnect) does not inflate the score.
    assert_eq!(first_fire([(50_000, true), (0, true), (60_000, false)]), None);
}

/// A reviewed false positive scoped to the review rule on minors with exposure must not
/// silence the interrupt rule that watches the same condition over more samples.
#[test]
fn an_allowed_review_rule_does_not_silence_the_interrupt_rule_on_its_condition() {
    let policy = Arc::new(Policy::embedded_default());
    let mut f = StreamFusion::new(policy, StreamId("s".into()), "session".into());
    let risky = Sample { bank: 0, exposure: Some(0.95), p_minor: Some(0.95), nsfw: 0.0, unscanned: false };
    let mut decisions = Vec::new();
    for i in 0..4 {
        let mut s = signals(i, &risky);
        s.allowed_rules = vec!["minor_with_sexual_exposure".into()];
        decisions.push(f.observe(&s).verdict);
    }
    assert_eq!(decisions.last(), Some(&Verdict::Interrupt), "the sustained rule still interrupts: {decisions:?}");
}

/// The alert stream two owners of one stream produce across a fleet hand-off: the old
/// owner analyses samples `..k`; the new one analyses `j..` (overlap `j..k`), holds its
/// events until the old owner lets go at `k`, then adopts the incident handed over.
/// Returns the combined events; per sample of the new owner after the hand-off the id
/// open and its verdict; and the strongest decision among the events it held.
type HandOff = (Vec<Event>, Vec<(Option<String>, Verdict)>, Option<vigil_fusion::Decision>);

fn decision(e: &Event) -> vigil_fusion::Decision {
    match e {
        Event::Opened(i) | Event::Escalated(i) | Event::Reissued(i) | Event::Closed(i) => i.decision,
    }
}

fn hand_off(seq: &[Sample], j: usize, k: usize) -> HandOff {
    let policy = Arc::new(Policy::embedded_default());
    let mut old = StreamFusion::new(policy.clone(), StreamId("s".into()), "old".into());
    let mut new = StreamFusion::new(policy, StreamId("s".into()), "new".into());
    let mut combined = Vec::new();
    for (i, s) in seq.iter().enumerate().take(k) {
        combined.extend(old.observe(&signals(i, s)).events);
    }
    let mut held = Vec::new();
    for (i, s) in seq.iter().enumerate().take(k).skip(j) {
        held.extend(new.observe(&signals(i, s)).events);
    }
    let held_top = held.iter().map(decision).max();
    combined.extend(new.adopt(old.open_incident().cloned(), held));
    let mut after = Vec::new();
    for (i, s) in seq.iter().enumerate().skip(k) {
        let o = new.observe(&signals(i, s));
        combined.extend(o.events);
        after.push((new.open_incident().map(|i| i.id.clone()), o.verdict));
    }
    (combined, after, held_top)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Across a hand-off the platform sees one alert per episode (no id opened twice,
    /// never two open at once, one escalation at most), and adoption never loses an
    /// interrupt: whenever the new owner decides "interrupt", the open incident has been
    /// alerted at that level.
    #[test]
    fn a_hand_off_alerts_once_and_never_loses_an_interrupt(
        seq in prop::collection::vec(sample(), 2..100),
        cut in (0usize..100, 0usize..100),
    ) {
        let k = 1 + cut.0 % (seq.len() - 1);
        let j = cut.1 % (k + 1);
        let (events, after, held_top) = hand_off(&seq, j, k);
        // What the new owner decided in the overlap reached the platform at that level.
        if held_top == Some(vigil_fusion::Decision::Interrupt) {
            prop_assert!(events.iter().any(|e| decision(e) == vigil_fusion::Decision::Interrupt), "{:?}", events);
        }
        let mut open: Option<String> = None;
        let mut seen = std::collections::HashSet::new();
        let mut level: std::collections::HashMap<String, vigil_fusion::Decision> = Default::default();
        let mut escalated = std::collections::HashSet::new();
        for e in &events {
            match e {
                Event::Opened(i) => {
                    prop_assert!(open.is_none(), "opened {} while {:?} is open: {:?}", i.id, open, events);
                    prop_assert!(seen.insert(i.id.clone()), "alert id {} reused", i.id);
                    open = Some(i.id.clone());
                    level.insert(i.id.clone(), i.decision);
                }
                Event::Escalated(i) => {
                    prop_assert_eq!(Some(&i.id), open.as_ref());
                    prop_assert!(escalated.insert(i.id.clone()), "escalated twice");
                    level.insert(i.id.clone(), i.decision);
                }
                Event::Reissued(i) => {
                    prop_assert_eq!(Some(&i.id), open.as_ref());
                }
                Event::Closed(i) => {
                    prop_assert_eq!(Some(&i.id), open.as_ref());
                    open = None;
                }
            }
        }
        // Replayed per sample: the interrupt reached the platform under the open id.
        let (_, after_again, _) = hand_off(&seq, j, k);
        prop_assert_eq!(&after, &after_again, "deterministic");
        let mut alerted = level;
        for (id, verdict) in &after {
            if *verdict == Verdict::Interrupt {
                let id = id.as_ref().expect("an interrupt leaves an incident open");
                let got = alerted.entry(id.clone()).or_insert(vigil_fusion::Decision::Review);
                prop_assert_eq!(*got, vigil_fusion::Decision::Interrupt, "{} open at interrupt, alerted below it", id);
            }
        }
    }
}

/// The overlap of a hand-off with banked material on both owners: one incident, opened
/// by the old owner; the new owner continues it and closes it under the same id.
#[test]
fn a_hand_off_over_one_episode_continues_the_old_owners_incident() {
    let abuse = Sample { bank: 1, exposure: None, p_minor: None, nsfw: 0.0, unscanned: false };
    let calm = Sample { bank: 0, exposure: None, p_minor: None, nsfw: 0.0, unscanned: false };
    let mut seq = vec![abuse; 6];
    seq.extend(std::iter::repeat_n(calm, 40));
    let (events, _, _) = hand_off(&seq, 3, 5);
    let ids: Vec<(&str, &str)> = events
        .iter()
        .map(|e| match e {
            Event::Opened(i) => ("opened", i.id.as_str()),
            Event::Escalated(i) => ("escalated", i.id.as_str()),
            Event::Reissued(i) => ("reissued", i.id.as_str()),
            Event::Closed(i) => ("closed", i.id.as_str()),
        })
        .collect();
    assert_eq!(ids, [("opened", "s@old#1"), ("closed", "s@old#1")], "{events:?}");
}

/// A source that comes back renews the session: the old incident is closed, and what is
/// seen next opens a new incident (new id, new command) at once, with the evidence built
/// up before (a k-of-n window) kept, so a restart provoked by the publisher dodges
/// nothing.
#[test]
fn a_renewed_session_closes_the_old_incident_and_keeps_the_evidence() {
    let risky = Sample { bank: 0, exposure: Some(0.9), p_minor: Some(0.9), nsfw: 0.1, unscanned: false };
    let mut f = StreamFusion::new(Arc::new(Policy::embedded_default()), StreamId("s".into()), "one".into());
    let first: Vec<Outcome> = (0..3).map(|i| f.observe(&signals(i, &risky))).collect();
    assert!(first.iter().any(|o| o.events.iter().any(|e| matches!(e, Event::Escalated(_)))), "interrupted");
    let closed = f.renew_session("two".into()).expect("the old incident is closed");
    assert!(matches!(&closed, Event::Closed(i) if i.id == "s@one#1"), "{closed:?}");
    // Stream time starts over; one more risky sample is enough with the window kept.
    let again = f.observe(&signals(0, &risky));
    assert!(
        matches!(&again.events[..], [Event::Opened(i)] if i.id == "s@two#1" && i.decision == vigil_fusion::Decision::Interrupt),
        "{:?}",
        again.events
    );
}

/// An incident adopted after a hand-off is reissued on the new owner's stream time, not
/// the previous owner's (whose stream time may be an hour ahead).
#[test]
fn an_adopted_interrupt_is_reissued_on_the_new_owners_stream_time() {
    let abuse = Sample { bank: 1, exposure: None, p_minor: None, nsfw: 0.0, unscanned: false };
    let policy = Arc::new(Policy::embedded_default());
    let mut old = StreamFusion::new(policy.clone(), StreamId("s".into()), "old".into());
    let mut late = signals(0, &abuse);
    late.pts_ms = 3_600_000;
    old.observe(&late);
    let prior = old.open_incident().cloned();
    let mut new = StreamFusion::new(policy.clone(), StreamId("s".into()), "new".into());
    let clear = Sample { bank: 0, exposure: None, p_minor: None, nsfw: 0.0, unscanned: false };
    new.observe(&signals(0, &clear));
    assert!(new.adopt(prior, Vec::new()).is_empty());
    let every = policy.incident.reissue_secs as usize;
    let reissued = (1..=every + 1)
        .map(|i| new.observe(&signals(i, &abuse)))
        .position(|o| o.events.iter().any(|e| matches!(e, Event::Reissued(_))));
    assert_eq!(reissued, Some(every - 1), "reissued {every} s of the new owner's time after the hand-off");
}
