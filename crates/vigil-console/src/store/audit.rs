//! The audit log: append-only and chained with a keyed MAC, so that an edited, removed or
//! reordered entry is found by [`Store::audit_verify`], and so is a chain rewritten and
//! re-hashed by someone who can write the store but does not hold the key.
//!
//! Entry `seq` (1, 2, 3, ... without gaps) stores
//! `hash = hex(hmac_sha256(key, prev_hash ‖ "\n" ‖ encoding))`, where `key` is the
//! [`AuditKey`] (from `[console] audit_key_file` or `audit_key_env`, never in the store),
//! `prev_hash` is the previous entry's hash (64 zeros for the first) and `encoding` is the
//! JSON array
//! `[seq, at_ms, actor, action, target, detail]` with `detail` as a string holding the
//! detail's canonical JSON (object keys sorted, no whitespace), which is also exactly the
//! text stored in the `detail` column. Appends are serialized: on SQLite by the
//! transaction's write lock (`BEGIN IMMEDIATE`), on Postgres by a table lock taken inside
//! the transaction, so two replicas never both extend the same entry.
//!
//! Stores written before the key (schema version 1) chained plain SHA-256
//! ([`legacy_entry_hash`]). Migration 2 seals such a log: in the migration's own
//! transaction it appends a keyed entry (`system`, [`SEAL_ACTION`], detail
//! `{"legacy_entries": N}`) whose `prev_hash` is the hash of entry N. Entries 1..=N are
//! then checked as plain SHA-256 and pinned by that keyed seal; every other entry must
//! carry the keyed MAC. A log with no valid seal accepts no plain entry.

use super::error::{StoreError, query};
use super::{Backend, RowExt, Store};
use crate::model::UnixMs;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::AnyConnection;
use sqlx::any::AnyRow;

/// The first entry's `prev_hash`.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Rows read per round trip by [`Store::audit_verify`].
const VERIFY_PAGE: i64 = 1000;

/// The action of the keyed entry that seals a log written before the key (see the module
/// documentation).
pub const SEAL_ACTION: &str = "audit.keyed";

/// The audit chain's HMAC-SHA256 key. Its bytes never show in `Debug`.
#[derive(Clone)]
pub struct AuditKey(Vec<u8>);

impl AuditKey {
    /// At least [`crate::config::MIN_AUDIT_KEY_BYTES`] bytes.
    pub fn new(bytes: &[u8]) -> Result<AuditKey, String> {
        if bytes.len() < crate::config::MIN_AUDIT_KEY_BYTES {
            return Err(format!(
                "the audit key has {} bytes; it needs at least {}",
                bytes.len(),
                crate::config::MIN_AUDIT_KEY_BYTES
            ));
        }
        Ok(AuditKey(bytes.to_vec()))
    }
}

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditKey(..)")
    }
}

/// One audit entry.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub seq: i64,
    pub at_ms: UnixMs,
    /// The user (or `system`, `intake`, ...) that acted.
    pub actor: String,
    /// What was done: `hold`, `acknowledge`, `resolve`, `user.create`, ...
    pub action: String,
    /// What it was done to: an incident id, `user:{name}`, ...
    pub target: String,
    pub detail: Value,
    pub prev_hash: String,
    pub hash: String,
}

/// What [`Store::audit_verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditCheck {
    /// Entries read.
    pub entries: i64,
    /// The first entry whose hash or link to its predecessor does not hold, and why.
    pub first_broken: Option<(i64, String)>,
}

/// `detail` as canonical JSON: object keys sorted at every level, no whitespace.
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

fn encoding(seq: i64, at_ms: UnixMs, actor: &str, action: &str, target: &str, detail: &str) -> String {
    serde_json::json!([seq, at_ms, actor, action, target, detail]).to_string()
}

