//! Counters of the hash + bank-match stage. Bank names are labels: their number is
//! bounded by configuration.

use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};
use std::sync::LazyLock;

pub struct HashMetrics {
    pub frames_hashed: IntCounter,
    pub below_quality_floor: IntCounter,
    pub near_duplicate_skips: IntCounter,
    pub matches: IntCounterVec,
    pub bank_rows: IntGaugeVec,
    pub bank_reloads: IntCounterVec,
    pub bank_high_water: IntGaugeVec,
    pub bank_state_errors: IntCounter,
    /// Frames the console's allowlist was not applied to: finding their entries would
    /// have cost more than [`crate::allow::MAX_DISTANCES_PER_FRAME`] distances.
    pub allowlist_over_budget: IntCounter,
    /// CPU seconds spent hashing (PDQ and its variants) and matching against banks.
    pub cpu_seconds: prometheus::Counter,
}

pub static METRICS: LazyLock<HashMetrics> = LazyLock::new(|| HashMetrics {
    frames_hashed: IntCounter::new("vigil_hash_frames_total", "Frames hashed").expect("valid metric"),
    cpu_seconds: prometheus::Counter::new(
        "vigil_hash_cpu_seconds_total",
        "CPU seconds spent hashing frames (PDQ and its variants) and matching them against the banks",
    )
    .expect("valid metric"),
    below_quality_floor: IntCounter::new(
        "vigil_hash_below_quality_floor_total",
        "Frames whose PDQ quality was under the floor: counted, not matched",
    )
    .expect("valid metric"),
    near_duplicate_skips: IntCounter::new(
        "vigil_hash_near_duplicate_skips_total",
        "Samples that reused the previous analysis because they were near-duplicates",
    )
    .expect("valid metric"),
    matches: IntCounterVec::new(Opts::new("vigil_hash_matches_total", "Bank matches, by action"), &["action"])
        .expect("valid metric"),
    bank_rows: IntGaugeVec::new(Opts::new("vigil_hash_bank_rows", "Hashes loaded per bank"), &["bank"])
        .expect("valid metric"),
    bank_reloads: IntCounterVec::new(
        Opts::new("vigil_hash_bank_reloads_total", "Bank (re)loads, by bank and result"),
        &["bank", "result"],
    )
    .expect("valid metric"),
    bank_high_water: IntGaugeVec::new(
        Opts::new(
            "vigil_hash_bank_high_water_rows",
            "The most rows each bank has served: shrinks are measured against it",
        ),
        &["bank"],
    )
    .expect("valid metric"),
    bank_state_errors: IntCounter::new(
        "vigil_hash_bank_state_errors_total",
        "Failures to read or write the banks' high-water marks (state_dir): a restart may lose them",
    )
    .expect("valid metric"),
    allowlist_over_budget: IntCounter::new(
        "vigil_hash_allowlist_over_budget_total",
        "Frames the allowlist was not applied to (their matches stand): over the distance budget",
    )
    .expect("valid metric"),
});

pub fn register(registry: &Registry) -> prometheus::Result<()> {
    let m = &*METRICS;
    for action in ["interrupt", "review", "allow"] {
        let _ = m.matches.with_label_values(&[action]);
    }
    registry.register(Box::new(m.frames_hashed.clone()))?;
    registry.register(Box::new(m.below_quality_floor.clone()))?;
    registry.register(Box::new(m.near_duplicate_skips.clone()))?;
    registry.register(Box::new(m.matches.clone()))?;
    registry.register(Box::new(m.cpu_seconds.clone()))?;
    registry.register(Box::new(m.bank_rows.clone()))?;
    registry.register(Box::new(m.bank_reloads.clone()))?;
    registry.register(Box::new(m.bank_high_water.clone()))?;
    registry.register(Box::new(m.bank_state_errors.clone()))?;
    registry.register(Box::new(m.allowlist_over_budget.clone()))
}
