use super::*;

fn secs(s: u64) -> Now {
    Duration::from_secs(s)
}

fn machine(me: &str) -> Machine {
    Machine::new(Settings { me: me.into(), handoff: secs(30), sees_claims: true, skew_ms: 5_000 })
}

fn wanted(id: &str) -> Wanted {
    Wanted { uri: format!("rtmp://origin.example/{id}"), account_id: None }
}

fn start(p: i32, id: &str) -> Input {
    Input::Lifecycle { partition: p, stream: id.into(), wanted: Some(wanted(id)), signed_at: None }
}

fn stop(p: i32, id: &str) -> Input {
    Input::Lifecycle { partition: p, stream: id.into(), wanted: None, signed_at: None }
}

fn says(actions: &[Action]) -> Vec<Say> {
    actions.iter().filter_map(|a| if let Action::Say(s) = a { Some(s.clone()) } else { None }).collect()
}

fn starts(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| if let Action::Start { stream, .. } = a { Some(stream.clone()) } else { None })
        .collect()
}

fn tick(m: &mut Machine, at: Now) -> Vec<Action> {
    m.step(Input::Tick { running: 0, full: false }, at)
}

/// Assigns partition 0 with `ids` live in its history, and answers each start.
fn owning(m: &mut Machine, ids: &[&str]) {
    m.step(Input::Assigned(vec![0]), secs(0));
    for id in ids {
        assert!(
            m.step(start(0, id), secs(0)).iter().all(|a| matches!(a, Action::Count(_))),
            "nothing before caught up"
        );
    }
    let actions = m.step(Input::CaughtUp(0), secs(0));
    assert_eq!(starts(&actions), ids.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    for id in ids {
        m.step(Input::Started { stream: id.to_string(), purpose: Purpose::Own { partition: 0 } }, secs(0));
    }
}

#[test]
fn a_live_stream_in_an_assigned_partition_starts_once_its_history_is_read_and_is_claimed_after_a_sample() {
    let mut m = machine("w1");
    owning(&mut m, &["live/a"]);
    assert!(matches!(m.stream("live/a"), Some(FleetStream::Owned { unclaimed_since: Some(_), .. })));
    assert!(says(&tick(&mut m, secs(1))).is_empty(), "no claim before a sample is analysed");
    m.step(Input::Analysed("live/a".into()), secs(2));
    let actions = tick(&mut m, secs(2));
    assert_eq!(says(&actions), vec![Say::Claim("live/a".into())]);
    assert!(actions.contains(&Action::Shorten { stream: "live/a".into(), within: RELEASE_WAIT }));
    let actions = m.step(stop(0, "live/a"), secs(3));
    assert!(actions.iter().any(|a| matches!(a, Action::Stop { stream, .. } if stream == "live/a")));
    assert_eq!(m.stream("live/a"), None);
}

#[test]
fn a_stream_that_shows_nothing_is_claimed_after_claim_after() {
    let mut m = machine("w1");
    owning(&mut m, &["live/a"]);
    assert!(says(&tick(&mut m, CLAIM_AFTER - secs(1))).is_empty());
    assert_eq!(says(&tick(&mut m, CLAIM_AFTER)), vec![Say::Claim("live/a".into())]);
}

#[test]
fn a_revoked_stream_runs_until_its_new_owner_claims_it_then_is_released_with_its_incident() {
    let mut m = machine("w1");
    owning(&mut m, &["live/a"]);
    let actions = m.step(Input::Revoked(vec![0]), secs(5));
    assert_eq!(says(&actions), vec![Say::HandingOff("live/a".into())]);
    assert!(!actions.iter().any(|a| matches!(a, Action::Stop { .. })), "make-before-break");
    assert!(tick(&mut m, secs(6)).iter().all(|a| !matches!(a, Action::Stop { .. })));
    let claim = Heard::Claim { stream: "live/a".into(), owner: "w2".into(), for_offer: None };
    m.step(Input::Heard(claim), secs(7));
    let actions = tick(&mut m, secs(7));
    assert!(actions.contains(&Action::Stop {
        stream: "live/a".into(),
        why: "handed off to another worker",
        release: true
    }));
    assert!(actions.contains(&Action::Count(Count::Handoff(Handoff::Taken))));
    assert!(m.releasing("live/a"));
    let actions = m.step(Input::AnalysisEnded { stream: "live/a".into(), open: None }, secs(8));
    assert_eq!(says(&actions), vec![Say::Release { stream: "live/a".into(), to: "w2".into(), incident: None }]);
}

#[test]
fn a_claim_read_before_the_revoke_does_not_let_the_stream_go() {
    let mut m = machine("w1");
    owning(&mut m, &["live/a"]);
    let claim = Heard::Claim { stream: "live/a".into(), owner: "w2".into(), for_offer: None };
    m.step(Input::Heard(claim), secs(4));
    m.step(Input::Revoked(vec![0]), secs(5));
    assert!(
        tick(&mut m, secs(6)).iter().all(|a| !matches!(a, Action::Stop { .. })),
        "an older claim is not the new owner's"
    );
}

#[test]
fn a_stream_nobody_takes_is_kept_and_announced_again_and_let_go_on_a_drain() {
    let mut m = machine("w1");
    owning(&mut m, &["live/a"]);
    m.step(Input::Revoked(vec![0]), secs(0));
    let actions = tick(&mut m, secs(30));
    assert!(actions.contains(&Action::Count(Count::Handoff(Handoff::Kept))));
    assert!(matches!(m.stream("live/a"), Some(FleetStream::Stopping { kept: true, .. })));
    assert_eq!(says(&tick(&mut m, secs(31))), vec![Say::HandingOff("live/a".into())], "announced again");
    assert!(says(&tick(&mut m, secs(32))).is_empty(), "not every tick");
    let actions = m.step(Input::Leave, secs(40));
    assert_eq!(says(&actions), vec![Say::HandingOff("live/a".into())]);
    let actions = tick(&mut m, secs(70));
    assert!(actions.contains(&Action::Stop {
        stream: "live/a".into(),
        why: "no other worker took it in time",
        release: false
    }));
    assert!(m.handed_off());
}

#[test]
fn an_old_start_signed_before_the_stop_is_refused() {
    let mut m = machine("w1");
    m.step(Input::Assigned(vec![0]), secs(0));
    m.step(Input::CaughtUp(0), secs(0));
    let signed = |wanted: Option<Wanted>, at: u64| Input::Lifecycle {
        partition: 0,
        stream: "live/a".into(),
        wanted,
        signed_at: Some(at),
    };
    m.step(signed(None, 100_000), secs(1));
    let actions = m.step(signed(Some(wanted("live/a")), 10_000), secs(2));
    assert_eq!(actions, vec![Action::Count(Count::Refused(FleetRefusal::OutOfOrder))]);
    let actions = m.step(signed(Some(wanted("live/a")), 98_000), secs(3));
    assert_eq!(starts(&actions), vec!["live/a".to_string()], "within the clock skew");
}

#[test]
fn a_full_worker_offers_and_the_first_taker_wins_everywhere() {
    let (mut full, mut a, mut b) = (machine("w1"), machine("w2"), machine("w3"));
    full.step(Input::Assigned(vec![0]), secs(0));
    full.step(start(0, "live/a"), secs(0));
    full.step(Input::CaughtUp(0), secs(0));
    let refused = Input::StartRefused { stream: "live/a".into(), purpose: Purpose::Own { partition: 0 }, full: true };
    assert!(says(&full.step(refused.clone(), secs(0))).is_empty(), "not offered at once");
    let offer = says(&full.step(refused, OFFER_AFTER_SECS));
    assert_eq!(offer, vec![Say::Offer { stream: "live/a".into(), wanted: wanted("live/a") }]);
    // w2 runs fewer streams: its turn comes first.
    a.step(Input::Tick { running: 1, full: false }, secs(2));
    b.step(Input::Tick { running: 50, full: false }, secs(2));
    let heard = Heard::Offered { stream: "live/a".into(), by: "w1".into(), wanted: Some(wanted("live/a")) };
    for m in [&mut full, &mut a, &mut b] {
        m.step(Input::Heard(heard.clone()), secs(3));
    }
    let t = secs(3) + Duration::from_millis(100);
    let from_a = a.step(Input::Tick { running: 1, full: false }, t);
    assert_eq!(starts(&from_a), vec!["live/a".to_string()]);
    assert!(starts(&b.step(Input::Tick { running: 50, full: false }, t)).is_empty(), "w3 waits longer");
    let purpose = Purpose::Offer { from: "w1".into() };
    let claim = a.step(Input::Started { stream: "live/a".into(), purpose }, t);
    assert_eq!(says(&claim), vec![Say::ClaimOffer { stream: "live/a".into(), from: "w1".into() }]);
    let taken = Heard::Claim { stream: "live/a".into(), owner: "w2".into(), for_offer: Some("w1".into()) };
    for m in [&mut full, &mut a, &mut b] {
        m.step(Input::Heard(taken.clone()), secs(4));
    }
    assert!(matches!(full.stream("live/a"), Some(FleetStream::Delegated { to, .. }) if to == "w2"));
    assert!(matches!(a.stream("live/a"), Some(FleetStream::Delegate { won: true, .. })));
    assert!(starts(&b.step(Input::Tick { running: 50, full: false }, secs(5))).is_empty(), "the offer is taken");
    // The maker's lifecycle says stop: it withdraws, and the taker stops.
    let actions = full.step(stop(0, "live/a"), secs(6));
    assert_eq!(says(&actions), vec![Say::Withdraw("live/a".into())]);
    let actions = a.step(Input::Heard(Heard::Withdrawn { stream: "live/a".into(), by: "w1".into() }), secs(6));
    assert!(actions.iter().any(|a| matches!(a, Action::Stop { .. })));
}

const OFFER_AFTER_SECS: Duration = offers::OFFER_AFTER;

#[test]
fn a_new_owner_that_hears_the_old_one_handing_off_holds_its_alerts() {
    let mut m = machine("w2");
    let heard = Heard::HandingOff { stream: "live/a".into(), by: "w1".into() };
    m.step(Input::Heard(heard), secs(0));
    m.step(Input::Assigned(vec![0]), secs(1));
    m.step(start(0, "live/a"), secs(1));
    m.step(Input::CaughtUp(0), secs(1));
    let actions = m.step(Input::Started { stream: "live/a".into(), purpose: Purpose::Own { partition: 0 } }, secs(1));
    assert!(actions.contains(&Action::Hold { stream: "live/a".into(), at_most: secs(30) }));
    let released = Heard::Released { stream: "live/a".into(), by: "w1".into(), to: "w2".into(), incident: None };
    let actions = m.step(Input::Heard(released), secs(2));
    assert_eq!(actions, vec![Action::Continue { stream: "live/a".into(), incident: None }]);
}

#[test]
fn a_stream_that_died_while_handed_off_is_started_again_when_its_partition_comes_back() {
    let mut m = machine("w1");
    owning(&mut m, &["live/a"]);
    m.step(Input::Revoked(vec![0]), secs(5));
    m.step(Input::Gone("live/a".into()), secs(6));
    assert_eq!(m.stream("live/a"), None, "nothing runs it any more");
    m.step(Input::Assigned(vec![0]), secs(7));
    m.step(start(0, "live/a"), secs(7));
    let actions = m.step(Input::CaughtUp(0), secs(7));
    assert_eq!(starts(&actions), vec!["live/a".to_string()], "started, not claimed as running: {actions:?}");
    assert!(says(&actions).is_empty(), "{actions:?}");
}