/// The keyed hash of one entry given its predecessor's hash and its stored fields.
#[allow(clippy::too_many_arguments)]
pub fn entry_hash(
    key: &AuditKey,
    prev_hash: &str,
    seq: i64,
    at_ms: UnixMs,
    actor: &str,
    action: &str,
    target: &str,
    detail: &str,
) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(&key.0).expect("HMAC takes a key of any length");
    mac.update(prev_hash.as_bytes());
    mac.update(b"\n");
    mac.update(encoding(seq, at_ms, actor, action, target, detail).as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The plain SHA-256 of schema version 1's entries, checked only before a valid seal.
pub fn legacy_entry_hash(
    prev_hash: &str,
    seq: i64,
    at_ms: UnixMs,
    actor: &str,
    action: &str,
    target: &str,
    detail: &str,
) -> String {
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(b"\n");
    h.update(encoding(seq, at_ms, actor, action, target, detail).as_bytes());
    hex::encode(h.finalize())
}

/// Compares two hex hashes without stopping at the first difference.
fn same_hash(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Appends one entry on `conn`, which must be inside a write transaction (the caller's,
/// so that an action and its audit entry commit together). Returns the entry's seq.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn append(
    conn: &mut AnyConnection,
    backend: Backend,
    key: &AuditKey,
    actor: &str,
    action: &str,
    target: &str,
    detail: &Value,
    now_ms: UnixMs,
) -> Result<i64, StoreError> {
    lock(conn, backend).await?;
    let last = sqlx::query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
        .fetch_optional(&mut *conn)
        .await
        .map_err(query("audit_log: read the last entry"))?;
    let (seq, prev_hash) = match last {
        Some(row) => (row.int("seq")? + 1, row.text("hash")?),
        None => (1, GENESIS_HASH.to_string()),
    };
    let detail = canonical_json(detail);
    let hash = entry_hash(key, &prev_hash, seq, now_ms, actor, action, target, &detail);
    sqlx::query(
        "INSERT INTO audit_log (seq, at_ms, actor, action, target, detail, prev_hash, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(seq)
    .bind(now_ms)
    .bind(actor)
    .bind(action)
    .bind(target)
    .bind(&detail)
    .bind(&prev_hash)
    .bind(&hash)
    .execute(&mut *conn)
    .await
    .map_err(query("audit_log: append"))?;
    Ok(seq)
}

/// Serializes appenders: on Postgres a table lock held to the end of the transaction; on
/// SQLite the transaction's `BEGIN IMMEDIATE` already does.
pub(crate) async fn lock(conn: &mut AnyConnection, backend: Backend) -> Result<(), StoreError> {
    if backend == Backend::Postgres {
        // Self-conflicting, and still lets readers (verify, the incident page) read.
        sqlx::query("LOCK TABLE audit_log IN SHARE ROW EXCLUSIVE MODE")
            .execute(&mut *conn)
            .await
            .map_err(query("audit_log: lock"))?;
    }
    Ok(())
}

/// Seals a log written with plain SHA-256 (schema version 1) under `key`, inside the
/// migration's transaction: one keyed entry naming how many entries came before it.
/// Nothing to do on an empty log.
pub(crate) async fn seal_legacy(
    conn: &mut AnyConnection,
    backend: Backend,
    key: &AuditKey,
    now_ms: UnixMs,
) -> Result<(), StoreError> {
    lock(conn, backend).await?;
    let row = sqlx::query("SELECT COUNT(*) AS n FROM audit_log")
        .fetch_one(&mut *conn)
        .await
        .map_err(query("audit_log: count for the seal"))?;
    let n = row.int("n")?;
    if n > 0 {
        let detail = serde_json::json!({ "legacy_entries": n, "legacy_hash": "sha256" });
        append(conn, backend, key, "system", SEAL_ACTION, "audit_log", &detail, now_ms).await?;
    }
    Ok(())
}

const AUDIT_COLUMNS: &str = "seq, at_ms, actor, action, target, detail, prev_hash, hash";

fn entry_from_row(row: &AnyRow) -> Result<(AuditEntry, String), StoreError> {
    let detail_text = row.text("detail")?;
    let seq = row.int("seq")?;
    let detail = serde_json::from_str(&detail_text)
        .map_err(|e| StoreError::Corrupt(format!("audit entry {seq}: detail is not JSON: {e}")))?;
    Ok((
        AuditEntry {
            seq,
            at_ms: row.int("at_ms")?,
            actor: row.text("actor")?,
            action: row.text("action")?,
            target: row.text("target")?,
            detail,
            prev_hash: row.text("prev_hash")?,
            hash: row.text("hash")?,
        },
        detail_text,
    ))
}

/// The action of a view of an incident page. Views are folded: one entry per user per
/// incident per [`VIEW_WINDOW_MS`] (see [`Store::audit_view`]).
pub const VIEW_ACTION: &str = "view";
/// A user's views of one incident within this long of their last recorded view are one
/// entry.
pub const VIEW_WINDOW_MS: i64 = 3_600_000;

/// The entries about `target` that are not views (decisions, allowlist changes), oldest
/// first.
pub(crate) async fn decisions_for_target(
    conn: &mut AnyConnection,
    target: &str,
) -> Result<Vec<AuditEntry>, StoreError> {
    let rows =
        sqlx::query(&format!("SELECT {AUDIT_COLUMNS} FROM audit_log WHERE target = $1 AND action <> $2 ORDER BY seq"))
            .bind(target)
            .bind(VIEW_ACTION)
            .fetch_all(&mut *conn)
            .await
            .map_err(query("audit_log: read by target"))?;
    rows.iter().map(|r| entry_from_row(r).map(|(e, _)| e)).collect()
}

impl Store {
    /// Appends an audit entry in its own transaction; returns its seq.
    pub async fn audit(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        detail: &Value,
        now_ms: UnixMs,
    ) -> Result<i64, StoreError> {
        let mut tx = self.begin().await?;
        let seq = append(&mut tx, self.backend, &self.audit_key, actor, action, target, detail, now_ms).await?;
        tx.commit().await.map_err(query("audit_log: commit"))?;
        Ok(seq)
    }

    /// Records that `actor` viewed `target`, unless their last recorded view of it is
    /// less than [`VIEW_WINDOW_MS`] old: repeated views are one entry, so a reader who
    /// reloads a page cannot grow the log (or the page's trail) without bound. Returns the
    /// new entry's seq, or `None` when the view was folded into an earlier entry.
    pub async fn audit_view(&self, actor: &str, target: &str, now_ms: UnixMs) -> Result<Option<i64>, StoreError> {
        let mut tx = self.begin().await?;
        lock(&mut tx, self.backend).await?;
        let recent = sqlx::query(
            "SELECT seq FROM audit_log WHERE target = $1 AND action = $2 AND actor = $3 AND at_ms > $4 LIMIT 1",
        )
        .bind(target)
        .bind(VIEW_ACTION)
        .bind(actor)
        .bind(now_ms - VIEW_WINDOW_MS)
        .fetch_optional(&mut *tx)
        .await
        .map_err(query("audit_log: recent views"))?;
        if recent.is_some() {
            return Ok(None);
        }
        let detail = serde_json::json!({ "covers_ms": VIEW_WINDOW_MS });
        let seq = append(&mut tx, self.backend, &self.audit_key, actor, VIEW_ACTION, target, &detail, now_ms).await?;
        tx.commit().await.map_err(query("audit_log: commit a view"))?;
        Ok(Some(seq))
    }

    /// The newest `limit` entries, newest first; only those about `target` when given.
    pub async fn audit_entries(&self, target: Option<&str>, limit: i64) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = match target {
            Some(t) => {
                sqlx::query(&format!(
                    "SELECT {AUDIT_COLUMNS} FROM audit_log WHERE target = $1 ORDER BY seq DESC LIMIT $2"
                ))
                .bind(t)
                .bind(limit)
                .fetch_all(&self.pool)
                .await
            }
            None => {
                sqlx::query(&format!("SELECT {AUDIT_COLUMNS} FROM audit_log ORDER BY seq DESC LIMIT $1"))
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await
            }
        }
        .map_err(query("audit_log: read"))?;
        rows.iter().map(|r| entry_from_row(r).map(|(e, _)| e)).collect()
    }

    /// One page of the entries about `target`, newest first: page 0 is the newest
    /// `per_page`. Also returns how many entries there are about `target` in all.
    pub async fn audit_page(
        &self,
        target: &str,
        page: i64,
        per_page: i64,
    ) -> Result<(Vec<AuditEntry>, i64), StoreError> {
        let total = sqlx::query("SELECT COUNT(*) AS n FROM audit_log WHERE target = $1")
            .bind(target)
            .fetch_one(&self.pool)
            .await
            .map_err(query("audit_log: count by target"))?
            .int("n")?;
        let rows = sqlx::query(&format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_log WHERE target = $1 ORDER BY seq DESC LIMIT $2 OFFSET $3"
        ))
        .bind(target)
        .bind(per_page.max(1))
        .bind(page.max(0).saturating_mul(per_page.max(1)))
        .fetch_all(&self.pool)
        .await
        .map_err(query("audit_log: read a page"))?;
        let entries = rows.iter().map(|r| entry_from_row(r).map(|(e, _)| e)).collect::<Result<_, _>>()?;
        Ok((entries, total))
    }

    /// How many plain SHA-256 entries a valid keyed seal vouches for (0 without one).
    async fn sealed_legacy_entries(&self) -> Result<i64, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_log WHERE action = $1 AND actor = 'system' ORDER BY seq LIMIT 1"
        ))
        .bind(SEAL_ACTION)
        .fetch_optional(&self.pool)
        .await
        .map_err(query("audit_log: read the seal"))?;
        let Some(row) = row else { return Ok(0) };
        let Ok((seal, detail_text)) = entry_from_row(&row) else { return Ok(0) };
        let mac = entry_hash(
            &self.audit_key,
            &seal.prev_hash,
            seal.seq,
            seal.at_ms,
            &seal.actor,
            &seal.action,
            &seal.target,
            &detail_text,
        );
        let n = seal.detail["legacy_entries"].as_i64().unwrap_or(0);
        Ok(if same_hash(&mac, &seal.hash) && seal.seq == n + 1 { n } else { 0 })
    }

    /// Walks the whole chain from the first entry and names the first one that does not
    /// hold: a hash that is not the keyed MAC of the entry's contents (edited, or written
    /// without this key), or a `prev_hash` that is not the hash of the entry before it
    /// (an entry removed, inserted or moved). Removing the newest entries cannot be seen
    /// from the chain alone: compare `entries` with a count kept elsewhere.
    pub async fn audit_verify(&self) -> Result<AuditCheck, StoreError> {
        let legacy = self.sealed_legacy_entries().await?;
        let mut entries = 0;
        let mut prev: Option<(i64, String)> = None;
        loop {
            let after = prev.as_ref().map_or(i64::MIN, |(s, _)| *s);
            let rows =
                sqlx::query(&format!("SELECT {AUDIT_COLUMNS} FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2"))
                    .bind(after)
                    .bind(VERIFY_PAGE)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(query("audit_log: verify"))?;
            if rows.is_empty() {
                return Ok(AuditCheck { entries, first_broken: None });
            }
            for row in &rows {
                let seq = row.int("seq")?;
                entries += 1;
                let (entry, detail_text) = match entry_from_row(row) {
                    Ok(e) => e,
                    Err(e) => return Ok(AuditCheck { entries, first_broken: Some((seq, e.to_string())) }),
                };
                let (expected_seq, expected_prev) = match &prev {
                    Some((s, h)) => (s + 1, h.as_str()),
                    None => (1, GENESIS_HASH),
                };
                if entry.prev_hash != expected_prev {
                    let why = match &prev {
                        Some((s, _)) if seq != s + 1 => format!(
                            "its prev_hash is not the hash of entry {s}, the entry before it ({})",
                            missing(s + 1, seq - 1)
                        ),
                        Some((s, _)) => format!("its prev_hash is not the hash of entry {s}, the entry before it"),
                        None if seq != 1 => format!(
                            "it is the first entry but its prev_hash is not the genesis hash ({})",
                            missing(1, seq - 1)
                        ),
                        None => "it is the first entry but its prev_hash is not the genesis hash".to_string(),
                    };
                    return Ok(AuditCheck { entries, first_broken: Some((seq, why)) });
                }
                let fields = (&entry.prev_hash, entry.seq, entry.at_ms, &entry.actor, &entry.action, &entry.target);
                let hash = if seq <= legacy {
                    legacy_entry_hash(fields.0, fields.1, fields.2, fields.3, fields.4, fields.5, &detail_text)
                } else {
                    entry_hash(
                        &self.audit_key,
                        fields.0,
                        fields.1,
                        fields.2,
                        fields.3,
                        fields.4,
                        fields.5,
                        &detail_text,
                    )
                };
                if !same_hash(&hash, &entry.hash) {
                    return Ok(AuditCheck {
                        entries,
                        first_broken: Some((
                            seq,
                            "its hash does not match its contents under the audit key (edited, or written without the key)"
                                .to_string(),
                        )),
                    });
                }
                if seq != expected_seq {
                    return Ok(AuditCheck {
                        entries,
                        first_broken: Some((seq, format!("it should be entry {expected_seq} (renumbered)"))),
                    });
                }
                prev = Some((seq, entry.hash));
            }
        }
    }
}

