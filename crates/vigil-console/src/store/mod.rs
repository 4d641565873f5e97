//! The console's data layer: one set of SQL over SQLite (the embedded default, a file,
//! one console) and PostgreSQL 15 (shared by several console replicas), through
//! `sqlx::AnyPool`. Times are unix milliseconds (`BIGINT`) everywhere; no pixels are
//! stored, only what alerts carry (hashes, scores, times).
//!
//! # Tables (see [`migrations`])
//! - `incidents`: one row per alert id, the review state (`open` → `acknowledged` →
//!   `escalated` → `resolved`), the review lock (`holder`, `hold_until_ms`), and what
//!   became of the interrupt (`interrupt_state`, `interrupt_issued_ms`, `cut_ms`). The
//!   queue, the incident page and the daily medians read it.
//! - `alert_events`, `commands`, `outcomes`: every message intake applied, with its full
//!   JSON, for the incident's timeline. Their primary keys are the message ids, so a
//!   second delivery is refused by the key and changes nothing ([`Applied::Duplicate`]):
//!   - alert: `{alert_id}/{event}`;
//!   - interrupt command: `{command_id}`;
//!   - action outcome: `{command_id}/{outcome}/{attempts}/{at_unix_ms}`.
//!
//!   Order does not matter: any of them creates the incident it needs (an escalation or
//!   a command before the `opened` alert), and an outcome for a command not yet seen is
//!   kept and applied when the command arrives.
//! - `allow_entries`: reviewer-made allow-list entries (PDQ hashes) waiting to be
//!   published to the banks.
//! - `outbox`: pages to send, durable, retried with backoff until delivered; ids make
//!   enqueueing idempotent.
//! - `users`, `sessions`: console accounts (argon2id hashes made by the caller) and
//!   sessions (by token hash).
//! - `audit_log`: append-only, chained with a keyed MAC. Entry `seq` (1, 2, 3, ...) stores
//!   `hash = hmac_sha256(key, prev_hash ‖ "\n" ‖ canonical(seq, at_ms, actor, action, target, detail))`
//!   with the first `prev_hash` 64 zeros and the key held outside the store ([`audit`],
//!   [`AuditKey`]); [`Store::audit_verify`] names the first entry that was edited,
//!   removed, moved or re-hashed without the key. Appends are serialized (SQLite's
//!   `BEGIN IMMEDIATE`, a table lock on Postgres) so replicas never fork the chain.
//!   Views are folded, one entry per user per incident per hour ([`Store::audit_view`]).
//! - `schema_migrations(version, name, applied_ms)`.
//!
//! # Concurrency
//! Writes run in transactions; on SQLite they begin `IMMEDIATE` (one writer at a time,
//! waiting up to the busy timeout), on Postgres the incident row is read `FOR UPDATE`,
//! so two replicas applying messages or actions to one incident take turns.

mod accounts;
pub mod audit;
mod error;
mod incidents;
mod intake;
pub mod migrations;
mod outbox;
mod proposals;
mod search;

pub use audit::{AuditCheck, AuditEntry, AuditKey};
pub use error::StoreError;
pub use incidents::{civil_date as civil, days_from_civil};
pub use search::{QueueFilter, QueuePage, is_pdq_hash};

use crate::model::{IncidentState, InterruptState, Resolution, Role, UnixMs};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyConnection, AnyPool, Connection, Executor, Row, Transaction};
use std::path::Path;
use std::time::Duration;
use vigil_core::alert::{Alert, InterruptCommand};

/// How long a SQLite writer waits for another before giving up.
pub const SQLITE_BUSY_TIMEOUT_MS: u64 = 10_000;
/// Pool sizes: SQLite serializes writers anyway; Postgres is shared by replicas.
const SQLITE_MAX_CONNECTIONS: u32 = 4;
const POSTGRES_MAX_CONNECTIONS: u32 = 8;
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether a write did something or had been done before (same message id, same page id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    New,
    Duplicate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

/// The console's store. Cheap to clone (a pool handle).
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// Keys the audit chain; never stored.
    audit_key: AuditKey,
}

