//! The seams between parts can't be dodged or forged (issue 26): a pulled stream whose
//! publisher comes back is a new session and is cut again; records on every topic a part
//! reads are believed only when a role allowed to write that topic signed them.

mod common;

use common::nginx::{Nginx, publish_astronaut};
use common::worker::*;
use common::*;
use rdkafka::message::OwnedHeaders;
use serde_json::Value;
use std::io::{Read, Write};
use std::time::Duration;
use vigil_trust::Role;

fn of_type<'a>(records: &'a [Value], kind: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| r["type"] == kind).collect()
}

/// `GET http://127.0.0.1:PORT/PATH` on nginx's control API: the status line's code.
fn nginx_control(port: u16, path: &str) -> u16 {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// The finding: a stream pulled from nginx-rtmp shows a banked image and is interrupted;
/// the publisher is dropped at the origin (the call the actuator makes) and publishes
/// again at once. The worker must treat the comeback as a new session, with a new
/// incident and a new command, within one sample of the new session's first analysed
/// keyframe; before, it kept the old incident open at `interrupt` and sent nothing.
#[test]
fn a_pulled_stream_whose_publisher_comes_back_is_a_new_session_and_is_cut_again() {
    let dir = tempfile::tempdir().unwrap();
    let bank = dir.path().join("bank.txt");
    std::fs::write(&bank, format!("{}\n", pdq_of(&astronaut()))).unwrap();
    let nginx = Nginx::start();
    let url = format!("rtmp://127.0.0.1:{}/live/cam", nginx.rtmp);
    // The origin is live before the worker pulls it.
    let mut first = publish_astronaut(&url, 90);
    std::thread::sleep(Duration::from_secs(2));
    let w = Worker::start(
        &format!(
            "[media]\nsampling = \"keyframes\"\n\
             [[hash.banks]]\nname = \"known\"\npath = \"{}\"\naction = \"interrupt\"\n\
             [[ingest.pull]]\nname = \"cam\"\nuri = \"{url}\"\n",
            bank.display()
        ),
        &[],
        &[],
    );
    let interrupts = |r: &[Value]| of_type(r, "interrupt").len();
    w.wait_for("the first interrupt", 60, |r| interrupts(r) >= 1);
    // Dropped at the origin, as the actuator does, and back at once.
    assert_eq!(nginx_control(nginx.http, "/control/drop/publisher?app=live&name=cam"), 200);
    let _ = first.kill();
    let _ = first.wait();
    let mut second = publish_astronaut(&url, 90);
    let records = w.wait_for("a second interrupt after the comeback", 90, |r| interrupts(r) >= 2);
    let _ = second.kill();
    let _ = second.wait();

    let commands: Vec<&str> =
        of_type(&records, "interrupt").iter().map(|c| c["command_id"].as_str().unwrap()).collect();
    assert_ne!(commands[0], commands[1], "a new command id, which an actuator that finished the first acts on");
    let alerts = of_type(&records, "alert");
    let opened: Vec<&Value> = alerts.iter().copied().filter(|a| a["event"] == "opened").collect();
    assert_eq!(opened.len(), 2, "a new incident for the new session: {opened:?}");
    assert_ne!(opened[0]["alert_id"], opened[1]["alert_id"]);
    assert_ne!(opened[0]["session_id"], opened[1]["session_id"], "a new session");
    // The comeback is announced, and the new command follows within one sample of the
    // new session's first analysed keyframe.
    let back = records
        .iter()
        .position(|r| r["type"] == "stream" && r["stream"] == "cam" && r["event"] == "reconnected")
        .expect("a `reconnected` record");
    let second_cmd =
        records.iter().enumerate().filter(|(_, r)| r["type"] == "interrupt").nth(1).map(|(i, _)| i).unwrap();
    assert!(second_cmd > back, "the second command comes after the comeback");
    let analysed_between = records[back..second_cmd]
        .iter()
        .filter(|r| r["type"] == "frame" && r["stream"] == "cam" && r["pdq"].is_object())
        .count();
    assert!(analysed_between <= 2, "the new command came {analysed_between} samples after the first keyframe");
    assert_eq!(records[back]["detail"], opened[1]["session_id"], "the record names the new session");
    assert!(w.metric("vigil_stream_sessions_renewed_total", "ingest=\"pull\"") >= 1.0);
    for r in alerts.iter().chain(of_type(&records, "interrupt").iter()) {
        assert!(schema_violations(r).is_empty(), "{:?}", schema_violations(r));
    }
}

/// A stream that keeps meeting an interrupt rule after its command was issued (nobody
/// cut it) gets the command again, under a new id, `reissue_secs` of stream time later.
#[test]
fn an_interrupt_nobody_acts_on_is_issued_again_under_a_new_id() {
    let dir = tempfile::tempdir().unwrap();
    let bank = dir.path().join("bank.txt");
    std::fs::write(&bank, format!("{}\n", pdq_of(&astronaut()))).unwrap();
    let policy = std::fs::read_to_string(root().join("config/policies/default.toml"))
        .unwrap()
        .replace("reissue_secs = 30", "reissue_secs = 3");
    let policy_path = dir.path().join("policy.toml");
    std::fs::write(&policy_path, policy).unwrap();
    // A file, pulled: nobody cuts it, so the rule keeps firing.
    let clip = still_clip(dir.path(), &astronaut(), "astronaut.mp4", 12, 1500, 360, "mp4mux");
    let out = vigil_env(
        &["scan", "--bank", bank.to_str().unwrap(), clip.to_str().unwrap()],
        &[("VIGIL__FUSION__POLICY", policy_path.to_str().unwrap()), ("VIGIL__MEDIA__SAMPLING", "fixed")],
    );
    let records = stdout_json(&out);
    let commands: Vec<&str> =
        of_type(&records, "interrupt").iter().map(|c| c["command_id"].as_str().unwrap()).collect();
    assert!(commands.len() >= 3, "issued, then again every 3 s of a 12 s clip: {commands:?}");
    let unique: std::collections::BTreeSet<&str> = commands.iter().copied().collect();
    assert_eq!(unique.len(), commands.len(), "every reissue has its own id: {commands:?}");
    let reissued: Vec<&Value> = of_type(&records, "alert").into_iter().filter(|a| a["event"] == "reissued").collect();
    assert_eq!(reissued.len(), commands.len() - 1);
    for r in of_type(&records, "alert").iter().chain(of_type(&records, "interrupt").iter()) {
        assert!(schema_violations(r).is_empty(), "{:?}", schema_violations(r));
    }
}

/// The `vigil_trust_records_total` count of one topic and result on a worker.
fn trust_count(w: &Worker, topic: &str, result: &str) -> f64 {
    w.metric("vigil_trust_records_total", &format!("result=\"{result}\",topic=\"{topic}\""))
}

fn producer(broker: &str) -> rdkafka::producer::BaseProducer {
    rdkafka::ClientConfig::new().set("bootstrap.servers", broker).create().expect("a producer")
}

/// Writes one record with these headers (none: unsigned) and waits for the broker.
fn write(
    p: &rdkafka::producer::BaseProducer,
    topic: &str,
    key: &str,
    value: Option<&str>,
    headers: Option<OwnedHeaders>,
) {
    use rdkafka::producer::{BaseRecord, Producer};
    let mut rec: BaseRecord<'_, str, str> = BaseRecord::to(topic).key(key);
    if let Some(v) = value {
        rec = rec.payload(v);
    }
    if let Some(h) = headers {
        rec = rec.headers(h);
    }
    p.send(rec).expect("queued");
    p.flush(Duration::from_secs(10)).expect("delivered");
}

fn signed(role: Role, topic: &str, key: &str, value: Option<&str>) -> Option<OwnedHeaders> {
    Some(common::trust::signed(role, topic, Some(key), value.map(str::as_bytes)))
}

/// Bank updates: only the console's signed entries are applied. An unsigned entry, one a
/// worker signed, a forged signature and a copy of the genuine entry written again are
/// refused and counted; the allowlist holds the genuine entry alone.
#[test]
fn only_the_consoles_signed_allowlist_entries_are_applied() {
    const TOPIC: &str = "vigil.banks.updates";
    let dir = tempfile::tempdir().unwrap();
    let bank = dir.path().join("bank.txt");
    std::fs::write(&bank, format!("{}\n", pdq_of(&astronaut()))).unwrap();
    let broker = vigil_sink::testing::Broker::start(&[TOPIC, "vigil.alerts", "vigil.interrupts"]);
    let (w, _) = allowlist_worker(&bank, &broker.addr, dir.path());
    let now = vigil_trust::unix_ms();
    let entry = |id: &str| {
        serde_json::json!({
            "schema": "vigil.bank_update", "schema_version": 1, "update_id": id, "op": "allow",
            "scope_kind": "bank", "scope": "known", "hashes": ["ab".repeat(32)], "max_distance": 8,
            "created_at_unix_ms": now, "expires_at_unix_ms": now + 3_600_000, "created_by": "alice@example.org",
            "incident_id": "inc-1",
        })
        .to_string()
    };
    let p = producer(&broker.addr);
    write(&p, TOPIC, "fp/unsigned", Some(&entry("fp/unsigned")), None);
    let e = entry("fp/by-worker");
    write(&p, TOPIC, "fp/by-worker", Some(&e), signed(Role::Worker, TOPIC, "fp/by-worker", Some(&e)));
    let e = entry("fp/forged");
    let forged = common::trust::forger().sign_into(TOPIC, Some(b"fp/forged"), Some(e.as_bytes()), OwnedHeaders::new());
    write(&p, TOPIC, "fp/forged", Some(&e), Some(forged));
    let e = entry("fp/genuine");
    let headers = signed(Role::Console, TOPIC, "fp/genuine", Some(&e));
    write(&p, TOPIC, "fp/genuine", Some(&e), headers.clone());
    write(&p, TOPIC, "fp/genuine", Some(&e), headers);
    wait_until("the five records read", 60, || {
        trust_count(&w, "bank_updates", "accepted")
            + trust_count(&w, "bank_updates", "unsigned")
            + trust_count(&w, "bank_updates", "wrong_role")
            + trust_count(&w, "bank_updates", "bad_signature")
            + trust_count(&w, "bank_updates", "replayed")
            >= 5.0
    });
    for (result, n) in
        [("accepted", 1.0), ("unsigned", 1.0), ("wrong_role", 1.0), ("bad_signature", 1.0), ("replayed", 1.0)]
    {
        assert_eq!(trust_count(&w, "bank_updates", result), n, "{result}");
    }
    assert_eq!(w.metric("vigil_allowlist_entries", ""), 1.0, "the genuine entry alone is live");
    let (_, ready) = w.http("GET", "/readyz");
    assert!(ready.contains("\"warnings\":[]"), "nothing believed unsigned: {ready}");
}

/// Lifecycle and owners records: a fleet worker starts only what the platform's
/// lifecycle key signed, freshly; a forged claim or withdrawal changes nothing; a signed
/// tombstone stops the stream, an unsigned one does not.
#[test]
fn a_fleet_worker_acts_only_on_signed_lifecycle_and_owners_records() {
    const LIFECYCLE: &str = "vigil.streams.lifecycle";
    const OWNERS: &str = "vigil.streams.owners";
    let dir = tempfile::tempdir().unwrap();
    let bank = dir.path().join("bank.txt");
    std::fs::write(&bank, format!("{}\n", pdq_of(&astronaut()))).unwrap();
    let broker = vigil_sink::testing::Broker::start(&[LIFECYCLE, OWNERS, "vigil.alerts", "vigil.interrupts"]);
    let nginx = Nginx::start();
    let port = common::nginx::free_port();
    let w = Worker::start(
        &common::nginx::fleet_worker_config(&bank, port, &broker.addr, &dir.path().join("spool")),
        &["--worker-id", "worker-t"],
        &[],
    );
    wait_until("the lifecycle partitions", 60, || w.metric("vigil_fleet_partitions_assigned", "") >= 3.0);
    let mut publishers: Vec<std::process::Child> = ["ok", "u", "w", "s", "h"]
        .iter()
        .map(|n| common::nginx::publish(&format!("rtmp://127.0.0.1:{}/live/{n}", nginx.rtmp), 120, "ball"))
        .collect();
    let start = |id: &str, host: &str| {
        serde_json::json!({"event": "start", "stream_id": id,
                           "source_url": format!("rtmp://{host}:{}/{id}", nginx.rtmp)})
        .to_string()
    };
    let p = producer(&broker.addr);
    write(&p, LIFECYCLE, "live/u", Some(&start("live/u", "127.0.0.1")), None);
    let e = start("live/w", "127.0.0.1");
    write(&p, LIFECYCLE, "live/w", Some(&e), signed(Role::Worker, LIFECYCLE, "live/w", Some(&e)));
    let e = start("live/s", "127.0.0.1");
    let old = vigil_trust::unix_ms() - 3_600_000;
    let stale = common::trust::signer(Role::Lifecycle).sign(LIFECYCLE, Some(b"live/s"), Some(e.as_bytes()), old);
    write(&p, LIFECYCLE, "live/s", Some(&e), Some(stale.add_to(OwnedHeaders::new())));
    // Signed, but a host outside `pull_hosts`.
    let e = start("live/h", "localhost");
    write(&p, LIFECYCLE, "live/h", Some(&e), signed(Role::Lifecycle, LIFECYCLE, "live/h", Some(&e)));
    let e = start("live/ok", "127.0.0.1");
    let genuine = signed(Role::Lifecycle, LIFECYCLE, "live/ok", Some(&e));
    write(&p, LIFECYCLE, "live/ok", Some(&e), genuine.clone());
    write(&p, LIFECYCLE, "live/ok", Some(&e), genuine); // the same record again: a replay
    let live = || -> Vec<String> {
        let (_, body) = w.http("GET", "/streams");
        let v: Vec<Value> = serde_json::from_str(&body).unwrap();
        v.iter().map(|s| s["stream_id"].as_str().unwrap().to_string()).collect()
    };
    wait_until_or("the genuine stream", 60, || live() == ["live/ok"], || tail(&w.stderr(), 40));
    wait_until("the replayed start counted", 20, || trust_count(&w, "lifecycle", "replayed") >= 1.0);
    for (result, n) in [("unsigned", 1.0), ("wrong_role", 1.0), ("stale", 1.0), ("replayed", 1.0), ("accepted", 2.0)] {
        assert_eq!(trust_count(&w, "lifecycle", result), n, "lifecycle {result}");
    }
    assert_eq!(w.metric("vigil_fleet_events_rejected_total", "reason=\"host_not_allowed\""), 1.0);
    assert_eq!(w.metric("vigil_fleet_events_rejected_total", "reason=\"untrusted\""), 4.0, "with the replay");

    // Forged owners records: another worker's claim, unsigned and signed by the platform.
    let claim =
        serde_json::json!({"stream_id": "live/ok", "owner": "worker-z", "unix_ms": vigil_trust::unix_ms()}).to_string();
    write(&p, OWNERS, "live/ok", Some(&claim), None);
    write(&p, OWNERS, "live/ok", Some(&claim), signed(Role::Lifecycle, OWNERS, "live/ok", Some(&claim)));
    let withdrawn =
        serde_json::json!({"stream_id": "live/ok", "withdrawn_by": "worker-z", "unix_ms": vigil_trust::unix_ms()})
            .to_string();
    write(&p, OWNERS, "live/ok", Some(&withdrawn), None);
    // A worker's genuine announcement, written again.
    let handing_off =
        serde_json::json!({"stream_id": "live/ok", "handing_off_by": "worker-z", "unix_ms": vigil_trust::unix_ms()})
            .to_string();
    let genuine = signed(Role::Worker, OWNERS, "live/ok", Some(&handing_off));
    write(&p, OWNERS, "live/ok", Some(&handing_off), genuine.clone());
    write(&p, OWNERS, "live/ok", Some(&handing_off), genuine);
    wait_until("the forged owners records refused", 30, || {
        trust_count(&w, "owners", "unsigned") >= 2.0
            && trust_count(&w, "owners", "wrong_role") >= 1.0
            && trust_count(&w, "owners", "replayed") >= 1.0
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(live(), ["live/ok"], "still analysed");

    // Tombstones: an unsigned one changes nothing; the platform's signed one stops it.
    write(&p, LIFECYCLE, "live/ok", None, None);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(live(), ["live/ok"], "an unsigned tombstone stops nothing");
    write(&p, LIFECYCLE, "live/ok", None, signed(Role::Lifecycle, LIFECYCLE, "live/ok", None));
    wait_until("the signed tombstone's stop", 30, || live().is_empty());
    for mut c in publishers.drain(..) {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// A sum of one console metric's series whose labels contain `labels`.
fn console_metric(addr: &str, name: &str, labels: &str) -> f64 {
    let (_, body) = common::console::http(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    body.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The console believes alerts from workers only, commands from workers and itself, and
/// outcomes from workers and actuators: forged alerts (unsigned, signed by the console's
/// own key, emitted in the future), forged `cut` outcomes and a copy written again are
/// refused and counted, and only the genuine records reach the store.
#[test]
fn the_console_takes_in_only_records_their_writers_signed() {
    const ALERTS: &str = "vigil.alerts";
    const INTERRUPTS: &str = "vigil.interrupts";
    const ACTIONS: &str = "vigil.actions";
    let dir = tempfile::tempdir().unwrap();
    let broker = vigil_sink::testing::Broker::start(&[ALERTS, INTERRUPTS, ACTIONS, "vigil.banks.updates"]);
    let port = common::nginx::free_port();
    let config = dir.path().join("console.toml");
    std::fs::write(
        &config,
        format!(
            "[sink.kafka]\nbrokers = \"{}\"\n[console]\nlisten = \"127.0.0.1:{port}\"\n\
             public_url = \"http://127.0.0.1:{port}\"\nstate_dir = \"{}\"\n",
            broker.addr,
            dir.path().join("console").display()
        ),
    )
    .unwrap();
    let c = common::console::start_console(&config, dir.path(), port, &[]);
    let now = vigil_trust::unix_ms();
    let alert = |stream: &str, event: &str, decision: &str, emitted: u64| {
        serde_json::json!({
            "schema": "vigil.alert", "schema_version": 1, "alert_id": format!("{stream}@s#1"), "event": event,
            "stream_id": stream, "session_id": "s", "started_ms": 0, "last_seen_ms": 0,
            "emitted_at_unix_ms": emitted, "decision": decision, "rule": "known_abuse_material",
            "explanation": {"reasons": ["bank known"], "frames": [], "models": [], "policy": "default", "policy_version": "1"},
            "worker_id": "worker-a",
        })
        .to_string()
    };
    let p = producer(&broker.addr);
    let a = alert("live/a", "opened", "interrupt", now);
    let genuine = signed(Role::Worker, ALERTS, "live/a", Some(&a));
    write(&p, ALERTS, "live/a", Some(&a), genuine.clone());
    write(&p, ALERTS, "live/a", Some(&a), genuine); // the very record again: a replay
    let u = alert("live/u", "opened", "interrupt", now);
    write(&p, ALERTS, "live/u", Some(&u), None);
    let lower = alert("live/a", "escalated", "clear", now + 1000);
    write(&p, ALERTS, "live/a", Some(&lower), signed(Role::Console, ALERTS, "live/a", Some(&lower)));
    let future = alert("live/f", "opened", "review", now + 3_600_000);
    write(&p, ALERTS, "live/f", Some(&future), signed(Role::Worker, ALERTS, "live/f", Some(&future)));
    let cmd = serde_json::json!({
        "schema": "vigil.interrupt", "schema_version": 1, "command_id": "live/a@s#1/interrupt", "alert_id": "live/a@s#1",
        "stream_id": "live/a", "rule": "known_abuse_material", "issued_at_unix_ms": now, "worker_id": "worker-a"
    })
    .to_string();
    write(&p, INTERRUPTS, "live/a", Some(&cmd), signed(Role::Worker, INTERRUPTS, "live/a", Some(&cmd)));
    let cut = serde_json::json!({
        "schema": "vigil.action", "schema_version": 1, "command_id": "live/a@s#1/interrupt", "stream_id": "live/a",
        "outcome": "cut", "reason": null, "detail": "", "attempts": 1, "at_unix_ms": now
    })
    .to_string();
    write(&p, ACTIONS, "live/a", Some(&cut), None);
    write(&p, ACTIONS, "live/a", Some(&cut), signed(Role::Console, ACTIONS, "live/a", Some(&cut)));
    write(&p, ACTIONS, "live/a", Some(&cut), signed(Role::Lifecycle, ACTIONS, "live/a", Some(&cut)));

    let m = |name: &str, labels: &str| console_metric(&c.addr, name, labels);
    let read = || m("vigil_console_intake_messages_total", "") + m("vigil_console_intake_refused_total", "");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while read() < 9.0 {
        assert!(std::time::Instant::now() < deadline, "read {}:\n{}\n{}", read(), c.log(), {
            let (_, body) =
                common::console::http(&c.addr, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            body.lines().filter(|l| l.contains("intake") || l.contains("trust")).collect::<Vec<_>>().join("\n")
        });
        std::thread::sleep(Duration::from_millis(200));
    }
    let refused = |kind: &str, reason: &str| {
        m("vigil_console_intake_refused_total", &format!("kind=\"{kind}\",reason=\"{reason}\""))
    };
    assert_eq!(refused("alerts", "untrusted"), 3.0, "the replay, the unsigned alert, the console's alert");
    assert_eq!(refused("alerts", "future"), 1.0);
    assert_eq!(refused("actions", "untrusted"), 3.0, "no forged cut");
    let taken = |kind: &str| m("vigil_console_intake_messages_total", &format!("kind=\"{kind}\",result=\"new\""));
    assert_eq!((taken("alerts"), taken("interrupts"), taken("actions")), (1.0, 1.0, 0.0));
    assert_eq!(m("vigil_trust_records_total", "result=\"replayed\",topic=\"alerts\""), 1.0);
    assert_eq!(m("vigil_trust_records_total", "result=\"wrong_role\",topic=\"actions\""), 2.0);

    // The actuator's genuine outcome is taken.
    let genuine = signed(Role::Actuator, ACTIONS, "live/a", Some(&cut));
    write(&p, ACTIONS, "live/a", Some(&cut), genuine.clone());
    write(&p, ACTIONS, "live/a", Some(&cut), genuine); // the same record again: a replay
    wait_until("the actuator's cut and its replay", 30, || {
        taken("actions") == 1.0 && m("vigil_trust_records_total", "result=\"replayed\",topic=\"actions\"") == 1.0
    });
}

/// An analysis thread that panics (a bug, injected here in a debug build) still cleans
/// up: the gap is reported unscanned, the stream ends and leaves `/streams` (its capacity
/// given back), its publisher's connection closes, and publishing again is admitted as a
/// new session instead of refused as "already live".
#[test]
fn a_stream_whose_analysis_panics_is_cleaned_up_and_its_gap_reported() {
    let w = Worker::start(
        "[media]\nsampling = \"keyframes\"\n\
         [ingest.rtmp]\nlisten = \"127.0.0.1:0\"\n[ingest.rtmp.stream_keys]\nalice = \"alice-key-123\"\n",
        &[],
        &[("VIGIL_FAULT_PANIC_STREAM", "rtmp/live/alice")],
    );
    let url = format!("rtmp://{}/live/alice-key-123", w.rtmp.clone().unwrap());
    let stream = "rtmp/live/alice";
    let ended = |r: &[Value]| {
        r.iter().filter(|x| x["type"] == "stream" && x["stream"] == stream && x["event"] == "ended").count()
    };
    for session in 1..=2 {
        let mut publisher = common::nginx::publish(&url, 60, "ball");
        let records = w.wait_for("the failed analysis to end the stream", 60, |r| ended(r) >= session);
        let gap = records
            .iter()
            .filter(|r| r["type"] == "frame" && r["stream"] == stream)
            .find(|r| r.to_string().contains("the analysis failed"))
            .unwrap_or_else(|| panic!("no unscanned gap reported: {records:?}"));
        assert_eq!(gap["verdict"], "unscanned", "{gap}");
        wait_until("the stream gone from /streams", 20, || w.http("GET", "/streams").1 == "[]");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while publisher.try_wait().unwrap().is_none() {
            assert!(std::time::Instant::now() < deadline, "session {session}: the publisher is still connected");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    assert_eq!(w.stderr().matches("already live").count(), 0, "the second publish was admitted");
    assert_eq!(w.metric("vigil_analysis_panics_total", ""), 2.0);
}

/// `vigil keys gen` makes a key file (0600, never over an existing one) and prints its
/// keyring line; `vigil keys sign` and the Python recipe (scripts/vigil_sign.py) sign a
/// record that a reader holding that keyring believes, tombstones included.
#[test]
fn keys_made_by_vigil_keys_gen_sign_records_from_the_cli_and_from_python() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let out =
        vigil(&["keys", "gen", "--role", "lifecycle", "--id", "platform-1", "--out", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let line = String::from_utf8(out.stdout).unwrap();
    let key = dir.path().join("lifecycle.key");
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    let again =
        vigil(&["keys", "gen", "--role", "lifecycle", "--id", "platform-2", "--out", dir.path().to_str().unwrap()]);
    assert!(!again.status.success(), "an existing key is never overwritten");
    let ring = vigil_trust::Keyring::parse("ring", &line).unwrap();
    let trust = vigil_trust::config::Trust::with(
        &vigil_trust::TrustConfig::default(),
        None,
        Some(vigil_trust::KeyringHandle::fixed(ring)),
    );
    let verifier = trust.verifier(vigil_trust::TopicKind::Lifecycle);
    let topic = "vigil.streams.lifecycle";
    let value = r#"{"event":"stop","stream_id":"live/alice"}"#;
    let check = |headers: &Value, value: Option<&str>, offset: i64| {
        let h = |k: &str| headers[k].as_str().map(|s| s.as_bytes().to_vec());
        let msg = rdkafka::message::OwnedMessage::new(
            value.map(|v| v.as_bytes().to_vec()),
            Some(b"live/alice".to_vec()),
            topic.into(),
            rdkafka::Timestamp::NotAvailable,
            0,
            offset,
            Some(
                OwnedHeaders::new()
                    .insert(rdkafka::message::Header { key: "vigil-key-id", value: h("vigil-key-id").as_deref() })
                    .insert(rdkafka::message::Header { key: "vigil-signed-at", value: h("vigil-signed-at").as_deref() })
                    .insert(rdkafka::message::Header {
                        key: "vigil-signature",
                        value: h("vigil-signature").as_deref(),
                    }),
            ),
        );
        verifier.check(&msg).map(|v| v.role)
    };
    // The CLI, reading the value on stdin.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["keys", "sign", "--key", key.to_str().unwrap(), "--topic", topic, "--record-key", "live/alice"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(value.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let headers: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(check(&headers, Some(value), 1), Ok(Some(Role::Lifecycle)));
    assert!(check(&headers, Some(r#"{"event":"start"}"#), 2).is_err(), "another value does not verify");
    // The Python recipe, a value and a tombstone.
    let python = cache_dir().join("venv/bin/python");
    for (args, v, offset) in [(vec![], Some(value), 3), (vec!["--tombstone"], None, 4)] {
        let mut child = std::process::Command::new(&python)
            .arg(root().join("scripts/vigil_sign.py"))
            .args(["--key", key.to_str().unwrap(), "--topic", topic, "--record-key", "live/alice"])
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(v.unwrap_or("").as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let headers: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(check(&headers, v, offset), Ok(Some(Role::Lifecycle)), "python, value {v:?}");
    }
}

/// A `vigil.interrupt` command as the console's "Cut now" writes it.
fn console_command(stream: &str, n: u32) -> String {
    serde_json::json!({
        "schema": "vigil.interrupt", "schema_version": 1,
        "command_id": format!("{stream}@console#{n}/interrupt"), "alert_id": format!("{stream}@console#{n}"),
        "stream_id": stream, "rule": "console", "issued_at_unix_ms": 1, "worker_id": "console:alice",
    })
    .to_string()
}

/// The same about one session of the stream.
fn console_command_for_session(stream: &str, n: u32, session: &str) -> String {
    let mut v: Value = serde_json::from_str(&console_command(stream, n)).unwrap();
    v["session_id"] = serde_json::json!(session);
    v.to_string()
}

/// "Cut now" reaches a publisher connected to a worker (issue 29, point 1): the worker
/// reads every interrupt command, cuts the pushed stream it holds, says so on stdout and
/// on the actions topic (signed, outcome `cut`, so the console shows the cut), and ignores
/// a forged command and one for a stream it does not hold, counting each.
#[test]
fn a_console_cut_reaches_a_publisher_connected_to_the_worker_and_a_forged_one_does_not() {
    use vigil_sink::testing::{Broker, read_from_beginning};
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&["vigil.alerts", "vigil.interrupts", "vigil.actions"]);
    // And a pulled stream: its origin is cut by the actuator, the worker says it saw it.
    let clip = test_pattern_clip(dir.path(), "pulled.mp4", 60, "mp4mux");
    let pulled_uri = format!("file://{}", clip.display());
    let w = Worker::start(
        &format!(
            "[ingest.rtmp]\nlisten = \"127.0.0.1:0\"\n[ingest.rtmp.stream_keys]\nalice = \"alice-key-123\"\nbob = \"bob-key-4567\"\n\
             [sink.kafka]\nbrokers = \"{}\"\nspool_path = \"{}\"\n",
            broker.addr,
            dir.path().join("spool/messages.spool").display()
        ),
        &["--pull", &pulled_uri],
        &[],
    );
    let rtmp = w.rtmp.clone().unwrap();
    let mut alice = common::nginx::publish(&format!("rtmp://{rtmp}/live/alice-key-123"), 60, "ball");
    let mut bob = common::nginx::publish(&format!("rtmp://{rtmp}/live/bob-key-4567"), 60, "ball");
    let records = w.wait_for("both publishers and the pull decoding", 60, |r| {
        r.iter().filter(|x| x["type"] == "stream" && x["event"] == "decoding").count() >= 3
    });
    let pulled = records
        .iter()
        .find(|x| x["event"] == "decoding" && !x["stream"].as_str().unwrap().starts_with("rtmp/"))
        .map(|x| x["stream"].as_str().unwrap().to_string())
        .unwrap();
    wait_until("the worker reading commands", 30, || w.stderr().contains("commands: reading interrupt commands"));
    let count = |result: &str| w.metric("vigil_worker_commands_total", &format!("result=\"{result}\""));

    let p = producer(&broker.addr);
    // Forged (another key) for bob, and one for a stream this worker does not hold.
    let forged = console_command("rtmp/live/bob", 1);
    let forger = common::trust::forger();
    let h = forger.sign_into("vigil.interrupts", Some(b"rtmp/live/bob"), Some(forged.as_bytes()), OwnedHeaders::new());
    write(&p, "vigil.interrupts", "rtmp/live/bob", Some(&forged), Some(h));
    // About a session of bob's that is not the live one (a publisher who came back).
    let earlier = console_command_for_session("rtmp/live/bob", 3, "1700000000000-0000000000000000");
    let h = common::trust::signed(Role::Console, "vigil.interrupts", Some("rtmp/live/bob"), Some(earlier.as_bytes()));
    write(&p, "vigil.interrupts", "rtmp/live/bob", Some(&earlier), Some(h));
    let elsewhere = console_command("rtmp/live/carol", 1);
    let h =
        common::trust::signed(Role::Console, "vigil.interrupts", Some("rtmp/live/carol"), Some(elsewhere.as_bytes()));
    write(&p, "vigil.interrupts", "rtmp/live/carol", Some(&elsewhere), Some(h));
    // The console's "Cut now" for the pulled stream: left to its origin, reported seen.
    let on_pull = console_command(&pulled, 4);
    let h = common::trust::signed(Role::Console, "vigil.interrupts", Some(&pulled), Some(on_pull.as_bytes()));
    write(&p, "vigil.interrupts", &pulled, Some(&on_pull), Some(h));
    // The console's "Cut now" for alice.
    let cut = console_command("rtmp/live/alice", 2);
    let h = common::trust::signed(Role::Console, "vigil.interrupts", Some("rtmp/live/alice"), Some(cut.as_bytes()));
    write(&p, "vigil.interrupts", "rtmp/live/alice", Some(&cut), Some(h));

    wait_until("alice's publisher cut", 20, || alice.try_wait().unwrap().is_some());
    let records = w.wait_for("the cut on stdout", 10, |r| {
        r.iter().any(|x| x["type"] == "stream" && x["event"] == "cut" && x["stream"] == "rtmp/live/alice")
    });
    let line = records.iter().find(|x| x["event"] == "cut").unwrap();
    assert_eq!(line["detail"], "rtmp/live/alice@console#2/interrupt", "{line}");
    wait_until("every command counted", 20, || {
        count("cut") + count("untrusted") + count("not_here") + count("other_session") + count("pulled") >= 5.0
    });
    assert_eq!(
        (count("cut"), count("untrusted"), count("not_here"), count("other_session"), count("pulled")),
        (1.0, 1.0, 1.0, 1.0, 1.0)
    );
    assert!(
        !w.records().iter().any(|x| x["event"] == "cut" && x["stream"] == pulled.as_str()),
        "the worker does not cut what it pulls"
    );
    assert!(bob.try_wait().unwrap().is_none(), "neither a forged command nor one about another session cut bob");
    assert!(!records.iter().any(|x| x["event"] == "cut" && x["stream"] == "rtmp/live/bob"));

    // The outcome on the actions topic, signed by the worker: what the console shows.
    let consumer = read_from_beginning(&broker.addr, "vigil.actions");
    let ring = vigil_trust::KeyringHandle::fixed(common::trust::keyring());
    let verifier = vigil_trust::config::Trust::with(&Default::default(), None, Some(ring))
        .verifier(vigil_trust::TopicKind::Actions);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let (mut cut, mut seen) = (None, None);
    while cut.is_none() || seen.is_none() {
        assert!(std::time::Instant::now() < deadline, "no cut or no seen on the actions topic: {cut:?} {seen:?}");
        let Some(m) = consumer.poll(Duration::from_millis(200)) else { continue };
        let m = m.unwrap();
        use rdkafka::Message;
        let v: Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
        if v["command_id"] == "rtmp/live/alice@console#2/interrupt" {
            assert!(verifier.check(&m).is_ok(), "signed by the worker");
            cut = Some(v);
        } else if v["command_id"] == format!("{pulled}@console#4/interrupt") {
            assert!(verifier.check(&m).is_ok(), "signed by the worker");
            seen = Some(v);
        }
    }
    let (action, seen) = (cut.unwrap(), seen.unwrap());
    assert_eq!((action["outcome"].as_str(), action["stream_id"].as_str()), (Some("cut"), Some("rtmp/live/alice")));
    assert_eq!((seen["outcome"].as_str(), seen["stream_id"].as_str()), (Some("seen"), Some(pulled.as_str())));
    let _ = bob.kill();
    let _ = bob.wait();
    let _ = alice.wait();
}

/// Messages on `topic` (all partitions, from the start) within `secs`.
fn topic_values(broker: &vigil_sink::testing::Broker, topic: &str, want: usize, secs: u64) -> Vec<Value> {
    use rdkafka::Message;
    let consumer = vigil_sink::testing::read_from_beginning(&broker.addr, topic);
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    let mut got = Vec::new();
    while got.len() < want && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            got.push(serde_json::from_slice(m.payload().unwrap()).unwrap());
        }
    }
    got
}

/// A `vigil scan` is never a live incident (issue 29, point 2): with a config that has
/// Kafka it publishes nothing unless told to (`--publish`), and then its alerts say
/// `origin: file_scan` and no interrupt command is published (nothing live to cut).
#[test]
fn a_scan_publishes_only_when_told_to_and_then_as_a_file_scan_that_cuts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let broker = vigil_sink::testing::Broker::start(&["vigil.alerts", "vigil.interrupts", "vigil.actions"]);
    let clip = still_clip(dir.path(), &astronaut(), "astronaut.mp4", 3, 1500, 360, "mp4mux");
    let bank = dir.path().join("bank.txt");
    std::fs::write(&bank, format!("{}\n", pdq_of(&astronaut()))).unwrap();
    let kafka =
        format!("{{ brokers = \"{}\", spool_path = \"{}\" }}", broker.addr, dir.path().join("spool/s").display());
    let scan = |extra: &[&str]| {
        let mut args = vec!["scan", clip.to_str().unwrap(), "--bank", bank.to_str().unwrap()];
        args.extend_from_slice(extra);
        vigil_env(&args, &[("VIGIL__SINK__KAFKA", &kafka)])
    };
    let quiet = scan(&[]);
    assert_eq!(quiet.status.code(), Some(1), "an alert: {}", String::from_utf8_lossy(&quiet.stderr));
    assert!(String::from_utf8_lossy(&quiet.stderr).contains("not publishing to Kafka"));
    let printed = stdout_json(&quiet);
    assert!(of_type(&printed, "alert").iter().all(|a| a["origin"] == "file_scan"), "labelled on stdout too");
    assert!(topic_values(&broker, "vigil.alerts", 1, 3).is_empty(), "a scan without --publish sent an alert");

    let published = scan(&["--publish"]);
    assert_eq!(published.status.code(), Some(1), "{}", String::from_utf8_lossy(&published.stderr));
    let alerts = topic_values(&broker, "vigil.alerts", 1, 30);
    assert!(!alerts.is_empty(), "--publish sends the scan's alerts");
    assert!(alerts.iter().all(|a| a["origin"] == "file_scan" && a["decision"] == "interrupt"), "{alerts:?}");
    assert!(of_type(&stdout_json(&published), "interrupt").len() == 1, "the scan still reports its decision");
    assert!(topic_values(&broker, "vigil.interrupts", 1, 3).is_empty(), "a file scan published a command");
}
