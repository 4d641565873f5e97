//! What a reviewer can do to an incident, shared by the web handlers and tests. Each
//! action is checked and recorded by the store (with its audit entry) first, and only
//! then has effects outside (a page, a command, an allowlist entry), so nothing is
//! announced that the store did not keep.

use crate::metrics::METRICS;
use crate::model::{IncidentState, InterruptState, PageAction, PageSubject, Resolution, now_ms};
use crate::state::Shared;
use crate::store::{AllowEntry, StoreError};
use std::time::Duration;
use vigil_core::bank_update::{BANK_UPDATE_SCHEMA, BANK_UPDATE_SCHEMA_VERSION, is_safe_name};
use vigil_core::{BankUpdate, BankUpdateOp, InterruptCommand, ScopeKind};

#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Refused(String),
    #[error("Kafka: {0}")]
    Kafka(String),
}

/// Enqueues the pages for `incident` (one per configured channel).
pub async fn page(shared: &Shared, action: PageAction, incident: &str) -> Result<(), StoreError> {
    page_as(shared, action, incident, None).await
}

/// [`page`], with `step` in place of the action in the outbox ids (a second trigger).
async fn page_as(shared: &Shared, action: PageAction, incident: &str, step: Option<&str>) -> Result<(), StoreError> {
    page_on(shared, action, incident, step, None).await
}

/// [`page_as`] on one channel only when `only` names one.
async fn page_on(
    shared: &Shared,
    action: PageAction,
    incident: &str,
    step: Option<&str>,
    only: Option<crate::model::Channel>,
) -> Result<(), StoreError> {
    let Some(subject) = subject_of(shared, incident).await? else { return Ok(()) };
    let now = now_ms();
    let items = crate::paging::items_for(&shared.cfg.paging, action, &subject, now);
    for mut item in items.into_iter().filter(|i| only.is_none_or(|c| i.channel == c)) {
        if let Some(step) = step {
            item.id = format!("{}/{step}/{}", subject.incident_id, item.channel.as_str());
        }
        shared.store.enqueue_page(&item, now).await?;
    }
    Ok(())
}

/// What a page says about an incident (no pixels, no reasons text).
pub async fn subject_of(shared: &Shared, id: &str) -> Result<Option<PageSubject>, StoreError> {
    let Some(d) = shared.store.incident(id).await? else { return Ok(None) };
    let i = &d.incident;
    Ok(Some(PageSubject {
        incident_id: i.id.clone(),
        stream_id: i.stream_id.clone(),
        account_id: i.account_id.clone(),
        decision: i.decision.clone(),
        rule: i.rule.clone(),
        detected_at_ms: i.detected_ms,
        link: incident_link(shared, &i.id),
    }))
}

pub fn incident_link(shared: &Shared, id: &str) -> String {
    format!("{}/incident?id={}", shared.cfg.public_url.trim_end_matches('/'), crate::web::pages::url_arg(id))
}

fn counted(action: &str) {
    METRICS.actions.with_label_values(&[action]).inc();
}

pub async fn hold(shared: &Shared, id: &str, user: &str) -> Result<(), ActionError> {
    shared.store.hold(id, user, now_ms(), shared.cfg.hold_secs as i64 * 1000).await?;
    counted("hold");
    Ok(())
}

pub async fn release(shared: &Shared, id: &str, user: &str) -> Result<(), ActionError> {
    shared.store.release(id, user).await?;
    counted("release");
    Ok(())
}

pub async fn acknowledge(shared: &Shared, id: &str, user: &str) -> Result<(), ActionError> {
    hold(shared, id, user).await?;
    shared.store.acknowledge(id, user, now_ms()).await?;
    page(shared, PageAction::Acknowledge, id).await?;
    resolve_queue_age_page(shared, id).await?;
    counted("acknowledge");
    Ok(())
}

