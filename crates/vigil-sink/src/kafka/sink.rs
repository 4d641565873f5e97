//! The producer side: spool, offer, confirm; retries of failed deliveries and the
//! re-creation of a producer after a fatal error, on one maintenance thread.

use super::config::KafkaConfig;
use super::health::{HealthState, KafkaHealth};
use crate::spool::{Record, Spool, SpoolError};
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// First delay before a message whose delivery failed is offered again; doubles per
/// attempt up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// Delay before re-creating a producer whose predecessor hit a fatal error less than
/// [`RECREATE_MAX`] ago; doubles up to it (a broker that keeps causing fatal errors is
/// not hammered).
const RECREATE_FIRST: Duration = Duration::from_secs(1);
const RECREATE_MAX: Duration = Duration::from_secs(60);
/// How often the maintenance thread looks at the stop flag when it has nothing due.
const IDLE_WAIT: Duration = Duration::from_secs(1);
/// Messages waiting while the broker confirmed nothing for this long: the producer is
/// re-created (a new idempotent producer id) and the spool offered again. A broker that
/// came back empty refuses the old producer id forever ("unknown producer") while
/// librdkafka retries without end and reports nothing; only a new producer delivers.
pub const STALL_RECREATE: Duration = Duration::from_secs(20);
/// The broker confirmed something this recently: the producer is draining the spool.
const RECOVERING: Duration = Duration::from_secs(5);
/// How long an interrupt waits for room in a full spool while the producer drains it.
const INTERRUPT_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum KafkaSinkError {
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error("kafka: {0}")]
    Client(String),
    #[error("cannot serialise message: {0}")]
    Serialise(#[from] serde_json::Error),
}

impl KafkaSinkError {
    /// Why, as a fixed word (`vigil_sink_refused_total`'s `reason` label).
    pub fn reason(&self) -> &'static str {
        match self {
            KafkaSinkError::Spool(e) => e.reason(),
            KafkaSinkError::Client(_) => "client",
            KafkaSinkError::Serialise(_) => "serialise",
        }
    }
}

/// What a message is: an alert is refused when the spool is full up to its reserve; an
/// interrupt command (what stops abuse) may use the reserve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    Alert,
    Interrupt,
    /// What became of a command (the worker's own cuts).
    Action,
}

impl MessageKind {
    fn label(self) -> &'static str {
        match self {
            MessageKind::Alert => "alert",
            MessageKind::Interrupt => "interrupt",
            MessageKind::Action => "action",
        }
    }
}

/// What goes into the spool for one message: enough to send it again after a restart.
#[derive(Serialize, Deserialize)]
struct Spooled {
    topic: String,
    key: String,
    schema: String,
    value: String,
}

