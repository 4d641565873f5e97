//! `[allowlist]`: reviewed false positives from the on-call console, applied live.
//!
//! The console publishes one `vigil.bank_update` record per allowlist entry on the
//! bank-updates topic (keyed by entry id; `revoke` withdraws one). Every worker reads the
//! whole topic, from its beginning, outside any consumer group (each worker needs every
//! entry), and swaps the live entries into its bank set the moment one arrives, so an
//! entry applies within a poll of being published. Records are hostile input: anything
//! [`vigil_core::BankUpdate::check`] refuses is logged and counted, never applied.

use prometheus::{IntCounterVec, IntGauge, Opts};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};
use vigil_core::{BankUpdate, BankUpdateOp};
use vigil_hash::{AllowEntry, Allowlist, BankStore};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowlistConfig {
    /// The console's `[console] bank_updates_topic`.
    #[serde(default = "default_topic")]
    pub topic: String,
}

fn default_topic() -> String {
    "vigil.banks.updates".into()
}

impl AllowlistConfig {
    pub fn validate(&self, prefix: &str, has_kafka: bool) -> Vec<String> {
        let mut e = Vec::new();
        if !has_kafka {
            e.push(format!("{prefix}: needs [sink.kafka] (the allowlist is read from its cluster)"));
        }
        if !vigil_sink::kafka::is_valid_topic(&self.topic) {
            e.push(format!("{prefix}.topic: {:?} is not a valid topic name", self.topic));
        }
        e
    }
}

/// Live entries at most: each frame is compared with every entry's hashes.
const MAX_ENTRIES: usize = 10_000;

const RESULTS: [&str; 4] = ["applied", "revoked", "refused", "expired"];

static UPDATES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    IntCounterVec::new(
        Opts::new(
            "vigil_allowlist_updates_total",
            "Allowlist records read: applied, revoked, refused (invalid), expired (dropped at expiry)",
        ),
        &["result"],
    )
    .expect("valid metric")
});
static ENTRIES: LazyLock<IntGauge> = LazyLock::new(|| {
    IntGauge::new("vigil_allowlist_entries", "Live allowlist entries applied to matching").expect("valid metric")
});

pub fn register(registry: &prometheus::Registry) -> prometheus::Result<()> {
    for r in RESULTS {
        let _ = UPDATES.with_label_values(&[r]);
    }
    registry.register(Box::new(UPDATES.clone()))?;
    registry.register(Box::new(ENTRIES.clone()))
}