/// Escalates to `target`: one configured paging channel (`pagerduty`, `webhook`,
/// `slack`), or every one (`all`, the default). The target is part of the escalation
/// note; whether anybody was paged, the result says.
pub async fn escalate(shared: &Shared, id: &str, user: &str, note: &str, target: &str) -> Result<bool, ActionError> {
    let note = required_note(note)?;
    let channels = shared.cfg.paging.channels();
    let only = match target {
        "" | "all" => None,
        t => match channels.iter().find(|c| c.as_str() == t) {
            Some(c) => Some(*c),
            None => return Err(ActionError::Refused(format!("{t:?} is not a paging channel configured here"))),
        },
    };
    let to = match (only, channels.is_empty()) {
        (Some(c), _) => format!("to {}", c.as_str()),
        (None, false) => "to every paging channel".to_string(),
        (None, true) => "nobody was paged (no paging channel is configured)".to_string(),
    };
    hold(shared, id, user).await?;
    let now = now_ms();
    shared.store.escalate(id, user, &format!("{to}: {note}"), now).await?;
    // An escalation pages again, whoever acknowledged the first page: a trigger of its
    // own outbox id (the first trigger's id would be a duplicate).
    page_on(shared, PageAction::Trigger, id, Some(&format!("escalate-{now}")), only).await?;
    counted("escalate");
    Ok(!channels.is_empty())
}

pub async fn resolve(
    shared: &Shared,
    id: &str,
    user: &str,
    outcome: Resolution,
    note: &str,
) -> Result<(), ActionError> {
    if outcome == Resolution::FalsePositive {
        return Err(ActionError::Refused("a false positive is marked with its own action, which allow-lists".into()));
    }
    hold(shared, id, user).await?;
    shared.store.resolve(id, user, outcome, note.trim(), now_ms()).await?;
    page(shared, PageAction::Resolve, id).await?;
    resolve_queue_age_page(shared, id).await?;
    counted("resolve");
    Ok(())
}

/// Assigns the incident to `to`, or hands it over from whoever had it (empty: nobody).
pub async fn assign(shared: &Shared, id: &str, user: &str, to: &str) -> Result<(), ActionError> {
    shared.store.assign(id, to.trim(), user, now_ms()).await?;
    counted("assign");
    Ok(())
}

fn required_note(note: &str) -> Result<&str, ActionError> {
    let note = note.trim();
    if note.is_empty() {
        return Err(ActionError::Refused("a note is required".into()));
    }
    if note.len() > 2000 {
        return Err(ActionError::Refused("the note is over 2000 characters".into()));
    }
    Ok(note)
}

/// "Cut now": the interrupt command for a review-level incident (an interrupt-level
/// one had its command from the worker already). Same command id as a worker would
/// give it, so the actuator cuts once whoever asks.
pub async fn cut_now(shared: &Shared, id: &str, user: &str) -> Result<(), ActionError> {
    hold(shared, id, user).await?;
    let d = shared.store.incident(id).await?.ok_or_else(|| ActionError::Refused(format!("no incident {id}")))?;
    let i = &d.incident;
    let not_found = i.interrupt_state.not_found(d.last_command_ms(), d.seen_ms(), now_ms());
    if matches!(i.interrupt_state, InterruptState::Issued | InterruptState::CutConfirmed) && !not_found {
        return Err(ActionError::Refused(format!(
            "the stream's interrupt is already {}",
            i.interrupt_state.as_str().replace('_', " ")
        )));
    }
    if i.state == IncidentState::Resolved {
        return Err(ActionError::Refused("the incident is resolved".into()));
    }
    if i.origin.is_some() {
        return Err(ActionError::Refused("a file scan is not a live stream: there is nothing to cut".into()));
    }
    let out = shared.outbound.as_ref().ok_or_else(|| ActionError::Refused("no Kafka cluster is configured".into()))?;
    // The worker's command id, so the actuator cuts once whoever asks; after a failed,
    // dead-lettered or unanswered one a new one (the actuator skips an id it has
    // finished with).
    let command_id = match i.interrupt_state {
        InterruptState::CutFailed | InterruptState::DeadLettered => format!("{id}/interrupt/console-{}", now_ms()),
        InterruptState::Issued => format!("{id}/interrupt/console-{}", now_ms()),
        _ => format!("{id}/interrupt"),
    };
    let cmd = InterruptCommand {
        schema: vigil_core::alert::INTERRUPT_SCHEMA.into(),
        schema_version: vigil_core::alert::SCHEMA_VERSION,
        command_id,
        alert_id: id.to_string(),
        stream_id: vigil_core::StreamId(i.stream_id.clone()),
        account_id: i.account_id.clone(),
        session_id: i.session_id.clone(),
        rule: i.rule.clone(),
        issued_at_unix_ms: now_ms() as u64,
        worker_id: format!("console:{user}"),
    };
    let payload = serde_json::to_vec(&cmd).map_err(|e| ActionError::Kafka(e.to_string()))?;
    send(out, &out.interrupts_topic, &i.stream_id, &cmd.command_id, "vigil.interrupt", payload).await?;
    shared.store.record_command(&cmd, &format!("console:{user}"), now_ms()).await?;
    shared.store.audit(user, "cut", id, &serde_json::json!({ "command_id": cmd.command_id }), now_ms()).await?;
    counted("cut");
    Ok(())
}

