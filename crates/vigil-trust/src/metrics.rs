//! The trust metrics. Each part registers them in its own registry ([`register`]).

use prometheus::{IntCounterVec, IntGauge, Opts};
use std::sync::LazyLock;

/// Records read, by topic kind and result (`accepted`, `unsigned_allowed`, or a
/// [`crate::Refusal`] label).
pub static RECORDS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    IntCounterVec::new(
        Opts::new(
            "vigil_trust_records_total",
            "Kafka records checked for their writer's signature, by topic and result (accepted, unsigned_allowed, or why refused)",
        ),
        &["topic", "result"],
    )
    .expect("valid metric")
});
/// 1 when this part takes unsigned records (`[trust] allow_unsigned`).
pub static ALLOW_UNSIGNED: LazyLock<IntGauge> = LazyLock::new(|| {
    IntGauge::new("vigil_trust_allow_unsigned", "1 when this part believes unsigned Kafka records (allow_unsigned)")
        .expect("valid metric")
});
pub static KEYRING_KEYS: LazyLock<IntGauge> = LazyLock::new(|| {
    IntGauge::new("vigil_trust_keyring_keys", "Public keys in the keyring in force").expect("valid metric")
});
pub static KEYRING_RELOADS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    IntCounterVec::new(
        Opts::new(
            "vigil_trust_keyring_reloads_total",
            "Keyring file changes read: ok, or refused (the old ring stays)",
        ),
        &["result"],
    )
    .expect("valid metric")
});

/// Registers the trust metrics, with every label value this part can produce at zero.
pub fn register(registry: &prometheus::Registry, kinds: &[crate::TopicKind]) -> prometheus::Result<()> {
    for kind in kinds {
        for label in ["accepted", "unsigned_allowed"].into_iter().chain(crate::Refusal::ALL.iter().map(|r| r.label())) {
            let _ = RECORDS.with_label_values(&[kind.label(), label]);
        }
    }
    for r in ["ok", "refused"] {
        let _ = KEYRING_RELOADS.with_label_values(&[r]);
    }
    registry.register(Box::new(RECORDS.clone()))?;
    registry.register(Box::new(ALLOW_UNSIGNED.clone()))?;
    registry.register(Box::new(KEYRING_KEYS.clone()))?;
    registry.register(Box::new(KEYRING_RELOADS.clone()))
}
