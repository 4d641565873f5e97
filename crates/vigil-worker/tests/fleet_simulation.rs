//! The fleet at the size users run it: 1,000 pulled streams (and 200 pushed ones) on 20
//! to 50 simulated workers, each running the real fleet state machine, through rolling
//! updates, kills, a scale-out, a broker outage and a worker that stops reading. Seeded
//! and in-process (see `fleet_sim`); the table it prints is the one in docs/fleet.md
//! ("## Simulation"). The three-worker test against a real broker (crates/vigil/tests/
//! fleet.rs) checks the same machine through rdkafka.

mod fleet_sim;

use fleet_sim::{Report, Timings, World};
use std::time::Duration;

const PULLED: usize = 1000;
const PUSHED: u32 = 200;
const PARTITIONS: usize = 24;
const SEED: u64 = 0x5eed_f1ee7;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn name(i: usize) -> String {
    format!("vigil-{i}")
}

/// `workers` workers with room for `capacity` streams each, the streams live, settled.
fn fleet(workers: usize, capacity: usize) -> World {
    let mut w = World::new(SEED ^ workers as u64, Timings::chart(), PARTITIONS, capacity);
    for i in 0..workers {
        w.start_worker(&name(i));
    }
    w.go_live(PULLED);
    for id in 0..PUSHED {
        w.push_stream(id);
    }
    w.run_with_churn(secs(90), 2, secs(2));
    w.run_until(secs(95));
    assert_eq!(w.analysing().len(), w.live_streams(), "every live stream is analysed once settled");
    w.reset_report();
    w
}

/// Runs on with churn for `d`, and totals.
fn finish(mut w: World, d: Duration) -> Report {
    let until = w.now + d;
    w.run_with_churn(until, 2, secs(2));
    // Let the last episodes end and be counted.
    let until = w.now + secs(100);
    w.run_with_churn(until, 0, secs(100_000));
    w.finish()
}

fn row(name: &str, workers: &str, r: &Report) -> String {
    format!(
        "| {name} | {workers} | {:.0} | {:.0} | {:.1} | {:.1} | {:.0} | {:.1} | {} | {} ({} most per episode) | {} |",
        r.measured.as_secs_f64(),
        r.pulled_unwatched_secs,
        r.pulled_longest_unwatched.as_secs_f64(),
        r.longest_double_analysis.as_secs_f64(),
        r.pushed_unwatched_secs,
        r.pushed_longest_unwatched.as_secs_f64(),
        r.episodes,
        r.duplicate_incidents,
        r.most_duplicates_per_episode,
        r.lost_interrupts,
    )
}

/// The bounds every scenario keeps.
fn check(name: &str, r: &Report, t: &Timings, faults: usize) {
    assert_eq!(r.lost_interrupts, 0, "{name}: lost interrupts: {r:?}");
    assert!(r.episodes > 20, "{name}: too few episodes to say anything: {r:?}");
    assert!(
        r.most_duplicates_per_episode <= faults.min(1),
        "{name}: at most one duplicate per stream per fault: {r:?}"
    );
    assert!(
        r.pulled_longest_unwatched <= t.unwatched_bound(),
        "{name}: a pulled stream went unwatched {:?} ({}), over the bound {:?}",
        r.pulled_longest_unwatched,
        r.pulled_longest_unwatched_stream,
        t.unwatched_bound()
    );
}

fn rolling_update() -> Report {
    let workers = 30;
    let mut w = fleet(workers, 100);
    // The StatefulSet replaces pods from the highest ordinal down, one at a time, each
    // once the previous one is ready again.
    for i in (0..workers).rev() {
        w.drain(&name(i), secs(120));
        while w.is_running(&name(i)) {
            let until = w.now + secs(1);
            w.run_with_churn(until, 2, secs(2));
        }
        let until = w.now + w.t.restart;
        w.run_with_churn(until, 2, secs(2));
        w.start_worker(&name(i));
        let until = w.now + secs(10);
        w.run_with_churn(until, 2, secs(2));
    }
    let r = finish(w, secs(60));
    check("rolling update", &r, &Timings::chart(), 0);
    r
}

/// Kills `victim` (the busiest worker when none is named) and restarts it.
fn kill(victim: Option<usize>) -> Report {
    let mut w = fleet(30, 100);
    let victim = victim.map_or_else(|| w.busiest(), name);
    w.kill(&victim);
    let until = w.now + w.t.restart;
    w.run_with_churn(until, 2, secs(2));
    w.start_worker(&victim);
    finish(w, secs(120))
}

fn no_fault() -> Report {
    let r = finish(fleet(30, 100), secs(140));
    check("no fault", &r, &Timings::chart(), 0);
    assert_eq!(r.duplicate_incidents, 0, "{r:?}");
    r
}

fn scale_out() -> Report {
    let mut w = fleet(10, 150);
    for i in 10..20 {
        w.start_worker(&name(i));
    }
    let r = finish(w, secs(180));
    check("scale-out", &r, &Timings::chart(), 0);
    r
}

fn broker_outage() -> Report {
    let mut w = fleet(30, 100);
    w.broker_outage(secs(120));
    let r = finish(w, secs(300));
    assert!(r.episodes > 100, "{r:?}");
    check("broker outage", &r, &Timings::chart(), 0);
    r
}

fn stalled_reader() -> Report {
    let mut w = fleet(30, 100);
    w.stall(&name(3), secs(60));
    let r = finish(w, secs(180));
    assert!(r.longest_double_analysis >= secs(30), "the stalled worker's streams run on while others take them: {r:?}");
    let mut t = Timings::chart();
    t.session_timeout = t.max_poll;
    check("stalled reader", &r, &t, 1);
    r
}

#[test]
fn a_thousand_streams_on_twenty_to_fifty_workers_keep_their_bounds_through_every_fault() {
    let t = Timings::chart();
    let mut rows = Vec::new();
    let r = rolling_update();
    assert_eq!(r.duplicate_incidents, 0, "a drain hands incidents over: {r:?}");
    rows.push(row("rolling update", "30", &r));
    rows.push(row("no fault (churn only)", "30", &no_fault()));
    let r = kill(None);
    check("SIGKILL of one worker", &r, &t, 1);
    rows.push(row("SIGKILL of one worker", "30", &r));
    // The group leader is the member that joined first.
    let r = kill(Some(0));
    check("SIGKILL of the group leader", &r, &t, 1);
    rows.push(row("SIGKILL of the group leader", "30", &r));
    rows.push(row("scale-out", "10 → 20", &scale_out()));
    rows.push(row("broker outage (2 min)", "30", &broker_outage()));
    rows.push(row("a worker stops reading (60 s)", "30", &stalled_reader()));
    println!(
        "| scenario | workers | measured, s | pulled stream-seconds unwatched | longest unwatched, s | longest analysed twice, s | pushed stream-seconds unwatched | longest pushed unwatched, s | episodes | duplicate incidents | lost interrupts |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
}
