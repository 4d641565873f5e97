//! [`BankUpdate`]: a scoped allowlist entry that the on-call console publishes when a
//! reviewer marks an incident a false positive, and that every worker applies to its
//! matching (`vigil.bank_update` v1, `schema/bank-update-v1.schema.json`).
//!
//! Workers read the topic as hostile input: [`BankUpdate::check`] refuses anything a
//! console would never send, so a forged or garbled record cannot silence detection
//! wholesale (too many hashes, a wide distance, a long life, an unknown scope).

use serde::{Deserialize, Serialize};

pub const BANK_UPDATE_SCHEMA: &str = "vigil.bank_update";
pub const BANK_UPDATE_SCHEMA_VERSION: u32 = 1;
pub const BANK_UPDATE_JSON_SCHEMA: &str = include_str!("../schema/bank-update-v1.schema.json");
/// The most frame hashes one entry may carry.
pub const MAX_HASHES: usize = 256;
/// The widest PDQ distance an entry may cover (ThreatExchange's match threshold is 31).
pub const MAX_DISTANCE: u32 = 31;
/// The longest an entry may live: a false positive is re-reviewed at least yearly.
pub const MAX_LIFETIME_MS: u64 = 366 * 24 * 3600 * 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BankUpdateOp {
    /// Add (or replace, by `update_id`) an allow entry.
    Allow,
    /// Withdraw the entry `update_id`.
    Revoke,
}

/// What an entry silences: one bank's matches, or one policy rule's condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScopeKind {
    Bank,
    Rule,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BankUpdate {
    pub schema: String,
    pub schema_version: u32,
    /// Stable id of the entry (also the record's key).
    pub update_id: String,
    pub op: BankUpdateOp,
    pub scope_kind: ScopeKind,
    /// The bank or rule name.
    pub scope: String,
    /// 64-hex PDQ hashes of the frames involved (empty for a revoke).
    #[serde(default)]
    pub hashes: Vec<String>,
    pub max_distance: u32,
    pub created_at_unix_ms: u64,
    pub expires_at_unix_ms: u64,
    pub created_by: String,
    #[serde(default)]
    pub incident_id: Option<String>,
}

/// Ids and names: printable, no spaces or quotes, bounded.
pub fn is_safe_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 200 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:/@-".contains(&b))
}

fn is_pdq_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

impl BankUpdate {
    /// [`BankUpdate::check`], and against the clock: not created in the future (5 min of
    /// skew allowed), not expiring later than [`MAX_LIFETIME_MS`] from now, so a forged
    /// record dated ahead cannot outlive the cap.
    pub fn check_at(&self, key: Option<&[u8]>, now_unix_ms: u64) -> Result<(), String> {
        self.check(key)?;
        if self.created_at_unix_ms > now_unix_ms + 300_000 {
            return Err("created_at_unix_ms is in the future".into());
        }
        if self.expires_at_unix_ms > now_unix_ms + MAX_LIFETIME_MS {
            return Err("expires more than 366 days from now".into());
        }
        Ok(())
    }

    /// Every reason to refuse this record, in one line; `key` is the record's key.
    pub fn check(&self, key: Option<&[u8]>) -> Result<(), String> {
        let mut e = Vec::new();
        if self.schema != BANK_UPDATE_SCHEMA || self.schema_version != BANK_UPDATE_SCHEMA_VERSION {
            e.push(format!(
                "schema {}/{} is not {BANK_UPDATE_SCHEMA}/{BANK_UPDATE_SCHEMA_VERSION}",
                self.schema, self.schema_version
            ));
        }
        if !is_safe_name(&self.update_id) {
            e.push("update_id is empty, too long or has characters outside [A-Za-z0-9._:/@-]".into());
        }
        if key.is_some_and(|k| k != self.update_id.as_bytes()) {
            e.push("the record's key is not its update_id".into());
        }
        if !is_safe_name(&self.scope) {
            e.push("scope is empty, too long or has characters outside [A-Za-z0-9._:/@-]".into());
        }
        if self.op == BankUpdateOp::Allow {
            if self.hashes.is_empty() || self.hashes.len() > MAX_HASHES {
                e.push(format!("{} hashes: an allow entry carries 1 to {MAX_HASHES}", self.hashes.len()));
            }
            if let Some(bad) = self.hashes.iter().find(|h| !is_pdq_hex(h)) {
                e.push(format!("hash {:?} is not 64 hex digits", bad.chars().take(80).collect::<String>()));
            }
            if self.max_distance > MAX_DISTANCE {
                e.push(format!("max_distance {} is over {MAX_DISTANCE}", self.max_distance));
            }
            if self.expires_at_unix_ms <= self.created_at_unix_ms {
                e.push("expires_at_unix_ms is not after created_at_unix_ms".into());
            } else if self.expires_at_unix_ms - self.created_at_unix_ms > MAX_LIFETIME_MS {
                e.push("the entry would live more than 366 days".into());
            }
        }
        if self.created_by.is_empty() || self.created_by.len() > 200 {
            e.push("created_by is empty or too long".into());
        }
        if e.is_empty() { Ok(()) } else { Err(e.join("; ")) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> BankUpdate {
        BankUpdate {
            schema: BANK_UPDATE_SCHEMA.into(),
            schema_version: 1,
            update_id: "fp/1700000000000-ab".into(),
            op: BankUpdateOp::Allow,
            scope_kind: ScopeKind::Bank,
            scope: "known".into(),
            hashes: vec!["a".repeat(64)],
            max_distance: 16,
            created_at_unix_ms: 1_700_000_000_000,
            expires_at_unix_ms: 1_700_000_000_000 + 86_400_000,
            created_by: "alice".into(),
            incident_id: Some("s/1-2/incident/1".into()),
        }
    }

    #[test]
    fn a_console_record_passes_and_every_fault_is_named() {
        let ok = sample();
        assert_eq!(ok.check(Some(ok.update_id.as_bytes())), Ok(()));
        let bad = BankUpdate {
            update_id: "a b".into(),
            scope: "".into(),
            hashes: vec!["zz".into()],
            max_distance: 200,
            expires_at_unix_ms: ok.created_at_unix_ms + 400 * 86_400_000,
            ..ok.clone()
        };
        let e = bad.check(Some(b"other")).unwrap_err();
        for part in ["update_id", "key", "scope", "not 64 hex", "max_distance", "366 days"] {
            assert!(e.contains(part), "{part} missing from {e}");
        }
        let many = BankUpdate { hashes: vec!["b".repeat(64); MAX_HASHES + 1], ..ok.clone() };
        assert!(many.check(None).unwrap_err().contains("hashes"));
        let revoke = BankUpdate { op: BankUpdateOp::Revoke, hashes: vec![], ..ok };
        assert_eq!(revoke.check(None), Ok(()));
    }

    #[test]
    fn a_record_dated_ahead_cannot_outlive_the_cap() {
        let ok = sample();
        let now = ok.created_at_unix_ms;
        assert_eq!(ok.check_at(None, now), Ok(()));
        let ahead = BankUpdate {
            created_at_unix_ms: now + 100 * MAX_LIFETIME_MS,
            expires_at_unix_ms: now + 100 * MAX_LIFETIME_MS + 1,
            ..ok
        };
        assert!(ahead.check_at(None, now).unwrap_err().contains("future"));
    }

    #[test]
    fn unknown_fields_are_refused() {
        let mut v = serde_json::to_value(sample()).unwrap();
        v["pixels"] = serde_json::json!("...");
        assert!(serde_json::from_value::<BankUpdate>(v).is_err());
    }
}