impl Spooled {
    /// What kind of message it is, from the schema it was sent with.
    fn kind(&self) -> MessageKind {
        match self.schema.as_str() {
            "vigil.interrupt/1" => MessageKind::Interrupt,
            "vigil.action/1" => MessageKind::Action,
            _ => MessageKind::Alert,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Messages to offer again. Bounded by the spool: an entry is only made for a pending
/// spool record, and leaves when the record is confirmed or found gone.
#[derive(Default)]
struct Retries {
    messages: HashMap<String, Retry>,
    /// The producer hit a fatal error: re-create it.
    recreate: bool,
}

struct Retry {
    attempts: u32,
    /// When to offer it again; `None` while the last offer awaits its report.
    at: Option<Instant>,
}

fn backoff(attempts: u32) -> Duration {
    RETRY_FIRST.saturating_mul(1u32 << attempts.saturating_sub(1).min(16)).min(RETRY_MAX)
}

/// State shared by the sink, the producers' delivery callbacks and the maintenance
/// thread. It holds no producer (a producer's context holds this): no reference cycle.
struct Shared {
    spool: Mutex<Spool>,
    retries: Mutex<Retries>,
    wake: Condvar,
    /// The producer generation in use; failed reports of older ones are not retried
    /// (the re-creation offered everything pending again).
    generation: AtomicU64,
    health: Arc<HealthState>,
    stop: AtomicBool,
    /// When each message in flight was accepted, and its kind: the delivery latency.
    accepted: Mutex<std::collections::HashMap<String, (std::time::Instant, MessageKind)>>,
    /// Signs every record as it is offered (each offer, replays included, signs anew:
    /// a record held in the spool for hours still reaches a command topic's readers
    /// within their freshness window). `None` only under `[trust] allow_unsigned`.
    signer: Option<Arc<vigil_trust::Signer>>,
    /// When the broker last confirmed a message (or the sink opened).
    last_confirmed: Mutex<Instant>,
}

impl Shared {
    /// Publishes the spool's state, and shouts when it nears its limit.
    fn report_spool(&self, spool: &Spool) {
        let m = &crate::metrics::METRICS;
        m.spool_fill_ratio.set(spool.fill_ratio());
        m.spool_pending.set(spool.len() as i64);
        self.health.set_spool(spool.fill_ratio(), spool.failed());
        if spool.fill_ratio() >= crate::metrics::SPOOL_ALARM_RATIO {
            tracing::error!(
                pending = spool.len(),
                "the Kafka spool is {:.0}% full: the broker is not confirming; alerts are refused at {:.0}%",
                spool.fill_ratio() * 100.0,
                (1.0 - crate::spool::RESERVE_RATIO) * 100.0
            );
        }
    }

    /// A message not accepted: logged and counted here, once, then returned.
    fn refused(&self, kind: MessageKind, id: &str, e: KafkaSinkError) -> KafkaSinkError {
        crate::metrics::METRICS.refused.with_label_values(&[kind.label(), e.reason()]).inc();
        self.health.refused.fetch_add(1, Relaxed);
        // `/readyz` names it while it lasts: not ready for an interrupt, a warning else.
        self.health.refused(kind == MessageKind::Interrupt, &e.to_string());
        tracing::error!(message = %id, kind = kind.label(), "kafka sink refused the message: {e}");
        e
    }

    fn delivered(&self, id: &str, generation: u64) {
        *lock(&self.last_confirmed) = Instant::now();
        let mut spool = lock(&self.spool);
        if let Err(e) = spool.ack(id) {
            // Delivered and forgotten in memory; if the ack did not reach the disk the
            // record is re-sent after a restart and deduplicated by id downstream.
            tracing::error!(message = %id, "delivered, but the spool ack failed: {e}");
        }
        self.report_spool(&spool);
        drop(spool);
        self.health.delivered.fetch_add(1, Relaxed);
        crate::metrics::METRICS.delivered.inc();
        if let Some((at, kind)) = lock(&self.accepted).remove(id) {
            crate::metrics::METRICS
                .delivery_seconds
                .with_label_values(&[kind.label()])
                .observe(at.elapsed().as_secs_f64());
        }
        lock(&self.retries).messages.remove(id);
        self.health.confirmed(generation);
    }

    fn delivery_failed(&self, id: &str, generation: u64, e: &KafkaError) {
        match e.rdkafka_error_code() {
            // Purged by dropping a producer (re-creation or shutdown): still spooled,
            // offered again by the re-creation or replayed at the next start.
            Some(RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight) => {}
            Some(RDKafkaErrorCode::Fatal) => self.fatal(generation, &e.to_string()),
            _ => self.retry_later(id, generation, e),
        }
    }

    /// Schedules `id` to be offered again with backoff (it stays in the spool meanwhile).
    fn retry_later(&self, id: &str, generation: u64, e: &KafkaError) {
        if generation != self.generation.load(Relaxed) {
            return;
        }
        crate::metrics::METRICS.delivery_failed.inc();
        let mut r = lock(&self.retries);
        let entry = r.messages.entry(id.to_string()).or_insert(Retry { attempts: 0, at: None });
        entry.attempts += 1;
        let delay = backoff(entry.attempts);
        entry.at = Some(Instant::now() + delay);
        tracing::warn!(message = %id, attempt = entry.attempts, "kafka did not take the message: {e}; it stays in the spool and is offered again in {delay:?}");
        self.wake.notify_all();
    }

    /// The producer of `generation` hit a fatal error: logged and counted once, and the
    /// maintenance thread re-creates the producer.
    fn fatal(&self, generation: u64, reason: &str) {
        if generation != self.generation.load(Relaxed) {
            return;
        }
        if self.health.set_fatal(generation, reason) {
            self.health.fatal_errors.fetch_add(1, Relaxed);
            crate::metrics::METRICS.producer_fatal.inc();
            tracing::error!(generation, "kafka producer fatal error, re-creating the producer: {reason}");
            lock(&self.retries).recreate = true;
            self.wake.notify_all();
        }
    }

    /// How long the oldest message accepted and not yet confirmed has waited.
    fn oldest_pending(&self) -> Option<Duration> {
        lock(&self.accepted).values().map(|(at, _)| at.elapsed()).max()
    }

    /// Messages wait and the broker has confirmed none of anything for [`STALL_RECREATE`]:
    /// what only a new producer gets out of (a broker that lost the producer's id).
    fn stalled(&self) -> bool {
        self.oldest_pending().is_some_and(|age| age >= STALL_RECREATE)
            && lock(&self.last_confirmed).elapsed() >= STALL_RECREATE
    }

    /// Publishes the oldest pending message's age (metric and `/readyz`'s warning).
    fn report_age(&self) {
        let age = self.oldest_pending().unwrap_or_default();
        crate::metrics::METRICS.oldest_pending_seconds.set(age.as_secs_f64());
        self.health.set_oldest_pending(age);
    }

    /// Waits `d` unless the sink stops first; false when stopping.
    fn pause(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        let mut r = lock(&self.retries);
        while !self.stop.load(Relaxed) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            r = self.wake.wait_timeout(r, left).unwrap_or_else(|p| p.into_inner()).0;
        }
        false
    }
}

struct Context {
    shared: Arc<Shared>,
    generation: u64,
}

impl ClientContext for Context {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal) {
            self.shared.fatal(self.generation, reason);
        } else {
            // Transport errors while a broker is away: librdkafka retries them itself.
            tracing::warn!("librdkafka: {error}: {reason}");
        }
    }
}

