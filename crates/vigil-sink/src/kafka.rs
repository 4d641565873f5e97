//! Kafka delivery with zero loss. Every message is first appended to the fsync'd spool
//! ([`crate::Spool`]); only then is it offered to an idempotent producer (`acks=all`,
//! key = stream id so each stream's messages stay in order on one partition), and it
//! leaves the spool only when the broker's delivery report confirms it. While a broker
//! is down, librdkafka keeps retrying (`message.timeout.ms = 0`: no give-up); after a
//! crash or restart, [`KafkaSink::open`] replays what the spool still holds, in order.
//! Consumers deduplicate by the `vigil-message-id` header (at-least-once delivery).

use crate::spool::{Record, Spool, SpoolError};
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// `[sink.kafka]`: where alerts and interrupt commands go.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// `host:port,host:port`.
    pub brokers: String,
    #[serde(default = "default_alerts_topic")]
    pub alerts_topic: String,
    #[serde(default = "default_interrupts_topic")]
    pub interrupts_topic: String,
    /// The spool file (its folder is created).
    #[serde(default = "default_spool_path")]
    pub spool_path: PathBuf,
    #[serde(default = "default_spool_max_bytes")]
    pub spool_max_bytes: u64,
    /// `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`.
    #[serde(default = "default_security_protocol")]
    pub security_protocol: String,
    #[serde(default)]
    pub sasl_mechanism: Option<String>,
    #[serde(default)]
    pub sasl_username: Option<String>,
    /// Read from this environment variable, never from the file.
    #[serde(default)]
    pub sasl_password_env: Option<String>,
    #[serde(default)]
    pub ssl_ca_location: Option<PathBuf>,
    /// Further librdkafka settings, passed as they are.
    #[serde(default)]
    pub librdkafka: BTreeMap<String, String>,
}

fn default_alerts_topic() -> String {
    "vigil.alerts".into()
}
fn default_interrupts_topic() -> String {
    "vigil.interrupts".into()
}
fn default_spool_path() -> PathBuf {
    PathBuf::from("/var/lib/vigil/spool/messages.spool")
}
fn default_spool_max_bytes() -> u64 {
    256 << 20
}
fn default_security_protocol() -> String {
    "plaintext".into()
}

const PROTOCOLS: [&str; 4] = ["plaintext", "ssl", "sasl_plaintext", "sasl_ssl"];
const MECHANISMS: [&str; 4] = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"];
/// Settings Vigil owns: overriding them would break the zero-loss promise.
const OWNED_SETTINGS: [&str; 5] =
    ["enable.idempotence", "acks", "message.timeout.ms", "bootstrap.servers", "max.in.flight"];

impl KafkaConfig {
    pub fn validate(&self, prefix: &str) -> Vec<String> {
        let mut e = Vec::new();
        if self.brokers.trim().is_empty() {
            e.push(format!("{prefix}.brokers: must name at least one broker"));
        }
        for (k, t) in [("alerts_topic", &self.alerts_topic), ("interrupts_topic", &self.interrupts_topic)] {
            if t.is_empty() || t.len() > 249 || !t.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
                e.push(format!("{prefix}.{k}: \"{t}\" is not a valid topic name"));
            }
        }
        if !PROTOCOLS.contains(&self.security_protocol.as_str()) {
            e.push(format!("{prefix}.security_protocol: \"{}\" is not one of {PROTOCOLS:?}", self.security_protocol));
        }
        if let Some(m) = &self.sasl_mechanism
            && !MECHANISMS.contains(&m.as_str())
        {
            e.push(format!("{prefix}.sasl_mechanism: \"{m}\" is not one of {MECHANISMS:?}"));
        }
        if self.security_protocol.starts_with("sasl") && self.sasl_mechanism.is_none() {
            e.push(format!("{prefix}.sasl_mechanism: required with security_protocol {}", self.security_protocol));
        }
        if self.spool_max_bytes < 1 << 20 {
            e.push(format!("{prefix}.spool_max_bytes: {} is under 1 MiB", self.spool_max_bytes));
        }
        for k in self.librdkafka.keys() {
            if OWNED_SETTINGS.contains(&k.as_str()) {
                e.push(format!("{prefix}.librdkafka.{k}: set by Vigil for zero-loss delivery; remove it"));
            }
        }
        e
    }

    /// Consumer settings for the same cluster (security included), manual commits.
    pub fn consumer_config(&self, group: &str) -> Result<ClientConfig, String> {
        let mut c = self.client_config()?;
        for k in ["enable.idempotence", "acks", "message.timeout.ms", "max.in.flight", "linger.ms"] {
            c.remove(k);
        }
        c.set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "6000");
        Ok(c)
    }

    fn client_config(&self) -> Result<ClientConfig, String> {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", "0")
            .set("max.in.flight", "5")
            .set("linger.ms", "5")
            .set("security.protocol", &self.security_protocol);
        if let Some(m) = &self.sasl_mechanism {
            c.set("sasl.mechanism", m);
        }
        if let Some(u) = &self.sasl_username {
            c.set("sasl.username", u);
        }
        if let Some(var) = &self.sasl_password_env {
            let pw =
                std::env::var(var).map_err(|_| format!("environment variable {var} (sasl_password_env) is not set"))?;
            c.set("sasl.password", pw);
        }
        if let Some(ca) = &self.ssl_ca_location {
            c.set("ssl.ca.location", ca.display().to_string());
        }
        for (k, v) in &self.librdkafka {
            c.set(k, v);
        }
        Ok(c)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KafkaSinkError {
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error("kafka: {0}")]
    Client(String),
    #[error("cannot serialise message: {0}")]
    Serialise(#[from] serde_json::Error),
}

/// What goes into the spool for one message: enough to send it again after a restart.
#[derive(Serialize, Deserialize)]
struct Spooled {
    topic: String,
    key: String,
    schema: String,
    value: String,
}

struct Context {
    spool: Arc<Mutex<Spool>>,
    delivered: AtomicU64,
    failed: AtomicU64,
}

impl ClientContext for Context {}

impl ProducerContext for Context {
    type DeliveryOpaque = Box<String>;

    fn delivery(&self, result: &DeliveryResult<'_>, id: Box<String>) {
        match result {
            Ok(_) => {
                let mut spool = self.spool.lock().unwrap_or_else(|p| p.into_inner());
                match spool.ack(&id) {
                    Ok(()) => {
                        self.delivered.fetch_add(1, Ordering::Relaxed);
                        crate::metrics::METRICS.delivered.inc();
                        report_spool(&spool);
                    }
                    // Delivered but not yet forgotten: it is re-sent after a restart and
                    // deduplicated by id downstream. Never lost.
                    Err(e) => tracing::error!(message = %id, "delivered, but the spool ack failed: {e}"),
                }
            }
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                crate::metrics::METRICS.delivery_failed.inc();
                tracing::error!(message = %id, "kafka refused the message, it stays in the spool: {e}");
            }
        }
    }
}

