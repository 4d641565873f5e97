//! The schema, as an ordered list of migrations. Each runs once, in order, inside the
//! one transaction that also records it in `schema_migrations`; a store whose newest
//! recorded version is beyond this list is refused ([`StoreError::SchemaTooNew`]).
//!
//! The SQL is written once for both backends: only `TEXT` and `BIGINT` columns (times are
//! unix milliseconds, flags 0/1, JSON as text), `PRIMARY KEY`/`REFERENCES`, plain
//! indexes. Never edit a migration that has shipped: add the next one.

use super::error::{StoreError, query};
use super::{Backend, begin};
use sqlx::{AnyPool, Row};

/// One step of the schema.
#[derive(Debug)]
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every migration this build knows, oldest first; versions are 1, 2, 3, ...
pub const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "initial", sql: V1_INITIAL },
    Migration { version: 2, name: "audit_keyed", sql: V2_AUDIT_KEYED },
    Migration { version: 3, name: "stream_events", sql: V3_STREAM_EVENTS },
    Migration { version: 4, name: "false_positive_proposals", sql: V4_FP_PROPOSALS },
    Migration { version: 5, name: "local_time", sql: V5_LOCAL_TIME },
    Migration { version: 6, name: "assignee", sql: V6_ASSIGNEE },
];

/// The version from which the audit chain is keyed: applying it seals the plain SHA-256
/// entries written before, in the same transaction ([`super::audit::seal_legacy`]).
pub const AUDIT_KEYED_VERSION: i64 = 2;

/// The schema version this build writes.
pub fn latest_version() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Postgres advisory-lock key under which replicas migrate one at a time ("vigil-mi").
const PG_MIGRATION_LOCK: i64 = 0x7669_6769_6c2d_6d69;

const V1_INITIAL: &str = r#"
CREATE TABLE incidents (
    id TEXT PRIMARY KEY,
    stream_id TEXT NOT NULL,
    account_id TEXT,
    session_id TEXT,
    worker_id TEXT NOT NULL,
    decision TEXT NOT NULL,
    rule TEXT NOT NULL,
    decision_ms BIGINT NOT NULL,
    detected_ms BIGINT NOT NULL,
    state TEXT NOT NULL,
    interrupt_state TEXT NOT NULL,
    interrupt_issued_ms BIGINT,
    outcome_at_ms BIGINT,
    cut_ms BIGINT,
    stream_closed_ms BIGINT,
    holder TEXT,
    hold_until_ms BIGINT,
    acknowledged_ms BIGINT,
    acknowledged_by TEXT,
    escalated_ms BIGINT,
    escalated_by TEXT,
    escalation_note TEXT,
    resolved_ms BIGINT,
    resolved_by TEXT,
    resolution TEXT,
    resolution_note TEXT
);
CREATE INDEX incidents_by_state ON incidents (state, detected_ms);
CREATE INDEX incidents_by_detection ON incidents (detected_ms);

