//! A deterministic, in-process fleet: workers running the real [`Machine`], a consumer
//! group, the lifecycle and owners topics, and streams with abuse episodes, on a
//! simulated clock. No broker, no threads; a seed decides every delay.
//!
//! What is modelled, and how (the timings are the chart's defaults, see `Timings`):
//! - **The group**: cooperative-sticky assignment. A member that leaves (drain,
//!   rejoin) goes at once; a killed one after `session_timeout`; one whose fleet loop
//!   stopped reading after `max_poll` (set to the session timeout). Each change
//!   settles `rebalance` later: partitions of members gone are assigned in that round,
//!   partitions moved from a live member are revoked in it and assigned one round later.
//! - **The topics**: every record reaches its readers `record_delay` (± jitter) after it
//!   is written; a new owner replays its partition's history before it starts anything.
//!   While the broker is out, nothing is written, read, or rebalanced, and the platform's
//!   lifecycle records wait in its producer.
//! - **A worker**: a stream it starts shows its first sample `keyframe` later; a stopped
//!   stream's analysis ends `analysis_end` later (then its release goes out). A worker
//!   takes at most `capacity` streams. Its analysis goes on while its fleet loop stalls.
//! - **Alerts**: a stream in an abuse episode is detected `detect` after its analysis
//!   sees the episode; a worker holding the stream's alerts (see `HandOver`) sends them
//!   when released (adopting the previous owner's incident) or when the hold expires.
//!   Every interrupt is written to the worker's spool at once, which a kill does not
//!   lose: an interrupt is lost only when no worker detects the episode.
//! - **Pushed streams** (RTMP, WHIP) are connected to one worker and reconnect to another
//!   `platform_reconnect` after it goes: counted apart.
//!
//! `SIM_TRACE=live/s42` prints that stream's run and state on every worker every 2 s.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;
use vigil_worker::fleet::Wanted;
use vigil_worker::fleet::machine::{Action, FleetStream, Heard, Input, Machine, Now, Say, Settings};

pub const TICK: Duration = Duration::from_millis(100);
/// Episodes cut shorter than this by their stream's end are not counted.
pub const MIN_EPISODE: Duration = Duration::from_secs(10);

/// The timings; `Timings::chart()` are the Helm chart's defaults.
#[derive(Debug, Clone)]
pub struct Timings {
    pub session_timeout: Duration,
    pub max_poll: Duration,
    pub handoff: Duration,
    pub rebalance: Duration,
    pub record_delay: Duration,
    /// Extra delay on a record, up to this much, drawn per record.
    pub jitter: Duration,
    pub keyframe: Duration,
    pub analysis_end: Duration,
    pub detect: Duration,
    pub restart: Duration,
    pub platform_reconnect: Duration,
}

impl Timings {
    pub fn chart() -> Timings {
        Timings {
            session_timeout: Duration::from_secs(10),
            max_poll: Duration::from_secs(10),
            handoff: Duration::from_secs(30),
            rebalance: Duration::from_secs(3),
            record_delay: Duration::from_millis(200),
            jitter: Duration::from_millis(300),
            keyframe: Duration::from_secs(2),
            analysis_end: Duration::from_secs(1),
            detect: Duration::from_secs(3),
            restart: Duration::from_secs(20),
            platform_reconnect: Duration::from_secs(5),
        }
    }

    /// The longest a pulled stream may go unwatched after one fault: the session timeout
    /// plus one rebalance plus the first keyframe (plus the records' own delays and the
    /// worker's once-a-second retry).
    pub fn unwatched_bound(&self) -> Duration {
        self.session_timeout
            + self.rebalance
            + self.keyframe
            + 2 * (self.record_delay + self.jitter)
            + Duration::from_secs(1)
            + 2 * TICK
    }
}

/// splitmix64: small, seeded, the same everywhere.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
    pub fn upto(&mut self, d: Duration) -> Duration {
        Duration::from_millis(self.below(d.as_millis() as u64 + 1))
    }
}

/// One run of a stream's analysis on one worker.
#[derive(Debug)]
struct Run {
    first_sample: Now,
    /// Alerts held until then at most (another worker still alerts on the stream).
    hold_until: Option<Now>,
    /// The previous owner released the stream with this incident.
    released: Option<Option<u32>>,
    /// This run has sent alerts: too late to hold.
    alerted: bool,
    /// The episode this run's open incident is about.
    incident: Option<u32>,
    /// Stopped: its analysis ends then.
    ending: Option<Now>,
    /// Stopped for a hand-off: release it once ended.
    release: bool,
}

#[derive(Debug, PartialEq, Clone, Copy)]
enum Life {
    Running,
    /// Killed (restarts then, if at all).
    Dead,
}

