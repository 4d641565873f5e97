//! The console's allowlist, live: a worker alerts on a banked image; an allowlist entry
//! for the frames involved goes on the bank-updates topic (as `vigil console` publishes
//! it when a reviewer marks a false positive); the worker applies it well within 60 s,
//! and the same image published again is matched as allowed, with no alert. Hostile
//! records on the same topic are refused and counted, and change nothing (a rule-scoped
//! entry naming the rule a bank match fires among them).

mod common;

use common::worker::*;
use common::*;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use vigil_sink::testing::Broker;

const TOPIC: &str = "vigil.banks.updates";

fn opened(records: &[Value]) -> Vec<&Value> {
    records.iter().filter(|r| r["type"] == "alert" && r["event"] == "opened").collect()
}

#[test]
fn a_reviewed_false_positive_is_applied_by_a_live_worker_within_a_minute() {
    let dir = tempfile::tempdir().unwrap();
    let bank = dir.path().join("bank.txt");
    std::fs::write(&bank, format!("{}\n", pdq_of(&astronaut()))).unwrap();
    let broker = Broker::start(&[TOPIC, "vigil.alerts", "vigil.interrupts"]);
    let (w, url) = allowlist_worker(&bank, &broker.addr, dir.path());

    // The banked image is alerted on (and the stream cut by the worker).
    let mut first = common::nginx::publish_astronaut(&url, 20);
    let records = w.wait_for("an alert on the banked image", 60, |r| !opened(r).is_empty());
    let alert = opened(&records)[0].clone();
    let _ = first.kill();
    let _ = first.wait();
    // The worker cut the first session; until it has ended, the same key publishing again
    // is refused as a second publisher of a live stream.
    w.wait_for("the first session's end", 30, |r| r.iter().any(|x| x["type"] == "stream" && x["event"] == "ended"));
    let hashes: Vec<String> = alert["explanation"]["frames"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["pdq"].as_str().map(str::to_string))
        .collect();
    assert!(!hashes.is_empty(), "the alert names its frames' hashes: {alert}");

    // Hostile records first: refused, counted, nothing applied.
    let producer: BaseProducer =
        rdkafka::ClientConfig::new().set("bootstrap.servers", &broker.addr).create().expect("a producer");
    let now = vigil_sink::actuate::publish::now_unix_ms();
    let scoped = |id: &str, scope_kind: &str, scope: &str, distance: u32, expires: u64| {
        json!({
            "schema": "vigil.bank_update", "schema_version": 1, "update_id": id, "op": "allow",
            "scope_kind": scope_kind, "scope": scope, "hashes": hashes, "max_distance": distance,
            "created_at_unix_ms": now, "expires_at_unix_ms": expires, "created_by": "alice@example.org",
            "incident_id": alert["alert_id"],
        })
        .to_string()
    };
    let entry = |id: &str, distance: u32, expires: u64| scoped(id, "bank", "known", distance, expires);
    let send = |key: &str, payload: &str| {
        let headers = common::trust::signed(vigil_trust::Role::Console, TOPIC, Some(key), Some(payload.as_bytes()));
        producer.send(BaseRecord::to(TOPIC).key(key).payload(payload).headers(headers)).unwrap();
    };
    send("fp/wide", &entry("fp/wide", 256, now + 3_600_000));
    send("fp/forever", &entry("fp/forever", 10, now + 10 * 366 * 86_400_000));
    send("fp/forged", &entry("fp/other-key", 10, now + 3_600_000));
    send("fp/garbage", "{\"schema\":\"vigil.bank_update\",");
    send("fp/bank-rule", &scoped("fp/bank-rule", "rule", "known_abuse_material", 10, now + 3_600_000));
    let id = "fp/1700000000000-ab12";
    send(id, &entry(id, 10, now + 3_600_000));
    producer.flush(Duration::from_secs(10)).unwrap();
    let published = Instant::now();
    wait_until_or(
        "the entry to be applied",
        60,
        || w.metric("vigil_allowlist_entries", "") >= 1.0,
        || tail(&w.stderr(), 30),
    );
    let applied_in = published.elapsed();
    eprintln!("allowlist entry applied {applied_in:?} after it was published");
    // The hostile records sit on other partitions than the entry: they may be read later.
    wait_until_or(
        "the hostile records to be refused",
        60,
        || w.metric("vigil_allowlist_updates_total", "result=\"refused\"") >= 5.0,
        || tail(&w.stderr(), 30),
    );
    assert_eq!(w.metric("vigil_allowlist_entries", ""), 1.0, "only the valid entry is live");
    assert_eq!(w.metric("vigil_allowlist_updates_total", "result=\"refused\""), 5.0);
    assert!(w.stderr().contains("fires on bank_interrupt"), "the bank rule's refusal says why");
    assert!(w.stderr().contains("allowlist: record refused"));

    // The same image again: matched as allowed, no new incident, no cut.
    let before = w.records().len();
    let mut second = common::nginx::publish_astronaut(&url, 12);
    w.wait_for("frames of the second session", 60, |r| {
        r[before..].iter().filter(|x| x["type"] == "frame" && x["stream"] == "rtmp/live/alice").count() >= 5
    });
    let _ = second.wait();
    let records = w.wait_for("the second session's end", 30, |r| {
        r[before..].iter().any(|x| x["type"] == "stream" && x["event"] == "ended")
    });
    let later = &records[before..];
    assert!(opened(later).is_empty(), "no alert once the entry applies: {:?}", opened(later));
    let allowed = later
        .iter()
        .filter(|x| x["type"] == "frame")
        .filter(|x| {
            x["bank_matches"].as_array().is_some_and(|m| m.iter().any(|m| m["bank"] == "allowlist" && m["id"] == id))
        })
        .count();
    assert!(allowed >= 3, "frames show the allowlist match: {allowed}");
}
