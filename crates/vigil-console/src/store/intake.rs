//! Intake: alerts, interrupt commands and action outcomes, each applied once by message
//! id (the primary key of the table that keeps it), in any order.

use super::error::{StoreError, query};
use super::{Applied, Backend, RowExt, Store, ms};
use crate::model::{ActionOutcome, InterruptState, StreamEvent, UnixMs};
use sha2::{Digest, Sha256};
use sqlx::AnyConnection;
use vigil_core::Verdict;
use vigil_core::alert::{Alert, AlertEvent, InterruptCommand};

pub(crate) fn event_str(e: AlertEvent) -> &'static str {
    match e {
        AlertEvent::Opened => "opened",
        AlertEvent::Escalated => "escalated",
        AlertEvent::Reissued => "reissued",
        AlertEvent::Closed => "closed",
    }
}

/// Verdicts in order of severity: an incident's decision only ever rises.
fn verdict_rank(v: &str) -> u8 {
    match v {
        "clear" => 0,
        "unscanned" => 1,
        "review" => 2,
        "interrupt" => 3,
        _ => 0,
    }
}

fn verdict_str(v: Verdict) -> &'static str {
    match v {
        Verdict::Clear => "clear",
        Verdict::Unscanned => "unscanned",
        Verdict::Review => "review",
        Verdict::Interrupt => "interrupt",
    }
}

/// The alert-derived columns of an incident, merged event by event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AlertFacts {
    pub account_id: Option<String>,
    pub session_id: Option<String>,
    pub decision: String,
    pub rule: String,
    /// The emission time of the event that set `decision` and `rule`.
    pub decision_ms: i64,
    pub detected_ms: i64,
    pub stream_closed_ms: Option<i64>,
}

/// Folds one alert event into an incident's facts, whatever order events arrive in:
/// detection is the `opened` event's time (before it is in, the earliest event's; no
/// other event moves it earlier once it is), decision and rule are the latest
/// `opened`/`escalated`/`reissued` event's, but a decision never goes down (a later
/// record saying `clear` or `review` of an interrupt changes nothing); closing keeps the
/// latest close.
pub(crate) fn merge_alert(mut cur: AlertFacts, event: AlertEvent, emitted: i64, alert: &Alert) -> AlertFacts {
    cur.account_id = cur.account_id.or_else(|| alert.account_id.clone());
    cur.session_id = cur.session_id.or_else(|| alert.session_id.clone());
    if event == AlertEvent::Opened {
        cur.detected_ms = cur.detected_ms.min(emitted);
    }
    match event {
        // A stronger decision wins whatever its time (two workers' clocks across a
        // hand-off need not agree); between equals the later one names the rule.
        AlertEvent::Opened | AlertEvent::Escalated | AlertEvent::Reissued
            if verdict_rank(verdict_str(alert.decision)) > verdict_rank(&cur.decision)
                || (verdict_rank(verdict_str(alert.decision)) == verdict_rank(&cur.decision)
                    && emitted >= cur.decision_ms) =>
        {
            cur.decision = verdict_str(alert.decision).to_string();
            cur.rule = alert.rule.clone();
            cur.decision_ms = emitted;
        }
        AlertEvent::Opened | AlertEvent::Escalated | AlertEvent::Reissued => {}
        AlertEvent::Closed => cur.stream_closed_ms = Some(cur.stream_closed_ms.map_or(emitted, |c| c.max(emitted))),
    }
    cur
}

/// What the console knows of an incident's interrupt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InterruptFacts {
    pub state: InterruptState,
    pub issued_ms: Option<i64>,
    /// The actuator time of the outcome that set `state`.
    pub outcome_at_ms: Option<i64>,
    pub cut_ms: Option<i64>,
}

/// The action outcomes the actuator reports (`vigil.action` v1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OutcomeKind {
    Cut,
    Failed,
    DeadLettered,
    /// A worker pulling the stream read the command: it arrived, nothing is decided.
    Seen,
    /// The actuator did not carry the command out: the console had withdrawn it.
    Withdrawn,
}

impl OutcomeKind {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "cut" => Some(OutcomeKind::Cut),
            "failed" => Some(OutcomeKind::Failed),
            "dead_lettered" => Some(OutcomeKind::DeadLettered),
            "seen" => Some(OutcomeKind::Seen),
            "withdrawn" => Some(OutcomeKind::Withdrawn),
            _ => None,
        }
    }
}