pub struct Worker {
    pub name: String,
    machine: Machine,
    life: Life,
    /// The fleet loop reads nothing until then (its streams' analysis goes on).
    stalled_until: Option<Now>,
    runs: BTreeMap<String, Run>,
    /// Next owners record to read.
    owners_cursor: usize,
    /// Draining: the process exits once handed off, or at this deadline.
    draining: Option<Now>,
    pub pushed: BTreeSet<u32>,
    /// Last heartbeat (the group drops a member silent for the session timeout).
    heartbeat: Now,
    /// Last poll of the fleet loop (the group drops a member that stops polling).
    polled: Now,
    /// The group's callbacks that wait for a stalled loop's next poll.
    backlog: Vec<Input>,
}

#[derive(Debug, Clone)]
struct Record {
    /// Readable from then on.
    visible: Now,
    stream: String,
    wanted: Option<Wanted>,
}

#[derive(Debug, Clone)]
struct OwnersRecord {
    visible: Now,
    heard: Heard,
}

/// A pulled stream's truth: when the platform says it is live, and its episodes.
#[derive(Debug, Default)]
struct StreamTruth {
    /// Live per its lifecycle (from the visibility of its start record).
    live_since: Option<Now>,
    episodes: Vec<(u32, Now, Now)>,
    unwatched_since: Option<Now>,
    doubled_since: Option<Now>,
}

#[derive(Debug, Default, Clone)]
pub struct Report {
    /// How long the scenario was measured.
    pub measured: Duration,
    pub pulled_unwatched_secs: f64,
    pub pulled_longest_unwatched: Duration,
    pub pulled_longest_unwatched_stream: String,
    pub pushed_unwatched_secs: f64,
    pub pushed_longest_unwatched: Duration,
    pub longest_double_analysis: Duration,
    pub episodes: usize,
    pub incidents: usize,
    /// Incidents beyond the first of their episode.
    pub duplicate_incidents: usize,
    /// The most duplicates of any one episode.
    pub most_duplicates_per_episode: usize,
    pub lost_interrupts: usize,
    pub offers_made: usize,
}

pub struct World {
    pub t: Timings,
    pub now: Now,
    rng: Rng,
    partitions: usize,
    capacity: usize,
    pub workers: BTreeMap<String, Worker>,
    /// Group members (by name) and when each joined.
    members: BTreeSet<String>,
    /// Partition → its owner; absent while unassigned.
    assignment: BTreeMap<i32, String>,
    /// Partitions revoked in the last round, to be assigned in the next.
    limbo: BTreeSet<i32>,
    rebalance_at: Option<Now>,
    lifecycle: Vec<Vec<Record>>,
    /// Per worker and partition: next record to read, and the end at assignment.
    cursors: BTreeMap<(String, i32), (usize, usize)>,
    owners: Vec<OwnersRecord>,
    broker_down_until: Option<Now>,
    /// Lifecycle records written while the broker was out, waiting in the producer.
    platform_backlog: Vec<(String, Option<Wanted>)>,
    truth: BTreeMap<String, StreamTruth>,
    /// Pushed stream → the worker it is connected to and since when, or when it
    /// reconnects.
    pushed: BTreeMap<u32, Result<(String, Now), Now>>,
    pushed_unwatched_since: BTreeMap<u32, Now>,
    /// (stream, episode) → incidents opened; episodes that got an interrupt.
    incidents: BTreeMap<(String, u32), usize>,
    interrupted: BTreeSet<(String, u32)>,
    next_episode: u32,
    next_stream: u32,
    measured_from: Now,
    pub report: Report,
}

fn wanted(stream: &str) -> Wanted {
    Wanted { uri: format!("rtmp://origin.example/{stream}"), account_id: None }
}

pub fn partition_of(stream: &str, partitions: usize) -> i32 {
    // FNV-1a, as stable as Kafka's murmur2 for the purpose.
    let mut h: u32 = 0x811c_9dc5;
    for b in stream.bytes() {
        h = (h ^ b as u32).wrapping_mul(0x0100_0193);
    }
    (h % partitions as u32) as i32
}

impl World {
    pub fn new(seed: u64, t: Timings, partitions: usize, capacity: usize) -> World {
        World {
            t,
            now: Duration::ZERO,
            rng: Rng::new(seed),
            partitions,
            capacity,
            workers: BTreeMap::new(),
            members: BTreeSet::new(),
            assignment: BTreeMap::new(),
            limbo: BTreeSet::new(),
            rebalance_at: None,
            lifecycle: vec![Vec::new(); partitions],
            cursors: BTreeMap::new(),
            owners: Vec::new(),
            broker_down_until: None,
            platform_backlog: Vec::new(),
            truth: BTreeMap::new(),
            pushed: BTreeMap::new(),
            pushed_unwatched_since: BTreeMap::new(),
            incidents: BTreeMap::new(),
            interrupted: BTreeSet::new(),
            next_episode: 0,
            next_stream: 0,
            measured_from: Duration::ZERO,
            report: Report::default(),
        }
    }

