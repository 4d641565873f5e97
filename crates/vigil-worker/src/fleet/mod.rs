//! Pulled streams shared across a fleet of workers through a Kafka consumer group.
//!
//! The lifecycle topic is the desired state: `start` and `stop` events keyed by stream
//! id (a compacted topic keeps the last one per stream). Workers in one group share its
//! partitions, and a worker runs the streams whose last event in its partitions is a
//! `start`. Nothing is committed: on every assignment the worker reads the partition
//! from its beginning up to the end it had then, and only then starts what is live, so
//! a stream started long ago is picked up by whoever owns its partition now.
//!
//! - Cooperative-sticky assignment: a rebalance moves only the partitions that change
//!   owner (rust-rdkafka's rebalance callback uses `incremental_assign` for it).
//! - Static membership: `group.instance.id` is the worker's id (a StatefulSet pod's
//!   name), so a restart does not reshuffle; a dead worker's partitions move after
//!   `session_timeout_secs`.
//! - Make-before-break: a worker that starts a fleet stream claims it on the owners
//!   topic (stream id, owner) once it has analysed its first sample. A revoked stream
//!   keeps running until another worker's claim for it appears there (`handoff_secs` at
//!   most, when no worker takes it), so coverage never depends on how fast a broker
//!   rebalances, nor on how fast the new owner connects.
//! - One alert per episode across the overlap (see `handover`): the old owner announces
//!   the hand-off; the new owner holds its alerts for the stream until the old owner,
//!   having let go, releases it with the incident it had open, which the new owner
//!   continues under the same id.
//! - Drain: the worker unsubscribes, which (unlike closing, for a static member) sends
//!   LeaveGroup, so its partitions move at once; its streams then run out the hand-off.

pub mod events;
pub mod machine;
mod owners;
pub mod pull_hosts;

use super::handover::HandOver;
use super::streams::{StartError, Streams};
use events::FleetRefusal;
use machine::{Action, Input, Machine, Purpose, Settings};
use owners::Claims;
use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Message;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};
use vigil_media::isolate::ChildSource;

/// `[fleet]`: share pulled streams with the other workers of a consumer group. Uses the
/// cluster (and security settings) of `[sink.kafka]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    #[serde(default = "default_topic")]
    pub lifecycle_topic: String,
    /// Where workers claim the streams they start (hand-off confirmation).
    #[serde(default = "default_owners_topic")]
    pub owners_topic: String,
    #[serde(default = "default_group")]
    pub group_id: String,
    /// Static membership id; default: the worker id (the host name, which is the pod
    /// name in a StatefulSet).
    #[serde(default)]
    pub instance_id: Option<String>,
    /// A worker silent this long has its streams moved to the others.
    #[serde(default = "default_session_timeout")]
    pub session_timeout_secs: u64,
    /// A stream whose partition moved keeps running until its new owner claims it, this
    /// long at most: make-before-break.
    #[serde(default = "default_handoff")]
    pub handoff_secs: u64,
    /// The hosts pulled streams may come from: `origin.example.org`, `*.edge.example.org`,
    /// an address, or `*`. A lifecycle start or an offer naming any other host is refused.
    #[serde(default)]
    pub pull_hosts: Vec<String>,
    /// Pull from link-local addresses and cloud metadata names too (refused by default,
    /// whatever `pull_hosts` says).
    #[serde(default)]
    pub allow_link_local: bool,
}

impl FleetConfig {
    /// Whether a pull URL's host is one this fleet may pull from.
    pub fn check_host(&self, url: &str) -> Result<(), pull_hosts::HostRefusal> {
        pull_hosts::check(url, &self.pull_hosts, self.allow_link_local)
    }
}

fn default_topic() -> String {
    "vigil.streams.lifecycle".into()
}
fn default_owners_topic() -> String {
    "vigil.streams.owners".into()
}
fn default_group() -> String {
    "vigil-workers".into()
}
fn default_session_timeout() -> u64 {
    10
}
fn default_handoff() -> u64 {
    30
}

