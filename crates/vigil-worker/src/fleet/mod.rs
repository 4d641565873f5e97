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
mod offers;
mod owners;
pub mod pull_hosts;

use super::handover::HandOver;
use super::streams::{StartError, Streams};
use events::{FleetRefusal, Handoff, OfferOutcome};
use offers::{Delegate, Delegated, PendingOffer, Waiting};
use owners::{Claims, Notice};
use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Message;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
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

struct PartitionState {
    /// Stream id → what its last event wants (`None`: stopped).
    desired: BTreeMap<String, Option<Wanted>>,
    /// The end of the partition at assignment: reading up to it replays the history.
    end: Option<i64>,
    next: i64,
    caught_up: bool,
    /// Stream id → the signing time of its last event believed.
    signed_at: HashMap<String, u64>,
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
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.offset.store", "false");
        let consumer: BaseConsumer<FleetContext> = client.create_with_context(FleetContext::default())?;
        consumer.subscribe(&[&cfg.lifecycle_topic])?;
        let claims = Claims::open(cfg, kafka, &instance, trust)?;
        let (leave, stop, handed_off) =
            (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let mut member = Member {
            consumer,
            topic: cfg.lifecycle_topic.clone(),
            handoff: Duration::from_secs(cfg.handoff_secs),
            streams,
            partitions: HashMap::new(),
            owned: HashMap::new(),
            waiting: BTreeMap::new(),
            stopping: HashMap::new(),
            unclaimed: HashMap::new(),
            releasing: HashMap::new(),
            delegated: HashMap::new(),
            delegates: HashMap::new(),
            pending_offers: HashMap::new(),
            left: false,
            last_rejoin: None,
            claims,
            verifier: trust.verifier(vigil_trust::TopicKind::Lifecycle),
            hosts: cfg.clone(),
            skew_ms: trust.max_clock_skew_ms(),
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

struct Member {
    consumer: BaseConsumer<FleetContext>,
    topic: String,
    handoff: Duration,
    streams: Arc<Streams>,
    partitions: HashMap<i32, PartitionState>,
    /// Streams this member started → their partition.
    owned: HashMap<String, i32>,
    /// Streams due here that the worker could not take yet (at capacity): retried, and
    /// offered to the other workers.
    waiting: BTreeMap<String, Waiting>,
    /// Streams let go, stopped once their new owner holds them (make-before-break).
    stopping: HashMap<String, Stopping>,
    /// Streams started here and not yet claimed: claimed once a sample is analysed.
    unclaimed: HashMap<String, Instant>,
    /// Streams handed off and stopping here: released (with the incident left open)
    /// once their analysis has ended.
    releasing: HashMap<String, Releasing>,
    /// Streams due here that another worker runs for this one (it took the offer).
    delegated: HashMap<String, Delegated>,
    /// Streams this worker runs for another's offer.
    delegates: HashMap<String, Delegate>,
    /// Offers this worker will take when due (the less loaded a worker, the sooner).
    pending_offers: HashMap<String, PendingOffer>,
    /// This worker left the group (draining).
    left: bool,
    /// When this worker last left and rejoined the group to get a share it was never
    /// delivered (see [`Member::rejoin_if_passed_over`]).
    last_rejoin: Option<Instant>,
    claims: Claims,
    /// Only the platform's signed lifecycle events are believed.
    verifier: vigil_trust::Verifier,
    /// Where pulled streams may come from (`check_host`).
    hosts: FleetConfig,
    /// The clock skew allowed between the platform's lifecycle producers.
    skew_ms: u64,
}

struct Stopping {
    since: Instant,
    give_up: Instant,
    /// The lifecycle partition it was revoked with (a stream let go for a partition
    /// move, not for an offer).
    partition: Option<i32>,
    /// Nobody claimed it in time and this worker stays in the group: it keeps running
    /// the stream rather than leave it unwatched (see [`Member::stop_due`]).
    kept: bool,
}

impl Stopping {
    fn new(since: Instant, give_up: Instant) -> Stopping {
        Stopping { since, give_up, partition: None, kept: false }
    }
}

struct Releasing {
    handover: Arc<HandOver>,
    to: String,
    give_up: Instant,
}

/// A stream started here is claimed after this long even before a sample is analysed
/// (a source that shows nothing must not keep two workers pulling it).
const CLAIM_AFTER: Duration = Duration::from_secs(10);
/// How long a new owner, having claimed a stream, waits for the old owner's release
/// before it sends the alerts it held.
const RELEASE_WAIT: Duration = Duration::from_secs(5);
/// The least time between two rejoins of a worker passed over by a rebalance.
const REJOIN_EVERY: Duration = Duration::from_secs(60);
impl Member {
    fn run(&mut self, leave: &AtomicBool, stop: &AtomicBool, handed_off: &AtomicBool) {
        let mut last_retry = Instant::now();
        while !stop.load(Relaxed) {
            let left = self.left;
            if leave.load(Relaxed) && !left {
                self.left = true;
                // For a static member, unsubscribing (unlike closing) sends LeaveGroup.
                self.consumer.unsubscribe();
                let all: Vec<i32> = self.partitions.keys().copied().collect();
                self.revoke(&all);
                let give_up = Instant::now() + self.handoff;
                for (id, s) in self.stopping.iter_mut().filter(|(_, s)| s.kept) {
                    (s.kept, s.give_up) = (false, give_up);
                    self.claims.handing_off(id);
                }
                self.waiting.clear();
                self.hand_back_delegates();
                tracing::info!("fleet: left the group; streams handed off in {:?}", self.handoff);
            }
            let left = self.left;
            let (verifier, partitions) = (&self.verifier, &self.partitions);
            let message = self.consumer.poll(Duration::from_millis(100)).map(|m| {
                m.map(|m| {
                    // Freshness applies to what arrives live, not to the history read
                    // on assignment (ordered per stream in `on_message` instead).
                    let live = partitions.get(&m.partition()).is_some_and(|p| p.caught_up);
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
            if last_retry.elapsed() >= Duration::from_secs(1) {
                last_retry = Instant::now();
                self.retry_waiting();
                self.check_delegated();
                self.refresh_delegates();
                self.rejoin_if_passed_over();
            }
            self.claim_ready();
            self.handle_notices();
            self.take_due_offers();
            self.stop_due();
            self.publish_releases();
            let idle = self.stopping.is_empty() && self.owned.is_empty() && self.releasing.is_empty();
            if left && idle && self.delegates.is_empty() {
                handed_off.store(true, Relaxed);
            }
            OWNED.set((self.owned.len() + self.delegates.len()) as i64);
            WAITING.set(self.waiting.len() as i64);
            DELEGATED.set(self.delegated.len() as i64);
            KEPT.set(self.stopping.values().filter(|s| s.kept).count() as i64);
            PARTITIONS.set(self.partitions.len() as i64);
        }
        self.claims.flush();
        if !self.left {
            // A restart or a kill: no LeaveGroup (static membership keeps the partitions
            // for `session_timeout_secs`, long enough for a restarted pod to take them back).
            tracing::info!("fleet: closing without leaving the group");
        }
    }

    /// A worker holding no partition while another keeps streams that nobody took after
    /// a rebalance was most likely passed over: the group gave it a partition that was
    /// never delivered. tansu 0.6 does this to every static member that joins a running
    /// group (a cooperative rebalance's second round never reaches it). Leaving and
    /// joining again makes the group rebalance with this worker as a new member, and the
    /// unowned partition comes to it in one round. At most once a minute: where there
    /// are more workers than partitions, holding none is right and this changes nothing.
    fn rejoin_if_passed_over(&mut self) {
        let passed_over = !self.left
            && self.partitions.is_empty()
            && self.claims.handoff_unclaimed(self.handoff, self.handoff)
            && self.last_rejoin.is_none_or(|t| t.elapsed() >= REJOIN_EVERY);
        if !passed_over {
            return;
        }
        tracing::warn!(
            "fleet: holding no partition while another worker keeps streams nobody took; leaving and joining the group again"
        );
        REBALANCES.with_label_values(&["rejoin"]).inc();
        self.last_rejoin = Some(Instant::now());
        // For a static member, unsubscribing (unlike closing) sends LeaveGroup.
        self.consumer.unsubscribe();
        if let Err(e) = self.consumer.subscribe(&[&self.topic]) {
            ERRORS.inc();
            tracing::error!("fleet: could not subscribe again: {e}");
        }
    }

    fn handle_rebalances(&mut self, left: bool) {
        let events = std::mem::take(&mut *self.consumer.context().events.lock().unwrap_or_else(|p| p.into_inner()));
        for (assigned, parts) in events {
            if assigned && !left {
                tracing::info!(?parts, "fleet: partitions assigned");
                for p in parts {
                    self.partitions.insert(
                        p,
                        PartitionState {
                            desired: BTreeMap::new(),
                            end: None,
                            next: 0,
                            caught_up: false,
                            signed_at: HashMap::new(),
                        },
                    );
                }
            } else if !assigned {
                tracing::info!(?parts, "fleet: partitions revoked");
                self.revoke(&parts);
            }
        }
    }

    /// Lets go of these partitions' streams after the hand-off.
    fn revoke(&mut self, parts: &[i32]) {
        let give_up = Instant::now() + self.handoff;
        for p in parts {
            self.partitions.remove(p);
        }
        let gone: Vec<(String, i32)> =
            self.owned.iter().filter(|(_, p)| parts.contains(p)).map(|(s, p)| (s.clone(), *p)).collect();
        for (s, p) in gone {
            self.owned.remove(&s);
            self.unclaimed.remove(&s);
            // Whoever takes it holds its alerts until this worker releases it.
            self.claims.handing_off(&s);
            self.stopping.insert(s, Stopping { partition: Some(p), ..Stopping::new(Instant::now(), give_up) });
        }
        self.waiting.retain(|_, w| !parts.contains(&w.partition));
        // Their new partition owner runs them; the worker running them for this one
        // lets go once it reads that owner's claim.
        self.delegated.retain(|_, d| !parts.contains(&d.partition));
    }

    fn on_message(
        &mut self,
        partition: i32,
        offset: i64,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        signed: Result<Option<u64>, vigil_trust::Refusal>,
    ) {
        let Some(state) = self.partitions.get_mut(&partition) else { return };
        state.next = offset + 1;
        let (hosts, skew_ms) = (&self.hosts, self.skew_ms);
        let parsed = signed.map_err(|_| FleetRefusal::Untrusted).and_then(|signed_at| {
            let (stream, wanted) = parse_event(key, payload)?;
            if let Some(w) = &wanted {
                hosts.check_host(&w.uri).map_err(FleetRefusal::from)?;
            }
            // Per stream, signing times only go forward: an old signed `start` written
            // again after its `stop` is refused, in the history as live.
            if let Some(at) = signed_at {
                let last = state.signed_at.entry(stream.clone()).or_insert(0);
                // The platform's producers' clocks may differ by up to the skew allowed.
                if at.saturating_add(skew_ms) < *last {
                    return Err(FleetRefusal::OutOfOrder);
                }
                *last = (*last).max(at);
            }
            Ok((stream, wanted))
        });
        let (stream, wanted) = match parsed {
            Ok(e) => e,
            Err(reason) => return events::refused(partition, offset, reason),
        };
        EVENTS.with_label_values(&[if wanted.is_some() { "start" } else { "stop" }]).inc();
        state.desired.insert(stream.clone(), wanted.clone());
        if state.caught_up {
            self.apply(partition, &stream, wanted);
        }
    }

    /// Once a partition's history up to its end at assignment has been read, starts
    /// what it says is live.
    fn check_caught_up(&mut self) {
        let pending: Vec<i32> = self.partitions.iter().filter(|(_, s)| !s.caught_up).map(|(p, _)| *p).collect();
        for p in pending {
            let end = match self.partitions[&p].end {
                Some(end) => end,
                None => match self.consumer.fetch_watermarks(&self.topic, p, Duration::from_secs(2)) {
                    Ok((_, high)) => high,
                    Err(e) => {
                        tracing::warn!(partition = p, "fleet: cannot read the partition's end: {e}");
                        continue;
                    }
                },
            };
            let Some(state) = self.partitions.get_mut(&p) else { continue };
            state.end = Some(end);
            if state.next >= end || self.consumer.position().ok().is_some_and(|pos| reached(&pos, &self.topic, p, end))
            {
                state.caught_up = true;
                let live: Vec<(String, Option<Wanted>)> =
                    state.desired.iter().map(|(s, w)| (s.clone(), w.clone())).collect();
                tracing::info!(partition = p, streams = live.len(), "fleet: partition history read");
                for (s, w) in live {
                    self.apply(p, &s, w);
                }
            }
        }
    }

    fn apply(&mut self, partition: i32, stream: &str, wanted: Option<Wanted>) {
        match wanted {
            Some(w) => {
                self.stopping.remove(stream);
                if !self.owned.contains_key(stream) && !self.delegated.contains_key(stream) {
                    self.waiting.entry(stream.to_string()).or_insert_with(|| Waiting::new(partition, w));
                    self.retry_waiting();
                }
            }
            None => {
                self.waiting.remove(stream);
                self.unclaimed.remove(stream);
                // Running here (owned, or still handed off from an earlier move).
                if self.owned.remove(stream).is_some() | self.stopping.remove(stream).is_some() {
                    self.streams.stop(stream, "stopped by its lifecycle event");
                }
                // Offered (taken or not), or run elsewhere for an offer, perhaps made
                // before this worker owned the partition: whoever runs it stops.
                if self.delegated.remove(stream).is_some() || self.claims.offer_known(stream) {
                    self.claims.withdraw(stream);
                    events::offer(OfferOutcome::Withdrawn);
                } else if self.claims.handed_over_lately(stream, self.handoff) {
                    // Its previous owner still runs it, waiting for this worker's claim.
                    self.claims.withdraw(stream);
                }
            }
        }
    }

    fn retry_waiting(&mut self) {
        let waiting = std::mem::take(&mut self.waiting);
        for (stream, mut waits) in waiting {
            if self.streams.handover(&stream).is_some() {
                // Still running here (revoked and assigned back, or run for an offer):
                // keep it, now as its partition's owner, even when the worker is full.
                self.delegates.remove(&stream);
                self.claims.claim(&stream);
                self.owned.insert(stream, waits.partition);
                continue;
            }
            match self.start_here(&stream, &waits.wanted) {
                Ok(()) => {
                    self.owned.insert(stream, waits.partition);
                }
                Err(StartError::AlreadyLive(_)) => {
                    self.claims.claim(&stream);
                    self.owned.insert(stream, waits.partition);
                }
                Err(StartError::AtCapacity(_) | StartError::Full(_)) => {
                    self.offer_if_due(&stream, &mut waits);
                    self.waiting.insert(stream, waits);
                }
                Err(e) => {
                    tracing::error!(stream, "fleet: not started: {e}");
                    self.waiting.insert(stream, waits);
                }
            }
        }
    }

    /// Starts pulling `stream` here: its alerts held while another worker still alerts on
    /// it, and claimed once a sample is analysed (see [`Member::claim_ready`]).
    fn start_here(&mut self, stream: &str, wanted: &Wanted) -> Result<(), StartError> {
        let shown = vigil_core::redact::uri(&wanted.uri);
        self.streams.start(stream, ChildSource::Uri(wanted.uri.clone()), shown, wanted.account_id.clone())?;
        if self.someone_else_alerts(stream) {
            self.hold(stream, self.handoff);
        }
        self.unclaimed.insert(stream.to_string(), Instant::now());
        Ok(())
    }

    /// Another worker runs `stream` and alerts on it now: it announced handing it off,
    /// or it runs it for an offer (renewing its claim).
    fn someone_else_alerts(&self, stream: &str) -> bool {
        self.claims.handed_over_lately(stream, self.handoff)
            || self.claims.offer_claimed_lately(stream, 2 * offers::RENEW)
    }

    /// Holds a stream's alerts: another worker still alerts on it.
    fn hold(&self, stream: &str, at_most: Duration) {
        if let Some(h) = self.streams.handover(stream) {
            tracing::info!(stream, "fleet: taken over from a live owner: alerts held until it releases the stream");
            h.hold(Instant::now() + at_most);
        }
    }

    /// Claims the streams started here that have had a sample analysed: only then may
    /// the old owner let them go.
    fn claim_ready(&mut self) {
        self.unclaimed.retain(|s, _| self.owned.contains_key(s) || self.delegates.contains_key(s));
        let ready: Vec<String> = self
            .unclaimed
            .iter()
            // A taker claims only once it won the offer: a loser's claim would make the
            // winner let go.
            .filter(|(s, _)| self.delegates.get(*s).is_none_or(|d| d.won))
            .filter(|(s, at)| self.streams.has_analysed(s) || at.elapsed() >= CLAIM_AFTER)
            .map(|(s, _)| s.clone())
            .collect();
        for s in ready {
            self.unclaimed.remove(&s);
            self.claims.claim(&s);
            if let Some(h) = self.streams.handover(&s) {
                h.shorten(Instant::now() + RELEASE_WAIT);
            }
        }
    }

    /// Acts on what the other workers said on the owners topic.
    fn handle_notices(&mut self) {
        for notice in self.claims.poll() {
            match notice {
                Notice::HandingOff { stream, .. }
                    if self.owned.contains_key(&stream) || self.delegates.contains_key(&stream) =>
                {
                    // Announced after this worker started it (a race with the rebalance):
                    // hold (unless it already alerted), and claim again if it had claimed,
                    // since the announcing worker waits for a claim newer than its own.
                    let wait = if self.unclaimed.contains_key(&stream) { self.handoff } else { RELEASE_WAIT };
                    self.hold(&stream, wait);
                    if !self.unclaimed.contains_key(&stream) {
                        self.claims.claim(&stream);
                    }
                }
                Notice::Released { stream, incident } => {
                    let adopted = incident.as_ref().map(|i| i.id.clone());
                    match self.streams.handover(&stream) {
                        Some(h) if h.release(incident) => {
                            tracing::info!(stream, ?adopted, "fleet: the previous owner released the stream")
                        }
                        _ => tracing::info!(stream, ?adopted, "fleet: a release came after its hold ended; ignored"),
                    }
                }
                Notice::HandingOff { stream, .. } if self.stopped_here(&stream) => {
                    // Handed off to this worker after its lifecycle said stop: the worker
                    // still running it stops.
                    self.claims.withdraw(&stream);
                }
                Notice::HandingOff { stream, by } => self.on_delegate_handing_off(&stream, &by),
                Notice::Offered { stream, from, wanted } => self.on_offered(stream, from, wanted),
                Notice::OfferTaken { stream, by } => self.on_offer_taken(&stream, &by),
                Notice::Withdrawn(stream) => self.on_withdrawn(&stream),
            }
        }
    }

    /// Lets go of the streams handed off whose new owner claimed them. A stream revoked
    /// with its partition that nobody claims within the hand-off is kept running here
    /// while this worker stays in the group: a new owner that never starts it (the broker
    /// did not deliver its assignment, or it failed) must not leave the stream unwatched.
    /// It is let go once someone claims it, stopped if its lifecycle says stop once this
    /// worker owns its partition again, and handed off like the rest on a drain.
    /// The stream's lifecycle, in a partition this worker owns and has read, says stop.
    fn stopped_here(&self, stream: &str) -> bool {
        self.partitions.values().any(|p| p.caught_up && matches!(p.desired.get(stream), Some(None)))
    }

    fn stop_due(&mut self) {
        let now = Instant::now();
        // Without the owners topic no claim is ever seen: keeping would mean forever.
        let keep = !self.left && self.claims.sees_claims();
        let due: Vec<(String, Option<String>)> = self
            .stopping
            .iter()
            .map(|(id, s)| (id, s, self.claims.taken_since(id, s.since).map(str::to_string)))
            .filter(|(_, s, taken)| taken.is_some() || (s.give_up <= now && !s.kept))
            .map(|(id, _, taken)| (id.clone(), taken))
            .collect();
        // A kept stream that ended here (its source ended, or it was stopped) is gone.
        let streams = &self.streams;
        self.stopping.retain(|id, s| !s.kept || streams.handover(id).is_some());
        // A kept stream's hand-off is announced again now and then: whoever takes it,
        // however late, holds its alerts until this worker releases it.
        let every = (self.handoff / 2).max(Duration::from_secs(5));
        for (id, s) in self.stopping.iter_mut().filter(|(_, s)| s.kept && s.give_up <= now) {
            self.claims.handing_off(id);
            s.give_up = now + every;
        }
        for (id, taken) in due {
            if let Some(s) = self.stopping.get_mut(&id).filter(|s| taken.is_none() && s.partition.is_some() && keep) {
                (s.kept, s.give_up) = (true, now);
                events::handoff(Handoff::Kept);
                tracing::warn!(
                    stream = id,
                    partition = s.partition,
                    "fleet: no other worker took the stream in time; keeping it running here until one does"
                );
                continue;
            }
            self.stopping.remove(&id);
            let why = if taken.is_some() { "handed off to another worker" } else { "no other worker took it in time" };
            events::handoff(if taken.is_some() { Handoff::Taken } else { Handoff::TimedOut });
            tracing::info!(stream = id, "fleet: let go: {why}");
            if let (Some(to), Some(handover)) = (taken, self.streams.handover(&id)) {
                self.releasing.insert(id.clone(), Releasing { handover, to, give_up: now + 2 * RELEASE_WAIT });
            }
            self.streams.stop(&id, why);
        }
    }

    /// Releases the streams handed off whose analysis here has ended, passing on the
    /// incident left open.
    fn publish_releases(&mut self) {
        let now = Instant::now();
        let done: Vec<(String, Option<Option<vigil_fusion::Incident>>)> = self
            .releasing
            .iter()
            .filter_map(|(s, r)| match r.handover.ended() {
                Some(open) => Some((s.clone(), Some(open))),
                None => (r.give_up <= now).then(|| (s.clone(), None)),
            })
            .collect();
        for (stream, ended) in done {
            let Some(r) = self.releasing.remove(&stream) else { continue };
            match ended {
                Some(open) => {
                    tracing::info!(stream, to = r.to, open = ?open.as_ref().map(|i| &i.id), "fleet: released");
                    self.claims.release(&stream, &r.to, open);
                }
                None => tracing::warn!(stream, "fleet: its analysis did not end in time; not released"),
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
