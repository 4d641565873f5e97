//! The audit log: append-only and hash-chained, so that an edited, removed or reordered
//! entry is found by [`Store::audit_verify`].
//!
//! Entry `seq` (1, 2, 3, ... without gaps) stores
//! `hash = hex(sha256(prev_hash ‖ "\n" ‖ encoding))`, where `prev_hash` is the previous
//! entry's hash (64 zeros for the first) and `encoding` is the JSON array
//! `[seq, at_ms, actor, action, target, detail]` with `detail` as a string holding the
//! detail's canonical JSON (object keys sorted, no whitespace), which is also exactly the
//! text stored in the `detail` column. Appends are serialized: on SQLite by the
//! transaction's write lock (`BEGIN IMMEDIATE`), on Postgres by a table lock taken inside
//! the transaction, so two replicas never both extend the same entry.

use super::error::{StoreError, query};
use super::{Backend, RowExt, Store};
use crate::model::UnixMs;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::AnyConnection;
use sqlx::any::AnyRow;

/// The first entry's `prev_hash`.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Rows read per round trip by [`Store::audit_verify`].
const VERIFY_PAGE: i64 = 1000;

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

/// The hash of one entry given its predecessor's hash and its stored fields.
pub fn entry_hash(
    prev_hash: &str,
    seq: i64,
    at_ms: UnixMs,
    actor: &str,
    action: &str,
    target: &str,
    detail: &str,
) -> String {
    let encoding = serde_json::json!([seq, at_ms, actor, action, target, detail]).to_string();
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(b"\n");
    h.update(encoding.as_bytes());
    hex::encode(h.finalize())
}

/// Appends one entry on `conn`, which must be inside a write transaction (the caller's,
/// so that an action and its audit entry commit together). Returns the entry's seq.
pub(crate) async fn append(
    conn: &mut AnyConnection,
    backend: Backend,
    actor: &str,
    action: &str,
    target: &str,
    detail: &Value,
    now_ms: UnixMs,
) -> Result<i64, StoreError> {
    if backend == Backend::Postgres {
        // Self-conflicting, and still lets readers (verify, the incident page) read.
        sqlx::query("LOCK TABLE audit_log IN SHARE ROW EXCLUSIVE MODE")
            .execute(&mut *conn)
            .await
            .map_err(query("audit_log: lock"))?;
    }
    let last = sqlx::query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
        .fetch_optional(&mut *conn)
        .await
        .map_err(query("audit_log: read the last entry"))?;
    let (seq, prev_hash) = match last {
        Some(row) => (row.int("seq")? + 1, row.text("hash")?),
        None => (1, GENESIS_HASH.to_string()),
    };
    let detail = canonical_json(detail);
    let hash = entry_hash(&prev_hash, seq, now_ms, actor, action, target, &detail);
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

pub(crate) async fn entries_for_target(conn: &mut AnyConnection, target: &str) -> Result<Vec<AuditEntry>, StoreError> {
    let rows = sqlx::query(&format!("SELECT {AUDIT_COLUMNS} FROM audit_log WHERE target = $1 ORDER BY seq"))
        .bind(target)
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
        let seq = append(&mut tx, self.backend, actor, action, target, detail, now_ms).await?;
        tx.commit().await.map_err(query("audit_log: commit"))?;
        Ok(seq)
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

    /// Walks the whole chain from the first entry and names the first one that does not
    /// hold: a hash that does not match the entry's contents (edited), or a `prev_hash`
    /// that is not the hash of the entry before it (an entry removed, inserted or moved).
    /// Removing the newest entries cannot be seen from the chain alone: compare
    /// `entries` with a count kept elsewhere.
    pub async fn audit_verify(&self) -> Result<AuditCheck, StoreError> {
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
                let hash = entry_hash(
                    &entry.prev_hash,
                    entry.seq,
                    entry.at_ms,
                    &entry.actor,
                    &entry.action,
                    &entry.target,
                    &detail_text,
                );
                if hash != entry.hash {
                    return Ok(AuditCheck {
                        entries,
                        first_broken: Some((seq, "its hash does not match its contents (edited)".to_string())),
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

    #[test]
    fn a_hash_covers_every_field() {
        let base = entry_hash(GENESIS_HASH, 1, 10, "alice", "hold", "inc-1", "{}");
        assert_eq!(base.len(), 64);
        assert_ne!(base, entry_hash(GENESIS_HASH, 2, 10, "alice", "hold", "inc-1", "{}"));
        assert_ne!(base, entry_hash(GENESIS_HASH, 1, 11, "alice", "hold", "inc-1", "{}"));
        assert_ne!(base, entry_hash(GENESIS_HASH, 1, 10, "bob", "hold", "inc-1", "{}"));
        assert_ne!(base, entry_hash(GENESIS_HASH, 1, 10, "alice", "release", "inc-1", "{}"));
        assert_ne!(base, entry_hash(GENESIS_HASH, 1, 10, "alice", "hold", "inc-2", "{}"));
        assert_ne!(base, entry_hash(GENESIS_HASH, 1, 10, "alice", "hold", "inc-1", "{\"a\":1}"));
        assert_ne!(base, entry_hash(&base, 1, 10, "alice", "hold", "inc-1", "{}"));
        // Field boundaries are not ambiguous.
        assert_ne!(
            entry_hash(GENESIS_HASH, 1, 10, "ab", "c", "t", "{}"),
            entry_hash(GENESIS_HASH, 1, 10, "a", "bc", "t", "{}")
        );
    }
}