impl ProducerContext for Context {
    type DeliveryOpaque = Box<String>;

    fn delivery(&self, result: &DeliveryResult<'_>, id: Box<String>) {
        match result {
            Ok(_) => self.shared.delivered(&id, self.generation),
            Err((e, _)) => self.shared.delivery_failed(&id, self.generation, e),
        }
    }
}

/// The producer in use, replaced after a fatal error. Sends hold the read lock from
/// spool append to offer, so a re-creation (write lock) never slips between the two:
/// every record is offered to the producer that was current when it was spooled, or is
/// in the re-creation's replay, never both and never neither.
struct Link {
    client: ClientConfig,
    producer: RwLock<ThreadedProducer<Context>>,
}

impl Link {
    fn create(&self, shared: &Arc<Shared>, generation: u64) -> Result<ThreadedProducer<Context>, KafkaSinkError> {
        self.client
            .create_with_context(Context { shared: shared.clone(), generation })
            .map_err(|e| KafkaSinkError::Client(e.to_string()))
    }

    /// Replaces a producer that hit a fatal error and offers everything pending again.
    fn recreate(&self, shared: &Arc<Shared>) -> Result<(), KafkaSinkError> {
        let generation = shared.generation.load(Relaxed) + 1;
        let fresh = self.create(shared, generation)?;
        let dead = {
            let mut current = self.producer.write().unwrap_or_else(|p| p.into_inner());
            shared.generation.store(generation, Relaxed);
            lock(&shared.retries).messages.clear();
            let dead = std::mem::replace(&mut *current, fresh);
            let offered = replay(shared, &current, generation);
            // Each may reach the broker a second time (consumers drop repeats by id).
            crate::metrics::METRICS.reoffered.inc_by(offered as u64);
            shared.health.reoffered.fetch_add(offered as u64, Relaxed);
            if offered == 0 {
                shared.health.clear_fatal();
            }
            dead
        };
        // Dropping purges it; its reports are of an old generation and change nothing.
        drop(dead);
        shared.health.recreated.fetch_add(1, Relaxed);
        crate::metrics::METRICS.producer_recreated.inc();
        tracing::warn!(generation, "kafka producer re-created; pending messages offered again");
        Ok(())
    }
}