impl FleetConfig {
    pub fn validate(&self, prefix: &str, has_kafka: bool) -> Vec<String> {
        let mut e = Vec::new();
        if !has_kafka {
            e.push(format!("{prefix}: needs [sink.kafka] (the fleet shares its cluster)"));
        }
        for (key, topic) in [("lifecycle_topic", &self.lifecycle_topic), ("owners_topic", &self.owners_topic)] {
            if !vigil_sink::kafka::is_valid_topic(topic) {
                e.push(format!("{prefix}.{key}: {topic:?} is not a valid topic name"));
            }
        }
        if self.lifecycle_topic == self.owners_topic {
            e.push(format!("{prefix}.owners_topic: must differ from lifecycle_topic"));
        }
        if self.group_id.trim().is_empty() {
            e.push(format!("{prefix}.group_id: must not be empty"));
        }
        if self.instance_id.as_deref().is_some_and(|i| i.trim().is_empty()) {
            e.push(format!("{prefix}.instance_id: must not be empty (leave it out for the host name)"));
        }
        if !(6..=300).contains(&self.session_timeout_secs) {
            e.push(format!("{prefix}.session_timeout_secs: {} is not within 6..=300", self.session_timeout_secs));
        }
        if self.pull_hosts.is_empty() {
            e.push(format!(
                "{prefix}.pull_hosts: name the hosts pulled streams may come from (patterns like \"origin.example.org\", \"*.edge.example.org\"; \"*\" for any)"
            ));
        }
        for p in self.pull_hosts.iter().filter(|p| !pull_hosts::valid_pattern(p)) {
            e.push(format!("{prefix}.pull_hosts: {p:?} is not a host, an address, \"*.suffix\" or \"*\""));
        }
        if self.handoff_secs > 120 {
            e.push(format!("{prefix}.handoff_secs: {} is over 120", self.handoff_secs));
        }
        e
    }
}

/// One event on the lifecycle topic.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LifecycleEvent {
    pub event: String,
    pub stream_id: String,
    #[serde(default)]
    pub source_url: Option<String>,
    #[serde(default)]
    pub account_id: Option<String>,
    #[serde(default)]
    pub session_id: Option<String>,
}

/// A stream the lifecycle topic says should run.
#[derive(Debug, Clone, PartialEq)]
pub struct Wanted {
    pub uri: String,
    pub account_id: Option<String>,
}

/// Largest lifecycle message read; anything bigger is refused unread.
const MAX_EVENT_BYTES: usize = 16 << 10;

/// Parses and checks one message: what it asks for, or why it is refused (a metric
/// label, so a fixed word).
pub fn parse_event(key: Option<&[u8]>, payload: Option<&[u8]>) -> Result<(String, Option<Wanted>), FleetRefusal> {
    let Some(payload) = payload else {
        // A tombstone (compaction's delete) for a stream's key stops that stream. Its
        // signature (checked before this) covers the key.
        let stream = key.and_then(|k| std::str::from_utf8(k).ok()).ok_or(FleetRefusal::Empty)?;
        return if valid_stream_id(stream) { Ok((stream.to_string(), None)) } else { Err(FleetRefusal::BadStreamId) };
    };
    if payload.len() > MAX_EVENT_BYTES {
        return Err(FleetRefusal::TooLarge);
    }
    let e: LifecycleEvent = serde_json::from_slice(payload).map_err(|_| FleetRefusal::Malformed)?;
    if !valid_stream_id(&e.stream_id) {
        return Err(FleetRefusal::BadStreamId);
    }
    if key.is_some_and(|k| k != e.stream_id.as_bytes()) {
        // Keyed otherwise, it would sit in another stream's partition history.
        return Err(FleetRefusal::KeyMismatch);
    }
    for id in [&e.account_id, &e.session_id].into_iter().flatten() {
        if id.len() > 256 || id.chars().any(char::is_control) {
            return Err(FleetRefusal::BadPlatformId);
        }
    }
    match e.event.as_str() {
        "stop" => Ok((e.stream_id, None)),
        "start" => {
            let url = e.source_url.ok_or(FleetRefusal::NoSourceUrl)?;
            let uri = pull_uri(&url).ok_or(FleetRefusal::BadSourceUrl)?;
            Ok((e.stream_id, Some(Wanted { uri, account_id: e.account_id })))
        }
        _ => Err(FleetRefusal::UnknownEvent),
    }
}