    fn broker_up(&self) -> bool {
        self.broker_down_until.is_none_or(|u| self.now >= u)
    }

    fn delay(&mut self) -> Duration {
        self.t.record_delay + self.rng.upto(self.t.jitter)
    }

    // ---- the platform ----

    /// The platform says a pulled stream is live (or, with `wanted` none, stopped).
    pub fn lifecycle(&mut self, stream: &str, live: bool) {
        let wanted = live.then(|| wanted(stream));
        if !self.broker_up() {
            self.platform_backlog.push((stream.to_string(), wanted));
            return;
        }
        self.write_lifecycle(stream.to_string(), wanted);
    }

    fn write_lifecycle(&mut self, stream: String, wanted: Option<Wanted>) {
        let visible = self.now + self.delay();
        let truth = self.truth.entry(stream.clone()).or_default();
        match (&wanted, truth.live_since) {
            (Some(_), None) => truth.live_since = Some(visible),
            (None, Some(_)) => {
                // An episode ends with its stream.
                for (_, _, to) in truth.episodes.iter_mut() {
                    *to = (*to).min(visible);
                }
                truth.live_since = None;
                truth.unwatched_since = None;
                truth.doubled_since = None;
            }
            _ => {}
        }
        let p = partition_of(&stream, self.partitions) as usize;
        self.lifecycle[p].push(Record { visible, stream, wanted });
    }

    /// An abuse episode on a live pulled stream, from now for `length`.
    pub fn episode(&mut self, stream: &str, length: Duration) {
        let now = self.now;
        // One episode at a time per stream (and a pause between two).
        let Some(truth) = self.truth.get_mut(stream).filter(|t| t.live_since.is_some()) else { return };
        if truth.episodes.iter().any(|(_, _, to)| *to + Duration::from_secs(60) > now) {
            return;
        }
        let id = self.next_episode;
        self.next_episode += 1;
        let (from, to) = (self.now, self.now + length);
        truth.episodes.push((id, from, to));
    }

    pub fn push_stream(&mut self, id: u32) {
        self.pushed.insert(id, Err(self.now));
        self.reconnect_pushed();
    }

    // ---- the workers ----

    pub fn start_worker(&mut self, name: &str) {
        let settings = Settings { me: name.to_string(), handoff: self.t.handoff, sees_claims: true, skew_ms: 5_000 };
        let worker = Worker {
            name: name.to_string(),
            machine: Machine::new(settings),
            life: Life::Running,
            stalled_until: None,
            runs: BTreeMap::new(),
            // The owners topic is read from the last hand-off period on.
            owners_cursor: self
                .owners
                .iter()
                .position(|r| r.visible + self.t.handoff >= self.now)
                .unwrap_or(self.owners.len()),
            draining: None,
            pushed: BTreeSet::new(),
            heartbeat: self.now,
            polled: self.now,
            backlog: Vec::new(),
        };
        self.workers.insert(name.to_string(), worker);
        if !self.members.insert(name.to_string()) {
            // A static member back within its session timeout gets its partitions again,
            // without a rebalance.
            let mine: Vec<i32> = self.assignment.iter().filter(|(_, o)| *o == name).map(|(p, _)| *p).collect();
            for p in mine {
                self.assign(name, p);
            }
            return;
        }
        self.trigger_rebalance();
    }

    /// SIGKILL: the process is gone; its streams stop being analysed at once.
    pub fn kill(&mut self, name: &str) {
        if let Some(w) = self.workers.get_mut(name) {
            w.life = Life::Dead;
            w.runs.clear();
            w.draining = None;
            let pushed = std::mem::take(&mut w.pushed);
            for id in pushed {
                self.pushed.insert(id, Err(self.now + self.t.platform_reconnect));
            }
        }
    }

    /// SIGTERM: the worker leaves the group and hands its streams off.
    pub fn drain(&mut self, name: &str, deadline: Duration) {
        let now = self.now;
        let Some(w) = self.workers.get_mut(name).filter(|w| w.life == Life::Running) else { return };
        w.draining = Some(now + deadline);
        self.feed(name, Input::Leave);
        self.drop_member(name);
    }

    /// The worker's fleet loop reads nothing for `d` (its streams run on).
    pub fn stall(&mut self, name: &str, d: Duration) {
        if let Some(w) = self.workers.get_mut(name) {
            w.stalled_until = Some(self.now + d);
        }
    }

    pub fn broker_outage(&mut self, d: Duration) {
        self.broker_down_until = Some(self.now + d);
    }

    /// The running worker with the most pulled streams.
    pub fn busiest(&self) -> String {
        self.workers
            .values()
            .filter(|w| w.life == Life::Running)
            .max_by_key(|w| (w.runs.len(), w.name.clone()))
            .map(|w| w.name.clone())
            .unwrap_or_default()
    }