/// Offers everything the spool holds, oldest first; returns how many.
fn replay(shared: &Shared, producer: &ThreadedProducer<Context>, generation: u64) -> usize {
    // A copy, so the spool is not locked while offering (confirmations need the lock).
    let pending: Vec<Record> = lock(&shared.spool).pending().cloned().collect();
    for r in &pending {
        match serde_json::from_slice::<Spooled>(&r.payload) {
            Ok(m) => {
                // Spooled before this start: its age counts from now (a lower bound).
                lock(&shared.accepted).entry(r.key.clone()).or_insert_with(|| (Instant::now(), m.kind()));
                offer(shared, producer, generation, &r.key, &m)
            }
            Err(e) => tracing::error!(message = %r.key, "unreadable spool record kept: {e}"),
        }
    }
    pending.len()
}

/// Hands a spooled message to librdkafka, waiting while its local queue is full.
fn offer(shared: &Shared, producer: &ThreadedProducer<Context>, generation: u64, id: &str, m: &Spooled) {
    let mut headers = OwnedHeaders::new()
        .insert(Header { key: "vigil-schema", value: Some(&m.schema) })
        .insert(Header { key: "vigil-message-id", value: Some(id) });
    if let Some(signer) = &shared.signer {
        headers = signer.sign_into(&m.topic, Some(m.key.as_bytes()), Some(m.value.as_bytes()), headers);
    }
    let mut record =
        BaseRecord::with_opaque_to(&m.topic, Box::new(id.to_string())).key(&m.key).payload(&m.value).headers(headers);
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) if !shared.stop.load(Relaxed) => {
                record = back;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err((e, _)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal) => {
                return shared.fatal(generation, &e.to_string());
            }
            Err((e, _)) => return shared.retry_later(id, generation, &e),
        }
    }
}

/// The maintenance thread: offers failed messages again when due, re-creates the
/// producer after a fatal error.
fn maintain(shared: &Arc<Shared>, link: &Link) {
    let mut last_recreate: Option<Instant> = None;
    let mut recreate_wait = RECREATE_FIRST;
    let mut last_stall_check = Instant::now();
    loop {
        let (recreate, due) = {
            let mut r = lock(&shared.retries);
            loop {
                if shared.stop.load(Relaxed) {
                    return;
                }
                if last_stall_check.elapsed() >= IDLE_WAIT {
                    last_stall_check = Instant::now();
                    drop(r);
                    shared.report_age();
                    let stalled = shared.stalled() && last_recreate.is_none_or(|t| t.elapsed() >= STALL_RECREATE);
                    r = lock(&shared.retries);
                    if stalled && !r.recreate {
                        crate::metrics::METRICS.stall_recreations.inc();
                        shared.health.stalls.fetch_add(1, Relaxed);
                        tracing::error!(
                            pending = lock(&shared.spool).len(),
                            "kafka: messages wait and the broker confirmed nothing for {STALL_RECREATE:?}: re-creating the producer (a new producer id) and offering the spool again"
                        );
                        r.recreate = true;
                    }
                }
                let now = Instant::now();
                let next = r.messages.values().filter_map(|m| m.at).min();
                if r.recreate || next.is_some_and(|t| t <= now) {
                    break;
                }
                let wait = next.map_or(IDLE_WAIT, |t| t - now).min(IDLE_WAIT);
                r = shared.wake.wait_timeout(r, wait).unwrap_or_else(|p| p.into_inner()).0;
            }
            let now = Instant::now();
            let mut due = Vec::new();
            for (id, m) in r.messages.iter_mut() {
                if m.at.is_some_and(|t| t <= now) {
                    m.at = None;
                    due.push(id.clone());
                }
            }
            (std::mem::take(&mut r.recreate), due)
        };
        if recreate {
            if last_recreate.is_some_and(|t| t.elapsed() < RECREATE_MAX) {
                if !shared.pause(recreate_wait) {
                    return;
                }
                recreate_wait = (recreate_wait * 2).min(RECREATE_MAX);
            } else {
                recreate_wait = RECREATE_FIRST;
            }
            last_recreate = Some(Instant::now());
            if let Err(e) = link.recreate(shared) {
                tracing::error!("kafka producer cannot be re-created, trying again: {e}");
                lock(&shared.retries).recreate = true;
            }
            continue;
        }
        for id in due {
            let record = lock(&shared.spool).get(&id).cloned();
            let Some(record) = record else {
                lock(&shared.retries).messages.remove(&id); // confirmed meanwhile
                continue;
            };
            match serde_json::from_slice::<Spooled>(&record.payload) {
                Ok(m) => {
                    let producer = link.producer.read().unwrap_or_else(|p| p.into_inner());
                    shared.health.retried.fetch_add(1, Relaxed);
                    crate::metrics::METRICS.retried.inc();
                    offer(shared, &producer, shared.generation.load(Relaxed), &id, &m);
                }
                Err(e) => {
                    tracing::error!(message = %id, "unreadable spool record kept, not retried: {e}");
                    lock(&shared.retries).messages.remove(&id);
                }
            }
        }
    }
}

