//! `[allowlist]`: reviewed false positives from the on-call console, applied live.
//!
//! The console publishes one `vigil.bank_update` record per allowlist entry on the
//! bank-updates topic (keyed by entry id; `revoke` withdraws one). Every worker reads the
//! whole topic, from its beginning, outside any consumer group (each worker needs every
//! entry), and swaps the live entries into its bank set the moment one arrives, so an
//! entry applies within a poll of being published. Records are hostile input: anything
//! [`vigil_core::BankUpdate::check`] refuses is logged and counted, never applied; so is
//! a rule-scoped entry that names no rule of this worker's policy or a rule an entry may
//! not silence (one a bank match fires: bank matches are allowed per bank, by a
//! bank-scoped entry), and an entry over a cap ([`vigil_hash::allow::MAX_ENTRIES`] in
//! all, [`vigil_hash::allow::MAX_ENTRIES_PER_SCOPE`] per bank or rule,
//! [`vigil_hash::allow::MAX_LIVE_HASHES`] hashes), which bounds what a frame's lookup
//! costs (see [`vigil_hash::allow`]).

use prometheus::{IntCounterVec, IntGauge, Opts};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};
use vigil_core::{BankUpdate, BankUpdateOp, ScopeKind};
use vigil_fusion::{Condition, Policy};
use vigil_hash::{AllowEntry, BankStore, LiveEntries, OverCap};

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

const RESULTS: [&str; 5] = ["applied", "revoked", "refused", "over_cap", "expired"];

/// The policy's rules as allowlist scopes: a rule-scoped entry names one of them, and
/// never one that an entry may not silence.
#[derive(Debug, Clone, Default)]
pub struct RuleScopes {
    /// Rules an entry may silence.
    silenceable: BTreeSet<String>,
    /// Rules it may not, with the condition they fire on: a bank match's (a banked
    /// image is allowed per bank, by a bank-scoped entry) or `unscanned` (nobody looked
    /// at the frame; fusion never silences it either).
    protected: Vec<(String, Condition)>,
}

impl RuleScopes {
    pub fn of(policy: &Policy) -> RuleScopes {
        let mut scopes = RuleScopes::default();
        for r in &policy.rule {
            match r.condition {
                Condition::BankInterrupt | Condition::BankReview | Condition::Unscanned => {
                    scopes.protected.push((r.name.clone(), r.condition))
                }
                _ => {
                    scopes.silenceable.insert(r.name.clone());
                }
            }
        }
        scopes
    }

    fn check(&self, kind: ScopeKind, scope: &str) -> Result<(), Refusal> {
        if kind == ScopeKind::Bank || self.silenceable.contains(scope) {
            return Ok(());
        }
        Err(match self.protected.iter().find(|(name, _)| name == scope) {
            Some((rule, condition)) => Refusal::ProtectedRule { rule: rule.clone(), condition: *condition },
            None => Refusal::UnknownRule(scope.to_string()),
        })
    }
}

/// Why a record is not applied: each is logged and counted under its `result`.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("{0}")]
    Invalid(String),
    #[error(
        "rule-scoped, and rule {rule} fires on {}, which no allowlist entry may silence ({})",
        .condition.name(),
        why_protected(*.condition)
    )]
    ProtectedRule { rule: String, condition: Condition },
    #[error("rule-scoped, and this worker's policy has no rule {0:?}")]
    UnknownRule(String),
    #[error("over a cap: {0} (revoke some)")]
    OverCap(#[from] OverCap),
}

fn why_protected(condition: Condition) -> &'static str {
    match condition {
        Condition::Unscanned => "nobody looked at the frame",
        _ => "a banked image is allowed per bank, by a bank-scoped entry",
    }
}

impl Refusal {
    fn result(&self) -> &'static str {
        match self {
            Refusal::OverCap(_) => "over_cap",
            _ => "refused",
        }
    }

    /// Logs and counts it.
    fn report(&self, key: Option<&[u8]>) {
        UPDATES.with_label_values(&[self.result()]).inc();
        let key = key.map(|k| String::from_utf8_lossy(&k[..k.len().min(200)]).into_owned());
        match self {
            Refusal::OverCap(_) => tracing::error!(key, "allowlist: record refused: {self}"),
            _ => tracing::warn!(key, "allowlist: record refused: {self}"),
        }
    }
}