/// The reader's thread; dropping it stops it.
pub struct AllowlistReader {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AllowlistReader {
    pub fn start(
        cfg: &AllowlistConfig,
        kafka: &vigil_sink::KafkaConfig,
        worker_id: &str,
        banks: Arc<BankStore>,
    ) -> anyhow::Result<AllowlistReader> {
        let mut client = kafka.consumer_config(&format!("vigil-allowlist-{worker_id}")).map_err(anyhow::Error::msg)?;
        client.set("enable.auto.commit", "false");
        let consumer: BaseConsumer = client.create()?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut reader = Reader { consumer, topic: cfg.topic.clone(), banks, entries: BTreeMap::new(), partitions: 0 };
        let s = stop.clone();
        let thread = std::thread::Builder::new().name("vigil-allowlist".into()).spawn(move || reader.run(&s))?;
        Ok(AllowlistReader { stop, thread: Some(thread) })
    }
}

impl Drop for AllowlistReader {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Reader {
    consumer: BaseConsumer,
    topic: String,
    banks: Arc<BankStore>,
    entries: BTreeMap<String, AllowEntry>,
    /// Partitions assigned so far (a topic that grows is picked up by the next check).
    partitions: usize,
}

impl Reader {
    fn run(&mut self, stop: &AtomicBool) {
        let mut next_check = Instant::now();
        let mut warned = false;
        while !stop.load(Relaxed) {
            if Instant::now() >= next_check {
                next_check = Instant::now() + Duration::from_secs(30);
                match self.assign_new_partitions() {
                    Ok(0) if self.partitions == 0 => {
                        if !warned {
                            tracing::warn!(
                                topic = self.topic,
                                "allowlist: the topic does not exist yet; checking every 5 s"
                            );
                            warned = true;
                        }
                        next_check = Instant::now() + Duration::from_secs(5);
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(topic = self.topic, "allowlist: cannot read the topic's partitions: {e}"),
                }
            }
            let mut changed = false;
            if self.partitions == 0 {
                std::thread::sleep(Duration::from_millis(200));
            } else {
                let deadline = Instant::now() + Duration::from_millis(200);
                while let Some(m) = self.consumer.poll(deadline.saturating_duration_since(Instant::now())) {
                    let record = match m {
                        Ok(m) => (m.key().map(<[u8]>::to_vec), m.payload().map(<[u8]>::to_vec)),
                        Err(e) => {
                            tracing::warn!("allowlist: consumer error: {e}");
                            continue;
                        }
                    };
                    changed |= self.read(record.0.as_deref(), record.1.as_deref());
                    if Instant::now() >= deadline {
                        break;
                    }
                }
            }
            changed |= self.drop_expired();
            if changed {
                self.publish();
            }
        }
    }

    /// Assigns, from their beginning, the partitions not assigned yet; returns how many
    /// the topic has.
    fn assign_new_partitions(&mut self) -> anyhow::Result<usize> {
        let metadata = self.consumer.fetch_metadata(Some(&self.topic), Duration::from_secs(5))?;
        let count = metadata.topics().first().map_or(0, |t| if t.error().is_some() { 0 } else { t.partitions().len() });
        if count > self.partitions {
            // Partitions read so far go on from where they are; new ones from the start.
            let position = self.consumer.position().ok();
            let mut tpl = rdkafka::TopicPartitionList::new();
            for p in 0..count as i32 {
                let read_so_far = position
                    .as_ref()
                    .and_then(|pos| pos.find_partition(&self.topic, p))
                    .map(|e| e.offset())
                    .filter(|o| *o != rdkafka::Offset::Invalid && (p as usize) < self.partitions);
                let offset = read_so_far.unwrap_or(rdkafka::Offset::Beginning);
                tpl.add_partition_offset(&self.topic, p, offset)?;
            }
            self.consumer.assign(&tpl)?;
            tracing::info!(topic = self.topic, partitions = count, "allowlist: reading the topic");
            self.partitions = count;
        }
        Ok(count)
    }

    /// One record; true when the live entries changed.
    fn read(&mut self, key: Option<&[u8]>, payload: Option<&[u8]>) -> bool {
        let update = match payload.map(serde_json::from_slice::<BankUpdate>) {
            None => Err("an empty record".to_string()),
            Some(Err(e)) => Err(format!("not a vigil.bank_update record: {e}")),
            Some(Ok(u)) => u.check_at(key, crate::output::unix_ms()).map(|_| u),
        };
        let update = match update.and_then(|u| match u.op {
            BankUpdateOp::Allow => AllowEntry::from_update(&u).map(|e| (u, Some(e))),
            BankUpdateOp::Revoke => Ok((u, None)),
        }) {
            Ok(u) => u,
            Err(why) => {
                UPDATES.with_label_values(&["refused"]).inc();
                let key = key.map(|k| String::from_utf8_lossy(&k[..k.len().min(200)]).into_owned());
                tracing::warn!(key, "allowlist: record refused: {why}");
                return false;
            }
        };
        match update {
            (u, Some(entry)) => {
                if entry.expires_at_unix_ms <= crate::output::unix_ms() {
                    UPDATES.with_label_values(&["expired"]).inc();
                    return self.entries.remove(&u.update_id).is_some();
                }
                if self.entries.len() >= MAX_ENTRIES && !self.entries.contains_key(&u.update_id) {
                    UPDATES.with_label_values(&["refused"]).inc();
                    tracing::error!(
                        entry = u.update_id,
                        "allowlist: {MAX_ENTRIES} entries live already: refused (revoke some)"
                    );
                    return false;
                }
                UPDATES.with_label_values(&["applied"]).inc();
                tracing::info!(
                    entry = u.update_id,
                    scope_kind = ?u.scope_kind,
                    scope = u.scope,
                    hashes = entry.hashes.len(),
                    created_by = u.created_by,
                    "allowlist: entry applied"
                );
                self.entries.insert(u.update_id, entry);
                true
            }
            (u, None) => {
                UPDATES.with_label_values(&["revoked"]).inc();
                tracing::info!(entry = u.update_id, created_by = u.created_by, "allowlist: entry revoked");
                self.entries.remove(&u.update_id).is_some()
            }
        }
    }

    fn drop_expired(&mut self) -> bool {
        let now = crate::output::unix_ms();
        let before = self.entries.len();
        self.entries.retain(|_, e| e.expires_at_unix_ms > now);
        let gone = before - self.entries.len();
        UPDATES.with_label_values(&["expired"]).inc_by(gone as u64);
        gone > 0
    }

    fn publish(&self) {
        ENTRIES.set(self.entries.len() as i64);
        self.banks.set_allowlist(Allowlist { entries: self.entries.values().cloned().collect() });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader() -> Reader {
        let consumer: BaseConsumer =
            rdkafka::ClientConfig::new().set("bootstrap.servers", "127.0.0.1:1").set("group.id", "t").create().unwrap();
        Reader {
            consumer,
            topic: "t".into(),
            banks: Arc::new(BankStore::open(&[]).0),
            entries: BTreeMap::new(),
            partitions: 0,
        }
    }

    fn record(id: &str, op: &str, expires: u64) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "schema": "vigil.bank_update", "schema_version": 1, "update_id": id, "op": op,
            "scope_kind": "bank", "scope": "known", "hashes": if op == "allow" { vec!["ab".repeat(32)] } else { vec![] },
            "max_distance": 10, "created_at_unix_ms": expires.saturating_sub(3_600_000).max(1),
            "expires_at_unix_ms": expires, "created_by": "alice"
        }))
        .unwrap()
    }

    #[test]
    fn entries_are_applied_revoked_and_hostile_records_refused() {
        let mut r = reader();
        let far = crate::output::unix_ms() + 3_600_000;
        assert!(r.read(Some(b"fp/1"), Some(&record("fp/1", "allow", far))));
        r.publish();
        assert_eq!(r.banks.snapshot().allowlist.entries.len(), 1);
        assert!(!r.read(Some(b"fp/2"), Some(b"{not json")));
        assert!(!r.read(Some(b"other"), Some(&record("fp/2", "allow", far))), "key mismatch");
        assert!(!r.read(Some(b"fp/3"), None));
        assert!(!r.read(Some(b"fp/4"), Some(&record("fp/4", "allow", 3_600_002))), "already expired");
        assert_eq!(r.entries.len(), 1);
        assert!(r.read(Some(b"fp/1"), Some(&record("fp/1", "revoke", 2))));
        r.publish();
        assert!(r.banks.snapshot().allowlist.is_empty());
    }
}