impl InterruptFacts {
    /// A command was issued: `none` becomes `issued`; the earliest issue time is kept.
    pub fn on_command(mut self, issued_ms: i64) -> Self {
        if self.state == InterruptState::None {
            self.state = InterruptState::Issued;
        }
        self.issued_ms = Some(self.issued_ms.map_or(issued_ms, |i| i.min(issued_ms)));
        self
    }

    /// An outcome of one of the incident's commands: a confirmed cut is final; otherwise
    /// the outcome with the latest actuator time wins (a late `failed` never overwrites
    /// the `dead_lettered` that followed it).
    pub fn on_outcome(mut self, kind: OutcomeKind, at_ms: i64) -> Self {
        if self.state == InterruptState::CutConfirmed || kind == OutcomeKind::Seen {
            return self;
        }
        // Withdrawn stays withdrawn unless a cut came first after all (an actuator that
        // acted before it read the withdrawal): the truth wins.
        if self.state == InterruptState::Withdrawn && kind != OutcomeKind::Cut {
            return self;
        }
        if kind != OutcomeKind::Cut && self.outcome_at_ms.is_some_and(|last| at_ms < last) {
            return self;
        }
        self.state = match kind {
            OutcomeKind::Cut => InterruptState::CutConfirmed,
            OutcomeKind::Failed => InterruptState::CutFailed,
            OutcomeKind::DeadLettered => InterruptState::DeadLettered,
            OutcomeKind::Withdrawn => InterruptState::Withdrawn,
            OutcomeKind::Seen => self.state,
        };
        self.outcome_at_ms = Some(at_ms);
        if kind == OutcomeKind::Cut {
            self.cut_ms = Some(at_ms);
        }
        self
    }
}

/// A Postgres advisory-lock key for one command id, so that a command and its outcomes,
/// applied by two replicas at once, take turns (each then sees the other's rows).
fn command_lock_key(command_id: &str) -> i64 {
    let digest = Sha256::digest(format!("vigil.command/{command_id}").as_bytes());
    i64::from_be_bytes(digest[..8].try_into().unwrap_or([0; 8]))
}

async fn lock_command(conn: &mut AnyConnection, backend: Backend, command_id: &str) -> Result<(), StoreError> {
    if backend == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(command_lock_key(command_id))
            .execute(&mut *conn)
            .await
            .map_err(query("commands: lock the command id"))?;
    }
    Ok(())
}