static UPDATES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    IntCounterVec::new(
        Opts::new(
            "vigil_allowlist_updates_total",
            "Allowlist records read: applied, revoked, refused (invalid, or a rule it may not name), over_cap (too many entries in all, for its scope, or hashes), expired (dropped at expiry)",
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
        trust: &vigil_trust::config::Trust,
        rules: RuleScopes,
    ) -> anyhow::Result<AllowlistReader> {
        let mut client = kafka.consumer_config(&format!("vigil-allowlist-{worker_id}")).map_err(anyhow::Error::msg)?;
        client.set("enable.auto.commit", "false");
        let consumer: BaseConsumer = client.create()?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut reader = Reader {
            consumer,
            topic: cfg.topic.clone(),
            banks,
            rules,
            entries: LiveEntries::default(),
            partitions: 0,
            verifier: trust.verifier(vigil_trust::TopicKind::BankUpdates),
        };
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
    /// The policy's rules a rule-scoped entry may name.
    rules: RuleScopes,
    entries: LiveEntries,
    /// Partitions assigned so far (a topic that grows is picked up by the next check).
    partitions: usize,
    /// Only the console's signed records are applied.
    verifier: vigil_trust::Verifier,
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
                        // Refused and counted by the verifier (vigil_trust_records_total).
                        Ok(m) if self.verifier.check(&m).is_err() => continue,
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
        let update = update.map_err(Refusal::Invalid).and_then(|u| match u.op {
            BankUpdateOp::Allow => {
                self.rules.check(u.scope_kind, &u.scope)?;
                AllowEntry::from_update(&u).map(|e| (u, Some(e))).map_err(Refusal::Invalid)
            }
            BankUpdateOp::Revoke => Ok((u, None)),
        });
        let update = match update {
            Ok(u) => u,
            Err(why) => {
                why.report(key);
                return false;
            }
        };
        match update {
            (u, Some(entry)) => {
                if entry.expires_at_unix_ms <= crate::output::unix_ms() {
                    UPDATES.with_label_values(&["expired"]).inc();
                    return self.entries.remove(&u.update_id);
                }
                let hashes = entry.hashes.len();
                if let Err(over) = self.entries.insert(entry) {
                    Refusal::from(over).report(key);
                    return false;
                }
                UPDATES.with_label_values(&["applied"]).inc();
                tracing::info!(
                    entry = u.update_id,
                    scope_kind = ?u.scope_kind,
                    scope = u.scope,
                    hashes,
                    created_by = u.created_by,
                    "allowlist: entry applied"
                );
                true
            }
            (u, None) => {
                UPDATES.with_label_values(&["revoked"]).inc();
                tracing::info!(entry = u.update_id, created_by = u.created_by, "allowlist: entry revoked");
                self.entries.remove(&u.update_id)
            }
        }
    }

    fn drop_expired(&mut self) -> bool {
        let gone = self.entries.drop_expired(crate::output::unix_ms());
        UPDATES.with_label_values(&["expired"]).inc_by(gone as u64);
        gone > 0
    }

    fn publish(&self) {
        ENTRIES.set(self.entries.len() as i64);
        // Indexed here, on the reader's thread; swapped in whole.
        self.banks.set_allowlist(self.entries.allowlist());
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
            rules: RuleScopes::of(&Policy::embedded_default()),
            entries: LiveEntries::default(),
            partitions: 0,
            verifier: vigil_trust::config::Trust::with(&Default::default(), None, None)
                .verifier(vigil_trust::TopicKind::BankUpdates),
        }
    }

    fn record(id: &str, op: &str, expires: u64) -> Vec<u8> {
        scoped(id, op, "bank", "known", expires)
    }

    fn scoped(id: &str, op: &str, scope_kind: &str, scope: &str, expires: u64) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "schema": "vigil.bank_update", "schema_version": 1, "update_id": id, "op": op,
            "scope_kind": scope_kind, "scope": scope, "hashes": if op == "allow" { vec!["ab".repeat(32)] } else { vec![] },
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
        assert_eq!(r.banks.snapshot().allowlist.len(), 1);
        assert!(!r.read(Some(b"fp/2"), Some(b"{not json")));
        assert!(!r.read(Some(b"other"), Some(&record("fp/2", "allow", far))), "key mismatch");
        assert!(!r.read(Some(b"fp/3"), None));
        assert!(!r.read(Some(b"fp/4"), Some(&record("fp/4", "allow", 3_600_002))), "already expired");
        assert_eq!(r.entries.len(), 1);
        assert!(r.read(Some(b"fp/1"), Some(&record("fp/1", "revoke", 2))));
        r.publish();
        assert!(r.banks.snapshot().allowlist.is_empty());
    }

    #[test]
    fn a_rule_entry_may_not_name_a_bank_rule() {
        let mut r = reader();
        let far = crate::output::unix_ms() + 3_600_000;
        // The default policy's bank rules: known_abuse_material (bank_interrupt) and
        // known_content_for_review (bank_review). Silencing one would let a banked image
        // through on every bank at once.
        for (i, rule) in ["known_abuse_material", "known_content_for_review", "stream_unscannable", "no_such_rule"]
            .into_iter()
            .enumerate()
        {
            let id = format!("fp/rule-{i}");
            assert!(!r.read(Some(id.as_bytes()), Some(&scoped(&id, "allow", "rule", rule, far))), "{rule}");
        }
        assert!(r.entries.is_empty());
        // A rule a reviewer may silence, and a bank-scoped entry for the bank itself.
        assert!(r.read(Some(b"fp/nsfw"), Some(&scoped("fp/nsfw", "allow", "rule", "nsfw_classifier", far))));
        assert!(r.read(Some(b"fp/bank"), Some(&scoped("fp/bank", "allow", "bank", "known_abuse_material", far))));
        assert_eq!(r.entries.len(), 2);
        // Revoking by id needs no scope check.
        assert!(r.read(Some(b"fp/nsfw"), Some(&scoped("fp/nsfw", "revoke", "rule", "known_abuse_material", 2))));
    }

    #[test]
    fn an_entry_over_a_cap_is_refused_and_counted_as_over_cap() {
        let mut r = reader();
        let far = crate::output::unix_ms() + 3_600_000;
        for i in 0..vigil_hash::allow::MAX_ENTRIES_PER_SCOPE {
            let id = format!("fp/{i}");
            assert!(r.read(Some(id.as_bytes()), Some(&record(&id, "allow", far))));
        }
        let over_cap = || UPDATES.with_label_values(&["over_cap"]).get();
        let before = over_cap();
        assert!(!r.read(Some(b"fp/x"), Some(&record("fp/x", "allow", far))), "one scope's cap");
        assert_eq!(over_cap(), before + 1);
        assert!(r.read(Some(b"fp/y"), Some(&scoped("fp/y", "allow", "bank", "other", far))), "another scope");
        assert!(r.read(Some(b"fp/0"), Some(&record("fp/0", "allow", far))), "a replacement");
        assert_eq!(r.entries.len(), vigil_hash::allow::MAX_ENTRIES_PER_SCOPE + 1);
    }
}