/// A stream id a fleet may use: short, printable, and not one of the names the worker
/// gives its own publishers (`rtmp/…`, `whip/…`).
pub fn valid_stream_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 200
        && !id.starts_with("rtmp/")
        && !id.starts_with("whip/")
        && !id.split('/').any(|part| part.is_empty() || part == "." || part == "..")
        && id.chars().all(|c| c.is_ascii_alphanumeric() || "._-:/@".contains(c))
}

/// A source a worker may pull for a fleet: network stream URLs only (a file path in a
/// Kafka message would let a producer make the worker read its disk).
pub fn pull_uri(url: &str) -> Option<String> {
    const SCHEMES: [&str; 6] = ["rtmp://", "rtmps://", "rtsp://", "rtsps://", "srt://", "https://"];
    let ok = url.len() <= 2048
        && !url.chars().any(|c| c.is_control() || c.is_whitespace())
        && (SCHEMES.iter().any(|s| url.starts_with(s)) || (url.starts_with("http://") && url.contains(".m3u8")));
    ok.then(|| url.to_string())
}

/// Where the reading of one assigned lifecycle partition stands.
struct Reading {
    /// The end of the partition at assignment: reading up to it replays the history.
    end: Option<i64>,
    next: i64,
}

/// Rebalances seen in the consumer's callback, handled after `poll` returns.
#[derive(Default)]
struct FleetContext {
    events: Mutex<Vec<(bool, Vec<i32>)>>,
}

impl ClientContext for FleetContext {}

impl ConsumerContext for FleetContext {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let (assigned, tpl) = match rebalance {
            Rebalance::Assign(tpl) => (true, tpl),
            Rebalance::Revoke(tpl) => (false, tpl),
            Rebalance::Error(e) => {
                tracing::warn!("fleet: rebalance error: {e}");
                return;
            }
        };
        let parts = tpl.elements().iter().map(|e| e.partition()).collect();
        REBALANCES.with_label_values(&[if assigned { "assign" } else { "revoke" }]).inc();
        self.events.lock().unwrap_or_else(|p| p.into_inner()).push((assigned, parts));
    }
}

/// The fleet member's thread; `leave` starts the hand-off, dropping it stops.
pub struct Fleet {
    leave: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Set once this worker has left the group and its streams ran out their hand-off.
    handed_off: Arc<AtomicBool>,
}