/// One incident as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incident {
    /// The alert id.
    pub id: String,
    pub stream_id: String,
    pub account_id: Option<String>,
    pub session_id: Option<String>,
    pub worker_id: String,
    /// `review` or `interrupt` (the latest alert event's).
    pub decision: String,
    pub rule: String,
    /// `file_scan` for an alert from `vigil scan --publish` (not a live stream: nothing to
    /// cut, nobody paged); `None` for a live stream.
    pub origin: Option<String>,
    /// The `opened` alert's emission time (the earliest event seen until it arrives).
    pub detected_ms: UnixMs,
    pub state: IncidentState,
    pub interrupt_state: InterruptState,
    /// The first interrupt command's issue time.
    pub interrupt_issued_ms: Option<UnixMs>,
    /// When the actuator confirmed the cut.
    pub cut_ms: Option<UnixMs>,
    /// When the worker closed the incident (the stream stopped matching or ended).
    pub stream_closed_ms: Option<UnixMs>,
    /// The review lock as stored: it may have expired, see [`Incident::holder_at`].
    pub holder: Option<String>,
    pub hold_until_ms: Option<UnixMs>,
    pub acknowledged_ms: Option<UnixMs>,
    pub acknowledged_by: Option<String>,
    pub escalated_ms: Option<UnixMs>,
    pub escalated_by: Option<String>,
    pub escalation_note: Option<String>,
    pub resolved_ms: Option<UnixMs>,
    pub resolved_by: Option<String>,
    pub resolution: Option<Resolution>,
    pub resolution_note: Option<String>,
    /// Whose incident it is (assigned, or handed over); the hold is separate.
    pub assignee: Option<String>,
}

impl Incident {
    /// Who holds the review lock at `now`, if the lock has not expired.
    pub fn holder_at(&self, now_ms: UnixMs) -> Option<&str> {
        match (&self.holder, self.hold_until_ms) {
            (Some(h), Some(until)) if until > now_ms => Some(h),
            _ => None,
        }
    }
}

/// One line of the review queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueRow {
    pub id: String,
    pub stream_id: String,
    pub account_id: Option<String>,
    pub decision: String,
    pub rule: String,
    /// `file_scan` for a scan's alert; `None` for a live stream.
    pub origin: Option<String>,
    pub state: IncidentState,
    pub detected_ms: UnixMs,
    pub age_ms: i64,
    /// `None` when nobody holds it or the lock has expired.
    pub holder: Option<String>,
    pub interrupt_state: InterruptState,
    /// When the console received the incident's latest interrupt command.
    pub last_command_ms: Option<UnixMs>,
    /// When the console last received a `seen` outcome (a worker pulling the stream read
    /// a command).
    pub seen_ms: Option<UnixMs>,
    pub assignee: Option<String>,
}

/// An alert event as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertRecord {
    pub alert: Alert,
    pub received_ms: UnixMs,
}

/// An interrupt command as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRecord {
    pub command: InterruptCommand,
    /// `worker:{id}` for the worker's own command, the user's name for a console cut.
    pub issued_by: String,
    pub received_ms: UnixMs,
}

/// An action outcome as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutcomeRecord {
    pub outcome: crate::model::ActionOutcome,
    pub received_ms: UnixMs,
}

/// Everything the incident page shows.
#[derive(Debug, Clone, PartialEq)]
pub struct IncidentDetail {
    pub incident: Incident,
    /// In emission order.
    pub alerts: Vec<AlertRecord>,
    /// In issue order.
    pub commands: Vec<CommandRecord>,
    /// Outcomes of this incident's commands, in the actuator's order.
    pub outcomes: Vec<OutcomeRecord>,
    pub allow_entries: Vec<AllowEntry>,
    /// Audit entries whose target is this incident, oldest first.
    pub audit: Vec<AuditEntry>,
}

impl IncidentDetail {
    /// When the console received the incident's latest interrupt command: a command
    /// nobody answered is "not found" counted from here (a late-arriving one included).
    pub fn last_command_ms(&self) -> Option<UnixMs> {
        self.commands.iter().map(|c| c.received_ms).max()
    }

    /// When the console last received a `seen` outcome for one of its commands.
    pub fn seen_ms(&self) -> Option<UnixMs> {
        self.outcomes.iter().filter(|o| o.outcome.outcome == "seen").map(|o| o.received_ms).max()
    }
}