    pub fn is_running(&self, name: &str) -> bool {
        self.workers.get(name).is_some_and(|w| w.life == Life::Running)
    }

    pub fn is_stalled(&self, name: &str) -> bool {
        self.workers.get(name).is_some_and(|w| w.stalled_until.is_some_and(|u| u > self.now))
    }

    pub fn is_draining(&self, name: &str) -> bool {
        self.workers.get(name).is_some_and(|w| w.draining.is_some())
    }

    fn least_loaded(&self) -> Option<String> {
        self.workers
            .values()
            .filter(|w| w.life == Life::Running && w.draining.is_none() && w.load() < self.capacity)
            .min_by_key(|w| (w.load(), w.name.clone()))
            .map(|w| w.name.clone())
    }

    // ---- the group ----

    fn trigger_rebalance(&mut self) {
        if self.rebalance_at.is_none() {
            self.rebalance_at = Some(self.now + self.t.rebalance);
        }
    }

    fn rebalance(&mut self) {
        self.rebalance_at = None;
        let members: Vec<String> = self.members.iter().cloned().collect();
        // Partitions of members gone are free; so are those revoked last round.
        let mut free: Vec<i32> = (0..self.partitions as i32)
            .filter(|p| self.assignment.get(p).is_none_or(|o| !self.members.contains(o)))
            .collect();
        let gone: Vec<(i32, String)> =
            self.assignment.iter().filter(|(_, o)| !self.members.contains(*o)).map(|(p, o)| (*p, o.clone())).collect();
        for (p, o) in gone {
            self.assignment.remove(&p);
            // A worker that is still running (it left, or was dropped for not polling)
            // loses them too; a drained one already let go of everything.
            self.deliver(&o, Input::Revoked(vec![p]));
        }
        if members.is_empty() {
            return;
        }
        let load = |a: &BTreeMap<i32, String>, m: &str| a.values().filter(|o| *o == m).count();
        let fair_max = self.partitions.div_ceil(members.len());
        // Cooperative: an over-loaded member gives partitions up this round; they go to
        // their new owner next round.
        let mut revoked = Vec::new();
        for m in &members {
            while load(&self.assignment, m) > fair_max {
                let Some(p) = self.assignment.iter().rev().find(|(_, o)| *o == m).map(|(p, _)| *p) else { break };
                self.assignment.remove(&p);
                revoked.push(p);
                self.deliver(m, Input::Revoked(vec![p]));
            }
        }
        free.retain(|p| !revoked.contains(p));
        free.extend(std::mem::take(&mut self.limbo));
        free.sort();
        free.dedup();
        for p in free {
            let m = members.iter().min_by_key(|m| (load(&self.assignment, m), (*m).clone())).cloned();
            if let Some(m) = m {
                self.assignment.insert(p, m.clone());
                self.assign(&m, p);
            }
        }
        // Balance the rest next round (the member with least gets what the most gives).
        let min = members.iter().map(|m| load(&self.assignment, m)).min().unwrap_or(0);
        let max = members.iter().map(|m| load(&self.assignment, m)).max().unwrap_or(0);
        if !revoked.is_empty() || max > min + 1 {
            self.limbo.extend(revoked);
            if max > min + 1 {
                let m = members.iter().max_by_key(|m| (load(&self.assignment, m), (*m).clone())).cloned();
                if let Some(m) = m
                    && let Some(p) = self.assignment.iter().rev().find(|(_, o)| **o == m).map(|(p, _)| *p)
                {
                    self.assignment.remove(&p);
                    self.limbo.insert(p);
                    self.deliver(&m, Input::Revoked(vec![p]));
                }
            }
            self.rebalance_at = Some(self.now + self.t.rebalance);
        }
    }

    fn assign(&mut self, m: &str, p: i32) {
        let end = self.lifecycle[p as usize].iter().filter(|r| r.visible <= self.now).count();
        self.cursors.insert((m.to_string(), p), (0, end));
        self.deliver(m, Input::Assigned(vec![p]));
    }

    /// Hands the worker an input now, unless it is dead (a stalled worker gets it when
    /// it polls again: the group's callbacks run in its poll).
    fn deliver(&mut self, name: &str, input: Input) {
        if let Input::Revoked(parts) = &input {
            for p in parts {
                self.cursors.remove(&(name.to_string(), *p));
            }
        }
        let Some(w) = self.workers.get(name) else { return };
        if w.life != Life::Running {
            return;
        }
        if w.stalled_until.is_some_and(|u| u > self.now) {
            let w = self.workers.get_mut(name).expect("present");
            w.backlog_push(input);
            return;
        }
        self.feed(name, input);
    }

