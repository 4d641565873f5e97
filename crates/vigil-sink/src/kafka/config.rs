//! `[sink.kafka]`: the cluster, topics, spool and security settings, validated as a
//! whole; the settings that make delivery zero-loss are Vigil's and cannot be overridden.

use rdkafka::config::ClientConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

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
    /// Where the worker reports the cuts it makes itself (`vigil.action` v1 records, the
    /// format `vigil actuate` writes to its `actions_topic`), read by `vigil console`.
    #[serde(default = "default_actions_topic")]
    pub actions_topic: String,
    /// The spool file (its folder is created).
    #[serde(default = "default_spool_path")]
    pub spool_path: PathBuf,
    #[serde(default = "default_spool_max_bytes")]
    pub spool_max_bytes: u64,
    /// The oldest pending message's age (seconds) from which `/readyz` warns, still
    /// ready: warn on age, not on fill (a 256 MiB spool is hours of traffic).
    #[serde(default = "default_pending_warn_secs")]
    pub pending_warn_secs: u64,
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
fn default_actions_topic() -> String {
    "vigil.actions".into()
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
fn default_pending_warn_secs() -> u64 {
    60
}
fn default_security_protocol() -> String {
    "plaintext".into()
}

const PROTOCOLS: [&str; 4] = ["plaintext", "ssl", "sasl_plaintext", "sasl_ssl"];
const MECHANISMS: [&str; 4] = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"];
/// Settings Vigil owns: overriding them would break the zero-loss promise.
const OWNED_SETTINGS: [&str; 5] =
    ["enable.idempotence", "acks", "message.timeout.ms", "bootstrap.servers", "max.in.flight"];

/// A name Kafka accepts for a topic: 1 to 249 of `[A-Za-z0-9._-]`.
pub fn is_valid_topic(t: &str) -> bool {
    !t.is_empty() && t.len() <= 249 && t.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

impl KafkaConfig {
    pub fn validate(&self, prefix: &str) -> Vec<String> {
        let mut e = Vec::new();
        if self.brokers.trim().is_empty() {
            e.push(format!("{prefix}.brokers: must name at least one broker"));
        }
        for (k, t) in [
            ("alerts_topic", &self.alerts_topic),
            ("interrupts_topic", &self.interrupts_topic),
            ("actions_topic", &self.actions_topic),
        ] {
            if !is_valid_topic(t) {
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
        if self.pending_warn_secs == 0 {
            e.push(format!("{prefix}.pending_warn_secs: must be at least 1"));
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

    pub(super) fn client_config(&self) -> Result<ClientConfig, String> {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", "0")
            .set("max.in.flight", "5")
            .set("linger.ms", "5")
            // Back within a second of the broker (librdkafka's default waits up to 10 s,
            // while the spool fills): overridable under [sink.kafka.librdkafka].
            .set("reconnect.backoff.max.ms", "1000")
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