/// What a false positive did: took effect, or waits for a second reviewer.
#[derive(Debug)]
pub enum FalsePositive {
    Done(Box<AllowEntry>),
    Proposed,
}

/// A reviewer marks the incident a false positive. On an interrupt-level incident, with
/// `false_positive_approval` (the default), it is only proposed: a second reviewer
/// approves it ([`approve_false_positive`]) or rejects it.
pub async fn false_positive(
    shared: &Shared,
    id: &str,
    user: &str,
    scope: &str,
    note: &str,
    expiry_days: u64,
) -> Result<FalsePositive, ActionError> {
    let note = required_note(note)?;
    check_false_positive(scope, expiry_days)?;
    let d = shared.store.incident(id).await?.ok_or_else(|| ActionError::Refused(format!("no incident {id}")))?;
    if !(shared.cfg.false_positive_approval && d.incident.decision == "interrupt") {
        return Ok(FalsePositive::Done(Box::new(
            false_positive_now(shared, id, user, user, scope, note, expiry_days).await?,
        )));
    }
    if d.incident.state == IncidentState::Resolved {
        return Err(ActionError::Refused("the incident is resolved already".into()));
    }
    if !offered_scopes(&d).iter().any(|s| s == scope) {
        return Err(ActionError::Refused(format!("{scope:?} is not a scope of this incident")));
    }
    hold(shared, id, user).await?;
    let now = now_ms();
    let proposal = crate::store::FpProposal {
        incident_id: id.to_string(),
        proposed_by: user.to_string(),
        scope: scope.to_string(),
        note: note.to_string(),
        expiry_days: expiry_days as i64,
        proposed_ms: now,
    };
    shared.store.propose_false_positive(&proposal).await?;
    let detail = serde_json::json!({ "scope": scope, "note": note, "expiry_days": expiry_days });
    shared.store.audit(user, "propose_false_positive", id, &detail, now).await?;
    // The proposer lets go: the incident waits for someone else now.
    shared.store.release(id, user).await?;
    counted("propose_false_positive");
    Ok(FalsePositive::Proposed)
}

/// A second reviewer approves the proposed false positive: it takes effect as proposed.
pub async fn approve_false_positive(shared: &Shared, id: &str, user: &str) -> Result<AllowEntry, ActionError> {
    let p = proposal_for_second_reviewer(shared, id, user).await?;
    let note = format!("{} (proposed by {}, approved by {user})", p.note, p.proposed_by);
    let entry = false_positive_now(shared, id, user, &p.proposed_by, &p.scope, &note, p.expiry_days as u64).await?;
    shared.store.drop_false_positive_proposal(id).await?;
    shared
        .store
        .audit(user, "approve_false_positive", id, &serde_json::json!({ "proposed_by": p.proposed_by }), now_ms())
        .await?;
    counted("approve_false_positive");
    Ok(entry)
}

/// The false positive waiting on the incident, for `user` to decide on: refused when
/// there is none, or when `user` proposed it (four eyes).
async fn proposal_for_second_reviewer(
    shared: &Shared,
    id: &str,
    user: &str,
) -> Result<crate::store::FpProposal, ActionError> {
    let p = shared
        .store
        .false_positive_proposal(id)
        .await?
        .ok_or_else(|| ActionError::Refused("no false positive is waiting for approval on this incident".into()))?;
    if p.proposed_by == user {
        return Err(ActionError::Refused("you proposed this false positive: a second reviewer decides on it".into()));
    }
    Ok(p)
}

/// A second reviewer rejects the proposed false positive (a note says why).
pub async fn reject_false_positive(shared: &Shared, id: &str, user: &str, note: &str) -> Result<(), ActionError> {
    let note = required_note(note)?;
    let p = proposal_for_second_reviewer(shared, id, user).await?;
    shared.store.drop_false_positive_proposal(id).await?;
    let detail = serde_json::json!({ "proposed_by": p.proposed_by, "note": note });
    shared.store.audit(user, "reject_false_positive", id, &detail, now_ms()).await?;
    counted("reject_false_positive");
    Ok(())
}