    /// Steps the worker's machine and carries out its actions, answering starts.
    fn feed(&mut self, name: &str, input: Input) {
        let now = self.now;
        let Some(w) = self.workers.get_mut(name) else { return };
        let mut queue: VecDeque<Action> = w.machine.step(input, now).into();
        while let Some(action) = queue.pop_front() {
            let answer = self.act(name, action);
            if let Some(answer) = answer {
                let w = self.workers.get_mut(name).expect("present");
                queue.extend(w.machine.step(answer, now));
            }
        }
    }

    fn act(&mut self, name: &str, action: Action) -> Option<Input> {
        let now = self.now;
        let (keyframe, analysis_end, capacity) = (self.t.keyframe, self.t.analysis_end, self.capacity);
        match action {
            Action::Start { stream, purpose, .. } => {
                let w = self.workers.get_mut(name).expect("present");
                if w.runs.get(&stream).is_some_and(|r| r.ending.is_none()) {
                    return Some(Input::AlreadyRunning { stream, purpose });
                }
                if w.draining.is_some() {
                    return Some(Input::StartRefused { stream, purpose, full: false });
                }
                if w.load() >= capacity {
                    return Some(Input::StartRefused { stream, purpose, full: true });
                }
                let run = Run {
                    first_sample: now + keyframe,
                    hold_until: None,
                    released: None,
                    alerted: false,
                    incident: None,
                    ending: None,
                    release: false,
                };
                w.runs.insert(stream.clone(), run);
                Some(Input::Started { stream, purpose })
            }
            Action::Stop { stream, release, .. } => {
                let w = self.workers.get_mut(name).expect("present");
                if let Some(r) = w.runs.get_mut(&stream).filter(|r| r.ending.is_none()) {
                    r.ending = Some(now + analysis_end);
                    r.release = release;
                }
                None
            }
            Action::Say(say) => {
                self.say(name, say);
                None
            }
            Action::Hold { stream, at_most } => {
                let w = self.workers.get_mut(name).expect("present");
                if let Some(r) = w.runs.get_mut(&stream).filter(|r| !r.alerted) {
                    r.hold_until = Some(r.hold_until.map_or(now + at_most, |u| u.max(now + at_most)));
                }
                None
            }
            Action::Shorten { stream, within } => {
                let w = self.workers.get_mut(name).expect("present");
                if let Some(u) = w.runs.get_mut(&stream).and_then(|r| r.hold_until.as_mut()) {
                    *u = (*u).min(now + within);
                }
                None
            }
            Action::Continue { stream, incident } => {
                let w = self.workers.get_mut(name).expect("present");
                if let Some(r) = w.runs.get_mut(&stream).filter(|r| r.hold_until.is_some()) {
                    r.released = Some(incident.map(|i| episode_of(&i.id)));
                }
                None
            }
            Action::Rejoin => {
                // Unsubscribing revokes everything; subscribing joins as a new member.
                self.drop_member(name);
                self.members.insert(name.to_string());
                None
            }
            Action::Count(vigil_worker::fleet::machine::Count::Offer(
                vigil_worker::fleet::events::OfferOutcome::Made,
            )) => {
                self.report.offers_made += 1;
                None
            }
            Action::Count(_) => None,
        }
    }

    fn say(&mut self, name: &str, say: Say) {
        let me = name.to_string();
        let heard = match say {
            Say::Claim(stream) => Heard::Claim { stream, owner: me, for_offer: None },
            Say::ClaimOffer { stream, from } => Heard::Claim { stream, owner: me, for_offer: Some(from) },
            Say::HandingOff(stream) => Heard::HandingOff { stream, by: me },
            Say::Release { stream, to, incident } => Heard::Released { stream, by: me, to, incident },
            Say::Offer { stream, wanted } => Heard::Offered { stream, by: me, wanted: Some(wanted) },
            Say::Withdraw(stream) => Heard::Withdrawn { stream, by: me },
        };
        // While the broker is out the producer holds it; it is written once it is back.
        let written = self.broker_down_until.filter(|u| *u > self.now).unwrap_or(self.now);
        let visible = written + self.delay();
        // Records of one stream keep their order (one partition).
        let visible = self
            .owners
            .iter()
            .rev()
            .find(|r| r.heard.stream() == heard.stream())
            .map_or(visible, |r| visible.max(r.visible));
        self.owners.push(OwnersRecord { visible, heard });
    }

    // ---- time ----

    /// Runs the world until `until`.
    pub fn run_until(&mut self, until: Now) {
        while self.now < until {
            self.now += TICK;
            self.step_world();
        }
    }

