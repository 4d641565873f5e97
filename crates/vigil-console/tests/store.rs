//! The console store, each test run against SQLite (a temp file) and a real PostgreSQL
//! server (`common::postgres`): the same body, the same expectations.

mod common;

use common::TestDb;
use serde_json::json;
use sqlx::Row;
use vigil_console::model::{
    ActionOutcome, Channel, IncidentState, InterruptState, OutboxItem, PageAction, PageSubject, Resolution, Role,
};
use vigil_console::store::{AllowEntry, Applied, AuditKey, Store, StoreError, audit, migrations};
use vigil_core::{Alert, AlertEvent, EvidenceFrame, Explanation, InterruptCommand, ModelRef, StreamId, Verdict};

const DAY_MS: i64 = 86_400_000;
const PDQ: &str = "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22";

fn alert(id: &str, event: AlertEvent, emitted: u64, decision: Verdict, rule: &str) -> Alert {
    Alert {
        schema: "vigil.alert".into(),
        schema_version: 1,
        alert_id: id.into(),
        event,
        stream_id: StreamId(format!("stream-{id}")),
        account_id: Some("acct-7".into()),
        session_id: None,
        started_ms: 1_000,
        last_seen_ms: 4_000,
        emitted_at_unix_ms: emitted,
        decision,
        rule: rule.into(),
        explanation: Explanation {
            reasons: vec![format!("{rule} matched")],
            frames: vec![EvidenceFrame { pts_ms: 2_000, pdq: Some(PDQ.into()), conditions: vec!["banked".into()] }],
            models: vec![ModelRef { name: "pdq".into(), version: "1".into() }],
            policy: "default".into(),
            policy_version: "3".into(),
        },
        worker_id: "worker-a".into(),
        reissue: None,
        origin: None,
    }
}

fn opened(id: &str, emitted: u64) -> Alert {
    alert(id, AlertEvent::Opened, emitted, Verdict::Review, "bank_match")
}

fn command(alert_id: &str, issued: u64) -> InterruptCommand {
    InterruptCommand {
        schema: "vigil.interrupt".into(),
        schema_version: 1,
        command_id: format!("{alert_id}/interrupt"),
        alert_id: alert_id.into(),
        stream_id: StreamId(format!("stream-{alert_id}")),
        account_id: Some("acct-7".into()),
        session_id: None,
        rule: "bank_match".into(),
        issued_at_unix_ms: issued,
        worker_id: "worker-a".into(),
    }
}

fn outcome(command_id: &str, what: &str, attempts: u32, at: u64) -> ActionOutcome {
    ActionOutcome {
        schema: "vigil.action".into(),
        schema_version: 1,
        command_id: command_id.into(),
        stream_id: "stream-x".into(),
        outcome: what.into(),
        reason: (what != "cut").then(|| "http_5xx".to_string()),
        detail: format!("{what} after {attempts}"),
        attempts,
        at_unix_ms: at,
    }
}

fn page(id: &str, next_attempt_ms: i64) -> OutboxItem {
    OutboxItem {
        id: id.into(),
        channel: Channel::Pagerduty,
        action: PageAction::Trigger,
        subject: PageSubject {
            incident_id: "inc-1".into(),
            stream_id: "stream-inc-1".into(),
            account_id: None,
            decision: "interrupt".into(),
            rule: "bank_match".into(),
            detected_at_ms: 1_000,
            link: "https://console.example/incidents/inc-1".into(),
        },
        attempts: 0,
        next_attempt_ms,
        last_error: None,
    }
}

async fn state(store: &Store, id: &str) -> vigil_console::store::Incident {
    store.incident(id).await.unwrap().unwrap_or_else(|| panic!("incident {id} missing")).incident
}

fn is_conflict(r: Result<impl std::fmt::Debug, StoreError>, mentions: &str) {
    match r {
        Err(StoreError::Conflict(msg)) => assert!(msg.contains(mentions), "conflict {msg:?} should mention {mentions}"),
        other => panic!("expected a conflict mentioning {mentions}, got {other:?}"),
    }
}

both!(
    dollar_placeholders_bind_by_number,
    migrations_from_empty_and_reopen,
    newer_schema_is_refused,
    replicas_starting_together_migrate_once,
    duplicate_deliveries_change_nothing,
    out_of_order_delivery,
    interrupt_outcomes,
    queue_order_and_lock_expiry,
    holds_conflict_between_users,
    review_state_rules,
    daily_medians_on_known_numbers,
    outbox_survives_reopen,
    sessions_expire,
    allow_entries,
    audit_chain_detects_tampering,
    concurrent_audit_appenders_keep_one_chain,
    replicas_racing_on_commands_and_outcomes,
    replicas_racing_for_one_lock,
    hostile_strings_round_trip,
    a_password_change_ends_the_users_sessions,
    the_audit_chain_is_keyed,
    a_chain_from_before_the_key_is_sealed_and_stays_verifiable,
    repeated_views_are_one_entry_per_user_per_hour,
    stream_events_and_file_scans,
    false_positive_proposals_wait_one_per_incident,
    a_withdrawal_stays_unless_a_cut_came_first,
    the_queue_searched_filtered_and_paged,
    assignments_and_hand_overs,
);

/// An incident is assigned, handed over, and given back to nobody; only to an enabled
/// reviewer or admin; every change audited with both names.
async fn assignments_and_hand_overs(db: &TestDb) {
    let store = db.open().await;
    store.record_alert(&opened("a1", 1_000), 1_000).await.unwrap();
    store.upsert_user("alice", None, Role::Reviewer).await.unwrap();
    store.upsert_user("ada", None, Role::Admin).await.unwrap();
    store.upsert_user("vic", None, Role::Viewer).await.unwrap();
    store.upsert_user("rita", None, Role::Reviewer).await.unwrap();
    store.set_user_disabled("rita", true).await.unwrap();
    assert_eq!(store.assign("a1", "alice", "ada", 2_000).await.unwrap(), None);
    assert_eq!(state(&store, "a1").await.assignee.as_deref(), Some("alice"));
    assert_eq!(store.assign("a1", "ada", "alice", 3_000).await.unwrap().as_deref(), Some("alice"), "handed over");
    for refused in ["vic", "rita", "ghost"] {
        assert!(matches!(store.assign("a1", refused, "ada", 4_000).await, Err(StoreError::Invalid(_))), "{refused}");
    }
    assert!(matches!(store.assign("nope", "ada", "ada", 4_000).await, Err(StoreError::NotFound(_))));
    store.assign("a1", "", "ada", 5_000).await.unwrap();
    assert_eq!(state(&store, "a1").await.assignee, None);
    let rows = store.queue(6_000).await.unwrap();
    assert_eq!(rows[0].assignee, None);
    let (entries, _) = store.audit_page("a1", 0, 50).await.unwrap();
    let assigns: Vec<_> = entries.iter().filter(|e| e.action == "assign").map(|e| e.detail.clone()).collect();
    assert_eq!(assigns.len(), 3, "{assigns:?}");
    assert!(assigns.iter().any(|d| d["from"] == "alice" && d["to"] == "ada"), "{assigns:?}");
}