/// Per UTC day of detection: how many incidents, and the median time from detection to
/// each step (`None` when no incident of the day has reached it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DailyMedians {
    /// `YYYY-MM-DD`.
    pub day: String,
    pub day_start_ms: UnixMs,
    pub incidents: i64,
    /// To the first human action (acknowledge, escalate or resolve).
    pub to_acknowledge_ms: Option<i64>,
    /// How many incidents that median is of.
    pub acknowledged: i64,
    /// To the confirmed cut, or to the command's issue when no cut was confirmed.
    pub to_interrupt_ms: Option<i64>,
    pub interrupted: i64,
    pub to_resolve_ms: Option<i64>,
    pub resolved: i64,
}

/// A reviewer's allow-list entry: these hashes are not abuse in this scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowEntry {
    pub id: String,
    pub incident_id: String,
    /// `bank` or `rule`.
    pub scope_kind: String,
    /// The bank's or the rule's name.
    pub scope: String,
    /// 64-hex PDQ hashes.
    pub hashes: Vec<String>,
    /// Why (required).
    pub note: String,
    pub created_by: String,
    pub created_ms: UnixMs,
    pub expires_ms: UnixMs,
    pub published_ms: Option<UnixMs>,
}

/// A console account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    /// An argon2id PHC string; `None` cannot log in with a password.
    pub password_hash: Option<String>,
    pub role: Role,
    pub disabled: bool,
}

/// A false positive proposed on an interrupt-level incident, waiting for a second
/// reviewer's approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FpProposal {
    pub incident_id: String,
    pub proposed_by: String,
    /// `bank:NAME` or `rule:NAME`.
    pub scope: String,
    pub note: String,
    pub expiry_days: i64,
    pub proposed_ms: UnixMs,
}

/// A live session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user: String,
    pub role: Role,
    pub csrf_token: String,
    pub expires_ms: UnixMs,
    /// Its pages show times in the browser's local time (else UTC).
    pub local_time: bool,
}

/// Starts a write transaction: `BEGIN IMMEDIATE` on SQLite (take the write lock now,
/// waiting up to the busy timeout, rather than fail on upgrade later), `BEGIN` on Postgres.
pub(crate) async fn begin(pool: &AnyPool, backend: Backend) -> Result<Transaction<'static, Any>, StoreError> {
    match backend {
        Backend::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await,
        Backend::Postgres => pool.begin().await,
    }
    .map_err(error::query("begin transaction"))
}

impl Store {
    /// Opens (and migrates) the store at `url`: `sqlite:///abs/path/console.db` (the file
    /// and its folder are created when missing, the folder 0700 and the files 0600 since
    /// they hold password hashes; WAL, foreign keys on, a busy timeout) or
    /// `postgres://user:password@host/db`. `audit_key` keys the audit chain.
    pub async fn open(url: &str, audit_key: AuditKey) -> Result<Store, StoreError> {
        Self::open_with(url, audit_key, true).await
    }

    /// Opens a store that exists, creating nothing: a SQLite file must be there, and a
    /// PostgreSQL database must hold a console store already ([`StoreError::Missing`]
    /// otherwise). It is migrated like [`Store::open`].
    pub async fn open_existing(url: &str, audit_key: AuditKey) -> Result<Store, StoreError> {
        Self::open_with(url, audit_key, false).await
    }