    fn step_world(&mut self) {
        let now = self.now;
        let up = self.broker_up();
        if up && let Some(_) = self.broker_down_until.take() {
            let backlog = std::mem::take(&mut self.platform_backlog);
            for (s, w) in backlog {
                self.write_lifecycle(s, w);
            }
            // Sessions start afresh with the broker back.
            for w in self.workers.values_mut() {
                w.heartbeat = now;
                w.polled = now;
            }
        }
        self.expire_members(up);
        if up && self.rebalance_at.is_some_and(|t| t <= now) {
            self.rebalance();
        }
        let names: Vec<String> = self.workers.keys().cloned().collect();
        for name in &names {
            self.step_worker(name, up);
        }
        self.reconnect_pushed();
        self.analyse();
        self.measure();
    }

    fn expire_members(&mut self, up: bool) {
        if !up {
            return;
        }
        let now = self.now;
        let (session, max_poll) = (self.t.session_timeout, self.t.max_poll);
        let dropped: Vec<String> = self
            .members
            .iter()
            .filter(|m| {
                self.workers.get(*m).is_none_or(|w| {
                    now.saturating_sub(w.heartbeat) > session || now.saturating_sub(w.polled) > max_poll
                })
            })
            .cloned()
            .collect();
        for m in dropped {
            self.drop_member(&m);
        }
    }

    /// The member leaves the group (or is dropped from it): its partitions are free for
    /// the next round, and a worker still running learns it lost them.
    fn drop_member(&mut self, name: &str) {
        self.members.remove(name);
        let mine: Vec<i32> = self.assignment.iter().filter(|(_, o)| *o == name).map(|(p, _)| *p).collect();
        for p in &mine {
            self.assignment.remove(p);
            self.limbo.insert(*p);
        }
        if !mine.is_empty() {
            self.deliver(name, Input::Revoked(mine));
        }
        self.trigger_rebalance();
    }

    fn step_worker(&mut self, name: &str, up: bool) {
        let now = self.now;
        let (capacity, handoff) = (self.capacity, self.t.handoff);
        let Some(w) = self.workers.get_mut(name) else { return };
        if w.life != Life::Running {
            return;
        }
        if up {
            w.heartbeat = now;
        }
        if w.stalled_until.is_some_and(|u| u > now) {
            return;
        }
        w.stalled_until = None;
        if up {
            w.polled = now;
        }
        // A member the group dropped while it did not poll rejoins when it polls again.
        if up && w.draining.is_none() && !self.members.contains(name) && !w.machine.left() {
            self.members.insert(name.to_string());
            self.trigger_rebalance();
        }
        let backlog = self.workers.get_mut(name).map(|w| std::mem::take(&mut w.backlog)).unwrap_or_default();
        for input in backlog {
            self.feed(name, input);
        }
        if up {
            self.read_lifecycle(name);
            self.read_owners(name);
        }
        // What the worker sees of its streams.
        let w = self.workers.get_mut(name).expect("present");
        let mut inputs = Vec::new();
        for s in w.machine.awaiting_sample() {
            if w.runs.get(s).is_some_and(|r| r.ending.is_none() && r.first_sample <= now) {
                inputs.push(Input::Analysed(s.clone()));
            }
        }
        let ended: Vec<String> =
            w.runs.iter().filter(|(_, r)| r.ending.is_some_and(|e| e <= now)).map(|(s, _)| s.clone()).collect();
        for s in ended {
            let r = w.runs.remove(&s).expect("present");
            if r.release {
                let open = r.incident.map(|e| incident(&s, e));
                inputs.push(Input::AnalysisEnded { stream: s.clone(), open });
            }
        }
        let gone: Vec<String> = w
            .machine
            .streams()
            .filter(|(s, f)| f.runs_here() && !w.runs.contains_key(*s))
            .map(|(s, _)| s.clone())
            .collect();
        inputs.extend(gone.into_iter().map(Input::Gone));
        inputs.push(Input::Tick { running: w.load(), full: w.load() >= capacity });
        for input in inputs {
            self.feed(name, input);
        }
        // A draining worker exits once handed off, or at its deadline.
        let w = self.workers.get_mut(name).expect("present");
        if let Some(deadline) = w.draining
            && (w.machine.handed_off() || now >= deadline)
            && w.runs.is_empty()
        {
            let _ = handoff;
            w.life = Life::Dead;
            w.draining = None;
            let pushed = std::mem::take(&mut w.pushed);
            for id in pushed {
                self.pushed.insert(id, Err(now + self.t.platform_reconnect));
            }
        }
    }

    fn read_lifecycle(&mut self, name: &str) {
        let now = self.now;
        let mine: Vec<(i32, usize, usize)> = self
            .cursors
            .iter()
            .filter(|((m, _), _)| m == name)
            .map(|((_, p), (next, end))| (*p, *next, *end))
            .collect();
        for (p, mut next, end) in mine {
            let mut inputs = Vec::new();
            while let Some(r) = self.lifecycle[p as usize].get(next).filter(|r| r.visible <= now) {
                inputs.push(Input::Lifecycle {
                    partition: p,
                    stream: r.stream.clone(),
                    wanted: r.wanted.clone(),
                    signed_at: None,
                });
                next += 1;
            }
            self.cursors.insert((name.to_string(), p), (next, end));
            for input in inputs {
                self.feed(name, input);
            }
            if next >= end && !self.workers[name].machine.caught_up(p) {
                self.feed(name, Input::CaughtUp(p));
            }
        }
    }