pub struct KafkaSink {
    config: KafkaConfig,
    shared: Arc<Shared>,
    link: Arc<Link>,
    maintenance: Option<JoinHandle<()>>,
}

impl KafkaSink {
    /// Opens the spool, connects, and re-sends whatever the spool still holds; every
    /// record is signed with `signer` (`None`: unsigned, for `allow_unsigned` only).
    pub fn open(config: KafkaConfig, signer: Option<Arc<vigil_trust::Signer>>) -> Result<KafkaSink, KafkaSinkError> {
        let spool = Spool::open(&config.spool_path, config.spool_max_bytes)?;
        let client = config.client_config().map_err(KafkaSinkError::Client)?;
        let shared = Arc::new(Shared {
            spool: Mutex::new(spool),
            retries: Mutex::new(Retries::default()),
            wake: Condvar::new(),
            generation: AtomicU64::new(0),
            health: Arc::new(HealthState::warning_from(Duration::from_secs(config.pending_warn_secs))),
            stop: AtomicBool::new(false),
            accepted: Mutex::new(std::collections::HashMap::new()),
            signer,
            last_confirmed: Mutex::new(Instant::now()),
        });
        shared.report_spool(&lock(&shared.spool));
        let producer = client
            .create_with_context(Context { shared: shared.clone(), generation: 0 })
            .map_err(|e| KafkaSinkError::Client(e.to_string()))?;
        let link = Arc::new(Link { client, producer: RwLock::new(producer) });
        {
            let producer = link.producer.read().unwrap_or_else(|p| p.into_inner());
            let pending = lock(&shared.spool).len();
            if pending > 0 {
                tracing::warn!(count = pending, "replaying spooled messages from before the last stop");
            }
            replay(&shared, &producer, 0);
        }
        let maintenance = {
            let (shared, link) = (shared.clone(), link.clone());
            std::thread::Builder::new()
                .name("vigil-kafka".into())
                .spawn(move || maintain(&shared, &link))
                .map_err(|e| KafkaSinkError::Client(format!("cannot start the retry thread: {e}")))?
        };
        Ok(KafkaSink { config, shared, link, maintenance: Some(maintenance) })
    }

    /// Accepts an alert: spooled (fsync'd) first, then offered to the broker. Refused
    /// (logged and counted) when the spool is full up to its reserve.
    pub fn send_alert(&self, id: &str, stream: &str, value: &impl Serialize) -> Result<(), KafkaSinkError> {
        self.send(MessageKind::Alert, id, self.config.alerts_topic.clone(), stream, "vigil.alert/1", value)
    }

    /// Accepts an interrupt command; it may use the spool's reserve.
    pub fn send_interrupt(&self, id: &str, stream: &str, value: &impl Serialize) -> Result<(), KafkaSinkError> {
        self.send(MessageKind::Interrupt, id, self.config.interrupts_topic.clone(), stream, "vigil.interrupt/1", value)
    }

    /// Accepts a `vigil.action` record (a cut this worker made itself), like an alert.
    pub fn send_action(&self, id: &str, stream: &str, value: &impl Serialize) -> Result<(), KafkaSinkError> {
        self.send(MessageKind::Action, id, self.config.actions_topic.clone(), stream, "vigil.action/1", value)
    }

