//! The review side: the queue, the incident page, the daily medians, the review actions
//! (each with its audit entry, in the same transaction) and allow-list entries.

use super::audit::{self, AuditEntry};
use super::error::{StoreError, query};
use super::{
    AlertRecord, AllowEntry, Applied, CommandRecord, DailyMedians, INCIDENT_COLUMNS, Incident, IncidentDetail,
    OutcomeRecord, QueueRow, RowExt, Store, incident_from_row,
};
use crate::model::{IncidentState, InterruptState, Resolution, UnixMs};
use serde_json::json;
use sqlx::AnyConnection;
use sqlx::any::AnyRow;

const DAY_MS: i64 = 86_400_000;

/// The median of `v` (the mean of the two middle values, rounded down, for an even count).
pub(crate) fn median(mut v: Vec<i64>) -> Option<i64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { ((i128::from(v[n / 2 - 1]) + i128::from(v[n / 2])) / 2) as i64 })
}

/// `YYYY-MM-DD` of a day number since 1970-01-01 (proleptic Gregorian, UTC).
/// What a queue row is read from.
pub(super) const QUEUE_COLUMNS: &str = "id, stream_id, account_id, decision, rule, origin, state, detected_ms, holder, assignee, \
     hold_until_ms, interrupt_state, \
     (SELECT MAX(c.received_ms) FROM commands c WHERE c.incident_id = incidents.id) AS last_command_ms, \
     (SELECT MAX(o.received_ms) FROM outcomes o JOIN commands c ON o.command_id = c.command_id \
      WHERE c.incident_id = incidents.id AND o.outcome = 'seen') AS seen_ms";

pub(super) fn queue_row(row: &sqlx::any::AnyRow, now_ms: UnixMs) -> Result<QueueRow, StoreError> {
    let id = row.text("id")?;
    let state = row.text("state")?;
    let interrupt = row.text("interrupt_state")?;
    let detected_ms = row.int("detected_ms")?;
    let holder = match (row.opt_text("holder")?, row.opt_int("hold_until_ms")?) {
        (Some(h), Some(until)) if until > now_ms => Some(h),
        _ => None,
    };
    Ok(QueueRow {
        state: IncidentState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("incident {id}: state {state:?}")))?,
        interrupt_state: InterruptState::parse(&interrupt)
            .ok_or_else(|| StoreError::Corrupt(format!("incident {id}: interrupt state {interrupt:?}")))?,
        stream_id: row.text("stream_id")?,
        account_id: row.opt_text("account_id")?,
        decision: row.text("decision")?,
        rule: row.text("rule")?,
        origin: row.opt_text("origin")?,
        detected_ms,
        age_ms: now_ms.saturating_sub(detected_ms),
        holder,
        last_command_ms: row.opt_int("last_command_ms")?,
        seen_ms: row.opt_int("seen_ms")?,
        assignee: row.opt_text("assignee")?,
        id,
    })
}