    async fn open_with(url: &str, audit_key: AuditKey, create: bool) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let (backend, connect_url) = if url.starts_with("sqlite:") {
            (Backend::Sqlite, sqlite_url(url, create)?)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Backend::Postgres, url.to_string())
        } else {
            return Err(StoreError::Invalid(format!(
                "store URL {}: expected sqlite:///path/to/console.db or postgres://...",
                error::redact_url(url)
            )));
        };
        let connect_err = |source| StoreError::Connect { url: error::redact_url(url), source };
        let pool = match backend {
            Backend::Sqlite => {
                let pool = AnyPoolOptions::new()
                    .max_connections(SQLITE_MAX_CONNECTIONS)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            conn.execute(format!("PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}").as_str()).await?;
                            conn.execute("PRAGMA foreign_keys = ON").await?;
                            Ok(())
                        })
                    })
                    .connect(&connect_url)
                    .await
                    .map_err(connect_err)?;
                // WAL is a property of the file (readers never wait for the writer): set
                // outside any transaction; a no-op when it already is. Switching needs the
                // file to itself and SQLite does not wait for that (no busy handler), so a
                // second store opening the same new file at once retries here.
                let deadline = std::time::Instant::now() + Duration::from_millis(SQLITE_BUSY_TIMEOUT_MS);
                loop {
                    match sqlx::query("PRAGMA journal_mode = WAL").execute(&pool).await {
                        Ok(_) => break,
                        Err(e) if is_sqlite_busy(&e) && std::time::Instant::now() < deadline => {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Err(e) => return Err(connect_err(e)),
                    }
                }
                // SQLite gives the -wal and -shm files the database file's mode; make
                // sure whatever the umask was when they appeared.
                if let Some(path) = sqlite_path(url) {
                    private_db_files(Path::new(path))?;
                }
                pool
            }
            Backend::Postgres => {
                // One direct connection first, so that an unreachable server or a refused
                // login fails now with its cause (the pool would retry it until its
                // acquire timeout and then report only that).
                let direct = tokio::time::timeout(ACQUIRE_TIMEOUT, AnyConnection::connect(&connect_url))
                    .await
                    .unwrap_or_else(|_| {
                        Err(sqlx::Error::Io(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!("no answer in {} s", ACQUIRE_TIMEOUT.as_secs()),
                        )))
                    })
                    .map_err(connect_err)?;
                let _ = direct.close().await;
                AnyPoolOptions::new()
                    .max_connections(POSTGRES_MAX_CONNECTIONS)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect(&connect_url)
                    .await
                    .map_err(connect_err)?
            }
        };
        if !create && backend == Backend::Postgres {
            let found = sqlx::query("SELECT COUNT(*) AS n FROM schema_migrations").fetch_one(&pool).await;
            if !found.is_ok_and(|r| r.int("n").is_ok_and(|n| n > 0)) {
                pool.close().await;
                return Err(StoreError::Missing(format!(
                    "{} holds no console store (no schema_migrations)",
                    error::redact_url(url)
                )));
            }
        }
        migrations::migrate(&pool, backend, crate::model::now_ms(), &audit_key).await?;
        Ok(Store { pool, backend, audit_key })
    }

    /// `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    /// The newest migration applied to the store.
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations")
            .fetch_one(&self.pool)
            .await
            .map_err(error::query("schema_migrations: read version"))?;
        row.int("v")
    }

    /// A round trip to the database (readiness).
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map_err(error::query("ping"))?;
        Ok(())
    }

    /// Closes every connection (waits for those in use).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn begin(&self) -> Result<Transaction<'static, Any>, StoreError> {
        begin(&self.pool, self.backend).await
    }

    /// ` FOR UPDATE` on Postgres (row lock for the transaction); nothing on SQLite, where
    /// `BEGIN IMMEDIATE` already holds the only write lock.
    fn for_update(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE",
        }
    }
}

/// The file path of a `sqlite:` URL (`None` for `:memory:`).
fn sqlite_path(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")).unwrap_or(url);
    let path = rest.split_once('?').map_or(rest, |(p, _)| p);
    (!path.is_empty() && path != ":memory:").then_some(path)
}

/// `sqlite:///abs/path.db` with `mode=rwc` added (create when missing), the folder made
/// 0700 and the file created 0600 before SQLite opens it. Without `create`, the file
/// must exist and is opened `mode=rw`.
fn sqlite_url(url: &str, create: bool) -> Result<String, StoreError> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")).unwrap_or(url);
    let params = rest.split_once('?').map(|(_, q)| q);
    if rest.split('?').next().unwrap_or("").is_empty() {
        return Err(StoreError::Invalid(format!("store URL {url}: no file path")));
    }
    if let Some(path) = sqlite_path(url).map(Path::new) {
        if !create {
            if !path.is_file() {
                return Err(StoreError::Missing(format!("there is no console store at {}", path.display())));
            }
        } else {
            if let Some(dir) = path.parent()
                && !dir.as_os_str().is_empty()
            {
                private_dir(dir)
                    .map_err(|e| StoreError::Invalid(format!("store URL {url}: the folder {}: {e}", dir.display())))?;
            }
            private_file(path)
                .map_err(|e| StoreError::Invalid(format!("store URL {url}: the file {}: {e}", path.display())))?;
        }
    }
    let mode = if create { "rwc" } else { "rw" };
    Ok(match params {
        Some(q) if q.split('&').any(|kv| kv.starts_with("mode=")) => url.to_string(),
        Some(_) => format!("{url}&mode={mode}"),
        None => format!("{url}?mode={mode}"),
    })
}