fn missing(from: i64, to: i64) -> String {
    if from == to { format!("entry {from} is missing") } else { format!("entries {from} to {to} are missing") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let v: Value = serde_json::from_str(r#"{"b":1,"a":{"d":[{"z":1,"y":"\"q\""}],"c":null}}"#).unwrap();
        assert_eq!(canonical_json(&v), r#"{"a":{"c":null,"d":[{"y":"\"q\"","z":1}]},"b":1}"#);
    }

    fn key(b: u8) -> AuditKey {
        AuditKey::new(&[b; 32]).unwrap()
    }

    #[test]
    fn a_hash_covers_every_field() {
        let k = key(1);
        let base = entry_hash(&k, GENESIS_HASH, 1, 10, "alice", "hold", "inc-1", "{}");
        assert_eq!(base.len(), 64);
        assert_ne!(base, entry_hash(&k, GENESIS_HASH, 2, 10, "alice", "hold", "inc-1", "{}"));
        assert_ne!(base, entry_hash(&k, GENESIS_HASH, 1, 11, "alice", "hold", "inc-1", "{}"));
        assert_ne!(base, entry_hash(&k, GENESIS_HASH, 1, 10, "bob", "hold", "inc-1", "{}"));
        assert_ne!(base, entry_hash(&k, GENESIS_HASH, 1, 10, "alice", "release", "inc-1", "{}"));
        assert_ne!(base, entry_hash(&k, GENESIS_HASH, 1, 10, "alice", "hold", "inc-2", "{}"));
        assert_ne!(base, entry_hash(&k, GENESIS_HASH, 1, 10, "alice", "hold", "inc-1", "{\"a\":1}"));
        assert_ne!(base, entry_hash(&k, &base, 1, 10, "alice", "hold", "inc-1", "{}"));
        // Field boundaries are not ambiguous.
        assert_ne!(
            entry_hash(&k, GENESIS_HASH, 1, 10, "ab", "c", "t", "{}"),
            entry_hash(&k, GENESIS_HASH, 1, 10, "a", "bc", "t", "{}")
        );
    }

    #[test]
    fn the_hash_is_keyed() {
        let plain = legacy_entry_hash(GENESIS_HASH, 1, 10, "alice", "hold", "inc-1", "{}");
        let a = entry_hash(&key(1), GENESIS_HASH, 1, 10, "alice", "hold", "inc-1", "{}");
        let b = entry_hash(&key(2), GENESIS_HASH, 1, 10, "alice", "hold", "inc-1", "{}");
        assert_ne!(a, plain, "not plain SHA-256");
        assert_ne!(a, b, "another key, another hash");
        assert!(AuditKey::new(&[7; 31]).unwrap_err().contains("at least 32"));
        assert_eq!(format!("{:?}", key(9)), "AuditKey(..)", "the key never shows");
    }
}