fn check_false_positive(scope: &str, expiry_days: u64) -> Result<(), ActionError> {
    if !(1..=366).contains(&expiry_days) {
        return Err(ActionError::Refused("the expiry must be 1 to 366 days".into()));
    }
    match scope.split_once(':') {
        Some(("bank" | "rule", n)) if is_safe_name(n) => Ok(()),
        _ => Err(ActionError::Refused(format!("{scope:?} is not a bank:NAME or rule:NAME scope"))),
    }
}

/// The false positive itself: resolves the incident (by `user`) and creates a scoped
/// allowlist entry (by `created_by`, who proposed it) for the frames involved, which
/// every worker applies from the bank-updates topic.
async fn false_positive_now(
    shared: &Shared,
    id: &str,
    user: &str,
    created_by: &str,
    scope: &str,
    note: &str,
    expiry_days: u64,
) -> Result<AllowEntry, ActionError> {
    let note = required_note(note)?;
    if !(1..=366).contains(&expiry_days) {
        return Err(ActionError::Refused("the expiry must be 1 to 366 days".into()));
    }
    let (scope_kind, scope_name) = match scope.split_once(':') {
        Some(("bank", n)) if is_safe_name(n) => ("bank", n),
        Some(("rule", n)) if is_safe_name(n) => ("rule", n),
        _ => return Err(ActionError::Refused(format!("{scope:?} is not a bank:NAME or rule:NAME scope"))),
    };
    hold(shared, id, user).await?;
    let d = shared.store.incident(id).await?.ok_or_else(|| ActionError::Refused(format!("no incident {id}")))?;
    if d.incident.state == IncidentState::Resolved {
        return Err(ActionError::Refused("the incident is resolved already".into()));
    }
    if !offered_scopes(&d).iter().any(|s| s == scope) {
        return Err(ActionError::Refused(format!("{scope:?} is not a scope of this incident")));
    }
    let mut hashes: Vec<String> = d
        .alerts
        .iter()
        .flat_map(|e| e.alert.explanation.frames.iter().filter_map(|f| f.pdq.clone()))
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .collect();
    hashes.sort();
    hashes.dedup();
    hashes.truncate(vigil_core::bank_update::MAX_HASHES);
    if hashes.is_empty() {
        return Err(ActionError::Refused("the incident names no frame hashes to allow".into()));
    }
    // Before anything is kept, so a false positive never leaves a live command behind:
    // refused (to be tried again) when the withdrawal cannot be written.
    withdraw_pending(shared, &d, &format!("console:{user}"), note).await?;
    let now = now_ms();
    let entry = AllowEntry {
        id: format!("fp/{now}-{}", vigil_core::ids::random_hex(4).unwrap_or_default()),
        incident_id: id.to_string(),
        scope_kind: scope_kind.to_string(),
        scope: scope_name.to_string(),
        hashes,
        note: note.to_string(),
        created_by: created_by.to_string(),
        created_ms: now,
        expires_ms: now + expiry_days as i64 * 86_400_000,
        published_ms: None,
    };
    shared.store.add_allow_entry(&entry).await?;
    shared.store.resolve(id, user, Resolution::FalsePositive, note, now).await?;
    // A command taken in since the first read is withdrawn too (intake withdraws any
    // later one, and the outbox retries what could not be sent).
    if let Some(d) = shared.store.incident(id).await? {
        withdraw_pending(shared, &d, &format!("console:{user}"), note).await?;
    }
    page(shared, PageAction::Resolve, id).await?;
    resolve_queue_age_page(shared, id).await?;
    counted("false_positive");
    // Published now when the broker answers; the publisher task retries otherwise.
    if let Err(e) = publish_allow_entry(shared, &entry).await {
        tracing::warn!(entry = entry.id, "allowlist entry kept, to be published again: {e}");
    }
    Ok(entry)
}

/// The incident's interrupt commands not carried out yet (no cut, dead letter or
/// withdrawal reported for them).
pub fn pending_commands(d: &crate::store::IncidentDetail) -> Vec<&InterruptCommand> {
    let finished = |id: &str| {
        d.outcomes.iter().any(|o| {
            o.outcome.command_id == id && ["cut", "dead_lettered", "withdrawn"].contains(&o.outcome.outcome.as_str())
        })
    };
    // Withdrawn already by a console (its audit entry): not sent again.
    let withdrawn = |id: &str| {
        d.audit.iter().any(|a| {
            a.action == "withdraw" && a.detail["command_ids"].as_array().is_some_and(|ids| ids.iter().any(|x| x == id))
        })
    };
    d.commands.iter().map(|c| &c.command).filter(|c| !finished(&c.command_id) && !withdrawn(&c.command_id)).collect()
}

