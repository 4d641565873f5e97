//! Pulled streams shared across a fleet: workers in one consumer group take the streams
//! a lifecycle topic says are live (tansu on 127.0.0.1), pulling them from nginx-rtmp.
//! A SIGKILLed worker's streams resume on another after the session timeout; a drained
//! worker hands its streams over make-before-break (the new owner starts each one
//! before the old owner lets it go), and an incident open across the hand-off is
//! continued by the new owner under the same id, not alerted twice; what is alerted
//! reaches Kafka once.

mod common;

use common::nginx::{Nginx, publish, publish_astronaut};
use common::worker::*;
use common::*;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::process::Child;
use std::time::{Duration, Instant};
use vigil_sink::testing::{Broker, consume_until, read_from_beginning};
use vigil_trust::Role;

const LIFECYCLE: &str = "vigil.streams.lifecycle";

fn send_event(producer: &BaseProducer, event: &Value) {
    let key = event["stream_id"].as_str().unwrap().to_string();
    let payload = event.to_string();
    let headers = common::trust::signed(Role::Lifecycle, LIFECYCLE, Some(&key), Some(payload.as_bytes()));
    producer.send(BaseRecord::to(LIFECYCLE).key(&key).payload(&payload).headers(headers)).expect("queued");
    assert_eq!(producer.flush(Duration::from_secs(10)).map_err(|e| e.to_string()), Ok(()));
}

fn start_event(id: &str, nginx: &Nginx) -> Value {
    json!({"event": "start", "stream_id": id, "source_url": format!("rtmp://127.0.0.1:{}/{id}", nginx.rtmp),
           "account_id": "acct-1", "session_id": format!("platform-{id}")})
}

fn fleet_worker(name: &str, broker: &Broker, dir: &std::path::Path, bank: &std::path::Path) -> Worker {
    fleet_worker_with(name, broker, dir, bank, "")
}

/// The fleet tests load the machine: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn fleet_worker_with(
    name: &str,
    broker: &Broker,
    dir: &std::path::Path,
    bank: &std::path::Path,
    extra: &str,
) -> Worker {
    let spool = dir.join(format!("{name}.spool"));
    Worker::start(
        &format!(
            "[media]\nsampling = \"keyframes\"\n\
             [[hash.banks]]\nname = \"known\"\npath = \"{}\"\naction = \"interrupt\"\n\
             [sink.kafka]\nbrokers = \"{}\"\nspool_path = \"{}\"\n\
             [fleet]\nsession_timeout_secs = 6\nhandoff_secs = 40\npull_hosts = [\"127.0.0.1\"]\n{extra}",
            bank.display(),
            broker.addr,
            spool.display()
        ),
        &["--worker-id", name],
        &[],
    )
}

/// The stream ids live on a worker now.
fn live(w: &Worker) -> BTreeSet<String> {
    let (status, body) = w.http("GET", "/streams");
    assert_eq!(status, 200, "{body}");
    let streams: Vec<Value> = serde_json::from_str(&body).unwrap();
    streams.iter().map(|s| s["stream_id"].as_str().unwrap().to_string()).collect()
}

/// Waits until `workers` together run exactly `want`, each stream on one worker.
fn wait_spread(what: &str, workers: &[&Worker], want: &BTreeSet<String>, secs: u64) -> Vec<BTreeSet<String>> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let each: Vec<BTreeSet<String>> = workers.iter().map(|w| live(w)).collect();
        let total: usize = each.iter().map(BTreeSet::len).sum();
        let union: BTreeSet<String> = each.iter().flatten().cloned().collect();
        if &union == want && total == want.len() {
            return each;
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = workers.iter().map(|w| tail(&w.stderr(), 30)).collect();
            panic!("{what}: streams per worker {each:?}, want {want:?}\n{}", logs.join("\n----\n"));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn stream_record(records: &[Value], stream: &str, event: &str) -> Option<u64> {
    records
        .iter()
        .find(|r| r["type"] == "stream" && r["stream"] == stream && r["event"] == event)
        .and_then(|r| r["unix_ms"].as_u64())
}

/// What every fleet test starts with: a bank of the astronaut photo, a broker with the
/// fleet's topics, nginx-rtmp, and a producer for lifecycle events.
struct Setup {
    dir: tempfile::TempDir,
    bank: std::path::PathBuf,
    broker: Broker,
    nginx: Nginx,
    producer: BaseProducer,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let bank = dir.path().join("bank.txt");
        std::fs::write(&bank, format!("{}\n", pdq_of(&astronaut()))).unwrap();
        let broker = Broker::start(&[LIFECYCLE, "vigil.streams.owners", "vigil.alerts", "vigil.interrupts"]);
        let nginx = Nginx::start();
        let producer =
            rdkafka::ClientConfig::new().set("bootstrap.servers", &broker.addr).create().expect("a producer");
        Setup { dir, bank, broker, nginx, producer }
    }
}