    fn read_owners(&mut self, name: &str) {
        let now = self.now;
        loop {
            let cursor = self.workers[name].owners_cursor;
            let Some(r) = self.owners.get(cursor).filter(|r| r.visible <= now) else { break };
            let heard = r.heard.clone();
            self.workers.get_mut(name).expect("present").owners_cursor += 1;
            self.feed(name, Input::Heard(heard));
        }
    }

    fn reconnect_pushed(&mut self) {
        let due: Vec<u32> =
            self.pushed.iter().filter(|(_, w)| matches!(w, Err(at) if *at <= self.now)).map(|(id, _)| *id).collect();
        for id in due {
            if let Some(w) = self.least_loaded() {
                self.workers.get_mut(&w).map(|w| w.pushed.insert(id));
                self.pushed.insert(id, Ok((w, self.now)));
            }
        }
    }

    /// Detection, holds and incidents on every run.
    fn analyse(&mut self) {
        let now = self.now;
        let detect = self.t.detect;
        for w in self.workers.values_mut() {
            if w.life != Life::Running {
                continue;
            }
            for (stream, run) in w.runs.iter_mut() {
                if run.ending.is_some() || run.first_sample > now {
                    continue;
                }
                let Some(truth) = self.truth.get(stream) else { continue };
                let active = truth
                    .episodes
                    .iter()
                    .find(|(_, from, to)| *from <= now && now < *to && now >= (*from).max(run.first_sample) + detect)
                    .map(|(id, _, _)| *id);
                let Some(episode) = active else {
                    // Out of any episode: the incident closes.
                    if truth.episodes.iter().all(|(_, from, to)| now < *from || now >= *to) {
                        run.incident = None;
                    }
                    continue;
                };
                if run.incident == Some(episode) {
                    continue;
                }

                // The HandOver's decision, as `HandOver::poll` makes it.
                if let Some(until) = run.hold_until {
                    if let Some(prior) = run.released.take() {
                        run.hold_until = None;
                        if prior == Some(episode) {
                            run.incident = Some(episode);
                            run.alerted = true;
                            continue;
                        }
                    } else if now < until {
                        continue;
                    } else {
                        run.hold_until = None;
                    }
                }
                run.alerted = true;
                run.incident = Some(episode);
                *self.incidents.entry((stream.clone(), episode)).or_default() += 1;
                self.interrupted.insert((stream.clone(), episode));
            }
        }
    }

    fn measure(&mut self) {
        let now = self.now;
        if let Ok(v) = std::env::var("SIM_TRACE")
            && self.truth.contains_key(&v)
            && now.as_millis().is_multiple_of(2000)
        {
            for w in self.workers.values() {
                let run = w.runs.get(&v);
                let st = w.machine.stream(&v);
                if run.is_some() || st.is_some() {
                    eprintln!("{now:?} {} {:?} run {:?} state {:?}", w.name, w.life, run, st);
                }
            }
        }
        let mut watching: BTreeMap<&str, usize> = BTreeMap::new();
        for w in self.workers.values().filter(|w| w.life == Life::Running) {
            for (s, r) in &w.runs {
                if r.first_sample <= now {
                    *watching.entry(s.as_str()).or_default() += 1;
                }
            }
        }
        for (s, truth) in self.truth.iter_mut() {
            let Some(since) = truth.live_since.filter(|t| *t <= now) else { continue };
            let n = watching.get(s.as_str()).copied().unwrap_or(0);
            if n == 0 {
                let from = *truth.unwatched_since.get_or_insert(since.max(now - TICK));
                self.report.pulled_unwatched_secs += TICK.as_secs_f64();
                let stretch = now - from;
                if stretch > self.report.pulled_longest_unwatched {
                    self.report.pulled_longest_unwatched = stretch;
                    self.report.pulled_longest_unwatched_stream = s.clone();
                }
            } else {
                truth.unwatched_since = None;
            }
            if n >= 2 {
                let from = *truth.doubled_since.get_or_insert(now);
                self.report.longest_double_analysis = self.report.longest_double_analysis.max(now - from);
            } else {
                truth.doubled_since = None;
            }
        }
        // Pushed streams: watched from the first keyframe after they connect.
        let keyframe = self.t.keyframe;
        for (id, at) in &self.pushed {
            let watched = match at {
                Ok((w, since)) => {
                    now >= *since + keyframe && self.workers.get(w).is_some_and(|w| w.life == Life::Running)
                }
                Err(_) => false,
            };
            if watched {
                self.pushed_unwatched_since.remove(id);
            } else {
                let from = *self.pushed_unwatched_since.entry(*id).or_insert(now - TICK);
                self.report.pushed_unwatched_secs += TICK.as_secs_f64();
                self.report.pushed_longest_unwatched = self.report.pushed_longest_unwatched.max(now - from);
            }
        }
    }