CREATE TABLE alert_events (
    message_id TEXT PRIMARY KEY,
    incident_id TEXT NOT NULL,
    event TEXT NOT NULL,
    emitted_ms BIGINT NOT NULL,
    received_ms BIGINT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX alert_events_by_incident ON alert_events (incident_id, emitted_ms);

CREATE TABLE commands (
    command_id TEXT PRIMARY KEY,
    incident_id TEXT NOT NULL,
    issued_by TEXT NOT NULL,
    issued_ms BIGINT NOT NULL,
    received_ms BIGINT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX commands_by_incident ON commands (incident_id);

CREATE TABLE outcomes (
    message_id TEXT PRIMARY KEY,
    command_id TEXT NOT NULL,
    outcome TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    at_ms BIGINT NOT NULL,
    received_ms BIGINT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX outcomes_by_command ON outcomes (command_id, at_ms);

CREATE TABLE allow_entries (
    id TEXT PRIMARY KEY,
    incident_id TEXT NOT NULL REFERENCES incidents (id),
    scope_kind TEXT NOT NULL,
    scope TEXT NOT NULL,
    hashes TEXT NOT NULL,
    note TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL,
    published_ms BIGINT
);
CREATE INDEX allow_entries_by_incident ON allow_entries (incident_id);

CREATE TABLE outbox (
    id TEXT PRIMARY KEY,
    channel TEXT NOT NULL,
    action TEXT NOT NULL,
    subject TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    next_attempt_ms BIGINT NOT NULL,
    last_error TEXT,
    created_ms BIGINT NOT NULL,
    delivered_ms BIGINT
);
CREATE INDEX outbox_due ON outbox (delivered_ms, next_attempt_ms);

CREATE TABLE users (
    name TEXT PRIMARY KEY,
    password_hash TEXT,
    role TEXT NOT NULL,
    disabled BIGINT NOT NULL
);

CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY,
    user_name TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    csrf_token TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL
);
CREATE INDEX sessions_by_user ON sessions (user_name);

CREATE TABLE audit_log (
    seq BIGINT PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX audit_log_by_target ON audit_log (target, seq);
"#;

/// The audit chain becomes keyed (HMAC-SHA256, the key outside the store); the entries
/// before are sealed by a keyed entry in code. Views are folded per user and incident, which
/// this index finds.
const V2_AUDIT_KEYED: &str = r#"
CREATE INDEX audit_log_views ON audit_log (target, action, actor, at_ms);
"#;

/// The workers' stream lifecycle events (`vigil.stream` records on the actions topic):
/// whether a stream is live, when it was cut or ended, when its publisher came back; and
/// an incident's origin when it is not a live stream (`file_scan`).
const V3_STREAM_EVENTS: &str = r#"
CREATE TABLE stream_events (
    stream_id TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    event TEXT NOT NULL,
    worker_id TEXT NOT NULL,
    detail TEXT,
    reason TEXT,
    received_ms BIGINT NOT NULL,
    PRIMARY KEY (stream_id, at_ms, event, worker_id)
);
CREATE INDEX stream_events_by_stream ON stream_events (stream_id, at_ms);
ALTER TABLE incidents ADD COLUMN origin TEXT;
"#;

/// False positives on interrupt-level incidents waiting for a second reviewer (four
/// eyes): one per incident, removed when approved or rejected.
const V4_FP_PROPOSALS: &str = r#"
CREATE TABLE fp_proposals (
    incident_id TEXT PRIMARY KEY REFERENCES incidents (id),
    proposed_by TEXT NOT NULL,
    scope TEXT NOT NULL,
    note TEXT NOT NULL,
    expiry_days BIGINT NOT NULL,
    proposed_ms BIGINT NOT NULL
);
"#;

/// Each account's choice of times in UTC (0, the default) or the browser's local time.
const V5_LOCAL_TIME: &str = r#"
ALTER TABLE users ADD COLUMN local_time BIGINT NOT NULL DEFAULT 0;
"#;

/// Whose incident it is: assigned, or handed over, to a reviewer.
const V6_ASSIGNEE: &str = r#"
ALTER TABLE incidents ADD COLUMN assignee TEXT;
"#;

/// Brings the store up to [`latest_version`], in one transaction, one replica at a time;
/// returns the version it is at.
pub(crate) async fn migrate(
    pool: &AnyPool,
    backend: Backend,
    now_ms: i64,
    audit_key: &super::AuditKey,
) -> Result<i64, StoreError> {
    let mut tx = begin(pool, backend).await?;
    if backend == Backend::Postgres {
        // Two replicas starting together: the second waits here, then finds the work done.
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(PG_MIGRATION_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(query("schema_migrations: lock"))?;
    }
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS schema_migrations (\
         version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_ms BIGINT NOT NULL)",
    )
    .execute(&mut *tx)
    .await
    .map_err(query("schema_migrations: create"))?;

    let rows = sqlx::query("SELECT version, name FROM schema_migrations ORDER BY version")
        .fetch_all(&mut *tx)
        .await
        .map_err(query("schema_migrations: read"))?;
    let mut current = 0;
    for row in &rows {
        let version: i64 = row.try_get("version").map_err(query("schema_migrations: read version"))?;
        let name: String = row.try_get("name").map_err(query("schema_migrations: read name"))?;
        if version > latest_version() {
            return Err(StoreError::SchemaTooNew { found: version, known: latest_version() });
        }
        match MIGRATIONS.iter().find(|m| m.version == version) {
            Some(m) if m.name == name => {}
            Some(m) => {
                return Err(StoreError::Migrate(format!(
                    "the store's migration {version} is named {name:?} but this build's is {:?}: \
                     the store was migrated by a different line of builds",
                    m.name
                )));
            }
            None => return Err(StoreError::Migrate(format!("the store's migration {version} ({name:?}) is unknown"))),
        }
        current = current.max(version);
    }
    if rows.len() as i64 != current {
        return Err(StoreError::Migrate(format!(
            "the store records {} migrations up to version {current}: some are missing",
            rows.len()
        )));
    }

    let applied = current;
    for m in MIGRATIONS.iter().filter(|m| m.version > applied) {
        sqlx::raw_sql(m.sql)
            .execute(&mut *tx)
            .await
            .map_err(|source| StoreError::Migrate(format!("migration {} ({}) failed: {source}", m.version, m.name)))?;
        sqlx::query("INSERT INTO schema_migrations (version, name, applied_ms) VALUES ($1, $2, $3)")
            .bind(m.version)
            .bind(m.name)
            .bind(now_ms)
            .execute(&mut *tx)
            .await
            .map_err(query("schema_migrations: record"))?;
        if m.version == AUDIT_KEYED_VERSION {
            super::audit::seal_legacy(&mut tx, backend, audit_key, now_ms).await?;
        }
        current = m.version;
    }
    tx.commit().await.map_err(query("schema_migrations: commit"))?;
    Ok(current)
}

#[cfg(test)]
mod tests {
    use super::MIGRATIONS;

    #[test]
    fn versions_run_one_two_three() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i64 + 1, "migration {} is out of sequence", m.name);
        }
    }
}