/// Creates `dir` (and its missing parents) 0700, or takes group and other access away
/// from it when it exists. A folder this user may not change (a volume's mount point
/// owned by root) is left as it is, with a warning: the files in it are 0600 anyway.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let mode = std::fs::metadata(dir)?.permissions().mode();
    if mode & 0o077 != 0 {
        match std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode & 0o700)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                tracing::warn!(folder = %dir.display(), mode = format!("{:o}", mode & 0o777), "cannot make the store's folder 0700: {e}");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Creates `path` empty with mode 0600 (whatever the umask), or makes it 0600 when it
/// exists.
fn private_file(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(f) => f.set_permissions(std::fs::Permissions::from_mode(0o600)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        }
        Err(e) => Err(e),
    }
}

/// The database file and its `-wal` and `-shm` companions (those present), 0600.
fn private_db_files(db: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    for suffix in ["", "-wal", "-shm"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        match std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(StoreError::Invalid(format!("cannot make {} private: {e}", Path::new(&p).display())));
            }
        }
    }
    Ok(())
}

/// SQLITE_BUSY or SQLITE_LOCKED, extended codes included.
fn is_sqlite_busy(e: &sqlx::Error) -> bool {
    let code = e.as_database_error().and_then(|d| d.code()).and_then(|c| c.parse::<i64>().ok());
    code.is_some_and(|c| matches!(c & 0xff, 5 | 6))
}

/// Saturating u64 → i64 for the unsigned times in messages.
pub(crate) fn ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The columns of `incidents` that [`incident_from_row`] reads.
pub(crate) const INCIDENT_COLUMNS: &str = "id, stream_id, account_id, session_id, worker_id, decision, rule, \
    detected_ms, state, interrupt_state, interrupt_issued_ms, cut_ms, stream_closed_ms, holder, hold_until_ms, \
    acknowledged_ms, acknowledged_by, escalated_ms, escalated_by, escalation_note, resolved_ms, resolved_by, \
    resolution, resolution_note, origin, assignee";

pub(crate) fn incident_from_row(row: &AnyRow) -> Result<Incident, StoreError> {
    let id = row.text("id")?;
    let bad = |what: &str, v: &str| StoreError::Corrupt(format!("incident {id}: unknown {what} {v:?}"));
    let state = row.text("state")?;
    let interrupt = row.text("interrupt_state")?;
    let resolution = match row.opt_text("resolution")? {
        None => None,
        Some(r) => Some(Resolution::parse(&r).ok_or_else(|| bad("resolution", &r))?),
    };
    Ok(Incident {
        state: IncidentState::parse(&state).ok_or_else(|| bad("state", &state))?,
        interrupt_state: InterruptState::parse(&interrupt).ok_or_else(|| bad("interrupt state", &interrupt))?,
        resolution,
        stream_id: row.text("stream_id")?,
        account_id: row.opt_text("account_id")?,
        session_id: row.opt_text("session_id")?,
        worker_id: row.text("worker_id")?,
        decision: row.text("decision")?,
        rule: row.text("rule")?,
        origin: row.opt_text("origin")?,
        detected_ms: row.int("detected_ms")?,
        interrupt_issued_ms: row.opt_int("interrupt_issued_ms")?,
        cut_ms: row.opt_int("cut_ms")?,
        stream_closed_ms: row.opt_int("stream_closed_ms")?,
        holder: row.opt_text("holder")?,
        hold_until_ms: row.opt_int("hold_until_ms")?,
        acknowledged_ms: row.opt_int("acknowledged_ms")?,
        acknowledged_by: row.opt_text("acknowledged_by")?,
        escalated_ms: row.opt_int("escalated_ms")?,
        escalated_by: row.opt_text("escalated_by")?,
        escalation_note: row.opt_text("escalation_note")?,
        resolved_ms: row.opt_int("resolved_ms")?,
        resolved_by: row.opt_text("resolved_by")?,
        resolution_note: row.opt_text("resolution_note")?,
        assignee: row.opt_text("assignee")?,
        id,
    })
}