#[test]
fn a_fleet_shares_streams_survives_a_kill_and_hands_off_on_drain() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let Setup { dir, bank, broker, nginx, producer } = Setup::new();
    // One stream shows banked material throughout: its incident stays open across the
    // kill and the drain.
    let early = "live/banked-early";
    let ids: BTreeSet<String> = ["live/s1", "live/s2", "live/s3", early].iter().map(|s| s.to_string()).collect();
    let mut publishers: Vec<Child> = ids
        .iter()
        .map(|id| {
            let url = format!("rtmp://127.0.0.1:{}/{id}", nginx.rtmp);
            if id == early { publish_astronaut(&url, 240) } else { publish(&url, 240, "ball") }
        })
        .collect();
    // Hostile events on the same topic are refused and change nothing: a signed start of
    // a file, a signed start of the metadata service, and an unsigned start.
    for (payload, signed) in [
        (r#"{"event":"start","stream_id":"x","source_url":"file:///etc/passwd"}"#, true),
        (r#"{"event":"start","stream_id":"x","source_url":"http://169.254.169.254/latest/?.m3u8"}"#, true),
        (r#"{"event":"start","stream_id":"y","source_url":"rtmp://127.0.0.1:1/live/y"}"#, false),
    ] {
        let key = if signed { "x" } else { "y" };
        let mut record = BaseRecord::to(LIFECYCLE).key(key).payload(payload);
        if signed {
            record =
                record.headers(common::trust::signed(Role::Lifecycle, LIFECYCLE, Some(key), Some(payload.as_bytes())));
        }
        producer.send(record).unwrap();
    }
    for id in &ids {
        send_event(&producer, &start_event(id, &nginx));
    }

    let a = fleet_worker("worker-a", &broker, dir.path(), &bank);
    let b = fleet_worker("worker-b", &broker, dir.path(), &bank);
    let each = wait_spread("two workers share the streams", &[&a, &b], &ids, 90);
    eprintln!("spread: a {:?}, b {:?}", each[0], each[1]);
    assert!(
        a.metric("vigil_fleet_events_rejected_total", "reason=\"bad_source_url\"")
            + b.metric("vigil_fleet_events_rejected_total", "reason=\"bad_source_url\"")
            >= 1.0
    );

    // SIGKILL the second worker: the other takes its streams after the session timeout,
    // and analyses them. Not the first: on tansu 0.6 (the test broker) a SIGKILLed
    // group leader with static membership is never evicted (tansu checks sessions only
    // on dynamic members' requests), so its partitions stay unassigned; Kafka's
    // coordinator expires any member.
    assert!(!each[1].is_empty(), "the second worker holds streams to lose: {each:?}");
    let (victim, survivor) = (b, a);
    let killed_at = Instant::now();
    signal(victim.pid(), "KILL");
    drop(victim);
    wait_spread("the survivor takes the killed worker's streams", &[&survivor], &ids, 60);
    eprintln!("all streams on the survivor {:?} after the kill", killed_at.elapsed());
    let since = survivor.records().len();
    survivor.wait_for("frames from every stream after the kill", 40, |r| {
        ids.iter().all(|id| r[since..].iter().any(|x| x["type"] == "frame" && x["stream"] == id.as_str()))
    });

    // A new worker joins; the survivor drains. Every stream moves to the new worker,
    // which starts it before the draining worker lets it go.
    let opened_on = |records: &[Value], stream: &str| -> Vec<String> {
        records
            .iter()
            .filter(|r| r["type"] == "alert" && r["stream_id"] == stream && r["event"] == "opened")
            .map(|r| r["alert_id"].as_str().unwrap().to_string())
            .collect()
    };
    let survivor_open =
        survivor.wait_for("the banked stream's incident on the survivor", 60, |r| !opened_on(r, early).is_empty());
    let survivor_incident = opened_on(&survivor_open, early).pop().unwrap();
    let c = fleet_worker("worker-c", &broker, dir.path(), &bank);
    // Scale-out first: the survivor gives up a partition for the new worker, and keeps
    // its streams running until the new worker claims them. On tansu 0.6 the new worker
    // is never delivered that partition (a static member never gets a cooperative
    // rebalance's second round): nobody claims the streams, the survivor keeps them past
    // the hand-off, and the new worker, holding nothing while they go unclaimed, leaves
    // and joins the group again. On Kafka it simply gets the partition.
    let assigned = |w: &Worker| w.metric("vigil_fleet_partitions_assigned", "");
    let kept = |w: &Worker| w.metric("vigil_fleet_streams_kept_unowned", "");
    let scaled_at = Instant::now();
    wait_until_or(
        "the new worker to get its share",
        150,
        || assigned(&c) >= 1.0 && assigned(&c) + assigned(&survivor) == 3.0 && kept(&survivor) == 0.0,
        || {
            format!(
                "c {} partitions, survivor {} ({} kept, c rejoined {} times)",
                assigned(&c),
                assigned(&survivor),
                kept(&survivor),
                c.metric("vigil_fleet_rebalances_total", "kind=\"rejoin\"")
            )
        },
    );
    eprintln!(
        "scale-out settled after {:?}: c {} partitions, survivor {} (c rejoined {} times)",
        scaled_at.elapsed(),
        assigned(&c),
        assigned(&survivor),
        c.metric("vigil_fleet_rebalances_total", "kind=\"rejoin\"")
    );
    let (s0, c0) = (survivor.records().len(), c.records().len());
    wait_until("frames from every stream after the scale-out", 40, || {
        let (s, n) = (survivor.records(), c.records());
        ids.iter()
            .all(|id| s[s0..].iter().chain(n[c0..].iter()).any(|x| x["type"] == "frame" && x["stream"] == id.as_str()))
    });
    let dropped: Vec<Value> = survivor
        .records()
        .into_iter()
        .filter(|r| r["event"] == "ended" && r["reason"].as_str().is_some_and(|w| w.contains("took it in time")))
        .collect();
    assert!(dropped.is_empty(), "streams let go unwatched on a scale-out: {dropped:?}");
    let drained_at = Instant::now();
    let log = survivor.stderr_path();
    let (status, survivor_records) = survivor.stop();
    eprintln!(
        "SURVIVOR LOG\n{}",
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("fleet") || l.contains("drain"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(status.success(), "the drained worker exits cleanly: {status:?}");
    eprintln!("drain took {:?}", drained_at.elapsed());
    wait_spread("the new worker holds every stream", &[&c], &ids, 30);
    let c_records = c.records();
    eprintln!("new worker's log:\n{}", tail(&c.stderr(), 25));
    for id in &ids {
        let ended = stream_record(&survivor_records, id, "ended");
        let Some(ended) = ended else { continue }; // moved to c in the join's rebalance
        let started = stream_record(&c_records, id, "started").unwrap_or(u64::MAX);
        assert!(started <= ended, "{id}: started on the new owner at {started}, after the old one let go at {ended}");
        let reason = common::worker::ended(&survivor_records, id).unwrap()["reason"].clone();
        assert_eq!(reason, "handed off to another worker", "{id}: let go once claimed, not on a timer");
    }
    // The banked stream's incident was open on the survivor when it let go. The new
    // owner analysed the same material (its samples decide "interrupt") but alerted
    // nothing new: it continues the survivor's incident.
    c.wait_for("the new owner's decisions on the banked stream", 60, |r| {
        r.iter().any(|x| x["type"] == "frame" && x["stream"] == early && x["verdict"] == "interrupt")
    });
    let handover = |outcome: &str| c.metric("vigil_fleet_handover_incidents_total", &format!("outcome=\"{outcome}\""));
    wait_until("the new owner's hand-over outcome", 20, || {
        handover("adopted") + handover("hold_expired") + handover("none_open") >= 1.0
    });
    // Two more decisions on the stream after it: an alert the new owner would open is
    // out by then.
    let decisions = |r: &[Value]| r.iter().filter(|x| x["type"] == "frame" && x["stream"] == early).count();
    let after = decisions(&c.records());
    c.wait_for("two more decisions on the banked stream", 30, |r| decisions(r) >= after + 2);
    let c_records = c.records();
    assert_eq!(opened_on(&survivor_records, early).last(), Some(&survivor_incident));
    assert!(
        opened_on(&c_records, early).is_empty(),
        "the new owner alerted the episode again: {:?} (the survivor's was {survivor_incident})",
        opened_on(&c_records, early)
    );
    for r in c_records.iter().filter(|r| r["type"] == "alert" && r["stream_id"] == early) {
        assert_eq!(r["alert_id"], survivor_incident.as_str(), "an event of the adopted incident: {r}");
    }
    assert_eq!(handover("adopted"), 1.0, "expired {}, none open {}", handover("hold_expired"), handover("none_open"));
    let stopped = survivor_records.iter().find(|r| r["event"] == "stopped").expect("a stopped record");
    let phases: Vec<&str> = stopped["drain"].as_array().unwrap().iter().map(|p| p["phase"].as_str().unwrap()).collect();
    assert_eq!(phases, ["not_ready", "left_group", "publishers_closed", "samples_analysed"], "{stopped}");

    // Banked material on a new stream after the hand-off: one incident, reaching Kafka
    // once, and everything the workers alerted is on the broker.
    let banked = "live/banked";
    let mut abusive = publish_astronaut(&format!("rtmp://127.0.0.1:{}/{banked}", nginx.rtmp), 60);
    send_event(&producer, &start_event(banked, &nginx));
    let c_records = c.wait_for("the banked stream's alert", 60, |r| {
        r.iter().any(|x| x["type"] == "alert" && x["stream_id"] == banked && x["event"] == "opened")
    });
    // An alert message is one event of one incident.
    let message = |r: &Value| format!("{}:{}", r["alert_id"].as_str().unwrap(), r["event"].as_str().unwrap());
    let alert_ids: BTreeSet<String> =
        survivor_records.iter().chain(c_records.iter()).filter(|r| r["type"] == "alert").map(message).collect();
    let opened: Vec<&Value> = c_records
        .iter()
        .filter(|r| r["type"] == "alert" && r["stream_id"] == banked && r["event"] == "opened")
        .collect();
    assert_eq!(opened.len(), 1, "one incident for the banked stream: {opened:?}");
    let consumer = read_from_beginning(&broker.addr, "vigil.alerts");
    let count = |got: &[rdkafka::message::OwnedMessage]| {
        use rdkafka::Message;
        let mut on_broker: BTreeMap<String, usize> = BTreeMap::new();
        for m in got {
            let v: Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
            *on_broker.entry(message(&v)).or_default() += 1;
        }
        on_broker
    };
    let got = consume_until(&consumer, Duration::from_secs(30), |got| {
        let on_broker = count(got);
        alert_ids.iter().all(|id| on_broker.contains_key(id))
    });
    let on_broker = count(&got);
    for id in &alert_ids {
        assert!(on_broker.contains_key(id), "alert {id} reached Kafka: {on_broker:?}");
    }
    let banked_on_broker = on_broker.get(&message(opened[0])).copied().unwrap_or(0);
    assert_eq!(banked_on_broker, 1, "the banked stream's alert reached Kafka once: {on_broker:?}");

    let _ = abusive.kill();
    for p in &mut publishers {
        let _ = p.kill();
        let _ = p.wait();
    }
    let _ = abusive.wait();
}

/// A worker at capacity does not sit on a stream its partition holds: it offers it, and
/// a worker with room runs it; the lifecycle's stop still reaches it through the
/// stream's partition owner, which withdraws it.
#[test]
fn a_worker_at_capacity_offers_its_streams_to_one_with_room() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let Setup { dir, bank, broker, nginx, producer } = Setup::new();
    let ids: BTreeSet<String> = ["live/c1", "live/c2"].iter().map(|s| s.to_string()).collect();
    let mut publishers: Vec<Child> =
        ids.iter().map(|id| publish(&format!("rtmp://127.0.0.1:{}/{id}", nginx.rtmp), 150, "ball")).collect();
    // Both on one partition: whoever owns it has two streams and room for one.
    let send_to_one_partition = |event: &Value| {
        let key = event["stream_id"].as_str().unwrap().to_string();
        let payload = event.to_string();
        let headers = common::trust::signed(Role::Lifecycle, LIFECYCLE, Some(&key), Some(payload.as_bytes()));
        producer
            .send(BaseRecord::to(LIFECYCLE).key(&key).payload(&payload).partition(0).headers(headers))
            .expect("queued");
        assert_eq!(producer.flush(Duration::from_secs(10)).map_err(|e| e.to_string()), Ok(()));
    };
    for id in &ids {
        send_to_one_partition(&start_event(id, &nginx));
    }
    let one_stream = "[media.limits]\nmax_streams = 1\n";
    let a = fleet_worker_with("worker-a", &broker, dir.path(), &bank, one_stream);
    a.wait_for("the first worker runs one stream", 60, |r| {
        r.iter().any(|x| x["type"] == "stream" && x["event"] == "started")
    });
    let b = fleet_worker_with("worker-b", &broker, dir.path(), &bank, one_stream);
    let each = wait_spread("each worker runs one stream", &[&a, &b], &ids, 90);
    eprintln!("spread: a {:?}, b {:?}", each[0], each[1]);
    let delegated = |w: &Worker| w.metric("vigil_fleet_streams_delegated", "");
    let taken = |w: &Worker| w.metric("vigil_fleet_offers_total", "outcome=\"taken\"");
    // The owner and the taker learn who took the offer from the claim, a moment later.
    wait_until("the owner and the taker learning who took the offer", 20, || {
        delegated(&a) + delegated(&b) >= 1.0 && taken(&a) + taken(&b) >= 1.0
    });
    let (owner, runner, runner_streams) = if delegated(&a) == 1.0 { (&a, &b, &each[1]) } else { (&b, &a, &each[0]) };
    let logs = || format!("a:\n{}\nb:\n{}", tail(&a.stderr(), 25), tail(&b.stderr(), 25));
    assert_eq!(delegated(owner), 1.0, "one stream runs elsewhere for its partition's owner\n{}", logs());
    assert_eq!(owner.metric("vigil_fleet_streams_waiting", ""), 0.0, "nothing waits");
    assert!(owner.metric("vigil_fleet_offers_total", "outcome=\"made\"") >= 1.0);
    assert!(taken(runner) >= 1.0, "the worker with room took the offer\n{}", logs());
    // Both streams are analysed, each on one worker.
    let offered = runner_streams.iter().next().unwrap().clone();
    let kept = ids.iter().find(|id| **id != offered).unwrap().clone();
    runner.wait_for("frames of the offered stream", 40, |r| stream_frames(r, &offered) >= 2);
    owner.wait_for("frames of the kept stream", 40, |r| stream_frames(r, &kept) >= 2);

    // The lifecycle says stop: the owner withdraws the offer and the runner stops it.
    let stop = json!({"event": "stop", "stream_id": offered});
    send_to_one_partition(&stop);
    let records = runner.wait_for("the offered stream to end", 30, |r| ended(r, &offered).is_some());
    assert_eq!(
        ended(&records, &offered).unwrap()["reason"],
        "withdrawn by the worker whose partition holds it",
        "{}",
        tail(&runner.stderr(), 20)
    );
    assert!(owner.metric("vigil_fleet_offers_total", "outcome=\"withdrawn\"") >= 1.0);
    assert_eq!(delegated(owner), 0.0);
    assert!(live(owner).contains(&kept), "the owner's own stream runs on");

    for p in &mut publishers {
        let _ = p.kill();
        let _ = p.wait();
    }
}