    /// Starts measuring afresh (after the fleet has settled).
    pub fn reset_report(&mut self) {
        self.report = Report::default();
        self.measured_from = self.now;
        self.pushed_unwatched_since.clear();
        for t in self.truth.values_mut() {
            t.unwatched_since = None;
            t.doubled_since = None;
        }
    }

    /// The platform's ordinary life, once a second: `churn` streams end and as many
    /// start, and an abuse episode begins every `episode_every`.
    pub fn run_with_churn(&mut self, until: Now, churn: usize, episode_every: Duration) {
        while self.now < until {
            let second = self.now + Duration::from_secs(1);
            let live: Vec<String> =
                self.truth.iter().filter(|(_, t)| t.live_since.is_some()).map(|(s, _)| s.clone()).collect();
            for _ in 0..churn.min(live.len()) {
                let s = &live[self.rng.below(live.len() as u64) as usize];
                self.lifecycle(s, false);
                let id = self.next_stream;
                self.next_stream += 1;
                self.lifecycle(&format!("live/s{id}"), true);
            }
            if !live.is_empty() && self.now.as_millis() % episode_every.as_millis().max(1) < 1000 {
                let s = live[self.rng.below(live.len() as u64) as usize].clone();
                let length = Duration::from_secs(30 + self.rng.below(60));
                self.episode(&s, length);
            }
            self.run_until(second);
        }
    }

    /// `n` pulled streams go live.
    pub fn go_live(&mut self, n: usize) {
        for _ in 0..n {
            let id = self.next_stream;
            self.next_stream += 1;
            self.lifecycle(&format!("live/s{id}"), true);
        }
    }

    /// Totals the episodes: incidents, duplicates, and lost interrupts (an episode that
    /// ended at least `detect` ago and never got one).
    pub fn finish(&mut self) -> Report {
        let mut r = self.report.clone();
        r.measured = self.now - self.measured_from;
        for (s, truth) in &self.truth {
            for (id, from, to) in &truth.episodes {
                // Still going, or too short for anyone to see (its stream ended).
                if *to + self.t.detect > self.now || to.saturating_sub(*from) < MIN_EPISODE {
                    continue;
                }
                r.episodes += 1;
                let n = self.incidents.get(&(s.clone(), *id)).copied().unwrap_or(0);
                r.incidents += n;
                r.duplicate_incidents += n.saturating_sub(1);
                r.most_duplicates_per_episode = r.most_duplicates_per_episode.max(n.saturating_sub(1));
                if !self.interrupted.contains(&(s.clone(), *id)) {
                    r.lost_interrupts += 1;
                }
            }
        }
        r
    }

    /// Who runs each stream now, for the invariants: stream → workers analysing it.
    pub fn analysing(&self) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for w in self.workers.values().filter(|w| w.life == Life::Running) {
            for (s, r) in &w.runs {
                if r.ending.is_none() {
                    out.entry(s.clone()).or_default().push(w.name.clone());
                }
            }
        }
        out
    }

    pub fn state_of(&self, worker: &str, stream: &str) -> Option<FleetStream> {
        self.workers.get(worker).and_then(|w| w.machine.stream(stream).cloned())
    }

    pub fn live_streams(&self) -> usize {
        self.truth.values().filter(|t| t.live_since.is_some()).count()
    }
}

impl Worker {
    fn load(&self) -> usize {
        self.runs.values().filter(|r| r.ending.is_none()).count() + self.pushed.len()
    }
}

fn incident(stream: &str, episode: u32) -> vigil_fusion::Incident {
    vigil_fusion::Incident {
        id: format!("{stream}@sim#{episode}"),
        stream: vigil_core::StreamId(stream.to_string()),
        decision: vigil_fusion::Decision::Interrupt,
        rule: "sim".into(),
        started_ms: 0,
        last_seen_ms: 0,
        reasons: Vec::new(),
        frames: Vec::new(),
        policy: "sim".into(),
        policy_version: "1".into(),
        interrupt_issued_ms: Some(0),
        reissues: 0,
    }
}

fn episode_of(incident_id: &str) -> u32 {
    incident_id.rsplit('#').next().and_then(|n| n.parse().ok()).unwrap_or(u32::MAX)
}

// A stalled worker's group callbacks wait for its next poll.
impl Worker {
    fn backlog_push(&mut self, input: Input) {
        self.backlog.push(input);
    }
}