/// Search by stream, account, id and hash; filters; the history newest first; keyset
/// pages that neither skip nor repeat; hostile search text is only text.
async fn the_queue_searched_filtered_and_paged(db: &TestDb) {
    use vigil_console::store::QueueFilter;
    let store = db.open().await;
    for (i, id) in ["q1", "q2", "q3", "q4", "q5"].iter().enumerate() {
        let mut a = opened(id, 1_000 + i as u64 * 100);
        if *id == "q3" {
            a.decision = Verdict::Interrupt;
            a.account_id = Some("Acct-50%_off".into());
            a.explanation.reasons = vec!["bank known id astronaut-1 at distance 2 (original)".into()];
            a.explanation.frames[0].pdq = Some("0".repeat(64));
        }
        store.record_alert(&a, 1_000 + i as i64 * 100).await.unwrap();
    }
    store.hold("q2", "alice", 2_000, DAY_MS).await.unwrap();
    store.resolve("q2", "alice", Resolution::NoAction, "", 2_100).await.unwrap();
    store.hold("q4", "alice", 2_000, DAY_MS).await.unwrap();
    store.resolve("q4", "alice", Resolution::Confirmed, "", 2_200).await.unwrap();
    let ids = |p: &vigil_console::store::QueuePage| p.rows.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
    let search = |f: QueueFilter| {
        let store = &store;
        async move { store.search(&f, 50, 10_000).await.unwrap() }
    };
    assert_eq!(ids(&search(QueueFilter::default()).await), ["q1", "q3", "q5"], "the open queue, oldest first");
    let history = QueueFilter { state: Some(IncidentState::Resolved), newest_first: true, ..QueueFilter::default() };
    assert_eq!(ids(&search(history).await), ["q4", "q2"], "the history, newest first");
    let all = QueueFilter { any_state: true, ..QueueFilter::default() };
    assert_eq!(search(all.clone()).await.rows.len(), 5);
    let text = |t: &str| QueueFilter { text: Some(t.into()), any_state: true, ..QueueFilter::default() };
    assert_eq!(ids(&search(text("STREAM-Q5")).await), ["q5"], "the stream, any case");
    assert_eq!(ids(&search(text("50%_off")).await), ["q3"], "the account, LIKE's characters as text");
    assert!(search(text("a_c")).await.rows.is_empty(), "an _ is an underscore (as a wildcard it matches acct)");
    assert!(search(text("t-%")).await.rows.is_empty(), "a % is a percent sign");
    assert_eq!(ids(&search(text(&"0".repeat(64))).await), ["q3"], "a frame's PDQ hash");
    assert_eq!(search(text("q")).await.rows.len(), 5, "part of an id");
    assert!(search(text("'; DROP TABLE incidents; --")).await.rows.is_empty());
    let interrupt = QueueFilter { decision: Some("interrupt".into()), ..QueueFilter::default() };
    assert_eq!(ids(&search(interrupt).await), ["q3"]);
    let bank = QueueFilter { bank: Some("known".into()), any_state: true, ..QueueFilter::default() };
    assert_eq!(ids(&search(bank).await), ["q3"]);
    let window = QueueFilter { from_ms: Some(1_100), to_ms: Some(1_300), any_state: true, ..QueueFilter::default() };
    assert_eq!(ids(&search(window).await), ["q2", "q3"]);
    // Pages of two: every incident once, in order.
    let mut seen = Vec::new();
    let mut f = all;
    loop {
        let page = store.search(&f, 2, 10_000).await.unwrap();
        assert!(page.rows.len() <= 2);
        seen.extend(ids(&page));
        match page.next {
            Some(next) => f.after = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, ["q1", "q2", "q3", "q4", "q5"]);
}

/// Four eyes: one proposal per incident, read back as written, gone once decided.
async fn false_positive_proposals_wait_one_per_incident(db: &TestDb) {
    let store = db.open().await;
    store.record_alert(&opened("p1", 1_000), 1_000).await.unwrap();
    let p = vigil_console::store::FpProposal {
        incident_id: "p1".into(),
        proposed_by: "alice".into(),
        scope: "bank:known".into(),
        note: "a test pattern; 'quoted' \"and\" ünïcode".into(),
        expiry_days: 30,
        proposed_ms: 2_000,
    };
    assert_eq!(store.false_positive_proposal("p1").await.unwrap(), None);
    store.propose_false_positive(&p).await.unwrap();
    assert_eq!(store.false_positive_proposal("p1").await.unwrap(), Some(p.clone()));
    let second = vigil_console::store::FpProposal { proposed_by: "bob".into(), ..p.clone() };
    is_conflict(store.propose_false_positive(&second).await, "already proposed");
    let ghost = vigil_console::store::FpProposal { incident_id: "ghost".into(), ..p.clone() };
    assert!(matches!(store.propose_false_positive(&ghost).await, Err(StoreError::NotFound(_))));
    assert!(store.drop_false_positive_proposal("p1").await.unwrap());
    assert!(!store.drop_false_positive_proposal("p1").await.unwrap());
    assert_eq!(store.false_positive_proposal("p1").await.unwrap(), None);
}

/// A withdrawn interrupt stays withdrawn through later failures, but a confirmed cut
/// (an actuator that acted before it read the withdrawal) is the truth.
async fn a_withdrawal_stays_unless_a_cut_came_first(db: &TestDb) {
    let store = db.open().await;
    for id in ["w1", "w2"] {
        store.record_alert(&opened(id, 1_000), 1_000).await.unwrap();
        store.record_command(&command(id, 1_100), "worker:w", 1_100).await.unwrap();
        assert_eq!(store.mark_withdrawn(id).await.unwrap(), InterruptState::Withdrawn);
    }
    store.record_outcome(&outcome("w1/interrupt", "failed", 1, 1_200), 1_210).await.unwrap();
    store.record_outcome(&outcome("w1/interrupt", "withdrawn", 0, 1_300), 1_310).await.unwrap();
    assert_eq!(state(&store, "w1").await.interrupt_state, InterruptState::Withdrawn);
    store.record_outcome(&outcome("w2/interrupt", "cut", 1, 1_200), 1_210).await.unwrap();
    assert_eq!(state(&store, "w2").await.interrupt_state, InterruptState::CutConfirmed);
    assert_eq!(store.mark_withdrawn("w2").await.unwrap(), InterruptState::CutConfirmed, "a cut stays a cut");
}

/// A worker's stream events are kept once each and read back in order; a file scan's
/// incident keeps its origin, on the incident and in the queue.
async fn stream_events_and_file_scans(db: &TestDb) {
    use vigil_console::model::StreamEvent;
    let store = db.open().await;
    let event = |name: &str, at: u64| StreamEvent {
        schema: "vigil.stream".into(),
        schema_version: 1,
        stream_id: "rtmp/live/x".into(),
        event: name.into(),
        at_unix_ms: at,
        worker_id: "worker-a".into(),
        detail: Some("rtmp publish from 127.0.0.1:5000".into()),
        reason: None,
    };
    for (name, at) in [("started", 1_000), ("decoding", 1_100), ("cut", 5_000), ("ended", 5_200)] {
        assert_eq!(store.record_stream_event(&event(name, at), at as i64 + 5).await.unwrap(), Applied::New);
    }
    assert_eq!(store.record_stream_event(&event("cut", 5_000), 9_999).await.unwrap(), Applied::Duplicate);
    let events = store.stream_events("rtmp/live/x", 0).await.unwrap();
    let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(names, ["started", "decoding", "cut", "ended"]);
    assert_eq!(events[0].detail.as_deref(), Some("rtmp publish from 127.0.0.1:5000"));
    let recent = store.recent_stream_events("rtmp/live/x").await.unwrap();
    let recent: Vec<(&str, i64)> = recent.iter().map(|(e, t)| (e.as_str(), *t)).collect();
    assert_eq!(vigil_console::model::liveness(&recent, |t| t.to_string()), "cut at 5000");

    let mut scan = opened("scan-1", 2_000);
    scan.origin = Some(vigil_core::AlertOrigin::FileScan);
    store.record_alert(&scan, 2_010).await.unwrap();
    store.record_alert(&opened("live-1", 2_000), 2_010).await.unwrap();
    assert_eq!(state(&store, "scan-1").await.origin.as_deref(), Some("file_scan"));
    assert_eq!(state(&store, "live-1").await.origin, None);
    let queue = store.queue(3_000).await.unwrap();
    let origin = |id: &str| queue.iter().find(|r| r.id == id).unwrap().origin.clone();
    assert_eq!((origin("scan-1").as_deref(), origin("live-1")), (Some("file_scan"), None));

    // A worker pulling the stream saw the command: it arrived; nothing is decided yet.
    let cmd = command("live-1", 2_100);
    store.record_command(&cmd, "console:alice", 2_110).await.unwrap();
    assert_eq!(store.record_outcome(&outcome(&cmd.command_id, "seen", 1, 2_200), 2_210).await.unwrap(), Applied::New);
    assert_eq!(state(&store, "live-1").await.interrupt_state, InterruptState::Issued);
    let row = store.queue(3_000).await.unwrap().into_iter().find(|r| r.id == "live-1").unwrap();
    assert_eq!((row.last_command_ms, row.seen_ms), (Some(2_110), Some(2_210)));
    assert!(!row.interrupt_state.not_found(row.last_command_ms, row.seen_ms, 60_000), "answered: not 'not found'");
    store.record_outcome(&outcome(&cmd.command_id, "cut", 1, 2_300), 2_310).await.unwrap();
    assert_eq!(state(&store, "live-1").await.interrupt_state, InterruptState::CutConfirmed);
}

/// `$N` is bound by number on both backends (SQLite included), reused or out of order.
async fn dollar_placeholders_bind_by_number(db: &TestDb) {
    let _store = db.open().await;
    let raw = db.raw().await;
    let row =
        sqlx::query("SELECT $2 AS b, $1 AS a, $1 AS a_again").bind("one").bind("two").fetch_one(&raw).await.unwrap();
    assert_eq!(row.try_get::<String, _>("b").unwrap(), "two");
    assert_eq!(row.try_get::<String, _>("a").unwrap(), "one");
    assert_eq!(row.try_get::<String, _>("a_again").unwrap(), "one");
}

async fn migrations_from_empty_and_reopen(db: &TestDb) {
    let store = db.open().await;
    let latest = migrations::latest_version();
    assert_eq!(store.schema_version().await.unwrap(), latest);
    store.ping().await.unwrap();
    store.record_alert(&opened("inc-1", 1_000), 1_001).await.unwrap();
    store.close().await;

    let again = db.open().await;
    assert_eq!(again.schema_version().await.unwrap(), latest);
    assert!(again.incident("inc-1").await.unwrap().is_some(), "data survives a reopen");
    let raw = db.raw().await;
    let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM schema_migrations").fetch_one(&raw).await.unwrap().get("n");
    assert_eq!(n, migrations::MIGRATIONS.len() as i64, "each migration recorded once");
    if db.backend == "sqlite" {
        let mode: String = sqlx::query("PRAGMA journal_mode").fetch_one(&raw).await.unwrap().get(0);
        assert_eq!(mode, "wal", "the file is in WAL mode");
    }
}

async fn newer_schema_is_refused(db: &TestDb) {
    db.open().await.close().await;
    let raw = db.raw().await;
    let future = migrations::latest_version() + 1;
    sqlx::query("INSERT INTO schema_migrations (version, name, applied_ms) VALUES ($1, 'from_the_future', 0)")
        .bind(future)
        .execute(&raw)
        .await
        .unwrap();
    match Store::open(&db.url, common::key()).await {
        Err(e @ StoreError::SchemaTooNew { found, known }) => {
            assert_eq!((found, known), (future, migrations::latest_version()));
            assert!(e.to_string().contains("newer"), "{e}");
        }
        other => panic!("a newer schema must be refused, got {other:?}"),
    }
}

async fn replicas_starting_together_migrate_once(db: &TestDb) {
    let (a, b, c) = tokio::join!(
        Store::open(&db.url, common::key()),
        Store::open(&db.url, common::key()),
        Store::open(&db.url, common::key())
    );
    for s in [a, b, c] {
        assert_eq!(s.unwrap().schema_version().await.unwrap(), migrations::latest_version());
    }
}

async fn duplicate_deliveries_change_nothing(db: &TestDb) {
    let store = db.open().await;
    let a = opened("inc-1", 1_000);
    let cmd = command("inc-1", 1_200);
    let out = outcome(&cmd.command_id, "cut", 1, 1_500);
    assert_eq!(store.record_alert(&a, 1_010).await.unwrap(), Applied::New);
    assert_eq!(store.record_command(&cmd, "worker:worker-a", 1_210).await.unwrap(), Applied::New);
    assert_eq!(store.record_outcome(&out, 1_510).await.unwrap(), Applied::New);
    let before = store.incident("inc-1").await.unwrap().unwrap();

    // Redelivered later, with other receive times: nothing moves.
    assert_eq!(store.record_alert(&a, 9_000).await.unwrap(), Applied::Duplicate);
    assert_eq!(store.record_command(&cmd, "someone-else", 9_000).await.unwrap(), Applied::Duplicate);
    assert_eq!(store.record_outcome(&out, 9_000).await.unwrap(), Applied::Duplicate);
    assert_eq!(store.incident("inc-1").await.unwrap().unwrap(), before);
    assert_eq!(before.alerts.len(), 1);
    assert_eq!(before.alerts[0].alert, a, "the full alert is kept");
    assert_eq!(before.alerts[0].received_ms, 1_010);
    assert_eq!(before.commands[0].command, cmd);
    assert_eq!(before.commands[0].issued_by, "worker:worker-a");
    assert_eq!(before.outcomes[0].outcome, out);
}

async fn out_of_order_delivery(db: &TestDb) {
    let store = db.open().await;
    // The escalation overtakes the opening.
    let esc = alert("inc-1", AlertEvent::Escalated, 2_000, Verdict::Interrupt, "escalated_rule");
    store.record_alert(&esc, 2_001).await.unwrap();
    let inc = state(&store, "inc-1").await;
    assert_eq!((inc.decision.as_str(), inc.rule.as_str(), inc.detected_ms), ("interrupt", "escalated_rule", 2_000));
    assert_eq!(inc.state, IncidentState::Open);

    store.record_alert(&opened("inc-1", 1_000), 2_002).await.unwrap();
    let inc = state(&store, "inc-1").await;
    assert_eq!(inc.detected_ms, 1_000, "detection is the opening's time");
    assert_eq!(
        (inc.decision.as_str(), inc.rule.as_str()),
        ("interrupt", "escalated_rule"),
        "the later event's decision stays"
    );
    assert_eq!((inc.stream_id.as_str(), inc.worker_id.as_str()), ("stream-inc-1", "worker-a"));
    assert_eq!(inc.account_id.as_deref(), Some("acct-7"));

    // Closing records the worker's end, the review state is untouched.
    store
        .record_alert(&alert("inc-1", AlertEvent::Closed, 5_000, Verdict::Interrupt, "escalated_rule"), 5_001)
        .await
        .unwrap();
    let detail = store.incident("inc-1").await.unwrap().unwrap();
    assert_eq!(detail.incident.stream_closed_ms, Some(5_000));
    assert_eq!(detail.incident.state, IncidentState::Open);
    let events: Vec<AlertEvent> = detail.alerts.iter().map(|r| r.alert.event).collect();
    assert_eq!(events, [AlertEvent::Opened, AlertEvent::Escalated, AlertEvent::Closed], "timeline in emission order");

    // The outcome overtakes its command: kept, applied when the command comes.
    let cmd = command("inc-2", 3_100);
    store.record_alert(&opened("inc-2", 3_000), 3_001).await.unwrap();
    assert_eq!(store.record_outcome(&outcome(&cmd.command_id, "cut", 1, 3_400), 3_401).await.unwrap(), Applied::New);
    assert_eq!(state(&store, "inc-2").await.interrupt_state, InterruptState::None);
    store.record_command(&cmd, "worker:worker-a", 3_500).await.unwrap();
    let detail = store.incident("inc-2").await.unwrap().unwrap();
    assert_eq!(detail.incident.interrupt_state, InterruptState::CutConfirmed);
    assert_eq!((detail.incident.interrupt_issued_ms, detail.incident.cut_ms), (Some(3_100), Some(3_400)));
    assert_eq!(detail.outcomes.len(), 1);

    // A command before any alert creates the incident; the opening then fills it in.
    let cmd3 = command("inc-3", 7_000);
    store.record_command(&cmd3, "worker:worker-a", 7_001).await.unwrap();
    let inc = state(&store, "inc-3").await;
    assert_eq!((inc.decision.as_str(), inc.interrupt_state), ("interrupt", InterruptState::Issued));
    let mut op = alert("inc-3", AlertEvent::Opened, 7_000, Verdict::Interrupt, "bank_match");
    op.session_id = Some("sess-1".into());
    store.record_alert(&op, 7_002).await.unwrap();
    let inc = state(&store, "inc-3").await;
    assert_eq!((inc.detected_ms, inc.session_id.as_deref()), (7_000, Some("sess-1")));
    assert_eq!(inc.interrupt_state, InterruptState::Issued);
}

async fn interrupt_outcomes(db: &TestDb) {
    let store = db.open().await;
    store.record_alert(&opened("inc-1", 1_000), 1_000).await.unwrap();
    let cmd = command("inc-1", 1_100);
    store.record_command(&cmd, "worker:worker-a", 1_100).await.unwrap();
    assert_eq!(state(&store, "inc-1").await.interrupt_state, InterruptState::Issued);
    // The dead letter arrives before the failure that preceded it.
    store.record_outcome(&outcome(&cmd.command_id, "dead_lettered", 3, 1_900), 2_000).await.unwrap();
    store.record_outcome(&outcome(&cmd.command_id, "failed", 2, 1_500), 2_001).await.unwrap();
    assert_eq!(state(&store, "inc-1").await.interrupt_state, InterruptState::DeadLettered);
    // A replayed command is cut after all; nothing moves it back.
    store.record_outcome(&outcome(&cmd.command_id, "cut", 4, 2_500), 2_501).await.unwrap();
    store.record_outcome(&outcome(&cmd.command_id, "failed", 5, 2_600), 2_601).await.unwrap();
    let inc = state(&store, "inc-1").await;
    assert_eq!((inc.interrupt_state, inc.cut_ms), (InterruptState::CutConfirmed, Some(2_500)));
    // An outcome for a command never seen is kept without touching anything.
    assert_eq!(store.record_outcome(&outcome("nobody/interrupt", "cut", 1, 3_000), 3_000).await.unwrap(), Applied::New);
    // A value outside the schema is refused, not stored.
    assert!(matches!(
        store.record_outcome(&outcome(&cmd.command_id, "exploded", 1, 3_000), 3_000).await,
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(store.incident("inc-1").await.unwrap().unwrap().outcomes.len(), 4);
}

async fn queue_order_and_lock_expiry(db: &TestDb) {
    let store = db.open().await;
    for (id, t) in [("late", 3_000), ("first", 1_000), ("middle", 2_000), ("done", 500)] {
        store.record_alert(&opened(id, t), t as i64).await.unwrap();
    }
    store.hold("done", "alice", 4_000, 60_000).await.unwrap();
    store.resolve("done", "alice", Resolution::NoAction, "stream had ended", 4_000).await.unwrap();

    let q = store.queue(5_000).await.unwrap();
    let ids: Vec<&str> = q.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["first", "middle", "late"], "unresolved only, oldest detection first");
    assert_eq!(q[0].age_ms, 4_000);
    assert_eq!((q[0].decision.as_str(), q[0].rule.as_str()), ("review", "bank_match"));
    assert_eq!((q[0].state, q[0].interrupt_state), (IncidentState::Open, InterruptState::None));
    assert_eq!(store.oldest_unacknowledged().await.unwrap(), Some(("first".to_string(), 1_000)));

    store.hold("first", "alice", 5_000, 1_000).await.unwrap();
    assert_eq!(store.queue(5_999).await.unwrap()[0].holder.as_deref(), Some("alice"));
    assert_eq!(store.queue(6_000).await.unwrap()[0].holder, None, "the lock expires at hold time + ttl");

    store.hold("first", "alice", 5_500, 1_000).await.unwrap();
    store.acknowledge("first", "alice", 5_600).await.unwrap();
    assert_eq!(store.oldest_unacknowledged().await.unwrap(), Some(("middle".to_string(), 2_000)));
    assert_eq!(store.queue(5_700).await.unwrap()[0].state, IncidentState::Acknowledged);
}

async fn holds_conflict_between_users(db: &TestDb) {
    let store = db.open().await;
    store.record_alert(&opened("inc-1", 1_000), 1_000).await.unwrap();
    assert_eq!(store.hold("inc-1", "alice", 10_000, 5_000).await.unwrap(), 15_000);
    is_conflict(store.hold("inc-1", "bob", 11_000, 5_000).await, "alice");
    is_conflict(store.acknowledge("inc-1", "bob", 11_000).await, "alice");
    is_conflict(store.release_at("inc-1", "bob", 11_000).await, "alice");
    store.release_at("inc-1", "bob", 15_000).await.unwrap(); // alice's lock has lapsed: nothing to do
    // alice renews (not audited again); after it lapses bob takes it and alice is out.
    assert_eq!(store.hold("inc-1", "alice", 12_000, 5_000).await.unwrap(), 17_000);
    assert_eq!(store.hold("inc-1", "bob", 17_000, 5_000).await.unwrap(), 22_000);
    is_conflict(store.hold("inc-1", "alice", 17_001, 5_000).await, "bob");
    is_conflict(store.escalate("inc-1", "alice", "why", 17_001).await, "bob");
    store.release_at("inc-1", "bob", 18_000).await.unwrap();
    store.release_at("inc-1", "bob", 18_001).await.unwrap();
    // `release` reads the clock: a lock taken now is released now.
    let now = vigil_console::model::now_ms();
    store.hold("inc-1", "alice", now, 60_000).await.unwrap();
    store.release("inc-1", "alice").await.unwrap();
    assert_eq!(state(&store, "inc-1").await.holder, None);
    let actions: Vec<(String, String)> =
        store.incident("inc-1").await.unwrap().unwrap().audit.into_iter().map(|e| (e.actor, e.action)).collect();
    let want = [("alice", "hold"), ("bob", "hold"), ("bob", "release"), ("alice", "hold"), ("alice", "release")];
    assert_eq!(actions, want.map(|(a, b)| (a.to_string(), b.to_string())));
    assert!(matches!(store.hold("nope", "alice", 1, 1).await, Err(StoreError::NotFound(m)) if m == "incident nope"));
}

async fn review_state_rules(db: &TestDb) {
    let store = db.open().await;
    store.record_alert(&opened("inc-1", 1_000), 1_000).await.unwrap();
    is_conflict(store.acknowledge("inc-1", "alice", 2_000).await, "hold it first");
    store.hold("inc-1", "alice", 2_000, 60_000).await.unwrap();
    assert_eq!(store.acknowledge("inc-1", "alice", 3_000).await.unwrap(), Applied::New);
    assert_eq!(store.acknowledge("inc-1", "alice", 3_500).await.unwrap(), Applied::Duplicate, "a no-op");
    store.escalate("inc-1", "alice", "needs legal", 4_000).await.unwrap();
    is_conflict(store.escalate("inc-1", "alice", "again", 4_500).await, "already escalated by alice");
    assert_eq!(store.acknowledge("inc-1", "alice", 4_600).await.unwrap(), Applied::Duplicate);
    store.resolve("inc-1", "alice", Resolution::Confirmed, "reported", 5_000).await.unwrap();
    is_conflict(
        store.resolve("inc-1", "alice", Resolution::Duplicate, "", 5_100).await,
        "already resolved as confirmed",
    );
    is_conflict(store.hold("inc-1", "alice", 5_200, 1_000).await, "resolved");
    is_conflict(store.acknowledge("inc-1", "alice", 5_300).await, "resolved");

    let inc = state(&store, "inc-1").await;
    assert_eq!(inc.state, IncidentState::Resolved);
    assert_eq!((inc.acknowledged_ms, inc.acknowledged_by.as_deref()), (Some(3_000), Some("alice")));
    assert_eq!((inc.escalated_ms, inc.escalation_note.as_deref()), (Some(4_000), Some("needs legal")));
    assert_eq!((inc.resolved_ms, inc.resolved_by.as_deref()), (Some(5_000), Some("alice")));
    assert_eq!((inc.resolution, inc.resolution_note.as_deref()), (Some(Resolution::Confirmed), Some("reported")));
    assert_eq!(inc.holder, None, "resolving releases the lock");
    let actions: Vec<String> =
        store.audit_entries(Some("inc-1"), 10).await.unwrap().into_iter().map(|e| e.action).collect();
    assert_eq!(actions, ["resolve", "escalate", "acknowledge", "hold"], "one entry per change, newest first");

    // Straight from open to resolved: the resolution is also the acknowledgement.
    store.record_alert(&opened("inc-2", 1_000), 1_000).await.unwrap();
    store.hold("inc-2", "bob", 2_000, 60_000).await.unwrap();
    store.resolve("inc-2", "bob", Resolution::FalsePositive, "a cartoon", 9_000).await.unwrap();
    let inc = state(&store, "inc-2").await;
    assert_eq!((inc.acknowledged_ms, inc.acknowledged_by.as_deref()), (Some(9_000), Some("bob")));
    assert!(matches!(store.acknowledge("ghost", "bob", 1).await, Err(StoreError::NotFound(_))));
}

async fn daily_medians_on_known_numbers(db: &TestDb) {
    let store = db.open().await;
    let d0 = 19_792 * DAY_MS; // 2024-03-10
    let d1 = d0 + DAY_MS;
    let at = |base: i64, off: i64| base + off;
    // Day 0: a (ack 60 s, cut 9 s, resolved 600 s), b (ack 120 s, command 5 s, no cut),
    // c (ack 30 s, no interrupt, resolved 300 s).
    let (a, b, c) = (at(d0, 1_000), at(d0, 2_000), at(d0, 3_000));
    for (id, t) in [("a", a), ("b", b), ("c", c), ("d", at(d1, 500)), ("before", d0 - 1)] {
        store.record_alert(&opened(id, t as u64), t).await.unwrap();
    }
    for (id, t, ack) in [("a", a, 60_000), ("b", b, 120_000), ("c", c, 30_000)] {
        store.hold(id, "alice", t, DAY_MS).await.unwrap();
        store.acknowledge(id, "alice", t + ack).await.unwrap();
    }
    store.record_command(&command("a", (a + 2_000) as u64), "worker:w", a + 2_000).await.unwrap();
    store.record_outcome(&outcome("a/interrupt", "cut", 1, (a + 9_000) as u64), a + 9_000).await.unwrap();
    store.record_command(&command("b", (b + 5_000) as u64), "alice", b + 5_000).await.unwrap();
    store.resolve("a", "alice", Resolution::Confirmed, "", a + 600_000).await.unwrap();
    store.resolve("c", "alice", Resolution::FalsePositive, "", c + 300_000).await.unwrap();

    // A file scan that day is no incident anyone responded to: not counted.
    let mut scan = opened("scan", at(d0, 4_000) as u64);
    scan.origin = Some(vigil_core::AlertOrigin::FileScan);
    store.record_alert(&scan, at(d0, 4_000)).await.unwrap();

    let days = store.daily_medians(d0, d1 + DAY_MS).await.unwrap();
    assert_eq!(days.len(), 2, "{days:?}");
    assert_eq!(
        (days[0].acknowledged, days[0].interrupted, days[0].resolved),
        (3, 2, 2),
        "the count behind each median"
    );
    assert_eq!(store.daily_medians(d0, d1).await.unwrap().len(), 1, "the range ends before its last bound");
    assert_eq!(store.daily_medians(d1, d1 + DAY_MS).await.unwrap()[0].incidents, 1);
    assert_eq!((days[0].day.as_str(), days[0].day_start_ms, days[0].incidents), ("2024-03-10", d0, 3));
    assert_eq!(days[0].to_acknowledge_ms, Some(60_000));
    assert_eq!(days[0].to_interrupt_ms, Some(7_000), "median of the cut (9 s) and the command (5 s)");
    assert_eq!(days[0].to_resolve_ms, Some(450_000));
    assert_eq!((days[1].day.as_str(), days[1].incidents), ("2024-03-11", 1));
    assert_eq!((days[1].to_acknowledge_ms, days[1].to_interrupt_ms, days[1].to_resolve_ms), (None, None, None));
}

async fn outbox_survives_reopen(db: &TestDb) {
    let store = db.open().await;
    assert_eq!(store.enqueue_page(&page("p1", 1_000), 100).await.unwrap(), Applied::New);
    assert_eq!(store.enqueue_page(&page("p2", 5_000), 200).await.unwrap(), Applied::New);
    assert_eq!(store.enqueue_page(&page("p0", 1_500), 300).await.unwrap(), Applied::New);
    assert_eq!(store.enqueue_page(&page("p1", 0), 400).await.unwrap(), Applied::Duplicate);
    let due: Vec<String> = store.due_pages(2_000, 10).await.unwrap().into_iter().map(|p| p.id).collect();
    assert_eq!(due, ["p1", "p0"], "due ones, oldest first");
    assert_eq!(store.due_pages(2_000, 1).await.unwrap().len(), 1);
    assert_eq!(store.outbox_pending().await.unwrap(), 3);
    store.page_failed("p1", 1, 3_000, "HTTP 503: \"busy\"").await.unwrap();
    store.page_delivered("p0", 2_100).await.unwrap();
    assert!(store.due_pages(2_000, 10).await.unwrap().is_empty());
    store.close().await;

    let store = db.open().await;
    let due = store.due_pages(3_000, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    let mut want = page("p1", 3_000);
    want.attempts = 1;
    want.last_error = Some("HTTP 503: \"busy\"".into());
    assert_eq!(due[0], want, "subject, attempts and error come back as written");
    assert!(store.claim_page("p1", 3_000, 33_000).await.unwrap());
    assert!(!store.claim_page("p1", 3_000, 33_000).await.unwrap(), "one replica wins a page");
    store.page_delivered("p1", 3_100).await.unwrap();
    store.page_delivered("p1", 3_200).await.unwrap();
    assert_eq!(store.outbox_pending().await.unwrap(), 1);
    assert_eq!(store.due_pages(10_000, 10).await.unwrap()[0].id, "p2");
    assert!(matches!(store.page_failed("p9", 1, 1, "x").await, Err(StoreError::NotFound(m)) if m == "page p9"));
    assert!(matches!(store.page_delivered("p9", 1).await, Err(StoreError::NotFound(_))));
}

async fn sessions_expire(db: &TestDb) {
    let store = db.open().await;
    store.upsert_user("alice", Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA"), Role::Reviewer).await.unwrap();
    store.upsert_user("alice", None, Role::Admin).await.unwrap();
    let u = store.user("alice").await.unwrap().unwrap();
    assert_eq!(u.password_hash.as_deref(), Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA"), "None keeps the hash");
    assert_eq!((u.role, u.disabled), (Role::Admin, false));
    assert_eq!(store.user("nobody").await.unwrap(), None);

    store.create_session("t1", "alice", "csrf-1", 1_000, 2_000).await.unwrap();
    let s = store.session("t1", 1_999).await.unwrap().unwrap();
    assert_eq!((s.user.as_str(), s.role, s.csrf_token.as_str(), s.expires_ms), ("alice", Role::Admin, "csrf-1", 2_000));
    assert_eq!(store.session("t1", 2_000).await.unwrap(), None, "expired");
    assert_eq!(store.delete_expired_sessions(2_000).await.unwrap(), 1);

    store.create_session("t2", "alice", "csrf-2", 1_000, 9_000).await.unwrap();
    store.set_user_disabled("alice", true).await.unwrap();
    assert_eq!(store.session("t2", 1_500).await.unwrap(), None, "disabled users have no sessions");
    store.set_user_disabled("alice", false).await.unwrap();
    assert_eq!(store.session("t2", 1_500).await.unwrap(), None, "disabling logged them out");
    store.create_session("t3", "alice", "csrf-3", 1_000, 9_000).await.unwrap();
    assert!(store.session("t3", 1_500).await.unwrap().is_some());
    store.delete_session("t3").await.unwrap();
    assert_eq!(store.session("t3", 1_500).await.unwrap(), None);
    assert!(matches!(store.create_session("t4", "ghost", "c", 1, 2).await, Err(StoreError::NotFound(_))));
    store.upsert_user("bob", None, Role::Viewer).await.unwrap();
    let names: Vec<String> = store.users().await.unwrap().into_iter().map(|u| u.name).collect();
    assert_eq!(names, ["alice", "bob"]);
}

async fn allow_entries(db: &TestDb) {
    let store = db.open().await;
    store.record_alert(&opened("inc-1", 1_000), 1_000).await.unwrap();
    let entry = AllowEntry {
        id: "allow-1".into(),
        incident_id: "inc-1".into(),
        scope_kind: "bank".into(),
        scope: "ncmec".into(),
        hashes: vec![PDQ.into()],
        note: "a museum painting, not abuse".into(),
        created_by: "alice".into(),
        created_ms: 2_000,
        expires_ms: 2_000 + 90 * DAY_MS,
        published_ms: None,
    };
    let with = |f: &dyn Fn(&mut AllowEntry)| {
        let mut e = entry.clone();
        f(&mut e);
        e
    };
    for bad in [
        with(&|e| e.note = "  ".into()),
        with(&|e| e.hashes = vec!["abc".into()]),
        with(&|e| e.hashes = vec![]),
        with(&|e| e.scope_kind = "stream".into()),
    ] {
        assert!(matches!(store.add_allow_entry(&bad).await, Err(StoreError::Invalid(_))), "{bad:?}");
    }
    assert!(matches!(
        store.add_allow_entry(&with(&|e| e.incident_id = "ghost".into())).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(store.add_allow_entry(&entry).await.unwrap(), Applied::New);
    assert_eq!(store.add_allow_entry(&entry).await.unwrap(), Applied::Duplicate);
    assert_eq!(store.unpublished_allow_entries().await.unwrap(), std::slice::from_ref(&entry));
    store.mark_allow_published("allow-1", 3_000).await.unwrap();
    assert!(store.unpublished_allow_entries().await.unwrap().is_empty());
    assert!(matches!(store.mark_allow_published("allow-9", 3_000).await, Err(StoreError::NotFound(_))));
    let detail = store.incident("inc-1").await.unwrap().unwrap();
    assert_eq!(detail.allow_entries[0].published_ms, Some(3_000));
    assert_eq!(detail.audit.len(), 1);
    assert_eq!((detail.audit[0].action.as_str(), detail.audit[0].actor.as_str()), ("allow.add", "alice"));
    assert_eq!(detail.audit[0].detail["note"], "a museum painting, not abuse");
}

async fn audit_chain_detects_tampering(db: &TestDb) {
    let store = db.open().await;
    assert_eq!(store.audit_verify().await.unwrap().entries, 0);
    for i in 1..=6 {
        let seq = store
            .audit("admin", "user.create", &format!("user:u{i}"), &json!({ "role": "viewer", "i": i }), i)
            .await
            .unwrap();
        assert_eq!(seq, i);
    }
    let check = store.audit_verify().await.unwrap();
    assert_eq!((check.entries, check.first_broken), (6, None));
    let newest = store.audit_entries(None, 2).await.unwrap();
    assert_eq!(newest.iter().map(|e| e.seq).collect::<Vec<_>>(), [6, 5]);
    assert_eq!(newest[1].prev_hash, store.audit_entries(Some("user:u4"), 5).await.unwrap()[0].hash);
    assert_eq!(newest[0].detail, json!({ "i": 6, "role": "viewer" }));

    let raw = db.raw().await;
    let original: String =
        sqlx::query("SELECT detail FROM audit_log WHERE seq = 3").fetch_one(&raw).await.unwrap().get("detail");
    sqlx::query("UPDATE audit_log SET detail = $1 WHERE seq = 3")
        .bind(r#"{"i":3,"role":"admin"}"#)
        .execute(&raw)
        .await
        .unwrap();
    let (seq, why) = store.audit_verify().await.unwrap().first_broken.expect("an edit is found");
    assert_eq!(seq, 3, "{why}");
    assert!(why.contains("edited"), "{why}");

    sqlx::query("UPDATE audit_log SET detail = $1 WHERE seq = 3").bind(&original).execute(&raw).await.unwrap();
    assert_eq!(store.audit_verify().await.unwrap().first_broken, None);
    sqlx::query("DELETE FROM audit_log WHERE seq = 4").execute(&raw).await.unwrap();
    let check = store.audit_verify().await.unwrap();
    let (seq, why) = check.first_broken.expect("a removal is found");
    assert_eq!(seq, 5, "{why}");
    assert!(why.contains("entry 4 is missing"), "{why}");
}

async fn concurrent_audit_appenders_keep_one_chain(db: &TestDb) {
    let (a, b) = (db.open().await, db.open().await);
    let mut tasks = Vec::new();
    for (name, store) in [("replica-a", a.clone()), ("replica-b", b.clone())] {
        for t in 0..5 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..10 {
                    store.audit(name, "append", &format!("task-{t}"), &json!({ "i": i }), 1_000 + i).await.unwrap();
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let check = a.audit_verify().await.unwrap();
    assert_eq!((check.entries, check.first_broken), (100, None));
    let seqs: Vec<i64> = b.audit_entries(None, 1_000).await.unwrap().into_iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=100).rev().collect::<Vec<i64>>());
}

async fn hostile_strings_round_trip(db: &TestDb) {
    let store = db.open().await;
    let nasty = "it's \"quoted\"; DROP TABLE incidents; -- $1 ? :name \\ %_ \n\t Ω 🚨 ' OR '1'='1";
    let id = format!("inc-{nasty}");
    let mut a = alert(&id, AlertEvent::Opened, 1_000, Verdict::Review, nasty);
    a.account_id = Some(nasty.into());
    a.explanation.reasons = vec![nasty.into()];
    store.record_alert(&a, 1_000).await.unwrap();
    store.hold(&id, nasty, 2_000, 60_000).await.unwrap();
    store.resolve(&id, nasty, Resolution::FalsePositive, nasty, 3_000).await.unwrap();
    let detail = store.incident(&id).await.unwrap().unwrap();
    assert_eq!(detail.incident.id, id);
    assert_eq!((detail.incident.rule.as_str(), detail.incident.account_id.as_deref()), (nasty, Some(nasty)));
    assert_eq!(
        (detail.incident.resolved_by.as_deref(), detail.incident.resolution_note.as_deref()),
        (Some(nasty), Some(nasty))
    );
    assert_eq!(detail.alerts[0].alert, a);
    assert_eq!(detail.audit[1].detail["note"], nasty);
    assert_eq!(detail.audit[1].actor, nasty);

    store.upsert_user(nasty, Some(nasty), Role::Viewer).await.unwrap();
    assert_eq!(store.user(nasty).await.unwrap().unwrap().password_hash.as_deref(), Some(nasty));
    let mut p = page(nasty, 0);
    p.subject.rule = nasty.into();
    store.enqueue_page(&p, 0).await.unwrap();
    store.page_failed(nasty, 1, 0, nasty).await.unwrap();
    let got = &store.due_pages(0, 10).await.unwrap()[0];
    assert_eq!((got.id.as_str(), got.subject.rule.as_str(), got.last_error.as_deref()), (nasty, nasty, Some(nasty)));
    assert_eq!(store.audit_verify().await.unwrap().first_broken, None);
    assert_eq!(store.queue(0).await.unwrap().len(), 0, "the tables are all still there");
}

/// A command and its cut applied by two replicas at the same moment: whichever commits
/// first, the other sees it, and the cut is never lost.
async fn replicas_racing_on_commands_and_outcomes(db: &TestDb) {
    let (a, b) = (db.open().await, db.open().await);
    let ids: Vec<String> = (0..20).map(|i| format!("race-{i}")).collect();
    for id in &ids {
        a.record_alert(&opened(id, 1_000), 1_000).await.unwrap();
    }
    let mut tasks = Vec::new();
    for id in &ids {
        let (a, b, id) = (a.clone(), b.clone(), id.clone());
        tasks.push(tokio::spawn(async move {
            let cmd = command(&id, 1_100);
            let cut = outcome(&cmd.command_id, "cut", 1, 1_200);
            let (x, y) = tokio::join!(a.record_command(&cmd, "worker:w", 1_100), b.record_outcome(&cut, 1_200));
            assert_eq!((x.unwrap(), y.unwrap()), (Applied::New, Applied::New));
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for id in &ids {
        assert_eq!(state(&a, id).await.interrupt_state, InterruptState::CutConfirmed, "{id}");
    }
}

/// Two reviewers on two replicas grab the same incident at once: exactly one holds it.
async fn replicas_racing_for_one_lock(db: &TestDb) {
    let (a, b) = (db.open().await, db.open().await);
    for i in 0..20 {
        let id = format!("inc-{i}");
        a.record_alert(&opened(&id, 1_000), 1_000).await.unwrap();
        let (x, y) = tokio::join!(a.hold(&id, "alice", 2_000, 60_000), b.hold(&id, "bob", 2_000, 60_000));
        assert!(x.is_ok() != y.is_ok(), "{id}: exactly one wins: {x:?} {y:?}");
        let winner = if x.is_ok() { "alice" } else { "bob" };
        assert_eq!(state(&a, &id).await.holder.as_deref(), Some(winner));
        assert_eq!(a.audit_entries(Some(&id), 10).await.unwrap().len(), 1);
    }
}

/// A server that is not there, or a wrong password, fails at once and says why.
#[tokio::test]
async fn unreachable_postgres_fails_fast_with_its_cause() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let started = std::time::Instant::now();
    let err =
        Store::open(&format!("postgres://vigil:s3cret@127.0.0.1:{port}/console"), common::key()).await.unwrap_err();
    assert!(matches!(err, StoreError::Connect { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("vigil:***@127.0.0.1") && !msg.contains("s3cret"), "{msg}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "took {:?}", started.elapsed());

    let pg = common::postgres::PgServer::shared();
    let err = Store::open(&pg.url_with_password("postgres", "wrong"), common::key()).await.unwrap_err();
    assert!(err.to_string().contains("password"), "{err}");
    assert!(matches!(Store::open("mysql://x", common::key()).await, Err(StoreError::Invalid(_))));
}

/// Setting a password (the console's `/accounts`, `vigil console user`) ends every session
/// of that user; a role change alone does not.
async fn a_password_change_ends_the_users_sessions(db: &TestDb) {
    let store = db.open().await;
    store.upsert_user("bob", Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$b2xk"), Role::Reviewer).await.unwrap();
    store.upsert_user("eve", Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$ZXZl"), Role::Reviewer).await.unwrap();
    for (t, user) in [("b1", "bob"), ("b2", "bob"), ("e1", "eve")] {
        store.create_session(t, user, "csrf", 1_000, 9_000).await.unwrap();
    }
    store.upsert_user("bob", None, Role::Admin).await.unwrap();
    assert!(store.session("b1", 1_500).await.unwrap().is_some(), "a role change keeps the sessions");
    store.upsert_user("bob", Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$bmV3"), Role::Admin).await.unwrap();
    assert_eq!(store.session("b1", 1_500).await.unwrap(), None, "a new password ends the sessions");
    assert_eq!(store.session("b2", 1_500).await.unwrap(), None);
    assert!(store.session("e1", 1_500).await.unwrap().is_some(), "other users' sessions go on");
}

/// Rows rewritten and re-hashed by someone who can write the store but lacks the key:
/// with plain SHA-256 (what the chain was) or with a key of their own.
async fn the_audit_chain_is_keyed(db: &TestDb) {
    let store = db.open().await;
    for i in 1..=4 {
        store.audit("admin", "user.create", &format!("user:u{i}"), &json!({ "i": i }), i).await.unwrap();
    }
    assert_eq!(
        store.audit_verify().await.unwrap(),
        vigil_console::store::AuditCheck { entries: 4, first_broken: None }
    );
    let raw = db.raw().await;
    let rows = sqlx::query("SELECT seq, at_ms, actor, action, target, detail FROM audit_log ORDER BY seq")
        .fetch_all(&raw)
        .await
        .unwrap();
    let mallory = AuditKey::new(&[0x6d; 32]).unwrap();
    for rewrite in ["sha256", "another key"] {
        // Entry 2 says something else, and every hash from the first on is recomputed.
        let mut prev = audit::GENESIS_HASH.to_string();
        for r in &rows {
            let seq: i64 = r.get("seq");
            let actor = if seq == 2 { "mallory".to_string() } else { r.get::<String, _>("actor") };
            let (at, action, target, detail): (i64, String, String, String) =
                (r.get("at_ms"), r.get("action"), r.get("target"), r.get("detail"));
            let hash = match rewrite {
                "sha256" => audit::legacy_entry_hash(&prev, seq, at, &actor, &action, &target, &detail),
                _ => audit::entry_hash(&mallory, &prev, seq, at, &actor, &action, &target, &detail),
            };
            sqlx::query("UPDATE audit_log SET actor = $1, prev_hash = $2, hash = $3 WHERE seq = $4")
                .bind(&actor)
                .bind(&prev)
                .bind(&hash)
                .bind(seq)
                .execute(&raw)
                .await
                .unwrap();
            prev = hash;
        }
        let (seq, why) = store.audit_verify().await.unwrap().first_broken.expect("a re-hashed chain is found");
        assert_eq!(seq, 1, "{rewrite}: {why}");
        assert!(why.contains("audit key"), "{why}");
        // The rewriter's own key verifies their chain; the console's does not.
        if rewrite == "another key" {
            let theirs = Store::open(&db.url, mallory.clone()).await.unwrap();
            assert_eq!(theirs.audit_verify().await.unwrap().first_broken, None);
        }
    }
}

/// A log written before the key (schema version 1, plain SHA-256) is sealed by a keyed
/// entry when migrated: it verifies, and rewriting its old entries is found.
async fn a_chain_from_before_the_key_is_sealed_and_stays_verifiable(db: &TestDb) {
    if let Some(path) = db.url.strip_prefix("sqlite://") {
        std::fs::File::create(path).unwrap();
    }
    let raw = db.raw().await;
    sqlx::raw_sql(migrations::MIGRATIONS[0].sql).execute(&raw).await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_ms BIGINT NOT NULL); \
         INSERT INTO schema_migrations VALUES (1, 'initial', 0)",
    )
    .execute(&raw)
    .await
    .unwrap();
    let write_legacy = |actor_of_2: &'static str| {
        let raw = raw.clone();
        async move {
            sqlx::query("DELETE FROM audit_log WHERE seq <= 3").execute(&raw).await.unwrap();
            let mut prev = audit::GENESIS_HASH.to_string();
            for seq in 1..=3i64 {
                let actor = if seq == 2 { actor_of_2 } else { "alice" };
                let hash = audit::legacy_entry_hash(&prev, seq, seq * 10, actor, "hold", "inc-1", "{}");
                sqlx::query(
                    "INSERT INTO audit_log (seq, at_ms, actor, action, target, detail, prev_hash, hash) \
                     VALUES ($1, $2, $3, 'hold', 'inc-1', '{}', $4, $5)",
                )
                .bind(seq)
                .bind(seq * 10)
                .bind(actor)
                .bind(&prev)
                .bind(&hash)
                .execute(&raw)
                .await
                .unwrap();
                prev = hash;
            }
        }
    };
    write_legacy("bob").await;
    let store = db.open().await;
    let newest = store.audit_entries(None, 1).await.unwrap();
    assert_eq!((newest[0].seq, newest[0].action.as_str()), (4, audit::SEAL_ACTION));
    assert_eq!(newest[0].detail["legacy_entries"], 3);
    store.audit("carol", "acknowledge", "inc-1", &json!({}), 50).await.unwrap();
    assert_eq!(
        (store.audit_verify().await.unwrap().entries, store.audit_verify().await.unwrap().first_broken),
        (5, None)
    );
    // Reopening does not seal again.
    store.close().await;
    let store = db.open().await;
    assert_eq!(store.audit_verify().await.unwrap().entries, 5);
    // The old entries rewritten with consistent plain hashes: the keyed seal pins them.
    write_legacy("mallory").await;
    let (seq, why) = store.audit_verify().await.unwrap().first_broken.expect("a rewritten legacy entry is found");
    assert_eq!(seq, 4, "{why}");
    // Without a valid seal (removed, or forged without the key) no plain entry is believed.
    write_legacy("bob").await;
    assert_eq!(store.audit_verify().await.unwrap().first_broken, None);
    sqlx::query("UPDATE audit_log SET detail = $1 WHERE seq = 4")
        .bind(r#"{"legacy_entries":5,"legacy_hash":"sha256"}"#)
        .execute(&raw)
        .await
        .unwrap();
    let (seq, why) = store.audit_verify().await.unwrap().first_broken.expect("a forged seal is found");
    assert_eq!(seq, 1, "{why}");
}

/// Views are one entry per user per incident per hour; pages of the trail, newest first.
async fn repeated_views_are_one_entry_per_user_per_hour(db: &TestDb) {
    let store = db.open().await;
    let hour = audit::VIEW_WINDOW_MS;
    assert!(store.audit_view("vera", "inc-1", 1_000).await.unwrap().is_some());
    for t in [1_001, 2_000, hour] {
        assert_eq!(store.audit_view("vera", "inc-1", t).await.unwrap(), None, "folded at {t}");
    }
    assert!(store.audit_view("walt", "inc-1", 2_000).await.unwrap().is_some(), "another user");
    assert!(store.audit_view("vera", "inc-2", 2_000).await.unwrap().is_some(), "another incident");
    assert!(store.audit_view("vera", "inc-1", 1_000 + hour).await.unwrap().is_some(), "an hour later");
    let views = store.audit_entries(Some("inc-1"), 100).await.unwrap();
    assert_eq!(views.len(), 3);
    assert_eq!(store.audit_verify().await.unwrap().first_broken, None);
    // Views are not among the incident's decisions (but are in its trail).
    store.record_alert(&opened("inc-1", 1_000), 1_000).await.unwrap();
    store.audit("vera", "note", "inc-1", &json!({}), 3).await.unwrap();
    let decisions = store.incident("inc-1").await.unwrap().unwrap().audit;
    assert_eq!(decisions.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(), ["note"]);
    for i in 0..7 {
        store.audit("rita", "note", "inc-1", &json!({ "i": i }), 10 + i).await.unwrap();
    }
    let (first, total) = store.audit_page("inc-1", 0, 4).await.unwrap();
    assert_eq!(total, 11);
    assert_eq!(first.iter().map(|e| e.detail["i"].as_i64()).collect::<Vec<_>>(), [Some(6), Some(5), Some(4), Some(3)]);
    let (last, _) = store.audit_page("inc-1", 2, 4).await.unwrap();
    assert_eq!(last.len(), 3);
    assert_eq!(last[2].action, "view");
    assert!(store.audit_page("inc-1", 3, 4).await.unwrap().0.is_empty());
}
