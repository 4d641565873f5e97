//! Properties of the fleet state machine across any interleaving of what happens to a
//! small fleet (four workers, six partitions, twelve streams, room for six each, so
//! offers happen too): drains, restarts, joins, stream starts and stops, abuse
//! episodes, and the faults (kills, stalled readers, a broker outage), with every
//! record's delay drawn from the seed. Checked on every generated history:
//! - no stream is analysed by two workers beyond the hand-off overlap (a stalled
//!   reader's streams run on for the stall, and no longer);
//! - no stream the lifecycle says is live goes without an analysing worker longer than
//!   the configured hand-off;
//! - one alert per episode: none duplicated without a fault, and at most one more per
//!   fault; and no episode without an interrupt.

mod fleet_sim;

use fleet_sim::{Timings, World};
use proptest::prelude::*;
use std::time::Duration;

const WORKERS: usize = 4;
const STREAMS: usize = 12;

#[derive(Debug, Clone)]
enum Op {
    Wait(u64),
    Start(usize),
    Stop(usize),
    Episode(usize),
    Drain(usize),
    Restart(usize),
    Kill(usize),
    Stall(usize, u64),
    Outage(u64),
}

fn op(faults: bool) -> BoxedStrategy<Op> {
    let calm = prop_oneof![
        4 => (1u64..30).prop_map(Op::Wait),
        3 => (0..STREAMS).prop_map(Op::Start),
        2 => (0..STREAMS).prop_map(Op::Stop),
        2 => (0..STREAMS).prop_map(Op::Episode),
        1 => (0..WORKERS).prop_map(Op::Drain),
        2 => (0..WORKERS).prop_map(Op::Restart),
    ];
    if !faults {
        return calm.boxed();
    }
    prop_oneof![
        6 => calm,
        1 => (0..WORKERS).prop_map(Op::Kill),
        1 => ((0..WORKERS), 5u64..60).prop_map(|(w, s)| Op::Stall(w, s)),
        1 => (10u64..120).prop_map(Op::Outage),
    ]
    .boxed()
}

fn name(i: usize) -> String {
    format!("w{i}")
}

fn stream(i: usize) -> String {
    format!("live/p{i}")
}

struct Outcome {
    faults: usize,
    longest_stall: Duration,
    /// Hand-offs wait for the broker: an outage prolongs an overlap already begun.
    longest_outage: Duration,
    /// The last fault has been dealt with by then.
    settled_at: Duration,
}

/// How long after a fault the fleet has dealt with it: detection, a rebalance, the
/// streams started again.
const SETTLE: Duration = Duration::from_secs(20);

/// Plays the history. The fleet keeps the redundancy it is sized for: a worker is
/// drained or killed only while two others serve (running, not draining, not stalled),
/// and faults come one at a time (each waits until the last one has been dealt with).
fn play(seed: u64, ops: &[Op]) -> (World, Outcome) {
    let mut w = World::new(seed, Timings::chart(), 6, 6);
    for i in 0..WORKERS {
        w.start_worker(&name(i));
    }
    for i in 0..STREAMS / 2 {
        w.lifecycle(&stream(i), true);
    }
    w.run_until(Duration::from_secs(20));
    let mut outcome = Outcome {
        faults: 0,
        longest_stall: Duration::ZERO,
        longest_outage: Duration::ZERO,
        settled_at: Duration::ZERO,
    };
    let serving = |w: &World| {
        (0..WORKERS)
            .filter(|i| w.is_running(&name(*i)) && !w.is_draining(&name(*i)) && !w.is_stalled(&name(*i)))
            .count()
    };
    for op in ops {
        if matches!(op, Op::Kill(_) | Op::Stall(..) | Op::Outage(_) | Op::Drain(_)) && w.now < outcome.settled_at {
            w.run_until(outcome.settled_at);
        }
        let now = w.now;
        match *op {
            Op::Wait(s) => w.run_until(now + Duration::from_secs(s)),
            Op::Start(i) => w.lifecycle(&stream(i), true),
            Op::Stop(i) => w.lifecycle(&stream(i), false),
            Op::Episode(i) => w.episode(&stream(i), Duration::from_secs(40)),
            Op::Drain(i) if serving(&w) > 2 && w.is_running(&name(i)) && !w.is_stalled(&name(i)) => {
                outcome.settled_at = now + SETTLE;
                w.drain(&name(i), Duration::from_secs(60))
            }
            Op::Restart(i) if !w.is_running(&name(i)) => w.start_worker(&name(i)),
            Op::Kill(i) if serving(&w) > 2 && w.is_running(&name(i)) && !w.is_draining(&name(i)) => {
                outcome.faults += 1;
                outcome.settled_at = now + SETTLE;
                w.kill(&name(i));
            }
            Op::Stall(i, s) if serving(&w) > 2 && w.is_running(&name(i)) && !w.is_draining(&name(i)) => {
                outcome.faults += 1;
                outcome.settled_at = now + Duration::from_secs(s) + SETTLE;
                outcome.longest_stall = outcome.longest_stall.max(Duration::from_secs(s));
                w.stall(&name(i), Duration::from_secs(s));
            }
            Op::Outage(s) => {
                // Nothing else happens to the fleet until the broker is back.
                outcome.faults += 1;
                outcome.longest_outage = outcome.longest_outage.max(Duration::from_secs(s));
                w.broker_outage(Duration::from_secs(s));
                w.run_until(now + Duration::from_secs(s));
                outcome.settled_at = w.now + SETTLE;
            }
            _ => {}
        }
        w.run_until(w.now + Duration::from_millis(300));
    }
    // Quiet until every episode has ended and been counted.
    let end = w.now + Duration::from_secs(120);
    w.run_until(end);
    (w, outcome)
}

fn check(w: &mut World, o: &Outcome) -> Result<(), TestCaseError> {
    let t = Timings::chart();
    let r = w.finish();
    prop_assert_eq!(r.lost_interrupts, 0, "{:?}", r);
    // A stream that goes live just before an outage starts once the broker is back.
    let gap = t.handoff + o.longest_outage;
    prop_assert!(r.pulled_longest_unwatched <= gap, "unwatched {:?}: {:?}", r.pulled_longest_unwatched, r);
    let overlap = t.handoff + t.rebalance + Duration::from_secs(5) + o.longest_stall + o.longest_outage;
    prop_assert!(r.longest_double_analysis <= overlap, "analysed twice for {:?}: {:?}", r.longest_double_analysis, r);
    prop_assert!(
        r.duplicate_incidents <= o.faults,
        "{} duplicates for {} faults: {:?}",
        r.duplicate_incidents,
        o.faults,
        r
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn without_faults_no_gap_no_overlap_and_one_alert_per_episode(seed in any::<u64>(), ops in proptest::collection::vec(op(false), 1..25)) {
        let (mut w, o) = play(seed, &ops);
        prop_assert_eq!(o.faults, 0);
        check(&mut w, &o)?;
        let r = w.finish();
        prop_assert_eq!(r.duplicate_incidents, 0, "{:?}", r);
        let t = Timings::chart();
        prop_assert!(r.longest_double_analysis <= t.handoff, "{:?}", r);
    }

    #[test]
    fn with_faults_the_bounds_hold(seed in any::<u64>(), ops in proptest::collection::vec(op(true), 1..25)) {
        let (mut w, o) = play(seed, &ops);
        check(&mut w, &o)?;
    }
}