/// Withdraws the incident's pending commands: a signed `vigil.interrupt.withdrawal` on
/// the interrupts topic for each, keyed like the command so it follows it. The actuator
/// reads ahead for one before it cuts, so one catching up (or retrying) never cuts a
/// stream judged benign; a command cut before its withdrawal stays cut (and reads so).
pub async fn withdraw_pending(
    shared: &Shared,
    d: &crate::store::IncidentDetail,
    by: &str,
    reason: &str,
) -> Result<(), ActionError> {
    let pending = pending_commands(d);
    if pending.is_empty() {
        return Ok(());
    }
    let out = shared.outbound.as_ref().ok_or_else(|| {
        ActionError::Refused("no Kafka cluster is configured: the pending interrupt cannot be withdrawn".into())
    })?;
    let id = &d.incident.id;
    for cmd in &pending {
        let w = vigil_core::InterruptWithdrawal {
            schema: vigil_core::alert::WITHDRAWAL_SCHEMA.into(),
            schema_version: vigil_core::alert::SCHEMA_VERSION,
            command_id: cmd.command_id.clone(),
            stream_id: cmd.stream_id.clone(),
            alert_id: cmd.alert_id.clone(),
            withdrawn_by: by.to_string(),
            reason: reason.chars().take(500).collect(),
            withdrawn_at_unix_ms: now_ms().max(0) as u64,
        };
        let payload = serde_json::to_vec(&w).map_err(|e| ActionError::Kafka(e.to_string()))?;
        let message_id = format!("{}/withdrawn", cmd.command_id);
        let (topic, key, schema) = (&out.interrupts_topic, &cmd.stream_id.0, vigil_core::alert::WITHDRAWAL_SCHEMA);
        send(out, topic, key, &message_id, schema, payload).await?;
    }
    shared.store.mark_withdrawn(id).await?;
    let ids: Vec<&str> = pending.iter().map(|c| c.command_id.as_str()).collect();
    shared.store.audit(by, "withdraw", id, &serde_json::json!({ "command_ids": ids }), now_ms()).await?;
    tracing::info!(incident = id, commands = ?ids, by, "interrupt withdrawn");
    Ok(())
}

/// Banks named in an incident's reasons ("bank NAME id ID at distance D (VARIANT)").
pub fn banks_of(d: &crate::store::IncidentDetail) -> Vec<String> {
    let mut banks: Vec<String> = d
        .alerts
        .iter()
        .flat_map(|a| a.alert.explanation.reasons.iter())
        .filter_map(|r| r.strip_prefix("bank ").and_then(|r| r.split_once(" id ")).map(|(b, _)| b.to_string()))
        .collect();
    banks.sort();
    banks.dedup();
    banks
}

/// What a false positive may be scoped to: the banks that matched; or, for an incident
/// no bank made, the rule that fired (never a bank rule: silencing one would silence
/// every bank).
pub fn offered_scopes(d: &crate::store::IncidentDetail) -> Vec<String> {
    let banks = banks_of(d);
    if banks.is_empty() {
        vec![format!("rule:{}", d.incident.rule)]
    } else {
        banks.into_iter().map(|b| format!("bank:{b}")).collect()
    }
}

pub fn bank_update(shared: &Shared, e: &AllowEntry) -> BankUpdate {
    BankUpdate {
        schema: BANK_UPDATE_SCHEMA.into(),
        schema_version: BANK_UPDATE_SCHEMA_VERSION,
        update_id: e.id.clone(),
        op: BankUpdateOp::Allow,
        scope_kind: if e.scope_kind == "rule" { ScopeKind::Rule } else { ScopeKind::Bank },
        scope: e.scope.clone(),
        hashes: e.hashes.clone(),
        max_distance: shared.cfg.allow_max_distance,
        created_at_unix_ms: e.created_ms as u64,
        expires_at_unix_ms: e.expires_ms as u64,
        created_by: e.created_by.clone(),
        incident_id: Some(e.incident_id.clone()),
    }
}