impl Store {
    async fn read_interrupt(&self, conn: &mut AnyConnection, incident_id: &str) -> Result<InterruptFacts, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT interrupt_state, interrupt_issued_ms, outcome_at_ms, cut_ms FROM incidents WHERE id = $1{}",
            self.for_update()
        ))
        .bind(incident_id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(query("incidents: read the interrupt"))?
        .ok_or_else(|| StoreError::NotFound(format!("incident {incident_id}")))?;
        let state = row.text("interrupt_state")?;
        Ok(InterruptFacts {
            state: InterruptState::parse(&state)
                .ok_or_else(|| StoreError::Corrupt(format!("incident {incident_id}: interrupt state {state:?}")))?,
            issued_ms: row.opt_int("interrupt_issued_ms")?,
            outcome_at_ms: row.opt_int("outcome_at_ms")?,
            cut_ms: row.opt_int("cut_ms")?,
        })
    }

    async fn write_interrupt(
        &self,
        conn: &mut AnyConnection,
        incident_id: &str,
        f: InterruptFacts,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE incidents SET interrupt_state = $1, interrupt_issued_ms = $2, outcome_at_ms = $3, cut_ms = $4 \
             WHERE id = $5",
        )
        .bind(f.state.as_str())
        .bind(f.issued_ms)
        .bind(f.outcome_at_ms)
        .bind(f.cut_ms)
        .bind(incident_id)
        .execute(&mut *conn)
        .await
        .map_err(query("incidents: update the interrupt"))?;
        Ok(())
    }

    /// Applies one alert event (message id `{alert_id}/{event}`). `opened` creates the
    /// incident; `escalated` updates decision and rule (creating the incident when
    /// `opened` has not arrived); `closed` records when the worker closed it (the review
    /// state is unchanged). The alert's JSON is kept for the timeline.
    pub async fn record_alert(&self, alert: &Alert, received_ms: UnixMs) -> Result<Applied, StoreError> {
        if alert.alert_id.is_empty() {
            return Err(StoreError::Invalid("alert: empty alert_id".into()));
        }
        let event = event_str(alert.event);
        let message_id = match alert.reissue {
            Some(n) => format!("{}/{event}/{n}", alert.alert_id),
            None => format!("{}/{event}", alert.alert_id),
        };
        let body = serde_json::to_string(alert).map_err(|e| StoreError::Invalid(format!("alert {message_id}: {e}")))?;
        let emitted = ms(alert.emitted_at_unix_ms);
        let closed = (alert.event == AlertEvent::Closed).then_some(emitted);

        let mut tx = self.begin().await?;
        let fresh = sqlx::query(
            "INSERT INTO alert_events (message_id, incident_id, event, emitted_ms, received_ms, body) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (message_id) DO NOTHING",
        )
        .bind(&message_id)
        .bind(&alert.alert_id)
        .bind(event)
        .bind(emitted)
        .bind(received_ms)
        .bind(&body)
        .execute(&mut *tx)
        .await
        .map_err(query("alert_events: insert"))?
        .rows_affected();
        if fresh == 0 {
            return Ok(Applied::Duplicate);
        }
        let created = sqlx::query(
            "INSERT INTO incidents (id, stream_id, account_id, session_id, worker_id, decision, rule, decision_ms, \
             detected_ms, state, interrupt_state, stream_closed_ms, origin) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, 'open', 'none', $9, $10) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&alert.alert_id)
        .bind(&alert.stream_id.0)
        .bind(&alert.account_id)
        .bind(&alert.session_id)
        .bind(&alert.worker_id)
        .bind(verdict_str(alert.decision))
        .bind(&alert.rule)
        .bind(emitted)
        .bind(closed)
        .bind(alert.origin.map(|o| match o {
            vigil_core::AlertOrigin::FileScan => "file_scan",
        }))
        .execute(&mut *tx)
        .await
        .map_err(query("incidents: insert from an alert"))?
        .rows_affected();
        if created == 0 {
            let row = sqlx::query(&format!(
                "SELECT account_id, session_id, decision, rule, decision_ms, detected_ms, stream_closed_ms \
                 FROM incidents WHERE id = $1{}",
                self.for_update()
            ))
            .bind(&alert.alert_id)
            .fetch_one(&mut *tx)
            .await
            .map_err(query("incidents: read for an alert"))?;
            let cur = AlertFacts {
                account_id: row.opt_text("account_id")?,
                session_id: row.opt_text("session_id")?,
                decision: row.text("decision")?,
                rule: row.text("rule")?,
                decision_ms: row.int("decision_ms")?,
                detected_ms: row.int("detected_ms")?,
                stream_closed_ms: row.opt_int("stream_closed_ms")?,
            };
            let new = merge_alert(cur, alert.event, emitted, alert);
            sqlx::query(
                "UPDATE incidents SET account_id = $1, session_id = $2, decision = $3, rule = $4, decision_ms = $5, \
                 detected_ms = $6, stream_closed_ms = $7 WHERE id = $8",
            )
            .bind(&new.account_id)
            .bind(&new.session_id)
            .bind(&new.decision)
            .bind(&new.rule)
            .bind(new.decision_ms)
            .bind(new.detected_ms)
            .bind(new.stream_closed_ms)
            .bind(&alert.alert_id)
            .execute(&mut *tx)
            .await
            .map_err(query("incidents: update from an alert"))?;
        }
        tx.commit().await.map_err(query("alert_events: commit"))?;
        Ok(Applied::New)
    }

    /// Applies one interrupt command (message id: its `command_id`): the incident's
    /// interrupt becomes `issued` (if it was `none`), and outcomes that arrived before the
    /// command are applied now. A command before any alert creates the incident.
    pub async fn record_command(
        &self,
        cmd: &InterruptCommand,
        issued_by: &str,
        received_ms: UnixMs,
    ) -> Result<Applied, StoreError> {
        if cmd.command_id.is_empty() || cmd.alert_id.is_empty() {
            return Err(StoreError::Invalid(format!(
                "interrupt command {:?} for alert {:?}: empty id",
                cmd.command_id, cmd.alert_id
            )));
        }
        let body = serde_json::to_string(cmd)
            .map_err(|e| StoreError::Invalid(format!("interrupt command {}: {e}", cmd.command_id)))?;
        let issued = ms(cmd.issued_at_unix_ms);

        let mut tx = self.begin().await?;
        lock_command(&mut tx, self.backend, &cmd.command_id).await?;
        let fresh = sqlx::query(
            "INSERT INTO commands (command_id, incident_id, issued_by, issued_ms, received_ms, body) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (command_id) DO NOTHING",
        )
        .bind(&cmd.command_id)
        .bind(&cmd.alert_id)
        .bind(issued_by)
        .bind(issued)
        .bind(received_ms)
        .bind(&body)
        .execute(&mut *tx)
        .await
        .map_err(query("commands: insert"))?
        .rows_affected();
        if fresh == 0 {
            return Ok(Applied::Duplicate);
        }
        sqlx::query(
            "INSERT INTO incidents (id, stream_id, account_id, session_id, worker_id, decision, rule, decision_ms, \
             detected_ms, state, interrupt_state) \
             VALUES ($1, $2, $3, $4, $5, 'interrupt', $6, $7, $7, 'open', 'none') ON CONFLICT (id) DO NOTHING",
        )
        .bind(&cmd.alert_id)
        .bind(&cmd.stream_id.0)
        .bind(&cmd.account_id)
        .bind(&cmd.session_id)
        .bind(&cmd.worker_id)
        .bind(&cmd.rule)
        .bind(issued)
        .execute(&mut *tx)
        .await
        .map_err(query("incidents: insert from a command"))?;

        let mut facts = self.read_interrupt(&mut tx, &cmd.alert_id).await?.on_command(issued);
        let early = sqlx::query("SELECT outcome, at_ms FROM outcomes WHERE command_id = $1 ORDER BY at_ms, attempts")
            .bind(&cmd.command_id)
            .fetch_all(&mut *tx)
            .await
            .map_err(query("outcomes: read for a command"))?;
        for row in &early {
            let outcome = row.text("outcome")?;
            let kind = OutcomeKind::parse(&outcome)
                .ok_or_else(|| StoreError::Corrupt(format!("outcome of {}: {outcome:?}", cmd.command_id)))?;
            facts = facts.on_outcome(kind, row.int("at_ms")?);
        }
        self.write_interrupt(&mut tx, &cmd.alert_id, facts).await?;
        tx.commit().await.map_err(query("commands: commit"))?;
        Ok(Applied::New)
    }

    /// Keeps one stream lifecycle event (a repeat of the same event, time and worker is
    /// a duplicate).
    pub async fn record_stream_event(&self, e: &StreamEvent, received_ms: UnixMs) -> Result<Applied, StoreError> {
        if e.stream_id.is_empty() || e.worker_id.is_empty() {
            return Err(StoreError::Invalid("stream event: empty stream or worker id".into()));
        }
        let fresh = sqlx::query(
            "INSERT INTO stream_events (stream_id, at_ms, event, worker_id, detail, reason, received_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (stream_id, at_ms, event, worker_id) DO NOTHING",
        )
        .bind(&e.stream_id)
        .bind(ms(e.at_unix_ms))
        .bind(&e.event)
        .bind(&e.worker_id)
        .bind(&e.detail)
        .bind(&e.reason)
        .bind(received_ms)
        .execute(&self.pool)
        .await
        .map_err(query("stream_events: insert"))?
        .rows_affected();
        Ok(if fresh == 0 { Applied::Duplicate } else { Applied::New })
    }

    /// A stream's lifecycle events since `since_ms`, oldest first (at most 200, the newest).
    pub async fn stream_events(&self, stream_id: &str, since_ms: UnixMs) -> Result<Vec<StreamEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT stream_id, at_ms, event, worker_id, detail, reason FROM stream_events \
             WHERE stream_id = $1 AND at_ms >= $2 ORDER BY at_ms DESC, event LIMIT 200",
        )
        .bind(stream_id)
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await
        .map_err(query("stream_events: read"))?;
        let mut events = rows
            .iter()
            .map(|r| {
                Ok(StreamEvent {
                    schema: "vigil.stream".into(),
                    schema_version: 1,
                    stream_id: r.text("stream_id")?,
                    at_unix_ms: r.int("at_ms")?.max(0) as u64,
                    event: r.text("event")?,
                    worker_id: r.text("worker_id")?,
                    detail: r.opt_text("detail")?,
                    reason: r.opt_text("reason")?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        events.reverse();
        Ok(events)
    }

    /// A stream's latest lifecycle events (at most 8) and their times, oldest first.
    pub async fn recent_stream_events(&self, stream_id: &str) -> Result<Vec<(String, UnixMs)>, StoreError> {
        let rows = sqlx::query(
            "SELECT event, at_ms FROM stream_events WHERE stream_id = $1 ORDER BY at_ms DESC, event LIMIT 8",
        )
        .bind(stream_id)
        .fetch_all(&self.pool)
        .await
        .map_err(query("stream_events: read the latest"))?;
        let mut events =
            rows.iter().map(|r| Ok((r.text("event")?, r.int("at_ms")?))).collect::<Result<Vec<_>, StoreError>>()?;
        events.reverse();
        Ok(events)
    }

    /// Applies one action outcome (message id
    /// `{command_id}/{outcome}/{attempts}/{at_unix_ms}`) to the incident of its command:
    /// `cut` confirms the cut, `failed` and `dead_lettered` say the cut has not happened
    /// (a confirmed cut is never undone). An outcome whose command has not arrived yet is
    /// kept and applied with the command.
    /// The console withdrew the incident's pending commands: the interrupt reads
    /// `withdrawn` (unless a cut was confirmed already, which stays the truth).
    pub async fn mark_withdrawn(&self, incident_id: &str) -> Result<InterruptState, StoreError> {
        let mut tx = self.begin().await?;
        let mut facts = self.read_interrupt(&mut tx, incident_id).await?;
        if facts.state != InterruptState::CutConfirmed {
            facts.state = InterruptState::Withdrawn;
            self.write_interrupt(&mut tx, incident_id, facts).await?;
        }
        tx.commit().await.map_err(query("incidents: commit the withdrawal"))?;
        Ok(facts.state)
    }

    pub async fn record_outcome(&self, outcome: &ActionOutcome, received_ms: UnixMs) -> Result<Applied, StoreError> {
        let kind = OutcomeKind::parse(&outcome.outcome).ok_or_else(|| {
            StoreError::Invalid(format!(
                "action outcome {:?} for command {}: expected cut, failed, dead_lettered, seen or withdrawn",
                outcome.outcome, outcome.command_id
            ))
        })?;
        if outcome.command_id.is_empty() {
            return Err(StoreError::Invalid("action outcome: empty command_id".into()));
        }
        let message_id =
            format!("{}/{}/{}/{}", outcome.command_id, outcome.outcome, outcome.attempts, outcome.at_unix_ms);
        let body = serde_json::to_string(outcome)
            .map_err(|e| StoreError::Invalid(format!("action outcome {message_id}: {e}")))?;
        let at = ms(outcome.at_unix_ms);

        let mut tx = self.begin().await?;
        lock_command(&mut tx, self.backend, &outcome.command_id).await?;
        let fresh = sqlx::query(
            "INSERT INTO outcomes (message_id, command_id, outcome, attempts, at_ms, received_ms, body) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (message_id) DO NOTHING",
        )
        .bind(&message_id)
        .bind(&outcome.command_id)
        .bind(&outcome.outcome)
        .bind(i64::from(outcome.attempts))
        .bind(at)
        .bind(received_ms)
        .bind(&body)
        .execute(&mut *tx)
        .await
        .map_err(query("outcomes: insert"))?
        .rows_affected();
        if fresh == 0 {
            return Ok(Applied::Duplicate);
        }
        let incident = sqlx::query("SELECT incident_id FROM commands WHERE command_id = $1")
            .bind(&outcome.command_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(query("commands: find an outcome's command"))?;
        if let Some(row) = incident {
            let incident_id = row.text("incident_id")?;
            let facts = self.read_interrupt(&mut tx, &incident_id).await?.on_outcome(kind, at);
            self.write_interrupt(&mut tx, &incident_id, facts).await?;
        }
        tx.commit().await.map_err(query("outcomes: commit"))?;
        Ok(Applied::New)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(state: InterruptState) -> InterruptFacts {
        InterruptFacts { state, issued_ms: Some(100), outcome_at_ms: None, cut_ms: None }
    }

    #[test]
    fn a_confirmed_cut_is_final() {
        let f = facts(InterruptState::Issued).on_outcome(OutcomeKind::Cut, 200);
        assert_eq!((f.state, f.cut_ms), (InterruptState::CutConfirmed, Some(200)));
        let g = f.on_outcome(OutcomeKind::DeadLettered, 300).on_outcome(OutcomeKind::Failed, 400).on_command(50);
        assert_eq!((g.state, g.cut_ms, g.issued_ms), (InterruptState::CutConfirmed, Some(200), Some(50)));
    }

    #[test]
    fn the_latest_failure_wins_whatever_the_arrival_order() {
        let f = facts(InterruptState::Issued).on_outcome(OutcomeKind::DeadLettered, 300);
        assert_eq!(f.on_outcome(OutcomeKind::Failed, 200).state, InterruptState::DeadLettered);
        assert_eq!(f.on_outcome(OutcomeKind::Failed, 400).state, InterruptState::CutFailed);
        // A cut reported late still confirms.
        assert_eq!(f.on_outcome(OutcomeKind::Cut, 100).state, InterruptState::CutConfirmed);
    }

    #[test]
    fn a_command_only_moves_none_to_issued() {
        assert_eq!(facts(InterruptState::None).on_command(10).state, InterruptState::Issued);
        assert_eq!(facts(InterruptState::CutFailed).on_command(10).state, InterruptState::CutFailed);
    }

    fn alert_at(event: AlertEvent, decision: Verdict) -> Alert {
        serde_json::from_value(serde_json::json!({
            "schema": "vigil.alert", "schema_version": 1, "alert_id": "s@x#1", "event": event,
            "stream_id": "s", "started_ms": 0, "last_seen_ms": 0, "emitted_at_unix_ms": 0,
            "decision": decision, "rule": "r", "worker_id": "w",
            "explanation": {"reasons": [], "frames": [], "models": [], "policy": "p", "policy_version": "1"},
        }))
        .unwrap()
    }

    #[test]
    fn a_later_record_never_lowers_the_decision_nor_moves_detection_before_the_opening() {
        let opened = AlertFacts {
            account_id: None,
            session_id: None,
            decision: "interrupt".into(),
            rule: "known_abuse_material".into(),
            decision_ms: 1_000,
            detected_ms: 1_000,
            stream_closed_ms: None,
        };
        let lowered =
            merge_alert(opened.clone(), AlertEvent::Escalated, 5_000, &alert_at(AlertEvent::Escalated, Verdict::Clear));
        assert_eq!((lowered.decision.as_str(), lowered.rule.as_str()), ("interrupt", "known_abuse_material"));
        let closed_in_1970 =
            merge_alert(opened.clone(), AlertEvent::Closed, 0, &alert_at(AlertEvent::Closed, Verdict::Interrupt));
        assert_eq!(closed_in_1970.detected_ms, 1_000, "a close never moves detection earlier");
        // An `opened` that arrives after its escalation still sets detection.
        let escalated_first = AlertFacts { detected_ms: 2_000, decision_ms: 2_000, ..opened.clone() };
        let late_open =
            merge_alert(escalated_first, AlertEvent::Opened, 1_500, &alert_at(AlertEvent::Opened, Verdict::Review));
        assert_eq!((late_open.detected_ms, late_open.decision.as_str()), (1_500, "interrupt"));
        // A stronger decision stamped earlier (another worker's clock) still wins.
        let review = AlertFacts { decision: "review".into(), decision_ms: 5_000, ..opened.clone() };
        let raised =
            merge_alert(review, AlertEvent::Escalated, 4_000, &alert_at(AlertEvent::Escalated, Verdict::Interrupt));
        assert_eq!(raised.decision, "interrupt");
        let reissued =
            merge_alert(opened, AlertEvent::Reissued, 9_000, &alert_at(AlertEvent::Reissued, Verdict::Interrupt));
        assert_eq!(reissued.decision_ms, 9_000);
    }
}