    /// Accepts a `vigil.stream` record (a stream's lifecycle event) for the actions
    /// topic, like an alert.
    pub fn send_stream_event(&self, id: &str, stream: &str, value: &impl Serialize) -> Result<(), KafkaSinkError> {
        self.send(MessageKind::Action, id, self.config.actions_topic.clone(), stream, "vigil.stream/1", value)
    }

    fn send(
        &self,
        kind: MessageKind,
        id: &str,
        topic: String,
        stream: &str,
        schema: &str,
        value: &impl Serialize,
    ) -> Result<(), KafkaSinkError> {
        let s = &self.shared;
        let value = serde_json::to_string(value).map_err(|e| s.refused(kind, id, e.into()))?;
        let m = Spooled { topic, key: stream.to_string(), schema: schema.to_string(), value };
        let payload = serde_json::to_vec(&m).map_err(|e| s.refused(kind, id, e.into()))?;
        let record = Record { key: id.to_string(), payload };
        let producer = self.link.producer.read().unwrap_or_else(|p| p.into_inner());
        let waiting_since = Instant::now();
        loop {
            let mut spool = lock(&s.spool);
            let appended = match kind {
                MessageKind::Alert | MessageKind::Action => spool.append(record.clone()),
                MessageKind::Interrupt => spool.append_reserved(record.clone()),
            };
            s.report_spool(&spool);
            drop(spool);
            // An interrupt that finds the spool full while the broker confirms again (a
            // recovering producer draining what piled up) waits for room rather than be
            // refused; analysis slows meanwhile and its queue drops frames, counted.
            let full = matches!(appended, Err(crate::spool::SpoolError::Full { .. }));
            let recovering = lock(&s.last_confirmed).elapsed() < RECOVERING;
            if full && kind == MessageKind::Interrupt && recovering && waiting_since.elapsed() < INTERRUPT_WAIT {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            appended.map_err(|e| s.refused(kind, id, e.into()))?;
            if kind == MessageKind::Interrupt {
                s.health.interrupt_taken();
            }
            break;
        }
        lock(&s.accepted).insert(id.to_string(), (std::time::Instant::now(), kind));
        offer(s, &producer, s.generation.load(Relaxed), id, &m);
        Ok(())
    }

    /// A cheap handle on this sink's health, for `/readyz`.
    pub fn health(&self) -> KafkaHealth {
        KafkaHealth(self.shared.health.clone())
    }

    /// How long the oldest message accepted and not yet confirmed has waited.
    pub fn oldest_pending(&self) -> Option<Duration> {
        self.shared.oldest_pending()
    }

    /// Messages accepted and not yet confirmed by the broker.
    pub fn pending(&self) -> usize {
        lock(&self.shared.spool).len()
    }

    pub fn delivered(&self) -> u64 {
        self.shared.health.delivered.load(Relaxed)
    }

    /// Waits up to `timeout` for every accepted message to be confirmed (retries
    /// included); what is not stays in the spool for the next start. Returns how many
    /// are still pending.
    pub fn flush(&self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let producer = self.link.producer.read().unwrap_or_else(|p| p.into_inner());
                let left = deadline.saturating_duration_since(Instant::now());
                let _ = producer.flush(left.min(Duration::from_millis(200)));
            }
            let pending = self.pending();
            if pending == 0 || Instant::now() >= deadline {
                return pending;
            }
            // Waiting on a retry's backoff or a producer re-creation.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for KafkaSink {
    fn drop(&mut self) {
        self.shared.stop.store(true, Relaxed);
        {
            let _r = lock(&self.shared.retries);
            self.shared.wake.notify_all();
        }
        if let Some(t) = self.maintenance.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_backoff_doubles_and_is_capped() {
        assert_eq!(backoff(1), RETRY_FIRST);
        assert_eq!(backoff(2), RETRY_FIRST * 2);
        assert_eq!(backoff(5), RETRY_FIRST * 16);
        assert_eq!(backoff(40), RETRY_MAX);
        assert_eq!(backoff(u32::MAX), RETRY_MAX);
    }
}