/// Withdraws an allowlist entry (a compromised account's, a mistaken one): a `revoke`
/// record under the entry's key, so every worker drops it, now and when it replays the
/// topic. Recorded in the audit log, which the incident page reads it back from.
pub async fn revoke_allow_entry(shared: &Shared, incident: &str, entry: &str, user: &str) -> Result<(), ActionError> {
    let d = shared
        .store
        .incident(incident)
        .await?
        .ok_or_else(|| ActionError::Refused(format!("no incident {incident}")))?;
    let e = d
        .allow_entries
        .iter()
        .find(|e| e.id == entry)
        .ok_or_else(|| ActionError::Refused(format!("no allowlist entry {entry:?} on this incident")))?;
    if revoked(&d, &e.id) {
        return Err(ActionError::Refused("the entry is revoked already".into()));
    }
    let out = shared.outbound.as_ref().ok_or_else(|| ActionError::Refused("no Kafka cluster is configured".into()))?;
    let update = BankUpdate {
        op: BankUpdateOp::Revoke,
        hashes: Vec::new(),
        created_by: user.to_string(),
        ..bank_update(shared, e)
    };
    update.check(None).map_err(ActionError::Refused)?;
    let payload = serde_json::to_vec(&update).map_err(|e| ActionError::Kafka(e.to_string()))?;
    send(out, &out.bank_updates_topic, &e.id, &format!("{}/revoke", e.id), BANK_UPDATE_SCHEMA, payload).await?;
    shared.store.audit(user, "allow.revoke", incident, &serde_json::json!({ "entry": e.id }), now_ms()).await?;
    counted("revoke_allow");
    Ok(())
}

/// Whether entry `id` of this incident was revoked (its audit entry).
pub fn revoked(d: &crate::store::IncidentDetail, id: &str) -> bool {
    d.audit.iter().any(|a| a.action == "allow.revoke" && a.detail["entry"] == id)
}

pub async fn publish_allow_entry(shared: &Shared, e: &AllowEntry) -> Result<(), ActionError> {
    let out = shared.outbound.as_ref().ok_or_else(|| ActionError::Refused("no Kafka cluster is configured".into()))?;
    let update = bank_update(shared, e);
    update.check(None).map_err(ActionError::Refused)?;
    let payload = serde_json::to_vec(&update).map_err(|e| ActionError::Kafka(e.to_string()))?;
    let sent = send(out, &out.bank_updates_topic, &e.id, &e.id, BANK_UPDATE_SCHEMA, payload).await;
    METRICS.allowlist_published.with_label_values(&[if sent.is_ok() { "ok" } else { "failed" }]).inc();
    sent?;
    shared.store.mark_allow_published(&e.id, now_ms()).await?;
    Ok(())
}

/// One record, confirmed by the broker (librdkafka's flush) off the runtime's threads.
async fn send(
    out: &crate::state::Outbound,
    topic: &str,
    key: &str,
    message_id: &str,
    schema: &str,
    payload: Vec<u8>,
) -> Result<(), ActionError> {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::BaseRecord;
    let producer = out.producer.clone();
    let trust = out.trust.clone();
    let (topic, key, message_id, schema) =
        (topic.to_string(), key.to_string(), message_id.to_string(), schema.to_string());
    tokio::task::spawn_blocking(move || {
        let headers = OwnedHeaders::new()
            .insert(Header { key: "vigil-schema", value: Some(&schema) })
            .insert(Header { key: "vigil-message-id", value: Some(&message_id) });
        let headers = trust.sign_into(&topic, Some(key.as_bytes()), Some(&payload), headers);
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        producer
            .send(BaseRecord::with_opaque_to(&topic, Box::new(tx)).key(&key).payload(&payload).headers(headers))
            .map_err(|(e, _)| ActionError::Kafka(e.to_string()))?;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            producer.poll(Duration::from_millis(50));
            match rx.try_recv() {
                Ok(confirmed) => return confirmed.map_err(ActionError::Kafka),
                Err(_) if std::time::Instant::now() >= deadline => {
                    return Err(ActionError::Kafka("the broker did not confirm it within 10 s".into()));
                }
                Err(_) => {}
            }
        }
    })
    .await
    .map_err(|e| ActionError::Kafka(e.to_string()))?
}

/// The queue-age page of an incident (see [`crate::paging`]), resolved once someone
/// has it.
async fn resolve_queue_age_page(shared: &Shared, id: &str) -> Result<(), StoreError> {
    crate::queue_age::resolve(shared, id).await
}