/// Typed column reads that fail as [`StoreError::Corrupt`] naming the column.
pub(crate) trait RowExt {
    fn text(&self, col: &str) -> Result<String, StoreError>;
    fn opt_text(&self, col: &str) -> Result<Option<String>, StoreError>;
    fn int(&self, col: &str) -> Result<i64, StoreError>;
    fn opt_int(&self, col: &str) -> Result<Option<i64>, StoreError>;
}

impl RowExt for AnyRow {
    fn text(&self, col: &str) -> Result<String, StoreError> {
        self.try_get(col).map_err(|e| StoreError::Corrupt(format!("column {col}: {e}")))
    }
    fn opt_text(&self, col: &str) -> Result<Option<String>, StoreError> {
        self.try_get(col).map_err(|e| StoreError::Corrupt(format!("column {col}: {e}")))
    }
    fn int(&self, col: &str) -> Result<i64, StoreError> {
        self.try_get(col).map_err(|e| StoreError::Corrupt(format!("column {col}: {e}")))
    }
    fn opt_int(&self, col: &str) -> Result<Option<i64>, StoreError> {
        self.try_get(col).map_err(|e| StoreError::Corrupt(format!("column {col}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::{AuditKey, Store, StoreError, sqlite_url};
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn sqlite_urls_create_the_file() {
        let dir = std::env::temp_dir().join(format!("vigil-store-url-{}", std::process::id()));
        let url = format!("sqlite://{}/sub/console.db", dir.display());
        assert_eq!(sqlite_url(&url, true).unwrap(), format!("{url}?mode=rwc"));
        assert!(dir.join("sub").is_dir());
        assert!(dir.join("sub/console.db").is_file());
        assert_eq!(sqlite_url(&format!("{url}?mode=ro"), true).unwrap(), format!("{url}?mode=ro"));
        assert_eq!(sqlite_url(&format!("{url}?cache=shared"), true).unwrap(), format!("{url}?cache=shared&mode=rwc"));
        assert_eq!(sqlite_url(&url, false).unwrap(), format!("{url}?mode=rw"), "an existing store opens rw");
        let missing = format!("sqlite://{}/other/console.db", dir.display());
        assert!(matches!(sqlite_url(&missing, false), Err(StoreError::Missing(_))));
        assert!(!dir.join("other").exists(), "opening an existing store creates nothing");
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn mode(p: &std::path::Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    /// Run in a child of the test binary under `umask 022`, since the umask is the
    /// process's and other tests run beside this one.
    #[test]
    fn the_store_and_its_folder_are_private_under_umask_022() {
        const CHILD: &str = "VIGIL_TEST_UMASK_CHILD";
        if std::env::var_os(CHILD).is_none() {
            let name = "store::tests::the_store_and_its_folder_are_private_under_umask_022";
            let out = std::process::Command::new("sh")
                .args(["-c", "umask 022 && exec \"$0\" --exact \"$1\" --nocapture --test-threads=1"])
                .arg(std::env::current_exe().unwrap())
                .arg(name)
                .env(CHILD, "1")
                .output()
                .unwrap();
            let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            assert!(out.status.success() && said.contains("1 passed"), "{said}");
            return;
        }
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        assert!(status.lines().any(|l| l.split_whitespace().eq(["Umask:", "0022"])), "{status}");
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state/console");
        let db = dir.join("console.db");
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
            let store =
                Store::open(&format!("sqlite://{}", db.display()), AuditKey::new(&[1; 32]).unwrap()).await.unwrap();
            store
                .upsert_user("alice", Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA"), crate::model::Role::Admin)
                .await
                .unwrap();
            // The WAL and its index exist while the store is open.
            for f in ["console.db", "console.db-wal", "console.db-shm"] {
                assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
            }
            store.close().await;
        });
        assert_eq!(mode(&dir), 0o700, "the state folder");
        // An existing folder and file made under a looser umask are tightened.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
        sqlite_url(&format!("sqlite://{}", db.display()), true).unwrap();
        assert_eq!((mode(&dir), mode(&db)), (0o700, 0o600));
    }
}