/// Publishes the spool's state, and shouts when it nears its limit.
fn report_spool(spool: &Spool) {
    let m = &crate::metrics::METRICS;
    m.spool_fill_ratio.set(spool.fill_ratio());
    m.spool_pending.set(spool.len() as i64);
    if spool.fill_ratio() >= crate::metrics::SPOOL_ALARM_RATIO {
        tracing::error!(
            pending = spool.len(),
            "the alert spool is {:.0}% full: the broker is not confirming; alerts will be refused at 100%",
            spool.fill_ratio() * 100.0
        );
    }
}

pub struct KafkaSink {
    config: KafkaConfig,
    producer: ThreadedProducer<Context>,
}

impl KafkaSink {
    /// Opens the spool, connects, and re-sends whatever the spool still holds.
    pub fn open(config: KafkaConfig) -> Result<KafkaSink, KafkaSinkError> {
        let spool = Arc::new(Mutex::new(Spool::open(&config.spool_path, config.spool_max_bytes)?));
        let context = Context { spool: spool.clone(), delivered: AtomicU64::new(0), failed: AtomicU64::new(0) };
        let producer: ThreadedProducer<Context> = config
            .client_config()
            .map_err(KafkaSinkError::Client)?
            .create_with_context(context)
            .map_err(|e| KafkaSinkError::Client(e.to_string()))?;
        let sink = KafkaSink { config, producer };
        let pending: Vec<Record> = spool.lock().unwrap_or_else(|p| p.into_inner()).pending().cloned().collect();
        if !pending.is_empty() {
            tracing::warn!(count = pending.len(), "replaying spooled messages from before the last stop");
        }
        for r in pending {
            match serde_json::from_slice::<Spooled>(&r.payload) {
                Ok(m) => sink.offer(&r.key, &m),
                Err(e) => tracing::error!(message = %r.key, "unreadable spool record kept: {e}"),
            }
        }
        Ok(sink)
    }

    /// Accepts an alert: spooled (fsync'd) first, then offered to the broker.
    pub fn send_alert(&self, id: &str, stream: &str, value: &impl Serialize) -> Result<(), KafkaSinkError> {
        self.send(id, self.config.alerts_topic.clone(), stream, "vigil.alert/1", value)
    }

    pub fn send_interrupt(&self, id: &str, stream: &str, value: &impl Serialize) -> Result<(), KafkaSinkError> {
        self.send(id, self.config.interrupts_topic.clone(), stream, "vigil.interrupt/1", value)
    }

    fn send(
        &self,
        id: &str,
        topic: String,
        stream: &str,
        schema: &str,
        value: &impl Serialize,
    ) -> Result<(), KafkaSinkError> {
        let m = Spooled {
            topic,
            key: stream.to_string(),
            schema: schema.to_string(),
            value: serde_json::to_string(value)?,
        };
        self.producer
            .context()
            .spool
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .append(Record { key: id.to_string(), payload: serde_json::to_vec(&m)? })?;
        self.offer(id, &m);
        Ok(())
    }

    /// Hands a spooled message to librdkafka, waiting while its local queue is full.
    fn offer(&self, id: &str, m: &Spooled) {
        let mut record =
            BaseRecord::with_opaque_to(&m.topic, Box::new(id.to_string())).key(&m.key).payload(&m.value).headers(
                OwnedHeaders::new()
                    .insert(Header { key: "vigil-schema", value: Some(&m.schema) })
                    .insert(Header { key: "vigil-message-id", value: Some(id) }),
            );
        loop {
            match self.producer.send(record) {
                Ok(()) => return,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err((e, _)) => {
                    // Still in the spool: re-sent on the next start.
                    tracing::error!(message = %id, "kafka did not take the message, it stays in the spool: {e}");
                    return;
                }
            }
        }
    }

    /// Messages accepted and not yet confirmed by the broker.
    pub fn pending(&self) -> usize {
        self.producer.context().spool.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn delivered(&self) -> u64 {
        self.producer.context().delivered.load(Ordering::Relaxed)
    }

    /// Waits up to `timeout` for every accepted message to be confirmed; what is not
    /// stays in the spool for the next start. Returns how many are still pending.
    pub fn flush(&self, timeout: Duration) -> usize {
        let _ = self.producer.flush(timeout);
        self.pending()
    }
}