impl Fleet {
    pub fn start(
        cfg: &FleetConfig,
        kafka: &vigil_sink::KafkaConfig,
        worker_id: &str,
        streams: Arc<Streams>,
        trust: &vigil_trust::config::Trust,
    ) -> anyhow::Result<Fleet> {
        let instance = cfg.instance_id.clone().unwrap_or_else(|| worker_id.to_string());
        let mut client = kafka.consumer_config(&cfg.group_id).map_err(anyhow::Error::msg)?;
        let session_ms = cfg.session_timeout_secs * 1000;
        client
            .set("group.instance.id", &instance)
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("session.timeout.ms", session_ms.to_string())
            .set("heartbeat.interval.ms", (session_ms / 5).to_string())
            // A worker whose fleet loop stops polling (it polls every 100 ms) is dropped
            // as fast as a dead one, so the streams it would start go elsewhere; the
            // loop's slowest step (the partitions' ends, 2 s a turn at most) stays well
            // inside.
            .set("max.poll.interval.ms", session_ms.to_string())
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.offset.store", "false");
        let consumer: BaseConsumer<FleetContext> = client.create_with_context(FleetContext::default())?;
        consumer.subscribe(&[&cfg.lifecycle_topic])?;
        let claims = Claims::open(cfg, kafka, &instance, trust)?;
        let settings = Settings {
            me: instance.clone(),
            handoff: Duration::from_secs(cfg.handoff_secs),
            sees_claims: claims.sees_claims(),
            skew_ms: trust.max_clock_skew_ms(),
        };
        let (leave, stop, handed_off) =
            (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let mut member = Member {
            consumer,
            topic: cfg.lifecycle_topic.clone(),
            streams,
            machine: Machine::new(settings),
            origin: Instant::now(),
            reading: HashMap::new(),
            ending: HashMap::new(),
            claims,
            verifier: trust.verifier(vigil_trust::TopicKind::Lifecycle),
            hosts: cfg.clone(),
        };
        let (l, s, h) = (leave.clone(), stop.clone(), handed_off.clone());
        let thread = std::thread::Builder::new().name("vigil-fleet".into()).spawn(move || {
            tracing::info!(instance, "fleet: joined the group");
            member.run(&l, &s, &h);
        })?;
        Ok(Fleet { leave, stop, thread: Some(thread), handed_off })
    }

    /// Leaves the group (partitions move to the other workers at once) and lets this
    /// worker's fleet streams go after the hand-off. Returns once they are stopped, or at
    /// `deadline`.
    pub fn leave_and_hand_off(&self, deadline: Instant) {
        self.leave.store(true, Relaxed);
        while !self.handed_off.load(Relaxed) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The I/O around the [`Machine`]: moves lifecycle and owners records in, carries its
/// actions out to the streams and the owners topic.
struct Member {
    consumer: BaseConsumer<FleetContext>,
    topic: String,
    streams: Arc<Streams>,
    machine: Machine,
    /// The machine's clock starts here.
    origin: Instant,
    reading: HashMap<i32, Reading>,
    /// Streams stopped after a hand-off whose analysis must end before they are released.
    ending: HashMap<String, Arc<HandOver>>,
    claims: Claims,
    /// Only the platform's signed lifecycle events are believed.
    verifier: vigil_trust::Verifier,
    /// Where pulled streams may come from (`check_host`).
    hosts: FleetConfig,
}

impl Member {
    fn run(&mut self, leave: &AtomicBool, stop: &AtomicBool, handed_off: &AtomicBool) {
        while !stop.load(Relaxed) {
            if leave.load(Relaxed) && !self.machine.left() {
                // For a static member, unsubscribing (unlike closing) sends LeaveGroup.
                self.consumer.unsubscribe();
                self.reading.clear();
                self.feed(Input::Leave);
            }
            let left = self.machine.left();
            let (verifier, machine) = (&self.verifier, &self.machine);
            let message = self.consumer.poll(Duration::from_millis(100)).map(|m| {
                m.map(|m| {
                    // Freshness applies to what arrives live, not to the history read
                    // on assignment (ordered per stream by the machine instead).
                    let live = machine.caught_up(m.partition());
                    let signed = verifier.check_with(&m, live).map(|v| v.ts_ms);
                    let record = (m.key().map(<[u8]>::to_vec), m.payload().map(<[u8]>::to_vec));
                    (m.partition(), m.offset(), record, signed)
                })
            });
            self.handle_rebalances(left);
            match message {
                Some(Ok((partition, offset, (key, payload), signed))) if !left => {
                    self.on_message(partition, offset, key.as_deref(), payload.as_deref(), signed)
                }
                Some(Err(e)) => {
                    ERRORS.inc();
                    tracing::warn!("fleet: {e}");
                }
                _ => {}
            }
            self.check_caught_up();
            for heard in self.claims.poll() {
                self.feed(Input::Heard(heard));
            }
            self.observe_streams();
            let (running, full) = (self.streams.len(), self.streams.at_capacity().is_some());
            self.feed(Input::Tick { running, full });
            if self.machine.handed_off() {
                handed_off.store(true, Relaxed);
            }
            let g = self.machine.gauges();
            OWNED.set(g.owned as i64);
            WAITING.set(g.waiting as i64);
            DELEGATED.set(g.delegated as i64);
            KEPT.set(g.kept as i64);
            PARTITIONS.set(g.partitions as i64);
        }
        self.claims.flush();
        if !self.machine.left() {
            // A restart or a kill: no LeaveGroup (static membership keeps the partitions
            // for `session_timeout_secs`, long enough for a restarted pod to take them back).
            tracing::info!("fleet: closing without leaving the group");
        }
    }

    /// Gives the machine one input, carries out what it asks, and gives it the answers.
    fn feed(&mut self, input: Input) {
        let mut queue: VecDeque<Action> = self.machine.step(input, self.origin.elapsed()).into();
        while let Some(action) = queue.pop_front() {
            if let Some(answer) = self.act(action) {
                queue.extend(self.machine.step(answer, self.origin.elapsed()));
            }
        }
    }

    fn act(&mut self, action: Action) -> Option<Input> {
        match action {
            Action::Start { stream, wanted, purpose } => {
                let shown = vigil_core::redact::uri(&wanted.uri);
                let source = ChildSource::Uri(wanted.uri.clone());
                return Some(match self.streams.start(&stream, source, shown, wanted.account_id.clone()) {
                    Ok(_) => Input::Started { stream, purpose },
                    Err(StartError::AlreadyLive(_)) => Input::AlreadyRunning { stream, purpose },
                    Err(e) => {
                        let full = matches!(e, StartError::AtCapacity(_) | StartError::Full(_));
                        match (&purpose, full) {
                            (Purpose::Own { .. }, false) => tracing::error!(stream, "fleet: not started: {e}"),
                            (Purpose::Offer { .. }, _) => tracing::info!(stream, "fleet: offer not taken: {e}"),
                            _ => {}
                        }
                        Input::StartRefused { stream, purpose, full }
                    }
                });
            }
            Action::Stop { stream, why, release } => {
                if release && let Some(h) = self.streams.handover(&stream) {
                    self.ending.insert(stream.clone(), h);
                }
                self.streams.stop(&stream, why);
            }
            Action::Say(say) => self.claims.say(say),
            Action::Hold { stream, at_most } => {
                if let Some(h) = self.streams.handover(&stream) {
                    tracing::info!(
                        stream,
                        "fleet: taken over from a live owner: alerts held until it releases the stream"
                    );
                    h.hold(Instant::now() + at_most);
                }
            }
            Action::Shorten { stream, within } => {
                if let Some(h) = self.streams.handover(&stream) {
                    h.shorten(Instant::now() + within);
                }
            }
            Action::Continue { stream, incident } => {
                let adopted = incident.as_ref().map(|i| i.id.clone());
                match self.streams.handover(&stream) {
                    Some(h) if h.release(incident) => {
                        tracing::info!(stream, ?adopted, "fleet: the previous owner released the stream")
                    }
                    _ => tracing::info!(stream, ?adopted, "fleet: a release came after its hold ended; ignored"),
                }
            }
            Action::Rejoin => {
                // For a static member, unsubscribing (unlike closing) sends LeaveGroup.
                self.consumer.unsubscribe();
                if let Err(e) = self.consumer.subscribe(&[&self.topic]) {
                    ERRORS.inc();
                    tracing::error!("fleet: could not subscribe again: {e}");
                }
            }
            Action::Count(c) => events::count(c),
        }
        None
    }

    /// Tells the machine what changed in the streams it runs: a first sample analysed,
    /// a stream gone, a stopped stream's analysis ended.
    fn observe_streams(&mut self) {
        let analysed: Vec<String> =
            self.machine.awaiting_sample().filter(|s| self.streams.has_analysed(s)).cloned().collect();
        for s in analysed {
            self.feed(Input::Analysed(s));
        }
        let gone: Vec<String> = self
            .machine
            .streams()
            .filter(|(s, f)| f.runs_here() && self.streams.handover(s).is_none())
            .map(|(s, _)| s.clone())
            .collect();
        for s in gone {
            self.feed(Input::Gone(s));
        }
        let machine = &self.machine;
        self.ending.retain(|s, _| machine.releasing(s));
        let ended: Vec<(String, Option<vigil_fusion::Incident>)> =
            self.ending.iter().filter_map(|(s, h)| h.ended().map(|open| (s.clone(), open))).collect();
        for (stream, open) in ended {
            self.ending.remove(&stream);
            self.feed(Input::AnalysisEnded { stream, open });
        }
    }

    fn handle_rebalances(&mut self, left: bool) {
        let events = std::mem::take(&mut *self.consumer.context().events.lock().unwrap_or_else(|p| p.into_inner()));
        for (assigned, parts) in events {
            if assigned && !left {
                tracing::info!(?parts, "fleet: partitions assigned");
                for p in &parts {
                    self.reading.insert(*p, Reading { end: None, next: 0 });
                }
                self.feed(Input::Assigned(parts));
            } else if !assigned {
                tracing::info!(?parts, "fleet: partitions revoked");
                for p in &parts {
                    self.reading.remove(p);
                }
                self.feed(Input::Revoked(parts));
            }
        }
    }

    fn on_message(
        &mut self,
        partition: i32,
        offset: i64,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        signed: Result<Option<u64>, vigil_trust::Refusal>,
    ) {
        let Some(reading) = self.reading.get_mut(&partition) else { return };
        reading.next = offset + 1;
        let hosts = &self.hosts;
        let parsed = signed.map_err(|_| FleetRefusal::Untrusted).and_then(|signed_at| {
            let (stream, wanted) = parse_event(key, payload)?;
            if let Some(w) = &wanted {
                hosts.check_host(&w.uri).map_err(FleetRefusal::from)?;
            }
            Ok((stream, wanted, signed_at))
        });
        match parsed {
            Ok((stream, wanted, signed_at)) => self.feed(Input::Lifecycle { partition, stream, wanted, signed_at }),
            Err(reason) => events::refused(partition, offset, reason),
        }
    }

    /// Tells the machine which partitions' history, up to their end at assignment, has
    /// been read.
    fn check_caught_up(&mut self) {
        let pending: Vec<i32> = self.reading.keys().copied().filter(|p| !self.machine.caught_up(*p)).collect();
        // The partitions' ends are asked of the broker for 2 s per turn at most (all of
        // them at once when it answers promptly): the loop keeps polling.
        let budget = Instant::now() + Duration::from_secs(2);
        for p in pending {
            let end = match self.reading[&p].end {
                Some(end) => end,
                None if Instant::now() >= budget => continue,
                None => {
                    let left = budget.saturating_duration_since(Instant::now()).max(Duration::from_millis(100));
                    match self.consumer.fetch_watermarks(&self.topic, p, left) {
                        Ok((_, high)) => high,
                        Err(e) => {
                            tracing::warn!(partition = p, "fleet: cannot read the partition's end: {e}");
                            continue;
                        }
                    }
                }
            };
            let Some(reading) = self.reading.get_mut(&p) else { continue };
            reading.end = Some(end);
            if reading.next >= end
                || self.consumer.position().ok().is_some_and(|pos| reached(&pos, &self.topic, p, end))
            {
                self.feed(Input::CaughtUp(p));
            }
        }
    }
}

fn reached(pos: &rdkafka::TopicPartitionList, topic: &str, p: i32, end: i64) -> bool {
    pos.find_partition(topic, p).and_then(|e| e.offset().to_raw()).is_some_and(|o| o >= end)
}

static REBALANCES: LazyLock<prometheus::IntCounterVec> = LazyLock::new(|| {
    prometheus::IntCounterVec::new(
        prometheus::Opts::new(
            "vigil_fleet_rebalances_total",
            "Partition assignments and revocations, and rejoins of a worker passed over by a rebalance, by kind",
        ),
        &["kind"],
    )
    .expect("valid metric")
});
static HANDOFFS: LazyLock<prometheus::IntCounterVec> = LazyLock::new(|| {
    prometheus::IntCounterVec::new(
        prometheus::Opts::new(
            "vigil_fleet_handoffs_total",
            "Streams handed off after a revoke, by outcome: taken (another member claimed it), timed_out (let go unclaimed on a drain), kept (unclaimed, kept running here)",
        ),
        &["outcome"],
    )
    .expect("valid metric")
});
static EVENTS: LazyLock<prometheus::IntCounterVec> = LazyLock::new(|| {
    prometheus::IntCounterVec::new(
        prometheus::Opts::new("vigil_fleet_events_total", "Lifecycle events read from assigned partitions, by event"),
        &["event"],
    )
    .expect("valid metric")
});
static REJECTED: LazyLock<prometheus::IntCounterVec> = LazyLock::new(|| {
    prometheus::IntCounterVec::new(
        prometheus::Opts::new("vigil_fleet_events_rejected_total", "Lifecycle events refused, by reason"),
        &["reason"],
    )
    .expect("valid metric")
});
static ERRORS: LazyLock<prometheus::IntCounter> = LazyLock::new(|| {
    prometheus::IntCounter::new("vigil_fleet_consumer_errors_total", "Errors the lifecycle consumer reported")
        .expect("valid metric")
});
static OWNED: LazyLock<prometheus::IntGauge> = LazyLock::new(|| {
    prometheus::IntGauge::new("vigil_fleet_streams_owned", "Fleet streams this worker runs").expect("valid metric")
});
static WAITING: LazyLock<prometheus::IntGauge> = LazyLock::new(|| {
    prometheus::IntGauge::new("vigil_fleet_streams_waiting", "Fleet streams due here that the worker cannot take yet")
        .expect("valid metric")
});
static DELEGATED: LazyLock<prometheus::IntGauge> = LazyLock::new(|| {
    prometheus::IntGauge::new(
        "vigil_fleet_streams_delegated",
        "Fleet streams due here that another worker runs for this one (it took the offer)",
    )
    .expect("valid metric")
});
static OFFERS: LazyLock<prometheus::IntCounterVec> = LazyLock::new(|| {
    prometheus::IntCounterVec::new(
        prometheus::Opts::new(
            "vigil_fleet_offers_total",
            "Streams offered to the fleet by a worker at capacity, by what happened: made, taken (by this worker), lost (another took it first), withdrawn, timed_out (the taker went silent)",
        ),
        &["outcome"],
    )
    .expect("valid metric")
});
static KEPT: LazyLock<prometheus::IntGauge> = LazyLock::new(|| {
    prometheus::IntGauge::new(
        "vigil_fleet_streams_kept_unowned",
        "Streams this worker keeps running after losing their partition because no other worker took them within the hand-off (a new owner that never started them)",
    )
    .expect("valid metric")
});
static PARTITIONS: LazyLock<prometheus::IntGauge> = LazyLock::new(|| {
    prometheus::IntGauge::new("vigil_fleet_partitions_assigned", "Lifecycle partitions this worker owns")
        .expect("valid metric")
});

/// Registers the fleet metrics (always: a worker outside a fleet shows them at zero).
pub fn register(registry: &prometheus::Registry) -> prometheus::Result<()> {
    for (vec, labels) in [(&*REBALANCES, &["assign", "revoke", "rejoin"][..]), (&*EVENTS, &["start", "stop"])] {
        for l in labels {
            let _ = vec.with_label_values(&[*l]);
        }
    }
    events::precreate();
    registry.register(Box::new(REBALANCES.clone()))?;
    registry.register(Box::new(EVENTS.clone()))?;
    registry.register(Box::new(HANDOFFS.clone()))?;
    registry.register(Box::new(REJECTED.clone()))?;
    registry.register(Box::new(ERRORS.clone()))?;
    registry.register(Box::new(OWNED.clone()))?;
    registry.register(Box::new(WAITING.clone()))?;
    registry.register(Box::new(DELEGATED.clone()))?;
    registry.register(Box::new(OFFERS.clone()))?;
    registry.register(Box::new(KEPT.clone()))?;
    registry.register(Box::new(PARTITIONS.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_event_names_a_network_source() {
        let e =
            br#"{"event":"start","stream_id":"live/alice","source_url":"rtmp://origin/live/alice","account_id":"a1"}"#;
        let (id, w) = parse_event(Some(b"live/alice"), Some(e)).unwrap();
        assert_eq!(id, "live/alice");
        assert_eq!(w.unwrap().uri, "rtmp://origin/live/alice");
        let stop = br#"{"event":"stop","stream_id":"live/alice"}"#;
        assert_eq!(parse_event(None, Some(stop)).unwrap(), ("live/alice".into(), None));
    }

    #[test]
    fn hostile_events_are_refused_with_a_reason() {
        let cases: [(&[u8], FleetRefusal); 9] = [
            (br#"{"event":"start","stream_id":"x","source_url":"file:///etc/shadow"}"#, FleetRefusal::BadSourceUrl),
            (br#"{"event":"start","stream_id":"x","source_url":"/etc/shadow"}"#, FleetRefusal::BadSourceUrl),
            (br#"{"event":"start","stream_id":"x"}"#, FleetRefusal::NoSourceUrl),
            (br#"{"event":"start","stream_id":"rtmp/live/x","source_url":"rtmp://o/l/x"}"#, FleetRefusal::BadStreamId),
            (br#"{"event":"start","stream_id":"../x","source_url":"rtmp://o/l/x"}"#, FleetRefusal::BadStreamId),
            (br#"{"event":"start","stream_id":"a b","source_url":"rtmp://o/l/x"}"#, FleetRefusal::BadStreamId),
            (br#"{"event":"pause","stream_id":"x"}"#, FleetRefusal::UnknownEvent),
            (br#"{"event":"stop","stream_id":"x","extra":1}"#, FleetRefusal::Malformed),
            (b"\xff\xfe", FleetRefusal::Malformed),
        ];
        for (payload, reason) in cases {
            assert_eq!(parse_event(None, Some(payload)), Err(reason), "{}", String::from_utf8_lossy(payload));
        }
        let other_key = br#"{"event":"stop","stream_id":"x"}"#;
        assert_eq!(parse_event(Some(b"y"), Some(other_key)), Err(FleetRefusal::KeyMismatch));
        assert_eq!(parse_event(None, None), Err(FleetRefusal::Empty));
        // A tombstone keyed by a stream stops it (its signature is checked before).
        assert_eq!(parse_event(Some(b"live/alice"), None), Ok(("live/alice".into(), None)));
        assert_eq!(parse_event(Some(b"rtmp/x"), None), Err(FleetRefusal::BadStreamId));
        assert_eq!(parse_event(None, Some(&vec![b' '; MAX_EVENT_BYTES + 1])), Err(FleetRefusal::TooLarge));
    }

    #[test]
    fn config_mistakes_are_named() {
        let cfg = FleetConfig {
            lifecycle_topic: "bad topic".into(),
            owners_topic: "bad topic".into(),
            group_id: " ".into(),
            instance_id: Some("".into()),
            session_timeout_secs: 1,
            handoff_secs: 500,
            pull_hosts: vec!["a b".into()],
            allow_link_local: false,
        };
        let e = cfg.validate("fleet", false);
        assert_eq!(e.len(), 9, "{e:?}");
        let none = FleetConfig { pull_hosts: Vec::new(), ..cfg };
        assert!(none.validate("fleet", true).iter().any(|m| m.contains("fleet.pull_hosts: name the hosts")));
    }
}