/// Days since 1970-01-01 of a `YYYY-MM-DD` date; `None` for anything else.
pub fn days_from_civil(date: &str) -> Option<i64> {
    let mut parts = date.split('-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return None;
    }
    let (y, m, d): (i64, i64, i64) = (y.parse().ok()?, m.parse().ok()?, d.parse().ok()?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if !(1..=12).contains(&m) || d < 1 || d > month_days[(m - 1) as usize] {
        return None;
    }
    // Howard Hinnant's days-from-civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

pub fn civil_date(days: i64) -> String {
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

fn parse_json<T: serde::de::DeserializeOwned>(what: &str, text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}: stored JSON does not parse: {e}")))
}

const ALLOW_COLUMNS: &str =
    "id, incident_id, scope_kind, scope, hashes, note, created_by, created_ms, expires_ms, published_ms";

fn allow_from_row(row: &AnyRow) -> Result<AllowEntry, StoreError> {
    let id = row.text("id")?;
    Ok(AllowEntry {
        hashes: parse_json(&format!("allow entry {id}"), &row.text("hashes")?)?,
        incident_id: row.text("incident_id")?,
        scope_kind: row.text("scope_kind")?,
        scope: row.text("scope")?,
        note: row.text("note")?,
        created_by: row.text("created_by")?,
        created_ms: row.int("created_ms")?,
        expires_ms: row.int("expires_ms")?,
        published_ms: row.opt_int("published_ms")?,
        id,
    })
}

fn validate_allow(e: &AllowEntry) -> Result<(), StoreError> {
    let bad = |why: String| Err(StoreError::Invalid(format!("allow entry {:?}: {why}", e.id)));
    if e.id.is_empty() {
        return bad("empty id".into());
    }
    if !matches!(e.scope_kind.as_str(), "bank" | "rule") {
        return bad(format!("scope_kind {:?} (expected bank or rule)", e.scope_kind));
    }
    if e.scope.trim().is_empty() {
        return bad("empty scope".into());
    }
    if e.note.trim().is_empty() {
        return bad("a note saying why is required".into());
    }
    if e.created_by.is_empty() {
        return bad("empty created_by".into());
    }
    if e.hashes.is_empty() {
        return bad("no hashes".into());
    }
    if let Some(h) = e.hashes.iter().find(|h| h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit())) {
        return bad(format!("{h:?} is not a 64-hex PDQ hash"));
    }
    if e.expires_ms <= e.created_ms {
        return bad("it expires before it was created".into());
    }
    Ok(())
}

/// Why `user` may not act on `inc` at `now`, unless they hold its unexpired lock.
fn require_holder(inc: &Incident, user: &str, now_ms: UnixMs) -> Result<(), StoreError> {
    match inc.holder_at(now_ms) {
        Some(h) if h == user => Ok(()),
        Some(h) => Err(StoreError::Conflict(format!(
            "incident {} is held by {h} until {} (unix ms): only they can act on it now",
            inc.id,
            inc.hold_until_ms.unwrap_or_default()
        ))),
        None => Err(StoreError::Conflict(format!("incident {}: {user} must hold it first (nobody holds it)", inc.id))),
    }
}

fn refuse_resolved(inc: &Incident, what: &str) -> Result<(), StoreError> {
    if inc.state == IncidentState::Resolved {
        return Err(StoreError::Conflict(format!(
            "cannot {what} incident {}: already resolved as {} by {} at {} (unix ms)",
            inc.id,
            inc.resolution.map_or("?", Resolution::as_str),
            inc.resolved_by.as_deref().unwrap_or("?"),
            inc.resolved_ms.unwrap_or_default()
        )));
    }
    Ok(())
}

impl Store {
    /// The incident, with its row locked for this transaction on Postgres.
    async fn lock_incident(&self, conn: &mut AnyConnection, id: &str) -> Result<Incident, StoreError> {
        let row = sqlx::query(&format!("SELECT {INCIDENT_COLUMNS} FROM incidents WHERE id = $1{}", self.for_update()))
            .bind(id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(query("incidents: read"))?
            .ok_or_else(|| StoreError::NotFound(format!("incident {id}")))?;
        incident_from_row(&row)
    }

    /// Every unresolved incident, oldest detection first.
    pub async fn queue(&self, now_ms: UnixMs) -> Result<Vec<QueueRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {QUEUE_COLUMNS} FROM incidents WHERE state <> 'resolved' ORDER BY detected_ms, id"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(query("incidents: read the queue"))?;
        rows.iter().map(|row| queue_row(row, now_ms)).collect()
    }

    /// The incident and everything about it, or `None` when there is no such incident.
    pub async fn incident(&self, id: &str) -> Result<Option<IncidentDetail>, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(query("incident: acquire a connection"))?;
        let Some(row) = sqlx::query(&format!("SELECT {INCIDENT_COLUMNS} FROM incidents WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(query("incidents: read"))?
        else {
            return Ok(None);
        };
        let incident = incident_from_row(&row)?;

        let alerts = sqlx::query(
            "SELECT message_id, body, received_ms FROM alert_events WHERE incident_id = $1 \
             ORDER BY emitted_ms, received_ms, message_id",
        )
        .bind(id)
        .fetch_all(&mut *conn)
        .await
        .map_err(query("alert_events: read"))?
        .iter()
        .map(|r| {
            Ok(AlertRecord {
                alert: parse_json(&format!("alert {}", r.text("message_id")?), &r.text("body")?)?,
                received_ms: r.int("received_ms")?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;

        let commands = sqlx::query(
            "SELECT command_id, issued_by, body, received_ms FROM commands WHERE incident_id = $1 \
             ORDER BY issued_ms, command_id",
        )
        .bind(id)
        .fetch_all(&mut *conn)
        .await
        .map_err(query("commands: read"))?
        .iter()
        .map(|r| {
            Ok(CommandRecord {
                command: parse_json(&format!("command {}", r.text("command_id")?), &r.text("body")?)?,
                issued_by: r.text("issued_by")?,
                received_ms: r.int("received_ms")?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;

        let outcomes = sqlx::query(
            "SELECT o.message_id, o.body, o.received_ms FROM outcomes o \
             JOIN commands c ON c.command_id = o.command_id WHERE c.incident_id = $1 \
             ORDER BY o.at_ms, o.attempts, o.message_id",
        )
        .bind(id)
        .fetch_all(&mut *conn)
        .await
        .map_err(query("outcomes: read"))?
        .iter()
        .map(|r| {
            Ok(OutcomeRecord {
                outcome: parse_json(&format!("outcome {}", r.text("message_id")?), &r.text("body")?)?,
                received_ms: r.int("received_ms")?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;

        let allow_entries = sqlx::query(&format!(
            "SELECT {ALLOW_COLUMNS} FROM allow_entries WHERE incident_id = $1 ORDER BY created_ms, id"
        ))
        .bind(id)
        .fetch_all(&mut *conn)
        .await
        .map_err(query("allow_entries: read"))?
        .iter()
        .map(allow_from_row)
        .collect::<Result<Vec<_>, StoreError>>()?;

        let audit: Vec<AuditEntry> = audit::decisions_for_target(&mut conn, id).await?;
        Ok(Some(IncidentDetail { incident, alerts, commands, outcomes, allow_entries, audit }))
    }

    /// The longest-waiting incident nobody has acknowledged: its id and detection time.
    pub async fn oldest_unacknowledged(&self) -> Result<Option<(String, UnixMs)>, StoreError> {
        let row =
            sqlx::query("SELECT id, detected_ms FROM incidents WHERE state = 'open' ORDER BY detected_ms, id LIMIT 1")
                .fetch_optional(&self.pool)
                .await
                .map_err(query("incidents: oldest unacknowledged"))?;
        row.map(|r| Ok((r.text("id")?, r.int("detected_ms")?))).transpose()
    }

    /// Per UTC day of detection in `[from_ms, to_ms)` (oldest day first): the count and
    /// the median times from detection to acknowledgement, to the interrupt (its confirmed
    /// cut, else its command) and to resolution, each with how many incidents it is of.
    /// Live streams only: a file scan is not an incident anyone responded to. Medians are
    /// computed here, so both backends give the same numbers; the page, its CSV and JSON
    /// exports all come from here.
    pub async fn daily_medians(&self, from_ms: UnixMs, to_ms: UnixMs) -> Result<Vec<DailyMedians>, StoreError> {
        let rows = sqlx::query(
            "SELECT detected_ms, acknowledged_ms, interrupt_issued_ms, cut_ms, resolved_ms FROM incidents \
             WHERE detected_ms >= $1 AND detected_ms < $2 AND origin IS NULL ORDER BY detected_ms",
        )
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(&self.pool)
        .await
        .map_err(query("incidents: read for the daily medians"))?;
        struct Day {
            day: i64,
            count: i64,
            ack: Vec<i64>,
            interrupt: Vec<i64>,
            resolve: Vec<i64>,
        }
        let mut days: Vec<Day> = Vec::new();
        for row in &rows {
            let detected = row.int("detected_ms")?;
            let day = detected.div_euclid(DAY_MS);
            if days.last().is_none_or(|d| d.day != day) {
                days.push(Day { day, count: 0, ack: vec![], interrupt: vec![], resolve: vec![] });
            }
            let Some(d) = days.last_mut() else { continue };
            d.count += 1;
            if let Some(t) = row.opt_int("acknowledged_ms")? {
                d.ack.push(t - detected);
            }
            if let Some(t) = row.opt_int("cut_ms")?.or(row.opt_int("interrupt_issued_ms")?) {
                d.interrupt.push(t - detected);
            }
            if let Some(t) = row.opt_int("resolved_ms")? {
                d.resolve.push(t - detected);
            }
        }
        Ok(days
            .into_iter()
            .map(|d| DailyMedians {
                day: civil_date(d.day),
                day_start_ms: d.day * DAY_MS,
                incidents: d.count,
                acknowledged: d.ack.len() as i64,
                interrupted: d.interrupt.len() as i64,
                resolved: d.resolve.len() as i64,
                to_acknowledge_ms: median(d.ack),
                to_interrupt_ms: median(d.interrupt),
                to_resolve_ms: median(d.resolve),
            })
            .collect())
    }

    /// Takes or renews `user`'s review lock on the incident until `now + ttl`; returns
    /// that time. Conflict while another user's lock is unexpired, or once resolved.
    /// Taking is audited (`hold`), renewing is not.
    pub async fn hold(&self, id: &str, user: &str, now_ms: UnixMs, ttl_ms: i64) -> Result<UnixMs, StoreError> {
        if ttl_ms <= 0 {
            return Err(StoreError::Invalid(format!("hold of incident {id}: ttl {ttl_ms} ms")));
        }
        let mut tx = self.begin().await?;
        let inc = self.lock_incident(&mut tx, id).await?;
        refuse_resolved(&inc, "hold")?;
        let taking = match inc.holder_at(now_ms) {
            Some(h) if h != user => {
                return Err(StoreError::Conflict(format!(
                    "incident {id} is held by {h} until {} (unix ms)",
                    inc.hold_until_ms.unwrap_or_default()
                )));
            }
            Some(_) => false,
            None => true,
        };
        let until = now_ms.saturating_add(ttl_ms);
        sqlx::query("UPDATE incidents SET holder = $1, hold_until_ms = $2 WHERE id = $3")
            .bind(user)
            .bind(until)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(query("incidents: hold"))?;
        if taking {
            audit::append(
                &mut tx,
                self.backend,
                &self.audit_key,
                user,
                "hold",
                id,
                &json!({ "until_ms": until }),
                now_ms,
            )
            .await?;
        }
        tx.commit().await.map_err(query("incidents: commit a hold"))?;
        Ok(until)
    }

    /// Gives up `user`'s lock now (see [`Store::release_at`]).
    pub async fn release(&self, id: &str, user: &str) -> Result<(), StoreError> {
        self.release_at(id, user, crate::model::now_ms()).await
    }

    /// Gives up `user`'s lock (audited at `now`). Nothing to do when nobody holds it (or
    /// another user's lock has expired); Conflict while someone else holds it.
    pub async fn release_at(&self, id: &str, user: &str, now_ms: UnixMs) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        let inc = self.lock_incident(&mut tx, id).await?;
        match inc.holder.as_deref() {
            None => return Ok(()),
            Some(h) if h != user => {
                if inc.holder_at(now_ms).is_none() {
                    return Ok(());
                }
                return Err(StoreError::Conflict(format!("incident {id} is held by {h}, not {user}")));
            }
            Some(_) => {}
        }
        sqlx::query("UPDATE incidents SET holder = NULL, hold_until_ms = NULL WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(query("incidents: release"))?;
        audit::append(&mut tx, self.backend, &self.audit_key, user, "release", id, &json!({}), now_ms).await?;
        tx.commit().await.map_err(query("incidents: commit a release"))?;
        Ok(())
    }

    /// `open` → `acknowledged` by the lock holder. Already acknowledged or escalated:
    /// nothing to do ([`Applied::Duplicate`]).
    pub async fn acknowledge(&self, id: &str, user: &str, now_ms: UnixMs) -> Result<Applied, StoreError> {
        let mut tx = self.begin().await?;
        let inc = self.lock_incident(&mut tx, id).await?;
        refuse_resolved(&inc, "acknowledge")?;
        require_holder(&inc, user, now_ms)?;
        if inc.state != IncidentState::Open {
            return Ok(Applied::Duplicate);
        }
        sqlx::query(
            "UPDATE incidents SET state = 'acknowledged', acknowledged_ms = $1, acknowledged_by = $2 WHERE id = $3",
        )
        .bind(now_ms)
        .bind(user)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(query("incidents: acknowledge"))?;
        audit::append(&mut tx, self.backend, &self.audit_key, user, "acknowledge", id, &json!({}), now_ms).await?;
        tx.commit().await.map_err(query("incidents: commit an acknowledgement"))?;
        Ok(Applied::New)
    }

    /// `open`/`acknowledged` → `escalated` by the lock holder (an escalation also counts
    /// as the acknowledgement when there was none). Conflict when already escalated.
    pub async fn escalate(&self, id: &str, user: &str, note: &str, now_ms: UnixMs) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        let inc = self.lock_incident(&mut tx, id).await?;
        refuse_resolved(&inc, "escalate")?;
        require_holder(&inc, user, now_ms)?;
        if inc.state == IncidentState::Escalated {
            return Err(StoreError::Conflict(format!(
                "incident {id} was already escalated by {} at {} (unix ms)",
                inc.escalated_by.as_deref().unwrap_or("?"),
                inc.escalated_ms.unwrap_or_default()
            )));
        }
        sqlx::query(
            "UPDATE incidents SET state = 'escalated', escalated_ms = $1, escalated_by = $2, escalation_note = $3, \
             acknowledged_ms = COALESCE(acknowledged_ms, $1), acknowledged_by = COALESCE(acknowledged_by, $2) \
             WHERE id = $4",
        )
        .bind(now_ms)
        .bind(user)
        .bind(note)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(query("incidents: escalate"))?;
        audit::append(&mut tx, self.backend, &self.audit_key, user, "escalate", id, &json!({ "note": note }), now_ms)
            .await?;
        tx.commit().await.map_err(query("incidents: commit an escalation"))?;
        Ok(())
    }

    /// Any unresolved state → `resolved` by the lock holder, which releases the lock (and
    /// counts as the acknowledgement when there was none). Conflict when already resolved.
    pub async fn resolve(
        &self,
        id: &str,
        user: &str,
        resolution: Resolution,
        note: &str,
        now_ms: UnixMs,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        let inc = self.lock_incident(&mut tx, id).await?;
        refuse_resolved(&inc, "resolve")?;
        require_holder(&inc, user, now_ms)?;
        sqlx::query(
            "UPDATE incidents SET state = 'resolved', resolved_ms = $1, resolved_by = $2, resolution = $3, \
             resolution_note = $4, acknowledged_ms = COALESCE(acknowledged_ms, $1), \
             acknowledged_by = COALESCE(acknowledged_by, $2), holder = NULL, hold_until_ms = NULL WHERE id = $5",
        )
        .bind(now_ms)
        .bind(user)
        .bind(resolution.as_str())
        .bind(note)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(query("incidents: resolve"))?;
        audit::append(
            &mut tx,
            self.backend,
            &self.audit_key,
            user,
            "resolve",
            id,
            &json!({ "resolution": resolution.as_str(), "note": note }),
            now_ms,
        )
        .await?;
        tx.commit().await.map_err(query("incidents: commit a resolution"))?;
        Ok(())
    }

    /// Stores a reviewer's allow-list entry for its incident (audited as `allow.add` by
    /// its creator); the same id twice is [`Applied::Duplicate`].
    pub async fn add_allow_entry(&self, entry: &AllowEntry) -> Result<Applied, StoreError> {
        validate_allow(entry)?;
        let hashes = serde_json::to_string(&entry.hashes)
            .map_err(|e| StoreError::Invalid(format!("allow entry {}: {e}", entry.id)))?;
        let mut tx = self.begin().await?;
        self.lock_incident(&mut tx, &entry.incident_id).await?;
        let fresh = sqlx::query(
            "INSERT INTO allow_entries (id, incident_id, scope_kind, scope, hashes, note, created_by, created_ms, \
             expires_ms, published_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&entry.id)
        .bind(&entry.incident_id)
        .bind(&entry.scope_kind)
        .bind(&entry.scope)
        .bind(&hashes)
        .bind(&entry.note)
        .bind(&entry.created_by)
        .bind(entry.created_ms)
        .bind(entry.expires_ms)
        .bind(entry.published_ms)
        .execute(&mut *tx)
        .await
        .map_err(query("allow_entries: insert"))?
        .rows_affected();
        if fresh == 0 {
            return Ok(Applied::Duplicate);
        }
        let detail = json!({
            "allow_entry": entry.id,
            "scope_kind": entry.scope_kind,
            "scope": entry.scope,
            "hashes": entry.hashes,
            "note": entry.note,
            "expires_ms": entry.expires_ms,
        });
        audit::append(
            &mut tx,
            self.backend,
            &self.audit_key,
            &entry.created_by,
            "allow.add",
            &entry.incident_id,
            &detail,
            entry.created_ms,
        )
        .await?;
        tx.commit().await.map_err(query("allow_entries: commit"))?;
        Ok(Applied::New)
    }

    /// Allowlist entries, newest first, at most `limit`: those whose id, scope, note,
    /// author or incident contains `text` (any case) when given; with the ids of those
    /// revoked (from the audit trail, where revocations are recorded).
    pub async fn allow_entries_listed(
        &self,
        text: Option<&str>,
        limit: i64,
    ) -> Result<(Vec<AllowEntry>, std::collections::BTreeSet<String>), StoreError> {
        let like = text.map(super::search::contains);
        let sql = match like {
            Some(_) => format!(
                "SELECT {ALLOW_COLUMNS} FROM allow_entries WHERE LOWER(id) LIKE $1 ESCAPE '\\' OR LOWER(scope) LIKE $1 ESCAPE '\\' \
                 OR LOWER(note) LIKE $1 ESCAPE '\\' OR LOWER(created_by) LIKE $1 ESCAPE '\\' OR LOWER(incident_id) LIKE $1 ESCAPE '\\' \
                 ORDER BY created_ms DESC, id DESC LIMIT $2"
            ),
            None => format!("SELECT {ALLOW_COLUMNS} FROM allow_entries ORDER BY created_ms DESC, id DESC LIMIT $1"),
        };
        let q = match like {
            Some(l) => sqlx::query(&sql).bind(l).bind(limit),
            None => sqlx::query(&sql).bind(limit),
        };
        let rows = q.fetch_all(&self.pool).await.map_err(query("allow_entries: list"))?;
        let entries = rows.iter().map(allow_from_row).collect::<Result<Vec<_>, _>>()?;
        let revocations = sqlx::query("SELECT detail FROM audit_log WHERE action = 'allow.revoke'")
            .fetch_all(&self.pool)
            .await
            .map_err(query("audit_log: revocations"))?;
        let mut revoked = std::collections::BTreeSet::new();
        for r in &revocations {
            let detail: serde_json::Value = parse_json("audit detail", &r.text("detail")?)?;
            if let Some(id) = detail["entry"].as_str() {
                revoked.insert(id.to_string());
            }
        }
        Ok((entries, revoked))
    }

    /// Entries not yet published to the banks, oldest first.
    pub async fn unpublished_allow_entries(&self) -> Result<Vec<AllowEntry>, StoreError> {
        sqlx::query(&format!(
            "SELECT {ALLOW_COLUMNS} FROM allow_entries WHERE published_ms IS NULL ORDER BY created_ms, id"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(query("allow_entries: read unpublished"))?
        .iter()
        .map(allow_from_row)
        .collect()
    }

    /// Records that the entry reached the banks (the first time counts).
    pub async fn mark_allow_published(&self, id: &str, now_ms: UnixMs) -> Result<(), StoreError> {
        let done = sqlx::query("UPDATE allow_entries SET published_ms = $1 WHERE id = $2 AND published_ms IS NULL")
            .bind(now_ms)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(query("allow_entries: mark published"))?
            .rows_affected();
        if done == 0 {
            let exists = sqlx::query("SELECT id FROM allow_entries WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(query("allow_entries: read"))?;
            if exists.is_none() {
                return Err(StoreError::NotFound(format!("allow entry {id}")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![5]), Some(5));
        assert_eq!(median(vec![9, 1, 5]), Some(5));
        assert_eq!(median(vec![4, 1, 3, 2]), Some(2));
        assert_eq!(median(vec![i64::MAX, i64::MAX]), Some(i64::MAX));
    }

    #[test]
    fn civil_dates() {
        for days in [-1, 0, 59, 19_792, 20_000, 2_932_896] {
            assert_eq!(days_from_civil(&civil_date(days)), Some(days), "{}", civil_date(days));
        }
        for bad in ["2024-02-30", "2023-02-29", "2024-13-01", "2024-1-01", "24-01-01", "2024-01-01x", "", "2024/01/01"]
        {
            assert_eq!(days_from_civil(bad), None, "{bad}");
        }
        assert_eq!(days_from_civil("2024-02-29"), Some(19_782));
        assert_eq!(civil_date(0), "1970-01-01");
        assert_eq!(civil_date(-1), "1969-12-31");
        assert_eq!(civil_date(19_782), "2024-02-29");
        assert_eq!(civil_date(20_454), "2026-01-01");
    }
}
